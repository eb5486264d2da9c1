"""Chapter 6's checkers pass correct answers, wait for the stubs and name the planted mistakes."""

from __future__ import annotations

import math
import re

import pytest
import torch

from utils import checks


# ---------------------------------------------------------------- reference answers, written as a learner would

def encode(box):
    x0, y0, x1, y1 = box
    return "".join(f"<loc{min(round(v * 1023), 1023):04d}>" for v in (y0, x0, y1, x1))


def decode(text):
    y0, x0, y1, x1 = (int(k) / 1023 for k in re.findall(r"<loc(\d{4})>", text))
    return x0, y0, x1, y1


def build_mask(token_type_ids):  # (B, L) -> (B, L, L)
    L = token_type_ids.shape[-1]
    prefix = token_type_ids == 0
    causal = torch.tril(torch.ones(L, L, dtype=torch.bool))
    return (prefix[:, :, None] & prefix[:, None, :]) | ((token_type_ids == 1)[:, :, None] & causal)


def build_one_mask(token_type_ids):  # (L,) -> (L, L), one row at a time
    L = len(token_type_ids)
    return torch.tensor([[bool(t_i == 0 and t_j == 0) or (t_i == 1 and j <= i)
                          for j, t_j in enumerate(token_type_ids.tolist())]
                         for i, t_i in enumerate(token_type_ids.tolist())])


def iou(a, b):
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def stub(*args, **kwargs):
    raise NotImplementedError


def test_solutions_pass() -> None:
    from utils import grounding

    assert checks.check_loc_tokens(encode, decode, quiet=True).passed
    assert checks.check_loc_tokens(encode, lambda text: torch.tensor(decode(text)), quiet=True).passed
    assert checks.check_loc_tokens(grounding.loc_tokens,  # the library's own functions pass too
                                   lambda text: grounding.parse_detections(text + " x")[0][0], quiet=True).passed
    assert checks.check_prefix_lm_mask(build_mask, quiet=True).passed
    assert checks.check_prefix_lm_mask(build_one_mask, quiet=True).passed
    assert checks.check_prefix_lm_mask(grounding.prefix_lm_mask, quiet=True).passed
    assert checks.check_iou(iou, quiet=True).passed
    assert checks.check_iou(grounding.iou, quiet=True).passed
    assert checks.check_iou(lambda a, b: grounding.box_iou(torch.tensor([a]), torch.tensor([b]))[0, 0],
                            quiet=True).passed


def test_stubs_are_not_attempted() -> None:
    assert checks.check_loc_tokens(stub, stub, quiet=True).status == checks.NOT_ATTEMPTED
    assert checks.check_loc_tokens(encode, stub, quiet=True).status == checks.NOT_ATTEMPTED
    assert checks.check_prefix_lm_mask(stub, quiet=True).status == checks.NOT_ATTEMPTED
    assert checks.check_iou(stub, quiet=True).status == checks.NOT_ATTEMPTED


def test_a_passing_check_prints_its_verdict(capsys) -> None:
    checks.check_iou(iou)
    assert "Exercise 6.3 (iou): passed" in capsys.readouterr().out


# ---------------------------------------------------------------- 6.1 location tokens

def _encoder(to_bin, order="yx", digits=4):
    def wrong_encode(box):
        x0, y0, x1, y1 = box
        values = (y0, x0, y1, x1) if order == "yx" else (x0, y0, x1, y1)
        return "".join(f"<loc{to_bin(v):0{digits}d}>" for v in values)
    return wrong_encode


def _decoder(from_bin, order="yx"):
    def wrong_decode(text):
        a, b, c, d = (from_bin(int(k)) for k in re.findall(r"<loc(\d+)>", text))
        return (b, a, d, c) if order == "yx" else (a, b, c, d)
    return wrong_decode


@pytest.mark.parametrize("wrong, phrase", [
    (_encoder(lambda v: round(v * 1023), order="xy"), "y first"),
    (_encoder(lambda v: math.floor(v * 1023)), "round to the nearest bin"),
    (_encoder(lambda v: min(math.floor(v * 1024), 1023)), "scale by bins - 1 = 1023"),
    (_encoder(lambda v: min(round(v * 1024), 1023)), "not 1024"),
    (_encoder(lambda v: math.floor(v * 1024)), "bin 1024 does not exist"),  # forgot to clip 1.0
    (_encoder(lambda v: round(v * 1023), digits=3), "four digits"),
    (lambda box: encode(box) + " ", "exactly four tokens"),
])
def test_encode_mistakes_are_named(wrong, phrase: str) -> None:
    verdict = checks.check_loc_tokens(wrong, decode, quiet=True)
    assert verdict.status == checks.WRONG and phrase in verdict.message, verdict


@pytest.mark.parametrize("wrong, phrase", [
    (_decoder(lambda k: k / 1024), "k / 1023"),  # divides by 1024
    (_decoder(lambda k: (k + 0.5) / 1024), "k / 1023"),  # the centre of a 1024-wide grid
    (_decoder(lambda k: (k - 0.5) / 1023), "k / 1023"),  # the bin's lower edge
    (_decoder(lambda k: k / 1023, order="xy"), "must return the box as (x0, y0, x1, y1)"),
    (_decoder(lambda k: round(k / 1023, 3)), "more than half a bin"),  # exact at the ends, off in the middle
    (lambda text: decode(text)[:3], "four numbers"),
])
def test_decode_mistakes_are_named(wrong, phrase: str) -> None:
    verdict = checks.check_loc_tokens(encode, wrong, quiet=True)
    assert verdict.status == checks.WRONG and phrase in verdict.message, verdict


# ---------------------------------------------------------------- 6.2 prefix-LM mask

def test_mask_mistakes_are_named() -> None:
    def fully_causal(t):
        L = t.shape[-1]
        return torch.tril(torch.ones(L, L, dtype=torch.bool)).expand(t.shape[0], L, L)

    def suffix_blind_to_prefix(t):
        return build_mask(t) & ~((t == 1)[:, :, None] & (t == 0)[:, None, :])

    def prefix_sees_suffix(t):
        return build_mask(t) | ((t == 0)[:, :, None] & (t == 1)[:, None, :])

    def transposed(t):
        return build_mask(t).transpose(1, 2)

    def everything(t):
        return torch.ones(t.shape[0], t.shape[1], t.shape[1], dtype=torch.bool)

    def floats(t):
        return build_mask(t).float()

    for wrong, phrase in ((fully_causal, "fully causal"), (suffix_blind_to_prefix, "must see the whole prefix"),
                          (prefix_sees_suffix, "must not see the suffix"), (transposed, "transposed"),
                          (everything, "must not attend key"), (floats, "torch.bool")):
        verdict = checks.check_prefix_lm_mask(wrong, quiet=True)
        assert verdict.status == checks.WRONG and phrase in verdict.message, (wrong.__name__, verdict)


def test_mask_of_the_wrong_shape_is_explained() -> None:
    verdict = checks.check_prefix_lm_mask(lambda t: build_mask(t)[0], quiet=True)
    assert verdict.status == checks.WRONG and "(3, L, L) mask" in verdict.message, verdict
    verdict = checks.check_prefix_lm_mask(lambda t: 1 / 0, quiet=True)
    assert verdict.status == checks.WRONG and "ZeroDivisionError" in verdict.message, verdict


# ---------------------------------------------------------------- 6.3 IoU

def test_iou_mistakes_are_named() -> None:
    def no_subtraction(a, b):
        w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        return w * h / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]))

    def no_clamp(a, b):
        w = min(a[2], b[2]) - max(a[0], b[0])
        h = min(a[3], b[3]) - max(a[1], b[1])
        return w * h / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h)

    def plus_one(a, b):
        w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]) + 1)
        h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]) + 1)
        area = lambda r: (r[2] - r[0] + 1) * (r[3] - r[1] + 1)  # noqa: E731
        return w * h / (area(a) + area(b) - w * h)

    def by_smaller(a, b):
        w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        return w * h / min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))

    def lopsided(a, b):  # right on symmetric cases, wrong when a and b swap
        return iou(a, b) if a <= b else iou(a, b) * 1.0001 + 1e-3

    for wrong, phrase in ((no_subtraction, "subtract the overlap"), (no_clamp, "clamp the overlap"),
                          (plus_one, "no + 1"), (by_smaller, "divide by the union"),
                          (lambda a, b: 0.5, "IoU = intersection / (area(a) + area(b) - intersection)"),
                          (lambda a, b: "0.5", "return one number"),
                          (lopsided, "must equal iou(b, a)")):
        verdict = checks.check_iou(wrong, quiet=True)
        assert verdict.status == checks.WRONG and phrase in verdict.message, (getattr(wrong, "__name__", wrong), verdict)


# ---------------------------------------------------------------- exercise 6.5: how many bins?

def test_min_bins_solution_passes_and_stub_waits() -> None:
    from tests.solutions import load

    min_bins = load("06_beyond_text_solutions", "min_bins")["min_bins"]
    assert checks.check_min_bins(min_bins, quiet=True).passed
    assert min_bins(14, 64, 0.9) == 91

    def stub(s, W, m):
        raise NotImplementedError

    assert checks.check_min_bins(stub, quiet=True).status == checks.NOT_ATTEMPTED


@pytest.mark.parametrize("wrong, hint", [
    (lambda s, W, m: math.ceil(W / (s * (1 - math.sqrt(m)))), "off by one"),
    (lambda s, W, m: math.ceil(W / (s * (1 - m))) + 1, "square root"),
    (lambda s, W, m: math.ceil(2 * W / (s * (1 - math.sqrt(m)))) + 1, "half a bin"),
    (lambda s, W, m: 32, "worst case is the box read back shrunk"),
    (lambda s, W, m: W / (s * (1 - math.sqrt(m))) + 1, "whole number"),
])
def test_min_bins_mistakes_are_named(wrong, hint) -> None:
    verdict = checks.check_min_bins(wrong, quiet=True)
    assert verdict.status == checks.WRONG and hint in verdict.message, verdict.message
