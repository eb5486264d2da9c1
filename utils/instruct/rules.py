"""Generator 1: the three response types written by rules from the boxes alone."""

from __future__ import annotations

import math
import random
from functools import partial
from collections import Counter
from typing import Callable, Sequence

from utils.shapes import COLOURS, SHAPES
from utils.instruct.context import (
    CLEAR_MARGIN, SIZE_TOLERANCE, ImageContext, LabelledBox, article, box_relation, join_words, number_word,
    plural,
)
from utils.instruct.records import Turn, check_response_type

# --- generator 1: rules ------------------------------------------------------------------------

DETAIL_INSTRUCTIONS: tuple[str, ...] = (
    "Describe the image in detail.", "Give a thorough description of this picture.",
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


def _ask_count(f: _Facts) -> Turn:
    rng, kind, kinds = f.rng, f.kind, f.kinds
    n = len(f.objects)
    q = rng.choice((f"How many {kinds} are in the image?", f"How many {kinds} can you see?",
                    f"Can you count the {kinds} in this picture?", f"How many {kinds} does the picture contain?"))
    if n == 1:
        return q, f"There is only one {kind} in the image: {f.inventory()}."
    a = rng.choice((f"There are {f.count(n, kind)} in the image: {f.inventory()}.",
                    f"I can see {f.count(n, kind)}: {f.inventory()}.",
                    f"The picture contains {f.count(n, kind)}, namely {f.inventory()}."))
    return q, a


def _ask_count_label(f: _Facts) -> Turn | None:
    rng = f.rng
    repeated = [label for label, k in f.labels.items() if k > 1]
    if not repeated:
        return None
    label = rng.choice(repeated)
    return f"How many {plural(label)} are there?", f"There are {f.count(f.labels[label], label)} in the image."


def _ask_colour(f: _Facts) -> Turn | None:
    rng = f.rng
    options = [o for o in f.by_noun if o.colour]
    if not options:
        return None
    o = rng.choice(options)
    q = rng.choice((f"What colour is the {o.noun}?", f"Which colour does the {o.noun} have?",
                    f"What is the colour of the {o.noun}?"))
    return q, rng.choice((f"The {o.noun} is {o.colour}.", f"It is {article(o.colour)} {o.colour} {o.noun}.",
                          f"The {o.noun} in the picture is {o.colour}."))


def _ask_shape(f: _Facts) -> Turn | None:
    rng, kind = f.rng, f.kind
    colours = Counter(o.colour for o in f.objects)
    options = [o for o in f.unique if o.colour and colours[o.colour] == 1]
    if not options:
        return None
    o = rng.choice(options)
    q = rng.choice((f"What shape is the {o.colour} one?" if kind == "shape" else f"What is the {o.colour} object?",
                    f"Which {kind} is {o.colour}?"))
    what = f"{article(o.noun)} {o.noun}"
    return q, rng.choice((f"The {o.colour} {kind} is {what}.", f"The {o.colour} one is {what}."))


def _ask_size(f: _Facts) -> Turn | None:
    rng = f.rng
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


def _ask_where(f: _Facts) -> Turn | None:
    rng = f.rng
    if not f.unique:
        return None
    o = rng.choice(f.unique)
    q = rng.choice((f"Where is the {o.label} in the picture?", f"Where in the image can you find the {o.label}?"))
    return q, f"The {o.label} is {_region(o)}."


def _two_objects(f: _Facts) -> list[LabelledBox] | None:
    """Two distinct, uniquely named objects drawn at random, or None when the context has fewer."""
    return f.rng.sample(f.unique, 2) if len(f.unique) >= 2 else None


def _ask_relation(f: _Facts) -> Turn | None:
    if (pair := _two_objects(f)) is None:
        return None
    a, b = pair
    q = f.rng.choice((f"Where is the {a.label} relative to the {b.label}?",
                    f"What is the position of the {a.label} compared with the {b.label}?",
                    f"How is the {a.label} placed with respect to the {b.label}?"))
    return q, f"The {a.label} is {box_relation(a.box, b.box)} the {b.label}."


def _ask_yes_no_relation(f: _Facts) -> Turn | None:
    if (pair := _two_objects(f)) is None:
        return None
    a, b = pair
    truth = box_relation(a.box, b.box)
    opposite = {"to the left of": "to the right of", "to the right of": "to the left of",
                "above": "below", "below": "above"}[truth]
    asked = f.rng.choice((truth, opposite))  # never the other axis: its answer may be unclear
    q = f"Is the {a.label} {asked} the {b.label}?"
    if asked == truth:
        return q, f"Yes, the {a.label} is {truth} the {b.label}."
    return q, f"No. The {a.label} is {truth} the {b.label}."


def _ask_exists(f: _Facts) -> Turn | None:
    rng = f.rng
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


def _ask_extreme(f: _Facts) -> Turn | None:
    rng, kind = f.rng, f.kind
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


# Conversation questions, in this order before the shuffle; each returns None where it does not apply.
CONVERSATION_QUESTIONS: tuple[Callable[[_Facts], Turn | None], ...] = (
    _ask_count, _ask_count_label, _ask_colour, _ask_shape, _ask_size, _ask_where, _ask_relation,
    _ask_yes_no_relation, _ask_exists, _ask_extreme,
)


def _conversation(f: _Facts) -> list[Turn]:
    candidates = [partial(ask, f) for ask in CONVERSATION_QUESTIONS]
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


def _reason_move(f: _Facts) -> Turn | None:
    rng, kind, kinds = f.rng, f.kind, f.kinds
    if (pair := _two_objects(f)) is None:
        return None
    mover, target = pair
    rng.random()  # (a draw kept so the records after this one stay as they were)
    if mover.cx == target.cx:
        return None
    # Move it across the target: a move to the side it is already on would describe the picture as it is.
    to_right = mover.cx < target.cx
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


def _reason_larger_count(f: _Facts) -> Turn | None:
    rng, kinds = f.rng, f.kinds
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


def _reason_majority(f: _Facts) -> Turn | None:
    kind, kinds = f.kind, f.kinds
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


def _reason_closest(f: _Facts) -> Turn | None:
    rng, kind = f.rng, f.kind
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


def _reason_fit_twice(f: _Facts) -> Turn | None:
    if len(f.objects) != 1:
        return None
    o = f.objects[0]
    fits = 2 * o.width <= 1
    q = f"Would two {plural(o.label)} of this size fit side by side across the picture?"
    return q, (f"{'Yes' if fits else 'No'}. The {o.label} is {o.size}: it is about {_fraction_words(o.width)} as wide "
               f"as the picture, so two of them side by side would need about {_fraction_words(2 * o.width)} of the "
               f"width{', which fits' if fits else ', which is more than there is'}.")


def _reason_mirror(f: _Facts) -> Turn | None:
    if len(f.objects) != 1:
        return None
    o = f.objects[0]
    q = f"If the picture were flipped from left to right, where would the {o.label} end up?"
    return q, (f"It would end up {_mirror_region(o)}. Right now the {o.label} is {_region(o)}, and a left-to-right "
               f"flip keeps its height but swaps its left and right.")


# Complex-reasoning questions, in this order before the shuffle; each returns None where it does not apply.
REASONING_QUESTIONS: tuple[Callable[[_Facts], Turn | None], ...] = (
    _reason_move, _reason_larger_count, _reason_majority, _reason_closest, _reason_fit_twice, _reason_mirror,
)


def _complex_reasoning(f: _Facts) -> list[Turn]:
    candidates = [partial(reason, f) for reason in REASONING_QUESTIONS]
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
    check_response_type(response_type)
    if not isinstance(rng, random.Random):
        raise TypeError(f"rng must be a random.Random, got {type(rng).__name__}; use random.Random(seed)")
    facts = _Facts(context, rng)
    return {"conversation": _conversation, "detail": _detail, "complex_reasoning": _complex_reasoning}[response_type](facts)
