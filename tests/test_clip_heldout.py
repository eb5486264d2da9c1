"""The tiny CLIP trained without three colour-shape combinations: how its scenes are chosen, and that the
shipped checkpoint does what its training record says on seen and on unseen combinations."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import pytest
import torch

from utils import zoo
from utils.shapes import COLOURS, SHAPES, make_scene, parse_pairs, scenes_per_combination, scenes_without

HELD_OUT = parse_pairs(",".join(zoo.CLIP_HELD_OUT))
SEEN_TARGET = 0.90  # measured 0.993 on the shipped checkpoint (the training script refuses to save below 0.90)


# --- choosing the training scenes -------------------------------------------------------------------


def test_scenes_without_never_shows_a_held_out_pair_and_skips_only_those() -> None:
    kept = scenes_without(HELD_OUT, 400, seed=2, split="train")
    assert len(kept) == 400
    assert not any(scene.has(colour, shape) for scene in kept for colour, shape in HELD_OUT)
    # the same stream as ShapesWorld(seed=2, split="train"), with exactly the scenes holding a pair left out
    last = int(kept[-1].key.split("/")[3])
    stream = [make_scene(i, 2, "train") for i in range(last + 1)]
    assert [s.key for s in kept] == [s.key for s in stream if not any(s.has(c, sh) for c, sh in HELD_OUT)]
    assert len(stream) > len(kept)  # some scenes were skipped
    # every colour and every shape is still seen, in other combinations
    seen = {(o.colour, o.shape) for scene in kept for o in scene.objects}
    assert {c for c, _ in seen} == set(COLOURS) and {s for _, s in seen} == set(SHAPES)
    assert seen == {(c, s) for c in COLOURS for s in SHAPES} - set(HELD_OUT)


def test_held_out_pairs_are_parsed_and_checked() -> None:
    assert parse_pairs("red square, Green triangle,blue circle,") == HELD_OUT
    assert parse_pairs([("red", "square"), "red square"]) == (("red", "square"),)
    assert HELD_OUT == (("red", "square"), ("green", "triangle"), ("blue", "circle"))


@pytest.mark.parametrize(("pairs", "message"), [
    ("pink circle", r"unknown colour 'pink'.*red, green, blue, yellow, purple"),
    ("red squre", r"unknown shape 'squre'.*circle, square, triangle"),
    ("red", r"a colour and a shape, such as 'red square'; got 'red'"),
    ("large red square", r"a colour and a shape"),
    (" , ", r"no colour-shape pairs given"),
])
def test_bad_pairs_get_clear_errors(pairs: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        scenes_without(pairs, 10)


def test_holding_out_everything_is_refused_rather_than_looping_forever() -> None:
    with pytest.raises(ValueError, match="every colour-shape combination is held out"):
        scenes_without([(c, s) for c in COLOURS for s in SHAPES], 1)


def test_test_scenes_are_balanced_over_the_combinations() -> None:
    groups = scenes_per_combination(3, seed=2, split="test")
    assert list(groups) == [(c, s) for c in COLOURS for s in SHAPES]
    for (colour, shape), scenes in groups.items():
        assert len(scenes) == 3 and all(len(s.objects) == 1 and s.has(colour, shape) for s in scenes)


# --- the shipped checkpoint -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def record() -> dict:
    return json.loads((zoo.entry("clip-heldout").local_dir / "training.json").read_text())


def test_zoo_entry_rebuilds_what_is_shipped(record: dict) -> None:
    item = zoo.entry("clip-heldout")
    assert item.tiny_only and zoo.path("clip-heldout", mode="full") == str(item.local_dir)
    command = shlex.split(item.rebuild)
    assert command[command.index("--hold-out") + 1] == ",".join(zoo.CLIP_HELD_OUT)
    assert command[command.index("--out") + 1] == "models/clip-tiny-heldout"
    assert record["held_out"] == list(zoo.CLIP_HELD_OUT)
    clip = json.loads((zoo.entry("clip").local_dir / "training.json").read_text())
    same = ("steps", "batch_size", "train_scenes")  # the same recipe as the tiny CLIP, only the scenes differ
    assert {k: record[k] for k in same} == {k: clip[k] for k in same}


def test_tokenizer_files_are_links_to_the_tiny_clip() -> None:
    folder = zoo.entry("clip-heldout").local_dir
    for name in ("tokenizer.json", "tokenizer_config.json"):
        link = folder / name
        assert link.is_symlink() and os.readlink(link) == f"../clip-tiny/{name}", name
        assert link.resolve() == (zoo.entry("clip").local_dir / name).resolve()


def test_link_identical_links_only_identical_files(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for name, text in (("same.json", "{}"), ("other.json", "[]")):
        (tmp_path / "a" / name).write_text(text)
    (tmp_path / "b" / "same.json").write_text("{}")
    (tmp_path / "b" / "other.json").write_text("[1]")
    names = ("same.json", "other.json", "absent.json")
    assert zoo.link_identical(tmp_path / "b", tmp_path / "a", names) == ["same.json"]
    assert os.readlink(tmp_path / "b" / "same.json") == "../a/same.json"
    assert not (tmp_path / "b" / "other.json").is_symlink()


def test_seen_and_unseen_accuracy_match_the_training_record(record: dict) -> None:
    from transformers import CLIPModel, CLIPProcessor

    from utils.clip import encode_images, encode_texts, zero_shot_probabilities

    model = CLIPModel.from_pretrained(zoo.path("clip-heldout"), dtype=torch.float32).eval()
    processor = CLIPProcessor.from_pretrained(zoo.path("clip-heldout"))
    per_class = record["zero_shot_accuracy_per_class"]
    groups = scenes_per_combination(per_class, seed=2, split="test")
    classes = list(groups)
    probabilities = zero_shot_probabilities(
        encode_images(model, processor, [s.render() for scenes in groups.values() for s in scenes]),
        encode_texts(model, processor, [f"a photo of a {c} {s}" for c, s in classes]))
    predicted = probabilities.argmax(-1)
    truth = torch.arange(len(classes)).repeat_interleave(per_class)
    unseen = torch.tensor([pair in HELD_OUT for pair in classes]).repeat_interleave(per_class)
    right = predicted == truth
    seen_accuracy, unseen_accuracy = right[~unseen].float().mean().item(), right[unseen].float().mean().item()
    assert seen_accuracy == pytest.approx(record["seen"]["both"], abs=0.01)
    assert unseen_accuracy == pytest.approx(record["unseen"]["both"], abs=0.01)
    assert seen_accuracy >= SEEN_TARGET
    # the unseen number is the finding, whatever it is; it must only be a real measurement of 300 scenes
    assert record["unseen"]["scenes"] == len(HELD_OUT) * per_class and 0.0 <= unseen_accuracy <= 1.0
    colour_right = predicted // len(SHAPES) == truth // len(SHAPES)
    assert colour_right[unseen].float().mean().item() == pytest.approx(record["unseen"]["colour"], abs=0.01)
    assert set(record["unseen_taken_for"]) == set(zoo.CLIP_HELD_OUT)
