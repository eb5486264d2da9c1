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


# --- Chapter 3: BLIP-2, the Q-Former and chat ---------------------------------------------------

def _as_allowed(mask: Any, Q: int, L: int) -> torch.Tensor:
    """The learner's mask as bool, True = may attend. A bool tensor, or 0/1 of any dtype (1 = may attend)."""
    T = Q + L
    expect(isinstance(mask, torch.Tensor), f"return a torch.Tensor, got {type(mask).__name__}")
    expect(mask.shape == (T, T),
           f"for Q={Q}, L={L} return a (Q+L, Q+L) = ({T}, {T}) matrix, got shape {tuple(mask.shape)}: one row per "
           "token that looks, one column per token looked at, queries first")
    if mask.dtype == torch.bool:
        return mask
    values = set(mask.detach().float().unique().tolist())
    if values <= {0.0, 1.0}:
        return mask != 0  # 0/1 integers or floats are read as False/True
    if 0.0 in values and all(v == float("-inf") or v < -1e4 for v in values - {0.0}):
        raise Wrong("this is an additive mask (0 where allowed, -inf where blocked); return True (or 1) where a "
                    "token may attend and False (or 0) where it may not -- e.g. `additive == 0`")
    raise Wrong(f"the mask holds {sorted(values)[:4]}: return bools (True = may attend), or 0/1 numbers")


def check_itg_mask(itg_mask: Callable, quiet: bool = False) -> Verdict:
    """Exercise 3.1: the multimodal causal (ITG) mask, (Q, L) -> (Q+L, Q+L), True = row may attend to column.

    Queries come first. Queries see all queries and no text; text token t sees every query and
    text tokens 0..t. A bool tensor is expected; 0/1 integers or floats (1 = may attend) are accepted too.
    """
    from utils.qformer import itg_mask as reference

    def test() -> None:
        for Q, L in ((2, 3), (4, 1), (3, 6), (1, 1)):
            got = _as_allowed(itg_mask(Q, L), Q, L)
            want = reference(Q, L)
            if torch.equal(got, want):
                continue
            where = f"for Q={Q} queries and L={L} text tokens: "
            if torch.equal(got, ~want):
                raise Wrong(where + "True must mean *may attend*; you returned the opposite (True where attention is "
                            "blocked, as some libraries' masks do) -- invert it")
            if torch.equal(got, want.T):
                raise Wrong(where + "row i is the token that attends and column j the token it looks at; you "
                            "returned the transpose")
            if got[:Q, Q:].any():
                raise Wrong(where + "the queries must not see the text (top-right Q x L block all False): they "
                            "would read the very caption they are meant to help generate")
            if not got[Q:, :Q].all():
                raise Wrong(where + "every text token must see every query (bottom-left L x Q block all True): "
                            "the queries are the text's only way to the image")
            if not got[:Q, :Q].all():
                raise Wrong(where + "queries see all the queries, in both directions (top-left Q x Q block all True)")
            text = got[Q:, Q:]
            ones = torch.ones(L, L, dtype=torch.bool)
            if torch.equal(text, ones.tril(-1)):
                raise Wrong(where + "off by one: a text token must also see itself -- keep the diagonal "
                            "(torch.tril(..., diagonal=0))")
            if torch.equal(text, ones):
                raise Wrong(where + "the text block must be causal: token t may not see the tokens after t "
                            "(lower-triangular)")
            if torch.equal(text, ones.triu()) or torch.equal(text, ones.triu(1)):
                raise Wrong(where + "causal means each token sees itself and the *earlier* tokens: lower-triangular "
                            "(tril), not upper")
            raise Wrong(where + "the text block (bottom-right L x L) must be lower-triangular with the diagonal")

    return run_check("3.1 (itg_mask)", test, quiet=quiet)


def check_build_prompt(build_prompt: Callable, quiet: bool = False) -> Verdict:
    """Exercise 3.2: BLIP-2's chat prompt from a history of (question, answer) pairs, oldest first.

    ``build_prompt([("What colour is the circle?", "red")], "How many shapes are there?")`` must be
    "Question: What colour is the circle? Answer: red. Question: How many shapes are there? Answer:";
    questions and answers are stripped of surrounding whitespace, and an empty or whitespace-only
    question raises ValueError.
    """
    from utils.chat import build_prompt as reference

    cases = [
        ([], "What colour is the circle?"),
        ([("What colour is the circle?", "red")], "How many shapes are there?"),
        ([("How many shapes are there?", "3"), ("Is there a green square?", "yes"),
          ("What colour is the triangle?", "blue")], "Where is the triangle?"),
        ([("  What shape is the red object? ", " circle\n")], "  Is it small or large? "),
    ]

    def test() -> None:
        for history, question in cases:
            want = reference(history, question)
            got = build_prompt([tuple(turn) for turn in history], question)
            expect(isinstance(got, str), f"return the prompt as one string, got {type(got).__name__}")
            if got == want:
                continue
            seen = f"for history={history!r} and question={question!r} you returned {got!r}, expected {want!r}. "
            if len(history) > 1 and got == reference(history[::-1], question):
                raise Wrong(seen + "write the turns oldest first, as the conversation happened")
            if got == want.replace(". Question:", " Question:") or got == want.replace(". Question:", ", Question:"):
                raise Wrong(seen + "end every earlier answer with a full stop and a space: "
                            "'Answer: red. Question: ...'")
            if got == want + " ":
                raise Wrong(seen + "no space after the final 'Answer:': the model writes ' red' (with its space) "
                            "itself")
            if not got.rstrip().endswith("Answer:"):
                raise Wrong(seen + "end the prompt with 'Answer:', so that what the model writes next is the answer")
            if "".join(got.split()) == "".join(want.split()):  # only the whitespace differs
                raise Wrong(seen + "strip the whitespace around each question and answer (str.strip()) and join the "
                            "turns with single spaces")
            raise Wrong(seen + "each earlier turn is 'Question: {q} Answer: {a}.', the open one "
                        "'Question: {q} Answer:', all joined by single spaces")
        try:
            got = build_prompt([], "   ")
        except ValueError:
            return
        raise Wrong(f"an empty or whitespace-only question must raise ValueError (there is nothing to ask); you "
                    f"returned {got!r}")

    return run_check("3.2 (build_prompt)", test, quiet=quiet)


def check_cross_attention(cross_attention: Callable, quiet: bool = False) -> Verdict:
    """Exercise 3.3: single-head cross-attention from Q queries to N image tokens.

    ``cross_attention(queries (B, Q, D), keys_values (B, N, D), Wq, Wk, Wv) -> (B, Q, D)`` with
    (D, D) weight matrices applied on the right -- q = queries @ Wq, k = keys_values @ Wk,
    v = keys_values @ Wv -- and softmax(q k^T / sqrt(D), over the N keys) @ v. One head, no biases.
    """

    def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, dim: int = -1) -> torch.Tensor:
        return torch.softmax(q @ k.transpose(-2, -1) * scale, dim=dim) @ v

    def test() -> None:
        generator = torch.Generator().manual_seed(3)
        for B, Q, N, D in ((2, 3, 5, 4), (1, 4, 4, 16)):  # the second has Q = N: swaps keep the shape
            queries, image = torch.randn(B, Q, D, generator=generator), torch.randn(B, N, D, generator=generator)
            Wq, Wk, Wv = (torch.randn(D, D, generator=generator) for _ in range(3))
            want = attend(queries @ Wq, image @ Wk, image @ Wv, D ** -0.5)  # (B, Q, D)
            got = cross_attention(queries.clone(), image.clone(), Wq.clone(), Wk.clone(), Wv.clone())
            sizes = f"for B={B}, Q={Q}, N={N}, D={D}: "
            swapped = attend(image @ Wq, queries @ Wk, queries @ Wv, D ** -0.5)  # (B, N, D): the image asks
            if isinstance(got, torch.Tensor) and got.shape == swapped.shape and torch.allclose(got, swapped, atol=1e-4):
                raise Wrong(sizes + "queries and keys are swapped: the Q queries ask (q = queries @ Wq) and the N "
                            "image tokens answer (k = keys_values @ Wk, v = keys_values @ Wv); the output has one "
                            "row per query")
            if isinstance(got, torch.Tensor) and got.shape == (B, N, D) and Q != N:
                raise Wrong(sizes + f"the output has one row per image token, shape {tuple(got.shape)}; it needs one "
                            f"per query, (B, Q, D) = {(B, Q, D)}: the queries ask, the keys_values answer")
            if isinstance(got, torch.Tensor) and got.shape == want.shape and not torch.allclose(got, want, atol=1e-4):
                q, k, v = queries @ Wq, image @ Wk, image @ Wv
                diagnoses = [
                    (attend(q, k, v, D ** -0.5, dim=-2), "take the softmax over the keys (the last axis, dim=-1): each "
                     "query's weights over the N image tokens must sum to 1"),
                    (attend(q, k, v, 1.0), "scale the scores by 1/sqrt(D) before the softmax, or a wide D "
                     "saturates it"),
                    (attend(q, k, v, 1 / D), "divide the scores by the square root of D, not by D"),
                    (attend(queries @ Wk, image @ Wq, v, D ** -0.5), "Wq projects the queries and Wk the keys_values; "
                     "you swapped the two weight matrices"),
                    (attend(queries @ Wq.T, image @ Wk.T, image @ Wv.T, D ** -0.5), "apply the weights on the right, "
                     "x @ W, not x @ W.T"),
                    (attend(q, k, image, D ** -0.5), "average the projected values v = keys_values @ Wv, not the raw "
                     "keys_values"),
                ]
                for wrong, hint in diagnoses:
                    if torch.allclose(got, wrong, atol=1e-4):
                        raise Wrong(sizes + hint)
            expect_close(got, want, sizes + "softmax((queries @ Wq) @ (keys_values @ Wk).transpose(-2, -1) / sqrt(D), "
                         "dim=-1) @ (keys_values @ Wv)", atol=1e-4)

    return run_check("3.3 (cross_attention)", test, quiet=quiet)


# --- Chapter 4: LLaVA and visual instruction tuning ----------------------------------------------

_RELATION_FLIPS = {"to the left of": "to the right of", "to the right of": "to the left of", "above": "below",
                   "below": "above"}


def _spatial_reference(boxes: list, margin: float, *, flip_x: bool = False, flip_y: bool = False,
                       swap_xy: bool = False, minor_axis: bool = False, corners: bool = False,
                       one_way: bool = False, skip_unclear: bool = True) -> list[tuple[str, str]]:
    """Exercise 4.1's answer, and (with a switch on) each mistake the checker recognises."""
    turns = []
    for i, (label_a, a) in enumerate(boxes):
        for j, (label_b, b) in enumerate(boxes):
            if i == j or (one_way and j < i):
                continue
            if corners:  # top-left corners instead of centres
                dx, dy = a[0] - b[0], a[1] - b[1]
            else:
                dx, dy = (a[0] + a[2]) / 2 - (b[0] + b[2]) / 2, (a[1] + a[3]) / 2 - (b[1] + b[3]) / 2
            if swap_xy:  # boxes read as (y0, x0, y1, x1)
                dx, dy = dy, dx
            if skip_unclear and abs(abs(dx) - abs(dy)) < margin:
                continue
            horizontal = abs(dx) < abs(dy) if minor_axis else abs(dx) >= abs(dy)
            if horizontal:
                relation = "to the left of" if (dx < 0) != flip_x else "to the right of"
            else:
                relation = "above" if (dy < 0) != flip_y else "below"
            turns.append((f"Where is the {label_a} relative to the {label_b}?", f"The {label_a} is {relation} the {label_b}."))
    return turns


def _spatial_cases() -> list[tuple[list, float]]:
    """Box lists to ask about: ShapesWorld scenes, plus hand-made ones with unclear pairs and unequal sizes."""
    from utils.shapes import make_scene

    cases = [([(label, box) for label, box in make_scene(i, seed=404, min_objects=2).boxes], 0.05) for i in range(60)]
    cases += [
        ([("red circle", (0.1, 0.1, 0.3, 0.3)), ("blue square", (0.5, 0.43, 0.7, 0.63))], 0.05),  # dx -0.4, dy -0.33
        ([("red circle", (0.1, 0.1, 0.3, 0.3)), ("blue square", (0.5, 0.43, 0.7, 0.63))], 0.1),  # the same, unclear now
        ([("dog", (0.05, 0.6, 0.45, 0.95)), ("person", (0.55, 0.05, 0.75, 0.9)), ("kite", (0.6, 0.0, 0.7, 0.1))], 0.05),
        ([("small square", (0.40, 0.10, 0.50, 0.20)), ("large square", (0.05, 0.50, 0.95, 0.60))], 0.05),
        ([("cat", (0.0, 0.0, 1.0, 1.0))], 0.05),  # one box: no pairs
    ]
    return cases


def check_spatial_questions(spatial_questions: Callable, quiet: bool = False) -> Verdict:
    """Exercise 4.1: a spatial-relation question generator, (question, answer) turns for every ordered pair of boxes.

    ``spatial_questions(boxes, margin)`` with boxes ``[(label, (x0, y0, x1, y1)), ...]`` normalised to
    [0, 1], y pointing down, returns ``("Where is the {a} relative to the {b}?", "The {a} is {relation}
    the {b}.")`` for every ordered pair of different boxes (a's index first, then b's), where relation
    is read from the box centres along the axis on which they differ more -- and no turn for a pair
    whose two offsets |dx| and |dy| differ by less than ``margin``.
    """
    mistakes = [
        ({"flip_x": True}, "left and right are swapped: a smaller centre x means further *left*"),
        ({"flip_y": True}, "above and below are swapped: in image coordinates y grows downwards, so a smaller "
                           "centre y is *higher up* (above)"),
        ({"flip_x": True, "flip_y": True}, "every relation is reversed: you describe where b is relative to a; "
                                           "compute a's centre minus b's centre"),
        ({"swap_xy": True}, "x and y are swapped: a box is (x0, y0, x1, y1), so the centre is ((x0 + x1) / 2, "
                            "(y0 + y1) / 2)"),
        ({"minor_axis": True}, "you picked the axis on which the centres differ *less*; the relation comes from "
                               "the axis with the larger offset (|dx| >= |dy| means left/right)"),
        ({"corners": True}, "compare box centres ((x0 + x1) / 2, (y0 + y1) / 2), not the top-left corners: a large "
                            "box can start further left than a small one whose centre is further left"),
        ({"skip_unclear": False}, "skip a pair whose offsets |dx| and |dy| differ by less than margin: the "
                                  "relation is a guess there, and a generator should state only what is certain"),
        ({"one_way": True}, "ask about every *ordered* pair: both (a, b) and (b, a), each with its own answer"),
    ]

    def test() -> None:
        for boxes, margin in _spatial_cases():
            got = spatial_questions([(label, tuple(box)) for label, box in boxes], margin)
            expect(isinstance(got, list), f"return a list of (question, answer) pairs, got {type(got).__name__}")
            expect(all(isinstance(t, (tuple, list)) and len(t) == 2 and all(isinstance(s, str) for s in t) for t in got),
                   "each turn must be a (question, answer) pair of strings")
            got = [tuple(t) for t in got]
            want = _spatial_reference(boxes, margin)
            if got == want:
                continue
            if any(q == f"Where is the {label} relative to the {label}?" for q, _ in got for label, _ in boxes):
                raise Wrong("skip the pair of a box with itself ('Where is the circle relative to the circle?')")
            for switches, hint in mistakes:
                if got == _spatial_reference(boxes, margin, **switches) and got:
                    raise Wrong(hint)
            if sorted(got) == sorted(want):
                raise Wrong("the right turns in the wrong order: loop over a, then over b, in the order of the boxes")
            if len(got) != len(want):
                raise Wrong(f"for {len(boxes)} boxes and margin {margin} you returned {len(got)} turns, expected "
                            f"{len(want)}: one per ordered pair of different boxes, minus the unclear pairs")
            first = next(i for i, (g, w) in enumerate(zip(got, want)) if g != w)
            raise Wrong(f"turn {first} is {got[first]!r}, expected {want[first]!r}; write exactly "
                        "'Where is the {a} relative to the {b}?' and 'The {a} is {relation} the {b}.'")

    return run_check("4.1 (spatial_questions)", test, quiet=quiet)


def _mask_reference(ids: list[int], marker: list[int], eos_id: int, *, start: int = 0, keep_eos: bool = True,
                    stop_at_eos: bool = True, first_only: bool = False, invert: bool = False, ignore: int = -100,
                    last_marker_token: bool = False) -> list[int]:
    """Exercise 4.2's answer, and (with a switch on) each mistake the checker recognises."""
    learned = [False] * len(ids)
    m = 1 if last_marker_token else len(marker)
    pattern = marker[-1:] if last_marker_token else marker
    i = 0
    while i <= len(ids) - m:
        if ids[i:i + m] != pattern:
            i += 1
            continue
        j = i + m + start
        while j < len(ids):
            is_eos = ids[j] == eos_id
            if not (is_eos and not keep_eos):
                learned[j] = True
            j += 1
            if is_eos and stop_at_eos:
                break
        i = j
        if first_only:
            break
    if invert:
        learned = [not x for x in learned]
    return [t if keep else ignore for t, keep in zip(ids, learned)]


# Token ids of a made-up vocabulary: enough to write conversations in the chat template's shape.
_BOS, _EOS, _PAD, _IMAGE = 1, 2, 3, 9
_USER_MARKER, _ASSISTANT_MARKER = [30, 21], [20, 21]  # "USER" ":" and " ASSISTANT" ":" -- both end in ":"


def _mask_cases() -> list[list[int]]:
    """Conversations as token ids: one and several turns, image tokens, padding, a truncated last answer."""
    def turn(question: list[int], answer: list[int], image: bool = False) -> list[int]:
        return _USER_MARKER + ([_IMAGE] * 4 if image else []) + question + _ASSISTANT_MARKER + answer + [_EOS]

    one = [_BOS] + turn([40, 41, 42, 21], [50], image=True)  # a ':' inside the question too
    two = [_BOS] + turn([40, 43], [51, 52, 53], image=True) + turn([44, 45, 46], [54])
    three = [_BOS] + turn([40], [55, 56], image=True) + turn([41, 21, 42], [57]) + turn([43], [58, 59, 60]) + [_PAD] * 3
    truncated = [_BOS] + turn([40, 41], [61], image=True) + _USER_MARKER + [42] + _ASSISTANT_MARKER + [62, 63]
    return [one, two, three, truncated]


def check_mask_labels(mask_labels: Callable, quiet: bool = False) -> Verdict:
    """Exercise 4.2: labels of a tokenised conversation, -100 everywhere except the assistant's answers.

    ``mask_labels(input_ids, marker, eos_id)`` gets ``input_ids`` (L,) as a LongTensor, the ids of
    the assistant marker (" ASSISTANT:") as a list, and the end-of-turn id. An answer runs from the
    token after each occurrence of the whole marker up to and including the next ``eos_id`` (or
    to the end of the sequence if it was cut). Return a LongTensor (L,): the token id where the
    model learns, -100 everywhere else.
    """
    mistakes = [
        ({"invert": True}, "it's the other way round: you kept the prompt and masked the answers. Labels hold the "
                           "token id inside an answer and -100 everywhere else"),
        ({"start": -1}, "off by one at the start: the answer begins *after* the marker's last token (':'); the "
                        "marker is part of the prompt"),
        ({"start": 1}, "off by one at the start: the first answer token is the one right after the marker; you "
                       "masked it"),
        ({"keep_eos": False}, "keep the end-of-turn token after each answer (label = eos_id): that is how the "
                              "model learns to stop"),
        ({"stop_at_eos": False}, "an answer ends at its end-of-turn token: the user's next turn and the padding "
                                 "after it stay -100"),
        ({"first_only": True}, "mask every assistant turn, not only the first: a conversation has several answers"),
        ({"last_marker_token": True}, "match the whole marker sequence, not only its last token: ':' also ends "
                                      "'USER:' and appears inside questions"),
        ({"ignore": 0}, "use -100 for the positions the loss skips (cross_entropy's ignore_index), not 0: 0 is "
                        "a real token id"),
    ]

    def test() -> None:
        for ids in _mask_cases():
            got = mask_labels(torch.tensor(ids), list(_ASSISTANT_MARKER), _EOS)
            expect(isinstance(got, torch.Tensor), f"return a torch.Tensor, got {type(got).__name__}")
            expect(got.shape == (len(ids),), f"return one label per token, shape ({len(ids)},); got {tuple(got.shape)}")
            if got.dtype == torch.bool:
                raise Wrong("return the labels themselves (the token id where the model learns, -100 elsewhere), "
                            "not a True/False mask")
            expect(not got.is_floating_point(), f"labels are token ids: return a LongTensor, got {got.dtype}")
            got_list, want = got.tolist(), _mask_reference(ids, _ASSISTANT_MARKER, _EOS)
            if got_list == want:
                continue
            for switches, hint in mistakes:
                if got_list == _mask_reference(ids, _ASSISTANT_MARKER, _EOS, **switches):
                    raise Wrong(hint)
            if got_list == want[1:] + [-100] or got_list == ids[1:] + [-100]:
                raise Wrong("do not shift the labels: label i goes with token i, and the model shifts them itself "
                            "when it computes the loss")
            wrong = [i for i, (g, w) in enumerate(zip(got_list, want)) if g != w]
            raise Wrong(f"for input_ids {ids} the labels differ at positions {wrong[:6]}: expected {want}, got {got_list}")

    return run_check("4.2 (mask_labels)", test, quiet=quiet)


REGION_PATTERN = (r"\b(?:in|on|near|at) the (?:(top|bottom) )?(?:(left|right) )?(?:part |side |half |corner )?"
                  r"of the (?:picture|image)\b")


def _region_claim(checker: Any, sentence: Any, *, flip_x: bool = False, flip_y: bool = False,
                  vertical: bool = True, horizontal: bool = True, negations: bool = True, last_mention: bool = False,
                  edges: bool = False, thirds: bool = False, invert: bool = False) -> bool | None:
    """Whether exercise 4.3's check flags ``sentence`` (None: no claim to check) -- and, with a switch on, what
    each mistake the checker recognises would do."""
    import re

    match = re.search(REGION_PATTERN, sentence.text, flags=re.IGNORECASE)
    if match is None or not sentence.mentions or (sentence.negated and negations):
        return None
    obj = checker._one(sentence.mentions[-1 if last_mention else 0])
    if obj is None:
        return None
    row, column = (g.lower() if g else None for g in match.groups())
    cx, cy = (obj.box[0], obj.box[1]) if edges else (obj.cx, obj.cy)
    low, high = (1 / 3, 2 / 3) if thirds else (0.5, 0.5)
    wrong = False
    if column and horizontal:
        wrong |= not (cx < low) if (column == "left") != flip_x else not (cx > high)
    if row and vertical:
        wrong |= not (cy < low) if (row == "top") != flip_y else not (cy > high)
    return wrong != invert


def _region_cases() -> list[tuple[Any, str]]:
    """(context, sentence) pairs: true and false region claims, and sentences that make no claim to check."""
    from utils.instruct import ImageContext

    shapes = ImageContext("regions.png", ["a red circle, a blue square and a green triangle"], [
        ("red circle", (0.05, 0.05, 0.25, 0.25)),  # centre (0.15, 0.15): top left
        ("blue square", (0.70, 0.10, 0.95, 0.35)),  # centre (0.825, 0.225): top right
        ("green triangle", (0.40, 0.55, 0.70, 0.85)),  # centre (0.55, 0.70): bottom, just right of the middle
    ])
    tall = ImageContext("tall.png", ["a person next to a dog"], [("person", (0.1, 0.0, 0.45, 1.0)),  # centre (0.275, 0.5)
                                                                 ("dog", (0.6, 0.7, 0.9, 0.95))])
    sentences = [
        "The red circle is in the top left part of the picture.", "The red circle is in the bottom left part of the picture.",
        "The red circle is in the top right part of the picture.", "The red circle is near the top of the picture.",
        "The red circle is near the bottom of the picture.", "The red circle is on the left side of the picture.",
        "The red circle is on the right side of the picture.", "The blue square sits in the top right corner of the image.",
        "The blue square sits in the top left corner of the image.", "The blue square is near the bottom of the image.",
        "The green triangle is near the bottom of the picture.", "The green triangle is near the top of the picture.",
        "The green triangle is on the right side of the picture.", "The green triangle is on the left side of the picture.",
        "A green triangle is below the red circle, in the bottom right part of the picture.",
        "A green triangle is below the red circle, in the top right part of the picture.",
        "The red circle is above the green triangle, in the top left part of the picture.",
        "The red circle is to the left of the blue square.",  # a relation between objects, not a region
        "The red circle is not on the right side of the picture.",  # negated: no claim
        "The blue square is near the centre of the picture.",  # no region word this check reads
        "It sits in the bottom left part of the picture.",  # no noun phrase
        "The shapes are near the top of the picture.",  # names several objects
    ]
    cases = [(shapes, s) for s in sentences]
    cases += [(tall, "The person is on the left side of the image."), (tall, "The person is near the top of the image."),
              (tall, "The person is near the bottom of the image."), (tall, "The dog is in the bottom right part of the image."),
              (tall, "The dog is in the bottom left part of the image.")]
    return cases


def check_region_checker(checker_class: Any, quiet: bool = False) -> Verdict:
    """Exercise 4.3: a FactChecker subclass with a ``regions`` check, added through ``CHECKS``.

    A region claim is a match of :data:`REGION_PATTERN` ('in the top left part of the picture',
    'near the bottom of the image', 'on the right side of the picture') in a sentence without a
    negation, about the sentence's first noun phrase when it names exactly one object
    (``self._one(sentence.mentions[0])``). The claim is wrong when the box centre is not in the
    named half: 'left' needs cx < 0.5, 'right' cx > 0.5, 'top' cy < 0.5, 'bottom' cy > 0.5 (y grows
    downwards). Each problem starts with 'region:'; each claim checked adds 1 to ``self.checked["region"]``.
    """
    from utils.instruct import FactChecker

    mistakes = [
        ({"invert": True}, "you flag the true claims and pass the wrong ones: report a problem when the claim does "
                           "*not* hold"),
        ({"flip_y": True}, "top and bottom are swapped: y grows downwards in images, so 'top' means a small centre "
                           "y (cy < 0.5)"),
        ({"flip_x": True}, "left and right are swapped: 'left' means a small centre x (cx < 0.5)"),
        ({"vertical": False}, "check the horizontal word too: 'in the top left part' is wrong when the object is on "
                              "the right, even if it is at the top"),
        ({"horizontal": False}, "check the vertical word too: 'in the bottom left part' is wrong when the object is "
                                "at the top, even if it is on the left"),
        ({"negations": False}, "skip sentences with a negation (sentence.negated): 'not on the right side' claims "
                               "nothing about where the object is"),
        ({"last_mention": True}, "the claim is about the sentence's *first* noun phrase (sentence.mentions[0]), "
                                 "the subject: in 'a green triangle is below the red circle, in the bottom right "
                                 "part ...' the region describes the triangle"),
        ({"edges": True}, "use the box centre (obj.cx, obj.cy), not its top-left corner: a tall box touching the top "
                          "edge can still have its centre in the middle"),
        ({"thirds": True}, "a claim is wrong only when the centre lies outside the named *half* (compare with 0.5): "
                           "'on the right side' is a fair description of a centre at x = 0.55"),
    ]

    def test() -> None:
        expect(isinstance(checker_class, type) and issubclass(checker_class, FactChecker),
               f"pass your class itself, a subclass of FactChecker; got {checker_class!r}")
        expect(callable(getattr(checker_class, "check_regions", None)),
               "write the check as a method check_regions(self, sentence) -> list[str]")
        expect("regions" in checker_class.CHECKS,
               "list the new check where the checker looks for it: CHECKS = FactChecker.CHECKS + ('regions',)")
        expect(all(name in checker_class.CHECKS for name in FactChecker.CHECKS),
               "keep the existing checks: CHECKS = FactChecker.CHECKS + ('regions',), not ('regions',) alone")
        got, want, counted = [], [], []
        variants: dict[int, list[bool]] = {k: [] for k in range(len(mistakes))}
        for context, text in _region_cases():
            checker = checker_class(context)
            sentence = checker.analyse(text)
            problems = checker.check_regions(sentence)
            expect(isinstance(problems, list) and all(isinstance(p, str) for p in problems),
                   f"check_regions must return a list of strings (the problems found), got {problems!r}")
            expect(all(p.startswith("region:") for p in problems),
                   f"start every problem with its category, 'region: ...', so data-set statistics can count it; "
                   f"got {problems}")
            claim = _region_claim(checker, sentence)
            got.append(bool(problems))
            want.append(bool(claim))
            counted.append((text, claim is not None, checker.checked["region"]))
            for k, (switches, _) in enumerate(mistakes):
                variants[k].append(bool(_region_claim(checker, sentence, **switches)))
        if got != want:
            for k, (_, hint) in enumerate(mistakes):
                if got == variants[k]:
                    raise Wrong(hint)
            cases = _region_cases()
            i = next(i for i, (g, w) in enumerate(zip(got, want)) if g != w)
            objects = ", ".join(f"{o.label} centre ({o.cx:.2f}, {o.cy:.2f})" for o in cases[i][0].objects)
            raise Wrong(f"{cases[i][1]!r} ({objects}): you {'flagged' if got[i] else 'passed'} it, but it "
                        f"{'is wrong' if want[i] else 'makes no wrong region claim'}")
        uncounted = [text for text, is_claim, count in counted if is_claim and count == 0]
        if uncounted:
            raise Wrong(f"nothing was counted for {uncounted[0]!r}: add 1 to self.checked['region'] for every claim "
                        "you verify, so a clean report can be told from one where nothing was checkable")
        context, text = _region_cases()[1]
        expect(any(p.startswith("region:") for p in checker_class(context).check_text(text)),
               "check_text does not report the region problem: make sure CHECKS lists 'regions'")

    return run_check("4.3 (RegionChecker)", test, quiet=quiet)


# --- Chapter 5: diffusion models -----------------------------------------------------------------

def _diffusion_case(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A batch (x0, t, eps) and DDPM's linear betas, with steps that include both ends of the schedule."""
    generator = torch.Generator().manual_seed(seed)
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    x0 = torch.rand((5, 3, 4, 4), generator=generator, dtype=torch.float64) * 2 - 1
    eps = torch.randn((5, 3, 4, 4), generator=generator, dtype=torch.float64)
    return x0, torch.tensor([0, 1, 250, 600, 999]), eps, betas


def check_q_sample(q_sample: Callable, quiet: bool = False) -> Verdict:
    """Exercise 5.1: x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps for 0-based step indices t."""
    def test() -> None:
        x0, t, eps, betas = _diffusion_case()
        alpha_bars = torch.cumprod(1 - betas, 0)

        def closed_form(a: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
            a_t = a[steps].reshape(-1, 1, 1, 1)
            return torch.sqrt(a_t) * x0 + torch.sqrt(1 - a_t) * eps

        got = q_sample(x0.clone(), t.clone(), eps.clone(), betas.clone())
        want = closed_form(alpha_bars, t)
        expect(isinstance(got, torch.Tensor) and got.shape == x0.shape,
               f"return x_t with the shape of x0 {tuple(x0.shape)}, got {getattr(got, 'shape', type(got).__name__)}")
        if torch.allclose(got.double(), want, atol=1e-6):
            return
        a_t = alpha_bars[t].reshape(-1, 1, 1, 1)
        mistakes = [
            (a_t * x0 + (1 - a_t) * eps, "take square roots: x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps"),
            (closed_form(1 - betas, t), "use alpha_bar_t, the product of alpha_s = 1 - beta_s for s up to t, not alpha_t alone"),
            (closed_form(torch.cat([torch.ones(1, dtype=torch.float64), alpha_bars[:-1]]), t),
             "index t is the paper's step t + 1: alpha_bar for index t is the product of the first t + 1 alphas "
             "(torch.cumprod(1 - betas, 0)[t])"),
            (torch.sqrt(a_t) * x0 + torch.sqrt(1 - a_t) * eps * torch.sqrt(a_t), "the noise term is sqrt(1 - alpha_bar_t) eps, nothing more"),
        ]
        for wrong, hint in mistakes:
            if torch.allclose(got.double(), wrong, atol=1e-6):
                raise Wrong(hint)
        raise Wrong(f"x_t differs from the closed form (max abs difference {(got.double() - want).abs().max():.3g}); "
                    "compute alpha_bar = cumprod(1 - betas) and pick alpha_bar[t] per image")

    return run_check("5.1 (q_sample)", test, quiet=quiet)


def check_cosine_alpha_bars(cosine_alpha_bars: Callable, quiet: bool = False) -> Verdict:
    """Exercise 5.2: alpha_bar_t = f(t) / f(0), f(t) = cos^2(((t/T + s) / (1 + s)) pi/2), for t = 1..T."""
    import math

    def reference(T: int, s: float) -> torch.Tensor:
        f = lambda t: torch.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
        return f(torch.arange(1, T + 1, dtype=torch.float64)) / f(torch.zeros((), dtype=torch.float64))

    def test() -> None:
        for T, s in ((1000, 0.008), (50, 0.008), (10, 0.1)):
            got = cosine_alpha_bars(T, s)
            expect(isinstance(got, torch.Tensor) and got.shape == (T,),
                   f"return a tensor of shape ({T},) for T = {T}, got {getattr(got, 'shape', type(got).__name__)}")
            want = reference(T, s)
            if torch.allclose(got.double(), want, atol=1e-6):
                continue
            f = lambda t: torch.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
            steps = torch.arange(1, T + 1, dtype=torch.float64)
            if torch.allclose(got.double(), f(steps), atol=1e-6):
                raise Wrong("divide by f(0), so that alpha_bar would be exactly 1 at t = 0")
            if torch.allclose(got.double(), torch.cos((steps / T + s) / (1 + s) * math.pi / 2) / math.cos(s / (1 + s) * math.pi / 2), atol=1e-6):
                raise Wrong("square the cosine: f(t) = cos(...)^2")
            if torch.allclose(got.double(), f(steps - 1) / f(torch.zeros((), dtype=torch.float64)), atol=1e-6):
                raise Wrong("the values are for t = 1..T (torch.arange(1, T + 1)), not t = 0..T-1")
            raise Wrong(f"for T = {T}, s = {s} the values differ from the formula (max abs difference "
                        f"{(got.double() - want).abs().max():.3g})")

    return run_check("5.2 (cosine_alpha_bars)", test, quiet=quiet)


def check_posterior_mean(posterior_mean: Callable, quiet: bool = False) -> Verdict:
    """Exercise 5.3: the mean of q(x_{t-1} | x_t, x0) for one 0-based step index t."""
    from utils.diffusion import NoiseSchedule

    def test() -> None:
        x0, _, x_t, betas = _diffusion_case(1)
        schedule = NoiseSchedule(betas)
        for t in (0, 1, 500, 999):
            got = posterior_mean(x0.clone(), x_t.clone(), t, betas.clone())
            want, _ = schedule.posterior(x0, x_t, t)
            expect(isinstance(got, torch.Tensor) and got.shape == x0.shape,
                   f"return a tensor shaped like x_t {tuple(x0.shape)}, got {getattr(got, 'shape', type(got).__name__)}")
            if torch.allclose(got.double(), want, atol=1e-6):
                continue
            alpha, alpha_bar = 1 - betas, torch.cumprod(1 - betas, 0)
            prev = alpha_bar[t - 1] if t > 0 else torch.tensor(1.0, dtype=torch.float64)
            swapped = (torch.sqrt(alpha[t]) * (1 - prev) / (1 - alpha_bar[t])) * x0 + (torch.sqrt(prev) * betas[t] / (1 - alpha_bar[t])) * x_t
            no_sqrt = (prev * betas[t] / (1 - alpha_bar[t])) * x0 + (alpha[t] * (1 - prev) / (1 - alpha_bar[t])) * x_t
            if torch.allclose(got.double(), swapped, atol=1e-6):
                raise Wrong("the coefficients are swapped: sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t) multiplies x0")
            if torch.allclose(got.double(), no_sqrt, atol=1e-6):
                raise Wrong("take the square roots of alpha_bar_{t-1} and alpha_t in the two coefficients")
            hint = "at t = 0 use alpha_bar_{t-1} = 1 (nothing has been noised before the first step)" if t == 0 else \
                "alpha_bar_{t-1} is the product of the alphas before index t: cumprod(1 - betas)[t - 1]"
            raise Wrong(f"at t = {t} the mean differs from the posterior (max abs difference "
                        f"{(got.double() - want).abs().max():.3g}). {hint}")

    return run_check("5.3 (posterior_mean)", test, quiet=quiet)
