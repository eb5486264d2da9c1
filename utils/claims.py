"""Checks of what the text claims about numbers that differ from one computer to the next.

Training, sampling and long floating-point sums come out with slightly different digits on
different processors, thread counts and library builds: the order in which a sum is added up
changes its rounding, and training amplifies the change. So the chapters print those numbers
for the reader in cells the notebook tests do not compare digit by digit, and check the *claim*
the text makes about them, with a stated tolerance::

    claims.at_least("held-out accuracy after 5 epochs", accuracy, 0.95)
    diff = claims.close("our ViT vs transformers' ViT (logits)", ours, theirs, atol=1e-5)

A claim that does not hold raises :class:`ClaimError`, which says what the text expects, what
this run gave, and what to look at; a reader who changed a learning rate on purpose sees one
sentence, not a diff of digits. Each function returns the number it checked, so a cell can
print it.
"""

from __future__ import annotations

import math

import torch

ADVICE = ("If you changed a cell above (a learning rate, a seed, a size), this is its effect; "
          "otherwise please report it with the output of runtime.print_environment_report().")


class ClaimError(AssertionError):
    """A number came out outside the range the chapter's text states for it."""


def rounding(dtype: torch.dtype = torch.float32) -> float:
    """The tolerance for two computations of one thing in ``dtype`` that add up in another order.

    float32 keeps about 7 significant digits, so values of order 1 agree to 1e-5; float16 and
    bfloat16 (the GPU's choice in full mode) keep about 3, so they agree to 1e-2.
    """
    return 1e-5 if dtype in (torch.float32, torch.float64) else 1e-2


def _number(what: str, value) -> float:
    __tracebackhide__ = True  # a reader's traceback shows their cell and the claim, not this helper
    value = float(value.item() if isinstance(value, torch.Tensor) else value)
    if math.isnan(value):
        raise _error(f"{what} is NaN (not a number): something diverged or divided by zero.", "")
    return value


def _error(message: str, hint: str) -> ClaimError:
    return ClaimError(" ".join(part for part in (f"Claim not met: {message}", hint, ADVICE) if part))


def at_least(what: str, value, bound: float, hint: str = "") -> float:
    """Check ``value >= bound`` and return ``value``."""
    value = _number(what, value)
    if value < bound:
        raise _error(f"{what} should be at least {bound:g}, but this run gives {value:.4g}.", hint)
    return value


def at_most(what: str, value, bound: float, hint: str = "") -> float:
    """Check ``value <= bound`` and return ``value``."""
    value = _number(what, value)
    if value > bound:
        raise _error(f"{what} should be at most {bound:g}, but this run gives {value:.4g}.", hint)
    return value


def between(what: str, value, low: float, high: float, hint: str = "") -> float:
    """Check ``low <= value <= high`` and return ``value``."""
    value = _number(what, value)
    if not low <= value <= high:
        raise _error(f"{what} should lie between {low:g} and {high:g}, but this run gives {value:.4g}.", hint)
    return value


def close(what: str, actual, expected, atol: float, hint: str = "") -> float:
    """Check that two tensors (or numbers) of one shape agree to ``atol``; return the largest difference."""
    actual, expected = torch.as_tensor(actual), torch.as_tensor(expected)
    if actual.shape != expected.shape:
        raise _error(f"{what}: the shapes differ, {tuple(actual.shape)} against {tuple(expected.shape)}.", hint)
    difference = (actual.double() - expected.double()).abs()
    largest = difference.max().item() if difference.numel() else 0.0
    if math.isnan(largest) or largest > atol:
        raise _error(f"{what} should agree to within {atol:g}, but the largest difference is {largest:.2e}.", hint)
    return largest


def holds(what: str, condition: bool, hint: str = "") -> None:
    """Check a yes/no statement of the text, e.g. that a loss fell."""
    if not condition:
        raise _error(f"{what} does not hold in this run.", hint)
