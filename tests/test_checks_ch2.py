"""Chapter 2's exercise checkers: pass the solutions, say "not attempted" for the stubs, name each planted mistake."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from utils import checks, clip


def not_attempted(*args):
    raise NotImplementedError


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
