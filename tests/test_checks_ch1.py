"""Chapter 1's exercise checkers: pass the solutions, say "not attempted" for the stubs, name each planted mistake."""

from __future__ import annotations

import torch

from tests.solutions import load
from utils import checks, vit


def not_attempted(*args):
    raise NotImplementedError


def test_patchify_checker() -> None:
    assert checks.check_patchify(vit.patchify, quiet=True).passed
    assert checks.check_patchify(not_attempted, quiet=True).status == checks.NOT_ATTEMPTED

    def reshape_only(images, P):  # no permute: rows of different patches get mixed
        B, C, H, W = images.shape
        return images.reshape(B, (H // P) * (W // P), C * P * P)

    def channels_last(images, P):  # right pixels, (P, P, C) order
        B, C, H, W = images.shape
        x = images.reshape(B, C, H // P, P, W // P, P).permute(0, 2, 4, 3, 5, 1)
        return x.reshape(B, (H // P) * (W // P), C * P * P)

    def column_major(images, P):  # patches read column by column
        B, C, H, W = images.shape
        x = images.reshape(B, C, H // P, P, W // P, P).permute(0, 4, 2, 1, 3, 5)
        return x.reshape(B, (H // P) * (W // P), C * P * P)

    for planted in (reshape_only, column_major):
        assert checks.check_patchify(planted, quiet=True).status == checks.WRONG, planted.__name__
    verdict = checks.check_patchify(channels_last, quiet=True)
    assert verdict.status == checks.WRONG and "(C, P, P)" in verdict.message


def test_layer_norm_checker() -> None:
    def solution(x, weight, bias, eps):
        mu = x.mean(-1, keepdim=True)
        var = ((x - mu) ** 2).mean(-1, keepdim=True)
        return (x - mu) / torch.sqrt(var + eps) * weight + bias

    def unbiased(x, weight, bias, eps):
        return (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, keepdim=True) + eps) * weight + bias

    def eps_outside(x, weight, bias, eps):
        mu = x.mean(-1, keepdim=True)
        return (x - mu) / (x.std(-1, unbiased=False, keepdim=True) + eps) * weight + bias

    def wrong_axis(x, weight, bias, eps):
        mu = x.mean(0, keepdim=True)
        var = ((x - mu) ** 2).mean(0, keepdim=True)
        return (x - mu) / torch.sqrt(var + eps) * weight + bias

    def no_affine(x, weight, bias, eps):
        return torch.nn.functional.layer_norm(x, x.shape[-1:], eps=eps)

    assert checks.check_layer_norm(solution, quiet=True).passed
    assert checks.check_layer_norm(not_attempted, quiet=True).status == checks.NOT_ATTEMPTED
    verdict = checks.check_layer_norm(unbiased, quiet=True)
    assert verdict.status == checks.WRONG and "biased variance" in verdict.message
    for planted in (eps_outside, wrong_axis, no_affine):
        assert checks.check_layer_norm(planted, quiet=True).status == checks.WRONG, planted.__name__


def test_attention_checker() -> None:
    def solution(q, k, v):
        return torch.softmax(q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5, dim=-1) @ v

    def unscaled(q, k, v):
        return torch.softmax(q @ k.transpose(-2, -1), dim=-1) @ v

    def divide_by_hs(q, k, v):
        return torch.softmax(q @ k.transpose(-2, -1) / q.shape[-1], dim=-1) @ v

    def wrong_axis(q, k, v):
        return torch.softmax(q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5, dim=-2) @ v

    assert checks.check_attention(solution, quiet=True).passed
    assert checks.check_attention(not_attempted, quiet=True).status == checks.NOT_ATTEMPTED
    hints = {unscaled: "1/sqrt(hs)", divide_by_hs: "not by hs", wrong_axis: "last axis"}
    for planted, hint in hints.items():
        verdict = checks.check_attention(planted, quiet=True)
        assert verdict.status == checks.WRONG and hint in verdict.message, planted.__name__


def test_parameter_count_checker() -> None:
    def solution(image_size, P, C, D, layers, mlp_dim, classes):
        N = (image_size // P) ** 2
        embedding = C * P * P * D + D + D + (N + 1) * D  # projection, [CLS], positions
        block = 4 * (D * D + D) + 2 * D * mlp_dim + mlp_dim + D + 2 * 2 * D
        return embedding + layers * block + 2 * D + D * classes + classes

    def no_biases(image_size, P, C, D, layers, mlp_dim, classes):
        N = (image_size // P) ** 2
        return C * P * P * D + D + (N + 1) * D + layers * (4 * D * D + 2 * D * mlp_dim + 4 * D) + 2 * D + D * classes

    def no_position_embeddings(image_size, P, C, D, layers, mlp_dim, classes):
        return solution(image_size, P, C, D, layers, mlp_dim, classes) - ((image_size // P) ** 2 + 1) * D

    def no_final_norm(image_size, P, C, D, layers, mlp_dim, classes):
        return solution(image_size, P, C, D, layers, mlp_dim, classes) - 2 * D

    def as_float(*args):
        return float(solution(*args))

    assert checks.check_vit_parameter_count(solution, quiet=True).passed
    assert checks.check_vit_parameter_count(not_attempted, quiet=True).status == checks.NOT_ATTEMPTED
    for planted in (no_biases, no_position_embeddings, no_final_norm, as_float):
        assert checks.check_vit_parameter_count(planted, quiet=True).status == checks.WRONG, planted.__name__


# --- Exercise 1.5: positions travel with their patches --------------------------------------------------

SOLUTIONS = load("01_vit_solutions", "shuffle_patches", "permute_positions", "vit_flops")


def _grid(images, P):  # (B, N, C, P, P)
    B, C, H, W = images.shape
    return images.reshape(B, C, H // P, P, W // P, P).permute(0, 2, 4, 1, 3, 5).reshape(B, -1, C, P, P)


def _ungrid(patches, H, W):
    B, N, C, P, _ = patches.shape
    return patches.reshape(B, H // P, W // P, C, P, P).permute(0, 3, 1, 4, 2, 5).reshape(B, C, H, W)


def test_shuffle_patches_checker() -> None:
    def inverse(images, P, perm):  # input patch k goes to position perm[k]
        return SOLUTIONS["shuffle_patches"](images, P, torch.argsort(perm))

    def pixels(images, P, perm):  # moves single pixels (the first N of each channel), not patches
        B, C, H, W = images.shape
        flat = images.flatten(2).clone()  # (B, C, H*W)
        flat[:, :, :len(perm)] = flat[:, :, perm]
        return flat.reshape(B, C, H, W)

    def rows(images, P, perm):  # moves whole rows of patches by the first grid-row's permutation
        B, C, H, W = images.shape
        g = H // P
        row_order = torch.argsort(perm[:g])
        return images.reshape(B, C, g, P, W)[:, :, row_order].reshape(B, C, H, W)

    def pixel_rows(images, P, perm):  # moves single rows of pixels, which cuts through the patches
        H = images.shape[2]
        k = min(len(perm), H)
        order = torch.arange(H)
        order[:k] = torch.argsort(perm[:k])
        return images[:, :, order]

    def transposed_grid(images, P, perm):  # numbers the patches column by column
        return SOLUTIONS["shuffle_patches"](images.transpose(-2, -1), P, perm).transpose(-2, -1)

    def in_place(images, P, perm):
        images.copy_(SOLUTIONS["shuffle_patches"](images, P, perm))
        return images

    assert checks.check_shuffle_patches(SOLUTIONS["shuffle_patches"], quiet=True).passed
    assert checks.check_shuffle_patches(not_attempted, quiet=True).status == checks.NOT_ATTEMPTED
    hints = {inverse: "the other way round", pixels: "whole patches are not kept together",
             pixel_rows: "whole patches are not kept together", rows: "to the wrong places",
             transposed_grid: "numbered row by row",
             in_place: "in place"}
    for planted, hint in hints.items():
        verdict = checks.check_shuffle_patches(planted, quiet=True)
        assert verdict.status == checks.WRONG and hint in verdict.message, (planted.__name__, verdict.message)


def test_permute_positions_checker() -> None:
    import copy

    def inverse(model, perm):
        return SOLUTIONS["permute_positions"](model, torch.argsort(perm))

    def moves_cls(model, perm):  # permutes all N + 1 rows, [CLS] included
        moved = copy.deepcopy(model)
        with torch.no_grad():
            full = torch.cat([torch.tensor([len(perm)]), perm])  # [CLS] goes to the end's place
            moved.position_embeddings.copy_(model.position_embeddings[:, full % (len(perm) + 1)])
        return moved

    def in_place(model, perm):
        with torch.no_grad():
            model.position_embeddings[:, 1:] = model.position_embeddings[:, 1:][:, perm].clone()
        return model

    def unchanged(model, perm):
        return copy.deepcopy(model)

    assert checks.check_permute_positions(SOLUTIONS["permute_positions"], quiet=True).passed
    assert checks.check_permute_positions(not_attempted, quiet=True).status == checks.NOT_ATTEMPTED
    hints = {inverse: "inverse permutation", moves_cls: "[CLS]'s position embedding", in_place: "work on a copy",
             unchanged: "logits differ"}
    for planted, hint in hints.items():
        verdict = checks.check_permute_positions(planted, quiet=True)
        assert verdict.status == checks.WRONG and hint in verdict.message, (planted.__name__, verdict.message)


def test_shuffled_patches_with_moved_positions_give_the_same_logits_on_the_tiny_vit() -> None:
    from transformers import ViTForImageClassification

    from utils import zoo

    model = vit.ViT.from_transformers(ViTForImageClassification.from_pretrained(zoo.path("vit", mode="tiny"))).eval()
    images = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    perm = torch.randperm(64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = model(images)
        got = SOLUTIONS["permute_positions"](model, perm)(SOLUTIONS["shuffle_patches"](images, 8, perm))
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
    shuffled = SOLUTIONS["shuffle_patches"](images, 8, perm)
    torch.testing.assert_close(_grid(shuffled, 8), _grid(images, 8)[:, perm], atol=0, rtol=0)
    torch.testing.assert_close(_ungrid(_grid(images, 8), 64, 64), images, atol=0, rtol=0)


# --- Exercise 1.6: FLOPs of a ViT ------------------------------------------------------------------------

def test_vit_flops_checker() -> None:
    def flops(image_size, P, D, layers, mlp_dim, *, cls=True, square=2, mlp=2, embedding=True, per_mac=2):
        N = (image_size // P) ** 2
        L = N + 1 if cls else N
        per_block = 4 * L * D * D + square * L * L * D + mlp * L * D * mlp_dim
        return per_mac * (layers * per_block + (N * 3 * P * P * D if embedding else 0))

    assert checks.check_vit_flops(SOLUTIONS["vit_flops"], quiet=True).passed
    assert checks.check_vit_flops(not_attempted, quiet=True).status == checks.NOT_ATTEMPTED
    hints = {"2 per multiply-add": dict(per_mac=1), "L = N + 1": dict(cls=False), "once for the scores": dict(square=1),
             "add the attention's L^2 term": dict(square=0), "the MLP has two layers": dict(mlp=1),
             "add the patch embedding": dict(embedding=False)}
    for hint, switches in hints.items():
        verdict = checks.check_vit_flops(lambda *config, s=switches: flops(*config, **s), quiet=True)
        assert verdict.status == checks.WRONG and hint in verdict.message, (switches, verdict.message)
    both = checks.check_vit_flops(lambda *config: flops(*config, per_mac=1, cls=False), quiet=True)
    assert both.status == checks.WRONG and "count FLOPs (2 per multiply-add), and add [CLS]" in both.message
    with_head = checks.check_vit_flops(lambda *config: flops(*config) + 2 * config[2] * 1000, quiet=True)
    assert with_head.status == checks.WRONG and "FlopCounterMode counts" in with_head.message
