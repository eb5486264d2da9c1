"""Other bridges between an image encoder and a language model (chapter 3): Flamingo's pieces.

BLIP-2 squeezes an image into Q query vectors and puts them *in front of* the prompt. Flamingo
(Alayrac et al., 2022) does two different things:

- a **Perceiver Resampler** turns any number of visual tokens into a fixed number R of latents,
  at a cost linear in the number of inputs (the latents attend to the inputs, never the inputs
  to each other);
- **gated cross-attention blocks** inserted between the frozen LM's layers let text tokens read
  those latents. Each block adds its output through ``tanh(alpha)`` with alpha = 0 at the start, so
  on day one the LM computes exactly what it computed before training began.

Shapes ledger (see ``utils/__init__.py``): B batch, L text tokens, N visual input tokens,
R latents, D width, nh heads, hs head size.
"""

from __future__ import annotations

import time
from typing import Sequence

import torch
from torch import nn

from utils.qformer import dot_product_attention


class CrossAttention(nn.Module):
    """Multi-head attention from ``x`` (queries) to ``context`` (keys and values), no biases, as in Flamingo."""

    def __init__(self, dim: int, context_dim: int | None = None, num_heads: int = 8) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(
                f"dim {dim} cannot be split into {num_heads} equal heads: choose num_heads that divides it"
            )
        context_dim = context_dim or dim
        self.num_heads = num_heads
        self.query = nn.Linear(dim, dim, bias=False)
        self.key = nn.Linear(context_dim, dim, bias=False)
        self.value = nn.Linear(context_dim, dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, Tq, D), context (B, Tk, Dc), optional context_mask (B, Tk) True for real tokens -> (B, Tq, D)."""
        B, Tq, D = x.shape
        Tk, nh = context.shape[1], self.num_heads
        q = self.query(x).reshape(B, Tq, nh, D // nh).transpose(1, 2)  # (B, nh, Tq, hs)
        k = self.key(context).reshape(B, Tk, nh, D // nh).transpose(1, 2)  # (B, nh, Tk, hs)
        v = self.value(context).reshape(B, Tk, nh, D // nh).transpose(1, 2)  # (B, nh, Tk, hs)
        allowed = None if context_mask is None else context_mask.bool()[:, None, None, :]  # (B, 1, 1, Tk)
        y, _ = dot_product_attention(q, k, v, allowed)  # (B, nh, Tq, hs)
        return self.out(y.transpose(1, 2).reshape(B, Tq, D))  # (B, Tq, D)


class FeedForward(nn.Module):
    """Pre-LN feed-forward: LayerNorm, widen by ``mult``, GELU, project back (no residual here)."""

    def __init__(self, dim: int, mult: int = 4) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(dim), nn.Linear(dim, mult * dim, bias=False), nn.GELU(), nn.Linear(mult * dim, dim, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, T, D)


def _check_tokens(x: object, name: str, width: int) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a (B, tokens, width) tensor, got {shape}")
    if x.shape[-1] != width:
        raise ValueError(f"{name} is {x.shape[-1]} wide but this module expects width {width}")


class GatedCrossAttentionBlock(nn.Module):
    """Flamingo's GATED XATTN-DENSE block, inserted before a frozen LM layer.

        y = x + tanh(alpha_xattn) * CrossAttention(LN(x), visual)
        z = y + tanh(alpha_dense) * FeedForward(y)

    Both alphas start at 0: tanh(0) = 0, so the block returns its input exactly and the frozen LM
    is undisturbed; training opens the gates gradually (d tanh / d alpha = 1 at 0, so they do learn).
    """

    def __init__(self, dim: int, visual_dim: int | None = None, num_heads: int = 8, ff_mult: int = 4) -> None:
        super().__init__()
        self.dim, self.visual_dim = dim, visual_dim or dim
        self.norm = nn.LayerNorm(dim)
        self.cross_attention = CrossAttention(dim, self.visual_dim, num_heads)
        self.feed_forward = FeedForward(dim, ff_mult)
        self.attn_gate = nn.Parameter(torch.zeros(1))  # alpha_xattn
        self.ff_gate = nn.Parameter(torch.zeros(1))  # alpha_dense

    def forward(self, x: torch.Tensor, visual: torch.Tensor, visual_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Text hidden states x (B, L, D) read visual tokens (B, N, Dv) -> (B, L, D).

        ``visual_mask`` (B, N), True for real visual tokens, hides padding. (Flamingo also limits
        each text token to the image just before it in an interleaved sequence; left out here.)
        """
        _check_tokens(x, "x", self.dim)
        _check_tokens(visual, "visual", self.visual_dim)
        if visual.shape[0] != x.shape[0]:
            raise ValueError(f"x has batch size {x.shape[0]} but visual has {visual.shape[0]}: they must match")
        x = x + torch.tanh(self.attn_gate) * self.cross_attention(self.norm(x), visual, visual_mask)  # (B, L, D)
        return x + torch.tanh(self.ff_gate) * self.feed_forward(x)  # (B, L, D)


class PerceiverAttention(nn.Module):
    """The latents attend to [inputs; latents]: queries from the R latents, keys and values from N + R tokens."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.norm_inputs = nn.LayerNorm(dim)
        self.norm_latents = nn.LayerNorm(dim)
        self.attention = CrossAttention(dim, dim, num_heads)

    def forward(self, inputs: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """inputs (B, N, D), latents (B, R, D) -> update for the latents (B, R, D)."""
        latents = self.norm_latents(latents)  # (B, R, D)
        # the latents see themselves too, so they can share what each has gathered
        context = torch.cat([self.norm_inputs(inputs), latents], dim=1)  # (B, N+R, D)
        return self.attention(latents, context)  # (B, R, D)


class PerceiverResampler(nn.Module):
    """Any number N of visual tokens in, R learned latents out: (B, N, Dv) -> (B, R, D).

    Each layer: latents += attend(latents -> [inputs; latents]); latents += FFN(latents). The
    inputs are only ever keys and values, so the attention cost grows like R (N + R): linear in N.
    (Flamingo also adds a learned embedding per video frame; one image per example here.)
    """

    def __init__(self, dim: int, num_latents: int = 64, depth: int = 2, num_heads: int = 8, ff_mult: int = 4,
                 input_dim: int | None = None) -> None:
        super().__init__()
        if num_latents < 1 or depth < 1:
            raise ValueError(f"need num_latents >= 1 and depth >= 1, got {num_latents} and {depth}")
        self.dim, self.num_latents, self.depth = dim, num_latents, depth
        self.input_dim = input_dim or dim
        self.latents = nn.Parameter(torch.randn(num_latents, dim) * 0.02)  # (R, D), learned
        self.input_proj = nn.Linear(self.input_dim, dim) if self.input_dim != dim else nn.Identity()
        self.layers = nn.ModuleList(
            [nn.ModuleList([PerceiverAttention(dim, num_heads), FeedForward(dim, ff_mult)]) for _ in range(depth)]
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """inputs (B, N, Dv), any N >= 1 -> latents (B, R, D)."""
        _check_tokens(inputs, "inputs", self.input_dim)
        if inputs.shape[1] == 0:
            raise ValueError("inputs has no tokens (N = 0): the resampler needs at least one visual token to read")
        x = self.input_proj(inputs)  # (B, N, D)
        latents = self.latents.expand(x.shape[0], -1, -1)  # (B, R, D): the same starting latents for every image
        for attention, feed_forward in self.layers:
            latents = latents + attention(x, latents)  # (B, R, D)
            latents = latents + feed_forward(latents)  # (B, R, D)
        return self.norm(latents)  # (B, R, D)

    def attention_macs(self, num_inputs: int) -> int:
        """Multiply-adds of this resampler's attention scores and weighted sums for N = ``num_inputs``."""
        return perceiver_attention_macs(num_inputs, self.num_latents, self.dim, self.depth)


# --- what it costs ------------------------------------------------------------------------------


def attention_macs(num_queries: int, num_keys: int, dim: int) -> int:
    """Multiply-adds of one attention, all heads together: Q K^T and weights @ V, each Tq * Tk * D.

    Splitting D into heads does not change the count: nh heads of hs = D / nh each.
    """
    for name, n in (("num_queries", num_queries), ("num_keys", num_keys), ("dim", dim)):
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"{name} must be a whole number >= 0, got {n!r}")
    return 2 * num_queries * num_keys * dim


def perceiver_attention_macs(num_inputs: int, num_latents: int, dim: int, depth: int) -> int:
    """Per layer R latents attend to N + R tokens: depth * 2 R (N + R) D -- linear in N."""
    return depth * attention_macs(num_latents, num_inputs + num_latents, dim)


def self_attention_macs(num_tokens: int, dim: int, depth: int) -> int:
    """For comparison, N tokens attending to each other: depth * 2 N^2 D -- quadratic in N."""
    return depth * attention_macs(num_tokens, num_tokens, dim)


@torch.no_grad()
def benchmark_resampler(
    resampler: PerceiverResampler, lengths: Sequence[int], batch_size: int = 1, repeats: int = 3, seed: int = 0
) -> list[dict[str, float]]:
    """Time the resampler on random inputs of each length N; one row per length.

    Each row holds ``length``, ``seconds`` (the fastest of ``repeats`` runs, the least disturbed by
    other work on the machine), ``attention_macs`` and the output ``latents``. Wall times vary from
    machine to machine: print them, do not test them.
    """
    if repeats < 1 or not lengths:
        raise ValueError("need at least one length and repeats >= 1")
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for n in lengths:
        x = torch.randn(batch_size, n, resampler.input_dim, generator=generator)  # (B, N, Dv)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            out = resampler(x)  # (B, R, D)
            times.append(time.perf_counter() - start)
        rows.append({"length": n, "seconds": min(times), "attention_macs": resampler.attention_macs(n),
                     "latents": out.shape[1]})
    return rows
