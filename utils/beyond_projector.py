"""What came after LLaVA's projector (chapter 4): CogVLM's visual expert, SPHINX's weight mixing, tools.

LLaVA feeds projected patches to the language model's input and stops there. Chapter 4 builds
three later ideas, small enough to run on a CPU:

- :class:`VisualExpertBlock` (CogVLM): image tokens get their own QKV and feed-forward weights in
  every block, text tokens keep the frozen LM's, and all attend to each other;
- :func:`mix_state_dicts` (SPHINX): average two fine-tuned copies of one model, weight by weight;
- :class:`ShapeTools` and :func:`colour_left_of` (Visual ChatGPT, ViperGPT): a program that calls
  the tiny LLaVA as a tool answers a question the model cannot answer in one go.

Shapes ledger (see ``utils/__init__.py``): B batch, L tokens, D width, nh heads, hs head size.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch

from utils.llava import answer_questions, first_word, short_question
from utils.shapes import COLOURS, SHAPES


# --- SPHINX-style weight mixing -------------------------------------------------------------------------
def mix_state_dicts(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], beta: float) -> dict[str, torch.Tensor]:
    """theta_mix = beta * theta_a + (1 - beta) * theta_b, tensor by tensor; both must share one architecture."""
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must lie in [0, 1], got {beta}")
    if a.keys() != b.keys():
        missing = sorted(set(a) ^ set(b))[:3]
        raise ValueError(f"the two checkpoints have different parameters (e.g. {missing}); mixing needs one architecture")
    mixed = {}
    for name in a:
        if a[name].shape != b[name].shape:
            raise ValueError(f"{name}: shapes {tuple(a[name].shape)} and {tuple(b[name].shape)} differ")
        if a[name].is_floating_point():
            mixed[name] = beta * a[name].float() + (1 - beta) * b[name].float()  # same shape as either
        else:
            mixed[name] = a[name].clone()
    return mixed


# --- CogVLM's visual expert ---------------------------------------------------------------------------
class VisualExpertBlock(torch.nn.Module):
    """One pre-norm transformer block with CogVLM's visual expert.

    Text tokens use the (frozen) language model's QKV projection and feed-forward network; image
    tokens use their own copies (the trainable expert). All tokens then attend to each other
    under one causal mask, so text still reads the image and the image part still reads the text
    before it. :meth:`copy_text_to_image` starts the expert as a copy of the text weights: the
    block then computes exactly what the plain language-model block computes.
    """

    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.norm1, self.norm2 = torch.nn.LayerNorm(dim), torch.nn.LayerNorm(dim)
        self.qkv_text, self.qkv_image = torch.nn.Linear(dim, 3 * dim), torch.nn.Linear(dim, 3 * dim)
        self.out = torch.nn.Linear(dim, dim)  # shared, as in CogVLM's figure only QKV and FFN are doubled
        self.ffn_text = torch.nn.Sequential(torch.nn.Linear(dim, hidden), torch.nn.GELU(), torch.nn.Linear(hidden, dim))
        self.ffn_image = torch.nn.Sequential(torch.nn.Linear(dim, hidden), torch.nn.GELU(), torch.nn.Linear(hidden, dim))

    def copy_text_to_image(self) -> "VisualExpertBlock":
        """Initialise the expert from the text weights (CogVLM starts from the LLM's own)."""
        self.qkv_image.load_state_dict(self.qkv_text.state_dict())
        self.ffn_image.load_state_dict(self.ffn_text.state_dict())
        return self

    @staticmethod
    def _route(x: torch.Tensor, is_image: torch.Tensor, text_fn, image_fn) -> torch.Tensor:
        return torch.where(is_image[..., None], image_fn(x), text_fn(x))  # (B, L, *): per token, its own weights

    def forward(self, x: torch.Tensor, is_image: torch.Tensor) -> torch.Tensor:
        """``x`` (B, L, D); ``is_image`` (B, L) bool, True at image positions."""
        if is_image.shape != x.shape[:2] or is_image.dtype != torch.bool:
            raise ValueError(f"is_image must be a bool tensor of shape {tuple(x.shape[:2])}, got "
                             f"{tuple(is_image.shape)} {is_image.dtype}")
        B, L, D = x.shape
        qkv = self._route(self.norm1(x), is_image, self.qkv_text, self.qkv_image)  # (B, L, 3D)
        q, k, v = qkv.view(B, L, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)  # each (B, nh, L, hs)
        attended = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, nh, L, hs)
        x = x + self.out(attended.transpose(1, 2).reshape(B, L, D))  # (B, L, D)
        return x + self._route(self.norm2(x), is_image, self.ffn_text, self.ffn_image)  # (B, L, D)

    def plain_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The same block with the text weights for every token: the frozen LM's own computation."""
        return self.forward(x, torch.zeros(x.shape[:2], dtype=torch.bool))  # no position is an image token


# --- tool use in the style of ViperGPT ------------------------------------------------------------
class ShapeTools:
    """The chapter's tiny LLaVA wrapped as two tools a program can call.

    ``find(image)``: the objects in the image as (colour, shape) pairs, by asking the model the
    15 existence questions (a detector built from yes/no answers); ``ask(image, question)``: a
    one-word answer. ``calls`` counts the model calls.
    """

    def __init__(self, model: Any, processor: Any) -> None:
        self.model, self.processor, self.calls = model, processor, 0

    def ask_many(self, images: Sequence[Any], questions: Sequence[str]) -> list[str]:
        self.calls += len(questions)
        return [first_word(a) for a in answer_questions(self.model, self.processor, images,
                                                         [short_question(q) for q in questions])]

    def ask(self, image: Any, question: str) -> str:
        return self.ask_many([image], [question])[0]

    def find(self, image: Any) -> list[tuple[str, str]]:
        pairs = [(c, s) for c in COLOURS for s in SHAPES]
        said = self.ask_many([image] * len(pairs), [f"Is there a {c} {s} in the image?" for c, s in pairs])
        return [pair for pair, answer in zip(pairs, said) if answer == "yes"]


def colour_left_of(tools: ShapeTools, image: Any, anchor: str) -> str:
    """A program for "What colour is the shape to the left of the {anchor}?" built from tool calls.

    Find the objects, ask where each one is relative to the anchor, and ask the colour of the
    one on its left. Returns "none" when the anchor is missing or nothing is left of it.
    """
    found = tools.find(image)
    shapes = [s for _, s in found]
    if anchor not in shapes:
        return "none"
    for colour, shape in found:
        if shape != anchor and tools.ask(image, f"Where is the {shape} relative to the {anchor}?") == "left":
            return tools.ask(image, f"What colour is the {shape}?")
    return "none"
