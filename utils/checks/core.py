"""The checkers' machinery: verdicts, their printing, and the comparisons every checker uses."""

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

    def _ipython_display_(self) -> None:
        """Show nothing when a notebook cell ends with a check: the checker has printed the verdict."""


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


def reject_known_mistakes(actual: torch.Tensor, mistakes: list[tuple[torch.Tensor, str]], prefix: str = "",
                          atol: float = 1e-5) -> None:
    """Fail with the hint of the first planted mistake that ``actual`` is close to (``prefix`` + hint)."""
    for wrong, hint in mistakes:
        if torch.allclose(actual, wrong, atol=atol):
            raise Wrong(prefix + hint)


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
