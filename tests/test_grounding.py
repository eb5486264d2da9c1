"""utils.grounding: PaliGemma's location tokens, Kosmos-2's patch indices, IoU and the prefix-LM mask,
checked against hand-worked values and against transformers."""

from __future__ import annotations

import random

import pytest
import torch

from utils import grounding as g


# ---------------------------------------------------------------- PaliGemma location tokens

def test_loc_tokens_known_values() -> None:
    assert g.loc_tokens((0.0, 0.0, 1.0, 1.0)) == "<loc0000><loc0000><loc1023><loc1023>"  # the whole image
    # y first: y0 = 0.1 -> 102, x0 = 0.05 -> 51, y1 = 0.5 -> round(511.5) = 512, x1 = 0.4 -> round(409.2) = 409
    assert g.loc_tokens((0.05, 0.1, 0.4, 0.5)) == "<loc0102><loc0051><loc0512><loc0409>"
    assert g.loc_tokens((0.0, 0.0, 1.0, 1.0), bins=32) == "<loc0000><loc0000><loc0031><loc0031>"
    assert g.loc_tokens(torch.tensor([0.05, 0.1, 0.4, 0.5], dtype=torch.float64)) == g.loc_tokens((0.05, 0.1, 0.4, 0.5))


def test_loc_token_names() -> None:
    names = g.loc_token_names(1024)
    assert len(names) == 1024 and names[0] == "<loc0000>" and names[-1] == "<loc1023>"
    assert len(set(names)) == 1024


def test_detection_text_round_trip() -> None:
    detections = [((0.1, 0.2, 0.3, 0.4), "red circle"), ((0.5, 0.5, 0.9, 0.95), "blue square")]
    text = g.detection_text(detections)
    assert text == "<loc0205><loc0102><loc0409><loc0307> red circle ; <loc0512><loc0512><loc0972><loc0921> blue square"
    parsed = g.parse_detections(text)
    assert [label for _, label in parsed] == ["red circle", "blue square"]
    for (box, _), (decoded, _) in zip(detections, parsed):
        assert max(abs(u - v) for u, v in zip(box, decoded)) <= 0.5 / 1023 + 1e-12
    assert g.parse_detections("<loc0000><loc0000><loc1023><loc1023> sky") == [((0.0, 0.0, 1.0, 1.0), "sky")]


def test_parse_is_tolerant_of_whitespace() -> None:
    text = "  <loc0205> <loc0102><loc0409>  <loc0307>   red circle;<loc0512><loc0512><loc0972><loc0921>blue square "
    assert [label for _, label in g.parse_detections(text)] == ["red circle", "blue square"]
    assert g.parse_detections("") == [] and g.parse_detections("  ") == []


def test_every_box_round_trips_within_half_a_bin() -> None:
    for bins in (1024, 32):
        for box in g.random_boxes(300, seed=1):
            [(decoded, label)] = g.parse_detections(g.detection_text([(box, "thing")], bins), bins)
            assert label == "thing"
            assert max(abs(u - v) for u, v in zip(box, decoded)) <= 0.5 / (bins - 1) + 1e-12


def test_quantisation_error_worst_and_measured() -> None:
    assert g.quantisation_error_px(1024, 224) == pytest.approx(0.5 * 224 / 1023)  # 0.109 px
    assert g.quantisation_error_px(32, 64) == pytest.approx(0.5 * 64 / 31)  # 1.03 px
    for bins, size in ((1024, 224), (32, 64)):
        worst = g.quantisation_error_px(bins, size)
        measured = g.measured_quantisation_error_px(bins, size, n_boxes=500)
        assert measured.max_px <= worst + 1e-9 and measured.max_px > 0.95 * worst
        assert measured.mean_px == pytest.approx(worst / 2, rel=0.1)  # errors spread evenly over half a bin


@pytest.mark.parametrize("text, fragments", [
    ("<loc0102><loc0051><loc0512> cat", ["has 3 location tokens", "<loc y0><loc x0><loc y1><loc x1>"]),
    ("<loc0102><loc0051><loc0512><loc0409><loc0001> cat", ["has 5 location tokens"]),
    ("cat <loc0102><loc0051><loc0512><loc0409>", ["not 4 at its start"]),
    ("<loc0102><loc0051><loc0512><loc1024> cat", ["bin 1024", "only 1024 bins"]),
    ("<loc0102><loc0051><loc0512><loc04a9> cat", ["<loc04a9>", "not 4 digits"]),
    ("<loc102><loc0051><loc0512><loc0409> cat", ["<loc102>", "not 4 digits"]),
    ("<loc0512><loc0051><loc0102><loc0409> cat", ["y1 < y0", "y0, x0, y1, x1"]),
    ("<loc0102><loc0409><loc0512><loc0051> cat", ["x1 < x0"]),
    ("<loc0102><loc0051><loc0512><loc0409> cat <seg012>", ["holds other tokens"]),
    ("<loc0102><loc0051><loc0512><loc0409> cat ; dog", ["'dog' has 0 location tokens"]),
])
def test_malformed_detections_are_explained(text: str, fragments: list[str]) -> None:
    with pytest.raises(ValueError) as info:
        g.parse_detections(text)
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))


def test_bad_bins_and_labels() -> None:
    with pytest.raises(ValueError, match="PaliGemma uses 1024"):
        g.loc_tokens((0.1, 0.1, 0.2, 0.2), bins=1)
    with pytest.raises(ValueError, match="without ';'"):
        g.detection_text([((0.1, 0.1, 0.2, 0.2), "cat ; dog")])
    with pytest.raises(ValueError, match="bin 40, but there are only 32"):
        g.parse_detections("<loc0001><loc0001><loc0040><loc0002> x", bins=32)


# ---------------------------------------------------------------- boxes

@pytest.mark.parametrize("box, fragments", [
    ((0.1, 0.2, 0.3), ["must be 4 numbers"]),
    ("0.1 0.2 0.3 0.4", ["must be 4 numbers"]),
    ((0.1, 0.2, float("nan"), 0.4), ["4 finite numbers"]),
    ((0.1, 0.2, True, 0.4), ["4 finite numbers"]),
    ((10, 20, 50, 60), ["outside [0, 1]", "divide pixel coordinates by the image size"]),
    ((-0.1, 0.2, 0.5, 0.6), ["outside [0, 1]"]),
    ((0.5, 0.2, 0.4, 0.6), ["x1 <= x0", "top-left corner first"]),
    ((0.1, 0.6, 0.4, 0.2), ["y1 <= y0"]),
    ((0.1, 0.2, 0.1, 0.6), ["x1 <= x0"]),
])
def test_check_box_explains(box, fragments: list[str]) -> None:
    for encoder in (g.check_box, g.loc_tokens, g.patch_index_tokens):
        with pytest.raises(ValueError) as info:
            encoder(box)
        for fragment in fragments:
            assert fragment in str(info.value), (encoder.__name__, fragment, str(info.value))


def test_check_box_names_the_argument() -> None:
    with pytest.raises(ValueError, match="^target box"):
        g.check_box((0.5, 0.5, 0.4, 0.6), name="target box")
    assert g.check_box([0, 0, 1, 1]) == (0.0, 0.0, 1.0, 1.0)


def test_pixels_round_trip() -> None:
    assert g.to_pixels((0.25, 0.5, 0.75, 1.0), 64) == (16.0, 32.0, 48.0, 64.0)
    assert g.to_pixels((0.25, 0.5, 0.75, 1.0), (200, 100)) == (50.0, 50.0, 150.0, 100.0)  # (W, H)
    assert g.from_pixels((50, 50, 150, 100), (200, 100)) == (0.25, 0.5, 0.75, 1.0)
    with pytest.raises(ValueError, match="outside the 64 x 64 image"):
        g.from_pixels((10, 10, 70, 20), 64)


# ---------------------------------------------------------------- IoU

@pytest.mark.parametrize("a, b, expected", [
    ((0.1, 0.1, 0.5, 0.5), (0.3, 0.3, 0.7, 0.7), 0.04 / 0.28),  # 0.2 x 0.2 overlap of two 0.16 boxes
    ((0.2, 0.2, 0.6, 0.8), (0.2, 0.2, 0.6, 0.8), 1.0),
    ((0.0, 0.0, 1.0, 1.0), (0.25, 0.25, 0.75, 0.75), 0.25),  # nested: area ratio
    ((0.0, 0.0, 0.2, 0.2), (0.5, 0.5, 0.9, 0.9), 0.0),  # apart
    ((0.0, 0.0, 0.5, 1.0), (0.5, 0.0, 1.0, 1.0), 0.0),  # touching
    ((0.0, 0.0, 2.0, 1.0), (1.0, 0.0, 3.0, 1.0), 1 / 3),  # pixels or any other unit work too
])
def test_iou_hand_worked(a, b, expected) -> None:
    assert g.iou(a, b) == pytest.approx(expected)
    assert g.iou(b, a) == pytest.approx(expected)


def test_box_iou_matches_pairwise_iou() -> None:
    boxes = g.random_boxes(12, seed=3)
    a, b = torch.tensor(boxes[:5]), torch.tensor(boxes[5:] + [(0.0, 0.0, 0.0, 0.0)])  # a zero-area box too
    table = g.box_iou(a, b)  # (5, 8)
    assert table.shape == (5, 8)
    want = torch.tensor([[g.iou(x, y) for y in b.tolist()] for x in a.tolist()])
    torch.testing.assert_close(table, want.to(table.dtype))
    assert torch.equal(g.box_iou(a, a).diagonal(), torch.ones(5))


def test_iou_rejects_bad_boxes() -> None:
    with pytest.raises(ValueError, match="x1 >= x0"):
        g.iou((0.5, 0.0, 0.4, 1.0), (0.0, 0.0, 1.0, 1.0))
    with pytest.raises(ValueError, match=r"\(n, 4\) tensor"):
        g.box_iou(torch.zeros(3, 5), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="boxes_b has a row with x1 < x0"):
        g.box_iou(torch.tensor([[0.0, 0.0, 1.0, 1.0]]), torch.tensor([[0.5, 0.0, 0.4, 1.0]]))


# ---------------------------------------------------------------- Kosmos-2 patch indices

def test_patch_index_tokens_known_values() -> None:
    assert g.patch_index_tokens((0.0, 0.0, 1.0, 1.0)) == "<patch_index_0000><patch_index_1023>"
    # x0 = 0.1 -> column 3, y0 = 0.2 -> row 6; x1 = 0.3 -> ceil(8.6) = column 9, y1 = 0.4 -> ceil(11.8) = row 12
    assert g.patch_index_tokens((0.1, 0.2, 0.3, 0.4)) == f"<patch_index_{6 * 32 + 3:04d}><patch_index_{12 * 32 + 9:04d}>"
    assert g.parse_patch_index_tokens("<patch_index_0000><patch_index_1023>") == (1 / 64, 1 / 64, 63 / 64, 63 / 64)
    assert g.parse_patch_index_tokens("<patch_index_0000><patch_index_0031>") == (0.0, 0.0, 1.0, 1 / 32)  # one row


def test_patch_index_tokens_match_transformers() -> None:
    from transformers.models.kosmos2 import processing_kosmos2 as kosmos

    rng = random.Random(0)
    for n in (32, 16, 7):
        for box in g.random_boxes(400, seed=n):
            ul, lr = kosmos.coordinate_to_patch_index(box, n)
            assert g.patch_index_tokens(box, n) == f"<patch_index_{ul:04d}><patch_index_{lr:04d}>"
        for _ in range(400):  # decoding, on random valid cell pairs
            r0, c0 = rng.randrange(n), rng.randrange(n)
            r1, c1 = rng.randrange(r0, n), rng.randrange(c0, n)
            ul, lr = r0 * n + c0, r1 * n + c1
            text = f"<patch_index_{ul:04d}><patch_index_{lr:04d}>"
            assert g.parse_patch_index_tokens(text, n) == pytest.approx(kosmos.patch_index_to_coordinate(ul, lr, n))


def test_kosmos_phrase_matches_transformers() -> None:
    from transformers.models.kosmos2 import processing_kosmos2 as kosmos

    boxes = [(0.1, 0.2, 0.3, 0.4), (0.5, 0.05, 0.95, 0.6)]
    text = f"<grounding> An image of{g.kosmos_phrase(' a red circle', boxes[0])} next to" \
           f"{g.kosmos_phrase(' a blue square', boxes[1])}."
    clean, entities = kosmos.clean_text_and_extract_entities_with_bboxes(text)
    assert clean == "An image of a red circle next to a blue square."
    assert [name for name, _, _ in entities] == ["a red circle", "a blue square"]
    for (_, _, [decoded]), box in zip(entities, boxes):
        tokens = g.patch_index_tokens(box)
        assert decoded == pytest.approx(g.parse_patch_index_tokens(f"<object> {tokens} </object>"))
        assert max(abs(u - v) for u, v in zip(box, decoded)) <= 1 / 32  # within a cell


@pytest.mark.parametrize("text, fragment", [
    ("<patch_index_0044>", "has 1 patch index tokens"),
    ("<patch_index_0044><patch_index_0863><patch_index_0900>", "has 3 patch index tokens"),
    ("<patch_index_0044><patch_index_1024>", "cells 0..1023, got 1024"),
    ("<patch_index_0863><patch_index_0044>", "top-left cell comes first"),
    ("<patch_index_0040><patch_index_0065>", "not below and right"),  # row 2 column 1 is left of row 1 column 8
])
def test_bad_patch_indices_are_explained(text: str, fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        g.parse_patch_index_tokens(text)
    assert fragment in str(info.value), str(info.value)


# ---------------------------------------------------------------- the prefix-LM mask

def test_prefix_lm_mask_hand_worked() -> None:
    # two image/prompt tokens, then a two-token answer, then one padding token
    mask = g.prefix_lm_mask(torch.tensor([[0, 0, 1, 1, 0]]), torch.tensor([[1, 1, 1, 1, 0]]))
    assert mask.dtype == torch.bool and mask.shape == (1, 5, 5)
    assert mask[0, :4, :].int().tolist() == [
        [1, 1, 0, 0, 0],  # prefix sees the prefix, both ways
        [1, 1, 0, 0, 0],
        [1, 1, 1, 0, 0],  # the answer sees the prefix and itself
        [1, 1, 1, 1, 0],  # ... and the answer before it; nobody sees the padding
    ]
    assert torch.equal(g.prefix_lm_mask(torch.tensor([1, 1, 1])), g.causal_mask(3))  # no prefix: causal
    assert g.prefix_lm_mask(torch.zeros(4, dtype=torch.long)).all()  # all prefix: full attention
    assert torch.equal(g.causal_mask(3), torch.tensor([[1, 0, 0], [1, 1, 0], [1, 1, 1]]).bool())


def test_prefix_lm_mask_rejects_bad_layouts() -> None:
    with pytest.raises(ValueError, match="prefix token \\(type 0\\) after a suffix token"):
        g.prefix_lm_mask(torch.tensor([[0, 1, 0]]))
    with pytest.raises(ValueError, match="of 0 \\(prefix\\) and 1 \\(suffix\\)"):
        g.prefix_lm_mask(torch.tensor([[0, 2, 1]]))
    with pytest.raises(ValueError, match="must match token_type_ids"):
        g.prefix_lm_mask(torch.tensor([[0, 1, 1]]), torch.ones(1, 4))


def test_prefix_lm_mask_matches_transformers_paligemma() -> None:
    model = g.tiny_random_paligemma()
    batch = g.paligemma_batch(model, prompt_lengths=[3, 4, 2], answer_lengths=[3, 1, 5])  # rows 0, 1 padded
    n_image = model.config.text_config.num_image_tokens
    assert n_image == 16 and batch["input_ids"].shape == (3, 23)
    assert (batch["attention_mask"].sum(1) == torch.tensor([22, 21, 23])).all()
    seen = g.transformers_prefix_mask(model, **batch)  # (B, L, L)
    ours = g.prefix_lm_mask(batch["token_type_ids"], batch["attention_mask"])
    real = batch["attention_mask"].bool()  # compare the rows of real queries; padding rows are not used
    assert torch.equal(seen[real], ours[real])
    assert not torch.equal(ours, g.causal_mask(23).expand_as(ours))  # the prefix really is bidirectional
