"""InstructBLIP's route: existing VQA and caption pairs, wrapped in instruction templates."""

from __future__ import annotations

import hashlib
from typing import Any

from utils.instruct.context import image_stem
from utils.instruct.records import make_record

# --- InstructBLIP's route: existing VQA and caption pairs, wrapped in instructions ---------------

TASK_TEMPLATES: dict[str, tuple[str, ...]] = {
    "vqa": (
        "{question}",
        "{question} Reply with a word or a short phrase.",
        "Look at the image and answer briefly: {question}",
        "Question about the picture: {question} Short answer:",
        "Using only what the image shows, answer in at most three words. {question}",
        "Here is a question about this image: \"{question}\" What is the answer?",
    ),
    "caption": (
        "Write a short caption for this image.",
        "Describe the picture in one sentence.",
        "What does this image show? Answer in a few words.",
        "Give a brief description of the image.",
        "Summarise the content of the picture in a single line.",
        "A short caption for this image would be:",
    ),
}


def _template(family: str, template_id: int) -> str:
    templates = TASK_TEMPLATES[family]
    if isinstance(template_id, bool) or not isinstance(template_id, int):
        raise TypeError(f"template_id must be an int index into TASK_TEMPLATES[{family!r}], got {template_id!r}")
    if not 0 <= template_id < len(templates):
        raise ValueError(f"template_id must be in 0..{len(templates) - 1} for {family!r} templates, got {template_id}")
    return templates[template_id]


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty string, got {value!r}")
    return value.strip()


def _short_hash(*parts: str) -> str:
    return hashlib.sha1("\x1f".join(parts).encode()).hexdigest()[:8]


def from_vqa(question: str, answer: str, template_id: int, *, image: str, record_id: str | None = None) -> dict[str, Any]:
    """A VQA pair as a one-turn instruction record: the question inside ``TASK_TEMPLATES['vqa'][template_id]``."""
    question, answer, image = _text(question, "question"), _text(answer, "answer"), _text(image, "image")
    prompt = _template("vqa", template_id).format(question=question)
    stem = image_stem(image)
    return make_record(record_id or f"{stem}-vqa-{_short_hash(question, answer, str(template_id))}", image, [(prompt, answer)])


def from_caption(caption: str, template_id: int, *, image: str, record_id: str | None = None) -> dict[str, Any]:
    """A caption as a one-turn instruction record answering ``TASK_TEMPLATES['caption'][template_id]``."""
    caption, image = _text(caption, "caption"), _text(image, "image")
    prompt = _template("caption", template_id)
    stem = image_stem(image)
    return make_record(record_id or f"{stem}-caption-{_short_hash(caption, str(template_id))}", image, [(prompt, caption)])
