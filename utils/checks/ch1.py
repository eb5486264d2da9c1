"""Chapter 1's exercise checkers: the Vision Transformer."""

from __future__ import annotations

from typing import Callable

import torch

from utils.checks.core import Verdict, Wrong, expect, expect_close, run_check


def check_patchify(patchify: Callable, quiet: bool = False) -> Verdict:
    """Exercise 1.1: images (B, C, H, W) -> patches (B, N, C*P*P), each flattened in (C, P, P) order."""
    from utils.vit import patchify as reference

    def test() -> None:
        gen = torch.Generator().manual_seed(0)
        for shape, p in [((2, 3, 8, 12), 4), ((1, 1, 6, 6), 3), ((3, 3, 32, 32), 8)]:
            images = torch.randn(shape, generator=gen)
            expected = reference(images, p)
            got = patchify(images, p)
            if isinstance(got, torch.Tensor) and got.shape == expected.shape and not torch.allclose(got, expected):
                if torch.allclose(got.sort(dim=-1).values, expected.sort(dim=-1).values):
                    raise Wrong("each patch holds the right pixels in the wrong order: flatten every patch as "
                                "(C, P, P), channels first, as conv.weight.reshape(D, -1) does")
                raise Wrong("the patches hold the wrong pixels: a reshape alone mixes rows of different patches; "
                            "split H and W into (H/P, P) and (W/P, P), then permute the patch-grid axes together")
            expect_close(got, expected, f"for images of shape {shape} and P={p}", atol=0, rtol=0)

    return run_check("1.1 (patchify)", test, quiet=quiet)


def check_layer_norm(layer_norm: Callable, quiet: bool = False) -> Verdict:
    """Exercise 1.2: LayerNorm from its formula, over the last dimension."""
    import torch.nn.functional as F

    def test() -> None:
        gen = torch.Generator().manual_seed(1)
        x = torch.randn(2, 5, 6, generator=gen) * 3 + 1
        weight, bias = torch.randn(6, generator=gen), torch.randn(6, generator=gen)
        for eps in (1e-5, 0.5):
            expected = F.layer_norm(x, (6,), weight, bias, eps)
            got = layer_norm(x, weight, bias, eps)
            if isinstance(got, torch.Tensor) and got.shape == expected.shape and not torch.allclose(got, expected, atol=1e-5):
                centred = x - x.mean(-1, keepdim=True)
                unbiased = centred / torch.sqrt(x.var(-1, keepdim=True, unbiased=True) + eps) * weight + bias
                if torch.allclose(got, unbiased, atol=1e-5):
                    raise Wrong("use the biased variance (divide by D, not D - 1): torch.var(..., unbiased=False) "
                                "or ((x - mean) ** 2).mean(-1)")
                raise Wrong("compute the mean and variance over the last dimension only (keepdim=True), add eps "
                            "inside the square root, then scale by weight and shift by bias")
            expect_close(got, expected, f"with eps={eps}")

    return run_check("1.2 (layer_norm)", test, quiet=quiet)


def check_attention(attention: Callable, quiet: bool = False) -> Verdict:
    """Exercise 1.3: scaled dot-product attention softmax(Q K^T / sqrt(hs)) V."""
    import torch.nn.functional as F

    def test() -> None:
        gen = torch.Generator().manual_seed(2)
        q, k, v = (torch.randn(2, 3, 5, 16, generator=gen) for _ in range(3))  # (B, nh, L, hs)
        expected = F.scaled_dot_product_attention(q, k, v)
        got = attention(q, k, v)
        if isinstance(got, torch.Tensor) and got.shape == expected.shape and not torch.allclose(got, expected, atol=1e-5):
            scores = q @ k.transpose(-2, -1)
            if torch.allclose(got, torch.softmax(scores, -1) @ v, atol=1e-5):
                raise Wrong("scale the scores by 1/sqrt(hs) before the softmax, or large head sizes saturate it")
            if torch.allclose(got, torch.softmax(scores / 16, -1) @ v, atol=1e-5):
                raise Wrong("divide by the square root of the head size, sqrt(hs) = 4 here, not by hs")
            if torch.allclose(got, torch.softmax(scores / 4, -2) @ v, atol=1e-5):
                raise Wrong("take the softmax over the keys (the last axis), so each query's weights sum to 1")
        expect_close(got, expected, "softmax(q @ k.transpose(-2, -1) / sqrt(hs), dim=-1) @ v")

    return run_check("1.3 (attention)", test, quiet=quiet)


def check_vit_parameter_count(count: Callable, quiet: bool = False) -> Verdict:
    """Exercise 1.4: the parameter count of a ViT as a formula in its sizes."""
    from utils.vit import ViT, ViTConfig, count_parameters

    def test() -> None:
        cases = [ViTConfig.named("tiny"), ViTConfig.named("tiny", num_classes=3, num_layers=2, mlp_dim=96),
                 ViTConfig(image_size=32, patch_size=4, num_channels=1, hidden_size=24, num_layers=3, num_heads=2,
                           mlp_dim=40, num_classes=7)]
        for c in cases:
            with torch.device("meta"):
                expected = count_parameters(ViT(c))
            got = count(c.image_size, c.patch_size, c.num_channels, c.hidden_size, c.num_layers, c.mlp_dim, c.num_classes)
            expect(isinstance(got, int), f"return a whole number (int), got {type(got).__name__}")
            if got != expected:
                diff = expected - got
                raise Wrong(f"for {c.num_layers} layers of width {c.hidden_size}, got {got:,} but the model has "
                            f"{expected:,} ({diff:+,}); remember the biases, the [CLS] token, the N+1 position "
                            "embeddings, two LayerNorms per block (weight and bias) and the final LayerNorm")

    return run_check("1.4 (parameter count)", test, quiet=quiet)
