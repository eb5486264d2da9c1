"""ShapesWorld: deterministic, and its words always agree with its pixels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from utils.shapes import (
    BACKGROUND,
    COLOURS,
    QUESTION_KINDS,
    RELATION_WORD,
    SHAPES,
    SIZES,
    ShapesWorld,
    make_scene,
    relation,
)

PALETTE = np.array(list(COLOURS.values()), dtype=float)


def nearest_colour(rgb: np.ndarray) -> str:
    return list(COLOURS)[int(np.argmin(((PALETTE - rgb) ** 2).sum(axis=1)))]


def test_same_index_same_scene_in_any_order() -> None:
    a = [make_scene(i, seed=3).caption for i in range(20)]
    b = [make_scene(i, seed=3).caption for i in reversed(range(20))][::-1]
    assert a == b
    assert np.array_equal(np.asarray(make_scene(5).render()), np.asarray(make_scene(5).render()))


def test_seeds_and_splits_give_different_scenes() -> None:
    train = {make_scene(i, split="train").caption for i in range(50)}
    test = {make_scene(i, split="test").caption for i in range(50)}
    other_seed = {make_scene(i, seed=1).caption for i in range(50)}
    assert len(train & test) < 10 and len(train & other_seed) < 10  # a few short captions may repeat


def test_pixels_agree_with_the_scene_description() -> None:
    """Colours, object counts, positions and sizes read back from the pixels match the scene."""
    for i in range(150):
        scene = make_scene(i, seed=7, image_size=64)
        pixels = np.asarray(scene.render(), dtype=float)  # (H, W, 3)
        size = scene.image_size
        foreground = np.abs(pixels - np.array(BACKGROUND)).sum(axis=-1) > 60
        labels, count = ndimage.label(foreground)
        assert count == len(scene.objects), (i, scene.caption)
        for obj in scene.objects:
            # The box centre is inside every shape (for a triangle, halfway down its height).
            x, y = int(obj.cx * size), int(obj.cy * size)
            assert nearest_colour(pixels[y, x]) == obj.colour, (i, obj)
            # The component under the centre fills the box: its extent matches the stated size.
            ys, xs = np.nonzero(labels == labels[y, x])
            width = (xs.max() - xs.min() + 1) / size
            assert abs(width - SIZES[obj.size]) < 3 / size, (i, obj, width)
            assert abs((xs.min() + xs.max() + 1) / 2 / size - obj.cx) < 2 / size


def test_caption_names_every_object_and_the_relation() -> None:
    for i in range(100):
        scene = make_scene(i, seed=11)
        for obj in scene.objects:
            assert f"{obj.size} {obj.colour} {obj.shape}" in scene.caption
        if len(scene.objects) == 2:
            a, b = scene.objects
            assert f" {relation(a, b)} " in scene.caption
        xs = [o.cx for o in scene.objects]
        assert xs == sorted(xs)  # objects are listed left to right


def test_relations_follow_the_geometry() -> None:
    for i in range(100):
        scene = make_scene(i, min_objects=2)
        for a in scene.objects:
            for b in scene.objects:
                if a is b:
                    continue
                dx, dy = a.cx - b.cx, a.cy - b.cy
                word = RELATION_WORD[relation(a, b)]
                if word in ("left", "right"):
                    assert abs(dx) > abs(dy) and (dx < 0) == (word == "left")
                else:
                    assert abs(dy) > abs(dx) and (dy < 0) == (word == "above")


def test_every_answer_is_true_of_the_scene_and_every_kind_is_right() -> None:
    kinds = set()
    for i in range(100):
        scene = make_scene(i, seed=2)
        by_shape = {o.shape: o for o in scene.objects}
        by_colour = {o.colour: o for o in scene.objects}
        for question, answer, kind in scene.questions:
            words = question.rstrip("?").split()
            kinds.add(kind)
            if kind == "count":
                assert question == "How many shapes are there?" and answer == str(len(scene.objects))
            elif kind == "colour":
                assert question.startswith("What colour is the") and by_shape[words[-1]].colour == answer
            elif kind == "shape":
                assert question.startswith("What shape is the") and by_colour[words[-2]].shape == answer
            elif kind == "size":
                assert question.endswith("small or large?") and by_shape[words[2]].size == answer
            elif kind == "exists":
                assert question.startswith("Is there a")
                assert answer == ("yes" if scene.has(words[-2], words[-1]) else "no")
            elif kind == "relation":
                assert question.startswith("Where is the")
                a, b = by_shape[words[3]], by_shape[words[-1]]
                assert RELATION_WORD[relation(a, b)] == answer
            else:
                pytest.fail(f"a question of an unknown kind: {kind!r} ({question})")
        assert scene.qa == [(q.text, q.answer) for q in scene.questions]
    assert kinds == set(QUESTION_KINDS)


def test_existence_questions_are_balanced() -> None:
    answers = [a for i in range(200) for q, a in make_scene(i).qa if q.startswith("Is there")]
    assert answers.count("yes") == answers.count("no") == 200


def test_objects_are_unique_and_inside_the_image() -> None:
    for i in range(200):
        scene = make_scene(i, seed=5)
        assert len({o.shape for o in scene.objects}) == len(scene.objects)
        assert len({o.colour for o in scene.objects}) == len(scene.objects)
        for label, box in scene.boxes:
            assert 0 <= box[0] < box[2] <= 1 and 0 <= box[1] < box[3] <= 1, (label, box)


def test_dataset_items_collate_and_labels() -> None:
    world = ShapesWorld(6, seed=1)
    item = world[2]
    assert item["pixel_values"].shape == (3, 64, 64) and item["pixel_values"].dtype == torch.float32
    assert 0 <= item["pixel_values"].min() and item["pixel_values"].max() <= 1
    assert item["boxes"].shape == (len(item["scene"].objects), 4)
    batch = ShapesWorld.collate([world[i] for i in range(4)])
    assert batch["pixel_values"].shape == (4, 3, 64, 64) and len(batch["caption"]) == 4
    assert torch.equal(world.images()[2], item["pixel_values"])
    single = ShapesWorld(30, max_objects=1)
    shapes = single.labels("shape")
    assert shapes.shape == (30,) and set(shapes.tolist()) <= set(range(len(SHAPES)))
    assert [SHAPES[k] for k in shapes[:5]] == [s.objects[0].shape for s in single.scenes[:5]]


def test_image_size_is_respected() -> None:
    assert make_scene(0, image_size=32).render().size == (32, 32)
    assert ShapesWorld(2, image_size=96)[0]["pixel_values"].shape == (3, 96, 96)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"split": "validation"}, "split must be one of"),
        ({"max_objects": 4}, "max_objects <= 3"),
        ({"min_objects": 2, "max_objects": 1}, "min_objects <= max_objects"),
        ({"image_size": 8}, "too small to draw"),
    ],
)
def test_bad_arguments_get_clear_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_scene(0, **kwargs)


def test_dataset_errors() -> None:
    with pytest.raises(ValueError, match="at least one scene"):
        ShapesWorld(0)
    with pytest.raises(IndexError, match="out of range"):
        ShapesWorld(3).scene(3)
    with pytest.raises(ValueError, match="one-object world"):
        ShapesWorld(3).labels("shape")
    with pytest.raises(ValueError, match="'shape' or 'colour'"):
        ShapesWorld(3, max_objects=1).labels("size")
