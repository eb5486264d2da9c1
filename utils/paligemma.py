"""A tiny PaliGemma that grounds and refers on ShapesWorld (chapter 6).

PaliGemma is a vision tower, one linear projection and a decoder LM that reads the image tokens
and a task prefix with full attention and writes the answer causally (a prefix-LM). Boxes are
text: four location tokens per box (:mod:`utils.grounding`). The tiny one keeps all of that and
uses transformers' own ``PaliGemmaForConditionalGeneration``:

- the vision tower is the tiny CLIP's (chapter 2) instead of SigLIP, so the LM reads 1 + N image
  tokens ([CLS] and the patches);
- the LM is the course's tiny Llama-style decoder (:mod:`utils.tiny_lm`) instead of Gemma;
- boxes use :data:`BINS` = 32 location tokens per axis instead of 1024, as the images are 64 px.

Three prefixes, one model:

=======================  ==========================================  =========================
task                     prefix                                      answer
=======================  ==========================================  =========================
detection (grounding)    ``detect red circle``                       ``<loc..>x4 red circle``
referring, coordinates   ``describe <loc..>x4``                      ``small red circle``
referring, hybrid        ``describe <loc..>x4 <region>``             ``small red circle``
=======================  ==========================================  =========================

The hybrid form is Ferret's idea: a region is named by its coordinates *and* by a feature pooled
from the image inside it. Here ``<region>`` is replaced by the mean of the projected patch
features whose centres lie in the box (Ferret's "visual sampler" is a learned point sampler).

Shapes ledger (see ``utils/__init__.py``): B batch, N patches, D LM width, L tokens, V vocabulary.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from utils import grounding, tiny_lm
from utils.shapes import Scene, ShapeObject
from utils.tiny_lm import BOS, EOS, IGNORE_INDEX, IMAGE_TOKEN, SPECIAL_TOKENS

BINS = 32  # location tokens per axis: 2 px per bin on a 64 px image
REGION_TOKEN = "<region>"
TASKS = ("detect", "refer", "hybrid")
IMAGE_TOKEN_ID = SPECIAL_TOKENS.index(IMAGE_TOKEN)
SEPARATOR = "\n"  # PaliGemma ends the prefix with a newline


def label(o: ShapeObject) -> str:
    """How a detection names an object: ``"red circle"``."""
    return f"{o.colour} {o.shape}"


def unique_objects(scene: Scene) -> list[ShapeObject]:
    """The objects a referring expression "colour shape" names without ambiguity."""
    names = [label(o) for o in scene.objects]
    return [o for o in scene.objects if names.count(label(o)) == 1]


def prefix_and_answer(task: str, scene: Scene, target: ShapeObject) -> tuple[str, str]:
    """The text of one example: the task prefix and the answer the model should write."""
    if task == "detect":
        return f"detect {label(target)}", f"{grounding.loc_tokens(target.box, BINS)} {label(target)}"
    if task in ("refer", "hybrid"):
        region = f" {REGION_TOKEN}" if task == "hybrid" else ""
        return f"describe {grounding.loc_tokens(target.box, BINS)}{region}", f"{target.size} {label(target)}"
    raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")


def build_tokenizer(scenes: Sequence[Scene], vocab_size: int = 512):
    """The tiny LM's byte-level BPE, learned from the task texts, plus the location tokens and
    ``<region>`` as whole tokens (added, not special, so decoding keeps them)."""
    rng = random.Random(0)
    texts = []
    for scene in scenes:
        target = rng.choice(scene.objects)
        for task in TASKS:
            texts.extend(prefix_and_answer(task, scene, target))
    texts = [re.sub(r"<loc\d{4}>", " ", t).replace(REGION_TOKEN, " ") for t in texts]  # words only
    tokenizer = tiny_lm.build_tokenizer(texts, vocab_size, bos_first=False)
    tokenizer.add_tokens([*grounding.loc_token_names(BINS), REGION_TOKEN])
    return tokenizer


def tiny_config(vision_config: Any, tokenizer: Any, **text_overrides: Any):
    """PaliGemmaConfig: the given CLIP vision config, the tiny LM named "paligemma", one linear
    projection, and the id of ``<region>`` (``region_token_id``)."""
    from transformers import PaliGemmaConfig

    text = tiny_lm.TinyLMConfig.named("paligemma", **text_overrides).to_llama(len(tokenizer))
    text.use_bidirectional_attention = None  # PaliGemmaConfig reads and sets this Gemma field; Llama ignores it
    config = PaliGemmaConfig(vision_config=vision_config.to_dict(), text_config=text,
                             image_token_id=IMAGE_TOKEN_ID, projection_dim=text.hidden_size)
    config.tie_word_embeddings = True
    config.region_token_id = tokenizer.convert_tokens_to_ids(REGION_TOKEN)
    return config


def image_tokens(config: Any) -> int:
    """Positions one image fills: the CLIP tower's [CLS] and its patches."""
    vision = config.vision_config
    return (vision.image_size // vision.patch_size) ** 2 + 1


@dataclass
class Encoded:
    """One example as ids: the prefix (image tokens, ``<s>``, the task, a newline) then the answer."""

    input_ids: list[int]
    token_type_ids: list[int]  # 0 prefix (full attention), 1 answer (causal)
    labels: list[int]


def encode(tokenizer: Any, config: Any, prefix: str, answer: str | None = None) -> Encoded:
    """Token ids, token types and labels (only the answer and its ``</s>`` are learned)."""
    prompt = [IMAGE_TOKEN_ID] * image_tokens(config) + [tokenizer.convert_tokens_to_ids(BOS)]
    prompt += tokenizer(prefix + SEPARATOR, add_special_tokens=False).input_ids
    suffix = [] if answer is None else tokenizer(answer, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
    ids, labels = tiny_lm.with_labels(prompt, suffix)
    return Encoded(ids, [0] * len(prompt) + [1] * len(suffix), labels)


def collate(items: Sequence[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch: ids, token types, attention mask, labels (B, L)."""
    L = max(len(it.input_ids) for it in items)
    pad = lambda xs, v: [x + [v] * (L - len(x)) for x in xs]  # noqa: E731
    ids = [it.input_ids for it in items]
    return {"input_ids": torch.tensor(pad(ids, pad_id)),
            "token_type_ids": torch.tensor(pad([it.token_type_ids for it in items], 1)),
            "attention_mask": torch.tensor(pad([[1] * len(x) for x in ids], 0)),
            "labels": torch.tensor(pad([it.labels for it in items], IGNORE_INDEX))}


def patch_centres(config: Any) -> torch.Tensor:
    """(N, 2) normalised (x, y) centres of the patch grid, row by row."""
    side = config.vision_config.image_size // config.vision_config.patch_size
    c = (torch.arange(side) + 0.5) / side
    y, x = torch.meshgrid(c, c, indexing="ij")
    return torch.stack([x.flatten(), y.flatten()], dim=-1)


def region_weights(config: Any, boxes: torch.Tensor) -> torch.Tensor:
    """(B, N) weights averaging the patches whose centres lie in each box (B, 4); a box too small to
    hold a centre takes the patch nearest its centre."""
    centres = patch_centres(config)  # (N, 2)
    x, y = centres[:, 0], centres[:, 1]
    inside = ((x >= boxes[:, None, 0]) & (x <= boxes[:, None, 2]) & (y >= boxes[:, None, 1])
              & (y <= boxes[:, None, 3])).float()  # (B, N)
    middle = torch.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], -1)  # (B, 2)
    nearest = torch.cdist(middle, centres).argmin(-1)  # (B,)
    empty = inside.sum(-1) == 0
    inside[empty, nearest[empty]] = 1.0
    return inside / inside.sum(-1, keepdim=True)


def image_features(model: Any, pixel_values: torch.Tensor) -> torch.Tensor:
    """Projected image features (B, 1 + N, D): the tower's [CLS] and patch states through the projection."""
    return model.model.get_image_features(pixel_values).pooler_output


def embed(model: Any, batch: dict[str, torch.Tensor], features: torch.Tensor,
          region_boxes: torch.Tensor | None = None) -> torch.Tensor:
    """The LM's input (B, L, D): token embeddings, the image ``features`` (B, 1 + N, D) at the image
    tokens, and at each ``<region>`` the mean projected patch feature inside that row's box."""
    ids = batch["input_ids"]
    embeds = model.get_input_embeddings()(ids)  # (B, L, D)
    image = ids == model.config.image_token_id
    embeds = embeds.masked_scatter(image[..., None], features.to(embeds.dtype))
    region_id = getattr(model.config, "region_token_id", None)
    if region_boxes is not None and region_id is not None and (ids == region_id).any():
        weights = region_weights(model.config, region_boxes.to(torch.float32))  # (B, N)
        pooled = torch.einsum("bn,bnd->bd", weights.to(features.dtype), features[:, 1:])  # (B, D), [CLS] skipped
        at = ids == region_id  # (B, L), at most one per row
        embeds = torch.where(at[..., None], pooled[:, None].to(embeds.dtype), embeds)
    return embeds


def forward(model: Any, batch: dict[str, torch.Tensor], pixel_values: torch.Tensor | None = None,
            region_boxes: torch.Tensor | None = None, features: torch.Tensor | None = None) -> torch.Tensor:
    """Logits (B, L, V), with PaliGemma's prefix-LM mask built from ``token_type_ids``; pass the
    ``pixel_values`` or their :func:`image_features`."""
    if features is None:
        features = image_features(model, pixel_values)
    embeds = embed(model, batch, features, region_boxes)
    return model(inputs_embeds=embeds, token_type_ids=batch["token_type_ids"],
                 attention_mask=batch["attention_mask"]).logits


def prompt_batch(tokenizer: Any, config: Any, prefixes: Sequence[str]) -> dict[str, torch.Tensor]:
    """Prompts (no answers) left-padded into a batch, as generation needs: every row ends where its
    answer starts. ``input_ids``, ``token_type_ids`` (all 0) and ``attention_mask``, (B, L)."""
    prompts = [encode(tokenizer, config, p).input_ids for p in prefixes]
    L = max(len(x) for x in prompts)
    pad = tokenizer.pad_token_id
    return {"input_ids": torch.tensor([[pad] * (L - len(x)) + x for x in prompts]),
            "token_type_ids": torch.zeros(len(prompts), L, dtype=torch.long),
            "attention_mask": torch.tensor([[0] * (L - len(x)) + [1] * len(x) for x in prompts])}


@torch.no_grad()
def greedy(model: Any, tokenizer: Any, prefixes: Sequence[str], pixel_values: torch.Tensor,
           region_boxes: torch.Tensor | None = None, max_new_tokens: int = 8) -> list[str]:
    """Answers to ``prefixes`` (one per image), greedily, recomputing the whole sequence per token."""
    batch = prompt_batch(tokenizer, model.config, prefixes)
    pad, L0 = tokenizer.pad_token_id, batch["input_ids"].shape[1]
    done = torch.zeros(len(prefixes), dtype=torch.bool)
    features = image_features(model, pixel_values)  # once: the image does not change while answering
    for _ in range(max_new_tokens):
        logits = forward(model, batch, region_boxes=region_boxes, features=features)[:, -1]  # (B, V)
        nxt = torch.where(done, pad, logits.argmax(-1))  # (B,)
        attend = (~done).long()[:, None]  # padding after a finished answer is not attended to
        done |= nxt == tokenizer.eos_token_id
        batch = {"input_ids": torch.cat([batch["input_ids"], nxt[:, None]], 1),
                 "token_type_ids": torch.cat([batch["token_type_ids"], torch.ones_like(attend)], 1),  # answer: causal
                 "attention_mask": torch.cat([batch["attention_mask"], attend], 1)}
        if done.all():
            break
    new = batch["input_ids"][:, L0:]
    texts = tokenizer.batch_decode(new, skip_special_tokens=False)
    return [t.split(EOS)[0].replace(tokenizer.pad_token, "").strip() for t in texts]


def answer_all(model: Any, tokenizer: Any, prefixes: Sequence[str], pixel_values: torch.Tensor,
               region_boxes: torch.Tensor | None = None, batch_size: int = 100) -> list[str]:
    """:func:`greedy` over many prompts, ``batch_size`` at a time."""
    out = []
    for b in range(0, len(prefixes), batch_size):
        boxes = None if region_boxes is None else region_boxes[b:b + batch_size]
        out += greedy(model, tokenizer, prefixes[b:b + batch_size], pixel_values[b:b + batch_size], boxes)
    return out


def held_out_targets(scenes: Sequence[Scene], seed: str = "paligemma/test") -> list[tuple[int, ShapeObject]]:
    """One (scene index, object) per scene that has an object its colour and shape name uniquely."""
    rng = random.Random(seed)
    return [(i, rng.choice(unique_objects(s))) for i, s in enumerate(scenes) if unique_objects(s)]


def parse_or_none(answer: str) -> tuple[tuple[float, float, float, float], str] | None:
    """The first detection in ``answer``, or None when it is not four location tokens and a label."""
    try:
        found = grounding.parse_detections(answer, BINS)
    except ValueError:
        return None
    return found[0] if found else None
