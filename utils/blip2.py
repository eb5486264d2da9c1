"""The tiny ShapesWorld BLIP-2 of chapter 3: its configuration, tokenizer, processor, notes and scores.

The model is a real ``Blip2ForConditionalGeneration``: a frozen 3-block vision encoder (the tiny
CLIP's image tower, converted to BLIP's ViT layout), a frozen 6-block Llama-style language model
pretrained on ShapesWorld text, and between them a trained Q-Former with 32 query tokens and a
linear projection. ``scripts/train_blip2.py`` trains it; the chapter loads it with
``from_pretrained`` and talks to it through ``Blip2Processor`` and ``generate``.

**Scene notes.** A frozen LLM can only use soft prompts that look like something it has read. A
real LLM has read the web; ours has read, before every ShapesWorld question or caption, a fixed
32-word *note* of the scene (:func:`scene_notes`), laid out as four small tables::

    triangle large blue above circle small yellow none none none none   <- left to right (captions)
    circle small yellow  square none none  triangle large blue          <- by shape
    none none triangle circle none                     <- by colour: red green blue yellow purple
    none below none none above none .                  <- by ordered pair of shapes, then "."

Every question has its answer in one fixed slot (:func:`answer_slot`): counting from 0, the
circle's colour is always in slot 13, the shape of the red one in slot 20. During its text
pretraining the LM is shown where to look -- the heads of one block are trained to attend to that
slot -- because left to find the slot on its own, the tiny LM got stuck answering about the
leftmost object. Training the Q-Former, the soft prompt of query ``k`` is pulled towards the LM's
embedding of note word ``k`` as well as trained through the LM's loss: the notes are the
"language the frozen LLM already speaks", here made explicit.

Shapes ledger (see ``utils/__init__.py``): B batch, N patches (plus [CLS]), E image-feature width,
Q query tokens (= note slots), D Q-Former width, H the LM's width, L text tokens, V vocabulary size.
"""

from __future__ import annotations

import itertools
import re
from typing import Any, Iterable, Sequence

import torch

from utils import tiny_lm
from utils.shapes import COLOURS, RELATION_WORD, SHAPES, SIZES, Scene, relation
from utils.tiny_lm import IMAGE_TOKEN, SPECIAL_TOKENS

NUM_QUERY_TOKENS = 32
SHAPE_PAIRS: tuple[tuple[str, str], ...] = tuple(itertools.permutations(SHAPES, 2))  # ordered: (circle, square), ...
NONE = "none"
STOP = "."
TINY_QFORMER = dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, intermediate_size=384,
                    cross_attention_frequency=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
CONTENT_WORDS = frozenset(COLOURS) | frozenset(SHAPES) | frozenset(SIZES) | {"left", "right", "above", "below"}


def note_vocabulary() -> list[str]:
    """Every word a note can hold; each must be one token of the tokenizer."""
    return [*SHAPES, *SIZES, *COLOURS, *RELATION_WORD.values(), NONE, STOP]


# Where each table of the note starts (see scene_notes).
BY_SHAPE = 4 * len(SHAPES) - 1
BY_COLOUR = BY_SHAPE + 3 * len(SHAPES)
BY_PAIR = BY_COLOUR + len(COLOURS)


def scene_notes(scene: Scene, slots: int = NUM_QUERY_TOKENS) -> list[str]:
    """The scene's note: exactly ``slots`` words (see the module docstring).

    1. Left to right, as in the caption: ``shape size colour`` per object with the relation word
       between neighbours (where the left one is relative to the next); ``none`` where no object is.
    2. By shape (circle, square, triangle): ``shape size colour``, ``shape none none`` if absent.
    3. By colour (in ``COLOURS`` order): the shape of that colour, or ``none``.
    4. By ordered pair of shapes (``SHAPE_PAIRS``): where ``a`` is relative to ``b``, or ``none``.

    Then "." up to ``slots``.
    """
    objects = scene.objects
    words: list[str] = []
    for k in range(len(SHAPES)):
        if k:
            words.append(RELATION_WORD[relation(objects[k - 1], objects[k])] if k < len(objects) else NONE)
        words += [objects[k].shape, objects[k].size, objects[k].colour] if k < len(objects) else [NONE] * 3
    by_shape = {o.shape: o for o in objects}
    for shape in SHAPES:
        o = by_shape.get(shape)
        words += [shape, o.size, o.colour] if o else [shape, NONE, NONE]
    by_colour = {o.colour: o.shape for o in objects}
    words += [by_colour.get(colour, NONE) for colour in COLOURS]
    for a, b in SHAPE_PAIRS:
        both = a in by_shape and b in by_shape
        words.append(RELATION_WORD[relation(by_shape[a], by_shape[b])] if both else NONE)
    if len(words) > slots:
        raise ValueError(f"a note has {len(words)} words but only {slots} slots")
    return words + [STOP] * (slots - len(words))


_QUESTION_SLOTS = (  # (pattern, slot of the answer given the matched words)
    (re.compile(r"What colour is the (\w+)\?"), lambda s: BY_SHAPE + 3 * SHAPES.index(s) + 2),
    (re.compile(r"Is the (\w+) small or large\?"), lambda s: BY_SHAPE + 3 * SHAPES.index(s) + 1),
    (re.compile(r"What shape is the (\w+) one\?"), lambda c: BY_COLOUR + list(COLOURS).index(c)),
    (re.compile(r"Is there a (\w+) \w+\?"), lambda c: BY_COLOUR + list(COLOURS).index(c)),
    (re.compile(r"Where is the (\w+) relative to the (\w+)\?"), lambda a, b: BY_PAIR + SHAPE_PAIRS.index((a, b))),
)


def answer_slot(question: str) -> int | None:
    """The note slot that answers a ShapesWorld question (None for "How many shapes are there?").

    For "Is there a red circle?" it is the red slot of the by-colour table: the answer is "yes"
    exactly when that slot says "circle".
    """
    for pattern, slot in _QUESTION_SLOTS:
        match = pattern.fullmatch(question)
        if match:
            return slot(*match.groups())
    if question == "How many shapes are there?":
        return None
    raise ValueError(f"not a ShapesWorld question: {question!r}")


def note_ids(tokenizer: Any, words: Sequence[str]) -> list[int]:
    """Token ids of note words, one token per word (each read with a leading space: ``Ġred``)."""
    ids = []
    for w in words:
        piece = tokenizer(" " + w, add_special_tokens=False)["input_ids"]
        if len(piece) != 1:
            raise ValueError(f"the note word {w!r} is {len(piece)} tokens for this tokenizer; notes need one each")
        ids.append(piece[0])
    return ids


def build_tokenizer(texts: Iterable[str], vocab_size: int = 1024):
    """The tiny LM's byte-level BPE, putting ``<s>`` before every text as OPT's does
    (``Blip2Processor`` registers ``<image>``, id 4, itself); every note word must be one token."""
    tokenizer = tiny_lm.build_tokenizer(texts, vocab_size, bos_first=True)
    note_ids(tokenizer, note_vocabulary())  # fails early if a note word is split
    return tokenizer


def tokenizer_corpus(scenes: Sequence[Scene], repeats: int = 20) -> list[str]:
    """Captions, questions with answers, chat prompts and notes: the text the tiny BLIP-2 reads."""
    notes = [" ".join(scene_notes(s)) for s in scenes[:3000]]
    return tiny_lm.tokenizer_corpus(scenes, "Question: {q} Answer: {a}.", notes, [" " + " ".join(note_vocabulary())],
                                    repeats=repeats)


def tiny_blip2_config(vision_config: Any, vocab_size: int, **text_overrides: Any):
    """Blip2Config: a BLIP ViT shaped like the tiny CLIP tower, a 4-layer Q-Former, the tiny LM named "blip2"."""
    from transformers import Blip2Config, Blip2QFormerConfig, Blip2VisionConfig

    v = vision_config
    vision = Blip2VisionConfig(hidden_size=v.hidden_size, intermediate_size=v.intermediate_size,
                               num_hidden_layers=v.num_hidden_layers, num_attention_heads=v.num_attention_heads,
                               image_size=v.image_size, patch_size=v.patch_size, qkv_bias=True,
                               layer_norm_eps=v.layer_norm_eps, hidden_act=v.hidden_act)
    qformer = Blip2QFormerConfig(vocab_size=vocab_size, encoder_hidden_size=v.hidden_size, **TINY_QFORMER)
    text = tiny_lm.TinyLMConfig.named("blip2", **text_overrides).to_llama(vocab_size)
    return Blip2Config(vision_config=vision, qformer_config=qformer, text_config=text,
                       num_query_tokens=NUM_QUERY_TOKENS, image_token_index=SPECIAL_TOKENS.index(IMAGE_TOKEN))


@torch.no_grad()
def vision_from_clip(vision_model: Any, clip_vision_state: dict[str, torch.Tensor]) -> None:
    """Copy a CLIP image tower into a BLIP-2 vision model of the same shape (fused qkv, no pre-LayerNorm).

    BLIP's ViT has no LayerNorm before the first block, so the copy is a starting point to train
    further, not the same function.
    """
    src = clip_vision_state
    vm = vision_model
    vm.embeddings.patch_embedding.weight.copy_(src["embeddings.patch_embedding.weight"])
    vm.embeddings.patch_embedding.bias.zero_()
    vm.embeddings.class_embedding.copy_(src["embeddings.class_embedding"].view(1, 1, -1))
    vm.embeddings.position_embedding.copy_(src["embeddings.position_embedding.weight"].unsqueeze(0))
    for i, layer in enumerate(vm.encoder.layers):
        pre = f"encoder.layers.{i}."
        layer.self_attn.qkv.weight.copy_(torch.cat([src[pre + f"self_attn.{n}_proj.weight"] for n in "qkv"]))
        layer.self_attn.qkv.bias.copy_(torch.cat([src[pre + f"self_attn.{n}_proj.bias"] for n in "qkv"]))
        layer.self_attn.projection.weight.copy_(src[pre + "self_attn.out_proj.weight"])
        layer.self_attn.projection.bias.copy_(src[pre + "self_attn.out_proj.bias"])
        for name in ("layer_norm1", "layer_norm2", "mlp.fc1", "mlp.fc2"):
            module = layer.get_submodule(name)
            module.weight.copy_(src[pre + name + ".weight"])
            module.bias.copy_(src[pre + name + ".bias"])
    vm.post_layernorm.weight.copy_(src["post_layernorm.weight"])
    vm.post_layernorm.bias.copy_(src["post_layernorm.bias"])


def image_processor(image_size: int = 64):
    """BLIP's image processor for the tiny model: RGB, squashed to ``image_size`` square, scaled to [-1, 1]."""
    from transformers import BlipImageProcessor

    return BlipImageProcessor(size={"height": image_size, "width": image_size}, image_mean=[0.5] * 3,
                              image_std=[0.5] * 3, do_convert_rgb=True)


def build_processor(tokenizer: Any, image_size: int = 64):
    """Blip2Processor that puts the 32 ``<image>`` tokens before ``<s>`` and the prompt."""
    from transformers import Blip2Processor

    return Blip2Processor(image_processor=image_processor(image_size), tokenizer=tokenizer,
                          num_query_tokens=NUM_QUERY_TOKENS)


def soft_prompts(model: Any, pixel_values: torch.Tensor) -> torch.Tensor:
    """Image -> frozen ViT -> Q-Former (queries cross-attend to the patches) -> projection: (B, Q, LM width)."""
    image_embeds = model.vision_model(pixel_values=pixel_values).last_hidden_state  # (B, 1 + N, E)
    return queries_to_prompts(model, image_embeds)  # (B, Q, H)


def queries_to_prompts(model: Any, image_embeds: torch.Tensor) -> torch.Tensor:
    """The trainable part: query tokens through the Q-Former over ``image_embeds``, then the linear projection."""
    queries = model.query_tokens.expand(image_embeds.shape[0], -1, -1)  # (B, Q, D)
    mask = torch.ones(image_embeds.shape[:2], dtype=torch.long, device=image_embeds.device)  # (B, 1 + N)
    out = model.qformer(query_embeds=queries, encoder_hidden_states=image_embeds, encoder_attention_mask=mask)
    # transformers keeps the Q-Former in float32 inside a float16 model: back to the projection's dtype
    return model.language_projection(out.last_hidden_state.to(model.language_projection.weight.dtype))  # (B, Q, H)


@torch.no_grad()
def nearest_words(model: Any, tokenizer: Any, prompts: torch.Tensor) -> list[list[str]]:
    """For each soft prompt vector, the vocabulary word whose LM input embedding is closest (cosine)."""
    table = model.get_input_embeddings().weight.float()  # (V, H)
    table = table / table.norm(dim=-1, keepdim=True)
    p = prompts.float() / prompts.float().norm(dim=-1, keepdim=True)  # (B, Q, H)
    ids = (p @ table.T).argmax(-1)  # (B, Q, V) -> (B, Q)
    return [[tokenizer.convert_ids_to_tokens(int(i)).lstrip("Ġ") for i in row] for row in ids]


def note_word_share(words: Sequence[Sequence[str]], scenes: Sequence[Scene]) -> float:
    """The share of slots whose word (one row of :func:`nearest_words` per scene) is the scene's note word."""
    if len(words) != len(scenes):
        raise ValueError(f"{len(words)} rows of words but {len(scenes)} scenes: pass one row per scene")
    right = [a == b for row, scene in zip(words, scenes) for a, b in zip(row, scene_notes(scene), strict=True)]
    return sum(right) / len(right)


@torch.no_grad()
def answer_attention(model: Any, processor: Any, image: Any, question: str, layer: int, head: int) -> torch.Tensor:
    """Where one LM attention head looks while the model is about to answer ``question``.

    Returns the attention weights, shape (Q,), from the prompt's last position (the one that
    predicts the answer word) onto the Q soft prompts; ``head=-1`` averages the block's heads.
    """
    inputs = processor(images=image, text=f"Question: {question} Answer:", return_tensors="pt").to(model.device)
    inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)  # (1, C, H, W); input_ids (1, Q + L)
    with tiny_lm.eager_attention(model.language_model):
        out = model(**inputs, output_attentions=True).language_model_outputs
    weights = out.attentions[layer][0, :, -1].float()  # (nh, Q + L): from the last position
    weights = weights.mean(0) if head < 0 else weights[head]  # (Q + L,)
    return weights[inputs["input_ids"][0] == model.config.image_token_index].cpu()  # (Q,)


def content_words(text: str) -> list[str]:
    """The words a caption is scored on: colours, shapes, sizes and relation words, in order."""
    return [w for w in text.replace(",", " ").replace(".", " ").split() if w in CONTENT_WORDS]


def caption_score(truth: str, predicted: str) -> tuple[int, int]:
    """(content words right, content words compared): position by position, over the longer list."""
    t, p = content_words(truth), content_words(predicted)
    return sum(a == b for a, b in zip(t, p)), max(len(t), len(p), 1)


def generate_text(model: Any, processor: Any, images: Sequence[Any], prompts: Sequence[str | None],
              max_new_tokens: int, batch_size: int = 64) -> list[str]:
    """Greedy answers for (image, prompt) pairs; prompts of equal token length share a batch.

    Every image goes through ``utils.images.load_image`` (a path, a URL, bytes, an array ...).
    A prompt that does not fit the LM's context with the Q image tokens and the answer is refused.
    """
    from utils.images import load_image

    tokenizer = processor.tokenizer
    images = [load_image(image) for image in images]
    lengths = [len(tokenizer(p or "")["input_ids"]) for p in prompts]
    context, Q = getattr(model.config.text_config, "max_position_embeddings", None), model.config.num_query_tokens
    if context is not None and max(lengths) + Q + max_new_tokens > context:
        needed = max(lengths) + Q + max_new_tokens
        raise ValueError(f"a prompt of {max(lengths)} tokens does not fit: with {Q} image tokens and {max_new_tokens} "
                         f"new ones it needs {needed} positions, and the language model has {context}. "
                         "Shorten the question")
    answers: list[str | None] = [None] * len(prompts)
    for length in sorted(set(lengths)):
        group = [i for i, n in enumerate(lengths) if n == length]
        for start in range(0, len(group), batch_size):
            chunk = group[start:start + batch_size]
            inputs = processor(images=[images[i] for i in chunk], text=[prompts[i] or "" for i in chunk],
                               return_tensors="pt").to(model.device)  # input_ids (B, Q + L): Q <image> slots, <s>, prompt
            inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)  # (B, C, H, W)
            with torch.no_grad():
                out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                     pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
            new = out[:, inputs["input_ids"].shape[1]:]  # (B, new tokens)
            for i, row in zip(chunk, new):
                answers[i] = tokenizer.decode(row, skip_special_tokens=True).strip()
    return answers  # type: ignore[return-value]


def captions(model: Any, processor: Any, images: Sequence[Any], max_new_tokens: int = 24) -> list[str]:
    """Greedy captions: the image alone, then ``<s>``, as ``generate`` starts when there is no prompt."""
    return generate_text(model, processor, images, [None] * len(images), max_new_tokens)


def answers(model: Any, processor: Any, images: Sequence[Any], questions: Sequence[str],
            max_new_tokens: int = 4) -> list[str]:
    """Greedy one-word answers to "Question: {q} Answer:" prompts, one image per question."""
    from utils.chat import build_prompt

    if isinstance(questions, str) or not all(isinstance(q, str) for q in questions):
        raise TypeError("questions must be a list of strings, one per image; wrap a single question in a list")
    if len(images) != len(questions):
        raise ValueError(f"{len(images)} images but {len(questions)} questions: pass one question per image "
                         "(repeat an image to ask it several questions)")
    prompts = [build_prompt([], q) for q in questions]  # refuses empty questions and the prompt's own markers
    words = generate_text(model, processor, images, prompts, max_new_tokens)
    return [w.split()[0].strip(".,") if w.split() else "" for w in words]


def qa_accuracy(model: Any, processor: Any, scenes: Sequence[Scene]) -> dict[str, float]:
    """Exact-match accuracy of the first answer word on every question of ``scenes``: overall and per kind."""
    items = [(s, q) for s in scenes for q in s.questions]
    got = answers(model, processor, [s.render() for s, _ in items], [q.text for _, q in items])
    right: dict[str, list[bool]] = {}
    for (_, q), g in zip(items, got):
        right.setdefault(q.kind, []).append(g == q.answer)
    every = [ok for oks in right.values() for ok in oks]
    return {"all": sum(every) / len(every), **{k: sum(v) / len(v) for k, v in right.items()}}


def caption_accuracy(model: Any, processor: Any, scenes: Sequence[Scene]) -> dict[str, Any]:
    """Content-word accuracy of greedy captions (see :func:`caption_score`) and the share of exact captions."""
    got = captions(model, processor, [s.render() for s in scenes])
    scores = [caption_score(s.caption, g) for s, g in zip(scenes, got)]
    return {"words": sum(r for r, _ in scores) / sum(n for _, n in scores),
            "exact": sum(s.caption == g for s, g in zip(scenes, got)) / len(scenes), "captions": got}


def blip2_opt_2_7b_config():
    """The configuration of ``Salesforce/blip2-opt-2.7b``, from its config.json kept in ``configs/`` (so the
    model can be built offline, on ``meta``): EVA ViT-g/14 at 224 pixels (39 blocks, width 1408), the
    BERT-base-sized Q-Former with 32 queries, OPT-2.7B (32 blocks, width 2560)."""
    from transformers import Blip2Config

    from utils import t4plan

    return Blip2Config.from_pretrained(t4plan.config_folder("blip2"))
