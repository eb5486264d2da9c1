"""Chapter 1's exercise checkers: pass the solutions, say "not attempted" for the stubs, name each planted mistake."""

from __future__ import annotations

import torch

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
