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


def show_boxes(images: Sequence[Image.Image | np.ndarray], predicted: Sequence[Sequence[tuple[Sequence[float], str]]],
               truth: Sequence[Sequence[float] | None] | None = None, titles: Sequence[str] | None = None,
               columns: int = 4, size: float = 2.4, title: str | None = None) -> Figure:
    """Images with predicted boxes (solid, labelled) and, optionally, one true box each (dashed).

    Boxes are normalised (x0, y0, x1, y1), as everywhere in the course.
    """
    fig = show_images(images, titles, columns=columns, size=size, title=title)
    for i, (ax, image) in enumerate(zip(fig.axes, images)):
        w, h = image.size if isinstance(image, Image.Image) else (image.shape[1], image.shape[0])
        ax.set_xlim(-0.5, w - 0.5)
        ax.set_ylim(h - 0.5, -0.5)
        if truth is not None and truth[i] is not None:
            x0, y0, x1, y1 = truth[i]
            ax.add_patch(Rectangle((x0 * w, y0 * h), (x1 - x0) * w, (y1 - y0) * h, fill=False, lw=1.2, ec="black", ls="--"))
        for box, label in predicted[i]:
            x0, y0, x1, y1 = box
            ax.add_patch(Rectangle((x0 * w, y0 * h), (x1 - x0) * w, (y1 - y0) * h, fill=False, lw=1.6, ec="magenta"))
            ax.text(x0 * w, y0 * h, label, fontsize=7, color="magenta", va="bottom",
                    bbox=dict(facecolor="white", alpha=0.7, lw=0, pad=0.5))
    return fig


def block_diagram(blocks: Sequence[tuple[float, float, str, str]], arrows: Sequence[tuple[int, int]],
                  legend: dict[str, str] | None = None, size: tuple[float, float] = (11, 4.2),
                  title: str | None = None) -> Figure:
    """A left-to-right diagram: ``blocks`` are (x, y, text, colour) centres on a 0-1 canvas, ``arrows``
    (i, j) join block i to block j, ``legend`` maps colours to what they mean (e.g. frozen / trained)."""
    from matplotlib.patches import Patch

    fig, ax = plt.subplots(figsize=size)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.axis("off")
    texts = []
    for x, y, text, colour in blocks:
        texts.append(ax.text(x, y, text, ha="center", va="center", fontsize=8,
                             bbox=dict(boxstyle="round,pad=0.4", facecolor=colour, edgecolor="0.3")))
    fig.canvas.draw()  # the boxes' sizes are known only once drawn
    for i, j in arrows:
        ax.annotate("", xy=blocks[j][:2], xytext=blocks[i][:2], zorder=0,
                    arrowprops=dict(arrowstyle="-|>", mutation_scale=14, color="0.3", shrinkA=0, shrinkB=0,
                                    patchA=texts[i].get_bbox_patch(), patchB=texts[j].get_bbox_patch()))
    if legend:
        ax.legend(handles=[Patch(facecolor=c, edgecolor="0.3", label=t) for c, t in legend.items()],
                  loc="lower center", ncol=len(legend), fontsize=8, frameon=False, bbox_to_anchor=(0.5, -0.04))
    if title:
        ax.set_title(title)
    return fig
