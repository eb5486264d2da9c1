"""Chapter 6's exercise checkers: grounding (location tokens, the prefix-LM mask, IoU, how many bins)
and evaluating emergent retrieval (caption-matched recall)."""

from __future__ import annotations

import math
import re
from typing import Any, Callable

import torch

from utils.checks.core import Verdict, Wrong, expect, run_check

# boxes whose coordinates are asymmetric in x and y and sit away from rounding ties
_BOXES = [(0.0, 0.0, 1.0, 1.0), (0.05, 0.1, 0.4, 0.5), (0.1, 0.2, 0.5, 0.8), (0.33, 0.07, 0.91, 0.6),
          (0.0004, 0.0012, 0.9996, 0.9991), (0.25, 0.6, 0.75, 1.0), (0.123, 0.456, 0.789, 0.987)]


def _locs(values: tuple[float, ...], to_bin: Callable[[float], int], digits: int = 4) -> str:
    return "".join(f"<loc{to_bin(v):0{digits}d}>" for v in values)


def _yx(box: tuple[float, ...]) -> tuple[float, ...]:
    x0, y0, x1, y1 = box
    return y0, x0, y1, x1


def _encode_mistake(box: tuple[float, ...], got: str) -> str | None:
    """The hint for a known wrong encoding of ``box``, if ``got`` is one."""
    right = lambda v: min(max(round(v * 1023), 0), 1023)  # noqa: E731
    mistakes = [
        (_locs(box, right), "PaliGemma writes y first: <loc y0><loc x0><loc y1><loc x1>, for a box (x0, y0, x1, y1)"),
        (_locs(_yx(box), lambda v: math.floor(v * 1023)),
         "round to the nearest bin, round(v * 1023); int() and floor() always round down"),
        (_locs(_yx(box), lambda v: min(math.floor(v * 1024), 1023)),
         "scale by bins - 1 = 1023 and round, round(v * 1023), so that 0 and 1 land exactly on bins 0 and 1023"),
        (_locs(_yx(box), lambda v: min(round(v * 1024), 1023)),
         "scale by bins - 1 = 1023, not 1024, so that 1.0 lands exactly on the last bin, 1023"),
        (_locs(_yx(box), right, digits=3),
         "write each bin with four digits: f'<loc{k:04d}>' (<loc0051>, not <loc051>)"),
    ]
    return next((hint for wrong, hint in mistakes if got == wrong), None)


def _check_encode(encode: Callable) -> None:
    for box in _BOXES:
        got = encode(box)
        expect(isinstance(got, str), f"encode must return a string such as '<loc0102><loc0051><loc0512><loc0409>', "
                                     f"got {type(got).__name__}")
        want = _locs(_yx(box), lambda v: min(max(round(v * 1023), 0), 1023))
        if got == want:
            continue
        hint = _encode_mistake(box, got)
        if hint:
            raise Wrong(f"for the box {box} you wrote {got!r}, expected {want!r}: {hint}")
        if re.search(r"<loc1024>", got):
            raise Wrong(f"for the box {box} you wrote {got!r}: bin 1024 does not exist (bins are 0..1023); "
                        "scale by 1023 and round, so that 1.0 lands on bin 1023")
        expect(re.fullmatch(r"(<loc\d{4}>){4}", got) is not None,
               f"for the box {box} you wrote {got!r}: write exactly four tokens <locNNNN>, nothing else, "
               f"as in {want!r}")
        raise Wrong(f"for the box {box} you wrote {got!r}, expected {want!r}: bin = round(v * 1023), in the order "
                    "y0, x0, y1, x1")


def _as_box(got: Any) -> Any:
    return got.tolist() if hasattr(got, "tolist") else got  # a tensor or an array of four numbers


def _check_decode(decode: Callable) -> None:
    right = lambda v: min(max(round(v * 1023), 0), 1023)  # noqa: E731
    got = _as_box(decode("<loc0000><loc0000><loc1023><loc1023>"))
    expect(isinstance(got, (tuple, list)) and len(got) == 4,
           f"decode must return a box (x0, y0, x1, y1) of four numbers, got {got!r}")
    full = tuple(float(v) for v in got)
    expect(max(abs(v - w) for v, w in zip(full, (0.0, 0.0, 1.0, 1.0))) < 1e-6,
           f"<loc0000><loc0000><loc1023><loc1023> is the whole image, (0, 0, 1, 1); you returned {full}. Bin k "
           "decodes to k / 1023, the centre of the values that round to k, so bin 1023 is exactly 1.0 "
           "(k / 1024 is off by up to a bin at the far edge; (k + 0.5) / 1024 is the centre of a bin of another width)")
    worst = 0.0
    for box in _BOXES + [tuple((k + s) / 1023 for k in (3, 5, 700, 900)) for s in (-0.49, 0.49)]:
        decoded = tuple(float(v) for v in _as_box(decode(_locs(_yx(box), right))))
        if max(abs(u - v) for u, v in zip(_yx(box), decoded)) < 0.5 / 1023 + 1e-9 and _yx(box) != box:
            raise Wrong("the string is y first (y0, x0, y1, x1), but decode must return the box as (x0, y0, x1, y1)")
        worst = max(worst, max(abs(u - v) for u, v in zip(box, decoded)))
    expect(worst <= 0.5 / 1023 + 1e-9,
           f"after encoding and decoding, a coordinate moved by {worst:.2e}, more than half a bin (0.5 / 1023 = "
           f"{0.5 / 1023:.2e}): decode bin k to exactly k / 1023, the centre of the values that round to it "
           "(not an edge of the bin, and not rounded)")


def check_loc_tokens(encode: Callable, decode: Callable, quiet: bool = False) -> Verdict:
    """Exercise 6.1: a box (x0, y0, x1, y1) to PaliGemma's '<loc y0><loc x0><loc y1><loc x1>' (1024 bins) and back."""
    def test() -> None:
        _check_encode(encode)
        _check_decode(decode)

    return run_check("6.1 (loc_tokens)", test, quiet=quiet)


def _reference_mask(types: torch.Tensor) -> torch.Tensor:
    """(B, L, L): the prefix sees the prefix; the suffix sees the prefix and its own past."""
    L = types.shape[-1]
    causal = torch.ones(L, L, dtype=torch.bool).tril()  # (L, L)
    prefix = types == 0  # (B, L)
    return (prefix[:, :, None] & prefix[:, None, :]) | ((types == 1)[:, :, None] & causal)


def _call_mask(build_mask: Callable, types: torch.Tensor) -> Any:
    """The learner's mask for a (B, L) batch, or stacked from (L,) rows if their function takes one row."""
    try:
        got = build_mask(types.clone())
        if isinstance(got, torch.Tensor) and tuple(got.shape) == (*types.shape, types.shape[1]):
            return got
        first_error = None
    except NotImplementedError:
        raise
    except Exception as exc:  # maybe it handles one (L,) row only
        first_error = exc
    try:
        rows = [build_mask(row.clone()) for row in types]
        if all(isinstance(r, torch.Tensor) and tuple(r.shape) == (types.shape[1],) * 2 for r in rows):
            return torch.stack(rows)
    except Exception:
        if first_error is not None:
            raise first_error
    if first_error is not None:
        raise first_error
    raise Wrong(f"for token_type_ids of shape {tuple(types.shape)} return a ({types.shape[0]}, L, L) mask (or (L, L) "
                f"for one (L,) row), with L = {types.shape[1]}; got {getattr(got, 'shape', type(got).__name__)}")


def _describe_first_difference(got: torch.Tensor, want: torch.Tensor, types: torch.Tensor) -> str:
    b, i, j = (int(v) for v in (got != want).nonzero()[0])
    part = lambda k: "prefix" if types[b, k] == 0 else "suffix"  # noqa: E731
    should = "may" if want[b, i, j] else "must not"
    return (f"in row {b} (token_type_ids {types[b].tolist()}), query {i} ({part(i)}) {should} attend key {j} "
            f"({part(j)}); mask[{i}, {j}] should be {bool(want[b, i, j])}")


def check_prefix_lm_mask(build_mask: Callable, quiet: bool = False) -> Verdict:
    """Exercise 6.2: PaliGemma's (B, L, L) boolean mask from token_type_ids (0 prefix, 1 suffix)."""
    def test() -> None:
        types = torch.tensor([[0, 0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 1, 1]])
        got = _call_mask(build_mask, types)
        if got.dtype != torch.bool:
            raise Wrong(f"return a torch.bool mask (True = query i may attend key j), got {got.dtype}; "
                        "compare with == or combine masks with & and |")
        want = _reference_mask(types)
        if torch.equal(got, want):
            return
        L = types.shape[1]
        causal = torch.ones(L, L, dtype=torch.bool).tril().expand_as(want)
        prefix, suffix = (types == 0), (types == 1)
        mistakes = [
            (causal, "your mask is fully causal: the prefix (image + prompt) attends in both directions, so an image "
                     "token also sees the prompt tokens after it"),
            (want.transpose(1, 2), "the mask is transposed: rows are queries and columns keys, mask[i, j] says "
                                   "whether query i may attend key j"),
            (want | (prefix[:, :, None] & suffix[:, None, :]),
             "prefix tokens must not see the suffix: the answer would leak into the tokens that predict it"),
            (want & ~(suffix[:, :, None] & prefix[:, None, :]),
             "a suffix (answer) token must see the whole prefix (image + prompt), and the answer up to itself"),
        ]
        for wrong, hint in mistakes:
            if torch.equal(got, wrong):
                raise Wrong(hint)
        raise Wrong(_describe_first_difference(got, want, types))

    return run_check("6.2 (prefix_lm_mask)", test, quiet=quiet)


_IOU_CASES = [  # (a, b, IoU), boxes (x0, y0, x1, y1)
    ((0.1, 0.1, 0.5, 0.5), (0.3, 0.3, 0.7, 0.7), 0.04 / 0.28),  # partial overlap
    ((0.2, 0.2, 0.6, 0.8), (0.2, 0.2, 0.6, 0.8), 1.0),  # the same box
    ((0.0, 0.0, 1.0, 1.0), (0.25, 0.25, 0.75, 0.75), 0.25),  # one inside the other
    ((0.0, 0.0, 0.2, 0.2), (0.5, 0.5, 0.9, 0.9), 0.0),  # apart diagonally
    ((0.0, 0.0, 0.2, 0.5), (0.4, 0.0, 0.8, 0.5), 0.0),  # apart side by side
    ((0.0, 0.0, 0.5, 1.0), (0.5, 0.0, 1.0, 1.0), 0.0),  # touching along an edge
    ((0.1, 0.5, 0.6, 0.9), (0.4, 0.1, 0.9, 0.7), 0.04 / 0.46),  # crossing corners
]


def _iou_variant(a: tuple, b: tuple, *, plus_one: float = 0.0, clamp: bool = True, subtract: bool = True,
                 smaller: bool = False) -> float:
    """IoU with one of the usual mistakes switched on."""
    w = min(a[2], b[2]) - max(a[0], b[0]) + plus_one
    h = min(a[3], b[3]) - max(a[1], b[1]) + plus_one
    inter = max(w, 0.0) * max(h, 0.0) if clamp else w * h
    area_a = (a[2] - a[0] + plus_one) * (a[3] - a[1] + plus_one)
    area_b = (b[2] - b[0] + plus_one) * (b[3] - b[1] + plus_one)
    if smaller:
        return inter / min(area_a, area_b)
    return inter / (area_a + area_b - (inter if subtract else 0.0))


def check_iou(iou_fn: Callable, quiet: bool = False) -> Verdict:
    """Exercise 6.3: intersection over union of two normalised boxes (x0, y0, x1, y1)."""
    mistakes = [
        (dict(subtract=False), "union = area(a) + area(b) - intersection: subtract the overlap, which the two areas "
                               "count twice (the same box must give 1, not 0.5)"),
        (dict(clamp=False), "clamp the overlap's width and height at 0 (max(0, ...)): boxes that do not overlap have "
                            "IoU 0, but two negative overlaps multiply to a positive 'intersection'"),
        (dict(plus_one=1.0), "no + 1: coordinates are continuous, so the width is x1 - x0 (the + 1 belongs to an old "
                             "convention for integer pixel boxes that include both end pixels)"),
        (dict(smaller=True), "divide by the union, not by the smaller box: a box inside another has IoU "
                             "area(small) / area(big), not 1"),
    ]

    def test() -> None:
        for a, b, want in _IOU_CASES:
            got = iou_fn(a, b)
            expect(isinstance(got, (int, float)) or (isinstance(got, torch.Tensor) and got.numel() == 1),
                   f"return one number, got {type(got).__name__}")
            got = float(got)
            if abs(got - want) < 1e-6:
                continue
            for kwargs, hint in mistakes:
                if abs(got - _iou_variant(a, b, **kwargs)) < 1e-6:
                    raise Wrong(f"iou({a}, {b}) = {got:.4g}, expected {want:.4g}: {hint}")
            raise Wrong(f"iou({a}, {b}) = {got:.4g}, expected {want:.4g}: IoU = intersection / (area(a) + area(b) "
                        "- intersection), with the overlap's width min(x1s) - max(x0s) clamped at 0")
        for a, b, _ in _IOU_CASES:
            expect(abs(float(iou_fn(b, a)) - float(iou_fn(a, b))) < 1e-9, f"iou(a, b) must equal iou(b, a); "
                                                                          f"it differs for a={a}, b={b}")

    return run_check("6.3 (iou)", test, quiet=quiet)


# ---------------------------------------------------------------- exercise 6.5: how many bins?

def _worst_iou(s: float, W: float, n: int) -> float:
    """The lowest IoU of a side-s box with itself read back from n bins: every coordinate off by
    half a bin, W / (2 (n - 1)) pixels, in each of the 16 combinations of directions."""
    d = W / (2 * (n - 1))
    worst = 1.0
    for signs in range(16):
        e = [d if signs >> i & 1 else -d for i in range(4)]
        x0, y0, x1, y1 = e[0], e[1], s + e[2], s + e[3]
        if x1 <= x0 or y1 <= y0:
            return 0.0
        inter = max(0.0, min(s, x1) - max(0.0, x0)) * max(0.0, min(s, y1) - max(0.0, y0))
        worst = min(worst, inter / (s * s + (x1 - x0) * (y1 - y0) - inter))
    return worst


def _reference_min_bins(s: float, W: float, min_iou: float) -> int:
    n = 2
    while _worst_iou(s, W, n) < min_iou:
        n += 1
    return n


_BIN_CASES = [(14.0, 64.0, 0.9), (23.0, 64.0, 0.5), (20.0, 224.0, 0.9), (50.0, 448.0, 0.95), (8.0, 64.0, 0.75)]


def check_min_bins(min_bins: Callable, quiet: bool = False) -> Verdict:
    """Exercise 6.5: the fewest bins that keep a side-s box at IoU >= min_iou after quantisation."""

    def test() -> None:
        for s, W, m in _BIN_CASES:
            want = _reference_min_bins(s, W, m)
            got = min_bins(s, W, m)
            expect(isinstance(got, int) or (hasattr(got, "is_integer") and float(got).is_integer()),
                   f"return a whole number of bins, got {got!r}")
            got = int(got)
            if got == want:
                continue
            full = math.ceil(W / (s * (1 - math.sqrt(m)) / 2)) + 1  # a whole bin of error instead of half
            hints = {
                want - 1: "off by one: n bins span n - 1 gaps (bin k is read as k / (n - 1)), so the half-bin "
                          "error is W / (2 (n - 1)); solve for n - 1, then add 1",
                math.ceil(W / (s * (1 - m))) + 1: "the worst case shrinks the box on both axes, so the IoU is an "
                                                   "area ratio, (1 - 2 delta / s) squared: take the square root of min_iou",
                full: "each coordinate is off by at most half a bin, not a whole one",
            }
            hint = hints.get(got, "the worst case is the box read back shrunk by half a bin on all four sides: "
                                  "IoU = (1 - 2 delta / s)^2 with delta = W / (2 (n - 1)) pixels")
            raise Wrong(f"for s = {s:g} px in W = {W:g} px at IoU >= {m}: {want} bins, you returned {got}. {hint}")
        expect(_worst_iou(14.0, 64.0, 32) < 0.9, "")  # the chapter's 32 bins do not reach 0.9 for small objects

    return run_check("6.5 (how many bins?)", test, quiet=quiet)


# ---------------------------------------------------------------- exercise 6.4: caption-matched recall

_CAPTIONS = ("a red circle", "a blue square", "a small green triangle", "a large yellow circle", "a purple square",
            "a red triangle", "a blue circle above a green square", "a small purple circle", "a green square",
            "a yellow triangle to the left of a red square")
_SEED = 4  # a case where every planted mistake gives a recall of its own at k = 1, 3 and 5


def _retrieval_case(seed: int = _SEED) -> tuple[torch.Tensor, list[str], list[str]]:
    """A (Q, G) = (40, 90) similarity where queries share captions with several gallery items.

    Query i's "own" item is gallery item i (same caption, scoring a little higher); the other items
    with that caption are just as right. Matching items score higher on average, so recall grows with
    k but stays below 1.
    """
    generator = torch.Generator().manual_seed(seed)
    G, Q = 90, 40
    gallery = [_CAPTIONS[int(i)] for i in torch.randint(len(_CAPTIONS), (G,), generator=generator)]
    queries = gallery[:Q]
    same = torch.tensor([[float(q == g) for g in gallery] for q in queries])  # (Q, G)
    own = torch.eye(Q, G)  # (Q, G): query i was made from gallery item i, which tends to score highest
    similarity = torch.randn(Q, G, generator=generator) + 0.8 * same + 0.6 * own  # (Q, G)
    return similarity, queries, gallery


def _hits(top: torch.Tensor, queries: list[str], gallery: list[str]) -> torch.Tensor:
    """(Q,) booleans: does row q of ``top`` (Q, k) hold a gallery index with query q's caption?"""
    return torch.tensor([any(gallery[j] == q for j in row) for q, row in zip(queries, top.tolist())])


def _planted_mistakes(S: torch.Tensor, queries: list[str], gallery: list[str], k: int) -> list[tuple[float, str]]:
    """The recall that each common mistake returns, with the hint that names it."""
    from utils.clip import caption_recall_at_k as reference

    Q, G = S.shape
    top = S.topk(k, dim=1).indices  # (Q, k)
    diagonal = (top == torch.arange(Q)[:, None]).any(dim=1).float().mean().item()
    lowest = _hits(S.topk(k, dim=1, largest=False).indices, queries, gallery).float().mean().item()
    by_gallery = _hits(S.T.topk(k, dim=1).indices, gallery, queries).float().mean().item()  # columns as queries
    matches = torch.tensor([[gallery[j] == q for j in row] for q, row in zip(queries, top.tolist())])  # (Q, k)
    mistakes = [
        (diagonal, "a hit is any retrieved item whose caption equals the query's, not only the item with the "
                   "query's own index (the diagonal): scenes that share a caption are equally right"),
        (lowest, "rank from the highest similarity down (topk, or argsort(descending=True)), not the lowest"),
        (_hits(top, queries, gallery).float().sum().item() / G,
         "average over the queries (divide by Q, the number of rows), not over the gallery"),
        (by_gallery, "each row of the similarity is a query: rank the gallery items of a row (dim=1) and average "
                     "over the queries, not over the gallery"),
        (matches.float().mean().item(), "a query counts once if any of its k best items matches (recall), "
                                        "not the share of its k items that match (precision)"),
    ]
    off_by_one = [reference(S, queries, gallery, j) if j else 0.0 for j in (k - 1, k + 1) if j <= G]  # top-0: no hits
    mistakes += [(value, "look at exactly the k best items (off by one)") for value in off_by_one]
    return mistakes


def check_caption_recall(recall_fn: Callable, quiet: bool = False) -> Verdict:
    """Exercise 6.4: caption-matched recall@k of a (Q, G) similarity, averaged over the Q queries."""
    from utils.clip import caption_recall_at_k as reference

    def test() -> None:
        S, queries, gallery = _retrieval_case()
        for k in (1, 3, 5):
            got = recall_fn(S.clone(), list(queries), list(gallery), k)
            expect(isinstance(got, (float, int)) or (isinstance(got, torch.Tensor) and got.numel() == 1),
                   f"return the recall as one number, got {type(got).__name__}")
            got, want = float(got), reference(S, queries, gallery, k)
            if abs(got - want) < 1e-6:
                continue
            for wrong, hint in _planted_mistakes(S, queries, gallery, k):
                if abs(got - wrong) < 1e-6:
                    raise Wrong(f"recall@{k} should be {want:.3f}, you returned {got:.3f}. {hint}")
            raise Wrong(f"recall@{k} should be {want:.3f}, you returned {got:.3f}. For each query (row), take the "
                        "k most similar gallery items; it is a hit if any has the query's caption; average the hits "
                        "over the queries")

    return run_check("6.4 (caption recall)", test, quiet=quiet)
