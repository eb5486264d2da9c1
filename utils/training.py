"""A small, readable training loop for classifiers, shared by the chapters and `make assets`.

Nothing clever: mini-batches from tensors already in memory, AdamW with a linear warm-up and
cosine decay, and a record of loss and accuracy. Determinism comes from an explicit
``torch.Generator`` for the shuffling, so the same seed gives the same model.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, TypeVar

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.std import tqdm

T = TypeVar("T")
TRAIN_EVAL_SIZE = 1000  # training accuracy is measured on this many examples, to keep epochs quick


def progress(iterable: Iterable[T] | None = None, total: int | None = None, desc: str = "", disable: bool = False) -> tqdm:
    """A plain-text progress bar on stdout: it shows in a notebook, a terminal and the built book.

    Wrap an iterable, or pass ``total`` alone and call ``.update()`` per step.
    """
    return tqdm(iterable, total=total, desc=desc, file=sys.stdout, ncols=90, mininterval=2.0, disable=disable,
                bar_format="{desc} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}]{postfix}")


@dataclass
class History:
    """What happened during training: one loss per step, one accuracy per epoch."""

    step_loss: list[float] = field(default_factory=list)
    train_accuracy: list[float] = field(default_factory=list)  # on at most TRAIN_EVAL_SIZE examples
    eval_accuracy: list[float] = field(default_factory=list)
    seconds: float = 0.0


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Logits for ``images`` (B, C, H, W), in evaluation mode, batch by batch."""
    was_training = model.training
    model.eval()
    logits = torch.cat([model(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])
    model.train(was_training)
    return logits


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 256) -> float:
    """Share of ``images`` whose highest logit is the right label."""
    return (predict(model, images, batch_size).argmax(-1) == labels).float().mean().item()


def update(
    optimizer: torch.optim.Optimizer,
    loss: torch.Tensor,
    clip: Iterable[torch.Tensor] | None = None,
    schedule: torch.optim.lr_scheduler.LRScheduler | None = None,
    max_grad_norm: float | None = 1.0,
) -> None:
    """One optimiser update, the same in every training loop of the course.

    Clear the old gradients, backpropagate ``loss``, rescale the gradients of ``clip`` (the
    parameters being trained) so that their joint norm is at most ``max_grad_norm`` -- one bad
    batch cannot throw the weights far off -- step, and advance the learning-rate ``schedule``.
    Without ``clip``, or with ``max_grad_norm`` None, nothing is clipped.
    """
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if clip is not None and max_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(clip, max_grad_norm)
    optimizer.step()
    if schedule is not None:
        schedule.step()


# Three learning-rate schedules, each a LambdaLR whose multiplier starts with a linear warm-up.
def warmup_then_cosine(step: int, total: int, warmup: int) -> float:
    """Learning-rate multiplier: linear warm-up to 1 over ``warmup`` steps, then a cosine decay to 0 over the rest."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def warmup_then_cosine_schedule(optimizer: torch.optim.Optimizer, total: int,
                                warmup: int) -> torch.optim.lr_scheduler.LambdaLR:
    """:func:`warmup_then_cosine` as a scheduler: call ``.step()`` after each optimizer step."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_then_cosine(s, total, warmup))


def ramped_cosine_schedule(optimizer: torch.optim.Optimizer, steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """One cosine decay over all ``steps``, ramped up by a linear warm-up over their first 5%.

    Unlike :func:`warmup_then_cosine`, the cosine starts at step 0: the two curves overlap.
    """
    warmup = max(1, steps // 20)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))


def warmup_then_constant_schedule(optimizer: torch.optim.Optimizer,
                                  warmup: int = 50) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup`` steps, then the full learning rate for as long as training runs
    (for runs that stop at a gate rather than after a set number of steps)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup))


def train_classifier(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    epochs: int,
    batch_size: int = 64,
    lr: float = 1e-3,
    weight_decay: float = 0.05,
    warmup_fraction: float = 0.1,
    seed: int = 0,
    eval_data: tuple[torch.Tensor, torch.Tensor] | None = None,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
    max_grad_norm: float | None = None,
    show_progress: bool = True,
) -> History:
    """Train ``model`` to map ``images`` (B, C, H, W) to class ids ``labels`` (B,) with cross-entropy."""
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels: they must pair up one to one")
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(len(images) / batch_size)
    total = epochs * steps_per_epoch
    schedule = warmup_then_cosine_schedule(optimizer, total, max(1, int(warmup_fraction * total)))
    history = History()
    start = time.perf_counter()
    bar = progress(total=total, desc="training", disable=not show_progress)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=generator)
        for i in range(0, len(images), batch_size):
            batch = order[i : i + batch_size]
            x, y = images[batch], labels[batch]
            if augment is not None:
                x = augment(x, generator)
            loss = F.cross_entropy(model(x), y)
            update(optimizer, loss, model.parameters(), schedule, max_grad_norm)
            history.step_loss.append(loss.item())
            bar.update()
        history.train_accuracy.append(accuracy(model, images[:TRAIN_EVAL_SIZE], labels[:TRAIN_EVAL_SIZE]))
        if eval_data is not None:
            history.eval_accuracy.append(accuracy(model, *eval_data))
        acc = history.eval_accuracy[-1] if eval_data is not None else history.train_accuracy[-1]
        bar.set_postfix_str(f"loss {history.step_loss[-1]:.3f}, acc {acc:.3f}")
    bar.close()
    history.seconds = time.perf_counter() - start
    return history
