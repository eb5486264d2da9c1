"""What the text-only LLM may know about an image: labelled boxes, captions, and the words for them."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Iterable, Mapping, Sequence

from utils.shapes import SHAPES, SIZES, Scene

Box = tuple[float, float, float, float]  # (x0, y0, x1, y1), normalised

# --- vocabulary ---------------------------------------------------------------------------------

COLOUR_WORDS: frozenset[str] = frozenset({
    "red", "green", "blue", "yellow", "purple", "orange", "pink", "brown", "black", "white",
    "grey", "gray", "violet", "cyan", "magenta", "turquoise", "beige",
})
SIZE_WORDS: dict[str, str] = {  # surface word -> size class
    "small": "small", "tiny": "small", "little": "small",
    "large": "large", "big": "large", "huge": "large",
}
# ShapesWorld's shapes plus shapes it never draws: naming one of those is a hallucination.
SHAPE_WORDS: tuple[str, ...] = SHAPES + (
    "star", "hexagon", "pentagon", "octagon", "diamond", "heart", "cross", "crescent", "arrow",
    "cube", "sphere", "cone", "cylinder", "pyramid",
)
GENERIC_NOUNS: frozenset[str] = frozenset({"shape", "shapes", "object", "objects", "thing", "things", "item", "items"})
NUMBER_VALUES: dict[str, int] = {
    "zero": 0, "one": 1, "single": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12,
}
NUMBER_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
_IRREGULAR_PLURALS = {"person": "people", "mouse": "mice", "knife": "knives", "sheep": "sheep",
                      "skis": "skis", "scissors": "scissors", "glasses": "glasses"}

# A box is "small" below this area: the geometric mean of ShapesWorld's two areas (0.22^2 and 0.36^2),
# so box areas recover ShapesWorld's size words exactly; for other data it means "< 8% of the image".
SMALL_AREA = SIZES["small"] * SIZES["large"]
POSITION_TOLERANCE = 0.02  # centres closer than this along an axis do not support left/right/above/below
SIZE_TOLERANCE = 0.05  # areas within 5% of each other count as the same size
CLEAR_MARGIN = 0.05  # the rule-based generator only states orderings at least this clear


def plural(noun: str) -> str:
    """English plural of a (possibly multi-word) noun: circle -> circles, person -> people, bus -> buses."""
    *head, last = noun.split(" ")
    if last in _IRREGULAR_PLURALS:
        last = _IRREGULAR_PLURALS[last]
    elif last.endswith(("s", "x", "ch", "sh")):
        last += "es"
    elif last.endswith("y") and last[-2:-1] not in "aeiou":
        last = last[:-1] + "ies"
    else:
        last += "s"
    return " ".join([*head, last])


def number_word(n: int) -> str:
    """Counts up to ten in words ("three"), larger ones in digits."""
    return NUMBER_NAMES[n] if 0 <= n < len(NUMBER_NAMES) else str(n)


def article(phrase: str) -> str:
    """'a' or 'an' for ``phrase`` (by its first letter: good enough for colour and object words)."""
    return "an" if phrase[:1].lower() in "aeiou" else "a"


def join_words(items: Sequence[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


# --- what the text-only LLM may see ------------------------------------------------------------

@dataclass(frozen=True)
class LabelledBox:
    """One box of a context, with what its label and geometry say about it."""

    label: str  # "red circle", "person"
    box: Box
    colour: str | None  # the label's leading colour word, if it has one
    noun: str  # the rest of the label: "circle", "traffic light"

    @property
    def cx(self) -> float:
        return (self.box[0] + self.box[2]) / 2

    @property
    def cy(self) -> float:
        return (self.box[1] + self.box[3]) / 2

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def area(self) -> float:
        return (self.box[2] - self.box[0]) * (self.box[3] - self.box[1])

    @property
    def size(self) -> str:
        """'small' or 'large', from the box area (see :data:`SMALL_AREA`)."""
        return "small" if self.area < SMALL_AREA else "large"


def parse_label(label: str) -> tuple[str | None, str]:
    """Split a box label into (colour, noun): 'red circle' -> ('red', 'circle'); 'dog' -> (None, 'dog')."""
    words = label.lower().split()
    if len(words) > 1 and words[0] in COLOUR_WORDS:
        return ("grey" if words[0] == "gray" else words[0]), " ".join(words[1:])
    return None, " ".join(words)


def box_relation(a: Box, b: Box) -> str:
    """Where box ``a`` lies relative to box ``b``, along whichever axis separates their centres more.

    The same rule as :func:`utils.shapes.relation`, read from boxes instead of objects: the
    text-only LLM of LLaVA's recipe has boxes, never the scene.
    """
    dx = (a[0] + a[2]) / 2 - (b[0] + b[2]) / 2
    dy = (a[1] + a[3]) / 2 - (b[1] + b[3]) / 2
    if abs(dx) >= abs(dy):
        return "to the left of" if dx < 0 else "to the right of"
    return "above" if dy < 0 else "below"


def _check_box(label: Any, box: Any, where: str) -> tuple[str, Box]:
    if not isinstance(label, str) or not label.strip():
        raise ValueError(f"{where}: empty label {label!r}; every box needs a name such as 'red circle' or 'dog'")
    if isinstance(box, (str, bytes)) or not isinstance(box, Sequence) or len(box) != 4:
        raise ValueError(f"{where} ({label!r}): a box is four numbers (x0, y0, x1, y1), got {box!r}")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box):
        raise TypeError(f"{where} ({label!r}): box coordinates must be numbers, got {box!r}")
    x0, y0, x1, y1 = (float(v) for v in box)
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        raise ValueError(f"{where} ({label!r}): box {box!r} has a non-finite coordinate")
    if min(x0, y0, x1, y1) < 0 or max(x0, y0, x1, y1) > 1:
        raise ValueError(
            f"{where} ({label!r}): box {box!r} lies outside [0, 1]. Boxes are normalised: divide pixel "
            f"coordinates by the image width and height (ImageContext.from_coco does this for COCO boxes)"
        )
    for low, high, axis in ((x0, x1, "x"), (y0, y1, "y")):
        if high < low:
            raise ValueError(
                f"{where} ({label!r}): box {box!r} has {axis}1 < {axis}0. Boxes are corners (x0, y0, x1, y1) "
                f"with x0 <= x1 and y0 <= y1, not (x, y, width, height)"
            )
        if high == low:
            raise ValueError(f"{where} ({label!r}): box {box!r} has zero {'width' if axis == 'x' else 'height'}")
    return label.strip(), (x0, y0, x1, y1)


@dataclass(frozen=True)
class ImageContext:
    """What LLaVA's data-writing LLM may see about one image: captions and labelled boxes, never pixels.

    ``captions`` and ``boxes`` may be given as lists; they are checked and stored as tuples.
    ``categories`` optionally lists every label the annotation could have used (COCO's 80
    classes, say): an object of such a category without a box is taken to be absent, so the
    fact checker can flag it.
    """

    image: str
    captions: tuple[str, ...]
    boxes: tuple[tuple[str, Box], ...] = ()
    categories: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.image, str) or not self.image.strip():
            raise ValueError(f"image must be a non-empty file name such as 'scene_0001.png', got {self.image!r}")
        if isinstance(self.captions, str) or not isinstance(self.captions, Sequence):
            raise TypeError(
                f"captions must be a list of strings, got {type(self.captions).__name__}; "
                f"wrap a single caption in a list: [caption]"
            )
        if not self.captions:
            raise ValueError("captions is empty: give at least one sentence describing the image")
        for i, caption in enumerate(self.captions):
            if not isinstance(caption, str) or not caption.strip():
                raise ValueError(f"caption {i} is empty or not a string ({caption!r}); every caption must be a sentence")
        if isinstance(self.boxes, (str, bytes)) or not isinstance(self.boxes, Sequence):
            raise TypeError(f"boxes must be a list of (label, (x0, y0, x1, y1)) pairs, got {type(self.boxes).__name__}")
        boxes = []
        for i, entry in enumerate(self.boxes):
            if isinstance(entry, (str, bytes)) or not isinstance(entry, Sequence) or len(entry) != 2:
                raise ValueError(f"box {i}: expected a (label, (x0, y0, x1, y1)) pair, got {entry!r}")
            boxes.append(_check_box(entry[0], entry[1], f"box {i}"))
        if isinstance(self.categories, str) or not isinstance(self.categories, Sequence):
            raise TypeError(f"categories must be a list of names, got {type(self.categories).__name__} "
                            f"{self.categories!r}; wrap a single name in a list: [name]")
        object.__setattr__(self, "captions", tuple(c.strip() for c in self.captions))
        object.__setattr__(self, "boxes", tuple(boxes))
        object.__setattr__(self, "categories", tuple(c.strip().lower() for c in self.categories))

    @cached_property
    def objects(self) -> tuple[LabelledBox, ...]:
        """The boxes with colour, noun, centre, area and size class worked out, in the given order."""
        return tuple(LabelledBox(label, box, *parse_label(label)) for label, box in self.boxes)

    @property
    def stem(self) -> str:
        """The image name without folders and extension: the start of every record id."""
        return image_stem(self.image)

    @property
    def kind(self) -> str:
        """What to call the objects in generated text: 'shape' when every box is a shape, else 'object'."""
        return "shape" if self.objects and all(o.noun in SHAPE_WORDS for o in self.objects) else "object"

    @classmethod
    def from_scene(cls, scene: Scene, image_name: str | None = None) -> ImageContext:
        """A ShapesWorld scene's caption and boxes; the image name defaults to one built from its seed and index."""
        if not isinstance(scene, Scene):
            raise TypeError(f"from_scene needs a utils.shapes.Scene, got {type(scene).__name__}")
        if image_name is None:
            parts = scene.key.split("/")  # shapesworld/<seed>/<split>/<index>/<min>-<max>
            if len(parts) != 5 or parts[0] != "shapesworld":
                raise ValueError("this scene was not made by make_scene, so it has no default name: pass image_name")
            objects = "" if parts[4] == "1-3" else f"_{parts[4]}"
            image_name = f"shapesworld_{parts[1]}_{parts[2]}_{parts[3]}{objects}.png"
        return cls(image_name, [scene.caption], scene.boxes, categories=SHAPES)

    @classmethod
    def from_coco(
        cls,
        image: Mapping[str, Any],
        captions: Iterable[str | Mapping[str, Any]],
        annotations: Iterable[Mapping[str, Any]],
        categories: Mapping[int, str] | Iterable[Mapping[str, Any]],
    ) -> ImageContext:
        """One COCO image: its entry from ``images``, caption and instance annotations, and the categories.

        ``captions`` may be plain strings or COCO caption annotations; annotations (and caption
        annotations) whose ``image_id`` belongs to another image are skipped, so you can pass the
        file's whole lists. COCO boxes ``[x, y, w, h]`` in pixels become normalised
        ``(x0, y0, x1, y1)``; overshoots of up to one pixel (common in COCO) are clipped.
        """
        missing = [k for k in ("file_name", "width", "height") if k not in image]
        if missing:
            raise ValueError(f"the COCO image entry lacks {missing}; pass the dict from the file's 'images' list")
        width, height = image["width"], image["height"]
        if not (isinstance(width, (int, float)) and isinstance(height, (int, float)) and width > 0 and height > 0):
            raise ValueError(f"image width and height must be positive numbers, got {width!r} x {height!r}")
        image_id = None if image.get("id") is None else str(image["id"])  # "1" and 1 name the same image
        if isinstance(categories, Mapping):  # {id: name}; ids may be strings if the dict came from JSON keys
            names = {int(k): str(v) for k, v in categories.items()}
        else:  # COCO's list of {"id": ..., "name": ...}
            names = {int(c["id"]): str(c["name"]) for c in categories}
        def elsewhere(entry: Mapping[str, Any]) -> bool:  # an entry about another image of the same file
            return image_id is not None and str(entry.get("image_id", image_id)) != image_id

        texts = []
        for c in captions:
            if isinstance(c, Mapping):
                if elsewhere(c):
                    continue
                if "caption" not in c:
                    raise ValueError(f"caption annotation {c.get('id', '?')} has no 'caption' text: pass the entries "
                                     "of the captions file's 'annotations' list, or plain strings")
                c = c["caption"]
            texts.append(c)
        boxes = []
        for ann in annotations:
            if elsewhere(ann):
                continue
            if ann.get("category_id") not in names:
                raise ValueError(f"annotation {ann.get('id', '?')}: category_id {ann.get('category_id')!r} is not in categories")
            boxes.append((names[ann["category_id"]], _coco_box(ann.get("bbox"), width, height)))
        return cls(str(image["file_name"]), texts, boxes, categories=tuple(names.values()))


def image_stem(image: str) -> str:
    """'train2017/000000033471.jpg' -> '000000033471'."""
    name = image.rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[0] if "." in name else name


def _coco_box(bbox: Any, width: float, height: float) -> Box:
    """COCO's [x, y, w, h] in pixels -> (x0, y0, x1, y1) in [0, 1]."""
    if isinstance(bbox, (str, bytes)) or not isinstance(bbox, Sequence) or len(bbox) != 4:
        raise ValueError(f"a COCO bbox is [x, y, width, height] in pixels, got {bbox!r}")
    x, y, w, h = (float(v) for v in bbox)
    if w <= 0 or h <= 0:
        raise ValueError(f"COCO bbox {list(bbox)} has zero or negative width/height; remove it or fix its size")
    if x < -1 or y < -1 or x + w > width + 1 or y + h > height + 1:
        raise ValueError(f"COCO bbox {list(bbox)} lies outside the {width} x {height} image (by more than a pixel)")

    def clip(v: float) -> float:
        return min(max(v, 0.0), 1.0)

    return (clip(x / width), clip(y / height), clip((x + w) / width), clip((y + h) / height))
