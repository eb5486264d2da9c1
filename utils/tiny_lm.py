"""The tiny language model inside the course's BLIP-2 and LLaVA: sizes, tokens, tokenizer, losses.

Both tiny multimodal models (chapters 3 and 4) put a small Llama-style decoder (RMSNorm, rotary
positions, a SwiGLU MLP, as in the LLaMA/Vicuna LMs of InstructBLIP and LLaVA) behind their
bridge. What they share lives here, once:

- :data:`SPECIAL_TOKENS` and their ids (0-4), and :data:`IGNORE_INDEX` for positions the loss skips;
- :class:`TinyLMConfig`, named sizes in the manner of minGPT (``TinyLMConfig.named("llava")``);
- :func:`build_tokenizer` (a GPT-2-style byte-level BPE: ``Ġ`` marks a word start) and
  :func:`tokenizer_corpus`, the ShapesWorld text it learns its merges from;
- :func:`with_labels` (label masking: learn the answer, not the prompt), :func:`lm_loss` and
  :func:`teacher_forced_accuracy`;
- :func:`eager_attention`, which switches a model to the attention code that returns its weights
  and always switches it back.

Shapes ledger (see ``utils/__init__.py``): B batch, L text tokens, V vocabulary size.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F

from utils.shapes import Scene

BOS, EOS, PAD, UNK = "<s>", "</s>", "<pad>", "<unk>"
IMAGE_TOKEN = "<image>"  # where the image goes: one per soft prompt (BLIP-2) or per patch (LLaVA)
SPECIAL_TOKENS = (BOS, EOS, PAD, UNK, IMAGE_TOKEN)  # ids 0..4 in every tiny tokenizer, in this order
IGNORE_INDEX = -100  # cross_entropy's ignore_index: label of a position the loss skips


@dataclass(frozen=True)
class TinyLMConfig:
    """The sizes of a tiny Llama-style LM; :meth:`named` gives the course's two."""

    hidden_size: int = 128
    intermediate_size: int = 256
    num_hidden_layers: int = 6
    num_attention_heads: int = 4
    max_position_embeddings: int = 512

    @classmethod
    def named(cls, name: str, **overrides: Any) -> "TinyLMConfig":
        """``"blip2"``: 128 positions (32 soft prompts, a prompt, an answer), a wider MLP;
        ``"llava"``: 512 positions (64 patch tokens and a conversation); ``"paligemma"``: 128 positions
        (65 image tokens, a task prefix, a short answer), 4 blocks."""
        sizes = {
            "blip2": dict(intermediate_size=512, max_position_embeddings=128),
            "llava": dict(intermediate_size=256, max_position_embeddings=512),
            "paligemma": dict(intermediate_size=256, num_hidden_layers=4, max_position_embeddings=128),
        }
        if name not in sizes:
            raise ValueError(f"no tiny LM named {name!r}; choose one of {', '.join(sizes)}")
        return cls(**{**sizes[name], **overrides})

    def to_llama(self, vocab_size: int):
        """transformers' ``LlamaConfig`` with these sizes and the special tokens' ids."""
        from transformers import LlamaConfig

        return LlamaConfig(vocab_size=vocab_size, bos_token_id=SPECIAL_TOKENS.index(BOS),
                           eos_token_id=SPECIAL_TOKENS.index(EOS), pad_token_id=SPECIAL_TOKENS.index(PAD),
                           num_key_value_heads=self.num_attention_heads, rms_norm_eps=1e-5, tie_word_embeddings=True,
                           **asdict(self))


def build_tokenizer(texts: Iterable[str], vocab_size: int = 1024, *, bos_first: bool = False,
                    name_image_token: bool = False):
    """A byte-level BPE trained on ``texts``, with :data:`SPECIAL_TOKENS` as ids 0-4.

    ``bos_first`` puts ``<s>`` before every text, as OPT's tokenizer (BLIP-2's LM) does; without it
    the tokenizer adds nothing and a chat template writes ``<s>`` (LLaVA). ``name_image_token``
    registers ``<image>`` as the tokenizer's ``image_token``, which ``LlavaProcessor`` reads.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token=UNK))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    if not bos_first:
        tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(texts, trainer)
    if bos_first:
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, SPECIAL_TOKENS.index(BOS))])
    extra = {"extra_special_tokens": {"image_token": IMAGE_TOKEN}} if name_image_token else {}
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=BOS, eos_token=EOS, pad_token=PAD,
                                   unk_token=UNK, **extra)


def tokenizer_corpus(scenes: Sequence[Scene], qa_format: str, extra: Iterable[str] = (), fixed: Sequence[str] = (),
                     *, qa_scenes: int = 3000, repeats: int = 20) -> list[str]:
    """The text a tiny LM's tokenizer learns from: captions of ``scenes``, the questions and answers
    of the first ``qa_scenes`` written with ``qa_format`` (``{q}``, ``{a}``), the ``extra`` texts, and
    the ``fixed`` prompt words repeated ``repeats`` times so that each becomes a token of its own."""
    corpus = [s.caption for s in scenes]
    corpus += [qa_format.format(q=q, a=a) for s in scenes[:qa_scenes] for q, a in s.qa]
    corpus += list(extra)
    corpus += list(fixed) * repeats
    return corpus


def with_labels(prompt: Sequence[int], answer: Sequence[int]) -> tuple[list[int], list[int]]:
    """Token ids ``prompt + answer`` and their labels: :data:`IGNORE_INDEX` on the prompt, so only
    the answer is learned (the model shifts labels by one itself: label i belongs to token i)."""
    return [*prompt, *answer], [IGNORE_INDEX] * len(prompt) + list(answer)


def lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy: logits (B, L, V) at position i predict labels (B, L) at i + 1."""
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                           ignore_index=IGNORE_INDEX)


@torch.no_grad()
def teacher_forced_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B,) booleans: is every labelled token of the row the model's top choice, given the true prefix?

    One forward pass and no generation, so a quick check during training.
    """
    target = labels[:, 1:]  # (B, L-1)
    right = (logits[:, :-1].argmax(-1) == target) | (target == IGNORE_INDEX)
    return right.all(dim=1)


@contextmanager
def eager_attention(model: Any) -> Iterator[Any]:
    """Run ``model`` with transformers' written-out ("eager") attention, which can return its weights
    (the fused kernels cannot), and restore its own attention code afterwards, even after an error."""
    kind = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        yield model
    finally:
        model.set_attn_implementation(kind)
