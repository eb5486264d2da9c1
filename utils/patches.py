"""What each image patch should know: dense ShapesWorld targets and a short lesson for a vision tower.

LLaVA's projector reads the vision encoder's *patch* features, one per token. A big CLIP has
learned from 400 million captions what is where; our 3-block CLIP, trained on one caption per
scene, mostly learned colours: at an object's centre patch the colour is linearly decodable,
its shape much less so, and nothing says where the other objects are. The LLM then sees a bag
of attributes and answers with *a* colour present in the scene rather than the asked object's.

The lesson below gives every patch a few dense targets, computed from the scene's boxes:

- ``pair``: which colour-shape pair covers the patch centre (15 pairs, or 15 = background);
- ``size``: small / large / background (0, 1, 2);
- ``relation``: for each of the 3 shapes, where this patch's object lies relative to the object
  of that shape (0 none, 1 left, 2 right, 3 above, 4 below);
- ``present``: which of the 15 pairs are anywhere in the image (the same at every patch).

A linear head on one hidden layer of the tower learns to predict them; the tower is trained
with it, then frozen again for LLaVA. It stands in for the richer features a big pretrained
encoder brings.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from utils.shapes import COLOURS, SHAPES, Scene, relation
from utils.training import ramped_cosine_schedule, update

COLOUR_SHAPE_PAIRS = [(c, s) for c in COLOURS for s in SHAPES]
BACKGROUND_PAIR = len(COLOUR_SHAPE_PAIRS)  # class id of "no object here"
SIZE_NAMES = ("small", "large", "background")
RELATION_NAMES = ("none", "to the left of", "to the right of", "above", "below")


def _inside(shape: str, box: tuple[float, float, float, float], x: float, y: float) -> bool:
    """Whether the point (x, y) lies on the drawn shape (not just in its box)."""
    x0, y0, x1, y1 = box
    if not (x0 <= x <= x1 and y0 <= y <= y1):
        return False
    if shape == "square":
        return True
    if shape == "circle":
        cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2
        return (x - cx) ** 2 + (y - cy) ** 2 <= r * r
    # triangle: apex at top centre, base along the bottom; half-width grows linearly downwards
    half = (x1 - x0) / 2 * (y - y0) / max(y1 - y0, 1e-9)
    return abs(x - (x0 + x1) / 2) <= half


def vision_targets(scene: Scene, grid: int) -> dict[str, torch.Tensor]:
    """Dense targets for a ``grid`` x ``grid`` patch layout (row-major, as a ViT orders its patches).

    Returns ``pair`` (N,), ``size`` (N,), ``relation`` (N, 3) and ``present`` (15,) with N = grid**2.
    A patch belongs to the object drawn at its centre; a patch whose centre falls outside every
    shape is background.
    """
    if not isinstance(scene, Scene):
        raise TypeError(f"vision_targets needs a utils.shapes.Scene, got {type(scene).__name__}")
    if not isinstance(grid, int) or grid < 1:
        raise ValueError(f"grid must be a positive int (patches per side), got {grid!r}")
    n = grid * grid
    pair = torch.full((n,), BACKGROUND_PAIR, dtype=torch.long)
    size = torch.full((n,), SIZE_NAMES.index("background"), dtype=torch.long)
    rel = torch.zeros((n, len(SHAPES)), dtype=torch.long)
    by_shape = {o.shape: o for o in scene.objects}
    for index in range(n):
        row, column = divmod(index, grid)
        x, y = (column + 0.5) / grid, (row + 0.5) / grid
        for o in scene.objects:
            if _inside(o.shape, o.box, x, y):
                pair[index] = COLOUR_SHAPE_PAIRS.index((o.colour, o.shape))
                size[index] = SIZE_NAMES.index(o.size)
                for k, shape in enumerate(SHAPES):
                    other = by_shape.get(shape)
                    if other is not None and other is not o:
                        rel[index, k] = RELATION_NAMES.index(relation(o, other))
                break
    present = torch.zeros(len(COLOUR_SHAPE_PAIRS))
    for o in scene.objects:
        present[COLOUR_SHAPE_PAIRS.index((o.colour, o.shape))] = 1.0
    return {"pair": pair, "size": size, "relation": rel, "present": present}


def stack_vision_targets(scenes: Sequence[Scene], grid: int) -> dict[str, torch.Tensor]:
    """:func:`vision_targets` of many scenes, stacked along a new first dimension."""
    if not scenes:
        raise ValueError("stack_vision_targets needs at least one scene")
    each = [vision_targets(s, grid) for s in scenes]
    return {key: torch.stack([t[key] for t in each]) for key in each[0]}


class VisionPretrainingHead(nn.Module):
    """Linear read-outs from patch features (B, N, D) to every target of :func:`vision_targets`."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.pair = nn.Linear(dim, len(COLOUR_SHAPE_PAIRS) + 1)
        self.size = nn.Linear(dim, len(SIZE_NAMES))
        self.relation = nn.Linear(dim, len(SHAPES) * len(RELATION_NAMES))
        self.present = nn.Linear(dim, len(COLOUR_SHAPE_PAIRS))

    def forward(self, patches: torch.Tensor) -> dict[str, torch.Tensor]:
        b, n, _ = patches.shape
        return {
            "pair": self.pair(patches),  # (B, N, 16)
            "size": self.size(patches),  # (B, N, 3)
            "relation": self.relation(patches).view(b, n, len(SHAPES), len(RELATION_NAMES)),  # (B, N, 3, 5)
            "present": self.present(patches),  # (B, N, 15): every patch says what is in the image
        }


def vision_pretraining_loss(logits: dict[str, torch.Tensor], targets: dict[str, torch.Tensor],
                            relation_weight: float = 1.0) -> torch.Tensor:
    """Sum of the four losses: cross-entropy for pair, size and relation; binary cross-entropy for present.

    Most relation targets are "none" (background patches, shapes that are absent), which are easy;
    ``relation_weight`` scales the relation term so that the few defined ones are not drowned out.
    """
    pair = F.cross_entropy(logits["pair"].flatten(0, 1), targets["pair"].flatten())
    size = F.cross_entropy(logits["size"].flatten(0, 1), targets["size"].flatten())
    rel = F.cross_entropy(logits["relation"].flatten(0, 2), targets["relation"].flatten())
    present = targets["present"].unsqueeze(1).expand_as(logits["present"])
    return pair + size + relation_weight * rel + F.binary_cross_entropy_with_logits(logits["present"], present)


def patch_features(vision_model: nn.Module, pixel_values: torch.Tensor, layer: int = -2,
                   batch_size: int | None = None) -> torch.Tensor:
    """Hidden states of one layer of a CLIP vision tower without the [CLS] token: (B, N, D).

    ``layer`` indexes ``hidden_states`` as LLaVA's ``vision_feature_layer`` does (-2: the
    penultimate). With ``batch_size`` the images go through in chunks (no gradients then).
    """
    if batch_size is not None:
        with torch.no_grad():
            return torch.cat([patch_features(vision_model, pixel_values[i:i + batch_size], layer)
                              for i in range(0, len(pixel_values), batch_size)])
    out = vision_model(pixel_values=pixel_values, output_hidden_states=True)
    return out.hidden_states[layer][:, 1:]


def pretrain_vision(vision_model: nn.Module, pixel_values: torch.Tensor, scenes: Sequence[Scene], *,
                    steps: int = 3000, batch_size: int = 64, lr: float = 1e-3, layer: int = -2,
                    seed: int = 0, log_every: int = 500, relation_weight: float = 1.0) -> VisionPretrainingHead:
    """Train ``vision_model`` (a CLIPVisionModel) and a fresh head on the dense targets; returns the head.

    ``pixel_values`` are the processor's (normalised) pixels of ``scenes``. AdamW with a short
    warm-up and a cosine decay; the loss is logged every ``log_every`` steps. ``relation_weight``
    scales the relation term of :func:`vision_pretraining_loss`.
    """
    if len(pixel_values) != len(scenes):
        raise ValueError(f"{len(pixel_values)} images but {len(scenes)} scenes: pass one scene per image")
    config = vision_model.config
    grid = config.image_size // config.patch_size
    targets = stack_vision_targets(scenes, grid)
    head = VisionPretrainingHead(config.hidden_size)
    parameters = list(vision_model.parameters()) + list(head.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=0.01)
    schedule = ramped_cosine_schedule(optimizer, steps)
    generator = torch.Generator().manual_seed(seed)
    vision_model.train()
    for step in range(steps):
        index = torch.randint(len(pixel_values), (batch_size,), generator=generator)
        logits = head(patch_features(vision_model, pixel_values[index], layer))
        loss = vision_pretraining_loss(logits, {k: v[index] for k, v in targets.items()}, relation_weight)
        update(optimizer, loss, parameters, schedule)
        if log_every and (step + 1) % log_every == 0:
            print(f"[patches] step {step + 1}/{steps} loss {loss.item():.4f}", flush=True)
    vision_model.eval()
    return head


@torch.no_grad()
def vision_probe_accuracy(vision_model: nn.Module, head: VisionPretrainingHead, pixel_values: torch.Tensor,
                          scenes: Sequence[Scene], layer: int = -2) -> dict[str, float]:
    """Per-patch accuracy of ``head`` on held-out scenes: pair and size on object patches, relation where defined."""
    config = vision_model.config
    targets = stack_vision_targets(scenes, config.image_size // config.patch_size)
    logits = head(patch_features(vision_model, pixel_values, layer, batch_size=256))
    on_object = targets["pair"] != BACKGROUND_PAIR
    defined = targets["relation"] != 0
    return {
        "pair": (logits["pair"].argmax(-1) == targets["pair"])[on_object].float().mean().item(),
        "size": (logits["size"].argmax(-1) == targets["size"])[on_object].float().mean().item(),
        "relation": (logits["relation"].argmax(-1) == targets["relation"])[defined].float().mean().item(),
    }


def centre_patch_features(features: torch.Tensor, scenes: Sequence[Scene]) -> tuple[torch.Tensor, list]:
    """The feature of the patch under each object's centre: (objects, D), and the objects in the same order."""
    n = features.shape[1]
    grid = math.isqrt(n)
    if grid * grid != n:
        raise ValueError(f"features hold {n} patches, not a square grid; drop the [CLS] token first")
    rows, objects = [], []
    for b, scene in enumerate(scenes):
        for o in scene.objects:
            row, column = min(int(o.cy * grid), grid - 1), min(int(o.cx * grid), grid - 1)
            rows.append(features[b, row * grid + column])
            objects.append(o)
    return torch.stack(rows), objects


def object_probe(train_features: torch.Tensor, train_scenes: Sequence[Scene], test_features: torch.Tensor,
                 test_scenes: Sequence[Scene], steps: int = 300, seed: int = 0) -> dict[str, float]:
    """How well a linear read-out of the centre patch names each object's colour and shape (held-out accuracy).

    A logistic regression per attribute, fitted with full-batch Adam on the training objects.
    """
    x_train, train_objects = centre_patch_features(train_features, train_scenes)
    x_test, test_objects = centre_patch_features(test_features, test_scenes)
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    result = {}
    for attribute, names in (("colour", list(COLOURS)), ("shape", list(SHAPES))):
        y_train = torch.tensor([names.index(getattr(o, attribute)) for o in train_objects])
        y_test = torch.tensor([names.index(getattr(o, attribute)) for o in test_objects])
        torch.manual_seed(seed)
        probe = nn.Linear(x_train.shape[1], len(names))
        optimizer = torch.optim.Adam(probe.parameters(), lr=0.05)
        for _ in range(steps):
            loss = F.cross_entropy(probe(x_train), y_train)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            result[attribute] = (probe(x_test).argmax(-1) == y_test).float().mean().item()
    return result
