"""Multiple-choice benchmarks (MMBench, MMMU, MMStar, ScienceQA): the prompt, reading the letter out
of a free-text answer, and MMBench's CircularEval.

A multiple-choice question has options labelled A, B, C, ...; the model answers in free text and
the harness must decide which option it chose. :func:`extract_choice` follows VLMEvalKit's
heuristic: one option letter standing alone ("B", "(B)", "Answer: B"), else the one option whose
text the answer contains ("the circle is red" when one option is "red"), else failure (``None``).
MMBench then asks an LLM to match the answer, and VLMEvalKit, when that fails too, picks at
random among the options and "Z" (none of them); offline we
score such an answer wrong (VLMEvalKit's "exact matching" mode) or, to show what guessing
buys, pick at random, seeded per question and rotation; either way the failures are counted.
Left out of VLMEvalKit's rule: its list of refusal phrases and a lone "Z" ("none of them"), both
read as Z, and a warning that a capital "A" may be an article, which it prints only when asked
to be verbose (so by default "A blue circle" reads as A, as here).

CircularEval (MMBench): a question with n options is asked n times, its options rotated by one
place each time; it counts as right only if every rotation is answered right. A model that
guesses by position, or whose answers do not follow the options, loses the questions it got
right by luck.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Sequence

LETTERS = string.ascii_uppercase
INSTRUCTION = "Answer with the option's letter from the given choices directly."  # LLaVA-1.5's MMBench suffix


@dataclass(frozen=True)
class Choice:
    """One multiple-choice question: ``options`` in display order, ``answer`` the right option's text."""

    id: str
    question: str
    options: tuple[str, ...]
    answer: str

    def __post_init__(self) -> None:
        if not 2 <= len(self.options) <= len(LETTERS):
            raise ValueError(f"question {self.id!r}: a multiple-choice question needs 2 to 26 options, "
                             f"got {len(self.options)}")
        if len(set(self.options)) != len(self.options):
            raise ValueError(f"question {self.id!r}: the options {self.options} repeat one another")
        if self.answer not in self.options:
            raise ValueError(f"question {self.id!r}: the answer {self.answer!r} is not among the options {self.options}")

    @property
    def letters(self) -> str:
        return LETTERS[:len(self.options)]

    @property
    def right_letter(self) -> str:
        return self.letters[self.options.index(self.answer)]

    def rotated(self, k: int) -> Choice:
        """The options shifted circularly by ``k`` places (rotation 0 is the question as written)."""
        k %= len(self.options)
        return Choice(f"{self.id}@{k}", self.question, self.options[k:] + self.options[:k], self.answer)

    def rotations(self) -> list[Choice]:
        return [self.rotated(k) for k in range(len(self.options))]


def mc_prompt(choice: Choice, hint: str | None = None, instruction: str = INSTRUCTION) -> str:
    """LLaVA-1.5's MMBench layout: an optional hint on its own line, the question, one option per
    line as "A. text", the instruction."""
    lines = ([hint] if hint else []) + [choice.question]
    lines += [f"{letter}. {text}" for letter, text in zip(choice.letters, choice.options)]
    return "\n".join(lines + [instruction])


_SEPARATORS = ".()[],:;!*#{}"  # turned into spaces before looking for a lone letter (VLMEvalKit's set)
FALLBACKS = ("wrong", "random")


def extract_choice(answer: str, choice: Choice) -> str | None:
    """The letter of the option a free-text ``answer`` picks, or ``None``: VLMEvalKit's heuristic.

    1. After the separators ``.()[],:;!*#{}`` become spaces, exactly one option letter stands
       alone as a word, in capitals ("B", "(B)", "B.", "Answer: B", "B. red"): that letter.
    2. Otherwise, exactly one option's text appears in the lower-cased answer: its letter.

    Both rules are literal: "A red circle" reads as option A (the article is a capital letter
    standing alone), and option text is matched inside words too ("red" is found in "tired").
    """
    if not isinstance(answer, str):
        raise TypeError(f"question {choice.id!r}: the answer must be a string, got {type(answer).__name__}")
    spaced = answer
    for mark in _SEPARATORS:
        spaced = spaced.replace(mark, " ")
    words = spaced.split()
    letters = [letter for letter in choice.letters if letter in words]
    if len(letters) == 1:
        return letters[0]
    lowered = answer.lower()
    named = [letter for letter, text in zip(choice.letters, choice.options) if text.lower() in lowered]
    return named[0] if len(named) == 1 else None


def fallback_letter(choice: Choice, policy: str = "wrong", seed: int = 0) -> str:
    """What an answer no option can be read from counts as. ``wrong``: "Z", which is never right
    (VLMEvalKit's exact matching); ``random``: a draw from the options and Z, seeded by the question
    (VLMEvalKit's last resort after its LLM matcher fails three times)."""
    if policy not in FALLBACKS:
        raise ValueError(f"unknown fallback {policy!r}; choose one of {', '.join(FALLBACKS)}")
    if policy == "wrong":
        return "Z"
    import random

    return random.Random(f"{seed}/{choice.id}").choice(choice.letters + "Z")


@dataclass(frozen=True)
class ChoiceScores:
    vanilla: float  # rotation 0 only, the question as written
    circular: float  # every rotation right
    failed: float  # share of answers from which no option could be read (over every rotation asked)
    per_question: tuple[bool, ...]  # CircularEval verdict of each question


def circular_eval(choices: Sequence[Choice], answers: Sequence[Sequence[str]], fallback: str = "wrong",
                  seed: int = 0) -> ChoiceScores:
    """Score ``answers[i][k]``, the answer to rotation k of question i, vanilla and circular.

    An answer no option can be read from gets :func:`fallback_letter` with the ``fallback`` policy.
    """
    if len(choices) != len(answers):
        raise ValueError(f"{len(choices)} questions but answers for {len(answers)}: pass one list per question")
    if not choices:
        raise ValueError("no questions to score")
    vanilla, circular, failed, asked = [], [], 0, 0
    for choice, replies in zip(choices, answers):
        rotations = choice.rotations()
        if len(replies) != len(rotations):
            raise ValueError(f"question {choice.id!r} has {len(rotations)} rotations but {len(replies)} answers")
        right = []
        for rotation, reply in zip(rotations, replies):
            letter = extract_choice(reply, rotation)
            asked += 1
            if letter is None:
                failed += 1
                letter = fallback_letter(rotation, fallback, seed)
            right.append(letter == rotation.right_letter)
        vanilla.append(right[0])
        circular.append(all(right))
    return ChoiceScores(sum(vanilla) / len(vanilla), sum(circular) / len(circular), failed / asked, tuple(circular))
