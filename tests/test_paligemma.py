"""utils.paligemma: the tiny PaliGemma's examples, prefix-LM batches, region features, and the shipped model."""

from __future__ import annotations

import pytest
import torch

from utils import grounding, paligemma, zoo
from utils.shapes import ShapesWorld
from utils.tiny_lm import IGNORE_INDEX


@pytest.fixture(scope="module")
def shipped():
    from transformers import AutoTokenizer, PaliGemmaForConditionalGeneration

    folder = zoo.path("paligemma", mode="tiny")
    return PaliGemmaForConditionalGeneration.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)


def test_examples_name_the_target_and_write_its_box_y_first() -> None:
    scene = ShapesWorld(5, seed=1).scene(0)
    target = scene.objects[0]
    prefix, answer = paligemma.prefix_and_answer("detect", scene, target)
    assert prefix == f"detect {target.colour} {target.shape}"
    assert answer == f"{grounding.loc_tokens(target.box, paligemma.BINS)} {target.colour} {target.shape}"
    (box, label), = grounding.parse_detections(answer, paligemma.BINS)
    assert label == paligemma.label(target) and grounding.iou(box, target.box) > 0.85
    prefix, answer = paligemma.prefix_and_answer("hybrid", scene, target)
    assert prefix.endswith(paligemma.REGION_TOKEN) and answer == f"{target.size} {target.colour} {target.shape}"
    with pytest.raises(ValueError, match="unknown task 'segment'"):
        paligemma.prefix_and_answer("segment", scene, target)


def test_unique_objects_skip_colour_shape_twins() -> None:
    for scene in ShapesWorld(300, seed=2).scenes:
        names = [paligemma.label(o) for o in scene.objects]
        assert [paligemma.label(o) for o in paligemma.unique_objects(scene)] == [n for n in names if names.count(n) == 1]


def test_encoding_marks_prefix_and_answer(shipped) -> None:
    model, tokenizer = shipped
    item = paligemma.encode(tokenizer, model.config, "detect red circle", "<loc0001><loc0002><loc0003><loc0004> red circle")
    n_image = paligemma.image_tokens(model.config)
    assert n_image == 65  # 64 patches and [CLS]
    assert item.input_ids[:n_image] == [model.config.image_token_id] * n_image
    answer_start = item.token_type_ids.index(1)
    assert all(t == 0 for t in item.token_type_ids[:answer_start]) and all(t == 1 for t in item.token_type_ids[answer_start:])
    assert all(label == IGNORE_INDEX for label in item.labels[:answer_start])
    assert item.labels[answer_start:] == item.input_ids[answer_start:] and item.input_ids[-1] == tokenizer.eos_token_id
    assert tokenizer.convert_ids_to_tokens(item.input_ids[answer_start]) == "<loc0001>"  # one token per location


def test_region_weights_average_the_patches_inside_the_box(shipped) -> None:
    model, _ = shipped
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.25, 0.25], [0.51, 0.51, 0.52, 0.52]])
    weights = paligemma.region_weights(model.config, boxes)  # (3, 64)
    assert torch.allclose(weights.sum(-1), torch.ones(3))
    assert int((weights[0] > 0).sum()) == 64 and int((weights[1] > 0).sum()) == 4
    assert int((weights[2] > 0).sum()) == 1  # too small to hold a patch centre: the nearest patch


def test_prompt_batches_are_left_padded(shipped) -> None:
    model, tokenizer = shipped
    batch = paligemma.prompt_batch(tokenizer, model.config, ["detect red circle", "detect purple triangle"])
    assert batch["attention_mask"][:, -1].all() and (batch["token_type_ids"] == 0).all()
    lengths = batch["attention_mask"].sum(-1)
    assert (batch["input_ids"][batch["attention_mask"] == 0] == tokenizer.pad_token_id).all() and lengths.min() > 65


def test_shipped_model_detects_and_refers_on_held_out_scenes(shipped) -> None:
    model, tokenizer = shipped
    world = ShapesWorld(80, seed=62, split="test")
    targets = paligemma.held_out_targets(world.scenes)
    index = [i for i, _ in targets]
    pixels = world.images()[index] * 2 - 1
    boxes = torch.tensor([o.box for _, o in targets])
    found = [paligemma.parse_or_none(a) for a in paligemma.answer_all(
        model, tokenizer, [paligemma.prefix_and_answer("detect", world.scene(i), o)[0] for i, o in targets], pixels)]
    right = [d is not None and grounding.iou(d[0], o.box) >= 0.5 and d[1] == paligemma.label(o) for d, (_, o) in zip(found, targets)]
    assert sum(right) / len(right) >= 0.8
    for task in ("refer", "hybrid"):
        said = paligemma.answer_all(model, tokenizer, [paligemma.prefix_and_answer(task, world.scene(i), o)[0]
                                                       for i, o in targets], pixels, boxes)
        assert sum(a == f"{o.size} {paligemma.label(o)}" for a, (_, o) in zip(said, targets)) / len(targets) >= 0.8, task


def test_our_greedy_loop_and_generate_agree(shipped) -> None:
    model, tokenizer = shipped
    world = ShapesWorld(6, seed=62, split="test")
    targets = paligemma.held_out_targets(world.scenes)
    prefixes = [paligemma.prefix_and_answer("detect", world.scene(i), o)[0] for i, o in targets]
    pixels = world.images()[[i for i, _ in targets]] * 2 - 1
    ours = paligemma.greedy(model, tokenizer, prefixes, pixels)
    batch = paligemma.prompt_batch(tokenizer, model.config, prefixes)
    with torch.no_grad():
        out = model.generate(**batch, pixel_values=pixels, max_new_tokens=8, do_sample=False)
    theirs = [tokenizer.decode(row, skip_special_tokens=True).strip() for row in out[:, batch["input_ids"].shape[1]:]]
    assert ours == theirs
