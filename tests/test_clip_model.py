"""The shipped tiny CLIP loads with the same calls as openai/clip-vit-base-patch32 and does its job."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import CLIPModel, CLIPProcessor

from utils import zoo
from utils.clip import cosine_similarity_matrix, encode_images, encode_texts, recall_at_k
from utils.shapes import COLOURS, SHAPES, ShapesWorld


@pytest.fixture(scope="module")
def model() -> CLIPModel:
    return CLIPModel.from_pretrained(zoo.path("clip"), dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def processor() -> CLIPProcessor:
    return CLIPProcessor.from_pretrained(zoo.path("clip"))


def test_processor_reproduces_the_training_preprocessing(processor: CLIPProcessor) -> None:
    scene = ShapesWorld(1, seed=5, split="test")[0]
    pixel_values = processor(images=scene["scene"].render(), return_tensors="pt")["pixel_values"][0]
    torch.testing.assert_close(pixel_values, scene["pixel_values"] * 2 - 1, atol=1e-5, rtol=0)
    assert processor.tokenizer("a photo of a cat")["input_ids"] == [49406, 320, 1125, 539, 320, 2368, 49407]


def test_zero_shot_classification_meets_its_target(model: CLIPModel, processor: CLIPProcessor) -> None:
    world = ShapesWorld(300, seed=11, split="test", max_objects=1)
    prompts = [f"a photo of a {c} {s}" for c in COLOURS for s in SHAPES]
    similarity = cosine_similarity_matrix(encode_images(model, processor, [s.render() for s in world.scenes]),
                                          encode_texts(model, processor, prompts))
    truth = world.labels("colour") * len(SHAPES) + world.labels("shape")
    assert (similarity.argmax(-1) == truth).float().mean() >= 0.90


def test_text_to_image_retrieval_beats_chance_by_far(model: CLIPModel, processor: CLIPProcessor) -> None:
    world = ShapesWorld(200, seed=12, split="test")
    similarity = cosine_similarity_matrix(encode_texts(model, processor, [s.caption for s in world.scenes]),
                                          encode_images(model, processor, [s.render() for s in world.scenes]))
    assert recall_at_k(similarity, 5) >= 0.5 > 5 / 200 * 10  # chance would be 2.5%


def test_weights_are_stored_in_half_precision_to_fit_the_budget() -> None:
    from safetensors import safe_open

    with safe_open(f"{zoo.path('clip')}/model.safetensors", "pt") as f:
        assert f.get_tensor("text_model.embeddings.token_embedding.weight").dtype == torch.float16


def test_encoders_reject_bad_input(model: CLIPModel, processor: CLIPProcessor) -> None:
    with pytest.raises(ValueError, match="non-empty"):
        encode_texts(model, processor, [])
    with pytest.raises(ValueError, match="non-empty"):
        encode_texts(model, processor, ["a red circle", "   "])
    with pytest.raises(TypeError, match="list of strings"):
        encode_texts(model, processor, "a red circle")
    with pytest.raises(ValueError, match="no images"):
        encode_images(model, processor, [])
    from utils.images import ImageLoadError

    with pytest.raises(ImageLoadError, match="no-such-photo.jpg"):
        encode_images(model, processor, ["no-such-photo.jpg"])


def test_long_prompts_are_truncated_to_the_text_encoder(model: CLIPModel, processor: CLIPProcessor) -> None:
    long_prompt = " and ".join(["a red circle"] * 40)  # far more tokens than the 32 positions
    assert encode_texts(model, processor, [long_prompt]).shape == (1, model.config.projection_dim)


def test_sentence_transformers_loads_the_same_folder(model: CLIPModel, processor: CLIPProcessor) -> None:
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(zoo.path("clip"), device="cpu", model_kwargs={"dtype": torch.float32})
    scenes = ShapesWorld(3, seed=13, split="test").scenes
    ours = encode_images(model, processor, [s.render() for s in scenes])
    theirs = st.encode([s.render() for s in scenes], convert_to_tensor=True)
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-4)


def test_encode_images_refuses_a_single_image_instead_of_misreading_it(model, processor, tmp_path) -> None:
    scene = ShapesWorld(1, seed=5, split="test").scenes[0].render()
    path = tmp_path / "scene.png"
    scene.save(path)
    array = np.array(scene)  # (H, W, C)
    for one in (scene, str(path), path, array, torch.from_numpy(array).permute(2, 0, 1)):
        with pytest.raises(TypeError, match=r"wrap a single image in a list: \[image\]"):
            encode_images(model, processor, one)
    assert encode_images(model, processor, [scene, str(path), array]).shape == (3, model.config.projection_dim)


def test_the_ablation_record_backs_chapter_2s_box() -> None:
    """models/clip-tiny/ablations.json (scripts/ablate_clip.py): each variant undoes one choice of the
    tiny recipe and scores below the shipped model zero-shot, as the box "How this differs from CLIP" says."""
    import json

    from utils import zoo

    folder = zoo.entry("clip").local_dir
    shipped = json.loads((folder / "training.json").read_text())
    ablations = json.loads((folder / "ablations.json").read_text())
    assert set(ablations) == {"verbatim captions", "batch 16"}
    for name, entry in ablations.items():
        assert entry["steps"] == shipped["steps"], name
        assert 0 <= entry["zero_shot_accuracy"]["both"] < shipped["zero_shot_accuracy"]["both"] - 0.2, name
        assert 0 <= entry["text_to_image_recall"]["@1"] <= entry["text_to_image_recall"]["@5"] <= 1, name
    assert ablations["batch 16"]["text_to_image_recall"]["@1"] < shipped["text_to_image_recall"]["@1"]
