"""Chapter 2's exercise checkers: CLIP and contrastive learning."""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from utils.checks.core import Verdict, Wrong, expect, run_check


def _similarity_examples() -> list[torch.Tensor]:
    """The worked 3x3 example, plus random non-symmetric matrices of other sizes."""
    generator = torch.Generator().manual_seed(2)
    worked = torch.tensor([[2.0, 0.5, 0.3], [0.2, 2.5, 0.4], [0.1, 0.6, 3.0]])
    return [worked] + [torch.randn(n, n, generator=generator) * 2 for n in (2, 5, 8)]


def check_clip_loss(clip_loss: Callable, quiet: bool = False) -> Verdict:
    """Exercise 2.1: the symmetric InfoNCE loss of a (B, B) similarity matrix at temperature tau."""
    from utils.clip import clip_loss as reference

    def test() -> None:
        for S in _similarity_examples():
            for tau in (1.0, 0.5, 0.07):
                got, want = clip_loss(S.clone(), tau), reference(S, tau)
                expect(isinstance(got, torch.Tensor) and got.numel() == 1,
                       f"return the loss as a single-number tensor, got {got!r}")
                if torch.isclose(got.reshape(()), want, atol=1e-5, rtol=1e-4):
                    continue
                rows_only = F.cross_entropy(S / tau, torch.arange(len(S)))
                columns_only = F.cross_entropy(S.T / tau, torch.arange(len(S)))
                if tau != 1.0 and torch.isclose(got.reshape(()), reference(S * tau * tau, tau), atol=1e-5):
                    hint = "divide the similarities by tau: logits = S / tau (a small tau sharpens the softmax)"
                elif torch.isclose(got.reshape(()), rows_only, atol=1e-5) or torch.isclose(got.reshape(()), columns_only, atol=1e-5):
                    hint = "average both directions: image-to-text (softmax over each row) and text-to-image (over each column)"
                else:
                    hint = ("the image-to-text loss takes a softmax over each row, the text-to-image loss over each "
                            "column; the targets are the diagonal")
                raise Wrong(f"for a {len(S)}x{len(S)} matrix at tau={tau} you returned {got.item():.4f}, "
                            f"expected {want.item():.4f}. {hint}")

    return run_check("2.1 (clip_loss)", test, quiet=quiet)


def check_siglip_loss(siglip_loss: Callable, quiet: bool = False) -> Verdict:
    """Exercise 2.2: SigLIP's pairwise sigmoid loss with scale t and bias b."""
    from utils.clip import siglip_loss as reference

    def test() -> None:
        for S in _similarity_examples():
            for t, b in ((1.0, 0.0), (10.0, -10.0), (3.0, 1.5)):
                got, want = siglip_loss(S.clone(), t, b), reference(S, t, b)
                expect(isinstance(got, torch.Tensor) and got.numel() == 1,
                       f"return the loss as a single-number tensor, got {got!r}")
                if torch.isclose(got.reshape(()), want, atol=1e-5, rtol=1e-4):
                    continue
                B = len(S)
                if torch.isclose(got.reshape(()) * B, want, atol=1e-4, rtol=1e-4):
                    hint = "sum over the texts j and average over the images i (divide by B, not by B*B)"
                elif b != 0 and torch.isclose(got.reshape(()), reference(S, t, -b), atol=1e-5):
                    hint = "the logit is t * S_ij + b: add the bias"
                else:
                    hint = "labels z_ij are +1 on the diagonal and -1 off it; the loss of a pair is -log sigmoid(z_ij * logit_ij)"
                raise Wrong(f"for a {B}x{B} matrix with t={t}, b={b} you returned {got.item():.4f}, "
                            f"expected {want.item():.4f}. {hint}")

    return run_check("2.2 (siglip_loss)", test, quiet=quiet)


def check_zero_shot_classify(zero_shot_classify: Callable, quiet: bool = False) -> Verdict:
    """Exercise 2.3: the index of the closest class prompt (by cosine similarity) for each image."""

    def test() -> None:
        generator = torch.Generator().manual_seed(3)
        for n, k, d in ((6, 3, 4), (50, 15, 32)):
            images = torch.randn(n, d, generator=generator)
            classes = torch.randn(k, d, generator=generator) * torch.rand(k, 1, generator=generator) * 5  # unequal norms
            want = (F.normalize(images, dim=-1) @ F.normalize(classes, dim=-1).T).argmax(dim=1)
            got = zero_shot_classify(images.clone(), classes.clone())
            expect(isinstance(got, torch.Tensor) and got.shape == (n,),
                   f"return one class index per image (argmax over the classes), a tensor of shape ({n},); got "
                   f"{tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__}")
            if torch.equal(got.long(), want):
                continue
            if torch.equal(got.long(), (images @ classes.T).argmax(dim=1)):
                hint = "normalise the embeddings first: CLIP compares directions (cosine), and prompt norms differ"
            else:
                hint = "score every image against every class prompt by cosine similarity and pick the best class"
            raise Wrong(f"{int((got.long() != want).sum())} of {n} images got the wrong class. {hint}")

    return run_check("2.3 (zero_shot_classify)", test, quiet=quiet)


def check_recall_at_k(recall_at_k: Callable, quiet: bool = False) -> Verdict:
    """Exercise 2.4: share of queries (rows) whose match (the diagonal) is among their k best columns."""
    from utils.clip import recall_at_k as reference

    def test() -> None:
        generator = torch.Generator().manual_seed(4)
        S = torch.randn(40, 40, generator=generator) + 1.5 * torch.eye(40)
        for k in (1, 3, 5, 10):
            got, want = recall_at_k(S.clone(), k), reference(S, k)
            expect(isinstance(got, (float, int)) or (isinstance(got, torch.Tensor) and got.numel() == 1),
                   f"return the recall as one number, got {type(got).__name__}")
            got = float(got)
            if abs(got - want) < 1e-6:
                continue
            if abs(got - reference(S.T.contiguous(), k)) < 1e-6:
                hint = "each row is a query: rank the columns of a row (topk over dim=1)"
            elif k > 1 and (abs(got - reference(S, k - 1)) < 1e-6 or abs(got - reference(S, k + 1)) < 1e-6):
                hint = "look at exactly the k best columns (off by one)"
            else:
                hint = "a query counts as a hit when its own index (the diagonal) is among its k highest scores"
            raise Wrong(f"recall@{k} should be {want:.3f}, you returned {got:.3f}. {hint}")

    return run_check("2.4 (recall_at_k)", test, quiet=quiet)


# --- Exercise 2.5: SigLIP in chunks -----------------------------------------------------------------

class _LargestMatrix(torch.overrides.TorchFunctionMode):
    """Records whether any torch call inside it returns a tensor whose last two sizes are (B, B)."""

    def __init__(self, B: int) -> None:
        super().__init__()
        self.B, self.full = B, False

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.ndim >= 2 and tuple(t.shape[-2:]) == (self.B, self.B):
                self.full = True
        return out


def _chunked_variant(x: torch.Tensor, y: torch.Tensor, t: float, b: float, devices: int, *,
                     positives_everywhere: bool = False, divide_by: str = "B", bias: float | None = None) -> torch.Tensor:
    """SigLIP's loss block by block, with switches for the usual slips (used to name them)."""
    B = len(x)
    n = B // devices
    bias = b if bias is None else bias
    total = torch.zeros(())
    for d in range(devices):
        mine = x[d * n:(d + 1) * n]
        device_total = torch.zeros(())
        for step in range(devices):
            k = (d + step) % devices
            logits = t * mine @ y[k * n:(k + 1) * n].T + bias
            labels = 2 * torch.eye(n) - 1 if (k == d or positives_everywhere) else -torch.ones(n, n)
            device_total = device_total - F.logsigmoid(labels * logits).sum()
        total = total + (device_total / n if divide_by == "n" else device_total)
    return total if divide_by == "n" else total / (B * B if divide_by == "BB" else B)


def check_siglip_loss_chunked(siglip_loss_chunked: Callable, quiet: bool = False) -> Verdict:
    """Exercise 2.5: SigLIP's loss computed device by device, text blocks passed around a ring."""
    from utils.clip import siglip_loss as reference

    def test() -> None:
        generator = torch.Generator().manual_seed(25)
        for B, devices in ((8, 1), (8, 2), (8, 4), (12, 3), (6, 6)):
            x = F.normalize(torch.randn(B, 16, generator=generator), dim=-1)
            y = F.normalize(x + 0.7 * torch.randn(B, 16, generator=generator), dim=-1)  # near their images
            for t, b in ((10.0, -10.0), (3.0, 1.5)):
                want = reference(x @ y.T, t, b)
                watch = _LargestMatrix(B)
                with watch:
                    got = siglip_loss_chunked(x.clone(), y.clone(), t, b, devices)
                expect(isinstance(got, torch.Tensor) and got.numel() == 1,
                       f"return the loss as a single-number tensor, got {got!r}")
                got = got.reshape(())
                if not torch.isclose(got, want, atol=1e-5, rtol=1e-4):
                    hints = {
                        "a device's images have positives only in its own text block; in every other block all "
                        "pairs are negatives (label -1)": dict(positives_everywhere=True),
                        "divide the sum over all devices by the global batch size B once, not each device's sum "
                        "by its share B / devices": dict(divide_by="n"),
                        "sum over texts and divide by B, not by B * B": dict(divide_by="BB"),
                        "the logit of a pair is t * x_i . y_j + b: add the bias b": dict(bias=-b),
                        "the logit of a pair is t * x_i . y_j + b: you left out the bias": dict(bias=0.0),
                    }
                    hint = next((h for h, switches in hints.items()
                                 if torch.isclose(got, _chunked_variant(x, y, t, b, devices, **switches), atol=1e-5)),
                                "each device scores its B/devices images against one text block at a time: logits "
                                "t * x @ y_block.T + b, labels +1 on the diagonal of its own block only")
                    raise Wrong(f"with B={B} on {devices} devices (t={t}, b={b}) you returned {got.item():.4f}, "
                                f"expected {want.item():.4f}. {hint}")
                if devices > 1 and watch.full:
                    raise Wrong(f"the value is right, but with B={B} on {devices} devices your code built a "
                                f"{B}x{B} tensor (of similarities or labels): the point of the scheme is that no "
                                f"device ever holds the full matrix; score one ({B // devices}, {B // devices}) "
                                "block at a time")
        x = torch.randn(10, 4, generator=generator)
        try:
            siglip_loss_chunked(x, x.clone(), 10.0, -10.0, 4)
        except ValueError:
            pass
        else:
            raise Wrong("a batch of 10 cannot be split into 4 equal shares: raise a ValueError that says so "
                        "(if B % devices: raise ValueError(...))")

    return run_check("2.5 (siglip_loss_chunked)", test, quiet=quiet)


# --- Exercise 2.6: the floor of the CLIP loss -------------------------------------------------------

def _simplex(B: int) -> torch.Tensor:
    """B unit vectors of a regular simplex (pairwise cosine -1/(B-1)), in float64."""
    points = torch.eye(B, dtype=torch.float64) - 1.0 / B  # centred corners of the standard simplex
    return F.normalize(points, dim=-1)


def check_clip_loss_floor(clip_loss_floor: Callable, quiet: bool = False) -> Verdict:
    """Exercise 2.6: the lowest CLIP loss B pairs of unit vectors can reach at temperature tau."""
    from utils.clip import clip_loss

    def test() -> None:
        generator = torch.Generator().manual_seed(26)
        for B in (2, 3, 5, 16):
            for tau in (1.0, 0.5, 0.07):
                got = clip_loss_floor(B, tau)
                got = got.item() if hasattr(got, "item") else got  # a tensor or a NumPy number
                expect(isinstance(got, (int, float)), f"return one number, got {type(got).__name__}")
                X = _simplex(B)  # matched pairs share a vector (cos 1), the rest sit at -1/(B-1)
                want = clip_loss(X @ X.T, tau).item()
                if abs(got - want) <= 1e-6 * max(1.0, abs(want)):
                    continue
                at_minus_one = math.log1p((B - 1) * math.exp(-2 / tau))
                no_tau = math.log1p((B - 1) * math.exp(-(1 + 1 / (B - 1))))
                if abs(got - at_minus_one) <= 1e-6 * max(1.0, at_minus_one):
                    hint = (f"B = {B} unit vectors cannot all be at cosine -1 from each other (their sum would have "
                            "negative squared length); the most spread-out arrangement is a regular simplex, where "
                            "every mismatched pair has cosine -1/(B-1)")
                elif abs(got - no_tau) <= 1e-6 * max(1.0, no_tau):
                    hint = "the logits are cosines divided by tau: put 1/tau into the exponent"
                elif got > want:
                    hint = ("that is above the loss of an arrangement that exists (a regular simplex, matched pairs "
                            "at cosine 1): the floor can be no higher")
                else:
                    hint = ("that is below what any arrangement reaches: matched pairs score at most cos 1, and the "
                            "mismatched cosines average at least -1/(B-1)")
                raise Wrong(f"clip_loss_floor({B}, {tau}) = {got:.6f}, but the simplex arrangement already gives "
                            f"{want:.6f}. {hint}")
            # The floor is a floor: no random arrangement of unit vectors goes below it.
            for _ in range(20):
                x = F.normalize(torch.randn(B, 8, dtype=torch.float64, generator=generator), dim=-1)
                y = F.normalize(x + 0.3 * torch.randn(B, 8, dtype=torch.float64, generator=generator), dim=-1)
                loss = clip_loss(x @ y.T, 0.5).item()
                expect(float(clip_loss_floor(B, 0.5)) <= loss + 1e-9,
                       f"a random arrangement of {B} pairs reaches loss {loss:.4f} at tau = 0.5, below your floor")

    return run_check("2.6 (clip_loss_floor)", test, quiet=quiet)


# --- Exercise 2.7: a prompt ensemble ----------------------------------------------------------------

def check_ensemble_class_embeddings(ensemble_class_embeddings: Callable, model, processor,
                                    quiet: bool = False) -> Verdict:
    """Exercise 2.7: per class, the renormalised mean of the unit embeddings of every template."""
    from utils.clip import encode_texts

    def embed(texts: list[str]) -> torch.Tensor:
        return encode_texts(model, processor, texts).double()  # (n, d), not normalised

    def test() -> None:
        classes = ["red circle", "blue square", "yellow triangle"]
        templates = ["a photo of a {}", "a {}", "a picture of a small {}"]
        tolerance = 1e-4 if model.text_projection.weight.dtype == torch.float32 else 1e-2
        got = ensemble_class_embeddings(model, processor, list(classes), list(templates))  # first: a stub stops here
        expect(isinstance(got, torch.Tensor), f"return a tensor of shape (classes, d), got {type(got).__name__}")
        raw = torch.stack([embed([tp.format(c) for c in classes]) for tp in templates])  # (templates, k, d)
        got = got.detach().double().cpu()
        expect(got.shape == raw.shape[1:], f"return one row per class, shape {tuple(raw.shape[1:])}, got {tuple(got.shape)}")
        norms = got.norm(dim=-1)
        if not torch.allclose(norms, torch.ones_like(norms), atol=tolerance * 10):
            if torch.allclose(got, F.normalize(raw, dim=-1).mean(0), atol=tolerance):
                raise Wrong("normalise the mean again: an average of unit vectors is shorter than 1 (row norms "
                            f"{[round(v, 3) for v in norms.tolist()]}), and zero-shot compares unit vectors")
            raise Wrong(f"the rows should be unit vectors, their norms are {[round(v, 3) for v in norms.tolist()]}")
        # The right answer must be close, and closer than the usual slips (a float16 model on a GPU rounds
        # at the 1e-3 level, about as far as the slips are from the right answer).
        want = F.normalize(F.normalize(raw, dim=-1).mean(0), dim=-1)
        slips = {"normalise each template's embedding before averaging: otherwise the templates whose embeddings "
                 "happen to be longer outweigh the others": F.normalize(raw.mean(0), dim=-1),
                 "these are the first template's embeddings alone: average over every template":
                     F.normalize(raw[0], dim=-1)}
        distance = (got - want).abs().max().item()
        closest = min(slips, key=lambda hint: (got - slips[hint]).abs().max().item())
        if (got - slips[closest]).abs().max().item() < distance:
            raise Wrong(closest)
        if distance > tolerance:
            raise Wrong("for each class, fill every template with the class name (template.format(name)), embed "
                        "them with clip.encode_texts, normalise each, average, and normalise the average")
        single = ensemble_class_embeddings(model, processor, list(classes), ["a photo of a {}"])
        expect(isinstance(single, torch.Tensor) and torch.allclose(single.detach().double().cpu(),
                                                                   F.normalize(raw[0], dim=-1), atol=tolerance),
               "with a single template the result should be that prompt's normalised embedding")

    return run_check("2.7 (ensemble_class_embeddings)", test, quiet=quiet)
