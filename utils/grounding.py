"""Grounding (chapter 6): boxes written as tokens, how well boxes overlap, and the prefix-LM mask.

Conventions: a box is ``(x0, y0, x1, y1)`` normalised to [0, 1], with y pointing down as in image
coordinates (the convention of :attr:`utils.shapes.ShapeObject.box`). ``image_size`` is a side in
pixels, or ``(W, H)`` where the image is not square.

Two ways a language model writes a box:

* **PaliGemma** adds 1024 location tokens ``<loc0000>`` ... ``<loc1023>`` and writes a box as four
  of them, **y first**: ``<loc y0><loc x0><loc y1><loc x1> label``; detections are joined with
  ``" ; "``. A coordinate v becomes bin ``round(v * (bins - 1))``, as in big_vision's PaliGemma
  preprocessing (``tf.round(bbox * 1023)`` clipped to [0, 1023], in ``refcoco_mask2str``), so 0 and
  1 land exactly on the first and last bins. Bin k holds the values that round to k, so its centre
  is k / (bins - 1), and that is what :func:`parse_detections` decodes to: the worst error is half
  a bin, 0.5 / (bins - 1) of the side. (big_vision's demo parser reads a token as k / 1024 instead,
  which is off by up to one more bin, 1/1024, at the far edge.)
* **Kosmos-2** cuts the image into a 32 x 32 grid and writes a box as two grid cells, the top-left
  and the bottom-right one: ``<phrase> a cat</phrase><object><patch_index_0044><patch_index_0863>
  </object>``, cell index = row * 32 + column. The rules match transformers' ``processing_kosmos2``.
"""

from __future__ import annotations

import math
import re
from typing import Any, NamedTuple, Sequence

import torch

Box = tuple[float, float, float, float]  # (x0, y0, x1, y1)


# ---------------------------------------------------------------- boxes

def _four_numbers(box: Any, name: str) -> Box:
    """``box`` as four floats, or a ValueError saying what it is instead."""
    values = box.tolist() if hasattr(box, "tolist") else box  # a tensor or an array
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) != 4:
        raise ValueError(f"{name} must be 4 numbers (x0, y0, x1, y1), got {box!r}")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
        raise ValueError(f"{name} must be 4 finite numbers (x0, y0, x1, y1), got {box!r}")
    return tuple(float(v) for v in values)  # type: ignore[return-value]


def check_box(box: Any, name: str = "box") -> Box:
    """Return ``box`` as four floats if it is a normalised box with positive width and height; else
    raise a ValueError that says what is wrong and how to fix it."""
    x0, y0, x1, y1 = _four_numbers(box, name)
    if not all(0.0 <= v <= 1.0 for v in (x0, y0, x1, y1)):
        raise ValueError(f"{name} {box!r} has coordinates outside [0, 1]: boxes are normalised: divide pixel "
                         f"coordinates by the image size (see from_pixels)")
    if x1 <= x0 or y1 <= y0:
        axis = "x1 <= x0" if x1 <= x0 else "y1 <= y0"
        raise ValueError(f"{name} {box!r} has {axis}: write a box as (x0, y0, x1, y1), the top-left corner first "
                         f"(y points down), with x1 > x0 and y1 > y0")
    return x0, y0, x1, y1


def _width_height(image_size: int | tuple[int, int]) -> tuple[int, int]:
    return (image_size, image_size) if isinstance(image_size, int) else (int(image_size[0]), int(image_size[1]))


def to_pixels(box: Any, image_size: int | tuple[int, int]) -> Box:
    """A normalised box in pixels of an image of side ``image_size`` (or ``(W, H)``)."""
    x0, y0, x1, y1 = check_box(box)
    W, H = _width_height(image_size)
    return x0 * W, y0 * H, x1 * W, y1 * H


def from_pixels(box_px: Any, image_size: int | tuple[int, int]) -> Box:
    """A pixel box ``(x0, y0, x1, y1)`` of an image of side ``image_size`` (or ``(W, H)``), normalised."""
    x0, y0, x1, y1 = _four_numbers(box_px, "box_px")
    W, H = _width_height(image_size)
    if not (0 <= x0 <= W and 0 <= x1 <= W and 0 <= y0 <= H and 0 <= y1 <= H):
        raise ValueError(f"box_px {box_px!r} lies outside the {W} x {H} image; clip it to the image first")
    return check_box((x0 / W, y0 / H, x1 / W, y1 / H), "box_px / image_size")


def iou(a: Any, b: Any) -> float:
    """Intersection over union of two boxes: 1 for the same box, 0 for boxes that do not overlap.

    IoU = |a ∩ b| / (|a| + |b| - |a ∩ b|), with widths x1 - x0 (continuous coordinates, no + 1).
    Works in any units, normalised or pixels, as long as both boxes use the same.
    """
    ax0, ay0, ax1, ay1 = _four_numbers(a, "a")
    bx0, by0, bx1, by1 = _four_numbers(b, "b")
    if ax1 < ax0 or ay1 < ay0 or bx1 < bx0 or by1 < by0:
        raise ValueError(f"boxes are (x0, y0, x1, y1) with x1 >= x0 and y1 >= y0; got a={a!r}, b={b!r}")
    overlap_w = max(0.0, min(ax1, bx1) - max(ax0, bx0))  # clamp: disjoint boxes overlap by 0, not by a negative
    overlap_h = max(0.0, min(ay1, by1) - max(ay0, by0))
    inter = overlap_w * overlap_h
    union = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter
    return inter / union if union > 0 else 0.0


def box_iou(boxes_a: torch.Tensor, boxes_b: torch.Tensor) -> torch.Tensor:
    """All-pairs IoU (N, M) of boxes (N, 4) and (M, 4), each row (x0, y0, x1, y1)."""
    for name, boxes in (("boxes_a", boxes_a), ("boxes_b", boxes_b)):
        if not isinstance(boxes, torch.Tensor) or boxes.ndim != 2 or boxes.shape[1] != 4:
            raise ValueError(f"{name} must be a (n, 4) tensor of (x0, y0, x1, y1) rows, got "
                             f"{tuple(boxes.shape) if isinstance(boxes, torch.Tensor) else type(boxes).__name__}")
        if (boxes[:, 2:] < boxes[:, :2]).any():
            raise ValueError(f"{name} has a row with x1 < x0 or y1 < y0; rows are (x0, y0, x1, y1)")
    area_a = (boxes_a[:, 2] - boxes_a[:, 0]) * (boxes_a[:, 3] - boxes_a[:, 1])  # (N,)
    area_b = (boxes_b[:, 2] - boxes_b[:, 0]) * (boxes_b[:, 3] - boxes_b[:, 1])  # (M,)
    top_left = torch.maximum(boxes_a[:, None, :2], boxes_b[None, :, :2])  # (N, M, 2)
    bottom_right = torch.minimum(boxes_a[:, None, 2:], boxes_b[None, :, 2:])  # (N, M, 2)
    inter = (bottom_right - top_left).clamp(min=0).prod(dim=-1)  # (N, M)
    union = area_a[:, None] + area_b[None, :] - inter  # (N, M)
    return torch.where(union > 0, inter / union.clamp(min=torch.finfo(inter.dtype).tiny), torch.zeros_like(inter))


# ---------------------------------------------------------------- PaliGemma: <locNNNN>

_LOC = re.compile(r"<loc([^>]*)>")
_LOC_FORMAT = ("a detection is four location tokens <loc y0><loc x0><loc y1><loc x1> (y first, 4 digits each) "
               "then the label, e.g. '<loc0102><loc0051><loc0512><loc0409> red circle'; detections are joined by ' ; '")


def _check_bins(bins: int) -> None:
    if not isinstance(bins, int) or not 2 <= bins <= 10_000:
        raise ValueError(f"bins must be an int in 2..10000 (4-digit tokens), got {bins!r}; PaliGemma uses 1024")


def loc_token_names(bins: int = 1024) -> list[str]:
    """The tokens PaliGemma adds to Gemma's vocabulary: ``<loc0000>`` ... ``<loc{bins-1:04d}>``."""
    _check_bins(bins)
    return [f"<loc{k:04d}>" for k in range(bins)]


def _to_bin(v: float, bins: int) -> int:
    return min(max(round(v * (bins - 1)), 0), bins - 1)  # big_vision: round(v * 1023), clipped


def _from_bin(k: int, bins: int) -> float:
    return k / (bins - 1)  # the centre of the values that round to k


def loc_tokens(box: Any, bins: int = 1024) -> str:
    """A box as PaliGemma's four location tokens, y first: ``<loc y0><loc x0><loc y1><loc x1>``."""
    _check_bins(bins)
    x0, y0, x1, y1 = check_box(box)
    return "".join(f"<loc{_to_bin(v, bins):04d}>" for v in (y0, x0, y1, x1))


def detection_text(boxes_and_labels: Sequence[tuple[Any, str]], bins: int = 1024) -> str:
    """PaliGemma's answer to ``detect ...``: ``"<loc..>x4 red circle ; <loc..>x4 blue square"``."""
    pieces = []
    for box, label in boxes_and_labels:
        if not isinstance(label, str) or not label.strip() or any(c in label for c in ";<>"):
            raise ValueError(f"label {label!r} must be non-empty text without ';', '<' or '>' ({_LOC_FORMAT})")
        pieces.append(f"{loc_tokens(box, bins)} {label.strip()}")
    return " ; ".join(pieces)


def _parse_detection(piece: str, bins: int) -> tuple[Box, str]:
    """One ``<loc..>x4 label`` piece; the ValueError quotes the piece."""
    tokens = _LOC.findall(piece)
    head = re.match(r"\s*((?:<loc[^>]*>\s*){4})", piece)
    if len(tokens) != 4 or head is None:
        raise ValueError(f"{piece.strip()!r} has {len(tokens)} location tokens, not 4 at its start: {_LOC_FORMAT}")
    for digits in tokens:
        if not re.fullmatch(r"\d{4}", digits):
            raise ValueError(f"<loc{digits}> in {piece.strip()!r} is not 4 digits: {_LOC_FORMAT}")
        if int(digits) >= bins:
            raise ValueError(f"<loc{digits}> in {piece.strip()!r} is bin {int(digits)}, but there are only {bins} "
                             f"bins (0..{bins - 1})")
    y0, x0, y1, x1 = (int(d) for d in tokens)
    if y1 < y0 or x1 < x0:
        raise ValueError(f"{piece.strip()!r} has {'y1 < y0' if y1 < y0 else 'x1 < x0'}: the tokens are "
                         f"y0, x0, y1, x1 with the top-left corner first; {_LOC_FORMAT}")
    label = piece[head.end():].strip()
    if "<" in label or ">" in label:
        raise ValueError(f"the label {label!r} in {piece.strip()!r} holds other tokens: {_LOC_FORMAT}")
    box = tuple(_from_bin(k, bins) for k in (x0, y0, x1, y1))
    return box, label  # type: ignore[return-value]


def parse_detections(text: str, bins: int = 1024) -> list[tuple[Box, str]]:
    """The inverse of :func:`detection_text`: ``[((x0, y0, x1, y1), label), ...]``, bins decoded to
    their centres. Whitespace around tokens is ignored; an empty string has no detections."""
    _check_bins(bins)
    if not isinstance(text, str):
        raise ValueError(f"text must be a string, got {type(text).__name__}")
    if not text.strip():
        return []
    return [_parse_detection(piece, bins) for piece in text.split(";")]


def quantisation_error_px(bins: int, image_size: int) -> float:
    """Worst error in pixels of one coordinate after encoding and decoding: half a bin,
    0.5 / (bins - 1) of the side."""
    _check_bins(bins)
    return 0.5 * image_size / (bins - 1)


class MeasuredError(NamedTuple):
    mean_px: float  # mean absolute error of one coordinate, in pixels
    max_px: float  # the largest seen


def random_boxes(n: int, seed: int = 0) -> list[Box]:
    """``n`` random normalised boxes: each side from two uniform numbers in [0, 1], sorted."""
    generator = torch.Generator().manual_seed(seed)
    xs = torch.rand((n, 2), generator=generator, dtype=torch.float64).sort(dim=1).values  # (n, 2)
    ys = torch.rand((n, 2), generator=generator, dtype=torch.float64).sort(dim=1).values  # (n, 2)
    keep = (xs[:, 1] > xs[:, 0]) & (ys[:, 1] > ys[:, 0])
    return [tuple(row) for row in torch.stack([xs[:, 0], ys[:, 0], xs[:, 1], ys[:, 1]], 1)[keep].tolist()]


def measured_quantisation_error_px(bins: int, image_size: int, n_boxes: int = 2000, seed: int = 0) -> MeasuredError:
    """Encode and decode ``n_boxes`` random boxes through the token strings; the error per coordinate."""
    errors = []
    for box in random_boxes(n_boxes, seed):
        [(decoded, _)] = parse_detections(detection_text([(box, "x")], bins), bins)
        errors += [abs(u - v) * image_size for u, v in zip(box, decoded)]
    return MeasuredError(sum(errors) / len(errors), max(errors))


# ---------------------------------------------------------------- Kosmos-2: <patch_index_NNNN>

def patch_index_tokens(box: Any, num_patches_per_side: int = 32) -> str:
    """A box as Kosmos-2's two grid cells, ``<patch_index_{top-left}><patch_index_{bottom-right}>``.

    The top-left cell holds (x0, y0): floor(v * n). The bottom-right cell is the last one the box
    reaches, ceil(v * n - 1), so a box ending exactly on a cell border does not spill into the next.
    """
    x0, y0, x1, y1 = check_box(box)
    n = num_patches_per_side
    ul = math.floor(y0 * n) * n + math.floor(x0 * n)  # cell index = row * n + column
    lr = math.ceil(y1 * n - 1) * n + math.ceil(x1 * n - 1)
    return f"<patch_index_{ul:04d}><patch_index_{lr:04d}>"


def kosmos_phrase(phrase: str, box: Any, num_patches_per_side: int = 32) -> str:
    """A grounded phrase as Kosmos-2 writes it: ``<phrase> a cat</phrase><object>..2 cells..</object>``."""
    if not isinstance(phrase, str) or not phrase.strip() or "<" in phrase or ">" in phrase:
        raise ValueError(f"phrase {phrase!r} must be non-empty text without '<' or '>'")
    return f"<phrase>{phrase}</phrase><object>{patch_index_tokens(box, num_patches_per_side)}</object>"


def parse_patch_index_tokens(text: str, num_patches_per_side: int = 32) -> Box:
    """The box of ``<patch_index_A><patch_index_B>`` (other text and whitespace around them are ignored).

    As Kosmos-2's decoder does: where both cells differ in row and column, the box runs from the
    centre of one cell to the centre of the other; where they share a row or a column, it covers the
    cells' full extent.
    """
    n = num_patches_per_side
    found = re.findall(r"<patch_index_(\d+)>", text) if isinstance(text, str) else []
    if len(found) != 2:
        raise ValueError(f"{text!r} has {len(found)} patch index tokens; a Kosmos-2 box is exactly two, "
                         f"<patch_index_{{top-left}}><patch_index_{{bottom-right}}>, e.g. "
                         f"'<patch_index_0044><patch_index_0863>'")
    ul, lr = (int(i) for i in found)
    if max(ul, lr) >= n * n:
        raise ValueError(f"{text!r}: a {n} x {n} grid has cells 0..{n * n - 1}, got {max(ul, lr)}")
    (ul_y, ul_x), (lr_y, lr_x) = divmod(ul, n), divmod(lr, n)  # (row, column)
    if lr_x < ul_x or lr_y < ul_y:
        raise ValueError(f"{text!r}: cell {lr} is not below and right of cell {ul}; the top-left cell comes first")
    cell = 1.0 / n
    if ul_x == lr_x or ul_y == lr_y:  # one row or one column (or one cell): whole cells
        return ul_x * cell, ul_y * cell, (lr_x + 1) * cell, (lr_y + 1) * cell
    return (ul_x + 0.5) * cell, (ul_y + 0.5) * cell, (lr_x + 0.5) * cell, (lr_y + 0.5) * cell


# ---------------------------------------------------------------- the prefix-LM mask

def causal_mask(L: int) -> torch.Tensor:
    """(L, L) booleans, True where query i may attend key j: j <= i."""
    i = torch.arange(L)
    return i[:, None] >= i[None, :]  # (L, L): rows are queries, columns keys


def prefix_lm_mask(token_type_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """PaliGemma's attention mask: (B, L, L) booleans (or (L, L) for one (L,) row), True where
    query i may attend key j.

    ``token_type_ids`` 0 marks the prefix (image tokens and prompt), 1 the suffix (the answer). The
    prefix sees itself in both directions; a suffix token sees the whole prefix and the suffix up
    to itself; the prefix never sees the suffix; padding keys (``attention_mask`` 0) are seen by
    nobody. Rows of padding queries are not meaningful.
    """
    single = token_type_ids.ndim == 1
    types = token_type_ids[None] if single else token_type_ids  # (B, L)
    if types.ndim != 2 or not ((types == 0) | (types == 1)).all():
        raise ValueError(f"token_type_ids must be (B, L) or (L,) of 0 (prefix) and 1 (suffix); got shape "
                         f"{tuple(token_type_ids.shape)} with values {sorted(set(token_type_ids.flatten().tolist()))}")
    B, L = types.shape
    if attention_mask is not None and attention_mask.numel() != B * L:
        raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)}; it must match token_type_ids "
                         f"{tuple(token_type_ids.shape)}")
    valid = torch.ones_like(types, dtype=torch.bool) if attention_mask is None else \
        attention_mask.reshape(B, L).bool()  # (B, L)
    prefix, suffix = (types == 0) & valid, (types == 1) & valid  # (B, L)
    late_prefix = prefix & (suffix.cumsum(dim=1) > 0)  # a prefix token after a suffix token
    if late_prefix.any():
        row = int(late_prefix.any(dim=1).nonzero()[0])
        raise ValueError(f"row {row} has a prefix token (type 0) after a suffix token (type 1); PaliGemma puts the "
                         f"prefix (image + prompt) first and the suffix (answer) after it: {types[row].tolist()}")
    both_prefix = prefix[:, :, None] & prefix[:, None, :]  # (B, L, L): bidirectional inside the prefix
    suffix_rows = (types == 1)[:, :, None] & causal_mask(L).to(types.device)  # (B, L, L): the past, prefix included
    mask = (both_prefix | suffix_rows) & valid[:, None, :]  # nobody sees a padding key
    return mask[0] if single else mask


def tiny_random_paligemma(seed: int = 0) -> Any:
    """A random-weight ``PaliGemmaForConditionalGeneration`` small enough to build in milliseconds:
    SigLIP 32 px images in 8 px patches (16 image tokens), a one-layer Gemma of width 32, a 300-token
    vocabulary whose last id is the image token, and eager attention so it can return its weights."""
    from transformers import GemmaConfig, PaliGemmaConfig, PaliGemmaForConditionalGeneration, SiglipVisionConfig

    torch.manual_seed(seed)
    vision = SiglipVisionConfig(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64,
                                num_hidden_layers=1, num_attention_heads=2)
    text = GemmaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                       num_attention_heads=2, num_key_value_heads=1, head_dim=16, pad_token_id=0)
    config = PaliGemmaConfig(vision_config=vision, text_config=text, image_token_index=299, vocab_size=300,
                             projection_dim=32, hidden_size=32, attn_implementation="eager")
    return PaliGemmaForConditionalGeneration(config).eval()


def paligemma_batch(model: Any, prompt_lengths: Sequence[int], answer_lengths: Sequence[int],
                    seed: int = 0) -> dict[str, torch.Tensor]:
    """A right-padded batch for ``model``: per row, the image tokens and a prompt (type 0), then an
    answer (type 1), then padding. Returns ``input_ids``, ``token_type_ids``, ``attention_mask``,
    ``pixel_values``."""
    config = model.config
    n_image = config.text_config.num_image_tokens
    lengths = [n_image + p + a for p, a in zip(prompt_lengths, answer_lengths)]
    B, L = len(lengths), max(lengths)
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1, config.image_token_id, (B, L), generator=generator)  # (B, L)
    token_type_ids = torch.zeros((B, L), dtype=torch.long)  # (B, L)
    attention_mask = torch.zeros((B, L), dtype=torch.long)  # (B, L)
    for b, (prompt, length) in enumerate(zip(prompt_lengths, lengths)):
        input_ids[b, :n_image] = config.image_token_id
        token_type_ids[b, n_image + prompt:length] = 1
        attention_mask[b, :length] = 1
    input_ids[attention_mask == 0] = config.text_config.pad_token_id
    side = config.vision_config.image_size
    pixel_values = torch.randn((B, 3, side, side), generator=generator)  # (B, C, H, W)
    return dict(input_ids=input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask,
                pixel_values=pixel_values)


@torch.no_grad()
def transformers_prefix_mask(model: Any, input_ids: torch.Tensor, token_type_ids: torch.Tensor,
                             attention_mask: torch.Tensor, pixel_values: torch.Tensor) -> torch.Tensor:
    """(B, L, L) booleans: which keys transformers' PaliGemma actually attends to in its first layer
    (a nonzero attention weight in any head), read from the eager attention weights."""
    from utils.tiny_lm import eager_attention

    with eager_attention(model):
        out = model(input_ids=input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask,
                    pixel_values=pixel_values, output_attentions=True)
    weights = out.attentions[0]  # (B, nh, L, L)
    return (weights > 0).any(dim=1)  # (B, L, L)
