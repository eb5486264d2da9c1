"""utils.fromage: new tokens around a frozen LM (FROMAGe's [RET], GILL's [IMG] and mapper), and the shipped heads."""

from __future__ import annotations

import pytest
import torch

from utils import clip as clip_utils, fromage, zoo
from utils.shapes import ShapesWorld


@pytest.fixture(scope="module")
def parts():
    from transformers import CLIPModel, CLIPProcessor

    lm = fromage.load_frozen_lm(zoo.path("llava", mode="tiny"))
    heads = fromage.FromageHeads.from_pretrained(zoo.path("fromage")).eval()
    clip = CLIPModel.from_pretrained(zoo.path("clip", mode="tiny")).eval()
    return lm, heads, clip, CLIPProcessor.from_pretrained(zoo.path("clip", mode="tiny"))


def test_the_lm_stays_frozen_and_new_tokens_follow_its_vocabulary(parts) -> None:
    lm, heads, _, _ = parts
    assert not any(p.requires_grad for p in lm.model.parameters())
    V = lm.model.config.vocab_size
    assert heads.ret_id == V and heads.img_ids == list(range(V + 1, V + 1 + heads.config.num_img_tokens))
    ids = torch.tensor([fromage.text_ids(lm, "Draw a red circle.") + fromage.answer_ids(lm, heads, img=True)])
    hidden, logits = fromage.run_lm(lm, heads, ids, torch.ones_like(ids))
    assert logits.shape == (1, ids.shape[1], V + 1 + heads.config.num_img_tokens)
    assert fromage.conditioning(heads, hidden, ids).shape == (1, heads.config.cond_length, heads.config.cond_dim)


def test_image_slots_take_the_soft_tokens(parts) -> None:
    lm, heads, _, _ = parts
    ids = torch.tensor([fromage.text_ids(lm, fromage.CAPTION_REQUEST, image=True, k=heads.config.prefix_tokens)])
    assert int((ids == lm.image_token_id).sum()) == heads.config.prefix_tokens
    a, b = torch.randn(1, heads.config.embed_dim), torch.randn(1, heads.config.embed_dim)
    ea, eb = fromage.embed(lm, heads, ids, a), fromage.embed(lm, heads, ids, b)
    slots = ids[0] == lm.image_token_id
    assert not torch.allclose(ea[0, slots], eb[0, slots]) and torch.equal(ea[0, ~slots], eb[0, ~slots])


def test_the_lm_writes_the_new_tokens_itself(parts) -> None:
    lm, heads, _, _ = parts
    firsts = fromage.first_new_token(lm, heads, ["Find a small red circle.", "Draw a large blue square.",
                                                 "Find a green triangle above a purple circle."])
    assert firsts == [fromage.RET, "[IMG0]", fromage.RET]


def test_retrieval_from_the_lm_beats_chance_by_far(parts) -> None:
    lm, heads, clip, processor = parts
    world = ShapesWorld(200, seed=65, split="test")
    captions = [s.caption for s in world.scenes]
    with torch.no_grad():
        images = clip_utils.encode_images(clip, processor, [s.render() for s in world.scenes])
        similarity = fromage.retrieval_queries(lm, heads, captions) @ fromage.image_keys(heads, images).T
    recall = clip_utils.caption_recall_at_k(similarity, captions, captions, 1)
    assert recall >= 10 * clip_utils.chance_caption_recall_at_k(captions, captions, 1) and recall >= 0.5


def test_gill_conditioning_is_close_to_the_text_encoders(parts) -> None:
    from transformers import CLIPTextModel, CLIPTokenizer

    lm, heads, _, _ = parts
    folder = zoo.path("sd", mode="tiny")
    tokenizer = CLIPTokenizer.from_pretrained(f"{folder}/tokenizer")
    encoder = CLIPTextModel.from_pretrained(f"{folder}/text_encoder", variant="fp16", dtype=torch.float32).eval()
    captions = ["a small red circle", "a large purple triangle", "a small yellow square"]
    with torch.no_grad():
        target = encoder(tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length,
                                   return_tensors="pt").input_ids)[0]
        mapped = fromage.draw_conditioning(lm, heads, captions)
    assert ((mapped - target).norm() / target.norm()).item() < 0.2


def test_threshold_separates_calibration_scores_and_rejects_one_sided_data() -> None:
    scores = torch.tensor([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    has = torch.tensor([False, False, False, True, True, True])
    tau = fromage.fit_threshold(scores, has)
    assert 0.3 < tau < 0.7 and torch.equal(scores >= tau, has)
    with pytest.raises(ValueError, match="with and without a match"):
        fromage.fit_threshold(scores, torch.ones(6, dtype=torch.bool))


def test_an_empty_gallery_is_refused(parts) -> None:
    lm, heads, _, _ = parts
    with pytest.raises(ValueError, match="gallery is empty"):
        fromage.best_match_scores(lm, heads, ["a red circle"], torch.zeros(0, heads.config.embed_dim))


def test_empty_requests_and_wrong_embeddings_are_refused(parts) -> None:
    lm, heads, _, _ = parts
    with pytest.raises(ValueError, match="non-empty list"):
        fromage.retrieval_queries(lm, heads, [])
    with pytest.raises(ValueError, match="not a single string"):
        fromage.draw_conditioning(lm, heads, "a red circle")
    with pytest.raises(ValueError, match=r"expected embeddings \(B, 32\)"):
        fromage.caption_and_draw(lm, heads, torch.zeros(2, 16))
