"""Flamingo's bridges: gated cross-attention starts as the identity; the resampler's cost is linear."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from utils.bridges import (
    GatedCrossAttentionBlock,
    PerceiverResampler,
    attention_macs,
    benchmark_resampler,
    perceiver_attention_macs,
    self_attention_macs,
)


def test_gated_block_is_exactly_the_identity_at_initialisation() -> None:
    torch.manual_seed(0)
    block = GatedCrossAttentionBlock(dim=16, visual_dim=12, num_heads=4)
    x, visual = torch.randn(2, 5, 16), torch.randn(2, 9, 12)
    assert torch.equal(block(x, visual), x)  # bit for bit: a frozen LM is undisturbed
    with torch.no_grad():
        block.attn_gate.fill_(0.5)
    y = block(x, visual)
    assert y.shape == x.shape and not torch.allclose(y, x)
    with torch.no_grad():
        block.attn_gate.zero_()
        block.ff_gate.fill_(0.5)
    assert not torch.allclose(block(x, visual), x)  # each gate opens its own path


def test_a_frozen_layer_behind_a_closed_gate_computes_what_it_did() -> None:
    torch.manual_seed(1)
    frozen = torch.nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True).eval()
    block = GatedCrossAttentionBlock(dim=16, num_heads=2)
    x, visual = torch.randn(2, 5, 16), torch.randn(2, 3, 16)
    assert torch.equal(frozen(block(x, visual)), frozen(x))


def test_closed_gates_still_learn() -> None:
    """At alpha = 0 the gates get gradient (d tanh/d alpha = 1); the layers behind them do not, yet."""
    torch.manual_seed(2)
    block = GatedCrossAttentionBlock(dim=8, num_heads=2)
    x, visual = torch.randn(2, 4, 8), torch.randn(2, 3, 8)
    block(x, visual).pow(2).sum().backward()
    assert block.attn_gate.grad.abs().item() > 0 and block.ff_gate.grad.abs().item() > 0
    assert block.cross_attention.query.weight.grad.abs().sum().item() == 0


def test_visual_mask_hides_padding() -> None:
    torch.manual_seed(3)
    block = GatedCrossAttentionBlock(dim=8, num_heads=2)
    with torch.no_grad():
        block.attn_gate.fill_(1.0)
    x, visual = torch.randn(1, 4, 8), torch.randn(1, 5, 8)
    mask = torch.tensor([[True, True, True, False, False]])
    padded = visual.clone()
    padded[:, 3:] = 100.0  # whatever the padding holds must not matter
    torch.testing.assert_close(block(x, padded, mask), block(x, visual[:, :3]))


def test_gated_block_rejects_bad_input() -> None:
    block = GatedCrossAttentionBlock(dim=8, visual_dim=6, num_heads=2)
    with pytest.raises(ValueError, match="visual is 8 wide but this module expects width 6"):
        block(torch.randn(1, 2, 8), torch.randn(1, 3, 8))
    with pytest.raises(ValueError, match="batch size 1 but visual has 2"):
        block(torch.randn(1, 2, 8), torch.randn(2, 3, 6))
    with pytest.raises(ValueError, match="cannot be split into 3 equal heads"):
        GatedCrossAttentionBlock(dim=8, num_heads=3)


@pytest.mark.parametrize("n", [1, 7, 64, 300])
def test_resampler_output_has_a_fixed_size_whatever_the_input_length(n: int) -> None:
    torch.manual_seed(4)
    resampler = PerceiverResampler(dim=16, num_latents=6, depth=2, num_heads=4, input_dim=10)
    assert resampler(torch.randn(3, n, 10)).shape == (3, 6, 16)


def test_resampler_reads_its_inputs_and_ignores_their_order() -> None:
    """No position information: permuting the input tokens leaves the latents unchanged."""
    torch.manual_seed(5)
    resampler = PerceiverResampler(dim=16, num_latents=4, depth=2, num_heads=2)
    x = torch.randn(2, 9, 16)
    out = resampler(x)
    torch.testing.assert_close(resampler(x[:, torch.randperm(9)]), out, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(resampler(torch.randn(2, 9, 16)), out)


def test_resampler_rejects_bad_input() -> None:
    resampler = PerceiverResampler(dim=8, num_latents=2, depth=1, num_heads=2, input_dim=6)
    with pytest.raises(ValueError, match="inputs is 8 wide but this module expects width 6"):
        resampler(torch.randn(1, 3, 8))
    with pytest.raises(ValueError, match="N = 0"):
        resampler(torch.randn(1, 0, 6))
    with pytest.raises(ValueError, match=r"\(B, tokens, width\)"):
        resampler(torch.randn(3, 6))
    with pytest.raises(ValueError, match="num_latents >= 1"):
        PerceiverResampler(dim=8, num_latents=0)


def test_attention_cost_formula_matches_the_counted_matmuls() -> None:
    """The batched matmuls torch runs (QK^T and weights @ V) are exactly the formula, for any N."""
    torch.manual_seed(6)
    resampler = PerceiverResampler(dim=16, num_latents=5, depth=3, num_heads=4, input_dim=12)
    B = 2
    for n in (1, 10, 100):
        with FlopCounterMode(display=False) as counter:
            resampler(torch.randn(B, n, 12))
        bmm_flops = counter.get_flop_counts()["Global"][torch.ops.aten.bmm]
        assert bmm_flops == 2 * B * resampler.attention_macs(n)  # a multiply-add is 2 FLOPs


def test_attention_cost_is_linear_for_the_resampler_and_quadratic_for_self_attention() -> None:
    R, D, depth = 64, 32, 2
    cost = [perceiver_attention_macs(n, R, D, depth) for n in (100, 200, 300, 400)]
    steps = [b - a for a, b in zip(cost, cost[1:])]
    assert steps[0] == steps[1] == steps[2] == depth * 2 * R * 100 * D  # equal steps: a straight line
    quadratic = [self_attention_macs(n, D, depth) for n in (100, 200, 400)]
    assert quadratic[2] == 4 * quadratic[1] == 16 * quadratic[0]
    assert attention_macs(3, 5, 7) == 2 * 3 * 5 * 7
    with pytest.raises(ValueError, match="num_keys must be a whole number"):
        attention_macs(3, -1, 7)


def test_benchmark_returns_one_row_per_length() -> None:
    resampler = PerceiverResampler(dim=8, num_latents=4, depth=1, num_heads=2)
    rows = benchmark_resampler(resampler, [4, 16], repeats=2)
    assert [row["length"] for row in rows] == [4, 16]
    assert all(row["seconds"] > 0 and row["latents"] == 4 for row in rows)
    assert rows[1]["attention_macs"] == resampler.attention_macs(16)
    with pytest.raises(ValueError, match="at least one length"):
        benchmark_resampler(resampler, [])
