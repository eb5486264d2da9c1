"""Figures used across the chapters, so each chapter stays about its idea.

Every helper returns the matplotlib Figure (so tests can inspect it) and draws titles and
axis labels itself.
"""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image

from utils.shapes import Scene

plt.rcParams.update(
    {
        "figure.dpi": 100,
        "savefig.dpi": 100,
        "font.size": 10,
        "axes.titlesize": 10,
        "axes.spines.top": False,
        "axes.spines.right": False,
    }
)


def wrap(text: str, width: int = 28) -> str:
    words, lines, line = text.split(), [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return "\n".join(lines + [line])


def show_scenes(scenes: Sequence[Scene], columns: int = 4, boxes: bool = True, title: str | None = None) -> Figure:
    """A grid of ShapesWorld scenes with their captions under them and, optionally, their boxes."""
    rows = int(np.ceil(len(scenes) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(2.4 * columns, 2.8 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, scene in zip(axes.flat, scenes):
        size = scene.image_size
        ax.imshow(scene.render(), extent=(0, size, size, 0))
        if boxes:
            for obj in scene.objects:
                x0, y0, x1, y1 = (v * size for v in obj.box)
                ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, lw=1.2, ec="black", ls="--"))
                ax.text(x0, y0 - 1, f"{obj.colour} {obj.shape}", fontsize=6.5, va="bottom")
        ax.set_title(wrap(scene.caption), fontsize=8, y=-0.02, va="top")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def show_images(images: Sequence[Image.Image | np.ndarray], titles: Sequence[str] | None = None,
                columns: int = 4, size: float = 2.6, title: str | None = None) -> Figure:
    """A grid of images with optional titles."""
    rows = int(np.ceil(len(images) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(size * columns, size * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, (ax, image) in enumerate(zip(axes.flat, images)):
        ax.imshow(image)
        if titles is not None:
            ax.set_title(wrap(titles[i], 30), fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def heatmap(matrix: np.ndarray, row_labels: Sequence[str], col_labels: Sequence[str], title: str,
            xlabel: str = "", ylabel: str = "", fmt: str = "{:.2f}", cmap: str = "viridis",
            ax: plt.Axes | None = None) -> Figure:
    """A matrix as coloured cells with its values written in them."""
    matrix = np.asarray(matrix, dtype=float)
    if ax is None:
        fig, ax = plt.subplots(figsize=(0.9 * matrix.shape[1] + 2, 0.7 * matrix.shape[0] + 1.5))
    else:
        fig = ax.figure
    im = ax.imshow(matrix, cmap=cmap)
    ax.set_xticks(range(len(col_labels)), col_labels)
    ax.set_yticks(range(len(row_labels)), row_labels)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    for (r, c), value in np.ndenumerate(matrix):
        red, green, blue, _ = im.cmap(im.norm(value))
        light = 0.299 * red + 0.587 * green + 0.114 * blue > 0.5  # perceived brightness of the cell
        ax.text(c, r, fmt.format(value), ha="center", va="center", fontsize=8, color="black" if light else "white")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return fig
