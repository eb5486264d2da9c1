"""Exercise checkers: run the learner's code, print a clear verdict, never raise.

An exercise in a chapter is a stub that raises ``NotImplementedError`` until the learner fills
it in, followed by a call such as ``checks.check_patchify(patchify)``. The checker prints one of

    ✅ Exercise 1.1 (patchify): passed
    ⏳ Exercise 1.1 (patchify): not attempted yet -- replace the `raise NotImplementedError` ...
    ❌ Exercise 1.1 (patchify): wrong -- <what differs, and a hint>

and returns a :class:`Verdict`, so the chapter runs top to bottom (and under nbval) with the
stub still in place. Chapter-specific checkers build on :func:`run_check` and :func:`expect`.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F

PASSED, NOT_ATTEMPTED, WRONG = "passed", "not attempted", "wrong"
_ICONS = {PASSED: "✅", NOT_ATTEMPTED: "⏳", WRONG: "❌"}


class Wrong(AssertionError):
    """Raised inside a checker when the learner's answer is wrong; the message is the hint."""


@dataclass(frozen=True)
class Verdict:
    exercise: str
    status: str
    message: str = ""

    @property
    def passed(self) -> bool:
        return self.status == PASSED

    def __str__(self) -> str:
        text = f"{_ICONS[self.status]} Exercise {self.exercise}: {self.status}"
        return f"{text} -- {self.message}" if self.message else text

    def _ipython_display_(self) -> None:
        """Show nothing when a notebook cell ends with a check: the checker has printed the verdict."""


def expect(condition: bool, hint: str) -> None:
    """Fail the check with ``hint`` unless ``condition`` holds."""
    if not condition:
        raise Wrong(hint)


def expect_close(actual: Any, expected: torch.Tensor, hint: str, atol: float = 1e-5, rtol: float = 1e-4) -> None:
    """Fail unless ``actual`` is a tensor of ``expected``'s shape with values close to it."""
    if not isinstance(actual, torch.Tensor):
        raise Wrong(f"expected a torch.Tensor, got {type(actual).__name__}. {hint}")
    if actual.shape != expected.shape:
        raise Wrong(f"expected shape {tuple(expected.shape)}, got {tuple(actual.shape)}. {hint}")
    actual = actual.detach().to(expected.dtype)
    if not torch.allclose(actual, expected, atol=atol, rtol=rtol):
        worst = (actual - expected).abs().max().item()
        raise Wrong(f"values differ from the reference (max abs difference {worst:.3g}). {hint}")


def run_check(exercise: str, test: Callable[[], None], *, quiet: bool = False) -> Verdict:
    """Run ``test`` (which calls the learner's code and uses :func:`expect`) and report the verdict."""
    try:
        test()
        verdict = Verdict(exercise, PASSED)
    except NotImplementedError:
        verdict = Verdict(
            exercise, NOT_ATTEMPTED, "replace the `raise NotImplementedError` in the cell above with your code"
        )
    except Wrong as exc:
        verdict = Verdict(exercise, WRONG, str(exc))
    except Exception as exc:  # the learner's code crashed: say where, briefly
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        verdict = Verdict(
            exercise, WRONG, f"your code raised {type(exc).__name__}: {exc} (line {frame.lineno}: `{frame.line}`)"
        )
    if not quiet:
        print(verdict)
    return verdict


# --- Chapter 0 ------------------------------------------------------------------------------

def check_relation_from_boxes(relation_from_boxes: Callable, quiet: bool = False) -> Verdict:
    """Exercise 0.1: where is box ``a`` relative to box ``b`` -- left, right, above or below?"""
    from utils.shapes import RELATION_WORD, make_scene, relation

    def test() -> None:
        checked = 0
        for i in range(200):
            scene = make_scene(i, seed=123, min_objects=2, max_objects=3)
            for a in scene.objects:
                for b in scene.objects:
                    if a is b:
                        continue
                    answer = relation_from_boxes(a.box, b.box)
                    truth = RELATION_WORD[relation(a, b)]
                    expect(answer in ("left", "right", "above", "below"),
                           f"return one of 'left', 'right', 'above', 'below'; got {answer!r}")
                    if answer != truth:
                        box_a = tuple(round(v, 2) for v in a.box)
                        box_b = tuple(round(v, 2) for v in b.box)
                        hint = "y grows downwards in images, so a smaller y is higher up" if {answer, truth} == {"above", "below"} \
                            else "compare box centres, along the axis where they are further apart"
                        raise Wrong(f"for a={box_a}, b={box_b} you said {answer!r} but a is {truth!r} of b; {hint}")
                    checked += 1
        expect(checked > 0, "no pairs were checked")

    return run_check("0.1 (relation_from_boxes)", test, quiet=quiet)


# --- Chapter 1: the Vision Transformer ----------------------------------------------------------

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


# --- Chapter 2: CLIP and contrastive learning ---------------------------------------------------

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
