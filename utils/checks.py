"""Exercise checkers: run the learner's code, print a clear verdict, never raise.

An exercise in a chapter is a stub that raises ``NotImplementedError`` until the learner fills
it in, followed by a call such as ``checks.check_patchify(patchify)``. The checker prints one of

    ✅ Exercise 1.1 (patchify): passed
    ⏳ Exercise 1.1 (patchify): not attempted yet -- replace the `raise NotImplementedError` ...
    ❌ Exercise 1.1 (patchify): wrong -- <what differs, and a hint>

and returns a :class:`Verdict`, so the chapter runs top to bottom (and under nbval) with the
stub still in place. Chapter-specific checkers build on :func:`run_check` and :func:`expect`.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from typing import Any, Callable

import torch

PASSED, NOT_ATTEMPTED, WRONG = "passed", "not attempted", "wrong"
_ICONS = {PASSED: "✅", NOT_ATTEMPTED: "⏳", WRONG: "❌"}


class Wrong(AssertionError):
    """Raised inside a checker when the learner's answer is wrong; the message is the hint."""


@dataclass(frozen=True)
class Verdict:
    exercise: str
    status: str
    message: str = ""

    @property
    def passed(self) -> bool:
        return self.status == PASSED

    def __str__(self) -> str:
        text = f"{_ICONS[self.status]} Exercise {self.exercise}: {self.status}"
        return f"{text} -- {self.message}" if self.message else text


def expect(condition: bool, hint: str) -> None:
    """Fail the check with ``hint`` unless ``condition`` holds."""
    if not condition:
        raise Wrong(hint)


def expect_close(actual: Any, expected: torch.Tensor, hint: str, atol: float = 1e-5, rtol: float = 1e-4) -> None:
    """Fail unless ``actual`` is a tensor of ``expected``'s shape with values close to it."""
    if not isinstance(actual, torch.Tensor):
        raise Wrong(f"expected a torch.Tensor, got {type(actual).__name__}. {hint}")
    if actual.shape != expected.shape:
        raise Wrong(f"expected shape {tuple(expected.shape)}, got {tuple(actual.shape)}. {hint}")
    actual = actual.detach().to(expected.dtype)
    if not torch.allclose(actual, expected, atol=atol, rtol=rtol):
        worst = (actual - expected).abs().max().item()
        raise Wrong(f"values differ from the reference (max abs difference {worst:.3g}). {hint}")


def run_check(exercise: str, test: Callable[[], None], *, quiet: bool = False) -> Verdict:
    """Run ``test`` (which calls the learner's code and uses :func:`expect`) and report the verdict."""
    try:
        test()
        verdict = Verdict(exercise, PASSED)
    except NotImplementedError:
        verdict = Verdict(
            exercise, NOT_ATTEMPTED, "replace the `raise NotImplementedError` in the cell above with your code"
        )
    except Wrong as exc:
        verdict = Verdict(exercise, WRONG, str(exc))
    except Exception as exc:  # the learner's code crashed: say where, briefly
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        verdict = Verdict(
            exercise, WRONG, f"your code raised {type(exc).__name__}: {exc} (line {frame.lineno}: `{frame.line}`)"
        )
    if not quiet:
        print(verdict)
    return verdict


# --- Chapter 0 ------------------------------------------------------------------------------

def check_relation_from_boxes(relation_from_boxes: Callable, quiet: bool = False) -> Verdict:
    """Exercise 0.1: where is box ``a`` relative to box ``b`` -- left, right, above or below?"""
    from utils.shapes import RELATION_WORD, make_scene, relation

    def test() -> None:
        checked = 0
        for i in range(200):
            scene = make_scene(i, seed=123, min_objects=2, max_objects=3)
            for a in scene.objects:
                for b in scene.objects:
                    if a is b:
                        continue
                    answer = relation_from_boxes(a.box, b.box)
                    truth = RELATION_WORD[relation(a, b)]
                    expect(answer in ("left", "right", "above", "below"),
                           f"return one of 'left', 'right', 'above', 'below'; got {answer!r}")
                    if answer != truth:
                        box_a = tuple(round(v, 2) for v in a.box)
                        box_b = tuple(round(v, 2) for v in b.box)
                        hint = "y grows downwards in images, so a smaller y is higher up" if {answer, truth} == {"above", "below"} \
                            else "compare box centres, along the axis where they are further apart"
                        raise Wrong(f"for a={box_a}, b={box_b} you said {answer!r} but a is {truth!r} of b; {hint}")
                    checked += 1
        expect(checked > 0, "no pairs were checked")

    return run_check("0.1 (relation_from_boxes)", test, quiet=quiet)
