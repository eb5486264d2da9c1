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
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from utils import runtime

runtime.silence_diffusers()  # the pipelines' loading bars; see utils.runtime


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
    def scaled_linear(cls, T: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012) -> NoiseSchedule:
        """Stable Diffusion's schedule: sqrt(beta) rises linearly, from sqrt(0.00085) to sqrt(0.012)."""
        return cls(torch.linspace(beta_start**0.5, beta_end**0.5, T, dtype=torch.float64) ** 2)

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


def ddim_step(schedule: NoiseSchedule, eps_theta: torch.Tensor, t: int, t_prev: int, x_t: torch.Tensor,
              eta: float = 0.0, noise: torch.Tensor | None = None, clip_x0: float | None = 1.0) -> torch.Tensor:
    """One DDIM step x_t -> x_{t_prev} (Song et al., arXiv:2010.02502, eq. 12), any t_prev < t:

        x0_hat   = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t)                      (a = alpha_bar)
        sigma    = eta sqrt((1 - a_prev) / (1 - a_t)) sqrt(1 - a_t / a_prev)   (eq. 16)
        x_prev   = sqrt(a_prev) x0_hat + sqrt(1 - a_prev - sigma^2) eps + sigma z

    eta = 0 is deterministic (DDIM proper); eta = 1 with t_prev = t - 1 and no clipping is DDPM's
    reverse step with the posterior variance beta_tilde ("fixed_small"). ``t_prev = -1`` means the
    clean end, where a_prev = 1. This is DDIMScheduler.step with its defaults (clip_sample=True,
    set_alpha_to_one=True).
    """
    if not -1 <= t_prev < t < schedule.T:
        raise ValueError(f"need -1 <= t_prev < t < T = {schedule.T}, got t = {t}, t_prev = {t_prev}")
    if not 0 <= eta <= 1:
        raise ValueError(f"eta must lie in [0, 1] (0: deterministic DDIM, 1: DDPM-like noise), got {eta}")
    a_t = schedule.alpha_bars[t]
    a_prev = schedule.alpha_bars[t_prev] if t_prev >= 0 else torch.tensor(1.0, dtype=torch.float64)
    x0 = (x_t - torch.sqrt(1 - a_t).to(x_t.dtype) * eps_theta) / torch.sqrt(a_t).to(x_t.dtype)
    if clip_x0 is not None:
        x0 = x0.clamp(-clip_x0, clip_x0)
    sigma = eta * torch.sqrt((1 - a_prev) / (1 - a_t)) * torch.sqrt(1 - a_t / a_prev)
    x_prev = torch.sqrt(a_prev).to(x_t.dtype) * x0 + torch.sqrt(1 - a_prev - sigma**2).to(x_t.dtype) * eps_theta
    if eta > 0:
        noise = torch.randn_like(x_t) if noise is None else noise
        x_prev = x_prev + sigma.to(x_t.dtype) * noise
    return x_prev


def ddim_timesteps(T: int, steps: int) -> list[int]:
    """The timesteps a DDIM sampler visits, largest first: every T // steps-th, from 0 (diffusers' "leading")."""
    if not 1 <= steps <= T:
        raise ValueError(f"steps must lie between 1 and T = {T}, got {steps}")
    return [k * (T // steps) for k in range(steps)][::-1]


@torch.no_grad()
def ddim_sample(eps_model, schedule: NoiseSchedule, shape: tuple[int, ...], steps: int,
                generator: torch.Generator | None = None, eta: float = 0.0, clip_x0: float | None = 1.0,
                device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Sample with ``steps`` DDIM steps instead of T DDPM steps (eta = 0: no noise after x_T).
    Noise is drawn on the CPU with ``generator`` (reproducible anywhere), then moved to ``device``."""
    x = torch.randn(shape, generator=generator).to(device, dtype)
    timesteps = ddim_timesteps(schedule.T, steps)
    for t, t_prev in zip(timesteps, timesteps[1:] + [-1]):
        eps = eps_model(x, torch.full((shape[0],), t, dtype=torch.long, device=device))
        noise = torch.randn(shape, generator=generator).to(device, dtype) if eta > 0 else None
        x = ddim_step(schedule, eps, t, t_prev, x, eta=eta, noise=noise, clip_x0=clip_x0)
    return x


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


# --- Training: the epsilon-prediction objective -------------------------------------------------

def epsilon_loss(eps_model: Callable[..., torch.Tensor], x0: torch.Tensor, schedule: NoiseSchedule,
                 generator: torch.Generator | None = None, **model_kwargs) -> torch.Tensor:
    """L_simple of eq. (14): || eps - eps_theta(sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps, t) ||^2.

    A random step t per image and fresh noise eps; ``eps_model(x_t, t, **model_kwargs)`` returns
    its estimate of eps with x_t's shape.
    """
    B = len(x0)
    t = torch.randint(0, schedule.T, (B,), generator=generator)  # (B,)
    eps = torch.randn(x0.shape, generator=generator)  # (B, C, H, W)
    x_t = schedule.q_sample(x0, t, eps)
    return F.mse_loss(eps_model(x_t, t, **model_kwargs), eps)


class EMA:
    """An exponential moving average of a model's weights, the copy DDPM samples from.

    theta_ema <- decay * theta_ema + (1 - decay) * theta after every optimiser step: the average
    smooths out the noise of the last updates, which matters a lot for short training runs.
    """

    def __init__(self, model: nn.Module, decay: float = 0.995) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"decay must lie in (0, 1), got {decay}")
        self.decay = decay
        self.shadow = {name: p.detach().clone() for name, p in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for name, p in model.state_dict().items():
            if p.is_floating_point():
                self.shadow[name].lerp_(p, 1 - self.decay)
            else:
                self.shadow[name].copy_(p)

    def copy_to(self, model: nn.Module) -> None:
        model.load_state_dict(self.shadow)


def train_denoiser(model: nn.Module, eps_model: Callable[..., torch.Tensor], data: torch.Tensor,
                   schedule: NoiseSchedule, *, steps: int, batch_size: int = 64, lr: float = 2e-3,
                   warmup: int = 100, seed: int = 0, conditions: torch.Tensor | None = None,
                   null_condition: torch.Tensor | None = None, drop_condition: float = 0.1,
                   ema_decay: float | None = 0.995, show_progress: bool = True, desc: str = "train") -> list[float]:
    """Train ``model`` for ``steps`` mini-batches of L_simple on ``data`` (n, ...) already in memory.

    ``eps_model(x_t, t)`` (or ``eps_model(x_t, t, condition)`` when ``conditions`` (n, ...) are given)
    calls the model. For classifier-free guidance, each example's condition is replaced by
    ``null_condition`` with probability ``drop_condition``, so the same network also learns the
    unconditional estimate. With ``ema_decay`` the model ends holding the EMA weights. Returns the
    loss of every step. Deterministic for a given ``seed``.
    """
    from utils.training import progress, update, warmup_then_cosine_schedule

    if conditions is not None and len(conditions) != len(data):
        raise ValueError(f"need one condition per example: {len(conditions)} conditions for {len(data)} examples")
    if conditions is not None and null_condition is None and drop_condition > 0:
        raise ValueError("classifier-free guidance needs a null_condition to drop to (e.g. the embedding of '')")
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # dropout inside the model, if any
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    scheduler = warmup_then_cosine_schedule(optimiser, steps, warmup)
    ema = EMA(model, ema_decay) if ema_decay else None
    losses: list[float] = []
    model.train()
    bar = progress(total=steps, desc=desc, disable=not show_progress)
    for step in range(steps):
        index = torch.randint(0, len(data), (batch_size,), generator=generator)
        kwargs = {}
        if conditions is not None:
            condition = conditions[index]
            if drop_condition > 0:
                drop = torch.rand(batch_size, generator=generator) < drop_condition  # (B,)
                shape = (-1,) + (1,) * (condition.ndim - 1)
                condition = torch.where(drop.reshape(shape), null_condition.expand_as(condition), condition)
            kwargs["condition"] = condition
        loss = epsilon_loss(eps_model, data[index], schedule, generator, **kwargs)
        update(optimiser, loss, model.parameters(), scheduler)
        if ema is not None:
            ema.update(model)
        losses.append(loss.item())
        bar.update()
        if step % 50 == 0 or step == steps - 1:
            bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.4f}")
    bar.close()
    if ema is not None:
        ema.copy_to(model)
    model.eval()
    return losses


# --- A denoiser for 2-D toy data -------------------------------------------------------------

def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding of integer steps (B,) -> (B, dim), as in the Transformer and DDPM."""
    half = dim // 2
    frequencies = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)  # (dim/2,)
    angles = t.float()[:, None] * frequencies[None]  # (B, dim/2)
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


class ToyDenoiser(nn.Module):
    """eps_theta(x_t, t) for points in the plane: an MLP on [x_t, embedding(t)]."""

    def __init__(self, dim: int = 2, width: int = 128, time_dim: int = 32) -> None:
        super().__init__()
        self.time_dim = time_dim
        self.net = nn.Sequential(
            nn.Linear(dim + time_dim, width), nn.SiLU(),
            nn.Linear(width, width), nn.SiLU(),
            nn.Linear(width, width), nn.SiLU(),
            nn.Linear(width, dim),
        )

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([x_t, timestep_embedding(t, self.time_dim)], dim=-1))  # (B, 2)


def two_moons(n: int, seed: int = 0, noise: float = 0.05) -> torch.Tensor:
    """``n`` points (n, 2) on two interleaved half circles, scaled to roughly [-1, 1]."""
    generator = torch.Generator().manual_seed(seed)
    angle = torch.rand(n, generator=generator) * math.pi  # (n,)
    upper = torch.rand(n, generator=generator) < 0.5
    x = torch.where(upper, torch.cos(angle), 1 - torch.cos(angle))
    y = torch.where(upper, torch.sin(angle), 0.5 - torch.sin(angle))
    points = torch.stack([x - 0.5, y - 0.25], dim=-1) * 0.9  # centred
    return points + noise * torch.randn(n, 2, generator=generator)


# --- Judging generated ShapesWorld images ------------------------------------------------------

def dominant_colour(image: torch.Tensor, background: tuple[int, int, int] | None = None) -> str | None:
    """The ShapesWorld colour name closest to the mean of the pixels that are not background.

    ``image`` is (3, H, W) in [0, 1]. Returns None when (almost) nothing differs from the background.
    """
    from utils.shapes import BACKGROUND, COLOURS

    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"expected one RGB image (3, H, W), got shape {tuple(image.shape)}")
    background_rgb = torch.tensor(background or BACKGROUND, dtype=torch.float32)[:, None, None] / 255
    foreground = (image - background_rgb).abs().sum(0) > 0.3  # (H, W)
    if foreground.sum() < 4:
        return None
    mean = image[:, foreground].mean(-1)  # (3,)
    palette = torch.tensor(list(COLOURS.values()), dtype=torch.float32) / 255  # (5, 3)
    return list(COLOURS)[int(((palette - mean) ** 2).sum(-1).argmin())]


# --- The tiny models shipped for chapter 5 (diffusers classes, so the Colab code runs unchanged) ---

def tiny_unet(sample_size: int = 32, channels: tuple[int, ...] = (32, 64, 64)):
    """A small UNet2DModel for ShapesWorld images, with self-attention at the lowest resolution."""
    from diffusers import UNet2DModel

    depth = len(channels)
    return UNet2DModel(
        sample_size=sample_size, in_channels=3, out_channels=3, block_out_channels=channels, layers_per_block=1,
        down_block_types=("DownBlock2D",) * (depth - 1) + ("AttnDownBlock2D",),
        up_block_types=("AttnUpBlock2D",) + ("UpBlock2D",) * (depth - 1),
        norm_num_groups=8, attention_head_dim=16,
    )


def tiny_vae(sample_size: int = 32, channels: tuple[int, ...] = (32, 64, 64), latent_channels: int = 4):
    """A small AutoencoderKL: each of the len(channels) - 1 down blocks halves the side."""
    from diffusers import AutoencoderKL

    depth = len(channels)
    return AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * depth,
        up_block_types=("UpDecoderBlock2D",) * depth, block_out_channels=channels, layers_per_block=1,
        latent_channels=latent_channels, norm_num_groups=8, sample_size=sample_size,
    )


def tiny_text_unet(cross_attention_dim: int, sample_size: int = 8, channels: tuple[int, ...] = (64, 128),
                   in_channels: int = 4):
    """A small UNet2DConditionModel whose cross-attention reads text-encoder states of width ``cross_attention_dim``."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=sample_size, in_channels=in_channels, out_channels=in_channels, block_out_channels=channels,
        layers_per_block=1, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=cross_attention_dim,
        attention_head_dim=8, norm_num_groups=16,
    )


def train_vae(vae: nn.Module, data: torch.Tensor, *, steps: int, batch_size: int = 32, lr: float = 2e-3,
              kl_weight: float = 1e-6, seed: int = 0, show_progress: bool = True) -> list[float]:
    """Train an AutoencoderKL to reconstruct ``data`` (n, 3, H, W) in [-1, 1].

    Loss = || x - D(z) ||^2 + kl_weight * KL(q(z|x) || N(0, I)) with z ~ q(z|x) = E(x): the tiny KL
    term (Stable Diffusion's VAE uses one too) keeps the latent space smooth without blurring the
    reconstructions. Returns the loss of every step.
    """
    from utils.training import progress, update, warmup_then_cosine_schedule

    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    scheduler = warmup_then_cosine_schedule(optimiser, steps, min(100, steps // 10))
    losses: list[float] = []
    vae.train()
    bar = progress(total=steps, desc="vae", disable=not show_progress)
    for step in range(steps):
        x = data[torch.randint(0, len(data), (batch_size,), generator=generator)]  # (B, 3, H, W)
        posterior = vae.encode(x).latent_dist
        z = posterior.sample(generator=generator)  # (B, 4, H/f, W/f)
        loss = F.mse_loss(vae.decode(z).sample, x) + kl_weight * posterior.kl().mean()
        update(optimiser, loss, schedule=scheduler)
        losses.append(loss.item())
        bar.update()
        if step % 50 == 0 or step == steps - 1:
            bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.4f}")
    bar.close()
    vae.eval()
    return losses


def to_pil(x: torch.Tensor):
    """An image tensor (3, H, W) in [-1, 1] (the range diffusion models use) as a PIL image."""
    from PIL import Image

    if x.ndim != 3 or x.shape[0] != 3:
        raise ValueError(f"expected one RGB image (3, H, W), got shape {tuple(x.shape)}")
    array = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array)


@torch.no_grad()
def vit_judge(model: Any, processor: Any, images: torch.Tensor, batch_size: int = 64) -> tuple[list[str], torch.Tensor]:
    """Chapter 1's tiny ViT as a judge of ShapesWorld-like images (B, 3, H, W) in [0, 1]: its label
    ("{colour} {shape}") and confidence for each image."""
    labels, confidences = [], []
    device, dtype = model.device, model.dtype
    for start in range(0, len(images), batch_size):
        chunk = list(images[start:start + batch_size].float().clamp(0, 1).cpu())
        pixels = processor(images=chunk, do_rescale=False, return_tensors="pt")["pixel_values"]
        confidence, index = model(pixel_values=pixels.to(device, dtype)).logits.float().softmax(-1).max(-1)
        labels += [model.config.id2label[int(i)] for i in index]
        confidences.append(confidence.cpu())
    return labels, torch.cat(confidences)
