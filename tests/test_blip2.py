"""utils/blip2.py: scene notes, the tiny configuration, tokenizer and processor, and the scores."""

from __future__ import annotations

import pytest
import torch

from utils import blip2, tiny_lm
from utils.shapes import COLOURS, SHAPES, ShapesWorld, make_scene


@pytest.fixture(scope="module")
def scenes():
    return ShapesWorld(200, seed=3, split="train").scenes


@pytest.fixture(scope="module")
def tokenizer(scenes):
    return blip2.build_tokenizer(blip2.tokenizer_corpus(scenes))


def test_notes_have_fixed_slots(scenes) -> None:
    for scene in scenes:
        words = blip2.scene_notes(scene)
        assert len(words) == blip2.NUM_QUERY_TOKENS
        answers = dict(scene.qa)
        objects = scene.objects  # left to right, as in the caption
        for k in range(3):  # shape size colour, with the relation word between neighbours
            group = words[4 * k:4 * k + 3]
            expected = [objects[k].shape, objects[k].size, objects[k].colour] if k < len(objects) else ["none"] * 3
            assert group == expected
            if k:
                between = answers.get(f"Where is the {objects[k - 1].shape} relative to the {objects[k].shape}?") \
                    if k < len(objects) else "none"
                assert words[4 * k - 1] == between
        by_shape = {o.shape: o for o in objects}
        for k, shape in enumerate(SHAPES):
            o = by_shape.get(shape)
            assert words[blip2.BY_SHAPE + 3 * k:blip2.BY_SHAPE + 3 * k + 3] == \
                ([shape, o.size, o.colour] if o else [shape, "none", "none"])
        by_colour = {o.colour: o.shape for o in objects}
        assert words[blip2.BY_COLOUR:blip2.BY_PAIR] == [by_colour.get(c, "none") for c in COLOURS]
        for k, (a, b) in enumerate(blip2.SHAPE_PAIRS):
            assert words[blip2.BY_PAIR + k] == answers.get(f"Where is the {a} relative to the {b}?", "none")
        assert set(words[blip2.BY_PAIR + len(blip2.SHAPE_PAIRS):]) == {"."}


def test_answer_slot_points_at_the_note_word_that_answers(scenes) -> None:
    seen = set()
    for scene in scenes:
        words = blip2.scene_notes(scene)
        for question, answer, kind in scene.questions:
            slot = blip2.answer_slot(question)
            seen.add(kind)
            if kind == "count":
                assert slot is None
            elif kind == "exists":  # "Is there a red circle?": yes exactly when the red slot says circle
                shape = question.rstrip("?").split()[-1]
                assert (words[slot] == shape) == (answer == "yes")
            else:
                assert words[slot] == answer
    assert seen == {"count", "colour", "shape", "size", "exists", "relation"}
    with pytest.raises(ValueError, match="not a ShapesWorld question"):
        blip2.answer_slot("What is the meaning of life?")


def test_notes_refuse_too_few_slots() -> None:
    with pytest.raises(ValueError, match="slots"):
        blip2.scene_notes(make_scene(0), slots=20)


def test_every_note_word_is_one_token_and_the_tokenizer_adds_bos(tokenizer, scenes) -> None:
    ids = blip2.note_ids(tokenizer, blip2.scene_notes(scenes[0]))
    assert len(ids) == blip2.NUM_QUERY_TOKENS
    assert tokenizer.convert_ids_to_tokens(ids[:2]) == ["Ġ" + w for w in blip2.scene_notes(scenes[0])[:2]]
    encoded = tokenizer("a red circle")["input_ids"]
    assert encoded[0] == tokenizer.bos_token_id == tiny_lm.SPECIAL_TOKENS.index(tiny_lm.BOS)
    with pytest.raises(ValueError, match="one each"):
        blip2.note_ids(tokenizer, ["quadrilateral"])


def test_processor_puts_the_image_slots_before_bos(tokenizer) -> None:
    processor = blip2.build_processor(tokenizer)
    out = processor(images=make_scene(2).render(), text="Question: What colour is the circle? Answer:",
                    return_tensors="pt")
    ids = out["input_ids"][0].tolist()
    Q = blip2.NUM_QUERY_TOKENS
    assert ids[:Q] == [tiny_lm.SPECIAL_TOKENS.index(tiny_lm.IMAGE_TOKEN)] * Q
    assert ids[Q] == tokenizer.bos_token_id
    assert tokenizer.decode(ids[Q + 1:]) == "Question: What colour is the circle? Answer:"
    pixels = out["pixel_values"]
    assert pixels.shape == (1, 3, 64, 64)
    expected = make_scene(2).to_tensor() * 2 - 1  # (x - 0.5) / 0.5, no resampling at 64 x 64
    assert torch.allclose(pixels[0], expected, atol=1e-5)


def test_tiny_config_builds_a_blip2_with_a_llama_lm(tokenizer) -> None:
    from transformers import Blip2ForConditionalGeneration, CLIPVisionConfig

    vision = CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                              image_size=64, patch_size=8)
    config = blip2.tiny_blip2_config(vision, vocab_size=len(tokenizer))
    assert config.text_config.model_type == "llama"
    assert config.qformer_config.encoder_hidden_size == 64 and config.num_query_tokens == 32
    model = Blip2ForConditionalGeneration(config).eval()
    pixels = torch.zeros(2, 3, 64, 64)
    prompts = blip2.soft_prompts(model, pixels)
    assert prompts.shape == (2, 32, config.text_config.hidden_size)


def test_vision_from_clip_copies_every_weight() -> None:
    from transformers import Blip2VisionConfig, Blip2VisionModel, CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(0)
    clip = CLIPVisionModel(CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                            num_attention_heads=4, image_size=32, patch_size=8))
    ours = Blip2VisionModel(Blip2VisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                              num_attention_heads=4, image_size=32, patch_size=8, qkv_bias=True))
    src = clip.state_dict()  # CLIPVisionModel keeps its tower under "vision_model."
    src = {k.removeprefix("vision_model."): v for k, v in src.items()}
    blip2.vision_from_clip(ours, src)
    layer = ours.encoder.layers[1]
    assert torch.equal(layer.self_attn.qkv.weight[32:64], src["encoder.layers.1.self_attn.k_proj.weight"])
    assert torch.equal(layer.mlp.fc2.bias, src["encoder.layers.1.mlp.fc2.bias"])
    assert torch.equal(ours.embeddings.position_embedding[0], src["embeddings.position_embedding.weight"])


def test_blip2_opt_2_7b_has_3_7_billion_parameters() -> None:
    from transformers import Blip2ForConditionalGeneration

    with torch.device("meta"):
        big = Blip2ForConditionalGeneration(blip2.blip2_opt_2_7b_config())
    total = sum(p.numel() for p in big.parameters())
    bridge = sum(p.numel() for p in big.qformer.parameters()) + sum(p.numel() for p in big.language_projection.parameters())
    assert 3.7e9 < total < 3.8e9
    assert 0.02 < bridge / total < 0.04


def test_caption_score_compares_content_words_in_order() -> None:
    assert blip2.content_words("a large red circle, a small blue square and a green triangle") == [
        "large", "red", "circle", "small", "blue", "square", "green", "triangle"]
    assert blip2.caption_score("a large red circle", "a large red circle") == (3, 3)
    assert blip2.caption_score("a large red circle", "a small red circle to the left of a square") == (2, 5)
    assert blip2.caption_score("a large red circle", "") == (0, 3)


def test_answer_slot_rejects_other_questions() -> None:
    with pytest.raises(ValueError, match="not a ShapesWorld question"):
        blip2.answer_slot("Why is the sky blue?")


class _FixedScores(torch.nn.Module):
    """Stands in for the stage-1 model: image i's single query and text j's feature are fixed vectors,
    and ITM says "match" exactly for the pairs listed in ``matches``."""

    def __init__(self, image_feats: torch.Tensor, text_feats: torch.Tensor, matches: set[tuple[int, int]]) -> None:
        super().__init__()
        self.image_feats, self.text_feats, self.matches = image_feats, text_feats, matches

    def contrastive_features(self, features, ids, mask):
        return self.image_feats[features[:, 0, 0].long()].unsqueeze(1), self.text_feats[ids[:, 0]]

    def match_logits(self, features, ids, mask):
        hit = torch.tensor([(int(i), int(t)) in self.matches for i, t in zip(features[:, 0, 0], ids[:, 0])])
        return torch.stack([torch.zeros(len(hit)), hit.float() * 10 - 5], dim=1)


def test_stage_one_retrieval_counts_a_caption_shared_by_two_scenes_as_right() -> None:
    """Scenes 0 and 2 share a caption: image 0 retrieving text 2 is right. Chance is the share of equal
    caption pairs, and ITM re-ranks only within ITC's shortlist."""
    from scripts.train_blip2 import retrieval

    captions = ["a red circle", "a blue square", "a red circle", "a green triangle"]
    features = torch.arange(4.0).view(4, 1, 1).expand(4, 1, 2)  # image i is recognised by its index
    ids = torch.arange(4).view(4, 1)  # text j likewise
    images = torch.eye(4)
    images[1, 2] = 0.3  # image 1: its own text first, text 0 second
    texts = torch.eye(4)[[2, 1, 0, 3]]  # image 0 and 2 swap captions
    perfect_itm = _FixedScores(images, texts, {(i, i) for i in range(4)})
    scores = retrieval(perfect_itm, features, ids, torch.ones_like(ids), captions, rerank=2)
    assert scores["image->text ITC"] == scores["text->image ITC"] == 1.0
    assert scores["chance"] == round(6 / 16, 3)  # the diagonal and the pair (0, 2) both ways
    assert scores["image->text ITC+ITM"] == 1.0
    wrong_itm = _FixedScores(images, texts, {(1, 0)})  # ITM prefers text 0 for image 1, if ITC lets it see it
    scores = retrieval(wrong_itm, features, ids, torch.ones_like(ids), captions, rerank=2)
    assert scores["image->text ITC+ITM"] == 0.75  # text 0 is second in image 1's shortlist, and ITM picks it


def test_note_word_share_counts_slots_that_read_as_the_note() -> None:
    scenes = [make_scene(k, seed=3) for k in range(2)]
    notes = [blip2.scene_notes(s) for s in scenes]
    assert blip2.note_word_share(notes, scenes) == 1.0
    wrong_first = [["?", *row[1:]] for row in notes]
    assert blip2.note_word_share(wrong_first, scenes) == 1 - 1 / blip2.NUM_QUERY_TOKENS
    with pytest.raises(ValueError, match="one row per scene"):
        blip2.note_word_share(notes[:1], scenes)
