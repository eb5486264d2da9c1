"""Chapter 2's exercise checkers: pass the solutions, say "not attempted" for the stubs, name each planted mistake."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tests.solutions import load
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


# --- Exercises 2.5-2.7: chunked SigLIP, the loss floor, a prompt ensemble --------------------------------

SOLUTIONS = load("02_clip_solutions", "siglip_loss_chunked", "clip_loss_floor", "ensemble_class_embeddings")


def _blocks(x, y, t, b, devices, *, positives_everywhere=False, per_device_mean=False, bias=None):
    """The ring computed with one of the usual slips."""
    B = len(x)
    if B % devices:
        raise ValueError("uneven")
    n = B // devices
    bias = b if bias is None else bias
    total = torch.zeros(())
    for d in range(devices):
        part = torch.zeros(())
        for step in range(devices):
            k = (d + step) % devices
            logits = t * x[d * n:(d + 1) * n] @ y[k * n:(k + 1) * n].T + bias
            labels = 2 * torch.eye(n) - 1 if k == d or positives_everywhere else -torch.ones(n, n)
            part = part - F.logsigmoid(labels * logits).sum()
        total = total + (part / n if per_device_mean else part)
    return total if per_device_mean else total / B


def test_siglip_loss_chunked_checker() -> None:
    def whole_matrix(x, y, t, b, devices):  # right value, but builds the B x B matrix it should avoid
        if len(x) % devices:
            raise ValueError("uneven")
        return clip.siglip_loss(x @ y.T, t, b)

    def no_check(x, y, t, b, devices):  # drops the last B % devices pairs silently
        n = len(x) // devices
        return _blocks(x[:n * devices], y[:n * devices], t, b, devices)

    planted = {
        (lambda x, y, t, b, d: _blocks(x, y, t, b, d, positives_everywhere=True)): "positives only in its own text block",
        (lambda x, y, t, b, d: _blocks(x, y, t, b, d, per_device_mean=True)): "divide the sum over all devices by the global batch size B",
        (lambda x, y, t, b, d: _blocks(x, y, t, b, d, bias=0.0)): "you left out the bias",
        (lambda x, y, t, b, d: _blocks(x, y, t, b, d, bias=-b)): "add the bias b",
        whole_matrix: "no device ever holds the full matrix",
        no_check: "raise a ValueError",
    }
    assert checks.check_siglip_loss_chunked(SOLUTIONS["siglip_loss_chunked"], quiet=True).passed
    assert checks.check_siglip_loss_chunked(not_attempted, quiet=True).status == checks.NOT_ATTEMPTED
    for function, hint in planted.items():
        verdict = checks.check_siglip_loss_chunked(function, quiet=True)
        assert verdict.status == checks.WRONG and hint in verdict.message, (hint, verdict.message)


def test_clip_loss_floor_checker() -> None:
    def at_minus_one(B, tau):
        return math.log1p((B - 1) * math.exp(-2 / tau))

    def no_tau(B, tau):
        return math.log1p((B - 1) * math.exp(-(1 + 1 / (B - 1))))

    def chance(B, tau):
        return math.log(B)

    def zero(B, tau):
        return 0.0

    floor = SOLUTIONS["clip_loss_floor"]
    assert checks.check_clip_loss_floor(floor, quiet=True).passed
    assert checks.check_clip_loss_floor(lambda B, tau: torch.tensor(floor(B, tau)), quiet=True).passed
    assert checks.check_clip_loss_floor(not_attempted, quiet=True).status == checks.NOT_ATTEMPTED
    hints = {at_minus_one: "regular simplex", no_tau: "put 1/tau into the exponent", chance: "can be no higher",
             zero: "below what any arrangement reaches"}
    for planted, hint in hints.items():
        verdict = checks.check_clip_loss_floor(planted, quiet=True)
        assert verdict.status == checks.WRONG and hint in verdict.message, (planted.__name__, verdict.message)


def test_clip_loss_floor_is_reached_and_not_beaten() -> None:
    floor = SOLUTIONS["clip_loss_floor"]
    for B, tau in ((2, 1.0), (4, 0.3), (10, 0.07)):
        simplex = F.normalize(torch.eye(B, dtype=torch.float64) - 1 / B, dim=-1)
        assert abs(clip.clip_loss(simplex @ simplex.T, tau).item() - floor(B, tau)) < 1e-9
    # a few steps of gradient descent on free unit vectors approach the floor from above
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(6, 8, dtype=torch.float64, generator=generator, requires_grad=True)
    optimizer = torch.optim.Adam([x], lr=0.05)
    for _ in range(300):
        u = F.normalize(x, dim=-1)
        loss = clip.clip_loss(u @ u.T, 0.5)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert floor(6, 0.5) <= loss.item() < floor(6, 0.5) + 1e-3


@pytest.fixture(scope="module")
def tiny_clip():
    from transformers import CLIPModel, CLIPProcessor

    from utils import zoo

    folder = zoo.path("clip", mode="tiny")
    return CLIPModel.from_pretrained(folder, dtype=torch.float32).eval(), CLIPProcessor.from_pretrained(folder)


def test_ensemble_class_embeddings_checker(tiny_clip) -> None:
    model, processor = tiny_clip

    def unnormalised_mean(model, processor, classes, templates):
        raw = torch.stack([clip.encode_texts(model, processor, [tp.format(c) for c in classes]) for tp in templates])
        return F.normalize(raw.mean(0), dim=-1)

    def no_renormalise(model, processor, classes, templates):
        raw = torch.stack([clip.encode_texts(model, processor, [tp.format(c) for c in classes]) for tp in templates])
        return F.normalize(raw, dim=-1).mean(0)

    def first_template(model, processor, classes, templates):
        return F.normalize(clip.encode_texts(model, processor, [templates[0].format(c) for c in classes]), dim=-1)

    def transposed(model, processor, classes, templates):
        return SOLUTIONS["ensemble_class_embeddings"](model, processor, classes, templates).T

    check = checks.check_ensemble_class_embeddings
    assert check(SOLUTIONS["ensemble_class_embeddings"], model, processor, quiet=True).passed
    assert check(SOLUTIONS["ensemble_class_embeddings"], model.half(), processor, quiet=True).passed  # as on a GPU
    model.float()
    assert check(not_attempted, model, processor, quiet=True).status == checks.NOT_ATTEMPTED
    hints = {unnormalised_mean: "normalise each template's embedding before averaging",
             no_renormalise: "normalise the mean again", first_template: "first template's embeddings alone",
             transposed: "one row per class"}
    for planted, hint in hints.items():
        verdict = check(planted, model, processor, quiet=True)
        assert verdict.status == checks.WRONG and hint in verdict.message, (planted.__name__, verdict.message)
