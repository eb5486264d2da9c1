"""Contrastive image-text learning (chapter 2): CLIP's and SigLIP's losses, the older triplet
loss, and the zero-shot and retrieval helpers built on a shared embedding space.

Conventions: a similarity matrix ``S`` has one row per image and one column per text, shape
(B, B), with the matching pairs on the diagonal. Embeddings are (B, D) and are L2-normalised by
the helpers that need it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def _check_similarity(similarity: torch.Tensor) -> None:
    if not isinstance(similarity, torch.Tensor):
        raise TypeError(f"similarity must be a torch.Tensor, got {type(similarity).__name__}")
    if similarity.ndim != 2 or similarity.shape[0] != similarity.shape[1]:
        raise ValueError(
            f"similarity must be a square (B, B) matrix of images x texts with the matching pairs on the "
            f"diagonal; got shape {tuple(similarity.shape)}"
        )
    if similarity.shape[0] == 0:
        raise ValueError("similarity is empty: a contrastive loss needs at least one image-text pair")


def clip_loss(similarity: torch.Tensor, temperature: float | torch.Tensor = 1.0) -> torch.Tensor:
    """CLIP's symmetric InfoNCE loss.

    With logits ``S / tau``, image i must pick text i among all texts (a softmax over row i) and
    text j must pick image j among all images (a softmax over column j); the loss is the mean of
    the two cross-entropies.
    """
    _check_similarity(similarity)
    tau = float(temperature.detach()) if isinstance(temperature, torch.Tensor) else float(temperature)
    if tau <= 0:
        raise ValueError(f"temperature must be positive, got {tau}")
    logits = similarity / temperature  # (B, B)
    labels = torch.arange(len(logits), device=logits.device)  # the diagonal
    image_to_text = F.cross_entropy(logits, labels)  # rows: each image over all texts
    text_to_image = F.cross_entropy(logits.T, labels)  # columns: each text over all images
    return (image_to_text + text_to_image) / 2


@dataclass
class ClipLossParts:
    """Every intermediate of :func:`clip_loss`, for worked examples."""

    exp: torch.Tensor  # e^(S / tau), (B, B)
    row_sums: torch.Tensor  # image-to-text denominators, (B,)
    column_sums: torch.Tensor  # text-to-image denominators, (B,)
    row_losses: torch.Tensor  # -log softmax(row i)[i], (B,)
    column_losses: torch.Tensor  # -log softmax(column j)[j], (B,)
    image_to_text: torch.Tensor  # mean of row_losses
    text_to_image: torch.Tensor  # mean of column_losses
    loss: torch.Tensor  # their mean


def clip_loss_parts(similarity: torch.Tensor, temperature: float = 1.0) -> ClipLossParts:
    """The loss written out with explicit exponentials and denominators (fine for small examples)."""
    _check_similarity(similarity)
    exp = torch.exp(similarity / temperature)
    diagonal = exp.diagonal()
    row_sums, column_sums = exp.sum(dim=1), exp.sum(dim=0)
    row_losses = -torch.log(diagonal / row_sums)
    column_losses = -torch.log(diagonal / column_sums)
    i2t, t2i = row_losses.mean(), column_losses.mean()
    return ClipLossParts(exp, row_sums, column_sums, row_losses, column_losses, i2t, t2i, (i2t + t2i) / 2)


def siglip_loss(similarity: torch.Tensor, scale: float | torch.Tensor, bias: float | torch.Tensor) -> torch.Tensor:
    """SigLIP's pairwise sigmoid loss.

    Every pair (i, j) is its own binary question -- "do image i and text j match?" -- with logit
    ``t * S_ij + b`` and label z_ij = +1 on the diagonal, -1 elsewhere. No softmax ties the pairs
    together, so no device needs the whole batch. Summed over texts, averaged over images.
    """
    _check_similarity(similarity)
    return siglip_block_loss(similarity, scale, bias, first_row=0) / len(similarity)  # the whole batch is one block


def siglip_block_loss(similarity_rows: torch.Tensor, scale: float | torch.Tensor, bias: float | torch.Tensor,
                      first_row: int, first_column: int | None = None) -> torch.Tensor:
    """SigLIP's loss summed over one block of the similarity matrix.

    Without ``first_column`` the block is a band of rows: images ``first_row ...`` against all B
    texts. With it, any rectangle: images ``first_row ...`` against texts ``first_column ...``;
    a pair is positive where the two global indices are equal. Any tiling of the matrix into
    blocks adds up to ``B * siglip_loss(S)``: no pair needs any other pair.
    """
    b, c = similarity_rows.shape  # (b images, c texts)
    if first_column is None:  # a band of rows against the whole batch
        if not 0 <= first_row <= c - b:
            raise ValueError(f"rows {first_row}..{first_row + b - 1} do not fit a batch of {c}")
        first_column = 0
    elif first_row < 0 or first_column < 0:
        raise ValueError(f"a block starts at a row and a column >= 0, got ({first_row}, {first_column})")
    rows = first_row + torch.arange(b, device=similarity_rows.device)  # global image indices
    columns = first_column + torch.arange(c, device=similarity_rows.device)  # global text indices
    labels = torch.where(rows[:, None] == columns[None], 1.0, -1.0).to(similarity_rows.dtype)  # z_ij
    return -F.logsigmoid(labels * (similarity_rows * scale + bias)).sum()


def triplet_loss(anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, margin: float = 0.2) -> torch.Tensor:
    """The older alternative: the positive must be closer than the negative by ``margin``.

    Distances are cosine distances, 1 - cos. Only one negative per anchor is seen at a time,
    which is why contrastive losses that compare against the whole batch learn faster.
    """
    for name, t in (("positive", positive), ("negative", negative)):
        if t.shape != anchor.shape:
            raise ValueError(f"{name} has shape {tuple(t.shape)} but anchor has {tuple(anchor.shape)}; they must match")
    d_pos = 1 - F.cosine_similarity(anchor, positive, dim=-1)
    d_neg = 1 - F.cosine_similarity(anchor, negative, dim=-1)
    return F.relu(d_pos - d_neg + margin).mean()


def cosine_similarity_matrix(image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
    """All-pairs cosine similarity (n_images, n_texts) of two sets of embeddings."""
    if image_embeds.ndim != 2 or text_embeds.ndim != 2 or image_embeds.shape[1] != text_embeds.shape[1]:
        raise ValueError(
            f"need (n, D) image and (m, D) text embeddings of the same width; got {tuple(image_embeds.shape)} "
            f"and {tuple(text_embeds.shape)}"
        )
    return F.normalize(image_embeds, dim=-1) @ F.normalize(text_embeds, dim=-1).T


def zero_shot_probabilities(image_embeds: torch.Tensor, class_embeds: torch.Tensor, logit_scale: float = 100.0) -> torch.Tensor:
    """Zero-shot classification: a softmax over the classes' prompt embeddings, (n_images, n_classes)."""
    if class_embeds.shape[0] == 0:
        raise ValueError("no class prompts given: zero-shot classification needs at least one prompt per class")
    return torch.softmax(logit_scale * cosine_similarity_matrix(image_embeds, class_embeds), dim=-1)


def recall_at_k(similarity: torch.Tensor, k: int) -> float:
    """Share of queries (rows) whose matching item (the diagonal) is among their k best columns."""
    _check_similarity(similarity)
    if not 1 <= k <= similarity.shape[1]:
        raise ValueError(f"k must be between 1 and {similarity.shape[1]}, got {k}")
    top = similarity.topk(k, dim=1).indices  # (B, k)
    hits = (top == torch.arange(len(similarity), device=similarity.device)[:, None]).any(dim=1)
    return hits.float().mean().item()


def caption_recall_at_k(similarity: torch.Tensor, query_captions: list[str], gallery_captions: list[str],
                        k: int) -> float:
    """Share of queries (rows of ``similarity``, (Q, G)) with a gallery item of the *same caption*
    among their k best columns: where several scenes share a caption, any of them is a right answer."""
    if similarity.ndim != 2 or similarity.shape != (len(query_captions), len(gallery_captions)):
        raise ValueError(f"similarity must be (queries, gallery) = ({len(query_captions)}, {len(gallery_captions)}), "
                         f"got {tuple(similarity.shape)}")
    if not 1 <= k <= similarity.shape[1]:
        raise ValueError(f"k must be between 1 and {similarity.shape[1]}, got {k}")
    top = similarity.topk(k, dim=1).indices.tolist()  # (Q, k)
    return sum(any(gallery_captions[j] == q for j in row) for q, row in zip(query_captions, top)) / len(top)


def chance_caption_recall_at_k(query_captions: list[str], gallery_captions: list[str], k: int) -> float:
    """The expected :func:`caption_recall_at_k` of a random ranking: for a query whose caption m of the
    G gallery items share, the chance that k random picks miss all of them is C(G - m, k) / C(G, k)."""
    from math import comb

    G = len(gallery_captions)
    counts = {c: gallery_captions.count(c) for c in set(query_captions)}
    return sum(1 - comb(G - counts[q], k) / comb(G, k) for q in query_captions) / len(query_captions)


@torch.no_grad()
def encode_images(model, processor, images, batch_size: int = 256) -> torch.Tensor:
    """Projected image embeddings (n, d) of a list of images, in batches (not normalised).

    Each image may be anything :func:`utils.images.load_image` reads (a PIL image, a path, a
    URL, bytes, an array); one that cannot be read raises its ``ImageLoadError``.
    """
    import os

    from PIL import Image

    from utils.images import load_image

    if isinstance(images, (str, bytes, os.PathLike, Image.Image)) or (
            hasattr(images, "ndim") and images.ndim in (2, 3)):  # one image, not a list of them
        raise TypeError("encode_images takes a list of images; wrap a single image in a list: [image]")
    if len(images) == 0:
        raise ValueError("no images given: pass a non-empty list of images")
    images = [load_image(image) for image in images]
    device, dtype = model.logit_scale.device, model.visual_projection.weight.dtype
    out = []
    for start in range(0, len(images), batch_size):
        pixels = processor(images=list(images[start:start + batch_size]), return_tensors="pt").pixel_values
        out.append(model.get_image_features(pixel_values=pixels.to(device, dtype)).pooler_output.float().cpu())
    return torch.cat(out)


@torch.no_grad()
def encode_texts(model, processor, texts, batch_size: int = 256) -> torch.Tensor:
    """Projected text embeddings (n, d) of a list of strings, in batches (not normalised)."""
    if isinstance(texts, str):
        raise TypeError("pass a list of strings, e.g. [text], not a single string")
    if len(texts) == 0 or any(not t.strip() for t in texts):
        raise ValueError("need a non-empty list of non-empty prompts or captions")
    device = model.logit_scale.device
    out = []
    for start in range(0, len(texts), batch_size):
        tokens = processor(text=list(texts[start:start + batch_size]), padding=True, truncation=True,
                           max_length=model.config.text_config.max_position_embeddings, return_tensors="pt").to(device)
        out.append(model.get_text_features(**tokens).pooler_output.float().cpu())
    return torch.cat(out)


# --- Scaling out: the loss over a batch split across processes --------------------------------


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sends each process the gradient of its own rows, summed over processes."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        ctx.rows = slice(dist.get_rank() * len(x), (dist.get_rank() + 1) * len(x))
        return torch.cat(parts)  # (W*b, D)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        grad = grad.contiguous().clone()  # (W*b, D): what this process's loss sends to every row
        dist.all_reduce(grad)  # summed over the processes' losses
        return grad[ctx.rows]  # (b, D): our rows


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate every process's (b, D) tensor into the global (W*b, D) one, in rank order.

    Unlike ``dist.all_gather``, gradients flow back: each process receives the sum of what every
    process's loss sends to its own rows. With one process (or none initialised) it returns ``x``.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    return _GatherWithGrad.apply(x)


def distributed_clip_loss(image_embeds: torch.Tensor, text_embeds: torch.Tensor,
                          logit_scale: torch.Tensor) -> torch.Tensor:
    """CLIP's loss when each of W processes holds b of the W*b pairs of the global batch.

    Every process gathers all embeddings and scores its own b images against all W*b texts (its
    rows of the global similarity matrix) and its own b texts against all images (its columns).
    Its loss is the mean over those rows and columns, so the average over processes -- what
    DistributedDataParallel's gradient averaging optimises -- is exactly :func:`clip_loss` of the
    global batch. Embeddings must be L2-normalised; ``logit_scale`` is 1/tau (not its log).
    """
    import torch.distributed as dist

    if image_embeds.shape != text_embeds.shape or image_embeds.ndim != 2:
        raise ValueError(f"need (b, D) image and text embeddings of one shape; got {tuple(image_embeds.shape)} "
                         f"and {tuple(text_embeds.shape)}")
    b = image_embeds.shape[0]
    rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    all_images, all_texts = gather_with_grad(image_embeds), gather_with_grad(text_embeds)  # (W*b, D)
    labels = rank * b + torch.arange(b, device=image_embeds.device)  # where our pairs sit globally
    image_to_text = F.cross_entropy(logit_scale * image_embeds @ all_texts.T, labels)  # our rows, (b, W*b)
    text_to_image = F.cross_entropy(logit_scale * text_embeds @ all_images.T, labels)  # our columns, (b, W*b)
    return (image_to_text + text_to_image) / 2


# --- The tiny ShapesWorld CLIP ----------------------------------------------------------------

CAPTION_TEMPLATES = ("{}", "a photo of {}", "a picture of {}", "an image of {}")
# Chapter 1's tiny ViT sizes, in transformers' CLIP layout; a 2-block text transformer over CLIP's
# real 49,408-token vocabulary; a shared 32-dimensional embedding space.
TINY_VISION = dict(image_size=64, patch_size=8, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                   num_attention_heads=4, hidden_act="gelu")
TINY_TEXT = dict(vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                 max_position_embeddings=32, hidden_act="gelu", bos_token_id=49406, eos_token_id=49407,
                 pad_token_id=49407)
TINY_PROJECTION_DIM = 32
MAX_LOGIT_SCALE = 100.0  # CLIP caps 1/tau here so training cannot make the softmax arbitrarily sharp


def tiny_clip_config():
    """The configuration of the shipped tiny CLIP (a transformers ``CLIPConfig``)."""
    from transformers import CLIPConfig

    return CLIPConfig(text_config=TINY_TEXT, vision_config=TINY_VISION, projection_dim=TINY_PROJECTION_DIM)


def augment_caption(caption: str, rng) -> str:
    """A prompt template around a ShapesWorld caption; half the time without the size words."""
    if rng.random() < 0.5:
        caption = caption.replace("small ", "").replace("large ", "")
    return rng.choice(CAPTION_TEMPLATES).format(caption)


def train_clip(model, tokenizer, pixel_values: torch.Tensor, captions: list[str], *, steps: int,
               batch_size: int = 64, lr: float = 1e-3, weight_decay: float = 0.1, seed: int = 0,
               rank: int = 0, world: int = 1, wrapped=None, stop_after_backward=None,
               show_progress: bool = True, augment: bool = True) -> list[float]:
    """Train a transformers ``CLIPModel`` on image-caption pairs with :func:`distributed_clip_loss`.

    Each step draws a global batch of ``batch_size`` pairs; with ``world`` processes, process
    ``rank`` encodes its share of it through ``wrapped`` (the model inside DistributedDataParallel)
    and the loss gathers everyone's embeddings. Every process draws the same batches from ``seed``.
    ``stop_after_backward(loss)`` is called after the first backward pass and ends training if
    given. With ``augment=False`` the captions are used verbatim (no templates, size words kept).
    Returns the loss of each step.
    """
    import random

    from utils.training import progress, warmup_then_cosine_schedule

    if len(pixel_values) != len(captions):
        raise ValueError(f"{len(pixel_values)} images but {len(captions)} captions: they must pair up")
    if batch_size % world:
        raise ValueError(f"a global batch of {batch_size} does not split evenly over {world} processes")
    wrapped = wrapped or model
    device = model.logit_scale.device
    local = batch_size // world
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = warmup_then_cosine_schedule(optimizer, steps, steps // 20)
    rng, generator = random.Random(seed), torch.Generator().manual_seed(seed)
    losses = []
    bar = progress(total=steps, desc=f"training CLIP ({world} process{'es' if world > 1 else ''})",
                   disable=rank != 0 or not show_progress)
    model.train()
    for step in range(steps):
        batch = torch.randperm(len(captions), generator=generator)[:batch_size]  # the global batch
        texts = [augment_caption(captions[int(i)], rng) if augment else captions[int(i)] for i in batch]
        tokens = tokenizer(texts, padding=True, return_tensors="pt")
        mine = slice(rank * local, (rank + 1) * local)  # padded as one batch, then shared out
        out = wrapped(input_ids=tokens.input_ids[mine].to(device), attention_mask=tokens.attention_mask[mine].to(device),
                      pixel_values=pixel_values[batch[mine]].to(device))
        loss = distributed_clip_loss(out.image_embeds, out.text_embeds, model.logit_scale.exp())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if stop_after_backward is not None:
            stop_after_backward(loss)
            break
        optimizer.step()
        schedule.step()
        with torch.no_grad():
            model.logit_scale.clamp_(max=math.log(MAX_LOGIT_SCALE))
        losses.append(loss.item())
        bar.update()
        if step % 100 == 0:
            bar.set_postfix_str(f"loss {loss.item():.3f}, 1/tau {model.logit_scale.exp().item():.1f}")
    bar.close()
    model.eval()
    return losses
