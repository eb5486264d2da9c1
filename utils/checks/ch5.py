"""Chapter 5's exercise checkers: diffusion models."""

from __future__ import annotations

from typing import Callable

import torch

from utils.checks.core import Verdict, Wrong, expect, run_check


def _diffusion_case(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A batch (x0, t, eps) and DDPM's linear betas, with steps that include both ends of the schedule."""
    generator = torch.Generator().manual_seed(seed)
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    x0 = torch.rand((5, 3, 4, 4), generator=generator, dtype=torch.float64) * 2 - 1
    eps = torch.randn((5, 3, 4, 4), generator=generator, dtype=torch.float64)
    return x0, torch.tensor([0, 1, 250, 600, 999]), eps, betas


def check_q_sample(q_sample: Callable, quiet: bool = False) -> Verdict:
    """Exercise 5.1: x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps for 0-based step indices t."""
    def test() -> None:
        x0, t, eps, betas = _diffusion_case()
        alpha_bars = torch.cumprod(1 - betas, 0)

        def closed_form(a: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
            a_t = a[steps].reshape(-1, 1, 1, 1)
            return torch.sqrt(a_t) * x0 + torch.sqrt(1 - a_t) * eps

        got = q_sample(x0.clone(), t.clone(), eps.clone(), betas.clone())
        want = closed_form(alpha_bars, t)
        expect(isinstance(got, torch.Tensor) and got.shape == x0.shape,
               f"return x_t with the shape of x0 {tuple(x0.shape)}, got {getattr(got, 'shape', type(got).__name__)}")
        if torch.allclose(got.double(), want, atol=1e-6):
            return
        a_t = alpha_bars[t].reshape(-1, 1, 1, 1)
        mistakes = [
            (a_t * x0 + (1 - a_t) * eps, "take square roots: x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps"),
            (closed_form(1 - betas, t), "use alpha_bar_t, the product of alpha_s = 1 - beta_s for s up to t, not alpha_t alone"),
            (closed_form(torch.cat([torch.ones(1, dtype=torch.float64), alpha_bars[:-1]]), t),
             "index t is the paper's step t + 1: alpha_bar for index t is the product of the first t + 1 alphas "
             "(torch.cumprod(1 - betas, 0)[t])"),
            (torch.sqrt(a_t) * x0 + torch.sqrt(1 - a_t) * eps * torch.sqrt(a_t), "the noise term is sqrt(1 - alpha_bar_t) eps, nothing more"),
        ]
        for wrong, hint in mistakes:
            if torch.allclose(got.double(), wrong, atol=1e-6):
                raise Wrong(hint)
        raise Wrong(f"x_t differs from the closed form (max abs difference {(got.double() - want).abs().max():.3g}); "
                    "compute alpha_bar = cumprod(1 - betas) and pick alpha_bar[t] per image")

    return run_check("5.1 (q_sample)", test, quiet=quiet)


def check_cosine_alpha_bars(cosine_alpha_bars: Callable, quiet: bool = False) -> Verdict:
    """Exercise 5.2: alpha_bar_t = f(t) / f(0), f(t) = cos^2(((t/T + s) / (1 + s)) pi/2), for t = 1..T."""
    import math

    def reference(T: int, s: float) -> torch.Tensor:
        f = lambda t: torch.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
        return f(torch.arange(1, T + 1, dtype=torch.float64)) / f(torch.zeros((), dtype=torch.float64))

    def test() -> None:
        for T, s in ((1000, 0.008), (50, 0.008), (10, 0.1)):
            got = cosine_alpha_bars(T, s)
            expect(isinstance(got, torch.Tensor) and got.shape == (T,),
                   f"return a tensor of shape ({T},) for T = {T}, got {getattr(got, 'shape', type(got).__name__)}")
            want = reference(T, s)
            if torch.allclose(got.double(), want, atol=1e-6):
                continue
            f = lambda t: torch.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
            steps = torch.arange(1, T + 1, dtype=torch.float64)
            if torch.allclose(got.double(), f(steps), atol=1e-6):
                raise Wrong("divide by f(0), so that alpha_bar would be exactly 1 at t = 0")
            if torch.allclose(got.double(), torch.cos((steps / T + s) / (1 + s) * math.pi / 2) / math.cos(s / (1 + s) * math.pi / 2), atol=1e-6):
                raise Wrong("square the cosine: f(t) = cos(...)^2")
            if torch.allclose(got.double(), f(steps - 1) / f(torch.zeros((), dtype=torch.float64)), atol=1e-6):
                raise Wrong("the values are for t = 1..T (torch.arange(1, T + 1)), not t = 0..T-1")
            raise Wrong(f"for T = {T}, s = {s} the values differ from the formula (max abs difference "
                        f"{(got.double() - want).abs().max():.3g})")

    return run_check("5.2 (cosine_alpha_bars)", test, quiet=quiet)


def check_posterior_mean(posterior_mean: Callable, quiet: bool = False) -> Verdict:
    """Exercise 5.3: the mean of q(x_{t-1} | x_t, x0) for one 0-based step index t."""
    from utils.diffusion import NoiseSchedule

    def test() -> None:
        x0, _, x_t, betas = _diffusion_case(1)
        schedule = NoiseSchedule(betas)
        for t in (0, 1, 500, 999):
            got = posterior_mean(x0.clone(), x_t.clone(), t, betas.clone())
            want, _ = schedule.posterior(x0, x_t, t)
            expect(isinstance(got, torch.Tensor) and got.shape == x0.shape,
                   f"return a tensor shaped like x_t {tuple(x0.shape)}, got {getattr(got, 'shape', type(got).__name__)}")
            if torch.allclose(got.double(), want, atol=1e-6):
                continue
            alpha, alpha_bar = 1 - betas, torch.cumprod(1 - betas, 0)
            prev = alpha_bar[t - 1] if t > 0 else torch.tensor(1.0, dtype=torch.float64)
            swapped = (torch.sqrt(alpha[t]) * (1 - prev) / (1 - alpha_bar[t])) * x0 + (torch.sqrt(prev) * betas[t] / (1 - alpha_bar[t])) * x_t
            no_sqrt = (prev * betas[t] / (1 - alpha_bar[t])) * x0 + (alpha[t] * (1 - prev) / (1 - alpha_bar[t])) * x_t
            if torch.allclose(got.double(), swapped, atol=1e-6):
                raise Wrong("the coefficients are swapped: sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t) multiplies x0")
            if torch.allclose(got.double(), no_sqrt, atol=1e-6):
                raise Wrong("take the square roots of alpha_bar_{t-1} and alpha_t in the two coefficients")
            hint = "at t = 0 use alpha_bar_{t-1} = 1 (nothing has been noised before the first step)" if t == 0 else \
                "alpha_bar_{t-1} is the product of the alphas before index t: cumprod(1 - betas)[t - 1]"
            raise Wrong(f"at t = {t} the mean differs from the posterior (max abs difference "
                        f"{(got.double() - want).abs().max():.3g}). {hint}")

    return run_check("5.3 (posterior_mean)", test, quiet=quiet)
