"""Chapter 3's exercise checkers: BLIP-2, the Q-Former and chat."""

from __future__ import annotations

from typing import Any, Callable

import torch

from utils.checks.core import Verdict, Wrong, expect, expect_close, reject_known_mistakes, run_check


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
                reject_known_mistakes(got, diagnoses, sizes, atol=1e-4)
            expect_close(got, want, sizes + "softmax((queries @ Wq) @ (keys_values @ Wk).transpose(-2, -1) / sqrt(D), "
                         "dim=-1) @ (keys_values @ Wv)", atol=1e-4)

    return run_check("3.3 (cross_attention)", test, quiet=quiet)


# --- Exercise 3.4: ITC's similarity, the best of the queries ---------------------------------------


def check_itc_similarity(itc_similarity: Callable, quiet: bool = False) -> Verdict:
    """Exercise 3.4: ITC's image-text similarity s_ij = max_q cos(z_iq, t_j).

    ``itc_similarity(query_feats (B, Q, d), text_feat (M, d)) -> (B, M)``: both L2-normalised along
    d, every query of image i compared with text j, the best query kept. M need not equal B.
    """
    import torch.nn.functional as F

    from utils.qformer import itc_similarity as reference

    def test() -> None:
        generator = torch.Generator().manual_seed(34)
        for B, Q, d, M in ((2, 4, 8, 2), (3, 5, 6, 7), (4, 3, 16, 1), (2, 6, 4, 6)):  # M != B; the last has Q = M
            lengths = torch.rand(B, Q, 1, generator=generator) * 4 + 0.2  # unequal lengths: normalising matters
            z = torch.randn(B, Q, d, generator=generator) * lengths  # (B, Q, d)
            t = torch.randn(M, d, generator=generator) * (torch.rand(M, 1, generator=generator) * 4 + 0.2)  # (M, d)
            want = reference(z, t)  # (B, M)
            got = itc_similarity(z.clone(), t.clone())
            sizes = f"for query_feats of shape {(B, Q, d)} and text_feat of shape {(M, d)}: "
            if isinstance(got, tuple) and hasattr(got, "indices"):
                raise Wrong(sizes + "torch.max(x, dim=...) returns a pair (values, indices): return its .values")
            expect(isinstance(got, torch.Tensor), sizes + f"return a torch.Tensor, got {type(got).__name__}")
            got = got.detach().float()
            zn, tn = F.normalize(z, dim=-1), F.normalize(t, dim=-1)
            per_query = torch.einsum("bqd,md->bmq", zn, tn)  # (B, M, Q): cos(z_iq, t_j)
            if got.shape == (B, M, Q):
                raise Wrong(sizes + f"you returned every query's cosine, shape (B, M, Q) = {(B, M, Q)}; keep only "
                            "the best query for each image-text pair: the max over the Q axis")
            if got.shape == (M, B) and M != B:
                raise Wrong(sizes + f"one row per image and one column per text, (B, M) = {(B, M)}; you returned "
                            f"the transpose, {(M, B)}")
            over_texts = per_query.max(dim=1).values  # (B, Q): the best text for each query
            if got.shape == over_texts.shape and torch.allclose(got, over_texts, atol=1e-5):
                raise Wrong(sizes + "you took the max over the texts; take it over the queries, so that each "
                            "(image, text) pair keeps the query that matches that text best -- result (B, M)")
            expect(got.shape == (B, M), sizes + f"return one score per image and text, shape (B, M) = {(B, M)}, "
                   f"got {tuple(got.shape)}")
            if torch.allclose(got, want, atol=1e-5):
                continue
            slips = [
                (per_query.mean(dim=-1), "you averaged the Q cosines; BLIP-2 keeps the best one (max over the "
                 "queries), so that one query that matches the text speaks for the image"),
                (F.normalize(zn.mean(dim=1), dim=-1) @ tn.T, "you pooled the queries into one vector (their mean) "
                 "before comparing; compare every query with the text and keep the best cosine"),
                (torch.einsum("bqd,md->bmq", z, t).max(dim=-1).values, "L2-normalise both the query features and "
                 "the text features along d first: s_ij is a cosine, in [-1, 1]"),
                (torch.einsum("bqd,md->bmq", zn, t).max(dim=-1).values, "normalise the text features too "
                 "(F.normalize(text_feat, dim=-1))"),
                (torch.einsum("bqd,md->bmq", z, tn).max(dim=-1).values, "normalise the query features too "
                 "(F.normalize(query_feats, dim=-1))"),
                (torch.einsum("bqd,md->bmq", F.normalize(z, dim=1), tn).max(dim=-1).values, "normalise each vector "
                 "along its feature axis d (dim=-1); F.normalize's default, dim=1, is the query axis of a (B, Q, d) "
                 "tensor"),
                (per_query.min(dim=-1).values, "keep the best-matching query (max), not the worst (min)"),
            ]
            if M == B:
                slips.append((want.T, "one row per image and one column per text; you returned the transpose"))
            reject_known_mistakes(got, slips, sizes, atol=1e-5)
            expect_close(got, want, sizes + "s_ij = max over q of cos(z_iq, t_j): normalise both along d, compare "
                         "every query of image i with text j, keep the best", atol=1e-5)

    return run_check("3.4 (itc_similarity)", test, quiet=quiet)


# --- Exercise 3.5: splicing the soft prompts into the LLM's input ----------------------------------


def _splice_loop(inputs_embeds: torch.Tensor, input_ids: torch.Tensor, prompts: torch.Tensor,
                 image_token_id: int) -> torch.Tensor:
    """The k-th image-token position of the batch (row by row, left to right) gets the k-th prompt vector."""
    out = inputs_embeds.clone()  # (B, T, H)
    flat = prompts.reshape(-1, prompts.shape[-1])  # (B*Q, H): image 0's Q prompts, then image 1's, ...
    k = 0
    for b in range(input_ids.shape[0]):
        for t in range(input_ids.shape[1]):
            if input_ids[b, t] == image_token_id:
                out[b, t] = flat[k]
                k += 1
    return out


def _splice_cases(generator: torch.Generator, image_token_id: int) -> list[tuple[torch.Tensor, ...]]:
    """(inputs_embeds, input_ids, prompts): the processor's layout (Q slots first), and slots scattered over a row."""
    cases = []
    for B, T, Q, H, slots in ((2, 7, 3, 5, [[0, 1, 2], [0, 1, 2]]),
                              (3, 9, 2, 4, [[1, 4], [0, 8], [5, 6]]),
                              (1, 6, 4, 3, [[0, 1, 2, 3]])):
        ids = torch.randint(0, 40, (B, T), generator=generator)  # (B, T) ordinary tokens ...
        ids[ids == image_token_id] += 1
        for b, row in enumerate(slots):
            ids[b, row] = image_token_id
        cases.append((torch.randn(B, T, H, generator=generator), ids, torch.randn(B, Q, H, generator=generator)))
    return cases


def check_splice_prompts(splice_prompts: Callable, model: Any = None, processor: Any = None,
                         quiet: bool = False) -> Verdict:
    """Exercise 3.5: the soft prompts into the LLM's input embeddings at the image-token positions.

    ``splice_prompts(inputs_embeds (B, T, H), input_ids (B, T), prompts (B, Q, H), image_token_id)``
    returns a new (B, T, H) tensor; the k-th image-token position of the batch, row by row, gets the
    k-th of the B*Q prompt vectors (image 0's Q first); a row that does not hold exactly Q image tokens
    raises ValueError, even when the total is B*Q (vectors would cross images). Given a
    BLIP-2 ``model`` and its ``processor``, the spliced embeddings must also reproduce ``model(...)``'s
    logits on two held-out scenes.
    """
    image_token_id = 7  # in the random inputs; the model's own below

    def call(embeds: torch.Tensor, ids: torch.Tensor, prompts: torch.Tensor, where: str) -> Any:
        """The learner's answer on a valid input, with the input checked for changes afterwards."""
        before = embeds.clone()
        try:
            got = splice_prompts(embeds, ids.clone(), prompts.clone(), image_token_id)
        except ValueError as exc:
            raise Wrong(where + f"this input is valid but your code raised ValueError ({exc}): each of its "
                        f"{ids.shape[0]} rows holds Q = {prompts.shape[1]} image tokens, for the B*Q = "
                        f"{prompts.shape[0]} x {prompts.shape[1]} prompt vectors; count the image-token positions "
                        "of each row and compare with Q") from None
        except RuntimeError as exc:  # a stub's NotImplementedError is a RuntimeError too: re-raised below
            if "broadcast" in str(exc) or "must match the size" in str(exc):
                raise Wrong(where + f"masked_scatter failed ({exc}): the mask must broadcast over the hidden "
                            "axis, so give it shape (B, T, 1): (input_ids == image_token_id).unsqueeze(-1)") from None
            raise
        if not torch.equal(embeds, before):
            raise Wrong(where + "your code changed inputs_embeds in place; return a new tensor (masked_scatter, not "
                        "masked_scatter_ or an assignment into inputs_embeds): the caller may still need the "
                        "original embeddings")
        return got

    def test() -> None:
        generator = torch.Generator().manual_seed(35)
        for embeds, ids, prompts in _splice_cases(generator, image_token_id):
            (B, T, H), Q = embeds.shape, prompts.shape[1]
            where = f"for B={B} rows of T={T} tokens with Q={Q} prompt vectors per image (H={H}): "
            got = call(embeds, ids, prompts, where)
            expect(isinstance(got, torch.Tensor), where + f"return a torch.Tensor, got {type(got).__name__}")
            expect(got.shape == embeds.shape, where + f"return the embeddings with the prompts spliced in, shape "
                   f"(B, T, H) = {(B, T, H)}, got {tuple(got.shape)}")
            slots = ids == image_token_id  # (B, T)
            if not torch.equal(got[~slots], embeds[~slots]):
                raise Wrong(where + "positions that hold no image token must come back unchanged; only the "
                            "image-token positions (input_ids == image_token_id) receive prompt vectors")
            want = _splice_loop(embeds, ids, prompts, image_token_id)
            if torch.allclose(got, want, atol=1e-6):
                continue
            slips = [
                (_splice_loop(embeds, ids, prompts.transpose(0, 1), image_token_id), "the prompt vectors went in "
                 "query by query across the images; flatten them image by image -- prompts (B, Q, H) read as "
                 "(B*Q, H), all Q of image 0 first -- which is the order masked_scatter reads a contiguous "
                 "(B, Q, H) tensor in"),
                (_splice_loop(embeds, ids, prompts.flip(1), image_token_id), "the Q prompt vectors of each image "
                 "must keep their order: query k goes to the k-th image token of its row"),
                (_splice_loop(embeds, ids, prompts[:1].expand(B, -1, -1), image_token_id), "every row got image 0's "
                 "prompts; row b takes image b's"),
            ]
            reject_known_mistakes(got, slips, where, atol=1e-6)
            expect_close(got, want, where + "the k-th image-token position of the batch (row by row, left to "
                         "right) gets the k-th of the B*Q prompt vectors", atol=1e-6)

        # A count that does not match is an error, both ways round; so is a right total in wrong rows.
        embeds, ids, prompts = _splice_cases(generator, image_token_id)[0]  # each row: Q image tokens, then text
        B, Q = prompts.shape[:2]
        too_few, too_many, uneven = ids.clone(), ids.clone(), ids.clone()
        too_few[0, 0] = image_token_id + 1  # an ordinary token where an image token was
        too_many[0, -1] = image_token_id  # an image token where an ordinary one was
        uneven[0, -1], uneven[1, 0] = image_token_id, image_token_id + 1  # row 0: Q + 1, row 1: Q - 1
        for change, bad in ((f"one image token too few ({B * Q - 1} for {B * Q} prompt vectors)", too_few),
                            (f"one image token too many ({B * Q + 1} for {B * Q} prompt vectors)", too_many),
                            (f"Q + 1 = {Q + 1} image tokens in row 0 and Q - 1 = {Q - 1} in row 1 ({B * Q} in all, "
                             f"for {B} x {Q} prompt vectors)", uneven)):
            try:
                splice_prompts(embeds.clone(), bad, prompts.clone(), image_token_id)
            except ValueError:
                continue
            except NotImplementedError:
                raise
            except RuntimeError as exc:
                raise Wrong(f"with {change} masked_scatter raised RuntimeError ({exc}); count the positions "
                            "yourself first and raise a ValueError that gives both numbers") from None
            except Exception as exc:  # an assert, or another exception type
                raise Wrong(f"with {change} your code raised {type(exc).__name__}; raise ValueError, the error for "
                            "an argument of the right type and the wrong value") from None
            if bad is uneven:
                raise Wrong(f"with {change} your code returned a result; the total is right, but every row must "
                            "hold exactly Q image tokens -- count them row by row and raise ValueError naming the "
                            "row that does not: masked_scatter reads the prompts as one stream, so row 0 took image "
                            "1's first prompt vector")
            raise Wrong(f"with {change} your code returned a result; raise ValueError when the numbers differ -- "
                        "masked_scatter silently drops prompt vectors it has no position for")

        if model is not None:
            _check_inside_model(splice_prompts, model, processor)

    return run_check("3.5 (splice_prompts)", test, quiet=quiet)


def _check_inside_model(splice_prompts: Callable, model: Any, processor: Any) -> None:
    """The learner's splice in a BLIP-2's own forward pass: the logits must equal ``model(...)``'s."""
    from utils import blip2
    from utils.claims import rounding
    from utils.shapes import make_scene

    scenes = [make_scene(k, seed=35, split="test") for k in range(2)]
    prompt = "Question: What colour is the circle? Answer:"
    inputs = processor(images=[s.render() for s in scenes], text=[prompt] * 2, return_tensors="pt").to(model.device)
    inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)  # (2, C, S, S); input_ids (2, Q + L)
    ids = inputs["input_ids"]
    with torch.no_grad():
        features = model.vision_model(pixel_values=inputs["pixel_values"]).last_hidden_state  # (2, 1 + N, E)
        prompts = blip2.queries_to_prompts(model, features.to(model.qformer.dtype))  # (2, Q, H)
        embeds = model.get_input_embeddings()(ids)  # (2, Q + L, H)
        spliced = splice_prompts(embeds, ids, prompts, model.config.image_token_index)
        expect(isinstance(spliced, torch.Tensor) and spliced.shape == embeds.shape,
               f"inside the model your function should return the (B, T, H) = {tuple(embeds.shape)} embeddings")
        logits = model.language_model(inputs_embeds=spliced, attention_mask=inputs["attention_mask"]).logits
        want = model(**inputs).logits  # (2, Q + L, V)
    tolerance = rounding(model.dtype)
    worst = (logits.float() - want.float()).abs().max().item()
    expect(worst <= tolerance, f"on two held-out scenes, the language model run on your spliced embeddings gives "
           f"logits up to {worst:.3g} away from model(...)'s (tolerance {tolerance:g})")
