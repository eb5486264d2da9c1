"""Instruction records in LLaVA's JSON format: building, reading and validating them."""

from __future__ import annotations

import random
import re
from collections import Counter
from typing import Any, Callable, Mapping, Sequence

from utils.tiny_lm import IMAGE_TOKEN, SPECIAL_TOKENS
from utils.instruct.context import ImageContext

RESPONSE_TYPES: tuple[str, ...] = ("conversation", "detail", "complex_reasoning")
HUMAN, GPT = "human", "gpt"  # LLaVA's speaker names
Turn = tuple[str, str]  # (question, answer): one human turn and the gpt turn that answers it
Generator = Callable[["ImageContext", str, random.Random], list[Turn]]  # context, response type, rng -> turns

# --- records -------------------------------------------------------------------------------------

def check_response_type(response_type: str) -> None:
    if response_type not in RESPONSE_TYPES:
        raise ValueError(f"unknown response type {response_type!r}; choose one of {RESPONSE_TYPES}")


def make_record(record_id: str, image: str, turns: Sequence[Turn]) -> dict[str, Any]:
    """LLaVA's JSON record from (question, answer) turns, ``<image>\\n`` before the first question."""
    if not turns:
        raise ValueError("a record needs at least one (question, answer) turn")
    conversations = []
    for i, (question, answer) in enumerate(turns):
        value = f"{IMAGE_TOKEN}\n{question}" if i == 0 else question
        conversations += [{"from": HUMAN, "value": value}, {"from": GPT, "value": answer}]
    return {"id": record_id, "image": image, "conversations": conversations}


def record_turns(record: Mapping[str, Any]) -> list[Turn]:
    """The (question, answer) pairs of a valid record, with the image token removed."""
    conv = record["conversations"]
    return [(strip_image(conv[i]["value"]), conv[i + 1]["value"]) for i in range(0, len(conv) - 1, 2)]


def strip_image(text: str) -> str:
    return text.replace(IMAGE_TOKEN, "").strip()


_TYPE_IN_ID = re.compile(r"-(conversation|detail|complex_reasoning|vqa|caption)(?=-|$)")


def record_type(record: Mapping[str, Any]) -> str:
    """The response type written into a record id by this module (``...-detail``), or 'other'."""
    match = _TYPE_IN_ID.search(str(record.get("id", "")))
    return match.group(1) if match else "other"


def validate_record(record: Any) -> list[str]:
    """Problems with a record, each starting with its category; an empty list means valid.

    'schema:' -- exactly the keys id, image, conversations; non-empty string id and image; turns
    ``{"from", "value"}`` alternating human, gpt, ..., starting with human and ending with gpt;
    non-empty values; ``<image>`` exactly once, at the start or end of the first human turn.
    'format:' -- a turn that holds a special token or the chat format's own markers ("USER:",
    " ASSISTANT:"), which would forge a turn: the label mask would then train on human text.
    'refusal:' -- an answer in which the writing LLM declines or talks about itself.
    """
    if not isinstance(record, Mapping):
        return [f"schema: a record is a dict with id, image and conversations, got {type(record).__name__}"]
    problems = []
    keys = set(record)
    if keys != {"id", "image", "conversations"}:
        missing, extra = {"id", "image", "conversations"} - keys, keys - {"id", "image", "conversations"}
        problems.append(f"schema: keys must be id, image, conversations (missing {sorted(missing)}, unexpected {sorted(extra)})")
    for key in ("id", "image"):
        if key in record and (not isinstance(record[key], str) or not record[key].strip()):
            problems.append(f"schema: {key} must be a non-empty string, got {record[key]!r}")
    conv = record.get("conversations")
    if "conversations" not in record:
        return problems
    if not isinstance(conv, list) or not conv:
        return problems + ["schema: conversations must be a non-empty list of turns"]
    image_tokens = 0
    for i, turn in enumerate(conv):
        if not isinstance(turn, Mapping) or set(turn) != {"from", "value"}:
            problems.append(f"schema: turn {i} must be a dict with exactly 'from' and 'value', got {turn!r}")
            continue
        expected = HUMAN if i % 2 == 0 else GPT
        if turn["from"] != expected:
            problems.append(f"schema: turn {i} is from {turn['from']!r}, expected {expected!r} (turns alternate, human first)")
        value = turn["value"]
        if not isinstance(value, str) or not strip_image(value):
            problems.append(f"schema: turn {i} has an empty value")
            continue
        problems += _forged_format(value, i) + ([] if i % 2 == 0 else _refusal(value, i))
        count = value.count(IMAGE_TOKEN)
        image_tokens += count
        if count and i != 0:
            problems.append(f"schema: {IMAGE_TOKEN} appears in turn {i}; it belongs in the first human turn only")
    if len(conv) % 2:
        problems.append("schema: the last turn is a human question with no gpt answer")
    if image_tokens != 1:
        problems.append(f"schema: {IMAGE_TOKEN} must appear exactly once in a record, found {image_tokens}")
    first = conv[0].get("value") if isinstance(conv[0], Mapping) else None
    if isinstance(first, str) and first.count(IMAGE_TOKEN) == 1:
        if not (first.startswith(IMAGE_TOKEN + "\n") or first.endswith("\n" + IMAGE_TOKEN)):
            problems.append(f"schema: the first human turn must start with '{IMAGE_TOKEN}\\n' or end with '\\n{IMAGE_TOKEN}'")
    return problems


# Strings a turn must not hold: the tokens and role markers of the formats the records are trained in.
FORMAT_MARKERS: tuple[str, ...] = tuple(t for t in SPECIAL_TOKENS if t != IMAGE_TOKEN) + ("USER:", "ASSISTANT:")
REFUSAL = re.compile(r"\bas an ai\b|\b(?:ai|language) model\b|\bi(?: am|'m) (?:sorry|unable|not able)\b|"
                     r"\bi (?:cannot|can't|can not) (?:see|view|help|assist|provide|answer)\b", re.IGNORECASE)


def _forged_format(value: str, i: int) -> list[str]:
    return [f"format: turn {i} contains {marker!r}, a marker of the chat format itself; it would forge a turn "
            "(the label mask would train on the wrong text): drop or rewrite the turn"
            for marker in FORMAT_MARKERS if marker in value]


def _refusal(value: str, i: int) -> list[str]:
    match = REFUSAL.search(value)
    return [f"refusal: turn {i} declines or talks about the writer ({match.group(0)!r}) instead of answering"] if match else []


def validate_dataset(records: Sequence[Any]) -> list[str]:
    """Every record's problems (prefixed with its position) plus repeated ids."""
    problems = [f"record {i}: {p}" for i, r in enumerate(records) for p in validate_record(r)]
    ids = Counter(r.get("id") for r in records if isinstance(r, Mapping))
    problems += [f"schema: id {rid!r} is used by {n} records" for rid, n in ids.items() if n > 1]
    return problems


def to_chat_messages(record: Mapping[str, Any], image: Any = None) -> list[dict[str, Any]]:
    """A record as the message list a Hugging Face chat template takes.

    ``[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q1}]},
    {"role": "assistant", "content": [{"type": "text", "text": a1}]}, ...]`` -- the form
    ``LlavaProcessor.apply_chat_template`` renders. The image block goes where ``<image>`` was
    (before or after the first question). Pass ``image`` (a PIL image, a path or URL) to put it
    in the image block, so ``apply_chat_template(..., tokenize=True)`` can load it.
    """
    problems = validate_record(record)
    if problems:
        raise ValueError("cannot convert an invalid record: " + "; ".join(problems))
    image_block: dict[str, Any] = {"type": "image"} if image is None else {"type": "image", "image": image}
    messages = []
    for i, turn in enumerate(record["conversations"]):
        text = strip_image(turn["value"])
        content: list[dict[str, Any]] = [{"type": "text", "text": text}]
        if IMAGE_TOKEN in turn["value"]:
            content.insert(0 if turn["value"].lstrip().startswith(IMAGE_TOKEN) else 1, image_block)
        messages.append({"role": "user" if turn["from"] == HUMAN else "assistant", "content": content})
    return messages
