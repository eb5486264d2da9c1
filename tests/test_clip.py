"""utils.clip: the losses equal transformers' CLIP and SigLIP losses, and the 3x3 worked example."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from transformers import CLIPConfig, CLIPModel, SiglipConfig, SiglipModel

from utils import clip
from utils.clip import clip_loss

S = torch.tensor([[2.0, 0.5, 0.3], [0.2, 2.5, 0.4], [0.1, 0.6, 3.0]], dtype=torch.float64)

TINY_TEXT = dict(vocab_size=99, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                 max_position_embeddings=16)
TINY_VISION = dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                   num_attention_heads=4)


def inputs(batch: int = 4):
    gen = torch.Generator().manual_seed(0)
    return {"input_ids": torch.randint(1, 99, (batch, 7), generator=gen),
            "pixel_values": torch.randn(batch, 3, 32, 32, generator=gen)}


def test_worked_example_matches_the_hand_computation() -> None:
    parts = clip.clip_loss_parts(S)
    # text 1's denominator: e^2.0 + e^0.2 + e^0.1 (the course material rounds each term first: 9.7157)
    assert parts.column_sums[0].item() == pytest.approx(math.exp(2.0) + math.exp(0.2) + math.exp(0.1))
    assert round(parts.column_sums[0].item(), 4) == 9.7156
    assert round(parts.column_losses[0].item(), 3) == 0.274
    assert parts.row_losses[0].item() == pytest.approx(-math.log(math.exp(2) / (math.exp(2) + math.exp(0.5) + math.exp(0.3))))
    assert parts.loss.item() == pytest.approx(clip.clip_loss(S).item())
    assert round(clip.clip_loss(S).item(), 4) == 0.2224


def test_temperature_divides_the_similarities() -> None:
    assert clip.clip_loss(S, 0.5).item() == pytest.approx(clip.clip_loss(2 * S).item())
    assert clip.clip_loss(S, 0.07).item() < clip.clip_loss(S, 1.0).item()  # a clear diagonal gets sharper


def test_clip_loss_equals_transformers() -> None:
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig(text_config=TINY_TEXT, vision_config=TINY_VISION, projection_dim=16)).eval()
    with torch.no_grad():
        out = model(**inputs(), return_loss=True)
        similarity = out.image_embeds @ out.text_embeds.T  # embeddings come normalised
        ours = clip.clip_loss(similarity, temperature=1 / model.logit_scale.exp())
    assert ours.item() == pytest.approx(out.loss.item(), rel=1e-5)


def test_siglip_loss_equals_transformers() -> None:
    torch.manual_seed(0)
    model = SiglipModel(SiglipConfig(text_config=TINY_TEXT, vision_config=TINY_VISION)).eval()
    with torch.no_grad():
        out = model(**inputs(), return_loss=True)
        similarity = out.image_embeds @ out.text_embeds.T
        ours = clip.siglip_loss(similarity, scale=model.logit_scale.exp(), bias=model.logit_bias)
    assert ours.item() == pytest.approx(out.loss.item(), rel=1e-5)


def test_siglip_by_hand_on_the_worked_example() -> None:
    t, b = 10.0, -5.0
    expected = 0.0
    for i in range(3):
        for j in range(3):
            z = 1 if i == j else -1
            expected -= math.log(1 / (1 + math.exp(-z * (t * S[i, j].item() + b))))
    assert clip.siglip_loss(S, t, b).item() == pytest.approx(expected / 3)


def test_triplet_loss() -> None:
    a = torch.tensor([[1.0, 0.0]])
    assert clip.triplet_loss(a, a, -a, margin=0.2).item() == 0  # positive identical, negative opposite
    assert clip.triplet_loss(a, -a, a, margin=0.2).item() == pytest.approx(2.2)
    with pytest.raises(ValueError, match="negative has shape"):
        clip.triplet_loss(a, a, torch.zeros(2, 2))


def test_recall_and_zero_shot() -> None:
    sim = torch.tensor([[0.9, 0.1, 0.0], [0.8, 0.7, 0.0], [0.0, 0.1, 0.2]])
    assert clip.recall_at_k(sim, 1) == pytest.approx(2 / 3) and clip.recall_at_k(sim, 2) == 1.0
    images = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    probs = clip.zero_shot_probabilities(images, torch.tensor([[3.0, 0.0], [0.0, 1.0]]))
    assert probs.argmax(-1).tolist() == [0, 1] and torch.allclose(probs.sum(-1), torch.ones(2))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: clip.clip_loss(torch.zeros(2, 3)), r"square \(B, B\) matrix.*\(2, 3\)"),
        (lambda: clip.clip_loss(torch.zeros(0, 0)), "at least one image-text pair"),
        (lambda: clip.clip_loss(S, temperature=0), "temperature must be positive"),
        (lambda: clip.clip_loss([[1.0]]), "must be a torch.Tensor"),
        (lambda: clip.siglip_loss(torch.zeros(3), 1.0, 0.0), "square"),
        (lambda: clip.cosine_similarity_matrix(torch.zeros(2, 4), torch.zeros(3, 5)), "same width"),
        (lambda: clip.zero_shot_probabilities(torch.zeros(2, 4), torch.zeros(0, 4)), "at least one prompt"),
        (lambda: clip.recall_at_k(torch.eye(3), 4), "k must be between 1 and 3"),
    ],
)
def test_clear_errors(call, message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        call()


def test_distributed_loss_in_one_process_is_the_clip_loss() -> None:
    from utils.clip import distributed_clip_loss

    torch.manual_seed(0)
    image, text = F.normalize(torch.randn(6, 8), dim=-1), F.normalize(torch.randn(6, 8), dim=-1)
    scale = torch.tensor(14.0)
    torch.testing.assert_close(distributed_clip_loss(image, text, scale), clip_loss(image @ text.T, 1 / scale))
    with pytest.raises(ValueError, match="one shape"):
        distributed_clip_loss(image, text[:5], scale)


def test_siglip_blocks_add_up_to_the_batch() -> None:
    torch.manual_seed(1)
    S7 = torch.randn(7, 7)
    blocks = sum(clip.siglip_block_loss(S7[i:i + 3], 4.0, -2.0, first_row=i) for i in (0, 3, 6))
    assert blocks.item() == pytest.approx(7 * clip.siglip_loss(S7, 4.0, -2.0).item(), rel=1e-6)
    with pytest.raises(ValueError, match="do not fit"):
        clip.siglip_block_loss(S7[:3], 1.0, 0.0, first_row=5)


def test_siglip_rectangular_blocks_add_up_but_clip_blocks_do_not() -> None:
    torch.manual_seed(2)
    S6 = torch.randn(6, 6)
    cuts = (slice(0, 2), slice(2, 6))  # uneven blocks: 2 + 4
    tiles = sum(clip.siglip_block_loss(S6[r, c], 3.0, -1.0, first_row=r.start, first_column=c.start)
                for r in cuts for c in cuts)
    assert tiles.item() == pytest.approx(6 * clip.siglip_loss(S6, 3.0, -1.0).item(), rel=1e-6)
    # an off-diagonal tile holds no positive pair: every label is -1
    off = clip.siglip_block_loss(S6[:2, 2:], 3.0, -1.0, first_row=0, first_column=2)
    assert off.item() == pytest.approx(-F.logsigmoid(-(S6[:2, 2:] * 3.0 - 1.0)).sum().item(), rel=1e-6)
    # CLIP's softmax has no such split: the diagonal tiles' losses miss the other tiles' negatives
    by_tiles = (2 * clip_loss(S6[:2, :2]) + 4 * clip_loss(S6[2:, 2:])) / 6
    assert abs(by_tiles.item() - clip_loss(S6).item()) > 0.1
    with pytest.raises(ValueError, match=">= 0"):
        clip.siglip_block_loss(S6[:2, :2], 1.0, 0.0, first_row=-1, first_column=0)
