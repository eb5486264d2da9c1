"""Kosmos-2 grounding as full mode runs it (chapter 6): boxes written as text, read back by the processor.

Kosmos-2 (Peng et al., 2023, ``microsoft/kosmos-2-patch14-224`` in the zoo as ``"kosmos2"``) is a
CLIP-style image tower whose 257 patch features are resampled into Q = 64 latent queries, put
in front of a 24-layer decoder. It writes a box the way it writes words: after a phrase it grounds
it emits ::

    <phrase> a snowman</phrase><object><patch_index_0044><patch_index_0863></object>

The image is cut into a 32 x 32 grid (1,024 location tokens); the two indices are the cells that
hold the box's top-left and bottom-right corners, ``index = row * 32 + column``. The prompt
``<grounding>`` asks for such links; the processor turns them back into ``(phrase, span, boxes)``
with boxes ``(x0, y0, x1, y1)`` normalised to [0, 1] (``post_process_generation``). Going the
other way, a box in the prompt makes Kosmos-2 describe that region (:func:`referring_prompt`).

Shapes: B images, L prompt tokens (64 of them stand for the image, marked by
``image_embeds_position_mask``), 3 x 224 x 224 pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image

GROUNDING_PROMPT = "<grounding>An image of"  # the model card's grounded-captioning prompt
GRID = 32  # location cells per side: sqrt of the 1,024 <patch_index_NNNN> tokens (Kosmos2Processor's default)

Box = tuple[float, float, float, float]  # (x0, y0, x1, y1), normalised to [0, 1]
Entity = tuple[str, tuple[int, int], list[Box]]  # a phrase, its character span in the caption, its boxes


def ground(model: Any, processor: Any, images: Sequence[Any] | Image.Image, prompt: str = GROUNDING_PROMPT,
           max_new_tokens: int = 64) -> list[tuple[str, list[Entity]]]:
    """Caption each image and ground what the caption names: ``[(caption, [(phrase, span, boxes), ...]), ...]``.

    ``model`` is a ``Kosmos2ForConditionalGeneration`` (any device and dtype), ``processor`` its
    ``Kosmos2Processor``; all images go through in one batch with the same ``prompt``. Decoding is
    greedy, so the result is the model's most likely caption.
    """
    images = [images] if isinstance(images, Image.Image) else list(images)
    if not images:
        raise ValueError("ground() needs at least one image; it got an empty list")
    inputs = processor(text=[prompt] * len(images), images=images, return_tensors="pt").to(model.device)
    pixel_values = inputs["pixel_values"].to(model.dtype)  # (B, 3, 224, 224)
    with torch.no_grad():
        generated = model.generate(
            pixel_values=pixel_values,
            input_ids=inputs["input_ids"],  # (B, L): <s> <image> [64 image slots] </image> prompt
            attention_mask=inputs["attention_mask"],
            image_embeds=None,
            image_embeds_position_mask=inputs["image_embeds_position_mask"],  # (B, L): 1 on the 64 image slots
            max_new_tokens=max_new_tokens,
        )  # (B, L + new)
    # The tags and patch-index tokens are not special tokens: they survive skip_special_tokens for the parser.
    texts = processor.batch_decode(generated, skip_special_tokens=True)
    return [processor.post_process_generation(text) for text in texts]


def patch_indices(box: Sequence[float], grid: int = GRID) -> tuple[int, int]:
    """The location tokens' indices of ``box`` = (x0, y0, x1, y1) in [0, 1]: the cells of its top-left and
    bottom-right corners (the bottom-right one is the last cell the box reaches into)."""
    if len(box) != 4:
        raise ValueError(f"a box is (x0, y0, x1, y1); got {len(box)} numbers: {tuple(box)}")
    x0, y0, x1, y1 = (float(v) for v in box)
    if not all(0.0 <= v <= 1.0 for v in (x0, y0, x1, y1)):
        raise ValueError(f"box coordinates must be normalised to [0, 1] (divide pixels by the image's width "
                         f"and height); got {tuple(box)}")
    if not (x1 > x0 and y1 > y0):
        raise ValueError(f"a box needs x1 > x0 and y1 > y0 (top-left corner first); got {tuple(box)}")
    top_left = math.floor(y0 * grid) * grid + math.floor(x0 * grid)  # row * grid + column
    bottom_right = math.ceil(y1 * grid - 1) * grid + math.ceil(x1 * grid - 1)
    return top_left, bottom_right


def referring_prompt(box: Sequence[float], phrase: str = "It", then: str = " is") -> str:
    """The model card's region-to-text prompt: the box as an object linked to ``phrase``, for Kosmos-2 to go on
    after ``then``, e.g. ``<grounding><phrase> It</phrase><object><patch_index_0044><patch_index_0863></object> is``."""
    top_left, bottom_right = patch_indices(box)
    return (f"<grounding><phrase> {phrase}</phrase><object><patch_index_{top_left:04d}>"
            f"<patch_index_{bottom_right:04d}></object>{then}")
