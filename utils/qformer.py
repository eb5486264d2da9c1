"""The Q-Former (chapter 3): BLIP-2's bridge from a frozen image encoder to a frozen language model.

A small set of learned *query tokens* reads the frozen image features through cross-attention and
hands the language model a fixed number Q of vectors, however many patches the image had. The
same transformer also reads text: queries and text tokens share every self-attention layer, and a
mask decides who may see whom -- which is how one network learns BLIP-2's three stage-1 objectives
(contrastive ITC, matching ITM, generation ITG).

Reads top to bottom: config, attention, the two kinds of sub-block, a layer, the Q-Former,
weight loading from transformers, the stage-1 masks, a stage-1 model with its heads, the losses.

Shapes ledger (see ``utils/__init__.py``): B batch, Q query tokens, L text tokens, T = Q + L,
N image tokens (patches), D Q-Former width, E width of the frozen image features, nh heads,
hs head size, V vocabulary, d width of the contrastive embedding.

The Q-Former is numerically the same function as transformers' ``Blip2QFormerModel`` (post-LN
"Add & Norm" sub-blocks as in BERT, exact-erf GELU, cross-attention in layers 0, f, 2f, ... for
``cross_attention_frequency`` f), so :meth:`QFormer.from_transformers` copies its weights exactly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

_NAMED_SIZES: dict[str, dict[str, Any]] = {
    # Small enough for tests and a CPU: 4 layers, so cross-attention sits in layers 0 and 2.
    "tiny": dict(hidden_size=32, num_layers=4, num_heads=4, intermediate_size=64, cross_attention_frequency=2,
                 num_query_tokens=4, encoder_hidden_size=24, vocab_size=64, max_position_embeddings=32,
                 embed_dim=16, dropout=0.0),
    # BLIP-2's Q-Former (Li et al., 2023): BERT-base sizes, 32 queries, EVA ViT-g features 1408 wide.
    "base": dict(hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072, cross_attention_frequency=2,
                 num_query_tokens=32, encoder_hidden_size=1408, vocab_size=30522, max_position_embeddings=512,
                 embed_dim=256, dropout=0.1),
}

_ACTIVATIONS = {"gelu": F.gelu, "relu": F.relu, "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh")}


@dataclass
class QFormerConfig:
    """The sizes of a Q-Former; ``QFormerConfig.named("base")`` for BLIP-2's.

    ``use_text_input`` adds the text feed-forward used by text positions (stage 1 needs it; the
    BLIP-2 generation checkpoints on the Hub were saved without it). ``vocab_size``,
    ``max_position_embeddings`` and ``embed_dim`` size the text embedding and heads of
    :class:`QFormerForPretraining`; the Q-Former itself takes embeddings, not token ids.
    """

    hidden_size: int = 768  # D
    num_layers: int = 12
    num_heads: int = 12  # nh
    intermediate_size: int = 3072
    cross_attention_frequency: int = 2  # cross-attention in layers i with i % f == 0
    num_query_tokens: int = 32  # Q
    encoder_hidden_size: int = 1408  # E
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"
    dropout: float = 0.1
    use_text_input: bool = True
    vocab_size: int = 30522  # V
    max_position_embeddings: int = 512
    embed_dim: int = 256  # d

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} cannot be split into {self.num_heads} equal heads: "
                "choose num_heads that divides hidden_size"
            )
        if self.cross_attention_frequency < 1:
            raise ValueError(
                f"cross_attention_frequency must be >= 1 (1 = every layer), got {self.cross_attention_frequency}"
            )
        if self.num_query_tokens < 1:
            raise ValueError(f"num_query_tokens must be >= 1, got {self.num_query_tokens}")
        if self.hidden_act not in _ACTIVATIONS:
            raise ValueError(
                f"hidden_act {self.hidden_act!r} is not supported; choose one of {', '.join(_ACTIVATIONS)}"
            )

    @classmethod
    def named(cls, name: str, **overrides: Any) -> QFormerConfig:
        """A named size: "tiny" or "base" (BLIP-2's); keyword arguments override fields."""
        if name not in _NAMED_SIZES:
            raise ValueError(f"unknown Q-Former size {name!r}; choose one of {', '.join(_NAMED_SIZES)}")
        return cls(**{**_NAMED_SIZES[name], **overrides})

    @property
    def head_size(self) -> int:  # hs
        return self.hidden_size // self.num_heads

    def has_cross_attention(self, layer: int) -> bool:
        """Whether layer ``layer`` cross-attends to the image: layers 0, f, 2f, ... as in transformers."""
        return layer % self.cross_attention_frequency == 0

    def to_transformers(self) -> Any:
        """The equivalent ``transformers.Blip2QFormerConfig`` (Q lives in ``Blip2Config.num_query_tokens``)."""
        from transformers import Blip2QFormerConfig

        return Blip2QFormerConfig(
            hidden_size=self.hidden_size, num_hidden_layers=self.num_layers, num_attention_heads=self.num_heads,
            intermediate_size=self.intermediate_size, cross_attention_frequency=self.cross_attention_frequency,
            encoder_hidden_size=self.encoder_hidden_size, layer_norm_eps=self.layer_norm_eps,
            hidden_act=self.hidden_act, hidden_dropout_prob=self.dropout, attention_probs_dropout_prob=self.dropout,
            use_qformer_text_input=self.use_text_input, vocab_size=self.vocab_size,
            max_position_embeddings=self.max_position_embeddings,
        )

    @classmethod
    def from_transformers(cls, hf_config: Any, num_query_tokens: int = 32, **overrides: Any) -> QFormerConfig:
        """Read a ``Blip2QFormerConfig`` (or InstructBLIP's, which always takes text); Q is not part of it,
        so pass ``num_query_tokens``."""
        c = hf_config
        if c.hidden_dropout_prob != c.attention_probs_dropout_prob:
            raise ValueError(
                f"this config uses two dropout rates ({c.hidden_dropout_prob} and {c.attention_probs_dropout_prob}); "
                "QFormerConfig has one: set both to the same value"
            )
        fields = dict(
            hidden_size=c.hidden_size, num_layers=c.num_hidden_layers, num_heads=c.num_attention_heads,
            intermediate_size=c.intermediate_size, cross_attention_frequency=c.cross_attention_frequency,
            num_query_tokens=num_query_tokens, encoder_hidden_size=c.encoder_hidden_size,
            layer_norm_eps=c.layer_norm_eps, hidden_act=c.hidden_act, dropout=c.hidden_dropout_prob,
            use_text_input=getattr(c, "use_qformer_text_input", True), vocab_size=c.vocab_size,
            max_position_embeddings=c.max_position_embeddings,
        )
        return cls(**{**fields, **overrides})


# --- attention ---------------------------------------------------------------------------------


def dot_product_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q k^T / sqrt(hs)) v over the keys, with ``allowed`` (True = may attend) masking scores.

    q (B, nh, Tq, hs), k and v (B, nh, Tk, hs), ``allowed`` broadcastable to (B, nh, Tq, Tk).
    Returns the output (B, nh, Tq, hs) and the weights (B, nh, Tq, Tk). A blocked score becomes the
    most negative float rather than -inf, so a row with nothing allowed averages all values
    instead of turning into NaN.
    """
    scores = q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5  # (B, nh, Tq, Tk): s_ij = q_i . k_j / sqrt(hs)
    if allowed is not None:
        scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
    weights = scores.softmax(dim=-1)  # (B, nh, Tq, Tk): each query's weights over the keys sum to 1
    return weights @ v, weights  # (B, nh, Tq, hs)


class MultiHeadAttention(nn.Module):
    """Queries from ``x``, keys and values from ``context`` (``x`` itself for self-attention).

    The key and value projections take the context's width, so cross-attention can read image
    features E wide while the Q-Former is D wide.
    """

    def __init__(self, dim: int, context_dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(context_dim, dim)
        self.value = nn.Linear(context_dim, dim)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor, allowed: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, Tq, D), context (B, Tk, E) -> heads side by side (B, Tq, D) and weights (B, nh, Tq, Tk)."""
        B, Tq, D = x.shape
        Tk, nh = context.shape[1], self.num_heads
        q = self.query(x).reshape(B, Tq, nh, D // nh).transpose(1, 2)  # (B, nh, Tq, hs)
        k = self.key(context).reshape(B, Tk, nh, D // nh).transpose(1, 2)  # (B, nh, Tk, hs)
        v = self.value(context).reshape(B, Tk, nh, D // nh).transpose(1, 2)  # (B, nh, Tk, hs)
        y, weights = dot_product_attention(q, k, v, allowed)  # (B, nh, Tq, hs)
        return y.transpose(1, 2).reshape(B, Tq, D), weights  # (B, Tq, D)


class AttentionBlock(nn.Module):
    """Attention, an output projection, then "Add & Norm" (post-LN, as in BERT): LN(x + W_o attn(x, c))."""

    def __init__(self, dim: int, context_dim: int, num_heads: int, eps: float, dropout: float) -> None:
        super().__init__()
        self.attention = MultiHeadAttention(dim, context_dim, num_heads)
        self.proj = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor, allowed: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, Tq, D), context (B, Tk, E) -> (B, Tq, D) and the attention weights (B, nh, Tq, Tk)."""
        y, weights = self.attention(x, context, allowed)
        return self.norm(x + self.dropout(self.proj(y))), weights  # (B, Tq, D)


class FeedForward(nn.Module):
    """Widen, activate, project back, then Add & Norm: LN(x + W_2 act(W_1 x))."""

    def __init__(self, dim: int, hidden: int, act: str, eps: float, dropout: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.dropout = nn.Dropout(dropout)
        self.act = _ACTIVATIONS[act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.dropout(self.fc2(self.act(self.fc1(x)))))  # (B, T, D)


class QFormerLayer(nn.Module):
    """Self-attention over queries and text together; then only the queries cross-attend to the
    image; then each kind of token goes through its own feed-forward."""

    def __init__(self, config: QFormerConfig, index: int) -> None:
        super().__init__()
        c = config
        D, eps, p = c.hidden_size, c.layer_norm_eps, c.dropout
        self.self_attention = AttentionBlock(D, D, c.num_heads, eps, p)
        self.cross_attention = (
            AttentionBlock(D, c.encoder_hidden_size, c.num_heads, eps, p) if c.has_cross_attention(index) else None
        )
        self.query_ffn = FeedForward(D, c.intermediate_size, c.hidden_act, eps, p)
        self.text_ffn = FeedForward(D, c.intermediate_size, c.hidden_act, eps, p) if c.use_text_input else None

    def forward(
        self, x: torch.Tensor, image_embeds: torch.Tensor, num_queries: int, allowed: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, Q+L, D), image_embeds (B, N, E) -> (B, Q+L, D) and the cross-attention weights (B, nh, Q, N)."""
        x, _ = self.self_attention(x, x, allowed)  # (B, Q+L, D): the one place queries and text meet
        queries, text = x[:, :num_queries], x[:, num_queries:]  # (B, Q, D), (B, L, D)
        weights = None
        if self.cross_attention is not None:  # only the queries look at the image, never the text
            queries, weights = self.cross_attention(queries, image_embeds)  # (B, Q, D), (B, nh, Q, N)
        queries = self.query_ffn(queries)  # (B, Q, D)
        if text.shape[1] > 0:
            text = self.text_ffn(text)  # (B, L, D): the text keeps BERT's own feed-forward
        return torch.cat([queries, text], dim=1), weights  # (B, Q+L, D)


class QFormer(nn.Module):
    """The Querying Transformer: Q learned queries (and optionally text) in, Q + L vectors out.

    Owns the learned ``query_tokens`` (1, Q, D) -- in transformers they live one level up, in
    ``Blip2ForConditionalGeneration.query_tokens`` -- and the LayerNorm that every input token,
    query or text, passes through before the first layer.
    """

    def __init__(self, config: QFormerConfig) -> None:
        super().__init__()
        self.config = config
        D = config.hidden_size
        self.query_tokens = nn.Parameter(torch.randn(1, config.num_query_tokens, D) * 0.02)  # BLIP-2's init
        self.layernorm = nn.LayerNorm(D, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList([QFormerLayer(config, i) for i in range(config.num_layers)])

    def forward(
        self,
        query_embeds: torch.Tensor | None,
        image_embeds: torch.Tensor,
        text_embeds: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        *,
        attention_pattern: torch.Tensor | None = None,
        output_cross_attentions: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Run the Q-Former; returns the hidden states (B, Q+L, D), queries first.

        - ``query_embeds`` (B, Q, D), or None for the learned ``query_tokens``.
        - ``image_embeds`` (B, N, E): the frozen image encoder's output, read by cross-attention.
        - ``text_embeds`` (B, L, D): embedded text tokens (word + position embeddings), optional.
        - ``attention_mask``: padding, 1/True for real tokens, (B, Q+L) as in transformers or (B, L)
          for the text alone (queries are never padding).
        - ``attention_pattern`` (Q+L, Q+L) bool, True = row may attend to column: one of
          :func:`itc_mask`, :func:`itm_mask`, :func:`itg_mask`. Without it every token sees every
          token (the ITM pattern), as in transformers.
        - ``output_cross_attentions``: also return the cross-attention weights, one (B, nh, Q, N)
          tensor per cross-attention layer.
        """
        c = self.config
        image_embeds = _check_image_embeds(image_embeds, c)
        B = image_embeds.shape[0]
        if query_embeds is None:
            query_embeds = self.query_tokens.expand(B, -1, -1)  # (B, Q, D): the same queries for every image
        _check_tokens(query_embeds, "query_embeds", B, c.hidden_size, "Q")
        Q = query_embeds.shape[1]
        if Q != c.num_query_tokens:
            raise ValueError(
                f"query_embeds has {Q} query tokens but this Q-Former was built for num_query_tokens="
                f"{c.num_query_tokens}: pass (B, {c.num_query_tokens}, {c.hidden_size}) queries, or None for its own"
            )
        x = query_embeds  # (B, Q, D)
        if text_embeds is not None:
            if not c.use_text_input:
                raise ValueError(
                    "this Q-Former has no text feed-forward (use_text_input=False, as in BLIP-2's generation "
                    "checkpoints): build it with QFormerConfig(use_text_input=True) to feed text"
                )
            _check_tokens(text_embeds, "text_embeds", B, c.hidden_size, "L")
            x = torch.cat([query_embeds, text_embeds.to(query_embeds.dtype)], dim=1)  # (B, Q+L, D)
        allowed = _allowed(attention_mask, attention_pattern, B, Q, x.shape[1])  # (B, 1, Q+L, Q+L) or None
        # transformers' Q-Former normalises its input tokens -- the learned queries included
        x = self.dropout(self.layernorm(x))  # (B, Q+L, D)
        maps = []
        for layer in self.layers:
            x, weights = layer(x, image_embeds, Q, allowed)  # (B, Q+L, D)
            if weights is not None:
                maps.append(weights)  # (B, nh, Q, N)
        return (x, maps) if output_cross_attentions else x

    # --- moving weights from transformers ----------------------------------------------------

    @classmethod
    def from_transformers(cls, model: nn.Module, num_query_tokens: int | None = None) -> QFormer:
        """A QFormer holding the weights of a transformers Q-Former, every tensor copied.

        ``model`` is a ``Blip2QFormerModel``, or a BLIP-2 model that holds one as ``.qformer``
        (``Blip2ForConditionalGeneration``, ``Blip2Model``, ...), whose ``query_tokens`` are then
        copied too. For a bare ``Blip2QFormerModel`` pass ``num_query_tokens`` (default 32); its
        query tokens stay at their random initialisation.
        """
        from transformers import Blip2QFormerModel

        qformer = getattr(model, "qformer", model)
        if not isinstance(qformer, Blip2QFormerModel):
            raise TypeError(
                "expected a transformers Blip2QFormerModel or a BLIP-2 model with a .qformer, "
                f"got {type(model).__name__}"
            )
        query_tokens = getattr(model, "query_tokens", None)
        if query_tokens is not None and num_query_tokens not in (None, query_tokens.shape[1]):
            raise ValueError(
                f"the model has {query_tokens.shape[1]} query tokens, not num_query_tokens={num_query_tokens}"
            )
        Q = query_tokens.shape[1] if query_tokens is not None else (num_query_tokens or 32)
        ours = cls(QFormerConfig.from_transformers(qformer.config, num_query_tokens=Q))
        state = state_dict_from_transformers(qformer.state_dict())
        if query_tokens is not None:
            state["query_tokens"] = query_tokens.detach()
        missing, _ = ours.load_state_dict(state, strict=False)  # unexpected keys raise in the mapping already
        if set(missing) - {"query_tokens"}:
            raise ValueError(f"the transformers Q-Former lacks tensors this QFormer needs: {sorted(missing)[:5]}")
        return ours.to(torch.float32)


def _check_image_embeds(image_embeds: Any, c: QFormerConfig) -> torch.Tensor:
    if not isinstance(image_embeds, torch.Tensor):
        raise TypeError(f"image_embeds must be a torch.Tensor (B, N, E), got {type(image_embeds).__name__}")
    if image_embeds.ndim != 3:
        raise ValueError(
            "image_embeds must be (B, N, E) -- a batch of N image-token features -- "
            f"got shape {tuple(image_embeds.shape)}"
        )
    if image_embeds.shape[-1] != c.encoder_hidden_size:
        raise ValueError(
            f"image features are {image_embeds.shape[-1]} wide but this Q-Former cross-attends to features "
            f"encoder_hidden_size={c.encoder_hidden_size} wide: use the matching image encoder, or build the "
            f"Q-Former with QFormerConfig(encoder_hidden_size={image_embeds.shape[-1]})"
        )
    return image_embeds.float()  # the Q-Former runs in float32, as transformers keeps it


def _check_tokens(x: Any, name: str, batch: int, width: int, letter: str) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a (B, {letter}, D) tensor, got {shape}")
    if x.shape[0] != batch:
        raise ValueError(f"{name} has batch size {x.shape[0]} but image_embeds has {batch}: they must match")
    if x.shape[-1] != width:
        raise ValueError(f"{name} is {x.shape[-1]} wide but the Q-Former's hidden_size D is {width}")


def _allowed(
    attention_mask: torch.Tensor | None, pattern: torch.Tensor | None, B: int, Q: int, T: int
) -> torch.Tensor | None:
    """Combine a padding mask and a (T, T) pattern into one bool mask (B, 1, T, T), True = may attend."""
    allowed = None
    if attention_mask is not None:
        if attention_mask.shape == (B, T - Q):  # text only: the queries are never padding
            attention_mask = torch.cat([attention_mask.new_ones(B, Q), attention_mask], dim=1)
        if attention_mask.shape != (B, T):
            raise ValueError(
                f"attention_mask must be (B, Q+L) = ({B}, {T}) or (B, L) = ({B}, {T - Q}), 1 for real tokens and "
                f"0 for padding; got {tuple(attention_mask.shape)}. For a (Q+L, Q+L) pattern use attention_pattern="
            )
        allowed = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T): no one attends to padding
    if pattern is not None:
        if pattern.shape != (T, T) or pattern.dtype != torch.bool:
            raise ValueError(
                f"attention_pattern must be a bool (Q+L, Q+L) = ({T}, {T}) matrix such as itg_mask(Q, L); got "
                f"{pattern.dtype} {tuple(pattern.shape)}"
            )
        pattern = pattern.to(attention_mask.device if attention_mask is not None else pattern.device)
        allowed = pattern[None, None] if allowed is None else allowed & pattern[None, None]  # (B, 1, T, T)
    return allowed


# transformers' names inside ``encoder.layer.{i}.`` -> ours inside ``layers.{i}.``
_LAYER_NAMES = {
    "attention.attention.query": "self_attention.attention.query",
    "attention.attention.key": "self_attention.attention.key",
    "attention.attention.value": "self_attention.attention.value",
    "attention.output.dense": "self_attention.proj",
    "attention.output.LayerNorm": "self_attention.norm",
    "crossattention.attention.query": "cross_attention.attention.query",
    "crossattention.attention.key": "cross_attention.attention.key",
    "crossattention.attention.value": "cross_attention.attention.value",
    "crossattention.output.dense": "cross_attention.proj",
    "crossattention.output.LayerNorm": "cross_attention.norm",
    "intermediate_query.dense": "query_ffn.fc1",
    "output_query.dense": "query_ffn.fc2",
    "output_query.LayerNorm": "query_ffn.norm",
    "intermediate.dense": "text_ffn.fc1",
    "output.dense": "text_ffn.fc2",
    "output.LayerNorm": "text_ffn.norm",
}


def state_dict_from_transformers(hf_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a ``Blip2QFormerModel`` state dict to :class:`QFormer`'s names (``query_tokens`` not included)."""
    ours = {}
    for name, tensor in hf_state.items():
        if name.startswith("layernorm."):
            ours[name] = tensor
            continue
        match = re.fullmatch(r"encoder\.layer\.(\d+)\.(.+)\.(weight|bias)", name)
        if match is None or match.group(2) not in _LAYER_NAMES:
            raise ValueError(f"tensor {name!r} of the transformers Q-Former has no place in utils.qformer.QFormer")
        i, module, kind = match.groups()
        ours[f"layers.{i}.{_LAYER_NAMES[module]}.{kind}"] = tensor
    return ours



def load_into_transformers(ours: QFormer, model: nn.Module) -> None:
    """Copy a :class:`QFormer`'s weights into a BLIP-2 model's ``.qformer`` and ``.query_tokens``.

    The way back from :meth:`QFormer.from_transformers`, used to start stage 2 from stage 1. The
    text feed-forward is left behind when the target has none (BLIP-2's generation models are
    built without it: stage 2 feeds the Q-Former no text). Every tensor of the target is written.
    """
    from transformers import Blip2QFormerModel

    qformer = getattr(model, "qformer", None)
    if not isinstance(qformer, Blip2QFormerModel) or not hasattr(model, "query_tokens"):
        raise TypeError(f"expected a BLIP-2 model with .qformer and .query_tokens, got {type(model).__name__}")
    back = {v: k for k, v in _LAYER_NAMES.items()}
    target = qformer.state_dict()
    state = {}
    for name, tensor in ours.state_dict().items():
        if name == "query_tokens":
            continue
        if name.startswith("layernorm."):
            state[name] = tensor
            continue
        i, module, kind = re.fullmatch(r"layers\.(\d+)\.(.+)\.(weight|bias)", name).groups()
        hf_name = f"encoder.layer.{i}.{back[module]}.{kind}"
        if hf_name in target or not module.startswith("text_ffn"):
            state[hf_name] = tensor
    if ours.query_tokens.shape != model.query_tokens.shape:
        raise ValueError(f"query tokens {tuple(ours.query_tokens.shape)} do not fit the model's "
                         f"{tuple(model.query_tokens.shape)}")
    qformer.load_state_dict(state, strict=True)  # a missing or misshapen tensor raises here
    with torch.no_grad():
        model.query_tokens.copy_(ours.query_tokens)


# --- stage 1: three objectives, three masks ----------------------------------------------------


def _check_sizes(Q: Any, L: Any) -> None:
    for name, n in (("Q", Q), ("L", L)):
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ValueError(f"{name} must be a whole number >= 0 (a count of tokens), got {n!r}")


def itc_mask(Q: int, L: int) -> torch.Tensor:
    """Image-text contrastive (uni-modal): queries see only queries, text sees only text.

    Bool (Q+L, Q+L), True = row may attend to column. Neither side can peek at the other, so the
    query and text features that ITC compares are computed independently.
    """
    _check_sizes(Q, L)
    allowed = torch.zeros(Q + L, Q + L, dtype=torch.bool)
    allowed[:Q, :Q] = True  # queries <-> queries
    allowed[Q:, Q:] = True  # text <-> text
    return allowed


def itm_mask(Q: int, L: int) -> torch.Tensor:
    """Image-text matching (bi-directional): every token sees every token, bool (Q+L, Q+L)."""
    _check_sizes(Q, L)
    return torch.ones(Q + L, Q + L, dtype=torch.bool)


def itg_mask(Q: int, L: int) -> torch.Tensor:
    """Image-grounded text generation (multimodal causal): bool (Q+L, Q+L), True = may attend.

    Queries see all queries but no text (they must not read the caption they help generate); text
    token t sees every query and the text tokens 0..t (itself and the ones before it).
    """
    _check_sizes(Q, L)
    allowed = torch.zeros(Q + L, Q + L, dtype=torch.bool)
    allowed[:Q, :Q] = True  # queries <-> queries
    allowed[Q:, :Q] = True  # text -> all queries
    allowed[Q:, Q:] = torch.ones(L, L, dtype=torch.bool).tril()  # text -> itself and earlier text
    return allowed


def embed_tokens(owner: nn.Module, ids: torch.Tensor, what: str) -> torch.Tensor:
    """``owner.word_embeddings(ids) + owner.position_embeddings(0..L-1)``, (B, L, D), after checking that
    ``ids`` is a (B, L) integer tensor within the vocabulary and the positions (``owner.config``)."""
    config = owner.config
    if not isinstance(ids, torch.Tensor) or ids.ndim != 2 or ids.is_floating_point():
        shape = tuple(ids.shape) if isinstance(ids, torch.Tensor) else type(ids).__name__
        raise ValueError(f"{what} must be a (B, L) tensor of integer token ids, got {shape}")
    L = ids.shape[1]
    if L > config.max_position_embeddings:
        raise ValueError(f"{L} tokens in {what} exceed max_position_embeddings={config.max_position_embeddings}")
    if ids.numel() and (ids.min() < 0 or ids.max() >= config.vocab_size):
        raise ValueError(f"token ids must lie in 0..{config.vocab_size - 1} (vocab_size); were the {what} made by "
                         "the Q-Former's own tokenizer?")
    positions = torch.arange(L, device=ids.device)  # (L,)
    return owner.word_embeddings(ids) + owner.position_embeddings(positions)  # (B, L, D)


class QFormerForPretraining(nn.Module):
    """Stage 1 of BLIP-2: a Q-Former, a text embedding, and one small head per objective.

    - ITC: ``vision_proj`` maps each query output, ``text_proj`` the first text token's output
      (BLIP-2's [CLS]) to d; the similarity is the best-matching query (:func:`itc_similarity`).
    - ITM: ``itm_head`` (D -> 2) on each query output, averaged over the queries.
    - ITG: ``lm_head`` (D -> V) on the text outputs, predicting the next token.

    ``text_ids`` (B, L) start with a special token (BLIP-2 uses [CLS] for ITC/ITM and swaps in
    [DEC] for ITG; here one start token serves all three). Simplifications against the paper: a
    plain linear LM head, and the Q-Former's text weights are not initialised from BERT.
    """

    def __init__(self, config: QFormerConfig) -> None:
        super().__init__()
        if not config.use_text_input:
            raise ValueError("stage-1 pre-training feeds text to the Q-Former: build it with use_text_input=True")
        c = self.config = config
        D = c.hidden_size
        self.qformer = QFormer(c)
        self.word_embeddings = nn.Embedding(c.vocab_size, D)
        self.position_embeddings = nn.Embedding(c.max_position_embeddings, D)
        self.vision_proj = nn.Linear(D, c.embed_dim)
        self.text_proj = nn.Linear(D, c.embed_dim)
        self.itm_head = nn.Linear(D, 2)
        self.lm_head = nn.Linear(D, c.vocab_size)
        self.temperature = nn.Parameter(torch.tensor(0.07))  # tau, learned as in BLIP-2

    def embed_text(self, text_ids: torch.Tensor) -> torch.Tensor:
        """Word + position embeddings (B, L, D); the Q-Former's input LayerNorm comes next."""
        return embed_tokens(self, text_ids, "text_ids")

    def joint(self, image_embeds: torch.Tensor, text_ids: torch.Tensor, text_mask: torch.Tensor | None,
              pattern: torch.Tensor) -> torch.Tensor:
        """One Q-Former pass over queries and text under ``pattern``: (B, Q+L, D)."""
        return self.qformer(None, image_embeds, self.embed_text(text_ids), text_mask, attention_pattern=pattern)

    def contrastive_features(
        self, image_embeds: torch.Tensor, text_ids: torch.Tensor, text_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """ITC features from one pass under the uni-modal mask: query_feats (B, Q, d), text_feat (B, d)."""
        Q, L = self.config.num_query_tokens, text_ids.shape[1]
        h = self.joint(image_embeds, text_ids, text_mask, itc_mask(Q, L))  # (B, Q+L, D)
        return self.vision_proj(h[:, :Q]), self.text_proj(h[:, Q])  # (B, Q, d), (B, d) from the first text token

    def match_logits(
        self, image_embeds: torch.Tensor, text_ids: torch.Tensor, text_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """ITM logits (B, 2) -- [no match, match] -- from queries that saw the image and the whole text."""
        Q, L = self.config.num_query_tokens, text_ids.shape[1]
        h = self.joint(image_embeds, text_ids, text_mask, itm_mask(Q, L))  # (B, Q+L, D)
        return self.itm_head(h[:, :Q]).mean(dim=1)  # (B, Q, 2) -> (B, 2): every query votes

    def caption_logits(
        self, image_embeds: torch.Tensor, text_ids: torch.Tensor, text_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """ITG logits (B, L, V): position t scores the token at t + 1, seeing the queries and text 0..t."""
        Q, L = self.config.num_query_tokens, text_ids.shape[1]
        h = self.joint(image_embeds, text_ids, text_mask, itg_mask(Q, L))  # (B, Q+L, D)
        return self.lm_head(h[:, Q:])  # (B, L, V)

    def stage1_losses(
        self, image_embeds: torch.Tensor, text_ids: torch.Tensor, text_mask: torch.Tensor | None = None,
        generator: torch.Generator | None = None, matches: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """The three stage-1 losses on a batch of matching (image, text) pairs; BLIP-2 trains on their sum.

        ``matches`` (B, B) marks off-diagonal pairs that match too; ITM never draws them as negatives.
        """
        query_feats, text_feat = self.contrastive_features(image_embeds, text_ids, text_mask)
        itc = itc_loss(query_feats, text_feat, self.temperature)
        logits = itc_similarity(query_feats, text_feat) / self.temperature  # (B, B)
        itm = itm_loss(self, image_embeds, text_ids, logits, generator, text_mask, matches)
        itg = itg_loss(self, image_embeds, text_ids, text_mask)
        return {"itc": itc, "itm": itm, "itg": itg}


# --- stage-1 losses -----------------------------------------------------------------------------


def itc_similarity(query_feats: torch.Tensor, text_feat: torch.Tensor) -> torch.Tensor:
    """BLIP-2's image-text similarity: the best of the Q queries, s_ij = max_q cos(z_iq, t_j).

    query_feats (B, Q, d) for B images, text_feat (M, d) for M texts -> (B, M). Both are
    L2-normalised here, so the scores are cosines in [-1, 1].
    """
    if query_feats.ndim != 3 or text_feat.ndim != 2 or query_feats.shape[-1] != text_feat.shape[-1]:
        raise ValueError(
            f"need query_feats (B, Q, d) and text_feat (B, d) of the same width d; got {tuple(query_feats.shape)} "
            f"and {tuple(text_feat.shape)}"
        )
    z, t = F.normalize(query_feats, dim=-1), F.normalize(text_feat, dim=-1)  # (B, Q, d), (M, d)
    per_query = torch.einsum("bqd,md->bmq", z, t)  # (B, M, Q): every query of image i against text j
    return per_query.max(dim=-1).values  # (B, M): the query that matches text j best speaks for image i


def itc_loss(query_feats: torch.Tensor, text_feat: torch.Tensor, temperature: float | torch.Tensor) -> torch.Tensor:
    """Image-text contrastive loss: CLIP's symmetric InfoNCE on the max-over-queries similarity.

    query_feats (B, Q, d), text_feat (B, d), pair i matching on the diagonal. The loss is
    ``utils.clip.clip_loss(itc_similarity(...), temperature)`` -- chapter 2's loss on a new
    similarity. (BLIP-2 also smooths the labels by 0.1; left out here.)
    """
    from utils.clip import clip_loss

    if query_feats.shape[0] != text_feat.shape[0]:
        raise ValueError(f"need one text per image: {query_feats.shape[0]} images but {text_feat.shape[0]} texts")
    return clip_loss(itc_similarity(query_feats, text_feat), temperature)


def sample_hard_negatives(
    logits: torch.Tensor, generator: torch.Generator | None = None, matches: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each image a non-matching text, for each text a non-matching image, drawn hard.

    ``logits`` (B, B) are the contrastive scores s_ij / tau (images x texts). Image i's negative
    text is drawn with probability softmax(row i) -- confusable texts are picked more often --
    never its own text; text j's negative image likewise from column j. Returns
    (negative text of each image (B,), negative image of each text (B,)); the same
    ``generator`` state gives the same draw.

    ``matches`` (B, B) bool marks pairs that match although they are not on the diagonal (two
    scenes with the same caption, say); they are never drawn as negatives either. BLIP-2's code
    masks the diagonal alone in pre-training, where web captions almost never repeat, and every
    pair of the same image when it fine-tunes on COCO (five captions per image); ShapesWorld
    repeats captions often, and a "negative" that is the true caption teaches ITM the wrong answer.
    """
    if logits.ndim != 2 or logits.shape[0] != logits.shape[1]:
        raise ValueError(f"logits must be a square (B, B) image x text matrix, got {tuple(logits.shape)}")
    if logits.shape[0] < 2:
        raise ValueError("hard negatives need a batch of at least 2 pairs: a negative is another pair's text or image")
    logits = logits.detach().float()
    own = torch.eye(len(logits), dtype=torch.bool, device=logits.device)
    if matches is not None:
        if matches.shape != logits.shape:
            raise ValueError(f"matches must be (B, B) like logits {tuple(logits.shape)}, got {tuple(matches.shape)}")
        own = own | matches.to(device=logits.device, dtype=torch.bool)
        alone = own.all(dim=1) | own.all(dim=0)
        if alone.any():
            raise ValueError(f"pairs {alone.nonzero().flatten().tolist()} match every other pair of the batch, so "
                             "they have no negative: draw batches with at least two different texts")
    # + 1e-4 (as BLIP-2) keeps every other pair possible when a softmax row underflows
    weights_i2t = (logits.softmax(dim=1) + 1e-4).masked_fill(own, 0)  # (B, B): image i over texts
    weights_t2i = (logits.T.softmax(dim=1) + 1e-4).masked_fill(own, 0)  # (B, B): text j over images
    negative_text = torch.multinomial(weights_i2t, 1, generator=generator).squeeze(1)  # (B,)
    negative_image = torch.multinomial(weights_t2i, 1, generator=generator).squeeze(1)  # (B,)
    return negative_text, negative_image


def itm_loss(
    model: QFormerForPretraining, image_embeds: torch.Tensor, text_ids: torch.Tensor, logits: torch.Tensor,
    generator: torch.Generator | None = None, text_mask: torch.Tensor | None = None,
    matches: torch.Tensor | None = None,
) -> torch.Tensor:
    """Image-text matching: a 2-way cross-entropy on B positive and 2B hard-negative pairs.

    The pairs are (image i, text i) -> match, (image i, a hard negative text) -> no match and
    (a hard negative image, text j) -> no match, with negatives drawn by
    :func:`sample_hard_negatives` from the contrastive ``logits`` (B, B), never among ``matches``.
    """
    B = image_embeds.shape[0]
    if logits.shape != (B, B) or text_ids.shape[0] != B:
        raise ValueError(
            f"need B images, B texts and (B, B) logits; got {B}, {text_ids.shape[0]} and {tuple(logits.shape)}"
        )
    negative_text, negative_image = sample_hard_negatives(logits, generator, matches)
    images = torch.cat([image_embeds, image_embeds, image_embeds[negative_image]])  # (3B, N, E)
    texts = torch.cat([text_ids, text_ids[negative_text], text_ids])  # (3B, L)
    masks = None if text_mask is None else torch.cat([text_mask, text_mask[negative_text], text_mask])  # (3B, L)
    labels = torch.cat([torch.ones(B), torch.zeros(2 * B)]).long().to(image_embeds.device)  # (3B,): 1 = match
    return F.cross_entropy(model.match_logits(images, texts, masks), labels)


def next_token_loss(
    logits: torch.Tensor, text_ids: torch.Tensor, text_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean cross-entropy of token t+1 given position t: -mean log p(w_{t+1} | w_<=t, queries).

    logits (B, L, V), text_ids (B, L); targets that are padding (``text_mask`` 0) are skipped.
    """
    if logits.shape[:2] != text_ids.shape:
        raise ValueError(f"logits (B, L, V) {tuple(logits.shape)} and text_ids (B, L) {tuple(text_ids.shape)} disagree")
    if text_ids.shape[1] < 2:
        raise ValueError("next-token prediction needs at least 2 text tokens (a start token and one to predict)")
    targets = text_ids[:, 1:].clone()  # (B, L-1): position t predicts token t+1
    if text_mask is not None:
        targets[~text_mask[:, 1:].bool()] = -100  # padding is not a target
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)


def itg_loss(
    model: QFormerForPretraining, image_embeds: torch.Tensor, text_ids: torch.Tensor,
    text_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Image-grounded text generation: :func:`next_token_loss` of the text under :func:`itg_mask`.

    The queries are the text's only way to the image, so they must learn to carry what the caption needs.
    """
    return next_token_loss(model.caption_logits(image_embeds, text_ids, text_mask), text_ids, text_mask)



# --- InstructBLIP: the instruction enters the Q-Former too ---------------------------------------


class InstructionQFormer(nn.Module):
    """InstructBLIP's instruction-aware Q-Former (Dai et al., 2023, arXiv:2305.06500).

    BLIP-2's queries read the image the same way whatever the question; InstructBLIP embeds the
    instruction's tokens and lets them into the Q-Former's self-attention beside the queries
    (every token sees every token, the ITM pattern of stage 1), so the Q queries extract what the
    instruction asks for. Only the query outputs go on to the LLM, which also reads the
    instruction as text. The text tokens never cross-attend to the image; they steer the queries.
    """

    def __init__(self, config: QFormerConfig) -> None:
        super().__init__()
        if not config.use_text_input:
            raise ValueError("the instruction is text fed to the Q-Former: build it with use_text_input=True")
        self.config = config
        self.qformer = QFormer(config)
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)

    def forward(self, image_embeds: torch.Tensor, instruction_ids: torch.Tensor,
                instruction_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The Q query outputs (B, Q, D), conditioned on the image (B, N, E) and the instruction (B, L)."""
        text = embed_tokens(self, instruction_ids, "instruction_ids")  # (B, L, D)
        out = self.qformer(None, image_embeds, text, instruction_mask)  # (B, Q + L, D), no pattern: all see all
        return out[:, :self.config.num_query_tokens]  # (B, Q, D)

    @classmethod
    def from_transformers(cls, model: nn.Module) -> InstructionQFormer:
        """Copy the weights of an ``InstructBlipForConditionalGeneration`` (its Q-Former, embeddings
        and query tokens) or of a bare ``InstructBlipQFormerModel`` (query tokens stay random)."""
        from transformers import InstructBlipQFormerModel

        qformer = getattr(model, "qformer", model)
        if not isinstance(qformer, InstructBlipQFormerModel):
            raise TypeError(f"expected an InstructBLIP model or its InstructBlipQFormerModel, got {type(model).__name__}")
        query_tokens = getattr(model, "query_tokens", None)
        Q = query_tokens.shape[1] if query_tokens is not None else 32
        ours = cls(QFormerConfig.from_transformers(qformer.config, num_query_tokens=Q, use_text_input=True))
        state = qformer.state_dict()
        layers = {k: v for k, v in state.items() if k.startswith("encoder.")}
        layers.update({k.replace("embeddings.layernorm.", "layernorm."): v for k, v in state.items()
                       if k.startswith("embeddings.layernorm.")})
        mapped = {f"qformer.{k}": v for k, v in state_dict_from_transformers(layers).items()}
        mapped["word_embeddings.weight"] = state["embeddings.word_embeddings.weight"]
        mapped["position_embeddings.weight"] = state["embeddings.position_embeddings.weight"]
        if query_tokens is not None:
            mapped["qformer.query_tokens"] = query_tokens.detach()
        missing, unexpected = ours.load_state_dict(mapped, strict=False)
        if set(missing) - {"qformer.query_tokens"} or unexpected:
            raise ValueError(f"weights that do not match: missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}")
        return ours.to(torch.float32)
