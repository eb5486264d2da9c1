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


# --- Exercise 1.5: positions travel with their patches ---------------------------------------------

def _patch_grid(images: torch.Tensor, P: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, N, C, P, P): the patches, row by row, each kept whole."""
    B, C, H, W = images.shape
    x = images.reshape(B, C, H // P, P, W // P, P).permute(0, 2, 4, 1, 3, 5)  # (B, H/P, W/P, C, P, P)
    return x.reshape(B, (H // P) * (W // P), C, P, P)


def _from_patch_grid(patches: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """The inverse of :func:`_patch_grid`: (B, N, C, P, P) -> (B, C, H, W)."""
    B, N, C, P, _ = patches.shape
    x = patches.reshape(B, H // P, W // P, C, P, P).permute(0, 3, 1, 4, 2, 5)  # (B, C, H/P, P, W/P, P)
    return x.reshape(B, C, H, W)


def check_shuffle_patches(shuffle_patches: Callable, quiet: bool = False) -> Verdict:
    """Exercise 1.5a: move whole P x P patches to new grid positions, output patch k = input patch perm[k]."""

    def test() -> None:
        gen = torch.Generator().manual_seed(5)
        for shape, P in [((2, 3, 16, 16), 4), ((1, 1, 24, 24), 8), ((3, 3, 32, 32), 8)]:
            images = torch.randn(shape, generator=gen)
            before = images.clone()
            N = (shape[2] // P) * (shape[3] // P)
            perm = torch.randperm(N, generator=gen)
            while torch.equal(perm, torch.arange(N)):
                perm = torch.randperm(N, generator=gen)
            got = shuffle_patches(images, P, perm)
            expect(torch.equal(images, before), "do not change the input images in place; return a new tensor")
            expect(isinstance(got, torch.Tensor) and got.shape == images.shape,
                   f"return images of the input's shape {tuple(shape)} (B, C, H, W), got "
                   f"{tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__}")
            same = shuffle_patches(images, P, torch.arange(N))
            expect(isinstance(same, torch.Tensor) and torch.equal(same, images),
                   "the identity permutation (torch.arange(N)) must return the images unchanged")
            patches_in, patches_out = _patch_grid(images, P), _patch_grid(got, P)
            if torch.equal(patches_out, patches_in[:, perm]):
                continue
            if torch.equal(patches_out, patches_in[:, torch.argsort(perm)]):
                raise Wrong("you moved input patch k to position perm[k]; the exercise asks the other way round: "
                            "output patch k = input patch perm[k] (gather with perm, as x[:, perm] does)")
            # Does every output patch equal some input patch of the same image?
            flat_in, flat_out = patches_in.flatten(2), patches_out.flatten(2)  # (B, N, C*P*P)
            whole = all(any(torch.equal(flat_out[b, k], flat_in[b, j]) for j in range(N))
                        for b in range(len(images)) for k in range(N))
            if not whole:
                if torch.equal(got.flatten(2).sort(dim=-1).values, images.flatten(2).sort(dim=-1).values):
                    raise Wrong("the output's pixels are the input's, but whole patches are not kept together: "
                                "move P x P blocks, not single pixels or whole rows; cut the image into its "
                                "(H/P) x (W/P) grid of patches first (reshape + permute, as in patchify)")
                raise Wrong("the output patches are not the input patches: cut each image into its grid of P x P "
                            "patches (reshape to (B, C, H/P, P, W/P, P) and permute), reorder the patch axis with "
                            "perm, then put the grid back together with the inverse reshape and permute")
            raise Wrong("whole patches move, but to the wrong places: patches are numbered row by row "
                        "(k = row * (W/P) + column), and output patch k must be input patch perm[k]")

    return run_check("1.5a (shuffle_patches)", test, quiet=quiet)


def check_permute_positions(permute_positions: Callable, quiet: bool = False) -> Verdict:
    """Exercise 1.5b: a copy of a ViT whose patch position embeddings follow the patches: on images
    shuffled by ``perm`` the copy gives the original model's logits."""
    from utils.vit import ViT, ViTConfig

    def test() -> None:
        torch.manual_seed(6)  # the model's weights; nothing else in the check is random without a generator
        config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_layers=2, num_heads=4, mlp_dim=64,
                           num_classes=5)
        model = ViT(config).eval()
        with torch.no_grad():  # weights large enough that attention is far from uniform and positions matter
            for p in model.parameters():
                p.normal_(0, 0.3)
            model.position_embeddings.normal_()
        original = {k: v.clone() for k, v in model.state_dict().items()}
        gen = torch.Generator().manual_seed(7)
        images = torch.randn(4, 3, 32, 32, generator=gen)
        N = config.num_patches
        for _ in range(2):
            perm = torch.randperm(N, generator=gen)
            moved = permute_positions(model, perm)
            expect(all(torch.equal(v, original[k]) for k, v in model.state_dict().items()),
                   "the original model changed: work on a copy (copy.deepcopy(model)) and return it")
            expect(isinstance(moved, ViT), f"return a vit.ViT (a modified copy of the model), got {type(moved).__name__}")
            expect(moved is not model, "return a copy of the model, not the model itself")
            pos = moved.position_embeddings.detach()
            old = original["position_embeddings"]
            expect(pos.shape == old.shape, f"keep the position table's shape {tuple(old.shape)}, got {tuple(pos.shape)}")
            if not torch.equal(pos[:, 0], old[:, 0]):
                raise Wrong("[CLS]'s position embedding (index 0) moved: [CLS] is not a patch and stays first; "
                            "permute only the N patch positions, index 1 onwards")
            with torch.no_grad():
                want = model(images)
                got = moved(_from_patch_grid(_patch_grid(images, 8)[:, perm], 32, 32))
            if torch.allclose(got, want, atol=1e-4):
                continue
            if torch.allclose(pos[:, 1:], old[:, 1:][:, torch.argsort(perm)]):
                raise Wrong("you applied the inverse permutation: the patch now at position k came from position "
                            "perm[k], so its position embedding must too -- new row 1 + k = old row 1 + perm[k] "
                            "(index with perm, not argsort(perm))")
            raise Wrong("on shuffled images the copy's logits differ from the original's; the patch now at "
                        "position k is old patch perm[k], so give position k the old embedding of position "
                        f"perm[k] (largest logit difference {(got - want).abs().max().item():.3g})")

    return run_check("1.5b (permute_positions)", test, quiet=quiet)


# --- Exercise 1.6: the price of a smaller patch ------------------------------------------------------

def _measured_vit_flops(image_size: int, P: int, D: int, layers: int, mlp_dim: int) -> int:
    """FLOPs of one image through ``vit.ViT``'s encoder, counted by PyTorch's FlopCounterMode on the
    meta device (nothing is computed or allocated); the classifier head is taken off."""
    from torch.utils.flop_counter import FlopCounterMode

    from utils.vit import ViT, ViTConfig

    heads = 1 if D % 4 else 4
    config = ViTConfig(image_size=image_size, patch_size=P, hidden_size=D, num_layers=layers, num_heads=heads,
                       mlp_dim=mlp_dim, num_classes=1)
    with torch.device("meta"):
        model = ViT(config)
        images = torch.empty(1, 3, image_size, image_size)
    with FlopCounterMode(display=False) as counter:
        model(images)
    return counter.get_total_flops() - 2 * D  # the 1-class head: D multiply-adds


def _vit_flops_variant(image_size: int, P: int, D: int, layers: int, mlp_dim: int, *, cls: bool = True,
                       square: int = 2, mlp: int = 2, embedding: bool = True, per_mac: int = 2) -> int:
    """Forward FLOPs by formula, with switches for the usual slips (used to name them)."""
    N = (image_size // P) ** 2
    L = N + 1 if cls else N
    macs = layers * (4 * L * D * D + square * L * L * D + mlp * L * D * mlp_dim) + (N * 3 * P * P * D if embedding else 0)
    return per_mac * macs


def check_vit_flops(vit_flops: Callable, quiet: bool = False) -> Verdict:
    """Exercise 1.6: forward FLOPs (2 per multiply-add) of a ViT encoder on one 3-channel image."""

    def test() -> None:
        configs = [(64, 8, 64, 3, 128), (32, 4, 48, 2, 96), (224, 32, 768, 12, 3072), (48, 16, 40, 1, 72)]
        for config in configs:
            want = _measured_vit_flops(*config)
            got = vit_flops(*config)
            got = got.item() if hasattr(got, "item") else got
            expect(isinstance(got, (int, float)), f"return one number, got {type(got).__name__}")
            if abs(got - want) <= 1e-9 * want:
                continue
            image_size, P, D, layers, mlp_dim = config
            variants = {
                "count FLOPs, 2 per multiply-add (a multiply and an add): your count is half, the multiply-adds":
                    dict(per_mac=1),
                "add [CLS]: the encoder runs on L = N + 1 tokens, not N": dict(cls=False),
                "attention costs L^2 D twice per block, once for the scores Q K^T and once for the weighted sum A V":
                    dict(square=1),
                "add the attention's L^2 term, 2 L^2 D multiply-adds per block (Q K^T and A V): it is what grows "
                "fastest as patches shrink": dict(square=0),
                "the MLP has two layers, D -> mlp_dim and mlp_dim -> D: 2 L D mlp_dim multiply-adds": dict(mlp=1),
                "add the patch embedding: N patches of 3 P^2 numbers, each projected to D": dict(embedding=False),
            }
            hint = next((h for h, switches in variants.items()
                         if abs(got - _vit_flops_variant(*config, **switches)) <= 1e-9 * want), None)
            if hint is None:
                hint = next((h for h, switches in variants.items() if switches.get("per_mac") is None and
                             abs(got - _vit_flops_variant(*config, per_mac=1, **switches)) <= 1e-9 * want), None)
                hint = (f"count FLOPs (2 per multiply-add), and {hint[0].lower()}{hint[1:]}" if hint else
                        "per block: 4 L D^2 (Q, K, V, output), 2 L^2 D (scores, weighted sum), 2 L D mlp_dim (MLP); "
                        "plus the patch embedding N * 3 P^2 * D; L = N + 1; times 2 for FLOPs")
            raise Wrong(f"vit_flops{config} = {got:,.0f}, but PyTorch's FlopCounterMode counts {want:,} "
                        f"(image {image_size}, P={P}, D={D}, {layers} blocks, mlp_dim={mlp_dim}). {hint}")

    return run_check("1.6 (vit_flops)", test, quiet=quiet)
