"""Chatting with BLIP-2 about one image (chapter 3): prompts with memory, a responder, a widget.

BLIP-2 has no chat template: its OPT models were trained on captions, and "Question: ... Answer:" is
the paper's zero-shot question format.
A conversation is made by writing the earlier turns into the prompt, oldest first:

    Question: What colour is the circle? Answer: red. Question: How many shapes are there? Answer:

The logic lives in plain functions (:func:`build_prompt`, :func:`fit_history`) and in
:class:`Blip2Chat`, whose ``respond(history, question)`` keeps no state between calls beyond what
it reports; :class:`ChatWidget` is a thin ipywidgets shell over any responder, testable by
calling its buttons' ``.click()``.

A history is a list of (question, answer) pairs, oldest first.
"""

from __future__ import annotations

import html
import io
from typing import Any, Callable, Sequence

import torch

from utils.tiny_lm import SPECIAL_TOKENS

History = Sequence[tuple[str, str]]

EMPTY_QUESTION_REPLY = "Please type a question about the image first."
PROMPT_MARKERS = ("Question:", "Answer:")  # what the prompt itself writes; a user who types them writes fake turns
MIN_TURN_TOKENS = 4  # "Question:", a word, "Answer:", a word: no finished turn is shorter in any tokenizer
MAX_WIDGET_TURNS = 200  # the widget remembers this many turns, far more than any context holds
MAX_WIDGET_LINES = 500  # and shows this many transcript lines


def check_user_text(text: str, what: str, reserved: Sequence[str] = SPECIAL_TOKENS + PROMPT_MARKERS) -> str:
    """``text`` unchanged, or a ValueError if it holds a string the prompt reserves.

    A special token typed by a user (``<image>``, ``</s>``) would be read as the real thing -- an
    image slot with no image behind it, an end of sequence -- and "Answer: purple. Question: ..."
    would write a fake turn into the conversation.
    """
    for token in reserved:
        if token in text:
            raise ValueError(f"the {what} contains {token!r}, which the model's prompt reserves for itself; "
                             "leave it out and ask again")
    return text


def _clean(text: Any, what: str) -> str:
    if not isinstance(text, str):
        raise TypeError(f"the {what} must be a string, got {type(text).__name__}")
    text = text.strip()
    if not text:
        raise ValueError(f"the {what} is empty: type some words (whitespace alone does not count)")
    return check_user_text(text, what)


def format_turn(question: str, answer: str) -> str:
    """One finished turn: "Question: {q} Answer: {a}." with both stripped of surrounding whitespace."""
    return f"Question: {_clean(question, 'question')} Answer: {_clean(answer, 'answer')}."


def build_prompt(history: History, question: str) -> str:
    """The BLIP-2 OPT prompt: the earlier turns, oldest first, then the open question.

    >>> build_prompt([("What colour is the circle?", "red")], "How many shapes are there?")
    'Question: What colour is the circle? Answer: red. Question: How many shapes are there? Answer:'

    Raises ValueError for an empty or whitespace-only question (or answer in the history).
    """
    turns = [format_turn(q, a) for q, a in history]
    return " ".join(turns + [f"Question: {_clean(question, 'question')} Answer:"])


def fit_history(
    history: History, question: str, max_tokens: int, count_tokens: Callable[[str], int]
) -> tuple[list[tuple[str, str]], int]:
    """Drop the oldest turns until ``build_prompt(kept, question)`` is at most ``max_tokens`` long.

    Length is measured by ``count_tokens(text) -> int`` (e.g. the tokenizer's length of the
    text). Returns (the turns kept, oldest first; how many were dropped). Raises ValueError when
    even the question alone does not fit: no history can help then, the question must be shorter.
    Only the last ``max_tokens // MIN_TURN_TOKENS`` turns can fit at all, so the work does not grow
    with the length of the history.
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    room = max_tokens // MIN_TURN_TOKENS  # the most turns that could fit
    kept = list(history[-room:]) if room else []
    alone = count_tokens(build_prompt([], question))
    if alone > max_tokens:
        raise ValueError(
            f"the question alone takes {alone} tokens but only {max_tokens} fit in the prompt: ask a shorter question"
        )
    while kept and count_tokens(build_prompt(kept, question)) > max_tokens:
        kept.pop(0)  # the oldest turn goes first: recent turns matter most to the next answer
    return kept, len(history) - len(kept)


class Blip2Chat:
    """Answer questions about one image with a BLIP-2 model, remembering earlier turns in the prompt.

    ``respond(history, question)`` fits the history into the language model's context, builds the
    prompt, runs the processor and ``model.generate`` (greedy unless ``generate_kwargs`` say
    otherwise) and returns the answer. After each call ``last_dropped`` says how many of the
    oldest turns had to be left out, and ``last_prompt`` holds the prompt that was used.

    The token budget for the prompt is the LM's context length, minus the Q image tokens the
    processor puts in front of the text, minus ``max_new_tokens`` for a decoder-only LM (OPT)
    whose answer shares that context. ``max_context`` overrides the context length read from the
    config (``max_position_embeddings``) -- needed for LMs without one, such as Flan-T5.
    """

    def __init__(self, model: Any, processor: Any, image: Any, max_new_tokens: int = 10,
                 max_context: int | None = None, **generate_kwargs: Any) -> None:
        from utils.images import load_image

        config = model.config
        if getattr(processor, "num_query_tokens", None) != config.num_query_tokens:
            raise ValueError(
                f"the processor inserts {getattr(processor, 'num_query_tokens', None)} image tokens but the model "
                f"has {config.num_query_tokens} query tokens: build Blip2Processor(..., num_query_tokens="
                f"{config.num_query_tokens})"
            )
        image_token_id = processor.tokenizer.convert_tokens_to_ids(str(processor.image_token))
        if config.image_token_index is None or config.image_token_index != image_token_id:
            raise ValueError(
                f"the tokenizer's image token {str(processor.image_token)!r} has id {image_token_id} but the model's "
                f"config.image_token_index is {config.image_token_index}: set it to {image_token_id}"
            )
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        self.model, self.processor = model, processor
        self.image = load_image(image)
        self.max_new_tokens, self.generate_kwargs = max_new_tokens, {"do_sample": False, **generate_kwargs}
        self.decoder_only = bool(getattr(config, "use_decoder_only_language_model", True))
        self.context_length = max_context or getattr(config.text_config, "max_position_embeddings", None)
        if self.context_length is None:
            raise ValueError("this language model's config has no max_position_embeddings: pass max_context=")
        # L_prompt <= context - Q - new tokens: the image tokens and the answer share the context
        self.token_budget = self.context_length - config.num_query_tokens - (max_new_tokens if self.decoder_only else 0)
        if self.token_budget < 1:
            raise ValueError(
                f"no room for a prompt: context {self.context_length} - {config.num_query_tokens} image tokens - "
                f"{max_new_tokens} new tokens leaves {self.token_budget}; lower max_new_tokens"
            )
        self.last_dropped, self.last_prompt = 0, ""

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` as the processor encodes it, special tokens (OPT's BOS) included."""
        return len(self.processor.tokenizer(text)["input_ids"])

    @torch.no_grad()
    def respond(self, history: History, question: str) -> str:
        """The model's answer to ``question`` about the image, given the earlier turns ``history``.

        An empty or whitespace-only question gets :data:`EMPTY_QUESTION_REPLY` without running the
        model. One trailing "." is removed from the answer: the prompt format adds it back when
        the turn becomes history. Raises ValueError when the question alone is too long.
        """
        if question is None or (isinstance(question, str) and not question.strip()):
            self.last_dropped = 0
            return EMPTY_QUESTION_REPLY
        kept, self.last_dropped = fit_history(history, question, self.token_budget, self.count_tokens)
        self.last_prompt = build_prompt(kept, question)
        inputs = self.processor(images=self.image, text=self.last_prompt, return_tensors="pt")
        # the processor has put Q image tokens before the text; the model swaps in the Q-Former's outputs
        inputs = inputs.to(self.model.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, **self.generate_kwargs)  # (1, T)
        new_tokens = out[0, inputs["input_ids"].shape[1]:] if self.decoder_only else out[0]  # OPT echoes the prompt
        answer = self.processor.tokenizer.decode(new_tokens, skip_special_tokens=True).strip()
        return answer[:-1].rstrip() if answer.endswith(".") else answer

    __call__ = respond


def _png_bytes(image: Any) -> bytes:
    from utils.images import load_image

    buffer = io.BytesIO()
    load_image(image).save(buffer, format="PNG")
    return buffer.getvalue()


class ChatWidget:
    """An image, a transcript, a text box, Send and Reset: a thin ipywidgets shell over a responder.

    ``responder`` is a :class:`Blip2Chat` or anything with ``respond(history, question) -> str``
    (or a plain function of that signature); if it has ``last_dropped``, the transcript notes when
    older turns no longer fit. ``image`` defaults to the responder's ``image``. The widget keeps
    the whole ``history``; the responder decides how much of it reaches the model.

    Enter in the text box sends, as the Send button does. While the model answers, the box and
    the buttons are disabled and the Send button reads "Thinking..."; an error, whatever its type,
    is shown in the transcript (and kept in :attr:`last_error`) instead of vanishing into the
    widget log.
    """

    def __init__(self, responder: Any, image: Any | None = None, image_width: int = 256) -> None:
        import ipywidgets as widgets

        self.responder = responder
        self._respond = getattr(responder, "respond", responder)
        if not callable(self._respond):
            raise TypeError("responder must have a respond(history, question) method or be such a function")
        self.history: list[tuple[str, str]] = []
        self.lines: list[str] = []  # transcript lines, HTML-escaped
        self.last_error: BaseException | None = None
        image = image if image is not None else getattr(responder, "image", None)
        self.image = (widgets.Image(value=_png_bytes(image), format="png", width=image_width)
                      if image is not None else None)
        self.transcript = widgets.HTML(value="", layout=widgets.Layout(width="420px", min_height="120px"))
        self.text = widgets.Text(placeholder="Ask about the image...", layout=widgets.Layout(width="300px"))
        self.send_button = widgets.Button(description="Send", button_style="primary")
        self.reset_button = widgets.Button(description="Reset")
        self.send_button.on_click(lambda _: self.send())
        self.reset_button.on_click(lambda _: self.reset())
        # Enter: the text box's front end sends a "submit" message (Text.on_submit is deprecated,
        # so the message is read directly; the box's value is already up to date when it arrives)
        self.text.on_msg(lambda _, content, buffers: self.send() if content.get("event") == "submit" else None)
        controls = widgets.VBox([self.transcript, widgets.HBox([self.text, self.send_button, self.reset_button])])
        self.widget = widgets.HBox([self.image, controls] if self.image is not None else [controls])

    def _show(self, line: str) -> None:
        self.lines.append(line)
        if len(self.lines) > MAX_WIDGET_LINES:
            self.lines[:] = ["<i>(earlier messages hidden)</i>", *self.lines[-(MAX_WIDGET_LINES - 1):]]
        self.transcript.value = "<br>".join(self.lines)

    def send(self, message: str | None = None) -> None:
        """Send ``message`` (default: the text box), show the answer, remember the turn, clear the box."""
        message = self.text.value if message is None else message
        self.text.value = ""
        if not message.strip():  # nothing to ask: answer politely, leave the model alone
            self._show(f"<i>{html.escape(EMPTY_QUESTION_REPLY)}</i>")
            return
        self._show(f"<b>You:</b> {html.escape(message.strip())}")
        self._thinking(True)
        try:
            answer = self._respond(list(self.history), message)
        except Exception as error:  # shown in the transcript, not lost in the widget log
            self._thinking(False)
            self.last_error = error
            if isinstance(error, ValueError):  # e.g. a question too long for the context: the message says what to do
                self._show(f"<i>{html.escape(str(error))}</i>")
            else:
                self._show(f"<i>The model failed to answer ({html.escape(type(error).__name__)}: "
                           f"{html.escape(str(error))}). Try again, or Reset.</i>")
            return
        self._thinking(False)
        dropped = getattr(self.responder, "last_dropped", 0)
        if dropped:
            turns, were = ("turn", "was") if dropped == 1 else ("turns", "were")
            self._show(f"<i>(the oldest {dropped} {turns} no longer fit in the model's context and {were} left out)</i>")
        self._show(f"<b>Model:</b> {html.escape(answer) if answer else '<i>(no answer)</i>'}")
        if answer:  # an empty answer cannot be written back into a prompt
            self.history.append((message.strip(), answer))
            del self.history[:-MAX_WIDGET_TURNS]  # bounded memory: older turns could never reach the model

    def _thinking(self, busy: bool) -> None:
        """While the model answers: a "thinking" line, the box and the buttons disabled."""
        if busy:
            self._show("<i>thinking...</i>")
        elif self.lines and self.lines[-1] == "<i>thinking...</i>":  # (it is always the last line here)
            self.lines.pop()
            self.transcript.value = "<br>".join(self.lines)
        self.text.disabled = self.send_button.disabled = self.reset_button.disabled = busy
        self.send_button.description = "Thinking..." if busy else "Send"

    def reset(self) -> None:
        """Forget the conversation: empty history and transcript."""
        self.history.clear()
        self.lines.clear()
        self.transcript.value = ""
        self.text.value = ""

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)
