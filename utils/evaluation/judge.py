"""LLM-as-judge: how LLaVA-Bench and MM-Vet score open-ended answers, and a judge you can check.

*LLaVA-Bench* (Liu et al., 2023) shows a text-only judge (GPT-4) what is known about the image
(captions and boxes), the question, a reference answer and the model's answer, and asks for a
score from 1 to 10 for each, on the first line. The benchmark reports the **relative score**:
the model's mean score over the reference's, times 100 (:func:`relative_score`).
*MM-Vet* (Yu et al., 2023) asks the judge to compare an answer with the ground truth and reply
with a correctness score between 0.0 and 1.0 (few-shot examples show partial credit); the
benchmark averages it and reports x100.

A judge is a function ``(context, question, reference, answer) -> (ref score, answer score)``.
Offline the course's judge is rule-based (:func:`fact_judge`): it reads each answer with
chapter 4's fact checker and scores what it gets right and how much of the picture it covers.
Full mode asks a real instruction-tuned LLM with :func:`judge_messages`, and
:func:`parse_pair` reads its reply. Either way, :func:`agreement` measures the judge on answers
whose quality is known because we planted the errors (:func:`corrupt`).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Callable, Sequence

from utils import instruct
from utils.evaluation.hallucination import mentions
from utils.shapes import COLOURS, SHAPES, Scene

SYSTEM = "You are a careful and impartial assistant who grades answers about images."
RULE = ("Two assistants answered the question about the image described above. Rate how helpful, relevant "
        "and accurate each answer is, and how much detail it gets right, on a scale of 1 to 10 (10 is best). "
        "On the first line write only the two scores, the first assistant's and then the second's, separated "
        "by a space. From the second line on, explain your grades without letting the order of the answers "
        "or their length sway you.")
MMVET_RULE = ("Compare the answer with the ground truth and give a correctness score between 0.0 and 1.0: 1.0 "
              "when it says everything the ground truth says, 0.0 when it is wrong, and partial credit in "
              "between. Reply with the score only.")

Judge = Callable[[Scene, str, str, str], "tuple[float, float] | None"]


def context_text(scene: Scene) -> str:
    """What a text-only judge knows about the picture: its caption and its boxes (LLaVA's two contexts)."""
    boxes = "\n".join(f"{label}: [{', '.join(f'{v:.2f}' for v in box)}]" for label, box in scene.boxes)
    return f"{scene.caption}\n\n{boxes}"


def judge_messages(scene: Scene, question: str, reference: str, answer: str) -> list[dict[str, str]]:
    """The LLaVA-Bench-style request: context, question, the two answers, the rule."""
    user = (f"[Context]\n{context_text(scene)}\n\n[Question]\n{question}\n\n"
            f"[Assistant 1]\n{reference}\n[End of Assistant 1]\n\n[Assistant 2]\n{answer}\n[End of Assistant 2]\n\n"
            f"[System]\n{RULE}")
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def mmvet_messages(question: str, truth: str, answer: str) -> list[dict[str, str]]:
    user = f"{MMVET_RULE}\n\nQuestion: {question}\nGround truth: {truth}\nAnswer: {answer}\nScore:"
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


_NUMBER = r"(\d+(?:\.\d+)?)"


def parse_pair(reply: str, low: float = 1, high: float = 10) -> tuple[float, float] | None:
    """The two scores on a judge reply's first non-empty line ("8 6", "8, 6", "8/10 6/10",
    "Assistant 1: 8 Assistant 2: 6"), or ``None`` when it does not hold exactly two in range."""
    if not isinstance(reply, str):
        raise TypeError(f"a judge reply must be a string, got {type(reply).__name__}")
    line = next((ln for ln in reply.splitlines() if ln.strip()), "")
    line = re.sub(r"(assistant|answer)\s*\d\s*[:=]?", " ", line, flags=re.IGNORECASE)  # drop the answers' numbers
    line = re.sub(r"/\s*10\b", " ", line)  # "8/10"
    numbers = [float(x) for x in re.findall(_NUMBER, line)]
    if len(numbers) != 2 or not all(low <= x <= high for x in numbers):
        return None
    return numbers[0], numbers[1]


def parse_score(reply: str) -> float | None:
    """MM-Vet's score: the first number of the reply, if it lies in [0, 1]. (MM-Vet's own script reads
    the reply's first word only, and asks again when that is not a number.)"""
    m = re.search(_NUMBER, reply if isinstance(reply, str) else "")
    return float(m.group(1)) if m and 0 <= float(m.group(1)) <= 1 else None


def relative_score(pairs: Sequence[tuple[float, float] | None]) -> tuple[float, int]:
    """LLaVA-Bench's relative score, 100 x mean(answer score) / mean(reference score), over the
    replies that parsed; and how many did not (they are left out, and must be reported)."""
    good = [p for p in pairs if p is not None]
    if not good:
        raise ValueError("no judge reply could be parsed: read a few replies and fix the prompt or parse_pair")
    return 100 * sum(b for _, b in good) / sum(a for a, _ in good), len(pairs) - len(good)


# --- the offline judge, built on chapter 4's fact checker ------------------------------------------
def answer_quality(answer: str, scene: Scene) -> float:
    """A 1-10 grade: 1 + 9 x (share of the scene's objects the answer names by colour and shape)
    x (share of its checked claims the fact checker finds true). An answer that states nothing
    checkable gets 1."""
    checker = instruct.FactChecker(instruct.ImageContext.from_scene(scene))
    problems = checker.check_text(answer)
    claims = sum(checker.checked.values())
    if claims == 0:
        return 1.0
    named = {(m.colour, m.shape) for m in mentions(answer)}
    covered = sum((o.colour, o.shape) in named for o in scene.objects) / len(scene.objects)
    truthful = max(0.0, 1 - len(problems) / claims)
    return 1 + 9 * covered * truthful


def fact_judge(scene: Scene, question: str, reference: str, answer: str) -> tuple[float, float]:
    """The offline judge: :func:`answer_quality` of the reference and of the answer."""
    return answer_quality(reference, scene), answer_quality(answer, scene)


def llm_judge(chat: Callable[[list[dict[str, str]]], str]) -> Callable[..., tuple[tuple[float, float] | None, str]]:
    """A judge that asks ``chat(messages) -> reply``; it returns the parsed pair (or None) and the raw reply."""
    def judge(scene: Scene, question: str, reference: str, answer: str):
        reply = chat(judge_messages(scene, question, reference, answer))
        return parse_pair(reply), reply
    return judge


# --- planted errors, to measure a judge --------------------------------------------------------------
CORRUPTIONS = ("colour", "shape", "relation", "drop")


def corrupt(text: str, scene: Scene, kind: str, rng: random.Random) -> str | None:
    """``text`` with one planted error of ``kind``, or None when the text offers no place for it:

    - ``colour``: one colour word replaced by a colour no object has;
    - ``shape``: one shape word replaced by a shape no object has (or another shape);
    - ``relation``: left <-> right or above <-> below, once;
    - ``drop``: the sentences about one object removed (less detail, nothing false).
    """
    words = re.split(r"(\W+)", text)
    if kind in ("colour", "shape"):
        vocab, present = (COLOURS, {o.colour for o in scene.objects}) if kind == "colour" else \
            (SHAPES, {o.shape for o in scene.objects})
        spots = [i for i, w in enumerate(words) if w.lower() in vocab]
        if not spots:
            return None
        i = rng.choice(spots)
        others = [v for v in vocab if v not in present] or [v for v in vocab if v != words[i].lower()]
        words[i] = rng.choice(others)
        return "".join(words)
    if kind == "relation":
        swap = {"left": "right", "right": "left", "above": "below", "below": "above"}
        spots = [i for i, w in enumerate(words) if w.lower() in swap]
        if not spots:
            return None
        i = rng.choice(spots)
        words[i] = swap[words[i].lower()]
        return "".join(words)
    if kind == "drop":
        sentences = instruct.split_sentences(text)
        target = rng.choice(scene.objects).shape
        kept = [s for s in sentences if target not in s.lower()]
        return " ".join(kept) if kept and len(kept) < len(sentences) else None
    raise ValueError(f"unknown corruption {kind!r}; choose one of {', '.join(CORRUPTIONS)}")


@dataclass(frozen=True)
class Agreement:
    pairs: int
    agree: float  # share of (clean, corrupted) pairs the judge ranks the right way (a tie counts half)
    wins: int  # the clean answer graded higher
    ties: int
    losses: int  # the corrupted answer graded higher
    unparsed: int


def agreement(judge_scores: Sequence[tuple[float, float] | None]) -> Agreement:
    """How often a judge prefers the clean answer: ``judge_scores`` are (clean, corrupted) grades."""
    good = [p for p in judge_scores if p is not None]
    if not good:
        raise ValueError("no judge verdicts to measure")
    wins, ties, losses = sum(a > b for a, b in good), sum(a == b for a, b in good), sum(a < b for a, b in good)
    return Agreement(len(good), (wins + 0.5 * ties) / len(good), wins, ties, losses, len(judge_scores) - len(good))
