"""Chapter 3's exercise checkers: pass the solutions, say "not attempted" for the stubs, name each planted mistake."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.solutions import load
from utils import checks


def not_attempted(*args):
    raise NotImplementedError


def verdict_of(checker, answer) -> checks.Verdict:
    return checker(answer, quiet=True)


# --- Exercise 3.1: the ITG mask --------------------------------------------------------------------


def itg_solution(Q, L):
    allowed = torch.zeros(Q + L, Q + L, dtype=torch.bool)
    allowed[:, :Q] = True  # everyone sees the queries ...
    allowed[:Q, Q:] = False  # ... but the queries see no text
    allowed[Q:, Q:] = torch.tril(torch.ones(L, L, dtype=torch.bool))
    return allowed


def test_itg_mask_checker_accepts_bool_and_zero_one_answers(capsys: pytest.CaptureFixture) -> None:
    assert checks.check_itg_mask(itg_solution).passed
    assert "✅ Exercise 3.1 (itg_mask): passed" in capsys.readouterr().out
    assert verdict_of(checks.check_itg_mask, lambda Q, L: itg_solution(Q, L).long()).passed
    assert verdict_of(checks.check_itg_mask, lambda Q, L: itg_solution(Q, L).float()).passed
    assert verdict_of(checks.check_itg_mask, not_attempted).status == checks.NOT_ATTEMPTED


@pytest.mark.parametrize("planted, hint", [
    (lambda Q, L: ~itg_solution(Q, L), "the opposite"),
    (lambda Q, L: itg_solution(Q, L).T, "transpose"),
    (lambda Q, L: torch.cat([torch.ones(Q, Q + L, dtype=torch.bool), itg_solution(Q, L)[Q:]]), "must not see the text"),
    (lambda Q, L: torch.block_diag(torch.ones(Q, Q), torch.ones(L, L).tril()).bool(), "must see every query"),
    (lambda Q, L: torch.cat([itg_solution(Q, L)[:, :Q], torch.cat(
        [torch.zeros(Q, L), torch.ones(L, L).tril(-1)]).bool()], dim=1), "off by one"),
    (lambda Q, L: torch.cat([itg_solution(Q, L)[:, :Q], torch.cat(
        [torch.zeros(Q, L), torch.ones(L, L)]).bool()], dim=1), "must be causal"),
    (lambda Q, L: torch.cat([itg_solution(Q, L)[:, :Q], torch.cat(
        [torch.zeros(Q, L), torch.ones(L, L).triu()]).bool()], dim=1), "not upper"),
    (lambda Q, L: torch.zeros(Q + L, Q + L).masked_fill(~itg_solution(Q, L), float("-inf")), "additive mask"),
    (lambda Q, L: itg_solution(Q, L)[:Q], "(Q+L, Q+L)"),
    (lambda Q, L: itg_solution(Q, L).tolist(), "torch.Tensor"),
    (lambda Q, L: itg_solution(Q, L).float() * 2, "bools"),
])
def test_itg_mask_checker_names_the_mistake(planted, hint: str) -> None:
    verdict = verdict_of(checks.check_itg_mask, planted)
    assert verdict.status == checks.WRONG and hint in verdict.message, verdict.message


def test_itg_mask_checker_catches_queries_that_ignore_each_other() -> None:
    def diagonal_queries(Q, L):
        allowed = itg_solution(Q, L)
        allowed[:Q, :Q] = torch.eye(Q, dtype=torch.bool)
        return allowed

    verdict = verdict_of(checks.check_itg_mask, diagonal_queries)
    assert verdict.status == checks.WRONG and "queries see all the queries" in verdict.message


# --- Exercise 3.2: the chat prompt -----------------------------------------------------------------


def prompt_solution(history, question):
    if not question.strip():
        raise ValueError("empty question")
    turns = [f"Question: {q.strip()} Answer: {a.strip()}." for q, a in history]
    return " ".join(turns + [f"Question: {question.strip()} Answer:"])


def no_full_stop(history, question):
    return " ".join([f"Question: {q.strip()} Answer: {a.strip()}" for q, a in history]
                    + [f"Question: {question.strip()} Answer:"])


def newest_first(history, question):
    return prompt_solution(list(reversed(history)), question)


def no_trailing_answer(history, question):
    return prompt_solution(history, question)[: -len(" Answer:")]


def trailing_space(history, question):
    return prompt_solution(history, question) + " "


def unstripped(history, question):
    turns = [f"Question: {q} Answer: {a}." for q, a in history]
    return " ".join(turns + [f"Question: {question} Answer:"])


def newlines(history, question):
    return prompt_solution(history, question).replace(". Question", ".\nQuestion")


def accepts_empty(history, question):
    return " ".join([f"Question: {q.strip()} Answer: {a.strip()}." for q, a in history]
                    + [f"Question: {question.strip()} Answer:"])


def lower_case(history, question):
    return prompt_solution(history, question).replace("Question:", "question:")


def test_build_prompt_checker() -> None:
    from utils.chat import build_prompt

    assert verdict_of(checks.check_build_prompt, prompt_solution).passed
    assert verdict_of(checks.check_build_prompt, build_prompt).passed  # the library's own
    assert verdict_of(checks.check_build_prompt, not_attempted).status == checks.NOT_ATTEMPTED


@pytest.mark.parametrize("planted, hint", [
    (no_full_stop, "full stop"),
    (newest_first, "oldest first"),
    (no_trailing_answer, "end the prompt with 'Answer:'"),
    (trailing_space, "no space after the final 'Answer:'"),
    (unstripped, "strip the whitespace"),
    (newlines, "single spaces"),
    (accepts_empty, "must raise ValueError"),
    (lower_case, "each earlier turn is 'Question: {q} Answer: {a}.'"),
    (lambda history, question: None, "one string"),
])
def test_build_prompt_checker_names_the_mistake(planted, hint: str) -> None:
    verdict = verdict_of(checks.check_build_prompt, planted)
    assert verdict.status == checks.WRONG and hint in verdict.message, verdict.message


# --- Exercise 3.3: cross-attention ------------------------------------------------------------------


def cross_solution(queries, keys_values, Wq, Wk, Wv):
    q, k, v = queries @ Wq, keys_values @ Wk, keys_values @ Wv  # (B, Q, D), (B, N, D), (B, N, D)
    weights = torch.softmax(q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5, dim=-1)  # (B, Q, N)
    return weights @ v  # (B, Q, D)


def test_cross_attention_checker() -> None:
    assert verdict_of(checks.check_cross_attention, cross_solution).passed
    assert verdict_of(checks.check_cross_attention, not_attempted).status == checks.NOT_ATTEMPTED


def softmax_over_queries(queries, keys_values, Wq, Wk, Wv):
    q, k, v = queries @ Wq, keys_values @ Wk, keys_values @ Wv
    return torch.softmax(q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5, dim=-2) @ v


def unscaled(queries, keys_values, Wq, Wk, Wv):
    q, k, v = queries @ Wq, keys_values @ Wk, keys_values @ Wv
    return torch.softmax(q @ k.transpose(-2, -1), dim=-1) @ v


def divided_by_d(queries, keys_values, Wq, Wk, Wv):
    q, k, v = queries @ Wq, keys_values @ Wk, keys_values @ Wv
    return torch.softmax(q @ k.transpose(-2, -1) / q.shape[-1], dim=-1) @ v


def image_asks(queries, keys_values, Wq, Wk, Wv):
    return cross_solution(keys_values, queries, Wq, Wk, Wv)


def weights_swapped(queries, keys_values, Wq, Wk, Wv):
    return cross_solution(queries, keys_values, Wk, Wq, Wv)


def weights_transposed(queries, keys_values, Wq, Wk, Wv):
    return cross_solution(queries, keys_values, Wq.T, Wk.T, Wv.T)


def raw_values(queries, keys_values, Wq, Wk, Wv):
    q, k = queries @ Wq, keys_values @ Wk
    return torch.softmax(q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5, dim=-1) @ keys_values


def self_attention(queries, keys_values, Wq, Wk, Wv):
    return cross_solution(queries, queries, Wq, Wk, Wv)


@pytest.mark.parametrize("planted, hint", [
    (softmax_over_queries, "over the keys (the last axis"),
    (unscaled, "1/sqrt(D)"),
    (divided_by_d, "not by D"),
    (image_asks, "queries and keys are swapped"),
    (weights_swapped, "you swapped the two weight matrices"),
    (weights_transposed, "x @ W, not x @ W.T"),
    (raw_values, "not the raw keys_values"),
    (self_attention, "values differ from the reference"),
])
def test_cross_attention_checker_names_the_mistake(planted, hint: str) -> None:
    verdict = verdict_of(checks.check_cross_attention, planted)
    assert verdict.status == checks.WRONG and hint in verdict.message, verdict.message


def test_checkers_never_raise_on_crashing_answers() -> None:
    def crashes(*args):
        return [][1]

    for checker in (checks.check_itg_mask, checks.check_build_prompt, checks.check_cross_attention,
                    checks.check_itc_similarity, checks.check_splice_prompts):
        verdict = verdict_of(checker, crashes)
        assert verdict.status == checks.WRONG and "IndexError" in verdict.message


# --- Exercises 3.4-3.5: ITC's similarity, splicing the soft prompts ----------------------------------

SOLUTIONS = load("03_blip2_solutions", "itc_similarity", "splice_prompts")


def _cosines(query_feats, text_feat, dim=-1):
    return torch.einsum("bqd,md->bmq", F.normalize(query_feats, dim=dim), F.normalize(text_feat, dim=-1))  # (B, M, Q)


@pytest.mark.parametrize("planted, hint", [
    (lambda z, t: _cosines(z, t).mean(dim=-1), "you averaged the Q cosines"),
    (lambda z, t: F.normalize(F.normalize(z, dim=-1).mean(dim=1), dim=-1) @ F.normalize(t, dim=-1).T,
     "pooled the queries into one vector"),
    (lambda z, t: torch.einsum("bqd,md->bmq", z, t).max(dim=-1).values, "L2-normalise both"),
    (lambda z, t: torch.einsum("bqd,md->bmq", F.normalize(z, dim=-1), t).max(dim=-1).values,
     "normalise the text features too"),
    (lambda z, t: torch.einsum("bqd,md->bmq", z, F.normalize(t, dim=-1)).max(dim=-1).values,
     "normalise the query features too"),
    (lambda z, t: (F.normalize(z) @ F.normalize(t).T).max(dim=1).values, "F.normalize's default, dim=1"),
    (lambda z, t: _cosines(z, t), "shape (B, M, Q)"),
    (lambda z, t: _cosines(z, t).max(dim=1).values, "the max over the texts"),
    (lambda z, t: _cosines(z, t).max(dim=-1), "return its .values"),
    (lambda z, t: _cosines(z, t).max(dim=-1).values.T, "you returned the transpose"),
    (lambda z, t: _cosines(z, t).min(dim=-1).values, "not the worst (min)"),
    (lambda z, t: _cosines(z, t).max(dim=-1).values.tolist(), "torch.Tensor"),
    (lambda z, t: _cosines(z, t).max(dim=-1).values[:, :1], "shape (B, M)"),
    (lambda z, t: _cosines(z, t).max(dim=-1).values * 2, "values differ from the reference"),
])
def test_itc_similarity_checker_names_the_mistake(planted, hint: str) -> None:
    verdict = verdict_of(checks.check_itc_similarity, planted)
    assert verdict.status == checks.WRONG and hint in verdict.message, verdict.message


def test_itc_similarity_checker() -> None:
    from utils.qformer import itc_similarity

    assert verdict_of(checks.check_itc_similarity, SOLUTIONS["itc_similarity"]).passed
    assert verdict_of(checks.check_itc_similarity, itc_similarity).passed  # the library's own
    assert verdict_of(checks.check_itc_similarity, not_attempted).status == checks.NOT_ATTEMPTED


def splice_unchecked(inputs_embeds, input_ids, prompts, image_token_id):
    return inputs_embeds.masked_scatter((input_ids == image_token_id).unsqueeze(-1), prompts)


def _counted(splice):
    """``splice`` behind the right count check, so that a planted mistake shows on valid inputs."""
    def answer(inputs_embeds, input_ids, prompts, image_token_id):
        if ((input_ids == image_token_id).sum(dim=1) != prompts.shape[1]).any():  # every row must hold Q
            raise ValueError("count")
        return splice(inputs_embeds, input_ids, prompts, image_token_id)
    return answer


def checks_only_the_total(inputs_embeds, input_ids, prompts, image_token_id):
    if int((input_ids == image_token_id).sum()) != prompts.shape[0] * prompts.shape[1]:  # B*Q, but not per row
        raise ValueError("count")
    return splice_unchecked(inputs_embeds, input_ids, prompts, image_token_id)


def counts_per_image(inputs_embeds, input_ids, prompts, image_token_id):
    if int((input_ids == image_token_id).sum()) != prompts.shape[1]:  # Q, forgetting the B images
        raise ValueError("count")
    return splice_unchecked(inputs_embeds, input_ids, prompts, image_token_id)


def asserts_the_count(inputs_embeds, input_ids, prompts, image_token_id):
    assert int((input_ids == image_token_id).sum()) == prompts.shape[0] * prompts.shape[1]
    return splice_unchecked(inputs_embeds, input_ids, prompts, image_token_id)


def in_place(inputs_embeds, input_ids, prompts, image_token_id):
    return inputs_embeds.masked_scatter_((input_ids == image_token_id).unsqueeze(-1), prompts)


def assigned(inputs_embeds, input_ids, prompts, image_token_id):
    inputs_embeds[input_ids == image_token_id] = prompts.reshape(-1, prompts.shape[-1])
    return inputs_embeds


@pytest.mark.parametrize("planted, hint", [
    (splice_unchecked, "raise ValueError when the numbers differ"),
    (asserts_the_count, "raised AssertionError; raise ValueError"),
    (counts_per_image, "this input is valid"),
    (checks_only_the_total, "every row must hold exactly Q image tokens"),
    (_counted(in_place), "in place"),
    (_counted(assigned), "in place"),
    (_counted(lambda e, i, p, k: e.masked_scatter(i == k, p)), "unsqueeze(-1)"),
    (_counted(lambda e, i, p, k: splice_unchecked(e, i, p.transpose(0, 1).contiguous(), k)),
     "flatten them image by image"),
    (_counted(lambda e, i, p, k: splice_unchecked(e, i, p.flip(1), k)), "keep their order"),
    (_counted(lambda e, i, p, k: splice_unchecked(e, i, p[:1].expand_as(p).contiguous(), k)), "every row got image 0's"),
    (_counted(lambda e, i, p, k: e.masked_scatter((i != k).unsqueeze(-1), torch.zeros_like(e))), "unchanged"),
    (_counted(lambda e, i, p, k: splice_unchecked(e, i, p, k)[:, 1:]), "shape (B, T, H)"),
    (_counted(lambda e, i, p, k: splice_unchecked(e, i, p * 2, k)), "k-th of the B*Q prompt vectors"),
])
def test_splice_prompts_checker_names_the_mistake(planted, hint: str) -> None:
    verdict = verdict_of(checks.check_splice_prompts, planted)
    assert verdict.status == checks.WRONG and hint in verdict.message, verdict.message


@pytest.fixture(scope="module")
def tiny_blip2():
    from transformers import AutoProcessor, Blip2ForConditionalGeneration

    from utils import zoo

    folder = zoo.path("blip2", mode="tiny")
    return Blip2ForConditionalGeneration.from_pretrained(folder, dtype=torch.float32).eval(), \
        AutoProcessor.from_pretrained(folder)


def test_splice_prompts_checker_runs_the_answer_inside_the_model(tiny_blip2) -> None:
    model, processor = tiny_blip2
    solution = SOLUTIONS["splice_prompts"]
    assert checks.check_splice_prompts(solution, model, processor, quiet=True).passed
    assert checks.check_splice_prompts(not_attempted, model, processor, quiet=True).status == checks.NOT_ATTEMPTED

    def off_by_one(inputs_embeds, input_ids, prompts, image_token_id):  # right on small random inputs only
        if inputs_embeds.shape[-1] < 8:
            return solution(inputs_embeds, input_ids, prompts, image_token_id)
        return solution(inputs_embeds, input_ids, prompts.roll(1, dims=1), image_token_id)

    verdict = checks.check_splice_prompts(off_by_one, model, processor, quiet=True)
    assert verdict.status == checks.WRONG and "away from model(...)'s" in verdict.message, verdict.message
