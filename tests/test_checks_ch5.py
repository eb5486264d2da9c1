"""Chapter 5's checkers pass the worked answers, wait for the stubs and name the planted mistakes."""

from __future__ import annotations

import math

import torch

from utils import checks


def q_sample(x0, t, eps, betas):
    alpha_bar = torch.cumprod(1 - betas, 0)[t].reshape(-1, 1, 1, 1)
    return alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * eps


def cosine_alpha_bars(T, s=0.008):
    f = lambda t: torch.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    return f(torch.arange(1, T + 1, dtype=torch.float64)) / f(torch.tensor(0.0, dtype=torch.float64))


def posterior_mean(x0, x_t, t, betas):
    alphas = 1 - betas
    alpha_bars = torch.cumprod(alphas, 0)
    prev = alpha_bars[t - 1] if t > 0 else torch.tensor(1.0, dtype=betas.dtype)
    return (prev.sqrt() * betas[t] / (1 - alpha_bars[t])) * x0 + (alphas[t].sqrt() * (1 - prev) / (1 - alpha_bars[t])) * x_t


def stub(*args, **kwargs):
    raise NotImplementedError


def test_solutions_pass() -> None:
    assert checks.check_q_sample(q_sample, quiet=True).passed
    assert checks.check_cosine_alpha_bars(cosine_alpha_bars, quiet=True).passed
    assert checks.check_posterior_mean(posterior_mean, quiet=True).passed


def test_stubs_are_not_attempted() -> None:
    for checker in (checks.check_q_sample, checks.check_cosine_alpha_bars, checks.check_posterior_mean):
        assert checker(stub, quiet=True).status == checks.NOT_ATTEMPTED


def test_q_sample_mistakes_are_named() -> None:
    def no_sqrt(x0, t, eps, betas):
        a = torch.cumprod(1 - betas, 0)[t].reshape(-1, 1, 1, 1)
        return a * x0 + (1 - a) * eps

    def alpha_not_alpha_bar(x0, t, eps, betas):
        a = (1 - betas)[t].reshape(-1, 1, 1, 1)
        return a.sqrt() * x0 + (1 - a).sqrt() * eps

    def off_by_one(x0, t, eps, betas):
        a = torch.cat([torch.ones(1, dtype=betas.dtype), torch.cumprod(1 - betas, 0)])[t].reshape(-1, 1, 1, 1)
        return a.sqrt() * x0 + (1 - a).sqrt() * eps

    for wrong, phrase in ((no_sqrt, "square roots"), (alpha_not_alpha_bar, "alpha_bar_t, the product"),
                          (off_by_one, "paper's step t + 1")):
        verdict = checks.check_q_sample(wrong, quiet=True)
        assert verdict.status == checks.WRONG and phrase in verdict.message, (wrong.__name__, verdict)


def test_cosine_mistakes_are_named() -> None:
    def not_normalised(T, s=0.008):
        return torch.cos((torch.arange(1, T + 1) / T + s) / (1 + s) * math.pi / 2) ** 2

    def not_squared(T, s=0.008):
        f = lambda t: torch.cos((t / T + s) / (1 + s) * math.pi / 2)  # noqa: E731
        return f(torch.arange(1, T + 1, dtype=torch.float64)) / f(torch.tensor(0.0, dtype=torch.float64))

    def from_zero(T, s=0.008):
        f = lambda t: torch.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
        return f(torch.arange(0, T, dtype=torch.float64)) / f(torch.tensor(0.0, dtype=torch.float64))

    for wrong, phrase in ((not_normalised, "divide by f(0)"), (not_squared, "square the cosine"), (from_zero, "t = 1..T")):
        verdict = checks.check_cosine_alpha_bars(wrong, quiet=True)
        assert verdict.status == checks.WRONG and phrase in verdict.message, (wrong.__name__, verdict)


def test_posterior_mean_mistakes_are_named() -> None:
    def swapped(x0, x_t, t, betas):
        return posterior_mean(x_t, x0, t, betas)

    def no_sqrt(x0, x_t, t, betas):
        alphas, alpha_bars = 1 - betas, torch.cumprod(1 - betas, 0)
        prev = alpha_bars[t - 1] if t > 0 else torch.tensor(1.0, dtype=betas.dtype)
        return (prev * betas[t] / (1 - alpha_bars[t])) * x0 + (alphas[t] * (1 - prev) / (1 - alpha_bars[t])) * x_t

    def wraps_at_zero(x0, x_t, t, betas):  # alpha_bar[t - 1] with t = 0 silently reads the last entry
        alphas, alpha_bars = 1 - betas, torch.cumprod(1 - betas, 0)
        prev = alpha_bars[t - 1]
        return (prev.sqrt() * betas[t] / (1 - alpha_bars[t])) * x0 + (alphas[t].sqrt() * (1 - prev) / (1 - alpha_bars[t])) * x_t

    for wrong, phrase in ((swapped, "swapped"), (no_sqrt, "square roots"), (wraps_at_zero, "at t = 0 use")):
        verdict = checks.check_posterior_mean(wrong, quiet=True)
        assert verdict.status == checks.WRONG and phrase in verdict.message, (wrong.__name__, verdict)
