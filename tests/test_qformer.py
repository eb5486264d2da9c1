"""The Q-Former from scratch equals transformers' Blip2QFormerModel; the stage-1 masks and losses."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from utils.qformer import (
    QFormer,
    QFormerConfig,
    QFormerForPretraining,
    itc_loss,
    itc_mask,
    itc_similarity,
    itg_loss,
    itg_mask,
    itm_loss,
    itm_mask,
    load_into_transformers,
    next_token_loss,
    sample_hard_negatives,
    state_dict_from_transformers,
)

B, N = 2, 7  # batch, image tokens


def hf_qformer(config: QFormerConfig, seed: int = 0):
    """A random transformers Q-Former whose LayerNorms are random too, so a misplaced norm shows."""
    from transformers import Blip2QFormerModel

    torch.manual_seed(seed)
    hf = Blip2QFormerModel(config.to_transformers()).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return hf


def inputs(config: QFormerConfig, L: int = 5, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    queries = torch.randn(B, config.num_query_tokens, config.hidden_size, generator=g)  # (B, Q, D)
    image = torch.randn(B, N, config.encoder_hidden_size, generator=g)  # (B, N, E)
    text = torch.randn(B, L, config.hidden_size, generator=g)  # (B, L, D)
    return queries, image, text


# --- config ------------------------------------------------------------------------------------


def test_base_config_is_blip2s_qformer() -> None:
    from transformers import Blip2Config, Blip2QFormerConfig

    base, reference = QFormerConfig.named("base"), Blip2QFormerConfig()
    hf = base.to_transformers()
    for field in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                  "cross_attention_frequency", "encoder_hidden_size", "layer_norm_eps", "hidden_act"):
        assert getattr(hf, field) == getattr(reference, field), field
    assert (base.hidden_size, base.num_layers, base.num_heads, base.intermediate_size) == (768, 12, 12, 3072)
    assert base.num_query_tokens == Blip2Config().num_query_tokens == 32
    assert base.encoder_hidden_size == 1408
    assert QFormerConfig.from_transformers(hf, num_query_tokens=32) == base


def test_named_sizes_and_bad_configs() -> None:
    assert QFormerConfig.named("tiny", num_layers=2).num_layers == 2
    with pytest.raises(ValueError, match="unknown Q-Former size 'huge'"):
        QFormerConfig.named("huge")
    with pytest.raises(ValueError, match="cannot be split into 5 equal heads"):
        QFormerConfig.named("tiny", num_heads=5)
    with pytest.raises(ValueError, match="cross_attention_frequency must be >= 1"):
        QFormerConfig.named("tiny", cross_attention_frequency=0)


def test_cross_attention_sits_in_the_same_layers_as_in_transformers() -> None:
    from transformers import Blip2QFormerModel

    for frequency in (1, 2, 3):
        config = QFormerConfig.named("tiny", num_layers=5, cross_attention_frequency=frequency)
        ours = QFormer(config)
        theirs = Blip2QFormerModel(config.to_transformers())
        assert [layer.cross_attention is not None for layer in ours.layers] == \
               [layer.has_cross_attention for layer in theirs.encoder.layer]


# --- parity with transformers ------------------------------------------------------------------


@pytest.mark.parametrize("frequency", [1, 2, 3])
def test_queries_only_match_transformers(frequency: int) -> None:
    config = QFormerConfig.named("tiny", cross_attention_frequency=frequency)
    hf = hf_qformer(config)
    ours = QFormer.from_transformers(hf, num_query_tokens=config.num_query_tokens).eval()
    queries, image, _ = inputs(config)
    with torch.no_grad():
        expected = hf(query_embeds=queries, encoder_hidden_states=image).last_hidden_state  # (B, Q, D)
        got = ours(queries, image)
    torch.testing.assert_close(got, expected, atol=2e-6, rtol=1e-5)


def test_queries_and_text_with_padding_match_transformers() -> None:
    config = QFormerConfig.named("tiny")
    hf = hf_qformer(config, seed=3)
    ours = QFormer.from_transformers(hf, num_query_tokens=config.num_query_tokens).eval()
    queries, image, text = inputs(config, L=6)
    Q = config.num_query_tokens
    mask = torch.ones(B, Q + 6, dtype=torch.long)
    mask[1, -3:] = 0  # the second text is 3 tokens shorter
    with torch.no_grad():
        expected = hf(query_embeds=torch.cat([queries, text], 1), query_length=Q, attention_mask=mask,
                      encoder_hidden_states=image).last_hidden_state  # (B, Q+L, D)
        got = ours(queries, image, text, mask)
        got_text_mask = ours(queries, image, text, mask[:, Q:])  # (B, L) padding works the same
        unmasked = ours(queries, image, text)
    torch.testing.assert_close(got, expected, atol=2e-6, rtol=1e-5)
    torch.testing.assert_close(got_text_mask, expected, atol=2e-6, rtol=1e-5)
    assert not torch.allclose(unmasked[1], expected[1], atol=1e-3)  # the mask does matter


def test_uni_modal_mask_equals_separate_passes_in_transformers() -> None:
    """Under the ITC mask one joint pass gives the queries' image-only and the text's text-only outputs."""
    config = QFormerConfig.named("tiny")
    hf = hf_qformer(config, seed=4)
    ours = QFormer.from_transformers(hf, num_query_tokens=config.num_query_tokens).eval()
    queries, image, text = inputs(config)
    Q, L = config.num_query_tokens, text.shape[1]
    with torch.no_grad():
        joint = ours(queries, image, text, attention_pattern=itc_mask(Q, L))  # (B, Q+L, D)
        query_only = hf(query_embeds=queries, encoder_hidden_states=image).last_hidden_state
        text_only = hf(query_embeds=text, query_length=0).last_hidden_state  # BLIP-2's text encoder pass
    torch.testing.assert_close(joint[:, :Q], query_only, atol=2e-6, rtol=1e-5)
    torch.testing.assert_close(joint[:, Q:], text_only, atol=2e-6, rtol=1e-5)


def _tiny_blip2(config: QFormerConfig):
    """A BLIP-2 generation model around a Q-Former of ``config``, its image and text sides as small as can be."""
    from transformers import Blip2Config, Blip2ForConditionalGeneration, OPTConfig

    return Blip2ForConditionalGeneration(Blip2Config(
        vision_config=dict(hidden_size=24, intermediate_size=48, num_hidden_layers=1, num_attention_heads=2,
                           image_size=16, patch_size=8),
        qformer_config=config.to_transformers().to_dict(),
        text_config=OPTConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, ffn_dim=32, num_attention_heads=2,
                              max_position_embeddings=32, word_embed_proj_dim=16),
        num_query_tokens=config.num_query_tokens, image_token_index=49,
    )).eval()


def test_loading_from_a_blip2_model_copies_the_query_tokens() -> None:
    config = QFormerConfig.named("tiny", use_text_input=False)
    torch.manual_seed(0)
    blip2 = _tiny_blip2(config)
    with torch.no_grad():
        blip2.query_tokens.normal_()
    ours = QFormer.from_transformers(blip2).eval()
    assert all(layer.text_ffn is None for layer in ours.layers)  # saved without the text feed-forward
    torch.testing.assert_close(ours.query_tokens, blip2.query_tokens)
    image = torch.randn(B, 5, 24)
    with torch.no_grad():
        expected = blip2.qformer(query_embeds=blip2.query_tokens.expand(B, -1, -1),
                                 encoder_hidden_states=image).last_hidden_state
        got = ours(None, image)  # None: the learned queries
    torch.testing.assert_close(got, expected, atol=2e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="no text feed-forward"):
        ours(None, image, torch.randn(B, 3, config.hidden_size))


def test_stage_one_weights_go_into_a_blip2_model() -> None:
    """Stage 2 starts from stage 1: a QFormer trained with text (text feed-forwards included) is copied
    into a generation model built without them, and the model's queries then read images exactly as ours."""
    torch.manual_seed(0)
    blip2 = _tiny_blip2(QFormerConfig.named("tiny", use_text_input=False))
    stage1 = QFormer(QFormerConfig.named("tiny", use_text_input=True)).eval()
    with torch.no_grad():
        for p in stage1.parameters():
            p.add_(torch.randn_like(p) * 0.1)  # nothing left at a default value, so a skipped tensor shows
    load_into_transformers(stage1, blip2)
    torch.testing.assert_close(blip2.query_tokens, stage1.query_tokens)
    image = torch.randn(B, 5, 24)
    with torch.no_grad():
        expected = stage1(None, image)  # (B, Q, D): queries alone, so the text feed-forward plays no part
        got = blip2.qformer(query_embeds=blip2.query_tokens.expand(B, -1, -1),
                            encoder_hidden_states=image).last_hidden_state
    torch.testing.assert_close(got, expected, atol=2e-6, rtol=1e-5)


def test_stage_one_weights_of_another_shape_are_refused() -> None:
    blip2 = _tiny_blip2(QFormerConfig.named("tiny", use_text_input=False))
    with pytest.raises(ValueError, match="query tokens"):
        load_into_transformers(QFormer(QFormerConfig.named("tiny", num_query_tokens=3)), blip2)
    with pytest.raises(RuntimeError, match="size mismatch"):
        load_into_transformers(QFormer(QFormerConfig.named("tiny", intermediate_size=32)), blip2)
    with pytest.raises(TypeError, match="BLIP-2 model"):
        load_into_transformers(QFormer(QFormerConfig.named("tiny")), blip2.qformer)


def test_from_transformers_rejects_what_it_cannot_load() -> None:
    with pytest.raises(TypeError, match="Blip2QFormerModel"):
        QFormer.from_transformers(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="has no place"):
        state_dict_from_transformers({"encoder.layer.0.pooler.dense.weight": torch.zeros(1)})


# --- clear errors ---------------------------------------------------------------------------------


def test_bad_inputs_get_clear_errors() -> None:
    config = QFormerConfig.named("tiny")
    model = QFormer(config)
    queries, image, text = inputs(config)
    Q = config.num_query_tokens
    with pytest.raises(ValueError, match=r"image features are 30 wide .* encoder_hidden_size=24"):
        model(queries, torch.randn(B, N, 30))
    with pytest.raises(ValueError, match=r"must be \(B, N, E\)"):
        model(queries, image[0])
    with pytest.raises(TypeError, match="torch.Tensor"):
        model(queries, image.tolist())
    with pytest.raises(ValueError, match=f"has {Q + 1} query tokens .* num_query_tokens={Q}"):
        model(torch.randn(B, Q + 1, config.hidden_size), image)
    with pytest.raises(ValueError, match="query_embeds is 16 wide"):
        model(torch.randn(B, Q, 16), image)
    with pytest.raises(ValueError, match="batch size 1 but image_embeds has 2"):
        model(queries, image, text[:1])
    with pytest.raises(ValueError, match=r"attention_mask must be \(B, Q\+L\)"):
        model(queries, image, text, torch.ones(B, 3))
    with pytest.raises(ValueError, match="attention_pattern must be a bool"):
        model(queries, image, text, attention_pattern=itg_mask(Q, text.shape[1]).float())


def test_cross_attention_maps_cover_the_image_tokens() -> None:
    config = QFormerConfig.named("tiny")
    queries, image, _ = inputs(config)
    out, maps = QFormer(config).eval()(queries, image, output_cross_attentions=True)
    assert out.shape == (B, config.num_query_tokens, config.hidden_size)
    assert len(maps) == 2  # layers 0 and 2 of 4
    assert maps[0].shape == (B, config.num_heads, config.num_query_tokens, N)
    torch.testing.assert_close(maps[0].sum(-1), torch.ones(B, config.num_heads, config.num_query_tokens))


# --- masks ---------------------------------------------------------------------------------------


def test_the_three_masks_on_two_queries_and_three_words() -> None:
    T, F_ = True, False
    assert itc_mask(2, 3).tolist() == [
        [T, T, F_, F_, F_],
        [T, T, F_, F_, F_],
        [F_, F_, T, T, T],
        [F_, F_, T, T, T],
        [F_, F_, T, T, T],
    ]
    assert itm_mask(2, 3).tolist() == [[T] * 5] * 5
    assert itg_mask(2, 3).tolist() == [
        [T, T, F_, F_, F_],
        [T, T, F_, F_, F_],
        [T, T, T, F_, F_],
        [T, T, T, T, F_],
        [T, T, T, T, T],
    ]
    for mask in (itc_mask, itm_mask, itg_mask):
        assert mask(2, 3).dtype == torch.bool and mask(4, 0).shape == (4, 4)
        with pytest.raises(ValueError, match="L must be a whole number"):
            mask(2, -1)
        with pytest.raises(ValueError, match="Q must be a whole number"):
            mask(2.0, 3)


def test_itg_mask_makes_generation_causal() -> None:
    """Under the ITG mask, queries ignore the text and text token t ignores tokens after t."""
    config = QFormerConfig.named("tiny")
    model = QFormer(config).eval()
    queries, image, text = inputs(config)
    Q, L = config.num_query_tokens, text.shape[1]
    changed = text.clone()
    changed[:, 3:] = torch.randn(B, L - 3, config.hidden_size)  # change tokens 3 and later
    with torch.no_grad():
        a = model(queries, image, text, attention_pattern=itg_mask(Q, L))
        b = model(queries, image, changed, attention_pattern=itg_mask(Q, L))
        c = model(queries, torch.randn_like(image), text, attention_pattern=itg_mask(Q, L))
    torch.testing.assert_close(a[:, :Q + 3], b[:, :Q + 3])  # queries and tokens 0..2 unchanged
    assert not torch.allclose(a[:, Q + 3:], b[:, Q + 3:])
    assert not torch.allclose(a[:, Q:], c[:, Q:])  # the text reads the image through the queries


# --- losses --------------------------------------------------------------------------------------


def test_itc_loss_equals_a_hand_computation() -> None:
    g = torch.Generator().manual_seed(5)
    query_feats, text_feat = torch.randn(3, 4, 6, generator=g), torch.randn(3, 6, generator=g)
    tau = 0.5
    sim = torch.zeros(3, 3)
    for i in range(3):
        for j in range(3):  # the best of image i's 4 queries against text j, as a cosine
            sim[i, j] = max(F.cosine_similarity(query_feats[i, q], text_feat[j], dim=0) for q in range(4))
    torch.testing.assert_close(itc_similarity(query_feats, text_feat), sim)
    image_to_text = -sum(math.log(math.exp(sim[i, i] / tau) / sum(math.exp(sim[i, j] / tau) for j in range(3)))
                         for i in range(3)) / 3
    text_to_image = -sum(math.log(math.exp(sim[j, j] / tau) / sum(math.exp(sim[i, j] / tau) for i in range(3)))
                         for j in range(3)) / 3
    got = itc_loss(query_feats, text_feat, tau)
    assert abs(got.item() - (image_to_text + text_to_image) / 2) < 1e-5
    with pytest.raises(ValueError, match="one text per image"):
        itc_loss(query_feats, text_feat[:2], tau)
    with pytest.raises(ValueError, match="same width"):
        itc_similarity(query_feats, torch.randn(3, 5))


def test_hard_negatives_are_never_the_pair_itself_and_follow_the_similarity() -> None:
    logits = torch.tensor([[5.0, 4.9, -9.0], [0.0, 5.0, 0.0], [-9.0, 4.0, 5.0]])
    for seed in range(10):
        negative_text, negative_image = sample_hard_negatives(logits, torch.Generator().manual_seed(seed))
        assert (negative_text != torch.arange(3)).all() and (negative_image != torch.arange(3)).all()
    counts = torch.zeros(3, dtype=torch.long)
    g = torch.Generator().manual_seed(0)
    for _ in range(100):
        counts[sample_hard_negatives(logits, g)[0][0]] += 1
    assert counts[1] >= 99  # image 0's most confusable text (4.9) is drawn nearly always; -9.0 almost never
    a = sample_hard_negatives(logits, torch.Generator().manual_seed(7))
    b = sample_hard_negatives(logits, torch.Generator().manual_seed(7))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    with pytest.raises(ValueError, match="at least 2 pairs"):
        sample_hard_negatives(torch.zeros(1, 1))
    with pytest.raises(ValueError, match="square"):
        sample_hard_negatives(torch.zeros(2, 3))


def test_hard_negatives_skip_pairs_marked_as_matching() -> None:
    # texts 0 and 1 are the same caption: for image 0, text 1 is the most similar and yet a match
    logits = torch.tensor([[5.0, 4.9, 0.0], [4.9, 5.0, 0.0], [0.0, 0.0, 5.0]])
    matches = torch.tensor([[True, True, False], [True, True, False], [False, False, True]])
    for seed in range(20):
        negative_text, negative_image = sample_hard_negatives(logits, torch.Generator().manual_seed(seed), matches)
        assert negative_text[:2].tolist() == [2, 2] and negative_image[:2].tolist() == [2, 2]
        assert negative_text[2] in (0, 1) and negative_image[2] in (0, 1)
    unmasked = [sample_hard_negatives(logits, torch.Generator().manual_seed(seed))[0][0].item() for seed in range(20)]
    assert unmasked.count(1) >= 15  # without the mask, image 0's "negative" is nearly always its own caption
    with pytest.raises(ValueError, match="no negative"):
        sample_hard_negatives(logits[:2, :2], None, matches[:2, :2])
    with pytest.raises(ValueError, match=r"matches must be \(B, B\)"):
        sample_hard_negatives(logits, None, matches[:2])


@pytest.fixture(scope="module")
def stage1() -> QFormerForPretraining:
    torch.manual_seed(0)
    return QFormerForPretraining(QFormerConfig.named("tiny")).eval()


def batch(seed: int = 2, B: int = 3, L: int = 6):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, N, 24, generator=g), torch.randint(1, 64, (B, L), generator=g)


def test_itm_loss_scores_positives_and_the_sampled_negatives(stage1: QFormerForPretraining) -> None:
    image, ids = batch()
    logits = torch.randn(3, 3, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        got = itm_loss(stage1, image, ids, logits, torch.Generator().manual_seed(11))
        negative_text, negative_image = sample_hard_negatives(logits, torch.Generator().manual_seed(11))
        pairs = [(image[i], ids[i], 1) for i in range(3)] + [(image[i], ids[negative_text[i]], 0) for i in range(3)] \
            + [(image[negative_image[j]], ids[j], 0) for j in range(3)]
        losses = [F.cross_entropy(stage1.match_logits(im[None], t[None]), torch.tensor([y])) for im, t, y in pairs]
    torch.testing.assert_close(got, torch.stack(losses).mean(), atol=1e-5, rtol=1e-5)


def test_itg_loss_is_next_token_cross_entropy(stage1: QFormerForPretraining) -> None:
    image, ids = batch()
    mask = torch.ones_like(ids)
    mask[0, -2:] = 0
    with torch.no_grad():
        logits = stage1.caption_logits(image, ids, mask)  # (B, L, V)
        got = itg_loss(stage1, image, ids, mask)
    log_probs = logits.log_softmax(-1)
    terms = [-log_probs[b, t, ids[b, t + 1]] for b in range(3) for t in range(5) if mask[b, t + 1]]
    torch.testing.assert_close(got, torch.stack(terms).mean())
    assert len(terms) == 13  # 3 * 5 targets, minus the 2 padded ones
    with pytest.raises(ValueError, match="at least 2 text tokens"):
        next_token_loss(logits[:, :1], ids[:, :1])


def test_stage1_losses_are_finite_and_train_the_queries(stage1: QFormerForPretraining) -> None:
    image, ids = batch(B=4)
    losses = stage1.stage1_losses(image, ids, generator=torch.Generator().manual_seed(0))
    assert set(losses) == {"itc", "itm", "itg"}
    assert all(torch.isfinite(v) and v.ndim == 0 for v in losses.values())
    assert abs(losses["itm"].item() - math.log(2)) < 0.5  # an untrained matcher is close to a coin flip
    stage1.zero_grad()
    sum(losses.values()).backward()
    assert stage1.qformer.query_tokens.grad.abs().sum() > 0
    stage1.zero_grad()


def test_contrastive_features_keep_image_and_text_apart(stage1: QFormerForPretraining) -> None:
    image, ids = batch()
    other_ids = ids.flip(0)
    with torch.no_grad():
        q1, t1 = stage1.contrastive_features(image, ids)
        q2, _ = stage1.contrastive_features(image, other_ids)
        q3, t3 = stage1.contrastive_features(torch.randn_like(image), ids)
    assert q1.shape == (3, 4, 16) and t1.shape == (3, 16)
    torch.testing.assert_close(q1, q2)  # the query features never saw the text
    torch.testing.assert_close(t1, t3)  # the text feature never saw the image
    assert not torch.allclose(q1, q3, atol=1e-4)  # while the queries did
    with pytest.raises(ValueError, match="token ids must lie in 0..63"):
        stage1.embed_text(torch.full((1, 3), 64))


# --- InstructBLIP's instruction-aware Q-Former ---------------------------------------------------
def test_instruction_qformer_equals_transformers_instructblip_qformer() -> None:
    from transformers import InstructBlipQFormerConfig, InstructBlipQFormerModel

    from utils.qformer import InstructionQFormer

    torch.manual_seed(0)
    config = InstructBlipQFormerConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                       encoder_hidden_size=48, vocab_size=100, cross_attention_frequency=1)
    theirs = InstructBlipQFormerModel(config).eval()
    ours = InstructionQFormer.from_transformers(theirs).eval()
    image = torch.randn(2, 10, 48)  # (B, N, E)
    ids = torch.randint(0, 100, (2, 6))  # (B, L)
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2])  # the second instruction is padded
    queries = ours.qformer.query_tokens.expand(2, -1, -1)  # (B, Q, D)
    Q = queries.shape[1]
    full_mask = torch.cat([torch.ones(2, Q, dtype=torch.long), mask], dim=1)  # (B, Q + L): InstructBLIP's own layout
    with torch.no_grad():
        expected = theirs(input_ids=ids, attention_mask=full_mask, query_embeds=queries,
                          encoder_hidden_states=image).last_hidden_state[:, :Q]
        got = ours(image, ids, mask)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # the queries depend on the instruction (BLIP-2's would not)
        other = ours(image, torch.randint(0, 100, (2, 6)), mask)
    assert (other - got).abs().max() > 1e-3
    with pytest.raises(TypeError, match="InstructBLIP"):
        InstructionQFormer.from_transformers(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="Q-Former's own tokenizer"):
        ours(image, torch.full((2, 6), 100), mask)  # an id past the vocabulary: another tokenizer's
    with pytest.raises(ValueError, match="integer token ids"):
        ours(image, torch.zeros(2, 6), mask)
