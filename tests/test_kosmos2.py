"""utils.kosmos2 on the rehearsal's Kosmos-2 stand-in (the real classes and processor, narrow random weights)."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from utils import kosmos2, rehearsal
from utils.shapes import make_scene

SNOWMAN_BOX = (0.390625, 0.046875, 0.984375, 0.828125)  # the model card's "a snowman", <patch_index_0044>..0863


@pytest.fixture(scope="module")
def stand_in():
    from transformers import AutoProcessor, Kosmos2ForConditionalGeneration

    folder = rehearsal.stand_in("kosmos2")
    return Kosmos2ForConditionalGeneration.from_pretrained(folder).eval(), AutoProcessor.from_pretrained(folder)


def photos(n: int) -> list[Image.Image]:
    return [make_scene(2, seed=i).render() for i in range(n)]


def test_ground_returns_a_caption_and_entities_per_image(stand_in) -> None:
    model, processor = stand_in
    results = kosmos2.ground(model, processor, photos(2), max_new_tokens=6)
    assert len(results) == 2
    for caption, entities in results:
        assert isinstance(caption, str) and caption.startswith("An image of")  # random weights: the rest is noise
        assert isinstance(entities, list)


def test_ground_batches_the_images_with_their_position_mask_and_parses_the_answer(stand_in, monkeypatch) -> None:
    model, processor = stand_in
    seen = {}
    answer = "<phrase> a snowman</phrase><object><patch_index_0044><patch_index_0863></object> by a fire."
    answer_ids = processor.tokenizer(answer, add_special_tokens=False, return_tensors="pt")["input_ids"]

    def fake_generate(**kwargs):
        seen.update(kwargs)
        ids = kwargs["input_ids"]
        return torch.cat([ids, answer_ids.expand(len(ids), -1)], dim=1)

    monkeypatch.setattr(model, "generate", fake_generate)
    results = kosmos2.ground(model, processor, photos(3), max_new_tokens=5)
    assert seen["pixel_values"].shape == (3, 3, 224, 224) and seen["pixel_values"].dtype == model.dtype
    assert seen["image_embeds_position_mask"].sum(dim=1).tolist() == [64, 64, 64]  # the 64 latent-query slots
    assert seen["max_new_tokens"] == 5
    caption, entities = results[2]
    assert caption == "An image of a snowman by a fire."
    assert entities == [("a snowman", (12, 21), [SNOWMAN_BOX])]


def test_ground_runs_in_float16_as_full_mode_loads_the_model(stand_in) -> None:
    from transformers import Kosmos2ForConditionalGeneration

    _, processor = stand_in
    model = Kosmos2ForConditionalGeneration.from_pretrained(rehearsal.stand_in("kosmos2"), dtype=torch.float16).eval()
    [(caption, _)] = kosmos2.ground(model, processor, photos(1)[0], max_new_tokens=3)  # one image, not in a list
    assert caption.startswith("An image of")


def test_referring_prompt_is_the_model_cards() -> None:
    assert kosmos2.referring_prompt(SNOWMAN_BOX) == \
        "<grounding><phrase> It</phrase><object><patch_index_0044><patch_index_0863></object> is"
    assert kosmos2.referring_prompt((0.0, 0.0, 1.0, 1.0), phrase="This", then="") == \
        "<grounding><phrase> This</phrase><object><patch_index_0000><patch_index_1023></object>"


def test_patch_indices_equal_the_processors() -> None:
    from transformers.models.kosmos2.processing_kosmos2 import coordinate_to_patch_index

    generator = torch.Generator().manual_seed(0)
    for _ in range(200):
        x0, x1 = sorted(torch.rand(2, generator=generator).tolist())
        y0, y1 = sorted(torch.rand(2, generator=generator).tolist())
        box = (x0, y0, x1 + 1e-3 if x1 == x0 else x1, y1 + 1e-3 if y1 == y0 else y1)
        assert kosmos2.patch_indices(box) == coordinate_to_patch_index(box, kosmos2.GRID), box


def test_a_referring_prompt_round_trips_through_the_processor(stand_in) -> None:
    _, processor = stand_in
    text = kosmos2.referring_prompt(SNOWMAN_BOX) + " a snowman in a hat."
    caption, entities = processor.post_process_generation(text)
    assert caption == "It is a snowman in a hat."
    assert entities == [("It", (0, 2), [SNOWMAN_BOX])]


def test_bad_input_is_refused_with_a_clear_message(stand_in) -> None:
    model, processor = stand_in
    with pytest.raises(ValueError, match="at least one image"):
        kosmos2.ground(model, processor, [])
    with pytest.raises(ValueError, match=r"normalised to \[0, 1\]"):
        kosmos2.referring_prompt((0.2, 0.1, 1.5, 0.6))
    with pytest.raises(ValueError, match=r"normalised to \[0, 1\]"):
        kosmos2.referring_prompt((-0.1, 0.1, 0.5, 0.6))
    with pytest.raises(ValueError, match="x1 > x0 and y1 > y0"):
        kosmos2.referring_prompt((0.6, 0.1, 0.2, 0.6))
    with pytest.raises(ValueError, match=r"\(x0, y0, x1, y1\)"):
        kosmos2.referring_prompt((0.1, 0.2))
