"""ShapesWorld: small synthetic scenes with captions, boxes and questions, generated from a seed.

Every scene is a short list of objects (shape, colour, size, position). The pixels, the
caption, the bounding boxes and the question/answer pairs are all derived from that one list,
so they always agree -- which is what lets tiny models trained offline show meaningful
captions, zero-shot labels and answers.

    >>> scene = make_scene(1)
    >>> scene.caption
    'a large green square to the left of a small purple triangle'
    >>> scene.render().size
    (64, 64)

Scenes are deterministic: ``make_scene(index, seed, split)`` always returns the same scene,
whatever else was generated before, and the ``"train"`` and ``"test"`` splits never share a
random stream.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cached_property
from typing import Any, NamedTuple, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.utils.data import Dataset

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "green": (40, 160, 60),
    "blue": (45, 85, 215),
    "yellow": (230, 195, 25),
    "purple": (135, 55, 175),
}
SIZES: dict[str, float] = {"small": 0.22, "large": 0.36}  # side of the box, as a fraction of the image
RELATIONS: tuple[str, ...] = ("to the left of", "to the right of", "above", "below")
BACKGROUND = (245, 245, 240)
SPLITS = ("train", "test")

GAP = 0.05  # minimum empty space between two boxes (normalised units)
AXIS_MARGIN = 0.08  # a pair's horizontal and vertical offsets differ by at least this much
SUPERSAMPLE = 4  # draw at 4x and downsample: smooth edges without blurring colours
COLOUR_JITTER = 12  # per-channel noise on each object's colour, so models learn hues, not exact RGB values
QUESTION_KINDS: tuple[str, ...] = ("count", "colour", "shape", "size", "exists", "relation")


class Question(NamedTuple):
    """A question about a scene, its one-word answer, and its kind (one of :data:`QUESTION_KINDS`)."""

    text: str
    answer: str
    kind: str


@dataclass(frozen=True)
class ShapeObject:
    """One object; positions are normalised to [0, 1] with y pointing down, as in image coordinates."""

    shape: str
    colour: str
    size: str
    cx: float  # centre x
    cy: float  # centre y
    rgb: tuple[int, int, int]

    @property
    def extent(self) -> float:
        return SIZES[self.size]

    @property
    def box(self) -> tuple[float, float, float, float]:
        """Tight bounding box (x0, y0, x1, y1), normalised to [0, 1]."""
        h = self.extent / 2
        return (self.cx - h, self.cy - h, self.cx + h, self.cy + h)

    @property
    def phrase(self) -> str:
        return f"a {self.size} {self.colour} {self.shape}"


def relation(a: ShapeObject, b: ShapeObject) -> str:
    """Where ``a`` is relative to ``b``, along whichever axis separates them more."""
    dx, dy = a.cx - b.cx, a.cy - b.cy
    if abs(dx) >= abs(dy):
        return "to the left of" if dx < 0 else "to the right of"
    return "above" if dy < 0 else "below"


RELATION_WORD = {"to the left of": "left", "to the right of": "right", "above": "above", "below": "below"}


@dataclass(frozen=True)
class Scene:
    """A ShapesWorld scene: objects ordered left to right, plus how to draw and describe them."""

    objects: tuple[ShapeObject, ...]
    image_size: int = 64
    key: str = ""  # identifies the random stream this scene came from

    # --- language --------------------------------------------------------------------
    @property
    def caption(self) -> str:
        """One sentence. Two objects are joined by their relation; three are listed left to right."""
        objs = self.objects
        if len(objs) == 1:
            return objs[0].phrase
        if len(objs) == 2:
            return f"{objs[0].phrase} {relation(objs[0], objs[1])} {objs[1].phrase}"
        return ", ".join(o.phrase for o in objs[:-1]) + f" and {objs[-1].phrase}"

    @property
    def boxes(self) -> list[tuple[str, tuple[float, float, float, float]]]:
        """``(label, (x0, y0, x1, y1))`` per object, labels like ``"red circle"``; LLaVA's "boxes" context."""
        return [(f"{o.colour} {o.shape}", tuple(round(v, 3) for v in o.box)) for o in self.objects]

    @cached_property
    def questions(self) -> list[Question]:
        """Every question of the scene with its answer and kind; every answer one word and true of this scene."""
        rng = random.Random(f"{self.key}/qa")
        asked = [Question("How many shapes are there?", str(len(self.objects)), "count")]
        for o in self.objects:
            asked.append(Question(f"What colour is the {o.shape}?", o.colour, "colour"))
            asked.append(Question(f"What shape is the {o.colour} one?", o.shape, "shape"))
            asked.append(Question(f"Is the {o.shape} small or large?", o.size, "size"))
        # Existence, balanced: one object that is there, one colour-shape pair that is not.
        present = rng.choice(self.objects)
        asked.append(Question(f"Is there a {present.colour} {present.shape}?", "yes", "exists"))
        absent = [(c, s) for c in COLOURS for s in SHAPES if not self.has(c, s)]
        colour, shape = rng.choice(absent)
        asked.append(Question(f"Is there a {colour} {shape}?", "no", "exists"))
        for a in self.objects:
            for b in self.objects:
                if a is not b:
                    asked.append(Question(f"Where is the {a.shape} relative to the {b.shape}?",
                                          RELATION_WORD[relation(a, b)], "relation"))
        return asked

    @property
    def qa(self) -> list[tuple[str, str]]:
        """The (question, answer) pairs of :attr:`questions`."""
        return [(q.text, q.answer) for q in self.questions]

    def has(self, colour: str, shape: str) -> bool:
        return any(o.colour == colour and o.shape == shape for o in self.objects)

    # --- pixels ------------------------------------------------------------------------
    def render(self) -> Image.Image:
        """The scene as an RGB PIL image of ``image_size`` x ``image_size`` pixels."""
        big = self.image_size * SUPERSAMPLE
        canvas = Image.new("RGB", (big, big), BACKGROUND)
        draw = ImageDraw.Draw(canvas)
        for o in self.objects:
            x0, y0, x1, y1 = (v * big for v in o.box)
            if o.shape == "circle":
                draw.ellipse((x0, y0, x1, y1), fill=o.rgb)
            elif o.shape == "square":
                draw.rectangle((x0, y0, x1, y1), fill=o.rgb)
            elif o.shape == "triangle":  # apex at the top centre, base along the bottom of the box
                draw.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=o.rgb)
            else:  # pragma: no cover - SHAPES is closed
                raise ValueError(f"unknown shape {o.shape!r}")
        return canvas.resize((self.image_size, self.image_size), Image.Resampling.BOX)

    def to_tensor(self) -> torch.Tensor:
        """Pixels as a float tensor (3, H, W) in [0, 1]."""
        array = np.asarray(self.render(), dtype=np.float32) / 255.0  # (H, W, 3)
        return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def _validate(seed: int, split: str, min_objects: int, max_objects: int, image_size: int) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not 1 <= min_objects <= max_objects <= len(SHAPES):
        raise ValueError(
            f"need 1 <= min_objects <= max_objects <= {len(SHAPES)} (one object per shape), "
            f"got min_objects={min_objects}, max_objects={max_objects}"
        )
    if image_size < 16:
        raise ValueError(f"image_size={image_size} is too small to draw shapes; use 16 or more (64 is the default)")
    if not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")


def _separated(a: ShapeObject, b: ShapeObject) -> bool:
    ax0, ay0, ax1, ay1 = a.box
    bx0, by0, bx1, by1 = b.box
    apart = ax1 + GAP <= bx0 or bx1 + GAP <= ax0 or ay1 + GAP <= by0 or by1 + GAP <= ay0
    clear_axis = abs(abs(a.cx - b.cx) - abs(a.cy - b.cy)) >= AXIS_MARGIN
    return apart and clear_axis


def make_scene(
    index: int,
    seed: int = 0,
    split: str = "train",
    *,
    min_objects: int = 1,
    max_objects: int = 3,
    image_size: int = 64,
) -> Scene:
    """Scene number ``index`` of the stream ``(seed, split)``.

    Objects have distinct shapes and distinct colours, so "the circle" or "the red one" always
    names exactly one object; boxes never touch, and every pair is clearly side by side or one
    above the other, so relations are unambiguous.
    """
    _validate(seed, split, min_objects, max_objects, image_size)
    key = f"shapesworld/{seed}/{split}/{index}/{min_objects}-{max_objects}"
    rng = random.Random(key)
    count = rng.randint(min_objects, max_objects)
    while True:  # rejection sampling; with at most three objects this ends after a few tries
        shapes = rng.sample(SHAPES, count)
        colours = rng.sample(list(COLOURS), count)
        objects: list[ShapeObject] = []
        for shape, colour in zip(shapes, colours):
            size = rng.choice(list(SIZES))
            half = SIZES[size] / 2
            for _ in range(50):
                rgb = tuple(int(np.clip(v + rng.randint(-COLOUR_JITTER, COLOUR_JITTER), 0, 255)) for v in COLOURS[colour])
                candidate = ShapeObject(
                    shape, colour, size, rng.uniform(half + 0.02, 0.98 - half), rng.uniform(half + 0.02, 0.98 - half), rgb
                )
                if all(_separated(candidate, other) for other in objects):
                    objects.append(candidate)
                    break
            else:
                break
        if len(objects) == count:
            objects.sort(key=lambda o: o.cx)
            return Scene(tuple(objects), image_size=image_size, key=key)


class ShapesWorld(Dataset):
    """``n`` ShapesWorld scenes as a torch Dataset.

    Each item is a dict: ``pixel_values`` (3, H, W) float in [0, 1], ``caption`` (str),
    ``boxes`` (K, 4) normalised, ``shape_ids`` and ``colour_ids`` (K,), and the ``scene`` itself.
    Use :meth:`collate` as the DataLoader's ``collate_fn`` (scenes hold different numbers of objects).
    """

    def __init__(
        self,
        n: int,
        seed: int = 0,
        split: str = "train",
        *,
        min_objects: int = 1,
        max_objects: int = 3,
        image_size: int = 64,
    ) -> None:
        if n < 1:
            raise ValueError(f"a ShapesWorld needs at least one scene, got n={n}")
        _validate(seed, split, min_objects, max_objects, image_size)
        self.n, self.seed, self.split = n, seed, split
        self.min_objects, self.max_objects, self.image_size = min_objects, max_objects, image_size
        self._scenes: dict[int, Scene] = {}
        self._pixels: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.n

    def scene(self, i: int) -> Scene:
        if not -self.n <= i < self.n:
            raise IndexError(f"scene index {i} out of range for a ShapesWorld of {self.n} scenes")
        i %= self.n
        if i not in self._scenes:
            self._scenes[i] = make_scene(
                i, self.seed, self.split, min_objects=self.min_objects, max_objects=self.max_objects, image_size=self.image_size
            )
        return self._scenes[i]

    @property
    def scenes(self) -> list[Scene]:
        return [self.scene(i) for i in range(self.n)]

    def images(self) -> torch.Tensor:
        """All images stacked, (n, 3, H, W) float in [0, 1]; rendered once and cached."""
        if self._pixels is None:
            self._pixels = torch.stack([s.to_tensor() for s in self.scenes])
        return self._pixels

    def labels(self, attribute: str) -> torch.Tensor:
        """Class ids (n,) of the single object in each scene, for ``"shape"`` or ``"colour"``.

        Only for one-object worlds (``max_objects=1``), where "the" shape is well defined.
        """
        if self.max_objects != 1:
            raise ValueError("labels() needs a one-object world: create it with max_objects=1")
        names = {"shape": SHAPES, "colour": tuple(COLOURS)}
        if attribute not in names:
            raise ValueError(f"attribute must be 'shape' or 'colour', got {attribute!r}")
        return torch.tensor([names[attribute].index(getattr(s.objects[0], attribute)) for s in self.scenes])

    def __getitem__(self, i: int) -> dict[str, Any]:
        scene = self.scene(i)
        pixels = self._pixels[i] if self._pixels is not None else scene.to_tensor()
        return {
            "pixel_values": pixels,
            "caption": scene.caption,
            "boxes": torch.tensor([o.box for o in scene.objects], dtype=torch.float32),
            "shape_ids": torch.tensor([SHAPES.index(o.shape) for o in scene.objects]),
            "colour_ids": torch.tensor([list(COLOURS).index(o.colour) for o in scene.objects]),
            "scene": scene,
        }

    @staticmethod
    def collate(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Stack pixels into (B, 3, H, W); keep everything of variable length as lists."""
        return {
            "pixel_values": torch.stack([it["pixel_values"] for it in items]),
            **{key: [it[key] for it in items] for key in ("caption", "boxes", "shape_ids", "colour_ids", "scene")},
        }


# --- Held-out colour-shape combinations (chapter 2's zero-shot test on pairs never seen in training) ---


def parse_pairs(pairs: str | Sequence[str] | Sequence[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """``"red square,green triangle"`` (or a list of "colour shape" strings or (colour, shape) tuples) as
    ``(("red", "square"), ("green", "triangle"))``, each colour and shape checked against COLOURS and SHAPES."""
    if isinstance(pairs, str):
        pairs = [p for p in pairs.split(",") if p.strip()]
    parsed = []
    for pair in pairs:
        words = pair.split() if isinstance(pair, str) else list(pair)
        if len(words) != 2:
            raise ValueError(f"a held-out pair is a colour and a shape, such as 'red square'; got {pair!r}")
        colour, shape = (w.strip().lower() for w in words)
        if colour not in COLOURS:
            raise ValueError(f"unknown colour {colour!r} in {pair!r}; ShapesWorld's colours are {', '.join(COLOURS)}")
        if shape not in SHAPES:
            raise ValueError(f"unknown shape {shape!r} in {pair!r}; ShapesWorld's shapes are {', '.join(SHAPES)}")
        if (colour, shape) not in parsed:
            parsed.append((colour, shape))
    if not parsed:
        raise ValueError("no colour-shape pairs given: name at least one, such as 'red square'")
    return tuple(parsed)


def scenes_without(pairs, n: int, seed: int = 0, split: str = "train", *, min_objects: int = 1,
                   max_objects: int = 3, image_size: int = 64) -> list[Scene]:
    """The first ``n`` scenes of the stream ``(seed, split)`` in which no object is one of the held-out
    (colour, shape) ``pairs`` (see :func:`parse_pairs`); the scenes that hold one are skipped, not
    edited, so every colour and every shape still appears, only never in those combinations."""
    held_out = parse_pairs(pairs)
    if len(held_out) == len(COLOURS) * len(SHAPES):
        raise ValueError("every colour-shape combination is held out: no scene could be kept")
    if n < 1:
        raise ValueError(f"need at least one scene, got n={n}")
    kept: list[Scene] = []
    index = 0
    while len(kept) < n:
        scene = make_scene(index, seed, split, min_objects=min_objects, max_objects=max_objects, image_size=image_size)
        if not any(scene.has(colour, shape) for colour, shape in held_out):
            kept.append(scene)
        index += 1
    return kept


def scenes_per_combination(per_class: int, seed: int = 0, split: str = "test", *,
                           image_size: int = 64) -> dict[tuple[str, str], list[Scene]]:
    """``per_class`` one-object scenes of each of the 15 (colour, shape) combinations, the first ones of
    the stream ``(seed, split)`` with ``max_objects=1``: a balanced zero-shot test set."""
    if per_class < 1:
        raise ValueError(f"need at least one scene per combination, got per_class={per_class}")
    found: dict[tuple[str, str], list[Scene]] = {(c, s): [] for c in COLOURS for s in SHAPES}
    index, missing = 0, len(found)
    while missing:
        scene = make_scene(index, seed, split, max_objects=1, image_size=image_size)
        group = found[scene.objects[0].colour, scene.objects[0].shape]
        if len(group) < per_class:
            group.append(scene)
            missing -= len(group) == per_class
        index += 1
    return found
