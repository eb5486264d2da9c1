"""Chapter 3's exercise checkers: BLIP-2, the Q-Former and chat."""

from __future__ import annotations

from typing import Any, Callable

import torch

from utils.checks.core import Verdict, Wrong, expect, expect_close, run_check


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
