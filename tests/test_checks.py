"""Exercise checkers: pass the solution, say "not attempted" for the stub, catch planted mistakes,
and never raise -- so a chapter runs under nbval with its stubs in place."""

from __future__ import annotations

import pytest

from utils import checks


def test_run_check_verdicts_and_printing(capsys: pytest.CaptureFixture) -> None:
    assert checks.run_check("9.9 (demo)", lambda: None).passed
    assert "✅ Exercise 9.9 (demo): passed" in capsys.readouterr().out

    def stub():
        raise NotImplementedError

    assert checks.run_check("9.9", stub, quiet=True).status == checks.NOT_ATTEMPTED

    def wrong():
        checks.expect(1 == 2, "one is not two")

    verdict = checks.run_check("9.9", wrong, quiet=True)
    assert verdict.status == checks.WRONG and verdict.message == "one is not two"

    def crashes():
        return {}["missing"]

    verdict = checks.run_check("9.9", crashes, quiet=True)
    assert verdict.status == checks.WRONG and "KeyError" in verdict.message


def test_expect_close_reports_shape_and_value_problems() -> None:
    import torch

    with pytest.raises(checks.Wrong, match=r"expected shape \(2,\), got \(3,\)"):
        checks.expect_close(torch.zeros(3), torch.zeros(2), "")
    with pytest.raises(checks.Wrong, match="max abs difference 1"):
        checks.expect_close(torch.ones(2), torch.zeros(2), "")
    with pytest.raises(checks.Wrong, match="expected a torch.Tensor, got list"):
        checks.expect_close([0.0], torch.zeros(1), "")


# --- Exercise 0.1 -----------------------------------------------------------------------------

def centre(box):
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


def solution(a, b):
    (ax, ay), (bx, by) = centre(a), centre(b)
    dx, dy = ax - bx, ay - by
    if abs(dx) >= abs(dy):
        return "left" if dx < 0 else "right"
    return "above" if dy < 0 else "below"


def flipped_y(a, b):
    answer = solution(a, b)
    return {"above": "below", "below": "above"}.get(answer, answer)


def horizontal_only(a, b):
    return "left" if centre(a)[0] < centre(b)[0] else "right"


def corners_not_centres(a, b):
    dx, dy = a[0] - b[0], a[1] - b[1]
    if abs(dx) >= abs(dy):
        return "left" if dx < 0 else "right"
    return "above" if dy < 0 else "below"


def long_words(a, b):
    return {"left": "to the left of", "right": "to the right of"}.get(solution(a, b), solution(a, b))


def stub(a, b):
    raise NotImplementedError


def test_relation_checker() -> None:
    assert checks.check_relation_from_boxes(solution, quiet=True).passed
    assert checks.check_relation_from_boxes(stub, quiet=True).status == checks.NOT_ATTEMPTED
    flipped = checks.check_relation_from_boxes(flipped_y, quiet=True)
    assert flipped.status == checks.WRONG and "y grows downwards" in flipped.message
    for planted in (horizontal_only, corners_not_centres, long_words):
        assert checks.check_relation_from_boxes(planted, quiet=True).status == checks.WRONG, planted.__name__


# --- Chapter 1 --------------------------------------------------------------------------------

import torch  # noqa: E402

from utils import vit  # noqa: E402


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


# --- Chapter 2 --------------------------------------------------------------------------------

import torch.nn.functional as F  # noqa: E402

from utils import clip  # noqa: E402


def _arange(S):
    return torch.arange(len(S))


def clip_loss_solution(S, tau):
    logits = S / tau
    return (F.cross_entropy(logits, _arange(S)) + F.cross_entropy(logits.T, _arange(S))) / 2


def test_clip_loss_checker() -> None:
    def rows_twice(S, tau):  # wrong softmax axis: both directions over rows
        return (F.cross_entropy(S / tau, _arange(S)) + F.cross_entropy(S / tau, _arange(S))) / 2

    def times_tau(S, tau):
        return clip_loss_solution(S * tau * tau, tau)

    def one_direction(S, tau):
        return F.cross_entropy(S / tau, _arange(S))

    def summed(S, tau):
        return clip_loss_solution(S, tau) * len(S)

    assert checks.check_clip_loss(clip_loss_solution, quiet=True).passed
    assert checks.check_clip_loss(not_attempted, quiet=True).status == checks.NOT_ATTEMPTED
    hints = {times_tau: "divide the similarities by tau", one_direction: "average both directions",
             rows_twice: "over each column", summed: "softmax over each row"}
    for planted, hint in hints.items():
        verdict = checks.check_clip_loss(planted, quiet=True)
        assert verdict.status == checks.WRONG and hint in verdict.message, (planted.__name__, verdict.message)


def siglip_solution(S, t, b):
    z = 2 * torch.eye(len(S)) - 1
    return -F.logsigmoid(z * (t * S + b)).sum(dim=1).mean()


def test_siglip_loss_checker() -> None:
    def zero_one_labels(S, t, b):
        return F.binary_cross_entropy_with_logits(t * S + b, torch.eye(len(S)), reduction="sum") / len(S) * 0.5

    def mean_over_pairs(S, t, b):
        return siglip_solution(S, t, b) / len(S)

    def bias_subtracted(S, t, b):
        return siglip_solution(S, t, -b)

    assert checks.check_siglip_loss(siglip_solution, quiet=True).passed
    assert checks.check_siglip_loss(not_attempted, quiet=True).status == checks.NOT_ATTEMPTED
    hints = {zero_one_labels: "labels z_ij are +1", mean_over_pairs: "divide by B, not by B*B",
             bias_subtracted: "add the bias"}
    for planted, hint in hints.items():
        verdict = checks.check_siglip_loss(planted, quiet=True)
        assert verdict.status == checks.WRONG and hint in verdict.message, (planted.__name__, verdict.message)


def test_zero_shot_checker() -> None:
    def solution(images, classes):
        return clip.cosine_similarity_matrix(images, classes).argmax(dim=1)

    def unnormalised(images, classes):
        return (images @ classes.T).argmax(dim=1)

    def wrong_axis(images, classes):
        return clip.cosine_similarity_matrix(images, classes).argmax(dim=0)

    assert checks.check_zero_shot_classify(solution, quiet=True).passed
    assert checks.check_zero_shot_classify(not_attempted, quiet=True).status == checks.NOT_ATTEMPTED
    verdict = checks.check_zero_shot_classify(unnormalised, quiet=True)
    assert verdict.status == checks.WRONG and "normalise the embeddings" in verdict.message
    verdict = checks.check_zero_shot_classify(wrong_axis, quiet=True)
    assert verdict.status == checks.WRONG and "argmax over the classes" in verdict.message


def test_recall_checker() -> None:
    def solution(S, k):
        top = S.topk(k, dim=1).indices
        return (top == torch.arange(len(S))[:, None]).any(dim=1).float().mean().item()

    def columns(S, k):
        return solution(S.T, k)

    def off_by_one(S, k):
        return solution(S, max(1, k - 1))

    assert checks.check_recall_at_k(solution, quiet=True).passed
    assert checks.check_recall_at_k(not_attempted, quiet=True).status == checks.NOT_ATTEMPTED
    for planted, hint in {columns: "each row is a query", off_by_one: "off by one"}.items():
        verdict = checks.check_recall_at_k(planted, quiet=True)
        assert verdict.status == checks.WRONG and hint in verdict.message, (planted.__name__, verdict.message)
