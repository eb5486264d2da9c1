"""Chapter 5's checkers pass the worked answers, wait for the stubs and name the planted mistakes."""

from __future__ import annotations

import math

import pytest
import torch

from tests.solutions import load
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


# --- Exercises 5.4 and 5.5: checked against the worked solutions readers are given ---------------------

SOLUTIONS = load("05_diffusion_solutions", "guided_eps", "cfg_sample", "velocity", "x0_eps_from_v")


def test_guided_eps_checker() -> None:
    def ho_salimans(eps_u, eps_c, w):
        return (1 + w) * eps_c - w * eps_u

    def swapped(eps_u, eps_c, w):
        return eps_c + w * (eps_u - eps_c)

    def direction_only(eps_u, eps_c, w):
        return w * (eps_c - eps_u)

    def in_place(eps_u, eps_c, w):
        return eps_u.add_(w * (eps_c - eps_u))

    def squared_scale(eps_u, eps_c, w):  # right at w = 0 and w = 1, not linear in between
        return eps_u + w * w * (eps_c - eps_u)

    def halved(eps_u, eps_c, w):  # linear, right at w = 0, wrong at w = 1
        return eps_u + w / 2 * (eps_c - eps_u)

    assert checks.check_guided_eps(SOLUTIONS["guided_eps"], quiet=True).passed
    assert checks.check_guided_eps(stub, quiet=True).status == checks.NOT_ATTEMPTED
    hints = {ho_salimans: "Ho and Salimans' convention", swapped: "swapped", direction_only: "only the guidance direction",
             in_place: "in place", squared_scale: "linear in w", halved: "at w = 1"}
    for planted, hint in hints.items():
        verdict = checks.check_guided_eps(planted, quiet=True)
        assert verdict.status == checks.WRONG and hint in verdict.message, (planted.__name__, verdict.message)


@pytest.mark.slow  # runs the checker's sampling loops seven times
def test_cfg_sample_checker() -> None:
    guided = SOLUTIONS["guided_eps"]

    @torch.no_grad()
    def loop(unet, scheduler, text_states, null_states, latents, w, steps, *, first=None, last=None, reset=True,
             guide=guided):
        if reset:
            scheduler.set_timesteps(steps)
        x = latents
        for t in scheduler.timesteps:
            eps_u = unet(x, t, encoder_hidden_states=null_states if first is None else first).sample
            eps_c = unet(x, t, encoder_hidden_states=text_states if last is None else last).sample
            x = scheduler.step(guide(eps_u, eps_c, w), t, x).prev_sample
        return x

    def swapped(unet, scheduler, text_states, null_states, latents, w, steps):
        return loop(unet, scheduler, text_states, null_states, latents, w, steps, first=text_states, last=null_states)

    def ho_salimans(unet, scheduler, text_states, null_states, latents, w, steps):
        return loop(unet, scheduler, text_states, null_states, latents, w, steps,
                    guide=lambda u, c, w: (1 + w) * c - w * u)

    def stale_timesteps(unet, scheduler, text_states, null_states, latents, w, steps):
        return loop(unet, scheduler, text_states, null_states, latents, w, steps, reset=False)

    @torch.no_grad()
    def guides_latents(unet, scheduler, text_states, null_states, latents, w, steps):
        scheduler.set_timesteps(steps)
        x = latents
        for t in scheduler.timesteps:
            x_u = scheduler.step(unet(x, t, encoder_hidden_states=null_states).sample, t, x).prev_sample
            x_c = scheduler.step(unet(x, t, encoder_hidden_states=text_states).sample, t, x).prev_sample
            x = x_u + w * (x_c - x_u)
        return x

    @torch.no_grad()
    def no_guidance(unet, scheduler, text_states, null_states, latents, w, steps):
        return loop(unet, scheduler, text_states, null_states, latents, 1.0, steps)

    assert checks.check_cfg_sample(SOLUTIONS["cfg_sample"], quiet=True).passed
    assert checks.check_cfg_sample(loop, quiet=True).passed  # two calls per step instead of one batched call
    assert checks.check_cfg_sample(stub, quiet=True).status == checks.NOT_ATTEMPTED
    hints = {swapped: "swapped", ho_salimans: "Ho and Salimans' convention", stale_timesteps: "set_timesteps(steps)",
             guides_latents: "call scheduler.step once per timestep", no_guidance: "differ from the reference loop"}
    for planted, hint in hints.items():
        verdict = checks.check_cfg_sample(planted, quiet=True)
        assert verdict.status == checks.WRONG and hint in verdict.message, (planted.__name__, verdict.message)


def test_cfg_sample_checker_leaves_the_random_state_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    checks.check_cfg_sample(SOLUTIONS["cfg_sample"], quiet=True)
    assert torch.equal(torch.rand(3), expected)


def test_v_prediction_checker() -> None:
    velocity, from_v = SOLUTIONS["velocity"], SOLUTIONS["x0_eps_from_v"]

    def negative_v(x0, eps, alpha_bar):
        return -velocity(x0, eps, alpha_bar)

    def swapped_coefficients(x0, eps, alpha_bar):
        return (1 - alpha_bar).sqrt() * eps - alpha_bar.sqrt() * x0

    def no_sqrt(x0, eps, alpha_bar):
        return alpha_bar * eps - (1 - alpha_bar) * x0

    def divides(x_t, v, alpha_bar):  # eps first, then x0 by inverting the forward process: 0 / 0 when alpha_bar = 0
        eps = (1 - alpha_bar).sqrt() * x_t + alpha_bar.sqrt() * v
        return (x_t - (1 - alpha_bar).sqrt() * eps) / alpha_bar.sqrt(), eps

    def eps_first(x_t, v, alpha_bar):
        x0, eps = from_v(x_t, v, alpha_bar)
        return eps, x0

    def x0_sign(x_t, v, alpha_bar):
        _, eps = from_v(x_t, v, alpha_bar)
        return alpha_bar.sqrt() * x_t + (1 - alpha_bar).sqrt() * v, eps

    def eps_sign(x_t, v, alpha_bar):
        x0, _ = from_v(x_t, v, alpha_bar)
        return x0, (1 - alpha_bar).sqrt() * x_t - alpha_bar.sqrt() * v

    check = checks.check_v_prediction
    assert check(velocity, from_v, quiet=True).passed
    assert check(stub, from_v, quiet=True).status == checks.NOT_ATTEMPTED
    assert check(velocity, stub, quiet=True).status == checks.NOT_ATTEMPTED
    planted = {(negative_v, from_v): "wrong sign", (swapped_coefficients, from_v): "coefficients are swapped",
               (no_sqrt, from_v): "take square roots", (velocity, divides): "divide by sqrt(alpha_bar)",
               (velocity, eps_first): "order (x0, eps)", (velocity, x0_sign): "sign of the v term",
               (velocity, eps_sign): "eps = sqrt(1 - alpha_bar) x_t + sqrt(alpha_bar) v: mind the sign"}
    for (v_fn, back_fn), hint in planted.items():
        verdict = check(v_fn, back_fn, quiet=True)
        assert verdict.status == checks.WRONG and hint in verdict.message, (v_fn.__name__, back_fn.__name__, verdict.message)
