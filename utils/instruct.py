"""Visual instruction data (chapter 4): LLaVA's recipe for turning annotations into conversations.

LLaVA (Liu et al. 2023, arXiv:2304.08485) never showed its data-writing language model an
image. It showed what is *known* about the image -- a few captions and a list of labelled
bounding boxes -- and asked for three kinds of response: a multi-turn conversation, a detailed
description, and a complex-reasoning question with its answer. This module rebuilds that
pipeline for ShapesWorld scenes and for any COCO-style annotation, twice over:

1. **rule-based** (:func:`rule_based_turns`): the three response types written from the boxes
   alone, with varied templates, so every sentence is grounded and everything runs offline;
2. **LLM-prompted** (:func:`build_messages`, :func:`parse_reply`, :func:`generate_with_llm`):
   a system prompt, few-shot examples and the context as text go to any
   ``chat_fn(messages) -> str``; the reply is parsed back into turns.

Whichever route wrote it, a record is validated (:func:`validate_record`) and fact-checked
against the boxes (:class:`FactChecker`) before it enters the data set, and a rejected record
is kept with its reasons (:func:`generate_dataset`), so you can see *why* generated data gets
thrown away. InstructBLIP's cheaper route -- wrapping existing VQA and caption pairs in
instruction templates -- is here too (:data:`TASK_TEMPLATES`, :func:`from_vqa`,
:func:`from_caption`).

Record format (LLaVA's JSON)::

    {"id": "shapesworld_0_train_3-conversation",
     "image": "shapesworld_0_train_3.png",
     "conversations": [{"from": "human", "value": "<image>\\nHow many shapes are there?"},
                       {"from": "gpt", "value": "There are two shapes in the image."},
                       ...]}

``"<image>"`` appears exactly once, at the very start of the first human turn and followed by
a newline. LLaVA's released data puts it before or after the first question at random; we
always put it first, so the model always reads the image before the question.
:func:`validate_record` accepts both of LLaVA's placements, so released data validates too.

Boxes are ``(x0, y0, x1, y1)`` normalised to [0, 1], x growing to the right and y downwards
(image coordinates). K below is the number of boxes in a context.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
import statistics
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Callable, Iterable, Mapping, Sequence

from utils.shapes import COLOURS, SHAPES, SIZES, Scene, make_scene
from utils.tiny_lm import IMAGE_TOKEN
RESPONSE_TYPES: tuple[str, ...] = ("conversation", "detail", "complex_reasoning")
HUMAN, GPT = "human", "gpt"  # LLaVA's speaker names

Box = tuple[float, float, float, float]  # (x0, y0, x1, y1), normalised
Turn = tuple[str, str]  # (question, answer): one human turn and the gpt turn that answers it
ChatFn = Callable[[list[dict[str, str]]], str]
Generator = Callable[["ImageContext", str, random.Random], list[Turn]]

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
NUMBER_WORDS: dict[str, int] = {
    "zero": 0, "one": 1, "single": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12,
}
_NUMBER_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
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
    return _NUMBER_NAMES[n] if 0 <= n < len(_NUMBER_NAMES) else str(n)


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
        image_id = image.get("id")
        if isinstance(categories, Mapping):  # {id: name}; ids may be strings if the dict came from JSON keys
            names = {int(k): str(v) for k, v in categories.items()}
        else:  # COCO's list of {"id": ..., "name": ...}
            names = {int(c["id"]): str(c["name"]) for c in categories}
        texts = []
        for c in captions:
            if isinstance(c, Mapping):
                if image_id is not None and c.get("image_id", image_id) != image_id:
                    continue
                c = c["caption"]
            texts.append(c)
        boxes = []
        for ann in annotations:
            if image_id is not None and ann.get("image_id", image_id) != image_id:
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


# --- records -------------------------------------------------------------------------------------

def _check_type(response_type: str) -> None:
    if response_type not in RESPONSE_TYPES:
        raise ValueError(f"unknown response type {response_type!r}; choose one of {RESPONSE_TYPES}")


def make_record(record_id: str, image: str, turns: Sequence[Turn]) -> dict[str, Any]:
    """LLaVA's JSON record from (question, answer) turns, ``<image>\\n`` before the first question."""
    if not turns:
        raise ValueError("a record needs at least one (question, answer) turn")
    conversations = []
    for i, (question, answer) in enumerate(turns):
        value = f"{IMAGE_TOKEN}\n{question}" if i == 0 else question
        conversations += [{"from": HUMAN, "value": value}, {"from": GPT, "value": answer}]
    return {"id": record_id, "image": image, "conversations": conversations}


def record_turns(record: Mapping[str, Any]) -> list[Turn]:
    """The (question, answer) pairs of a valid record, with the image token removed."""
    conv = record["conversations"]
    return [(_strip_image(conv[i]["value"]), conv[i + 1]["value"]) for i in range(0, len(conv) - 1, 2)]


def _strip_image(text: str) -> str:
    return text.replace(IMAGE_TOKEN, "").strip()


_TYPE_IN_ID = re.compile(r"-(conversation|detail|complex_reasoning|vqa|caption)(?=-|$)")


def record_type(record: Mapping[str, Any]) -> str:
    """The response type written into a record id by this module (``...-detail``), or 'other'."""
    match = _TYPE_IN_ID.search(str(record.get("id", "")))
    return match.group(1) if match else "other"


def validate_record(record: Any) -> list[str]:
    """Problems with a record's schema, each starting with 'schema:'; an empty list means valid.

    Checks: exactly the keys id, image, conversations; non-empty string id and image; turns
    ``{"from", "value"}`` alternating human, gpt, ..., starting with human and ending with gpt;
    non-empty values; ``<image>`` exactly once, at the start or end of the first human turn.
    """
    if not isinstance(record, Mapping):
        return [f"schema: a record is a dict with id, image and conversations, got {type(record).__name__}"]
    problems = []
    keys = set(record)
    if keys != {"id", "image", "conversations"}:
        missing, extra = {"id", "image", "conversations"} - keys, keys - {"id", "image", "conversations"}
        problems.append(f"schema: keys must be id, image, conversations (missing {sorted(missing)}, unexpected {sorted(extra)})")
    for key in ("id", "image"):
        if key in record and (not isinstance(record[key], str) or not record[key].strip()):
            problems.append(f"schema: {key} must be a non-empty string, got {record[key]!r}")
    conv = record.get("conversations")
    if "conversations" not in record:
        return problems
    if not isinstance(conv, list) or not conv:
        return problems + ["schema: conversations must be a non-empty list of turns"]
    image_tokens = 0
    for i, turn in enumerate(conv):
        if not isinstance(turn, Mapping) or set(turn) != {"from", "value"}:
            problems.append(f"schema: turn {i} must be a dict with exactly 'from' and 'value', got {turn!r}")
            continue
        expected = HUMAN if i % 2 == 0 else GPT
        if turn["from"] != expected:
            problems.append(f"schema: turn {i} is from {turn['from']!r}, expected {expected!r} (turns alternate, human first)")
        value = turn["value"]
        if not isinstance(value, str) or not _strip_image(value):
            problems.append(f"schema: turn {i} has an empty value")
            continue
        count = value.count(IMAGE_TOKEN)
        image_tokens += count
        if count and i != 0:
            problems.append(f"schema: {IMAGE_TOKEN} appears in turn {i}; it belongs in the first human turn only")
    if len(conv) % 2:
        problems.append("schema: the last turn is a human question with no gpt answer")
    if image_tokens != 1:
        problems.append(f"schema: {IMAGE_TOKEN} must appear exactly once in a record, found {image_tokens}")
    first = conv[0].get("value") if isinstance(conv[0], Mapping) else None
    if isinstance(first, str) and first.count(IMAGE_TOKEN) == 1:
        if not (first.startswith(IMAGE_TOKEN + "\n") or first.endswith("\n" + IMAGE_TOKEN)):
            problems.append(f"schema: the first human turn must start with '{IMAGE_TOKEN}\\n' or end with '\\n{IMAGE_TOKEN}'")
    return problems


def validate_dataset(records: Sequence[Any]) -> list[str]:
    """Every record's problems (prefixed with its position) plus repeated ids."""
    problems = [f"record {i}: {p}" for i, r in enumerate(records) for p in validate_record(r)]
    ids = Counter(r.get("id") for r in records if isinstance(r, Mapping))
    problems += [f"schema: id {rid!r} is used by {n} records" for rid, n in ids.items() if n > 1]
    return problems


def to_chat_messages(record: Mapping[str, Any], image: Any = None) -> list[dict[str, Any]]:
    """A record as the message list a Hugging Face chat template takes.

    ``[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q1}]},
    {"role": "assistant", "content": [{"type": "text", "text": a1}]}, ...]`` -- the form
    ``LlavaProcessor.apply_chat_template`` renders. The image block goes where ``<image>`` was
    (before or after the first question). Pass ``image`` (a PIL image, a path or URL) to put it
    in the image block, so ``apply_chat_template(..., tokenize=True)`` can load it.
    """
    problems = validate_record(record)
    if problems:
        raise ValueError("cannot convert an invalid record: " + "; ".join(problems))
    image_block: dict[str, Any] = {"type": "image"} if image is None else {"type": "image", "image": image}
    messages = []
    for i, turn in enumerate(record["conversations"]):
        text = _strip_image(turn["value"])
        content: list[dict[str, Any]] = [{"type": "text", "text": text}]
        if IMAGE_TOKEN in turn["value"]:
            content.insert(0 if turn["value"].lstrip().startswith(IMAGE_TOKEN) else 1, image_block)
        messages.append({"role": "user" if turn["from"] == HUMAN else "assistant", "content": content})
    return messages


# --- reading sentences: the fact checker's parser ----------------------------------------------

_TOKEN = re.compile(r"[a-z]+(?:'[a-z]+)?|\d+(?:\.\d+)?|[,;:()]")
_CLAUSE_BREAKS = frozenset({",", ";", ":", "(", ")", "and", "but", "while", "whereas", "so", "because", "although",
                            "though", "which"})
_NEGATIONS = frozenset({"no", "not", "none", "never", "neither", "nor", "without", "cannot", "nothing"})
_HYPOTHETICAL = frozenset({"if", "were", "would", "suppose", "imagine", "could", "might", "wouldn't", "couldn't"})
_LEADING_ANSWER = re.compile(r"^\s*(?:yes|no)\s*[,.;!:]\s*", re.IGNORECASE)  # 'No, ...' but not 'No large ...'
_COUNT_FRAME_BEFORE = frozenset({"are", "is", "there", "has", "have", "contains", "contain", "shows", "show", "see",
                                 "total", "exactly", "only", "just", "all", "altogether"})
_COUNT_FRAME_AFTER = (("in", "the", "image"), ("in", "the", "picture"), ("in", "the", "scene"), ("in", "the", "photo"),
                      ("in", "this", "image"), ("in", "this", "picture"), ("in", "total"), ("in", "all"), ("altogether",),
                      ("visible",))
_COPULAS = frozenset({"is", "are", "looks", "look", "appears", "appear", "seems", "seem", "isn't", "aren't"})
_PREDICATE_FILLERS = frozenset({"a", "an", "quite", "rather", "very", "fairly", "relatively", "also", "both", "all",
                                "clearly", "like", "mostly"})
_SUBJECT_GLUE = frozenset({"and", ",", "the", "a", "an", "both"})

RELATION_PHRASES: dict[tuple[str, ...], str] = {
    ("to", "the", "left", "of"): "left", ("on", "the", "left", "of"): "left", ("left", "of"): "left",
    ("to", "the", "right", "of"): "right", ("on", "the", "right", "of"): "right", ("right", "of"): "right",
    ("above",): "above", ("higher", "than"): "above", ("higher", "up", "than"): "above",
    ("below",): "below", ("beneath",): "below", ("underneath",): "below", ("under",): "below",
    ("lower", "than"): "below", ("lower", "down", "than"): "below",
    ("larger", "than"): "larger", ("bigger", "than"): "larger", ("smaller", "than"): "smaller",
    ("same", "size", "as"): "same size",
}
_RELATION_TEXT = {"left": "to the left of", "right": "to the right of", "above": "above", "below": "below",
                  "larger": "larger than", "smaller": "smaller than", "same size": "the same size as"}
_SUPERLATIVE_RIVAL = {("cx", -1): "as far left", ("cx", 1): "as far right", ("cy", -1): "as high up",
                      ("cy", 1): "as low down", ("area", 1): "as large", ("area", -1): "as small"}
SUPERLATIVES: dict[str, tuple[str, int]] = {  # word -> (attribute, +1 for the largest value, -1 for the smallest)
    "leftmost": ("cx", -1), "rightmost": ("cx", 1), "topmost": ("cy", -1), "uppermost": ("cy", -1),
    "highest": ("cy", -1), "bottommost": ("cy", 1), "lowest": ("cy", 1),
    "largest": ("area", 1), "biggest": ("area", 1), "smallest": ("area", -1),
}


@dataclass(frozen=True)
class Mention:
    """A noun phrase naming objects: '[number] [size] [colour] noun', as a token span [start, end)."""

    start: int
    end: int
    noun: str | None  # canonical noun ('circle'), None for 'shape', 'object', 'one' ...
    colour: str | None
    size: str | None  # 'small' or 'large'
    plural: bool
    number: int | None = None  # 'three red circles' -> 3
    number_at: int | None = None  # token index of the number word


@dataclass(frozen=True)
class Predicate:
    """'<subject> is [not] [size] [colour] [noun]', e.g. 'the circle is red', 'the red object is a circle'."""

    subject: Mention
    negated: bool
    colours: tuple[str, ...]
    sizes: tuple[str, ...]
    noun: str | None


@dataclass
class Sentence:
    """One sentence of an answer, tokenised, with its noun phrases, clauses and predicates."""

    text: str
    tokens: list[str]
    clause_of: list[int]  # clause index of each token
    mentions: list[Mention]
    predicates: list[Predicate]
    negated: bool  # a negation anywhere ("there is no red circle")
    hypothetical: bool  # "if ... were ... would": describes another scene, so counts and places are not checked

    def clause_negated(self, clause: int) -> bool:
        return any(_is_negation(t) for t, c in zip(self.tokens, self.clause_of) if c == clause)

    def negated_at(self, token: int) -> bool:
        """Whether the clause holding token ``token`` has a negation ('..., and none of the others is')."""
        return self.clause_negated(self.clause_of[token])


def _is_negation(token: str) -> bool:
    return token in _NEGATIONS or token.endswith("n't")


def split_sentences(text: str) -> list[str]:
    """Sentences of a paragraph (on ., ! or ? followed by space, and on line breaks)."""
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n+", text) if s.strip()]


# --- the fact checker ----------------------------------------------------------------------------

class FactChecker:
    """Flags what an answer says about an image that its context contradicts.

    Each sentence of each gpt turn is tokenised and its noun phrases ('the small red circle',
    'three shapes') are resolved against the context's boxes. Then each check in
    :attr:`CHECKS` runs on it and returns problems, each 'category: explanation':

    - ``colours``: a colour word no object or caption has; 'the red square' when the square is
      blue; 'the circle is red' when it is not;
    - ``shapes``: a shape (or category) that is not in the image; 'the red object is a square';
    - ``counts``: 'there are three shapes', 'I can see 2 circles' (number words and digits)
      when the count differs; only counts framed as totals ('there are', 'contains', 'only',
      'in the image', ...) are read, so 'two of the shapes are red' is left alone;
    - ``relations``: 'A is to the left of / right of / above / below B' and 'A is the leftmost'
      when the box centres do not support it (by :data:`POSITION_TOLERANCE`);
    - ``sizes``: 'small'/'large' against the box area (:data:`SMALL_AREA`), 'larger than',
      'the same size as', 'the largest';
    - ``existence``: 'there is no red circle' when there is one;
    - ``leaks``: mentions of captions, boxes or coordinates, which someone looking at the image
      could not know about.

    Clauses with a negation skip the vocabulary checks ('there is no star' is fine; clauses end
    at commas and at words such as 'and' and 'while'), and hypothetical sentences ('if the
    circle were moved ..., it would ...') skip counts and positions, which describe another
    scene. To add a check, subclass, write ``check_<name>(self, sentence) -> list[str]`` and
    extend ``CHECKS``::

        class MyChecker(FactChecker):
            CHECKS = FactChecker.CHECKS + ("regions",)

            def check_regions(self, sentence: Sentence) -> list[str]:
                ...

    :attr:`checked` counts the claims each check verified, so a clean report can be told apart
    from one where nothing was checkable.
    """

    CHECKS: tuple[str, ...] = ("colours", "shapes", "counts", "relations", "sizes", "existence", "leaks")

    def __init__(
        self,
        context: ImageContext,
        *,
        nouns: Iterable[str] = (),
        colours: Iterable[str] = COLOUR_WORDS,
        position_tolerance: float = POSITION_TOLERANCE,
        size_tolerance: float = SIZE_TOLERANCE,
    ) -> None:
        if not isinstance(context, ImageContext):
            raise TypeError(f"FactChecker needs an ImageContext, got {type(context).__name__}")
        self.context = context
        self.objects = context.objects
        self.position_tolerance, self.size_tolerance = position_tolerance, size_tolerance
        self.checked: Counter[str] = Counter()
        self.nouns = {o.noun for o in self.objects} | set(SHAPE_WORDS) | set(context.categories)
        self.nouns |= {n.strip().lower() for n in nouns}
        self.colour_words = {c for c in colours} - self.nouns  # 'orange' the fruit is a noun, not a colour
        caption_tokens = [_TOKEN.findall(c.lower()) for c in context.captions]
        caption_words = {t for tokens in caption_tokens for t in tokens}
        self.scene_colours = {o.colour for o in self.objects if o.colour} | {
            "grey" if w == "gray" else w for w in caption_words & self.colour_words}
        # A noun is in the scene if some box has it or a caption names it.
        self.surface: dict[tuple[str, ...], tuple[str, bool]] = {}
        for noun in self.nouns:
            self.surface[tuple(noun.split())] = (noun, False)
            self.surface.setdefault(tuple(plural(noun).split()), (noun, True))
        caption_nouns = {noun for tokens in caption_tokens for m in self._mentions(tokens) if (noun := m.noun)}
        self.scene_nouns = {o.noun for o in self.objects} | caption_nouns

    # --- parsing --------------------------------------------------------------------------------
    def _colour(self, token: str) -> str | None:
        return ("grey" if token == "gray" else token) if token in self.colour_words else None

    def _mentions(self, tokens: list[str]) -> list[Mention]:
        mentions, i = [], 0
        while i < len(tokens):
            span, noun, is_plural = 0, None, False
            for n in (3, 2, 1):
                if tuple(tokens[i:i + n]) in self.surface:
                    span, (noun, is_plural) = n, self.surface[tuple(tokens[i:i + n])]
                    break
            if not span and tokens[i] in GENERIC_NOUNS:
                span, is_plural = 1, tokens[i].endswith("s")
            elif not span and tokens[i] in ("one", "ones") and i and (tokens[i - 1] in SIZE_WORDS or self._colour(tokens[i - 1])):
                span, is_plural = 1, tokens[i] == "ones"  # 'the red one'
            if not span:
                i += 1
                continue
            start, colour, size = i, None, None
            while start > 0 and (tokens[start - 1] in SIZE_WORDS or self._colour(tokens[start - 1])):
                start -= 1
                if tokens[start] in SIZE_WORDS:
                    size = size or SIZE_WORDS[tokens[start]]
                else:
                    colour = colour or self._colour(tokens[start])
            if mentions and start < mentions[-1].end:  # modifiers already used by the previous mention
                start = mentions[-1].end
            number = number_at = None
            before = tokens[start - 1] if start > 0 else ""
            if before in NUMBER_WORDS or before.isdigit():
                number, number_at = (NUMBER_WORDS[before] if before in NUMBER_WORDS else int(before)), start - 1
            mentions.append(Mention(start, i + span, noun, colour, size, is_plural, number, number_at))
            i += span
        return mentions

    def _predicates(self, tokens: list[str], mentions: list[Mention]) -> list[Predicate]:
        predicates = []
        for m_index, m in enumerate(mentions):
            k = m.end
            if k >= len(tokens) or tokens[k] not in _COPULAS:
                continue
            negated = tokens[k].endswith("n't")
            k += 1
            if k < len(tokens) and tokens[k] == "not":
                negated, k = True, k + 1
            while k < len(tokens) and tokens[k] in _PREDICATE_FILLERS:
                k += 1
            colours, sizes, noun = [], [], None
            while k < len(tokens) and (tokens[k] in SIZE_WORDS or self._colour(tokens[k])):
                if tokens[k] in SIZE_WORDS:
                    sizes.append(SIZE_WORDS[tokens[k]])
                else:
                    colours.append(self._colour(tokens[k]))
                k += 1
            after = next((n for n in mentions if n.start <= k < n.end), None)  # 'is a circle', 'is a small circle'
            if after is not None and after.noun is not None:
                noun = after.noun
            if not (colours or sizes or noun):
                continue
            for subject in self._subjects(tokens, mentions, m_index):
                predicates.append(Predicate(subject, negated, tuple(colours), tuple(sizes), noun))
        return predicates

    @staticmethod
    def _subjects(tokens: list[str], mentions: list[Mention], index: int) -> list[Mention]:
        """The subject before a verb, with what it is coordinated with: 'the circle and the square are small'.

        A coordination counts only if it opens its clause, so in 'the circle is left of the square and
        the triangle is small' the square is not a subject of 'is small'.
        """
        j = index
        while j > 0:
            gap = tokens[mentions[j - 1].end:mentions[j].start]
            if not (gap and set(gap) <= _SUBJECT_GLUE and ("and" in gap or ("," in gap and j < index))):
                break
            j -= 1
        if j < index:
            k = mentions[j].start - 1
            while k >= 0 and tokens[k] in _SUBJECT_GLUE - {"and", ","}:
                k -= 1
            if k >= 0 and tokens[k] not in _CLAUSE_BREAKS - {"and"}:
                j = index  # e.g. '... left of the square and the triangle is small': the square is an object
        return mentions[j:index + 1]

    def analyse(self, text: str) -> Sentence:
        """Tokens, clauses, noun phrases and predicates of one sentence."""
        text = _LEADING_ANSWER.sub("", text.replace("\u2019", "'"))  # 'No, the circle ...': the 'no' answers the question
        tokens = _TOKEN.findall(text.lower())
        clause_of, clause = [], 0
        for t in tokens:
            if t in _CLAUSE_BREAKS:
                clause += 1
            clause_of.append(clause)
        mentions = self._mentions(tokens)
        return Sentence(
            text, tokens, clause_of, mentions, self._predicates(tokens, mentions),
            negated=any(_is_negation(t) for t in tokens), hypothetical=any(t in _HYPOTHETICAL for t in tokens),
        )

    # --- resolving noun phrases -------------------------------------------------------------------
    def resolve(self, mention: Mention) -> list[LabelledBox]:
        """The boxes a noun phrase may name (by noun and colour; a size word is checked, not used to pick)."""
        return [o for o in self.objects
                if (mention.noun is None or o.noun == mention.noun) and (mention.colour is None or o.colour == mention.colour)]

    def _one(self, mention: Mention) -> LabelledBox | None:
        found = self.resolve(mention)
        return found[0] if len(found) == 1 and not mention.plural else None

    @staticmethod
    def _quote(sentence: Sentence) -> str:
        text = sentence.text.strip()
        return f'"{text[:117]}..."' if len(text) > 120 else f'"{text}"'

    # --- the checks -------------------------------------------------------------------------------
    def check_colours(self, s: Sentence) -> list[str]:
        problems = []
        for colour in dict.fromkeys(c for i, t in enumerate(s.tokens) if (c := self._colour(t)) and not s.negated_at(i)):
            self.checked["colour"] += 1
            if colour not in self.scene_colours:
                problems.append(f"colour: {self._quote(s)} mentions {colour}, but nothing in the image is {colour}")
        for m in s.mentions:
            if m.colour and m.noun in self.scene_nouns and m.colour in self.scene_colours and not s.negated_at(m.start):
                same_noun = [o for o in self.objects if o.noun == m.noun and o.colour]
                if same_noun and not self.resolve(m):
                    actual = join_words(sorted({o.colour for o in same_noun}))
                    problems.append(f"colour: {self._quote(s)} mentions a {m.colour} {m.noun}, but the {m.noun} is {actual}")
        for p in s.predicates:
            obj = self._one(p.subject)
            if obj is None or obj.colour is None:
                continue
            for colour in p.colours:
                self.checked["colour"] += 1
                if (colour == obj.colour) == p.negated:
                    problems.append(f"colour: {self._quote(s)} -- the {obj.label} is {obj.colour}")
        return problems

    def check_shapes(self, s: Sentence) -> list[str]:
        problems = []
        for m in s.mentions:
            if m.noun is None or s.negated_at(m.start):
                continue
            self.checked["shape"] += 1
            if m.noun not in self.scene_nouns:
                what = "shape" if m.noun in SHAPE_WORDS else "object"
                problems.append(f"{what}: {self._quote(s)} mentions {article(m.noun)} {m.noun}, but the image has none")
        for p in s.predicates:  # 'the red object is a circle'
            obj = self._one(p.subject)
            if obj is not None and p.noun is not None:
                self.checked["shape"] += 1
                if (p.noun == obj.noun) == p.negated:
                    problems.append(f"shape: {self._quote(s)} -- but the {obj.label} is {article(obj.noun)} {obj.noun}")
        return problems

    def _is_count_claim(self, s: Sentence, m: Mention) -> bool:
        assert m.number_at is not None
        # Look back up to 8 words, across 'and' but not across other clause breaks:
        # 'the picture contains a circle and two squares' is a total, 'the circle is small, and two ...' is not.
        before: list[str] = []
        for token in reversed(s.tokens[max(0, m.number_at - 8):m.number_at]):
            if token in _CLAUSE_BREAKS and token != "and":
                break
            before.append(token)
        after = tuple(s.tokens[m.end:m.end + 3])
        return bool(set(before) & _COUNT_FRAME_BEFORE) or any(after[:len(f)] == f for f in _COUNT_FRAME_AFTER)

    def check_counts(self, s: Sentence) -> list[str]:
        if s.hypothetical:
            return []
        problems = []
        for m in s.mentions:
            if m.number is None or s.negated_at(m.start) or not self._is_count_claim(s, m):
                continue
            if m.noun is not None and m.noun not in self.scene_nouns:
                continue  # an invented object: the shapes check reports it
            true_count = sum(1 for o in self.resolve(m) if m.size is None or o.size == m.size)
            self.checked["count"] += 1
            if true_count != m.number:
                noun = m.noun or self.context.kind
                what = " ".join(w for w in (m.size, m.colour, noun if true_count == 1 else plural(noun)) if w)
                problems.append(f"count: {self._quote(s)} says {m.number}, but the image has {true_count} {what}")
        return problems

    def _relation_holds(self, kind: str, a: LabelledBox, b: LabelledBox) -> bool:
        """Whether the boxes clearly support 'a <kind> b'."""
        tol, size_tol = self.position_tolerance, self.size_tolerance
        ratio = a.area / b.area
        return {
            "left": a.cx < b.cx - tol, "right": a.cx > b.cx + tol,
            "above": a.cy < b.cy - tol, "below": a.cy > b.cy + tol,
            "larger": ratio > 1 + size_tol, "smaller": ratio < 1 - size_tol,
            "same size": abs(ratio - 1) <= size_tol,
        }[kind]

    def _relation_matches(self, s: Sentence) -> list[tuple[int, int, str]]:
        found, i = [], 0
        while i < len(s.tokens):
            for n in (4, 3, 2, 1):
                kind = RELATION_PHRASES.get(tuple(s.tokens[i:i + n]))
                if kind:
                    found.append((i, i + n, kind))
                    i += n - 1
                    break
            i += 1
        return found

    def _pairwise(self, s: Sentence, kinds: set[str]) -> list[str]:
        """'A <relation> B' claims whose relation is in ``kinds``: the first phrase of the clause vs the next one."""
        problems = []
        for start, end, kind in self._relation_matches(s):
            if kind not in kinds:
                continue
            clause = s.clause_of[start]
            subject = next((m for m in s.mentions if s.clause_of[m.start] == clause and m.end <= start), None)
            if subject is None and start > 0 and s.tokens[start - 1] == ",":
                # An aside right after a noun phrase: 'the square, below the circle, is further away'.
                subject = next((m for m in reversed(s.mentions) if m.end == start - 1), None)
            other = next((m for m in s.mentions if s.clause_of[m.start] == clause and m.start >= end), None)
            if subject is None or other is None:
                continue
            a, b = self._one(subject), self._one(other)
            if a is None or b is None or a is b:
                continue
            negated = s.clause_negated(clause)
            category = "size" if kind in ("larger", "smaller", "same size") else "relation"
            self.checked[category] += 1
            if self._relation_holds(kind, a, b) == negated:
                truth = (f"the {a.label} is {box_relation(a.box, b.box)} the {b.label}" if category == "relation"
                         else f"the {a.label} is {a.size} and the {b.label} is {b.size}")
                problems.append(f"{category}: {self._quote(s)} says the {a.label} is {'not ' * negated}"
                                f"{_RELATION_TEXT[kind]} the {b.label}, but {truth}")
        return problems

    def _superlatives(self, s: Sentence, attributes: set[str]) -> list[str]:
        problems = []
        for i, token in enumerate(s.tokens):
            if token not in SUPERLATIVES or SUPERLATIVES[token][0] not in attributes or s.clause_negated(s.clause_of[i]):
                continue
            attribute, sign = SUPERLATIVES[token]
            candidates = [m for m in s.mentions if s.clause_of[m.start] == s.clause_of[i] and m.start != i + 1]
            obj = self._one(candidates[0]) if candidates else None
            if obj is None:
                continue
            others = [o for o in self.objects if o is not obj]
            category = "size" if attribute == "area" else "relation"
            self.checked[category] += 1
            value = getattr(obj, attribute)
            if attribute == "area":
                beaten = [o for o in others if not (sign * value > sign * o.area * (1 + sign * self.size_tolerance))]
            else:
                beaten = [o for o in others if not (sign * value > sign * getattr(o, attribute) + self.position_tolerance)]
            if beaten:
                rivals = join_words([f"the {o.label}" for o in beaten])
                problems.append(f"{category}: {self._quote(s)} calls the {obj.label} the {token}, but {rivals} "
                                f"{'is' if len(beaten) == 1 else 'are'} at least {_SUPERLATIVE_RIVAL[attribute, sign]}")
        return problems

    def check_relations(self, s: Sentence) -> list[str]:
        if s.hypothetical:
            return []
        return self._pairwise(s, {"left", "right", "above", "below"}) + self._superlatives(s, {"cx", "cy"})

    def check_sizes(self, s: Sentence) -> list[str]:
        problems = []
        for m in s.mentions:
            found = self.resolve(m)
            if m.size is None or not found or s.negated_at(m.start):
                continue
            self.checked["size"] += 1
            if all(o.size != m.size for o in found):
                problems.append(f"size: {self._quote(s)} calls the {found[0].label if len(found) == 1 else 'objects'} "
                                f"{m.size}, but {'it is' if len(found) == 1 else 'they are'} {found[0].size}")
        for p in s.predicates:
            found = self.resolve(p.subject)
            if not p.sizes or not found or (len(found) > 1 and not p.subject.plural):
                continue  # nothing to check, or 'the person' with several people: ambiguous
            for size in p.sizes:
                self.checked["size"] += 1
                wrong = [o for o in found if (o.size == size) == p.negated]
                if wrong:
                    problems.append(f"size: {self._quote(s)} -- the {wrong[0].label} is {wrong[0].size}")
        if not s.hypothetical:
            problems += self._pairwise(s, {"larger", "smaller", "same size"}) + self._superlatives(s, {"area"})
        return problems

    def check_existence(self, s: Sentence) -> list[str]:
        if not s.negated or s.hypothetical:
            return []
        problems = []
        for m in s.mentions:
            start = m.number_at if m.number_at is not None else m.start
            before = s.tokens[max(0, start - 3):start]
            denies = before[-1:] in (["no"], ["any"]) or (before[-1:] in (["a"], ["an"]) and any(map(_is_negation, before)))
            if not denies:
                continue
            present = [o for o in self.resolve(m) if m.size is None or o.size == m.size]
            self.checked["existence"] += 1
            if present:
                label = present[0].label
                problems.append(f"existence: {self._quote(s)} denies it, but there is {article(label)} {label}")
        return problems

    _LEAKS = (
        (re.compile(r"\bcaptions?\b", re.I), "the captions"),
        (re.compile(r"\bbounding[- ]box(es)?\b|\bboxes\b", re.I), "the boxes"),
        (re.compile(r"\bcoordinates?\b|\[\s*\d|(?<![\d.])0?\.\d{2,}\b", re.I), "coordinates"),  # '0.36', not '2.50'
        (re.compile(r"\bannotat", re.I), "the annotations"),
    )

    def check_leaks(self, s: Sentence) -> list[str]:
        self.checked["leak"] += 1
        return [f"leak: {self._quote(s)} refers to {what}, which someone looking at the image would not know of"
                for pattern, what in self._LEAKS if pattern.search(s.text)]

    # --- entry points ---------------------------------------------------------------------------
    def check_text(self, text: str) -> list[str]:
        """Problems in one answer (a paragraph or a sentence)."""
        problems: list[str] = []
        for sentence_text in split_sentences(text):
            sentence = self.analyse(sentence_text)
            for name in self.CHECKS:
                check = getattr(self, f"check_{name}", None)
                if check is None:
                    raise AttributeError(f"{type(self).__name__}.CHECKS lists {name!r} but there is no check_{name} method")
                problems += check(sentence)
        return list(dict.fromkeys(problems))

    def check_record(self, record: Mapping[str, Any]) -> list[str]:
        """Problems in a record's gpt turns (questions may rightly ask about absent things)."""
        problems: list[str] = []
        for turn in record.get("conversations", []):
            if isinstance(turn, Mapping) and turn.get("from") == GPT and isinstance(turn.get("value"), str):
                problems += self.check_text(turn["value"])
        return list(dict.fromkeys(problems))


def check_facts(record: Mapping[str, Any], context: ImageContext, **checker_options: Any) -> list[str]:
    """What a record's answers say that the context contradicts (see :class:`FactChecker`)."""
    return FactChecker(context, **checker_options).check_record(record)


# --- generator 1: rules ------------------------------------------------------------------------

DETAIL_INSTRUCTIONS: tuple[str, ...] = (
    "Describe the image in detail.",
    "Give a thorough description of this picture.",
    "What do you see in this image? Please describe it fully.",
    "Write a detailed paragraph about what the image shows.",
    "Walk me through everything that is visible in the picture.",
    "Describe this image carefully, including where each object is.",
)


def _region(o: LabelledBox) -> str:
    """Where a box centre lies in the image, in words, by thirds: 'in the top left part of the picture'."""
    column = "left" if o.cx < 1 / 3 else "right" if o.cx > 2 / 3 else ""
    row = "top" if o.cy < 1 / 3 else "bottom" if o.cy > 2 / 3 else ""
    if row and column:
        return f"in the {row} {column} part of the picture"
    if row:
        return f"near the {row} of the picture"
    if column:
        return f"on the {column} side of the picture"
    return "near the centre of the picture"


def _mirror_region(o: LabelledBox) -> str:
    flipped = (1 - o.box[2], o.box[1], 1 - o.box[0], o.box[3])
    return _region(LabelledBox(o.label, flipped, o.colour, o.noun))


def _fraction_words(x: float) -> str:
    choices = (("a tenth", 0.1), ("a fifth", 0.2), ("a quarter", 0.25), ("a third", 1 / 3), ("two fifths", 0.4),
               ("half", 0.5), ("three fifths", 0.6), ("two thirds", 2 / 3), ("three quarters", 0.75),
               ("four fifths", 0.8), ("nearly all", 0.9), ("all", 1.0))
    return min(choices, key=lambda c: abs(c[1] - x))[0]


class _Facts:
    """What the rule-based generator knows about a context, in the words it writes."""

    def __init__(self, context: ImageContext, rng: random.Random) -> None:
        if not context.objects:
            raise ValueError(f"{context.image}: the rule-based generator needs at least one labelled box")
        self.context, self.rng = context, rng
        self.objects = sorted(context.objects, key=lambda o: o.cx)  # left to right
        self.kind = context.kind
        self.kinds = plural(self.kind)
        labels = Counter(o.label for o in self.objects)
        self.unique = [o for o in self.objects if labels[o.label] == 1]  # objects 'the <label>' names unambiguously
        self.labels = labels
        nouns = Counter(o.noun for o in self.objects)
        self.by_noun = [o for o in self.unique if nouns[o.noun] == 1]  # 'the circle' names it too
        self.shapesworld = all(o.noun in SHAPES and o.colour for o in self.objects)

    def a(self, o: LabelledBox, size: bool = True) -> str:
        phrase = f"{o.size} {o.label}" if size else o.label
        return f"{article(phrase)} {phrase}"

    def count(self, n: int, noun: str, digits_ok: bool = True) -> str:
        number = str(n) if digits_ok and self.rng.random() < 0.3 else number_word(n)
        return f"{number} {noun if n == 1 else plural(noun)}"

    def inventory(self) -> str:
        """'a small red circle, a large blue square and two people'."""
        parts = []
        for label in dict.fromkeys(o.label for o in self.objects):
            k = self.labels[label]
            obj = next(o for o in self.objects if o.label == label)
            parts.append(self.a(obj) if k == 1 else f"{number_word(k)} {plural(label)}")
        return join_words(parts)

    def extreme(self, attribute: str, sign: int, among: Sequence[LabelledBox] | None = None) -> LabelledBox | None:
        """The object with the largest (sign +1) or smallest (-1) attribute, if it wins clearly."""
        among = list(among if among is not None else self.objects)
        if not among:
            return None
        ranked = sorted(among, key=lambda o: -sign * getattr(o, attribute))
        if len(ranked) > 1 and abs(getattr(ranked[0], attribute) - getattr(ranked[1], attribute)) < CLEAR_MARGIN:
            return None
        return ranked[0] if self.labels[ranked[0].label] == 1 else None  # 'the <label>' must name it


def _conversation_candidates(f: _Facts) -> list[Callable[[], Turn | None]]:
    rng, kind, kinds = f.rng, f.kind, f.kinds

    def count() -> Turn:
        n = len(f.objects)
        q = rng.choice((f"How many {kinds} are in the image?", f"How many {kinds} can you see?",
                        f"Can you count the {kinds} in this picture?", f"How many {kinds} does the picture contain?"))
        if n == 1:
            return q, f"There is only one {kind} in the image: {f.inventory()}."
        a = rng.choice((f"There are {f.count(n, kind)} in the image: {f.inventory()}.",
                        f"I can see {f.count(n, kind)}: {f.inventory()}.",
                        f"The picture contains {f.count(n, kind)}, namely {f.inventory()}."))
        return q, a

    def count_label() -> Turn | None:
        repeated = [label for label, k in f.labels.items() if k > 1]
        if not repeated:
            return None
        label = rng.choice(repeated)
        return f"How many {plural(label)} are there?", f"There are {f.count(f.labels[label], label)} in the image."

    def colour() -> Turn | None:
        options = [o for o in f.by_noun if o.colour]
        if not options:
            return None
        o = rng.choice(options)
        q = rng.choice((f"What colour is the {o.noun}?", f"Which colour does the {o.noun} have?",
                        f"What is the colour of the {o.noun}?"))
        return q, rng.choice((f"The {o.noun} is {o.colour}.", f"It is {article(o.colour)} {o.colour} {o.noun}.",
                              f"The {o.noun} in the picture is {o.colour}."))

    def shape() -> Turn | None:
        colours = Counter(o.colour for o in f.objects)
        options = [o for o in f.unique if o.colour and colours[o.colour] == 1]
        if not options:
            return None
        o = rng.choice(options)
        q = rng.choice((f"What shape is the {o.colour} one?" if kind == "shape" else f"What is the {o.colour} object?",
                        f"Which {kind} is {o.colour}?"))
        what = f"{article(o.noun)} {o.noun}"
        return q, rng.choice((f"The {o.colour} {kind} is {what}.", f"The {o.colour} one is {what}."))

    def size() -> Turn | None:
        if not f.unique:
            return None
        o = rng.choice(f.unique)
        q = rng.choice((f"Is the {o.label} small or large?", f"How big is the {o.label}?",
                        f"What size is the {o.label}?"))
        a = f"The {o.label} is {o.size}."
        others = [p for p in f.unique if p is not o and p.size != o.size]
        if others:
            p = rng.choice(others)
            a += f" The {o.label} is {'smaller' if o.size == 'small' else 'larger'} than the {p.label}."
        return q, a

    def where() -> Turn | None:
        if not f.unique:
            return None
        o = rng.choice(f.unique)
        q = rng.choice((f"Where is the {o.label} in the picture?", f"Where in the image can you find the {o.label}?"))
        return q, f"The {o.label} is {_region(o)}."

    def relation() -> Turn | None:
        if len(f.unique) < 2:
            return None
        a, b = rng.sample(f.unique, 2)
        q = rng.choice((f"Where is the {a.label} relative to the {b.label}?",
                        f"What is the position of the {a.label} compared with the {b.label}?",
                        f"How is the {a.label} placed with respect to the {b.label}?"))
        return q, f"The {a.label} is {box_relation(a.box, b.box)} the {b.label}."

    def yes_no_relation() -> Turn | None:
        if len(f.unique) < 2:
            return None
        a, b = rng.sample(f.unique, 2)
        truth = box_relation(a.box, b.box)
        opposite = {"to the left of": "to the right of", "to the right of": "to the left of",
                    "above": "below", "below": "above"}[truth]
        asked = rng.choice((truth, opposite))  # never the other axis: its answer may be unclear
        q = f"Is the {a.label} {asked} the {b.label}?"
        if asked == truth:
            return q, f"Yes, the {a.label} is {truth} the {b.label}."
        return q, f"No. The {a.label} is {truth} the {b.label}."

    def exists() -> Turn | None:
        if f.shapesworld and rng.random() < 0.5:  # ask about an absent colour-shape pair
            absent = [(c, s) for c in COLOURS for s in SHAPES if not any(o.colour == c and o.noun == s for o in f.objects)]
            c, s = rng.choice(absent)
            a = f"No, there is no {c} {s} in the image."
            same = [o for o in f.objects if o.noun == s]
            if same:
                a += f" The {s} is {same[0].colour}."
            return f"Is there {article(c)} {c} {s} in the image?", a
        o = rng.choice(f.objects)
        return f"Is there {article(o.label)} {o.label} in the image?", f"Yes, there is {article(o.label)} {o.label} in the image."

    def extreme() -> Turn | None:
        word, attribute, sign, ask = rng.choice((
            ("leftmost", "cx", -1, f"Which {kind} is furthest to the left?"),
            ("rightmost", "cx", 1, f"Which {kind} is furthest to the right?"),
            ("highest", "cy", -1, f"Which {kind} is highest up in the picture?"),
            ("lowest", "cy", 1, f"Which {kind} is lowest in the picture?"),
        ))
        o = f.extreme(attribute, sign) if len(f.objects) > 1 else None
        if o is None:
            return None
        return ask, f"The {o.label} is the {word} {kind}."

    return [count, count_label, colour, shape, size, where, relation, yes_no_relation, exists, extreme]


def _conversation(f: _Facts) -> list[Turn]:
    candidates = _conversation_candidates(f)
    f.rng.shuffle(candidates)
    wanted = f.rng.randint(3, 5)
    turns: list[Turn] = []
    for make in candidates:
        turn = make()
        if turn is not None:
            turns.append(turn)
        if len(turns) == wanted:
            break
    return turns


def _detail(f: _Facts) -> list[Turn]:
    rng, kind, n = f.rng, f.kind, len(f.objects)
    sentences = []
    if n == 1:
        sentences.append(rng.choice((f"The image shows a single {kind}: {f.inventory()}.",
                                     f"There is only one {kind} in this picture, {f.inventory()}.")))
        sentences.append(f"It sits {_region(f.objects[0])}.")
    else:
        sentences.append(rng.choice((f"The image shows {f.count(n, kind)}.", f"There are {f.count(n, kind)} in this picture.",
                                     f"This picture contains {f.count(n, kind)}.")))
    # Each object, left to right, placed relative to the one before it.
    previous = None
    for o in f.objects if n > 1 else ():
        if f.labels[o.label] > 1:
            continue
        if previous is None:
            sentences.append(rng.choice((f"{f.a(o).capitalize()} sits {_region(o)}.",
                                         f"The {o.label} is {o.size} and lies {_region(o)}.")))
        else:
            rel = box_relation(o.box, previous.box)
            sentences.append(rng.choice((f"{f.a(o).capitalize()} is {rel} the {previous.label}, {_region(o)}.",
                                         f"The {o.size} {o.label} is {rel} the {previous.label}.")))
        previous = o
    for label, k in f.labels.items():
        if k > 1:
            sentences.append(f"There are {f.count(k, label, digits_ok=False)} in the image.")
    sizes = Counter(o.size for o in f.objects)
    if n > 1 and len(sizes) == 1:
        everything = f"Both {f.kinds}" if n == 2 else f"All {number_word(n)} {f.kinds}"
        sentences.append(f"{everything} are {f.objects[0].size}.")
    elif n > 1 and all(f.labels[o.label] == 1 for o in f.objects):
        large = [f"the {o.label}" for o in f.objects if o.size == "large"]
        small = [f"the {o.label}" for o in f.objects if o.size == "small"]
        verb_l, verb_s = ("is" if len(large) == 1 else "are"), ("is" if len(small) == 1 else "are")
        large_clause, small_clause = f"{join_words(large)} {verb_l} large", f"{join_words(small)} {verb_s} small"
        first, second = rng.choice(((large_clause, small_clause), (small_clause, large_clause)))
        sentences.append(f"{first[0].upper()}{first[1:]}, while {second}.")
    colours = list(dict.fromkeys(o.colour for o in f.objects if o.colour))
    if len(colours) > 1:
        sentences.append(rng.choice((f"The colours in the picture are {join_words(colours)}.",
                                     f"Together they show {number_word(len(colours))} colours: {join_words(colours)}.")))
    caption = rng.choice(f.context.captions).rstrip(".")
    if caption[1:2].islower() or caption[1:2] == " ":  # 'A man rides ...' -> 'a man rides ...' mid-sentence
        caption = caption[0].lower() + caption[1:]
    sentences.append(rng.choice((f"In short, the picture shows {caption}.", f"In one sentence: {caption}.",
                                 f"Overall, it is a picture of {caption}.")))
    return [(rng.choice(DETAIL_INSTRUCTIONS), " ".join(sentences))]


def _reasoning_candidates(f: _Facts) -> list[Callable[[], Turn | None]]:
    rng, kind, kinds = f.rng, f.kind, f.kinds

    def move() -> Turn | None:
        if len(f.unique) < 2:
            return None
        mover, target = rng.sample(f.unique, 2)
        to_right = rng.random() < 0.5
        direction, word, sign = ("to the right of", "leftmost", -1) if to_right else ("to the left of", "rightmost", 1)
        now = f.extreme("cx", sign)
        stay = [o for o in f.objects if o is not mover]
        after = f.extreme("cx", sign, stay)  # the mover ends up past the target, so it cannot be the extreme
        if now is None or after is None:
            return None
        q = f"If the {mover.label} were moved {direction} the {target.label}, which {kind} would be the {word} one?"
        if now is mover:
            a = (f"The {after.label} would be the {word} {kind}. At the moment the {mover.label} is the {word} {kind}. "
                 f"Moving it {direction} the {target.label} would take it past the {target.label}, and of the {kinds} that "
                 f"stay where they are, the {after.label} is furthest {'left' if to_right else 'right'}.")
        else:
            a = (f"The {after.label} would still be the {word} {kind}. The {after.label} is the {word} {kind} now. "
                 f"The {mover.label} would end up {direction} the {target.label}, so it could not overtake it.")
        return q, a

    def larger_count() -> Turn | None:
        if len(f.objects) < 2 or len(f.unique) < len(f.objects):  # every object must have a name of its own
            return None
        x = rng.choice(f.unique)
        larger = [o for o in f.objects if o is not x and o.area > x.area * (1 + SIZE_TOLERANCE)]
        unclear = [o for o in f.objects if o is not x and o not in larger and o.area > x.area * (1 - SIZE_TOLERANCE)]
        q = f"How many {kinds} are larger than the {x.label}?"
        if not larger:
            same = f" The {unclear[0].label} is the same size as the {x.label}." if len(unclear) == 1 else ""
            return q, f"None. The {x.label} is {x.size}, and none of the other {kinds} is larger than it.{same}"
        names = [f"the {o.label}" for o in larger]
        k, verb = len(larger), "is" if len(larger) == 1 else "are"
        return q, (f"{number_word(k).capitalize()}. The {x.label} is {x.size}, and {join_words(names)} {verb} bigger "
                   f"than the {x.label}, so {number_word(k)} of the other {kinds} {verb} larger than it.")

    def majority() -> Turn | None:
        if len(f.objects) < 2:
            return None
        large = sum(o.size == "large" for o in f.objects)
        small = len(f.objects) - large
        q = f"Are there more large {kinds} than small ones in the picture?"
        if large == 0 or small == 0:
            size = "small" if large == 0 else "large"
            everything = f"Both {kinds}" if len(f.objects) == 2 else f"All {number_word(len(f.objects))} {kinds}"
            return q, f"{'No' if large == 0 else 'Yes'}. {everything} are {size}, so there are only {size} {kinds} to see."
        if large == small:
            return q, (f"Neither. There {'is' if large == 1 else 'are'} {f.count(large, 'large ' + kind)} and "
                       f"the same number of small ones, so they are equally common.")
        more = "large" if large > small else "small"
        fewer = "small" if more == "large" else "large"
        return q, (f"{'Yes' if more == 'large' else 'No'}. There {'is' if max(large, small) == 1 else 'are'} "
                   f"{f.count(max(large, small), more + ' ' + kind)} and only {f.count(min(large, small), fewer + ' ' + kind)}, "
                   f"so the {more} ones are in the majority.")

    def closest() -> Turn | None:
        if len(f.unique) < 3:
            return None
        x = rng.choice(f.unique)
        others = sorted((o for o in f.unique if o is not x), key=lambda o: math.dist((o.cx, o.cy), (x.cx, x.cy)))
        near, far = others[0], others[1]
        if math.dist((far.cx, far.cy), (x.cx, x.cy)) - math.dist((near.cx, near.cy), (x.cx, x.cy)) < CLEAR_MARGIN:
            return None
        q = f"Which {kind} is closest to the {x.label}?"
        return q, (f"The {near.label} is closest to the {x.label}. The {near.label} is {box_relation(near.box, x.box)} "
                   f"the {x.label}, while the {far.label}, {box_relation(far.box, x.box)} the {x.label}, is further away.")

    def fit_twice() -> Turn | None:
        if len(f.objects) != 1:
            return None
        o = f.objects[0]
        fits = 2 * o.width <= 1
        q = f"Would two {plural(o.label)} of this size fit side by side across the picture?"
        return q, (f"{'Yes' if fits else 'No'}. The {o.label} is {o.size}: it is about {_fraction_words(o.width)} as wide "
                   f"as the picture, so two of them side by side would need about {_fraction_words(2 * o.width)} of the "
                   f"width{', which fits' if fits else ', which is more than there is'}.")

    def mirror() -> Turn | None:
        if len(f.objects) != 1:
            return None
        o = f.objects[0]
        q = f"If the picture were flipped from left to right, where would the {o.label} end up?"
        return q, (f"It would end up {_mirror_region(o)}. Right now the {o.label} is {_region(o)}, and a left-to-right "
                   f"flip keeps its height but swaps its left and right.")

    return [move, larger_count, majority, closest, fit_twice, mirror]


def _complex_reasoning(f: _Facts) -> list[Turn]:
    candidates = _reasoning_candidates(f)
    f.rng.shuffle(candidates)
    for make in candidates:
        turn = make()
        if turn is not None:
            return [turn]
    o = f.objects[0]  # nothing clear enough to reason about: fall back to a question every context can answer
    return [(f"Is the {o.label} a small or a large {f.kind}, and why?",
             f"The {o.label} is {o.size}: it covers about {_fraction_words(o.width)} of the picture's width.")]


def rule_based_turns(context: ImageContext, response_type: str, rng: random.Random) -> list[Turn]:
    """(question, answer) turns of one response type, written from the context's boxes alone.

    Colours come from the labels, counts from the number of boxes, sizes from box areas
    (:data:`SMALL_AREA`) and relations from box centres (:func:`box_relation`, the same rule
    as ShapesWorld's captions). Deterministic given ``rng``'s state.
    """
    _check_type(response_type)
    if not isinstance(rng, random.Random):
        raise TypeError(f"rng must be a random.Random, got {type(rng).__name__}; use random.Random(seed)")
    facts = _Facts(context, rng)
    return {"conversation": _conversation, "detail": _detail, "complex_reasoning": _complex_reasoning}[response_type](facts)


# --- generator 2: an LLM, prompted ---------------------------------------------------------------

class ReplyFormatError(ValueError):
    """An LLM reply is not in the format the prompt asked for; the message says what was expected."""


SYSTEM_PROMPT = (
    "You are looking at a single image. You cannot see it; instead you are told what is certain about it: "
    "a few sentences describing it, then one line per object with its name and its bounding box "
    "[x0, y0, x1, y1]. Coordinates run from 0 to 1, with x growing to the right and y growing downwards, so a "
    "smaller y is higher up. Use the box centres for positions (left of, right of, above, below) and the box "
    f"areas for sizes: a box covering less than {SMALL_AREA:.0%} of the image is small, a larger one is large.\n"
    "Write as if you were looking at the image yourself. Never mention the sentences, the boxes, the "
    "coordinates or any numbers from them. State only what is certain from them; do not guess at anything "
    "else (backgrounds, textures, what is outside the picture)."
)
TASK_PROMPTS: dict[str, str] = {
    "conversation": (
        "Write a conversation about the image between someone asking questions and you answering them. "
        "Ask three to five varied questions: what the objects are, their colours, how many there are, their "
        "sizes, where they are and where they are relative to each other. Only ask questions with a definite "
        "answer. Answer in full sentences. Write each exchange as a line starting with 'Question:' followed by "
        "a line starting with 'Answer:', with a blank line between exchanges, and write nothing else."
    ),
    "detail": (
        "Describe the image in one detailed paragraph: how many objects there are, what each looks like, "
        "where it is and where the objects are relative to each other. Write the paragraph only: no heading, "
        "no list, no questions."
    ),
    "complex_reasoning": (
        "Write one question about the image that needs reasoning to answer -- counting, comparing sizes or "
        "positions, or imagining an object moved -- and answer it, explaining the reasoning step by step. "
        "Write it as a line starting with 'Question:' and a line starting with 'Answer:', and nothing else."
    ),
}
FEW_SHOT_SEED = 2304  # ShapesWorld seed of the few-shot example scenes
FEW_SHOT_SCENES: tuple[int, ...] = (0, 1, 2, 3)  # scene indices (drawn with at least two objects each)


def render_context(context: ImageContext, decimals: int = 3) -> str:
    """The context as the LLM reads it: caption lines, a blank line, then 'label: [x0, y0, x1, y1]' lines."""
    if not 1 <= decimals <= 4:
        raise ValueError(f"decimals must be between 1 and 4 (LLaVA used 3), got {decimals}")
    lines = list(context.captions)
    if context.boxes:
        lines.append("")
        lines += [f"{label}: [{', '.join(f'{v:.{decimals}f}' for v in box)}]" for label, box in context.boxes]
    return "\n".join(lines)


def format_reply(turns: Sequence[Turn], response_type: str) -> str:
    """Turns written in the reply format the prompt asks for (the inverse of :func:`parse_reply`)."""
    _check_type(response_type)
    if not turns:
        raise ValueError("format_reply needs at least one turn")
    if response_type == "detail":
        return turns[0][1]
    return "\n\n".join(f"Question: {q}\nAnswer: {a}" for q, a in turns)


def few_shot_contexts(n: int = 2) -> list[ImageContext]:
    """The ShapesWorld contexts the few-shot examples are written for (two or three objects each)."""
    contexts = []
    for index in FEW_SHOT_SCENES:
        scene = make_scene(index, seed=FEW_SHOT_SEED, split="test", min_objects=2)
        contexts.append(ImageContext.from_scene(scene))
        if len(contexts) == n:
            break
    return contexts


def build_messages(context: ImageContext, response_type: str, shots: int = 2) -> list[dict[str, str]]:
    """System prompt, ``shots`` worked examples as user/assistant pairs, then the query context.

    The examples are ShapesWorld contexts answered by :func:`rule_based_turns`, so they are
    grounded by construction and show the reply format exactly.
    """
    _check_type(response_type)
    if not isinstance(context, ImageContext):
        raise TypeError(f"context must be an ImageContext, got {type(context).__name__}")
    if not 0 <= shots <= len(FEW_SHOT_SCENES):
        raise ValueError(f"shots must be between 0 and {len(FEW_SHOT_SCENES)}, got {shots}")
    messages = [{"role": "system", "content": f"{SYSTEM_PROMPT}\n\n{TASK_PROMPTS[response_type]}"}]
    for i, example in enumerate(few_shot_contexts(shots) if shots else []):
        turns = rule_based_turns(example, response_type, random.Random(f"few-shot/{response_type}/{i}"))
        messages += [{"role": "user", "content": render_context(example)},
                     {"role": "assistant", "content": format_reply(turns, response_type)}]
    messages.append({"role": "user", "content": render_context(context)})
    return messages


_LABEL_LINE = re.compile(r"^\s*(?:\d+[.)]\s*)?(question|answer|q|a)(?:\s*\d+)?\s*:\s*(.*)$", re.IGNORECASE)


def _labelled_blocks(reply: str) -> list[tuple[str, str, int]]:
    """('question' | 'answer', text, line number) blocks; a block runs until the next label line."""
    blocks: list[list[Any]] = []
    for number, line in enumerate(reply.splitlines(), start=1):
        plain = re.sub(r"\*\*|__|^#+\s*", "", line)  # tolerate markdown: '**Question 1:** ...'
        match = _LABEL_LINE.match(plain)
        if match:
            label = "question" if match.group(1).lower() in ("question", "q") else "answer"
            blocks.append([label, match.group(2).strip(), number])
        elif blocks and line.strip():
            blocks[-1][1] = f"{blocks[-1][1]}\n{line.strip()}".strip()
    return [(label, text, number) for label, text, number in blocks]


def _preview(reply: str) -> str:
    text = " ".join(reply.split())
    return repr(text[:80] + ("..." if len(text) > 80 else ""))


def parse_reply(reply: str, response_type: str, *, instruction: str | None = None) -> list[Turn]:
    """The (question, answer) turns of an LLM reply; :class:`ReplyFormatError` if it is malformed.

    ``conversation``: two or more 'Question:' / 'Answer:' blocks; ``complex_reasoning``: exactly
    one; ``detail``: a paragraph (an optional 'Description:' prefix is dropped), which becomes the
    answer to ``instruction`` (default: the first of :data:`DETAIL_INSTRUCTIONS`). Markdown bold
    and numbering around the labels are tolerated; text before the first label is ignored.
    """
    _check_type(response_type)
    if not isinstance(reply, str):
        raise TypeError(f"reply must be the LLM's text (str), got {type(reply).__name__}")
    if not reply.strip():
        raise ReplyFormatError(f"the reply is empty; expected {_expected(response_type)}")
    if IMAGE_TOKEN in reply:
        raise ReplyFormatError(f"the reply contains {IMAGE_TOKEN!r}; that token is placed by the data set, never by the LLM")
    blocks = _labelled_blocks(reply)
    if response_type == "detail":
        if blocks:
            raise ReplyFormatError(
                f"expected one descriptive paragraph for 'detail', but line {blocks[0][2]} starts a "
                f"'{blocks[0][0].capitalize()}:' block; question/answer blocks belong to 'conversation' or 'complex_reasoning'"
            )
        text = re.sub(r"^\s*\**description\**\s*:\s*", "", reply.strip(), flags=re.IGNORECASE).strip()
        if len(text.split()) < 10:
            raise ReplyFormatError(f"expected a detailed paragraph of at least 10 words for 'detail', got {_preview(text)}")
        return [(instruction or DETAIL_INSTRUCTIONS[0], text)]
    if not blocks:
        raise ReplyFormatError(f"expected {_expected(response_type)}, but found no line starting with 'Question:'; "
                               f"the reply began {_preview(reply)}")
    turns: list[Turn] = []
    for i, (label, text, line) in enumerate(blocks):
        expected = "question" if i % 2 == 0 else "answer"
        if label != expected:
            what = "an 'Answer:' with no 'Question:' before it" if label == "answer" else "a 'Question:' with no 'Answer:'"
            raise ReplyFormatError(f"line {line}: {what}; expected {_expected(response_type)}")
        if not text:
            raise ReplyFormatError(f"line {line}: the {label} is empty")
        if label == "answer":
            turns.append((blocks[i - 1][1], text))
    if len(blocks) % 2:
        raise ReplyFormatError(f"line {blocks[-1][2]}: the last 'Question:' has no 'Answer:'")
    if response_type == "complex_reasoning" and len(turns) != 1:
        raise ReplyFormatError(f"expected exactly one question and one answer for 'complex_reasoning', found {len(turns)}")
    if response_type == "conversation" and len(turns) < 2:
        raise ReplyFormatError(f"expected a conversation of at least two exchanges, found {len(turns)}")
    return turns


def _expected(response_type: str) -> str:
    return {
        "conversation": "two or more blocks of a 'Question: ...' line followed by an 'Answer: ...' line",
        "complex_reasoning": "one 'Question: ...' line followed by one 'Answer: ...' line",
        "detail": "one descriptive paragraph of plain text",
    }[response_type]


def llm_generator(chat_fn: ChatFn, shots: int = 2) -> Generator:
    """A generator for :func:`generate_dataset` that asks ``chat_fn`` and parses its reply."""
    if not callable(chat_fn):
        raise TypeError(f"chat_fn must be callable as chat_fn(messages) -> str, got {type(chat_fn).__name__}")

    def generate(context: ImageContext, response_type: str, rng: random.Random) -> list[Turn]:
        reply = chat_fn(build_messages(context, response_type, shots))
        if not isinstance(reply, str):
            raise TypeError(f"chat_fn must return the reply text (str), got {type(reply).__name__}")
        return parse_reply(reply, response_type, instruction=rng.choice(DETAIL_INSTRUCTIONS))

    return generate


def generate_with_llm(
    context: ImageContext, response_type: str, chat_fn: ChatFn, *, seed: int = 0, record_id: str | None = None, shots: int = 2
) -> dict[str, Any]:
    """One record written by an LLM: prompt it, parse its reply (ReplyFormatError if malformed), wrap it."""
    _check_type(response_type)
    record_id = record_id or f"{context.stem}-{response_type}"
    turns = llm_generator(chat_fn, shots)(context, response_type, random.Random(f"{seed}/{record_id}"))
    return make_record(record_id, context.image, turns)


class ReplayChat:
    """A ``chat_fn`` that returns stored replies in order and keeps the messages it was sent.

    Stands in for an instruction-tuned model offline (tests, tiny mode)."""

    def __init__(self, replies: Sequence[str]) -> None:
        if isinstance(replies, str) or not replies:
            raise ValueError("ReplayChat needs a non-empty list of reply strings")
        self.replies = list(replies)
        self.calls: list[list[dict[str, str]]] = []

    def __call__(self, messages: list[dict[str, str]]) -> str:
        if len(self.calls) >= len(self.replies):
            raise RuntimeError(f"ReplayChat ran out of stored replies after {len(self.replies)} calls")
        self.calls.append(messages)
        return self.replies[len(self.calls) - 1]


# Stored replies for EXAMPLE_SCENE (make_scene(*EXAMPLE_SCENE)): a large green square to the left of a
# small purple triangle. Good ones parse and pass the fact checker; 'hallucinated' ones parse but
# contain planted errors; 'malformed' ones raise ReplyFormatError.
EXAMPLE_SCENE: tuple[int, int] = (1, 0)  # (index, seed)
EXAMPLE_REPLIES: dict[str, tuple[str, str]] = {  # name -> (response type, reply text)
    "conversation/good": ("conversation", (
        "Question: How many shapes are in the picture?\n"
        "Answer: There are two shapes: a large green square and a small purple triangle.\n\n"
        "Question: What colour is the triangle?\n"
        "Answer: The triangle is purple.\n\n"
        "Question: Where is the square relative to the triangle?\n"
        "Answer: The green square is to the left of the purple triangle."
    )),
    "conversation/markdown": ("conversation", (
        "Sure! Here is the conversation.\n\n"
        "**Question 1:** Which shape is larger?\n"
        "**Answer 1:** The green square is larger than the purple triangle.\n\n"
        "**Question 2:** Is the triangle on the right?\n"
        "**Answer 2:** Yes, the purple triangle is to the right of the green square,\n"
        "and it is small."
    )),
    "detail/good": ("detail", (
        "The image shows two shapes. On the left there is a large green square, and to its right a small "
        "purple triangle. The green square is larger than the purple triangle, and the triangle is to the "
        "right of the square."
    )),
    "complex_reasoning/good": ("complex_reasoning", (
        "Question: If the purple triangle were moved to the left of the green square, which shape would be "
        "the rightmost one?\n"
        "Answer: The green square would be the rightmost shape. Right now the purple triangle is the rightmost "
        "shape, but after the move it would sit to the left of the square, leaving the square furthest right."
    )),
    "conversation/hallucinated": ("conversation", (
        "Question: How many shapes are there?\n"
        "Answer: There are three shapes in the image.\n\n"
        "Question: What colour is the square?\n"
        "Answer: The square is blue.\n\n"
        "Question: Where is the triangle?\n"
        "Answer: The purple triangle is to the left of the green square, next to a yellow star."
    )),
    "detail/leaky": ("detail", (
        "According to the captions, the image shows a large green square whose bounding box starts at "
        "[0.2, 0.3], and a small purple triangle to the right of it."
    )),
    "malformed/no-labels": ("conversation", (
        "The picture shows a green square and a purple triangle. The square is on the left and the "
        "triangle is on the right."
    )),
    "malformed/missing-answer": ("conversation", (
        "Question: What colour is the square?\nAnswer: It is green.\n\nQuestion: What colour is the triangle?"
    )),
    "malformed/answer-first": ("conversation", "Answer: It is green.\nQuestion: What colour is the square?"),
    "malformed/two-questions": ("complex_reasoning", (
        "Question: Which shape is larger?\nAnswer: The square.\nQuestion: Which is on the left?\nAnswer: The square."
    )),
    "malformed/detail-as-qa": ("detail", "Question: What is in the image?\nAnswer: Two shapes."),
    "malformed/empty": ("detail", "   "),
}


# --- InstructBLIP's route: existing VQA and caption pairs, wrapped in instructions ---------------

TASK_TEMPLATES: dict[str, tuple[str, ...]] = {
    "vqa": (
        "{question}",
        "{question} Reply with a word or a short phrase.",
        "Look at the image and answer briefly: {question}",
        "Question about the picture: {question} Short answer:",
        "Using only what the image shows, answer in at most three words. {question}",
        "Here is a question about this image: \"{question}\" What is the answer?",
    ),
    "caption": (
        "Write a short caption for this image.",
        "Describe the picture in one sentence.",
        "What does this image show? Answer in a few words.",
        "Give a brief description of the image.",
        "Summarise the content of the picture in a single line.",
        "A short caption for this image would be:",
    ),
}


def _template(family: str, template_id: int) -> str:
    templates = TASK_TEMPLATES[family]
    if isinstance(template_id, bool) or not isinstance(template_id, int):
        raise TypeError(f"template_id must be an int index into TASK_TEMPLATES[{family!r}], got {template_id!r}")
    if not 0 <= template_id < len(templates):
        raise ValueError(f"template_id must be in 0..{len(templates) - 1} for {family!r} templates, got {template_id}")
    return templates[template_id]


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty string, got {value!r}")
    return value.strip()


def _short_hash(*parts: str) -> str:
    return hashlib.sha1("\x1f".join(parts).encode()).hexdigest()[:8]


def from_vqa(question: str, answer: str, template_id: int, *, image: str, record_id: str | None = None) -> dict[str, Any]:
    """A VQA pair as a one-turn instruction record: the question inside ``TASK_TEMPLATES['vqa'][template_id]``."""
    question, answer, image = _text(question, "question"), _text(answer, "answer"), _text(image, "image")
    prompt = _template("vqa", template_id).format(question=question)
    stem = image_stem(image)
    return make_record(record_id or f"{stem}-vqa-{_short_hash(question, answer, str(template_id))}", image, [(prompt, answer)])


def from_caption(caption: str, template_id: int, *, image: str, record_id: str | None = None) -> dict[str, Any]:
    """A caption as a one-turn instruction record answering ``TASK_TEMPLATES['caption'][template_id]``."""
    caption, image = _text(caption, "caption"), _text(image, "image")
    prompt = _template("caption", template_id)
    stem = image_stem(image)
    return make_record(record_id or f"{stem}-caption-{_short_hash(caption, str(template_id))}", image, [(prompt, caption)])


# --- data sets ---------------------------------------------------------------------------------

def generate_dataset(
    contexts: Sequence[ImageContext],
    types: Sequence[str] = RESPONSE_TYPES,
    seed: int = 0,
    generator: str | Generator = "rules",
    *,
    cycle_types: bool = False,
    checker: type[FactChecker] = FactChecker,
    checker_options: Mapping[str, Any] | None = None,
) -> tuple[list[dict[str, Any]], list[tuple[Any, list[str]]]]:
    """Records for every context and response type, validated and fact-checked.

    Each context gets every type in ``types`` (or, with ``cycle_types``, context i gets
    ``types[i % len(types)]`` only). ``generator`` is ``"rules"`` (:func:`rule_based_turns`)
    or any ``generator(context, response_type, rng) -> turns``, such as :func:`llm_generator`.
    Every record draws from its own ``random.Random`` seeded by ``seed`` and its id, so the same
    seed gives the same records in any order. Returns ``(records, rejected)``, where rejected
    holds ``(record, reasons)``, or ``(record_id, reasons)`` when no record could be built (a
    malformed reply); each reason starts with its category ('count: ...', 'format: ...').
    """
    if isinstance(types, str):
        raise TypeError(f"types must be a list of response types, got the string {types!r}; use [{types!r}]")
    if not types:
        raise ValueError(f"types is empty; choose from {RESPONSE_TYPES}")
    for t in types:
        _check_type(t)
    if generator == "rules":
        generator = rule_based_turns
    elif not callable(generator):
        raise TypeError(f"generator must be 'rules' or a callable (context, response_type, rng) -> turns, got {generator!r}")
    records: list[dict[str, Any]] = []
    rejected: list[tuple[Any, list[str]]] = []
    used: Counter[str] = Counter()
    for i, context in enumerate(contexts):
        if not isinstance(context, ImageContext):
            raise TypeError(f"contexts[{i}] is a {type(context).__name__}; build it with ImageContext.from_scene or from_coco")
        for response_type in ([types[i % len(types)]] if cycle_types else types):
            record_id = f"{context.stem}-{response_type}"
            used[record_id] += 1
            if used[record_id] > 1:
                record_id += f"-{used[record_id]}"
            try:
                turns = generator(context, response_type, random.Random(f"{seed}/{record_id}"))
            except ReplyFormatError as error:
                rejected.append((record_id, [f"format: {error}"]))
                continue
            record = make_record(record_id, context.image, turns)
            problems = validate_record(record)
            problems += checker(context, **(checker_options or {})).check_record(record)
            if problems:
                rejected.append((record, problems))
            else:
                records.append(record)
    return records, rejected


def _words(text: str) -> int:
    return len(_strip_image(text).split())


def _mean_median(values: Sequence[float]) -> tuple[float, float]:
    return (statistics.fmean(values), statistics.median(values)) if values else (0.0, 0.0)


@dataclass(frozen=True)
class DatasetStats:
    """Summary of a generated data set; ``print(stats)`` shows it as a small table.

    A turn is one question with its answer (a human and a gpt entry).
    """

    records: dict[str, int]  # per response type, plus "all"
    turns: dict[str, float]  # mean turns per record, per type and "all"
    question_words: dict[str, tuple[float, float]]  # (mean, median) words per question
    answer_words: dict[str, tuple[float, float]]  # (mean, median) words per answer
    rejected: int
    reasons: dict[str, int] = field(default_factory=dict)  # rejection category -> records rejected for it

    @property
    def rejection_rate(self) -> float:
        total = self.records.get("all", 0) + self.rejected
        return self.rejected / total if total else 0.0

    def rows(self) -> list[dict[str, Any]]:
        """One dict per type (and 'all'), for ``pandas.DataFrame(stats.rows())``."""
        return [{"type": t, "records": self.records[t], "turns/record": round(self.turns[t], 2),
                 "question words (mean)": round(self.question_words[t][0], 1),
                 "answer words (mean)": round(self.answer_words[t][0], 1),
                 "answer words (median)": self.answer_words[t][1]} for t in self.records]

    def table(self) -> str:
        lines = [f"{'type':<18}{'records':>8}{'turns/rec':>10}{'q words':>9}{'a words mean':>14}{'a words median':>16}"]
        for t in self.records:
            lines.append(f"{t:<18}{self.records[t]:>8}{self.turns[t]:>10.2f}{self.question_words[t][0]:>9.1f}"
                         f"{self.answer_words[t][0]:>14.1f}{self.answer_words[t][1]:>16.1f}")
        lines.append(f"rejected: {self.rejected} of {self.records.get('all', 0) + self.rejected} ({self.rejection_rate:.1%})")
        lines += [f"  {reason:<16}{count:>6}" for reason, count in sorted(self.reasons.items(), key=lambda kv: (-kv[1], kv[0]))]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def dataset_stats(records: Sequence[Mapping[str, Any]], rejected: Sequence[tuple[Any, Sequence[str]]] = ()) -> DatasetStats:
    """Counts per response type, turns per record, question and answer lengths, rejections by reason."""
    by_type: dict[str, list[Mapping[str, Any]]] = {}
    for r in records:
        by_type.setdefault(record_type(r), []).append(r)
    order = [t for t in (*RESPONSE_TYPES, "vqa", "caption", "other") if t in by_type]
    groups = {t: by_type[t] for t in order}
    groups["all"] = list(records)
    counts, turns, q_words, a_words = {}, {}, {}, {}
    for t, group in groups.items():
        pairs = [turn for r in group for turn in record_turns(r)]
        counts[t] = len(group)
        turns[t] = len(pairs) / len(group) if group else 0.0
        q_words[t] = _mean_median([_words(q) for q, _ in pairs])
        a_words[t] = _mean_median([_words(a) for _, a in pairs])
    reasons: Counter[str] = Counter()
    for _, problems in rejected:
        reasons.update({p.split(":", 1)[0].strip() for p in problems})  # a record counts once per category
    return DatasetStats(counts, turns, q_words, a_words, len(rejected), dict(reasons))
