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


def course_map(dpi: int = 150) -> Figure:
    """Chapter 0's map of the course: which chapter builds which part of a multimodal LLM.

    The top row follows an image to a text answer, the bottom row a text prompt to a new image; dashed
    boxes and arrows are chapter 6's extensions and chapter 7's evaluation. Drawn at ``dpi`` so the
    book's copy stays sharp.
    """
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    # Paul Tol's "light" colours: told apart with every common colour-vision deficiency; black text reads on each.
    data, encoder, connector, llm, generator, extension = \
        "#DDDDDD", "#99DDFF", "#EE8866", "#FFAABB", "#BBCC33", "#EEDD88"
    fig, ax = plt.subplots(figsize=(9.6, 5.3), dpi=dpi)
    ax.set(xlim=(0, 10.6), ylim=(0.45, 6.25), aspect="equal")
    ax.axis("off")

    def box(x, y, text, colour, w=1.85, h=0.8, dashed=False):
        """A rounded box centred on (x, y); returns the midpoints of its sides, for arrows."""
        ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.02,rounding_size=0.12",
                                    fc=colour, ec="black", lw=0.8, ls="--" if dashed else "-"))
        ax.text(x, y, text, ha="center", va="center", fontsize=10)
        return {"left": (x - w / 2, y), "right": (x + w / 2, y), "top": (x, y + h / 2), "bottom": (x, y - h / 2)}

    def arrow(start, end, dashed=False, both_ways=False):
        ax.add_patch(FancyArrowPatch(start, end, arrowstyle="<|-|>" if both_ways else "-|>", mutation_scale=12,
                                     lw=0.9 if dashed else 1.4, ls=(0, (2, 2)) if dashed else "-", color="black",
                                     shrinkA=2, shrinkB=2))

    def note(x, y, text, ha="left"):
        ax.text(x, y, text, ha=ha, va="center", fontsize=9, style="italic")

    def heading(y, text):  # two short lines at the left, clear of CLIP's arrow
        ax.text(0.15, y, text, fontsize=10, weight="bold", va="center", linespacing=1.3)

    # Understanding: an image in, text out (chapters 1-4).
    top = 4.4
    heading(top + 0.85, "understanding:\nan image in, text out")
    image_in = box(0.95, top, "image", data, w=1.2)
    image_encoder = box(3.0, top, "image encoder\nViT · ch 1", encoder)
    bridge = box(5.3, top, "connector\nQ-Former · ch 3\nprojector · ch 4", connector, h=1.0)
    language_model = box(7.6, top, "language model\n(LLM)\nused in ch 3-4", llm, w=1.95, h=1.0)
    text_out = box(9.65, top, "text", data, w=1.1)
    for a, b in [(image_in, image_encoder), (image_encoder, bridge), (bridge, language_model),
                 (language_model, text_out)]:
        arrow(a["right"], b["left"])

    # Generation: text in, an image out (chapter 5), through a CLIP text encoder.
    bottom = 1.05
    heading(bottom + 0.8, "generation:\ntext in, an image out")
    text_in = box(0.95, bottom, "text", data, w=1.2)
    text_encoder = box(3.0, bottom, "text encoder\nch 2", encoder)
    diffusion = box(5.3, bottom, "diffusion model\nch 5", generator)
    decoder = box(7.6, bottom, "VAE decoder\nch 5", generator, w=1.95)
    image_out = box(9.65, bottom, "image", data, w=1.1)
    for a, b in [(text_in, text_encoder), (text_encoder, diffusion), (diffusion, decoder), (decoder, image_out)]:
        arrow(a["right"], b["left"])

    # CLIP trains the two encoders together, so that an image and its caption land close in one space.
    middle = (top + bottom) / 2 + 0.15
    arrow(image_encoder["bottom"], text_encoder["top"], both_ways=True)
    note(3.15, middle + 0.1, "CLIP · ch 2: trained\ntogether, contrastively,\ninto one shared space")

    # Chapter 6's extensions and chapter 7, dashed.
    sound = box(1.1, middle + 0.15, "sound, … · ch 6:\nits own encoder,\ninto the images'\nembedding space",
                extension, w=1.9, h=1.15, dashed=True)
    arrow(sound["right"], (image_encoder["bottom"][0], sound["right"][1]), dashed=True)
    locations = box(7.6, top + 1.35, "+ location tokens:\nboxes in and out · ch 6", extension, w=2.5, h=0.7,
                    dashed=True)
    arrow(language_model["top"], locations["bottom"], dashed=True, both_ways=True)
    evaluation = box(9.65, top + 1.35, "evaluation\nch 7", "white", w=1.2, h=0.7, dashed=True)
    arrow(text_out["top"], evaluation["bottom"], dashed=True)
    # Images out of the LLM: generated through the diffusion model (GILL), or retrieved from a collection
    # by their place in CLIP's space (FROMAGe).
    arrow((language_model["bottom"][0] - 0.45, language_model["bottom"][1]),
          (diffusion["top"][0] + 0.45, diffusion["top"][1]), dashed=True)
    note(5.95, middle + 0.2, "generated\n· ch 6", ha="center")
    collection = box(9.65, middle - 0.1, "image\ncollection", data, w=1.3, h=0.8, dashed=True)
    note(7.85, middle + 0.05, "retrieved in\nCLIP's space · ch 6", ha="center")
    arrow((language_model["bottom"][0] + 0.45, language_model["bottom"][1]), collection["left"], dashed=True)
    arrow(collection["bottom"], image_out["top"], dashed=True)
    ax.set_title("The course in one picture: which chapter builds which part", fontsize=12)
    return fig
