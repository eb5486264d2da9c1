"""BLIP-2 and LLaVA as the harness's :class:`~utils.evaluation.harness.Model`: each asked the way it
was trained to be asked, with or without a picture.

Styles (``harness.STYLES``): ``short`` (one word: LLaVA-1.5 gets its "single word or phrase"
suffix, BLIP-2 its "Question: ... Answer:" frame), ``choice`` (the multiple-choice prompt as
given), ``caption`` (BLIP-2 with no prompt; LLaVA asked for a caption) and ``long`` (the question
as given). A question with no image (``None``) goes to the language model alone.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from utils import blip2, chat, llava
from utils.evaluation.harness import Model


def _left_padded_generate(model: Any, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int,
                          add_special_tokens: bool) -> list[str]:
    """Greedy continuations of text-only prompts, batched with left padding."""
    old = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        inputs = tokenizer(list(prompts), return_tensors="pt", padding=True,
                           add_special_tokens=add_special_tokens).to(model.device)  # (B, L)
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)  # (B, L + new)
    finally:
        tokenizer.padding_side = old
    return [t.strip() for t in tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)]


def _split(images: Sequence[Any]) -> tuple[list[int], list[int]]:
    seen = [i for i, image in enumerate(images) if image is not None]
    return seen, [i for i in range(len(images)) if images[i] is None]


def blip2_model(model: Any, processor: Any, name: str = "BLIP-2") -> Model:
    """BLIP-2: "Question: {q} Answer:" after the soft prompts; captions from the image alone.

    Asked for a long answer (a detailed description), it captions: the tiny BLIP-2, like
    blip2-opt-2.7b, was trained on captions, and its language model's 128 positions leave no room
    for a long instruction and a paragraph after 32 soft prompts.
    """
    def answer(images: list[Any], questions: list[str], style: str, max_new_tokens: int) -> list[str]:
        if style == "long":
            style, max_new_tokens = "caption", min(max_new_tokens, 40)
        prompts = [None if style == "caption" else chat.build_prompt([], q) for q in questions]
        out: list[str] = [""] * len(questions)
        seen, blind = _split(images)
        if seen:
            got = blip2.generate_text(model, processor, [images[i] for i in seen], [prompts[i] for i in seen],
                                      max_new_tokens)
            for i, g in zip(seen, got):
                out[i] = g
        if blind:  # the frozen language model alone, on the same text
            got = _left_padded_generate(model.language_model, processor.tokenizer, [prompts[i] or "" for i in blind],
                                        max_new_tokens, add_special_tokens=True)
            for i, g in zip(blind, got):
                out[i] = g
        return out
    return Model(name, answer)


def llava_model(model: Any, processor: Any, name: str = "LLaVA") -> Model:
    """LLaVA-1.5's chat format; short answers get its one-word suffix, captions its caption request."""
    def text(question: str, style: str) -> str:
        return {"short": llava.short_question(question), "caption": llava.CAPTION_PROMPT}.get(style, question)

    def answer(images: list[Any], questions: list[str], style: str, max_new_tokens: int) -> list[str]:
        prompts = [text(q, style) for q in questions]
        out: list[str] = [""] * len(questions)
        seen, blind = _split(images)
        if seen:
            got = llava.answer_questions(model, processor, [images[i] for i in seen], [prompts[i] for i in seen],
                                         max_new_tokens=max_new_tokens)
            for i, g in zip(seen, got):
                out[i] = g
        if blind:  # the same chat format with no image block: the language model alone
            rendered = [processor.apply_chat_template([llava.user_message(prompts[i], image=False)],
                                                      add_generation_prompt=True) for i in blind]
            got = _left_padded_generate(model, processor.tokenizer, rendered, max_new_tokens, add_special_tokens=False)
            for i, g in zip(blind, got):
                out[i] = g
        return out
    return Model(name, answer)


def llava_chat(model: Any, processor: Any, max_new_tokens: int = 200):
    """``chat(messages) -> reply`` with LLaVA's language model and no image: a text-only judge.
    A system message is folded into the user's turn (LLaVA-1.5's template has no system role)."""
    def reply(messages: list[dict[str, str]]) -> str:
        system = " ".join(m["content"] for m in messages if m["role"] == "system")
        user = "\n\n".join(m["content"] for m in messages if m["role"] == "user")
        prompt = processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "text", "text": f"{system}\n\n{user}".strip()}]}],
            add_generation_prompt=True)
        return _left_padded_generate(model, processor.tokenizer, [prompt], max_new_tokens, add_special_tokens=False)[0]
    return reply


def load(name: str) -> tuple[Model, Any, Any]:
    """Load the zoo's ``blip2`` or ``llava`` as chapters 3 and 4 do (full mode: float16 on the GPU,
    LLaVA's language model in 4 bits) and wrap it; returns (harness model, model, processor)."""
    from transformers import AutoProcessor, Blip2ForConditionalGeneration, LlavaForConditionalGeneration

    from utils import runtime, zoo

    if name not in ("blip2", "llava"):
        raise ValueError(f"chapter 7 evaluates the zoo's 'blip2' and 'llava', not {name!r}")
    path = zoo.path(name)
    processor = AutoProcessor.from_pretrained(path)
    if name == "blip2":
        model = Blip2ForConditionalGeneration.from_pretrained(path, dtype=runtime.DTYPE, device_map=runtime.DEVICE)
        return blip2_model(model.eval(), processor), model, processor
    quantization = llava.four_bit_config() if runtime.MODE == "full" else None
    model = LlavaForConditionalGeneration.from_pretrained(path, dtype=runtime.DTYPE, device_map=runtime.DEVICE,
                                                          quantization_config=quantization)
    return llava_model(model.eval(), processor), model, processor
