"""utils.patches: dense per-patch targets from scene geometry, the lesson's head and loss, and the probes."""

from __future__ import annotations

import pytest
import torch
from transformers import CLIPVisionConfig, CLIPVisionModel

from utils import patches
from utils.shapes import SHAPES, Scene, ShapeObject, ShapesWorld


def two_objects() -> Scene:
    red = ShapeObject("square", "red", "large", 0.25, 0.5, (255, 0, 0))
    blue = ShapeObject("circle", "blue", "small", 0.8, 0.5, (0, 0, 255))
    return Scene((red, blue), image_size=64, key="test")


def test_targets_follow_the_boxes() -> None:
    t = patches.vision_targets(two_objects(), grid=8)
    assert t["pair"].shape == (64,) and t["relation"].shape == (64, len(SHAPES)) and t["present"].shape == (15,)
    # Row 4 (y centre 0.5625), column 2 (x centre 0.3125) lies inside the red square.
    index = 4 * 8 + 2
    assert patches.COLOUR_SHAPE_PAIRS[t["pair"][index]] == ("red", "square")
    assert patches.SIZE_NAMES[t["size"][index]] == "large"
    circle = SHAPES.index("circle")
    assert patches.RELATION_NAMES[t["relation"][index, circle]] == "to the left of"
    assert t["relation"][index, SHAPES.index("square")] == 0  # no relation to itself
    # A corner patch is background, with no relations.
    assert t["pair"][0] == patches.BACKGROUND_PAIR and t["size"][0] == 2 and t["relation"][0].tolist() == [0, 0, 0]
    assert t["present"].sum() == 2 and t["present"][patches.COLOUR_SHAPE_PAIRS.index(("blue", "circle"))] == 1


def test_a_triangle_corner_outside_the_shape_is_background() -> None:
    tri = ShapeObject("triangle", "green", "large", 0.5, 0.5, (0, 255, 0))
    grid = 16
    t = patches.vision_targets(Scene((tri,), image_size=64, key="t"), grid=grid)
    x0, y0, x1, y1 = tri.box
    row, column = 6, 5  # patch centre (0.34, 0.41): inside the box, left of the triangle's upper part
    x, y = (column + 0.5) / grid, (row + 0.5) / grid
    assert x0 < x < x1 and y0 < y < y1
    assert t["pair"][row * grid + column] == patches.BACKGROUND_PAIR
    assert patches.COLOUR_SHAPE_PAIRS[t["pair"][9 * grid + 8]] == ("green", "triangle")  # centre (0.53, 0.59): on the triangle


def test_bad_input_is_refused() -> None:
    with pytest.raises(TypeError, match="Scene"):
        patches.vision_targets("a red square", 8)
    with pytest.raises(ValueError, match="grid"):
        patches.vision_targets(two_objects(), 0)
    with pytest.raises(ValueError, match="at least one"):
        patches.stack_vision_targets([], 8)
    with pytest.raises(ValueError, match="square grid"):
        patches.centre_patch_features(torch.zeros(1, 65, 4), [two_objects()])


def tiny_tower() -> CLIPVisionModel:
    torch.manual_seed(0)
    return CLIPVisionModel(CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                            num_attention_heads=2, image_size=32, patch_size=8)).eval()


def test_loss_is_small_for_perfect_logits_and_large_for_wrong_ones() -> None:
    scenes = ShapesWorld(4, seed=1).scenes
    targets = patches.stack_vision_targets(scenes, 4)
    def one_hot(t, n):
        return torch.nn.functional.one_hot(t, n).float() * 50 - 25
    perfect = {"pair": one_hot(targets["pair"], 16), "size": one_hot(targets["size"], 3),
               "relation": one_hot(targets["relation"], 5),
               "present": (targets["present"][:, None, :].expand(4, 16, 15) * 50 - 25)}
    wrong = {k: -v for k, v in perfect.items()}
    assert patches.vision_pretraining_loss(perfect, targets) < 1e-6
    assert patches.vision_pretraining_loss(wrong, targets) > 50


def test_relation_weight_scales_only_the_relation_term() -> None:
    scenes = ShapesWorld(4, seed=1).scenes
    targets = patches.stack_vision_targets(scenes, 4)
    torch.manual_seed(0)
    logits = {"pair": torch.randn(4, 16, 16), "size": torch.randn(4, 16, 3), "relation": torch.randn(4, 16, 3, 5),
              "present": torch.randn(4, 16, 15)}
    relation = torch.nn.functional.cross_entropy(logits["relation"].flatten(0, 2), targets["relation"].flatten())
    base = patches.vision_pretraining_loss(logits, targets)
    assert torch.allclose(patches.vision_pretraining_loss(logits, targets, relation_weight=3.0), base + 2 * relation)
    assert torch.allclose(patches.vision_pretraining_loss(logits, targets, relation_weight=0.0), base - relation)


def test_the_lesson_trains_the_tower_and_the_probe_reads_it() -> None:
    world = ShapesWorld(64, seed=3, image_size=32)
    tower = tiny_tower()
    pixels = world.images() * 2 - 1
    before = {k: v.clone() for k, v in tower.state_dict().items()}
    head = patches.pretrain_vision(tower, pixels, world.scenes, steps=30, batch_size=16, log_every=0)
    assert any(not torch.equal(before[k], v) for k, v in tower.state_dict().items())
    scores = patches.vision_probe_accuracy(tower, head, pixels, world.scenes)
    assert set(scores) == {"pair", "size", "relation"} and all(0 <= v <= 1 for v in scores.values())
    feats = patches.patch_features(tower, pixels, batch_size=32)
    assert feats.shape == (64, 16, 32)
    probe = patches.object_probe(feats[:48], world.scenes[:48], feats[48:], world.scenes[48:], steps=50)
    assert set(probe) == {"colour", "shape"}
    with pytest.raises(ValueError, match="one scene per image"):
        patches.pretrain_vision(tower, pixels[:3], world.scenes, steps=1)
