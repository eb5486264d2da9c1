"""Generator 2: an LLM, prompted with the context as text and few-shot examples; its reply parsed back."""

from __future__ import annotations

import random
import re
from typing import Any, Callable, Sequence

from utils.shapes import make_scene
from utils.tiny_lm import IMAGE_TOKEN
from utils.instruct.context import SMALL_AREA, ImageContext
from utils.instruct.records import Generator, Turn, check_response_type, make_record
from utils.instruct.rules import DETAIL_INSTRUCTIONS, rule_based_turns

ChatFn = Callable[[list[dict[str, str]]], str]  # messages -> the reply

# --- generator 2: an LLM, prompted ---------------------------------------------------------------

class ReplyFormatError(ValueError):
    """An LLM reply is not in the format the prompt asked for; the message says what was expected."""


SYSTEM_PROMPT = (
    "You are looking at a single image. You cannot see it; instead you are told what is certain about it: "
    "a few sentences describing it, then one line per object with its name and its bounding box "
    "[x0, y0, x1, y1]. Coordinates run from 0 to 1, with x growing to the right and y growing downwards, so a "
    "smaller y is higher up. Use the box centres for positions (left of, right of, above, below) and the box "
    f"areas for sizes: a box covering less than {SMALL_AREA:.0%} of the image is small, a larger one is large.\n"
    "Write as if you were looking at the image yourself. Never mention the sentences, the boxes, the "
    "coordinates or any numbers from them. State only what is certain from them; do not guess at anything "
    "else (backgrounds, textures, what is outside the picture)."
)
TASK_PROMPTS: dict[str, str] = {
    "conversation": (
        "Write a conversation about the image between someone asking questions and you answering them. "
        "Ask three to five varied questions: what the objects are, their colours, how many there are, their "
        "sizes, where they are and where they are relative to each other. Only ask questions with a definite "
        "answer. Answer in full sentences. Write each exchange as a line starting with 'Question:' followed by "
        "a line starting with 'Answer:', with a blank line between exchanges, and write nothing else."
    ),
    "detail": (
        "Describe the image in one detailed paragraph: how many objects there are, what each looks like, "
        "where it is and where the objects are relative to each other. Write the paragraph only: no heading, "
        "no list, no questions."
    ),
    "complex_reasoning": (
        "Write one question about the image that needs reasoning to answer -- counting, comparing sizes or "
        "positions, or imagining an object moved -- and answer it, explaining the reasoning step by step. "
        "Write it as a line starting with 'Question:' and a line starting with 'Answer:', and nothing else."
    ),
}
FEW_SHOT_SEED = 2304  # ShapesWorld seed of the few-shot example scenes
FEW_SHOT_SCENES: tuple[int, ...] = (0, 1, 2, 3)  # scene indices (drawn with at least two objects each)


def render_context(context: ImageContext, decimals: int = 3) -> str:
    """The context as the LLM reads it: caption lines, a blank line, then 'label: [x0, y0, x1, y1]' lines."""
    if not 1 <= decimals <= 4:
        raise ValueError(f"decimals must be between 1 and 4 (LLaVA used 3), got {decimals}")
    lines = list(context.captions)
    if context.boxes:
        lines.append("")
        lines += [f"{label}: [{', '.join(f'{v:.{decimals}f}' for v in box)}]" for label, box in context.boxes]
    return "\n".join(lines)


def format_reply(turns: Sequence[Turn], response_type: str) -> str:
    """Turns written in the reply format the prompt asks for (the inverse of :func:`parse_reply`)."""
    check_response_type(response_type)
    if not turns:
        raise ValueError("format_reply needs at least one turn")
    if response_type == "detail":
        return turns[0][1]
    return "\n\n".join(f"Question: {q}\nAnswer: {a}" for q, a in turns)


def few_shot_contexts(n: int = 2) -> list[ImageContext]:
    """The ShapesWorld contexts the few-shot examples are written for (two or three objects each)."""
    contexts = []
    for index in FEW_SHOT_SCENES:
        scene = make_scene(index, seed=FEW_SHOT_SEED, split="test", min_objects=2)
        contexts.append(ImageContext.from_scene(scene))
        if len(contexts) == n:
            break
    return contexts


def build_messages(context: ImageContext, response_type: str, shots: int = 2) -> list[dict[str, str]]:
    """System prompt, ``shots`` worked examples as user/assistant pairs, then the query context.

    The examples are ShapesWorld contexts answered by :func:`rule_based_turns`, so they are
    grounded by construction and show the reply format exactly.
    """
    check_response_type(response_type)
    if not isinstance(context, ImageContext):
        raise TypeError(f"context must be an ImageContext, got {type(context).__name__}")
    if not 0 <= shots <= len(FEW_SHOT_SCENES):
        raise ValueError(f"shots must be between 0 and {len(FEW_SHOT_SCENES)}, got {shots}")
    messages = [{"role": "system", "content": f"{SYSTEM_PROMPT}\n\n{TASK_PROMPTS[response_type]}"}]
    for i, example in enumerate(few_shot_contexts(shots) if shots else []):
        turns = rule_based_turns(example, response_type, random.Random(f"few-shot/{response_type}/{i}"))
        messages += [{"role": "user", "content": render_context(example)},
                     {"role": "assistant", "content": format_reply(turns, response_type)}]
    messages.append({"role": "user", "content": render_context(context)})
    return messages


_LABEL_LINE = re.compile(r"^\s*(?:\d+[.)]\s*)?(question|answer|q|a)(?:\s*\d+)?\s*:\s*(.*)$", re.IGNORECASE)


def _labelled_blocks(reply: str) -> list[tuple[str, str, int]]:
    """('question' | 'answer', text, line number) blocks; a block runs until the next label line."""
    blocks: list[list[Any]] = []
    for number, line in enumerate(reply.splitlines(), start=1):
        plain = re.sub(r"\*\*|__|^#+\s*", "", line)  # tolerate markdown: '**Question 1:** ...'
        match = _LABEL_LINE.match(plain)
        if match:
            label = "question" if match.group(1).lower() in ("question", "q") else "answer"
            blocks.append([label, match.group(2).strip(), number])
        elif blocks and line.strip():
            blocks[-1][1] = f"{blocks[-1][1]}\n{line.strip()}".strip()
    return [(label, text, number) for label, text, number in blocks]


# A remark to the person who asked, not part of the data: 'I hope these help! Let me know if ...'
CHATTER = re.compile(r"\b(?:let me know|i hope (?:this|these|that)|hope (?:this|these|that) helps?|feel free|"
                     r"happy to help|glad to help|if you (?:need|have|want|would like)|here (?:are|is) (?:some|more|"
                     r"another|your)|as requested)\b", re.IGNORECASE)


def _trailing_chatter(text: str) -> str | None:
    """The first line after the first of ``text`` that talks to the asker, if any."""
    return next((line for line in text.splitlines()[1:] if CHATTER.search(line)), None)


def _preview(reply: str) -> str:
    text = " ".join(reply.split())
    return repr(text[:80] + ("..." if len(text) > 80 else ""))


def parse_reply(reply: str, response_type: str, *, instruction: str | None = None) -> list[Turn]:
    """The (question, answer) turns of an LLM reply; :class:`ReplyFormatError` if it is malformed.

    ``conversation``: two or more 'Question:' / 'Answer:' blocks; ``complex_reasoning``: exactly
    one; ``detail``: a paragraph (an optional 'Description:' prefix is dropped), which becomes the
    answer to ``instruction`` (default: the first of :data:`DETAIL_INSTRUCTIONS`). Markdown bold
    and numbering around the labels are tolerated; text before the first label is ignored.
    """
    check_response_type(response_type)
    if not isinstance(reply, str):
        raise TypeError(f"reply must be the LLM's text (str), got {type(reply).__name__}")
    if not reply.strip():
        raise ReplyFormatError(f"the reply is empty; expected {_expected(response_type)}")
    if IMAGE_TOKEN in reply:
        raise ReplyFormatError(f"the reply contains {IMAGE_TOKEN!r}; that token is placed by the data set, never by the LLM")
    blocks = _labelled_blocks(reply)
    if response_type == "detail":
        if blocks:
            raise ReplyFormatError(
                f"expected one descriptive paragraph for 'detail', but line {blocks[0][2]} starts a "
                f"'{blocks[0][0].capitalize()}:' block; question/answer blocks belong to 'conversation' or 'complex_reasoning'"
            )
        text = re.sub(r"^\s*\**description\**\s*:\s*", "", reply.strip(), flags=re.IGNORECASE).strip()
        if (remark := _trailing_chatter(text)) is not None:
            raise ReplyFormatError(f"the description ends with a remark to the asker ({_preview(remark)}), which "
                                   "would be trained on as part of it; ask again, or cut the remark")
        if len(text.split()) < 10:
            raise ReplyFormatError(f"expected a detailed paragraph of at least 10 words for 'detail', got {_preview(text)}")
        return [(instruction or DETAIL_INSTRUCTIONS[0], text)]
    if not blocks:
        raise ReplyFormatError(f"expected {_expected(response_type)}, but found no line starting with 'Question:'; "
                               f"the reply began {_preview(reply)}")
    turns: list[Turn] = []
    for i, (label, text, line) in enumerate(blocks):
        expected = "question" if i % 2 == 0 else "answer"
        if label != expected:
            what = "an 'Answer:' with no 'Question:' before it" if label == "answer" else "a 'Question:' with no 'Answer:'"
            raise ReplyFormatError(f"line {line}: {what}; expected {_expected(response_type)}")
        if not text:
            raise ReplyFormatError(f"line {line}: the {label} is empty")
        if label == "answer":
            turns.append((blocks[i - 1][1], text))
    if len(blocks) % 2:
        raise ReplyFormatError(f"line {blocks[-1][2]}: the last 'Question:' has no 'Answer:'")
    if (remark := _trailing_chatter(blocks[-1][1])) is not None:
        raise ReplyFormatError(f"after the last answer the reply goes on with a remark to the asker "
                               f"({_preview(remark)}), which would be merged into that answer; ask again, or cut it")
    if response_type == "complex_reasoning" and len(turns) != 1:
        raise ReplyFormatError(f"expected exactly one question and one answer for 'complex_reasoning', found {len(turns)}")
    if response_type == "conversation" and len(turns) < 2:
        raise ReplyFormatError(f"expected a conversation of at least two exchanges, found {len(turns)}")
    return turns


def _expected(response_type: str) -> str:
    return {
        "conversation": "two or more blocks of a 'Question: ...' line followed by an 'Answer: ...' line",
        "complex_reasoning": "one 'Question: ...' line followed by one 'Answer: ...' line",
        "detail": "one descriptive paragraph of plain text",
    }[response_type]


def llm_generator(chat_fn: ChatFn, shots: int = 2) -> Generator:
    """A generator for :func:`generate_dataset` that asks ``chat_fn`` and parses its reply."""
    if not callable(chat_fn):
        raise TypeError(f"chat_fn must be callable as chat_fn(messages) -> str, got {type(chat_fn).__name__}")

    def generate(context: ImageContext, response_type: str, rng: random.Random) -> list[Turn]:
        reply = chat_fn(build_messages(context, response_type, shots))
        if not isinstance(reply, str):
            raise TypeError(f"chat_fn must return the reply text (str), got {type(reply).__name__}")
        return parse_reply(reply, response_type, instruction=rng.choice(DETAIL_INSTRUCTIONS))

    return generate


def generate_with_llm(
    context: ImageContext, response_type: str, chat_fn: ChatFn, *, seed: int = 0, record_id: str | None = None, shots: int = 2
) -> dict[str, Any]:
    """One record written by an LLM: prompt it, parse its reply (ReplyFormatError if malformed), wrap it."""
    check_response_type(response_type)
    record_id = record_id or f"{context.stem}-{response_type}"
    turns = llm_generator(chat_fn, shots)(context, response_type, random.Random(f"{seed}/{record_id}"))
    return make_record(record_id, context.image, turns)


class ReplayChat:
    """A ``chat_fn`` that returns stored replies in order and keeps the messages it was sent.

    Stands in for an instruction-tuned model offline (tests, tiny mode)."""

    def __init__(self, replies: Sequence[str]) -> None:
        if isinstance(replies, str) or not replies:
            raise ValueError("ReplayChat needs a non-empty list of reply strings")
        self.replies = list(replies)
        self.calls: list[list[dict[str, str]]] = []

    def __call__(self, messages: list[dict[str, str]]) -> str:
        if len(self.calls) >= len(self.replies):
            raise RuntimeError(f"ReplayChat ran out of stored replies after {len(self.replies)} calls")
        self.calls.append(messages)
        return self.replies[len(self.calls) - 1]


# Stored replies for EXAMPLE_SCENE (make_scene(*EXAMPLE_SCENE)): a large green square to the left of a
# small purple triangle. Good ones parse and pass the fact checker; 'hallucinated' ones parse but
# contain planted errors; 'malformed' ones raise ReplyFormatError.
EXAMPLE_SCENE: tuple[int, int] = (1, 0)  # (index, seed)
EXAMPLE_REPLIES: dict[str, tuple[str, str]] = {  # name -> (response type, reply text)
    "conversation/good": ("conversation", (
        "Question: How many shapes are in the picture?\n"
        "Answer: There are two shapes: a large green square and a small purple triangle.\n\n"
        "Question: What colour is the triangle?\n"
        "Answer: The triangle is purple.\n\n"
        "Question: Where is the square relative to the triangle?\n"
        "Answer: The green square is to the left of the purple triangle."
    )),
    "conversation/markdown": ("conversation", (
        "Sure! Here is the conversation.\n\n"
        "**Question 1:** Which shape is larger?\n"
        "**Answer 1:** The green square is larger than the purple triangle.\n\n"
        "**Question 2:** Is the triangle on the right?\n"
        "**Answer 2:** Yes, the purple triangle is to the right of the green square,\n"
        "and it is small."
    )),
    "detail/good": ("detail", (
        "The image shows two shapes. On the left there is a large green square, and to its right a small "
        "purple triangle. The green square is larger than the purple triangle, and the triangle is to the "
        "right of the square."
    )),
    "complex_reasoning/good": ("complex_reasoning", (
        "Question: If the purple triangle were moved to the left of the green square, which shape would be "
        "the rightmost one?\n"
        "Answer: The green square would be the rightmost shape. Right now the purple triangle is the rightmost "
        "shape, but after the move it would sit to the left of the square, leaving the square furthest right."
    )),
    "conversation/hallucinated": ("conversation", (
        "Question: How many shapes are there?\n"
        "Answer: There are three shapes in the image.\n\n"
        "Question: What colour is the square?\n"
        "Answer: The square is blue.\n\n"
        "Question: Where is the triangle?\n"
        "Answer: The purple triangle is to the left of the green square, next to a yellow star."
    )),
    "detail/leaky": ("detail", (
        "According to the captions, the image shows a large green square whose bounding box starts at "
        "[0.2, 0.3], and a small purple triangle to the right of it."
    )),
    "malformed/no-labels": ("conversation", (
        "The picture shows a green square and a purple triangle. The square is on the left and the "
        "triangle is on the right."
    )),
    "malformed/missing-answer": ("conversation", (
        "Question: What colour is the square?\nAnswer: It is green.\n\nQuestion: What colour is the triangle?"
    )),
    "malformed/answer-first": ("conversation", "Answer: It is green.\nQuestion: What colour is the square?"),
    "malformed/two-questions": ("complex_reasoning", (
        "Question: Which shape is larger?\nAnswer: The square.\nQuestion: Which is on the left?\nAnswer: The square."
    )),
    "malformed/detail-as-qa": ("detail", "Question: What is in the image?\nAnswer: Two shapes."),
    "malformed/empty": ("detail", "   "),
}
