"""Contrastive image-text learning (chapter 2): CLIP's and SigLIP's losses, the older triplet
loss, and the zero-shot and retrieval helpers built on a shared embedding space.

Conventions: a similarity matrix ``S`` has one row per image and one column per text, shape
(B, B), with the matching pairs on the diagonal. Embeddings are (B, D) and are L2-normalised by
the helpers that need it.
"""

from __future__ import annotations

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
    if float(temperature) <= 0:
        raise ValueError(f"temperature must be positive, got {float(temperature)}")
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
    logits = similarity * scale + bias  # (B, B)
    labels = 2 * torch.eye(len(logits), device=logits.device, dtype=logits.dtype) - 1  # +1 diagonal, -1 off it
    return -F.logsigmoid(labels * logits).sum(dim=1).mean()


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
