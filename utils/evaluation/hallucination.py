"""CHAIR (Rohrbach et al., 2018): how many of the objects a caption mentions are not in the image.

    CHAIR_i = |hallucinated object mentions| / |object mentions|          (per instance)
    CHAIR_s = |captions with at least one hallucinated mention| / |captions|   (per sentence)

The original maps caption words to the 80 COCO categories through a synonym list and compares
them with the image's segmentation labels and reference captions. ShapesWorld's objects are the
three shape words; a mention is a shape word, and it is hallucinated when the scene has no object
of that shape. :func:`chair` also scores a stricter *bound* variant that reads the colour in front
of the shape ("a small red circle") and counts the mention as hallucinated unless an object has
that colour and that shape: it catches a model that sees the right objects but swaps their colours.
POPE, the other hallucination probe, asks its questions with ``utils.llava.pope_questions``; how
a free answer becomes yes or no is itself a choice (:func:`pope_verdict`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from utils.llava import first_word
from utils.shapes import COLOURS, SHAPES, Scene

SYNONYMS = {"circles": "circle", "squares": "square", "triangles": "triangle", "disc": "circle", "box": "square"}


POPE_RULES = ("first word", "llava")


def pope_verdict(answer: str, rule: str = "first word") -> str:
    """Read "yes" or "no" out of a free answer to a POPE question.

    ``first word``: "yes" only when the answer's first word is yes (the course's rule, and
    lmms-eval's exact-match spirit). ``llava``: LLaVA's POPE script keeps the text before the
    first period, and says "no" if a word is "No", "no" or "not", "yes" otherwise, so an answer
    that is neither ("1", "a small") counts as yes.
    """
    if rule not in POPE_RULES:
        raise ValueError(f"unknown POPE rule {rule!r}; choose one of {', '.join(POPE_RULES)}")
    if rule == "first word":
        return "yes" if first_word(answer) == "yes" else "no"
    words = answer.split(".")[0].replace(",", "").split(" ")
    return "no" if {"No", "no", "not"} & set(words) else "yes"


@dataclass(frozen=True)
class Mention:
    shape: str
    colour: str | None  # the colour word right before the shape (a size word may sit between), if any


def mentions(caption: str) -> list[Mention]:
    """The shape words of a caption, in order, each with the colour that describes it (or None)."""
    if not isinstance(caption, str):
        raise TypeError(f"a caption must be a string, got {type(caption).__name__}")
    words = re.findall(r"[a-z]+", caption.lower())
    found = []
    for i, word in enumerate(words):
        shape = SYNONYMS.get(word, word)
        if shape not in SHAPES:
            continue
        before = [w for w in words[max(0, i - 2):i] if w in COLOURS]
        found.append(Mention(shape, before[-1] if before else None))
    return found


@dataclass(frozen=True)
class ChairScores:
    chair_i: float
    chair_s: float
    mentions: int
    hallucinated: int
    captions: int
    per_caption: tuple[bool, ...]  # does caption j hallucinate?


def chair(captions: Sequence[str], scenes: Sequence[Scene], bound: bool = False) -> ChairScores:
    """CHAIR_i and CHAIR_s of ``captions[j]`` describing ``scenes[j]``; ``bound`` checks colour too."""
    if len(captions) != len(scenes):
        raise ValueError(f"{len(captions)} captions for {len(scenes)} scenes: pass one caption per scene")
    if not captions:
        raise ValueError("no captions to score")
    total = bad = 0
    per_caption = []
    for caption, scene in zip(captions, scenes):
        shapes = {o.shape for o in scene.objects}
        wrong = 0
        for m in mentions(caption):
            total += 1
            if m.shape not in shapes or (bound and m.colour is not None and not scene.has(m.colour, m.shape)):
                wrong += 1
        bad += wrong
        per_caption.append(wrong > 0)
    return ChairScores(bad / total if total else 0.0, sum(per_caption) / len(per_caption), total, bad, len(captions),
                       tuple(per_caption))


def coverage(captions: Sequence[str], scenes: Sequence[Scene]) -> float:
    """The share of the scenes' distinct shapes that their captions name: CHAIR's other side (a
    caption that mentions nothing hallucinates nothing)."""
    named = sum(len({o.shape for o in s.objects} & {m.shape for m in mentions(c)}) for c, s in zip(captions, scenes))
    return named / max(1, sum(len({o.shape for o in s.objects}) for s in scenes))
