"""Denoising diffusion (chapter 5): noise schedules, the forward process, the posterior and the
reverse step of DDPM, written so each line sits next to its equation in Ho et al. (2020),
arXiv:2006.11239.

Timesteps are indices ``t = 0 .. T-1`` into the schedule's arrays, as in diffusers: index ``t``
is the paper's step ``t + 1``, so ``betas[0]`` is the paper's beta_1 and ``alpha_bars[T - 1]`` the
last, noisiest step. Shapes: images are batch-first (B, C, H, W); ``t`` is an int or a (B,) tensor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch


def _as_timesteps(t: int | torch.Tensor, T: int, batch: int) -> torch.Tensor:
    """``t`` as a (B,) long tensor, checked to lie in 0 .. T-1."""
    t = torch.as_tensor(t)
    if t.is_floating_point():
        raise TypeError(f"timesteps must be integers, got {t.dtype}")
    if t.ndim == 0:
        t = t.expand(batch)
    if t.shape != (batch,):
        raise ValueError(f"need one timestep per image: got t of shape {tuple(t.shape)} for a batch of {batch}")
    if t.min() < 0 or t.max() >= T:
        raise ValueError(f"timesteps must lie in 0..{T - 1} (index t is the paper's step t + 1); got {t.min()}..{t.max()}")
    return t.long()


def _per_image(values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Pick ``values[t]`` for each image and shape it (B, 1, 1, ...) to broadcast over ``like``."""
    return values.to(like.device)[t.to(like.device)].to(like.dtype).reshape(-1, *([1] * (like.ndim - 1)))


@dataclass
class NoiseSchedule:
    """A variance schedule beta_1..beta_T and everything DDPM precomputes from it."""

    betas: torch.Tensor  # (T,), float64 for accuracy; cast to the data's dtype when used
    alphas: torch.Tensor = field(init=False)  # alpha_t = 1 - beta_t
    alpha_bars: torch.Tensor = field(init=False)  # alpha_bar_t = prod_{s<=t} alpha_s
    alpha_bars_prev: torch.Tensor = field(init=False)  # alpha_bar_{t-1}, with alpha_bar_0 = 1
    posterior_variance: torch.Tensor = field(init=False)  # beta_tilde_t, eq. (7)
    # Coefficients of the posterior mean, eq. (7), computed once in float64: near t = 0,
    # 1 - alpha_bar_t is about 1e-4 and would lose digits if formed in float32 at every step.
    posterior_coef_x0: torch.Tensor = field(init=False)  # sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t)
    posterior_coef_xt: torch.Tensor = field(init=False)  # sqrt(alpha_t) (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t)

    def __post_init__(self) -> None:
        betas = torch.as_tensor(self.betas, dtype=torch.float64)
        if betas.ndim != 1 or len(betas) == 0:
            raise ValueError(f"betas must be a non-empty 1-D sequence, got shape {tuple(betas.shape)}")
        if not ((betas > 0) & (betas < 1)).all():
            raise ValueError(f"every beta_t must lie in (0, 1); got values from {betas.min():.3g} to {betas.max():.3g}")
        self.betas = betas
        self.alphas = 1 - betas
        self.alpha_bars = torch.cumprod(self.alphas, dim=0)
        self.alpha_bars_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alpha_bars[:-1]])
        self.posterior_variance = (1 - self.alpha_bars_prev) / (1 - self.alpha_bars) * betas  # eq. (7)
        self.posterior_coef_x0 = torch.sqrt(self.alpha_bars_prev) * betas / (1 - self.alpha_bars)
        self.posterior_coef_xt = torch.sqrt(self.alphas) * (1 - self.alpha_bars_prev) / (1 - self.alpha_bars)

    @property
    def T(self) -> int:
        return len(self.betas)

    @classmethod
    def linear(cls, T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> NoiseSchedule:
        """DDPM's schedule: beta rises linearly from 1e-4 to 0.02 over T = 1000 steps."""
        return cls(torch.linspace(beta_start, beta_end, T, dtype=torch.float64))

    @classmethod
    def cosine(cls, T: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> NoiseSchedule:
        """Nichol & Dhariwal's schedule: alpha_bar(t) = cos^2(((t/T + s) / (1 + s)) * pi/2), arXiv:2102.09672.

        beta_t = 1 - alpha_bar(t) / alpha_bar(t-1), capped at ``max_beta`` near the end.
        """
        def alpha_bar(x: float) -> float:
            return math.cos((x + s) / (1 + s) * math.pi / 2) ** 2

        betas = [min(1 - alpha_bar((i + 1) / T) / alpha_bar(i / T), max_beta) for i in range(T)]
        return cls(torch.tensor(betas, dtype=torch.float64))

    def snr(self) -> torch.Tensor:
        """Signal-to-noise ratio alpha_bar_t / (1 - alpha_bar_t) of x_t, (T,)."""
        return self.alpha_bars / (1 - self.alpha_bars)

    # --- The forward process ----------------------------------------------------------------

    def q_step(self, x_prev: torch.Tensor, t: int | torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """One forward step, eq. (2): x_t ~ N(sqrt(1 - beta_t) x_{t-1}, beta_t I)."""
        t = _as_timesteps(t, self.T, len(x_prev))
        noise = torch.randn_like(x_prev) if noise is None else noise
        beta_t = _per_image(self.betas, t, x_prev)
        return torch.sqrt(1 - beta_t) * x_prev + torch.sqrt(beta_t) * noise

    def q_sample(self, x0: torch.Tensor, t: int | torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Jump straight to step t, eq. (4): x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps."""
        t = _as_timesteps(t, self.T, len(x0))
        noise = torch.randn_like(x0) if noise is None else noise
        if noise.shape != x0.shape:
            raise ValueError(f"noise has shape {tuple(noise.shape)} but x0 has {tuple(x0.shape)}")
        sqrt_alpha_bar, sqrt_one_minus = _per_image(self.alpha_bars.sqrt(), t, x0), _per_image((1 - self.alpha_bars).sqrt(), t, x0)
        return sqrt_alpha_bar * x0 + sqrt_one_minus * noise

    # --- The reverse process ----------------------------------------------------------------

    def predict_x0(self, x_t: torch.Tensor, t: int | torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """Invert eq. (4) with a noise estimate (eq. 15): x_0 = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t)."""
        t = _as_timesteps(t, self.T, len(x_t))
        sqrt_alpha_bar, sqrt_one_minus = _per_image(self.alpha_bars.sqrt(), t, x_t), _per_image((1 - self.alpha_bars).sqrt(), t, x_t)
        return (x_t - sqrt_one_minus * eps) / sqrt_alpha_bar

    def posterior(self, x0: torch.Tensor, x_t: torch.Tensor, t: int | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q(x_{t-1} | x_t, x_0) = N(mu_tilde, beta_tilde I), eqs. (6)-(7): returns (mean, variance)."""
        t = _as_timesteps(t, self.T, len(x_t))
        mean = _per_image(self.posterior_coef_x0, t, x_t) * x0 + _per_image(self.posterior_coef_xt, t, x_t) * x_t  # eq. (7)
        return mean, _per_image(self.posterior_variance, t, x_t)

    def p_step(self, eps_theta: torch.Tensor, t: int, x_t: torch.Tensor, noise: torch.Tensor | None = None,
               clip_x0: float | None = 1.0) -> torch.Tensor:
        """One reverse step x_t -> x_{t-1} from the model's noise estimate eps_theta(x_t, t).

        1. estimate x_0 from x_t and eps_theta (eq. 15), optionally clipped to [-clip_x0, clip_x0];
        2. take the posterior mean of eq. (7) with that estimate;
        3. add noise with the posterior variance beta_tilde_t, except at the last step (t = 0).
        This is DDPMScheduler.step with its defaults (clip_sample=True, variance "fixed_small").
        """
        if eps_theta.shape != x_t.shape:
            raise ValueError(f"eps_theta has shape {tuple(eps_theta.shape)} but x_t has {tuple(x_t.shape)}")
        if not isinstance(t, int):
            raise TypeError(f"p_step takes one int timestep for the whole batch, got {type(t).__name__}")
        x0 = self.predict_x0(x_t, t, eps_theta)  # 1.
        if clip_x0 is not None:
            x0 = x0.clamp(-clip_x0, clip_x0)
        mean, variance = self.posterior(x0, x_t, t)  # 2.
        if t == 0:
            return mean
        noise = torch.randn_like(x_t) if noise is None else noise
        return mean + torch.sqrt(variance) * noise  # 3.


@torch.no_grad()
def sample(eps_model, schedule: NoiseSchedule, shape: tuple[int, ...], generator: torch.Generator | None = None,
           clip_x0: float | None = 1.0, keep_every: int = 0) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Algorithm 2 of the paper: start from x_T ~ N(0, I) and apply p_step for t = T-1 .. 0.

    ``eps_model(x_t, t)`` gets a (B,) tensor of timesteps. Returns x_0 and, if ``keep_every`` > 0,
    the intermediate x_t every that many steps (for drawing trajectories).
    """
    x = torch.randn(shape, generator=generator)
    trajectory = [x] if keep_every else []
    for t in reversed(range(schedule.T)):
        eps = eps_model(x, torch.full((shape[0],), t, dtype=torch.long))
        noise = torch.randn(shape, generator=generator) if t > 0 else None
        x = schedule.p_step(eps, t, x, noise=noise, clip_x0=clip_x0)
        if keep_every and t % keep_every == 0:
            trajectory.append(x)
    return x, trajectory
