"""Chapter 2's exercise checkers: CLIP and contrastive learning."""

from __future__ import annotations

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
