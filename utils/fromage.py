"""Images out of a frozen language model: retrieval (FROMAGe) and generation (GILL), chapter 6.

FROMAGe and GILL keep a pretrained LM frozen and teach it a few new tokens:

- ``[RET]`` (FROMAGe): the LM writes it when it wants an image; a linear map takes the LM's hidden
  state at ``[RET]`` into a retrieval space shared with the (frozen) CLIP image embeddings, trained
  with chapter 2's contrastive loss, so the LM *answers with an image* from a gallery;
- ``[IMG0]`` ... ``[IMG{r-1}]`` (GILL): their hidden states go through a small transformer, the
  :class:`GillMapper`, that writes the text-conditioning sequence a text-to-image model expects
  (here chapter 5's tiny Stable Diffusion, which reads the tiny CLIP's text states), trained to
  match what CLIP's text encoder gives for the caption (mean squared error);
- the image goes *in* through a small map from the CLIP image embedding to ``k`` soft tokens
  (FROMAGe's captioning path), which NExT-GPT reuses for any modality bound to images.

What is trained lives in :class:`FromageHeads` (a few hundred thousand parameters, saved alone);
the LM is the tiny LLaVA's (chapter 4), loaded and frozen by :func:`load_frozen_lm`.

Shapes ledger (see ``utils/__init__.py``): B batch, L tokens, D LM width, E CLIP embedding size,
r ``[IMG]`` tokens, S conditioning length and C conditioning width of the diffusion model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from utils import zoo
from utils.tiny_lm import BOS, EOS, IGNORE_INDEX

RET = "[RET]"
CAPTION_REQUEST = "Write a short caption for the image."
FIND, DRAW = "Find {}.", "Draw {}."


def img_tokens(r: int) -> list[str]:
    return [f"[IMG{i}]" for i in range(r)]


@dataclass
class FromageConfig:
    lm_width: int = 128  # D of the frozen LM
    vocab_size: int = 754  # the frozen LM's vocabulary; the new tokens take ids from here on
    embed_dim: int = 32  # E: the tiny CLIP's shared embedding size
    prefix_tokens: int = 8  # k soft tokens per input image (FROMAGe maps to 1)
    image_in_hidden: int = 256  # width of the two-layer image-in map (FROMAGe's is one linear layer)
    num_img_tokens: int = 4  # r (GILL uses 8)
    retrieval_dim: int = 32
    cond_length: int = 32  # S: the tiny Stable Diffusion's text states are (32, 32)
    cond_dim: int = 32  # C
    mapper_width: int = 64
    mapper_layers: int = 2


class GillMapper(nn.Module):
    """r hidden states (B, r, D) -> a conditioning sequence (B, S, C): S learned queries attend to
    the projected states through a small transformer decoder (GILL's GILLMapper, smaller)."""

    def __init__(self, config: FromageConfig) -> None:
        super().__init__()
        w = config.mapper_width
        self.inp = nn.Linear(config.lm_width, w)
        self.queries = nn.Parameter(torch.randn(config.cond_length, w) * 0.02)
        layer = nn.TransformerDecoderLayer(w, nhead=4, dim_feedforward=2 * w, dropout=0.0, batch_first=True)
        self.decoder = nn.TransformerDecoder(layer, config.mapper_layers)
        self.out = nn.Linear(w, config.cond_dim)

    def forward(self, img_states: torch.Tensor) -> torch.Tensor:
        B = img_states.shape[0]
        memory = self.inp(img_states)  # (B, r, w)
        queries = self.queries.expand(B, -1, -1)  # (B, S, w)
        return self.out(self.decoder(queries, memory))  # (B, S, C)


class FromageHeads(nn.Module):
    """Everything FROMAGe/GILL train around a frozen LM: the new tokens' embeddings (also their
    output rows), the image-in map, the two retrieval maps and temperature, and the GILL mapper."""

    def __init__(self, config: FromageConfig | dict) -> None:
        super().__init__()
        self.config = config = FromageConfig(**config) if isinstance(config, dict) else config
        D = config.lm_width
        self.new_embeddings = nn.Parameter(torch.randn(1 + config.num_img_tokens, D) * 0.02)  # [RET], [IMG*]
        self.image_in = nn.Sequential(nn.Linear(config.embed_dim, config.image_in_hidden), nn.GELU(),
                                      nn.Linear(config.image_in_hidden, config.prefix_tokens * D))  # E -> k soft tokens
        self.ret_text = nn.Linear(D, config.retrieval_dim)  # FROMAGe's W_t
        self.ret_image = nn.Linear(config.embed_dim, config.retrieval_dim)  # FROMAGe's W_i
        self.logit_scale = nn.Parameter(torch.tensor(2.6593))  # log(1 / 0.07), as CLIP starts
        self.mapper = GillMapper(config)

    @property
    def ret_id(self) -> int:
        return self.config.vocab_size

    @property
    def img_ids(self) -> list[int]:
        return list(range(self.config.vocab_size + 1, self.config.vocab_size + 1 + self.config.num_img_tokens))

    def save_pretrained(self, folder: str | Path) -> None:
        """Write ``config.json`` and ``model.safetensors`` to ``folder`` (created if need be)."""
        zoo.save_module(folder, self, asdict(self.config))

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> "FromageHeads":
        """The heads saved in ``folder`` by :meth:`save_pretrained`, in evaluation mode."""
        config, weights = zoo.load_module_files(folder, "FromageHeads", "python scripts/train_fromage.py")
        heads = cls(FromageConfig(**config))
        heads.load_state_dict(weights)
        return heads.eval()


@dataclass
class FrozenLM:
    """The frozen LM (a LlamaModel and its output layer) and its tokenizer."""

    model: Any
    lm_head: Any
    tokenizer: Any

    @property
    def image_token_id(self) -> int:
        return self.tokenizer.convert_tokens_to_ids("<image>")


def load_frozen_lm(folder: str) -> FrozenLM:
    """The tiny LLaVA's language model, frozen, in evaluation mode (its vision tower is dropped)."""
    from transformers import AutoTokenizer, LlavaForConditionalGeneration

    llava = LlavaForConditionalGeneration.from_pretrained(folder, dtype=torch.float32)
    lm = FrozenLM(llava.model.language_model.eval(), llava.lm_head.eval(), AutoTokenizer.from_pretrained(folder))
    for p in [*lm.model.parameters(), *lm.lm_head.parameters()]:
        p.requires_grad_(False)
    return lm


def text_ids(lm: FrozenLM, request: str, image: bool = False, k: int = 4) -> list[int]:
    """``<s>USER: [k image slots + newline] request ASSISTANT:`` as ids (LLaVA-1.5's format)."""
    ids = [lm.tokenizer.convert_tokens_to_ids(BOS)] + lm.tokenizer("USER: ", add_special_tokens=False).input_ids
    if image:
        ids += [lm.image_token_id] * k + lm.tokenizer("\n", add_special_tokens=False).input_ids
    return ids + lm.tokenizer(f"{request} ASSISTANT:", add_special_tokens=False).input_ids


def answer_ids(lm: FrozenLM, heads: FromageHeads, text: str = "", ret: bool = False, img: bool = False) -> list[int]:
    """The assistant's turn: optional text, then ``[RET]`` or the r ``[IMG]`` tokens, then ``</s>``."""
    ids = lm.tokenizer(" " + text, add_special_tokens=False).input_ids if text else []
    ids += [heads.ret_id] if ret else []
    ids += heads.img_ids if img else []
    return ids + [lm.tokenizer.convert_tokens_to_ids(EOS)]


def pad(rows: Sequence[Sequence[int]], value: int) -> torch.Tensor:
    L = max(len(r) for r in rows)
    return torch.tensor([list(r) + [value] * (L - len(r)) for r in rows])


def embed(lm: FrozenLM, heads: FromageHeads, ids: torch.Tensor, image_embeds: torch.Tensor | None = None) -> torch.Tensor:
    """(B, L, D) inputs: the LM's own embeddings, the new tokens' rows, and at the image slots the
    k soft tokens of each row's image embedding (B, E)."""
    V = heads.config.vocab_size
    x = lm.model.embed_tokens(ids.clamp(max=V - 1))  # (B, L, D)
    new = ids >= V
    x = torch.where(new[..., None], heads.new_embeddings[(ids - V).clamp(min=0)], x)
    if image_embeds is not None:
        k, D = heads.config.prefix_tokens, heads.config.lm_width
        soft = heads.image_in(F.normalize(image_embeds, dim=-1)).view(-1, k, D)  # (B, k, D)
        x = x.masked_scatter((ids == lm.image_token_id)[..., None], soft.to(x.dtype))
    return x


def run_lm(lm: FrozenLM, heads: FromageHeads, ids: torch.Tensor, attention_mask: torch.Tensor,
           image_embeds: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Hidden states (B, L, D) and logits over the old vocabulary and the new tokens (B, L, V + 1 + r)."""
    hidden = lm.model(inputs_embeds=embed(lm, heads, ids, image_embeds), attention_mask=attention_mask).last_hidden_state
    logits = torch.cat([lm.lm_head(hidden), hidden @ heads.new_embeddings.T], dim=-1)
    return hidden, logits


def retrieval_embeddings(heads: FromageHeads, hidden: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Unit vectors (B, P) from the hidden state at each row's ``[RET]``."""
    has = ids == heads.ret_id  # (B, L)
    if not has.any(-1).all():
        raise ValueError("every row needs a [RET] token: answer the request with answer_ids(..., ret=True)")
    at = has.float().argmax(-1)  # (B,)
    return F.normalize(heads.ret_text(hidden[torch.arange(len(ids)), at]), dim=-1)


def image_keys(heads: FromageHeads, image_embeds: torch.Tensor) -> torch.Tensor:
    """Unit vectors (G, P) of gallery images in the retrieval space."""
    return F.normalize(heads.ret_image(F.normalize(image_embeds, dim=-1)), dim=-1)


def conditioning(heads: FromageHeads, hidden: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """The mapper's conditioning (B, S, C) from the hidden states at each row's r ``[IMG]`` tokens."""
    has = ids == heads.img_ids[0]  # (B, L)
    if not has.any(-1).all():
        raise ValueError("every row needs the [IMG] tokens: answer the request with answer_ids(..., img=True)")
    first = has.float().argmax(-1)  # (B,)
    r = heads.config.num_img_tokens
    index = first[:, None] + torch.arange(r)  # (B, r)
    states = hidden[torch.arange(len(ids))[:, None], index]  # (B, r, D)
    return heads.mapper(states)


def labels_for(ids: torch.Tensor, prompt_lengths: Sequence[int], pad_id: int) -> torch.Tensor:
    """Labels (B, L): the answer only (prompt and padding ignored)."""
    labels = ids.clone()
    for b, n in enumerate(prompt_lengths):
        labels[b, :n] = IGNORE_INDEX
    labels[ids == pad_id] = IGNORE_INDEX
    return labels


def _check_requests(requests: Sequence[str]) -> None:
    if isinstance(requests, str):
        raise ValueError("pass a list of requests, e.g. [request], not a single string")
    if len(requests) == 0 or any(not r.strip() for r in requests):
        raise ValueError("need a non-empty list of non-empty requests, e.g. ['a small red circle']")


# --- using a trained model --------------------------------------------------------------------------
@torch.no_grad()
def request_states(lm: FrozenLM, heads: FromageHeads, requests: Sequence[str], *, ret: bool = False,
                   img: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Hidden states (B, L, D) and ids (B, L) of ``requests`` answered with ``[RET]`` and/or the
    ``[IMG]`` tokens (teacher-forced: the chapter checks separately that the LM writes them itself)."""
    _check_requests(requests)
    rows = [text_ids(lm, r) + answer_ids(lm, heads, ret=ret, img=img) for r in requests]
    ids = pad(rows, lm.tokenizer.pad_token_id)
    hidden, _ = run_lm(lm, heads, ids, (ids != lm.tokenizer.pad_token_id).long())
    return hidden, ids


@torch.no_grad()
def retrieval_queries(lm: FrozenLM, heads: FromageHeads, captions: Sequence[str]) -> torch.Tensor:
    """Unit query vectors (B, P) for "Find {caption}." answered with ``[RET]``."""
    _check_requests(captions)
    hidden, ids = request_states(lm, heads, [FIND.format(c) for c in captions], ret=True)
    return retrieval_embeddings(heads, hidden, ids)


@torch.no_grad()
def draw_conditioning(lm: FrozenLM, heads: FromageHeads, captions: Sequence[str]) -> torch.Tensor:
    """GILL's conditioning (B, S, C) for "Draw {caption}." answered with the ``[IMG]`` tokens."""
    _check_requests(captions)
    hidden, ids = request_states(lm, heads, [DRAW.format(c) for c in captions], img=True)
    return conditioning(heads, hidden, ids)


@torch.no_grad()
def first_new_token(lm: FrozenLM, heads: FromageHeads, requests: Sequence[str]) -> list[str]:
    """What the LM writes first after each request: a word, ``[RET]`` or ``[IMG0]`` (greedy)."""
    _check_requests(requests)
    rows = [text_ids(lm, r) for r in requests]
    L = max(len(r) for r in rows)
    ids = torch.tensor([[lm.tokenizer.pad_token_id] * (L - len(r)) + r for r in rows])  # left-padded
    _, logits = run_lm(lm, heads, ids, (ids != lm.tokenizer.pad_token_id).long())
    names = {heads.ret_id: RET, **dict(zip(heads.img_ids, img_tokens(heads.config.num_img_tokens)))}
    return [names.get(i, lm.tokenizer.convert_ids_to_tokens(i)) for i in logits[:, -1].argmax(-1).tolist()]


@torch.no_grad()
def caption_and_draw(lm: FrozenLM, heads: FromageHeads, image_embeds: torch.Tensor,
                     max_new_tokens: int = 12) -> tuple[list[str], torch.Tensor | None, torch.Tensor]:
    """Greedy captions of embeddings (B, E) bound to CLIP's image space (an image, or NExT-GPT-style
    any modality aligned to it); where the LM ends its caption with ``[IMG0]`` the remaining ``[IMG]``
    tokens are appended and the mapper turns their states into a conditioning (B, S, C).
    Returns the captions, that conditioning (None if no row asked to draw) and which rows did."""
    if image_embeds.ndim != 2 or len(image_embeds) == 0 or image_embeds.shape[1] != heads.config.embed_dim:
        raise ValueError(f"expected embeddings (B, {heads.config.embed_dim}) with B >= 1, got {tuple(image_embeds.shape)}")
    pad_id, eos = lm.tokenizer.pad_token_id, lm.tokenizer.convert_tokens_to_ids(EOS)
    prompt = text_ids(lm, CAPTION_REQUEST, image=True, k=heads.config.prefix_tokens)
    ids = torch.tensor([prompt] * len(image_embeds))
    done = torch.zeros(len(ids), dtype=torch.bool)
    for _ in range(max_new_tokens):
        _, logits = run_lm(lm, heads, ids, (ids != pad_id).long(), image_embeds)
        nxt = torch.where(done, pad_id, logits[:, -1].argmax(-1))
        done |= (nxt == eos) | (nxt == heads.img_ids[0])
        ids = torch.cat([ids, nxt[:, None]], 1)
        if done.all():
            break
    drew = (ids == heads.img_ids[0]).any(-1)  # (B,)
    texts = [lm.tokenizer.decode([i for i in row[len(prompt):].tolist() if i < heads.config.vocab_size],
                                 skip_special_tokens=True).strip() for row in ids]
    if not drew.any():
        return texts, None, drew
    rows = [row[:int((row == heads.img_ids[0]).nonzero()[0])].tolist() + heads.img_ids for row in ids[drew]]
    forced = pad(rows, pad_id)
    hidden, _ = run_lm(lm, heads, forced, (forced != pad_id).long(), image_embeds[drew])
    return texts, conditioning(heads, hidden, forced), drew


# --- retrieve or generate? -----------------------------------------------------------------------------
@torch.no_grad()
def best_match_scores(lm: FrozenLM, heads: FromageHeads, captions: Sequence[str], gallery_embeds: torch.Tensor) -> torch.Tensor:
    """(B,) the highest retrieval score each request reaches in a gallery (G, E) of image embeddings."""
    if len(gallery_embeds) == 0:
        raise ValueError("the gallery is empty: give at least one image embedding to retrieve from")
    return (retrieval_queries(lm, heads, captions) @ image_keys(heads, gallery_embeds).T).max(-1).values


def decision_data(lm: FrozenLM, heads: FromageHeads, requests: Sequence[str], gallery_embeds: torch.Tensor,
                  gallery_captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Each request's best-match score in a gallery (G, E), and whether the gallery holds an image
    with that caption (the answer a retrieve-or-generate decision should give)."""
    if len(gallery_embeds) != len(gallery_captions):
        raise ValueError(f"{len(gallery_embeds)} gallery images but {len(gallery_captions)} captions")
    stocked = set(gallery_captions)
    return (best_match_scores(lm, heads, requests, gallery_embeds),
            torch.tensor([r in stocked for r in requests]))


def fit_threshold(scores: torch.Tensor, has_match: torch.Tensor) -> float:
    """The score threshold that best separates requests the gallery can serve (``has_match``) from
    those it cannot, on calibration requests: retrieve at or above it, generate below it."""
    if has_match.all() or not has_match.any():
        raise ValueError("calibration needs requests with and without a match in the gallery")
    candidates = torch.cat([scores.sort().values, scores.max()[None] + 1e-6])
    accuracy = torch.stack([((scores >= t) == has_match).float().mean() for t in candidates])
    best = accuracy.argmax()
    below = candidates[best - 1] if best > 0 else candidates[best] - 1e-3
    return float((candidates[best] + below) / 2)


def caption_forward(lm: FrozenLM, heads: FromageHeads, embeds: torch.Tensor, captions: Sequence[str]
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The captioning example, teacher-forced: each embedding's soft tokens and the caption request,
    answered with the caption and the ``[IMG]`` tokens. Returns hidden states (B, L, D), ids and
    logits, and labels (the answer only)."""
    prompt = text_ids(lm, CAPTION_REQUEST, image=True, k=heads.config.prefix_tokens)
    ids = pad([prompt + answer_ids(lm, heads, text=c, img=True) for c in captions], lm.tokenizer.pad_token_id)
    labels = labels_for(ids, [len(prompt)] * len(captions), lm.tokenizer.pad_token_id)
    hidden, logits = run_lm(lm, heads, ids, (ids != lm.tokenizer.pad_token_id).long(), embeds)
    return hidden, ids, logits, labels


def train_input_map(lm: FrozenLM, heads: FromageHeads, embeds: torch.Tensor, captions: Sequence[str], *,
                    steps: int = 300, batch_size: int = 32, lr: float = 1e-3, seed: int = 0) -> FromageHeads:
    """A copy of ``heads`` whose image-in map is fine-tuned to caption ``embeds`` (n, E) of another
    modality as ``captions`` (NExT-GPT's encoder-side alignment); everything else stays as it was."""
    import copy

    from utils.tiny_lm import lm_loss
    from utils.training import update

    if len(embeds) != len(captions) or len(captions) == 0:
        raise ValueError(f"need as many captions as embeddings (and at least one): {len(captions)} vs {len(embeds)}")
    tuned = copy.deepcopy(heads).train()
    for name, p in tuned.named_parameters():
        p.requires_grad_(name.startswith("image_in."))
    optimizer = torch.optim.AdamW(tuned.image_in.parameters(), lr=lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        pick = torch.randperm(len(captions), generator=generator)[:batch_size].tolist()
        _, ids, logits, labels = caption_forward(lm, tuned, embeds[pick], [captions[i] for i in pick])
        loss = lm_loss(logits, labels)
        update(optimizer, loss)
    return tuned.eval()
