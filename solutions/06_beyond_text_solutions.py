# ---
# jupyter:
#   accelerator: GPU
#   colab:
#     gpuType: T4
#     provenance: []
#   jupytext:
#     formats: ipynb,py:percent
#     notebook_metadata_filter: accelerator,colab
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Solutions: Beyond one image in, text out
#
# [![Open in Colab](../images/colab-badge.svg)](https://colab.research.google.com/github/mmllm-course/multimodal-llms-hands-on/blob/main/solutions/06_beyond_text_solutions.ipynb)

# %% tags=["hide-input"]
# Setup: on Colab, fetch the course and the packages Colab lacks; elsewhere, find the course folder.
import os, subprocess, sys
from pathlib import Path

if "google.colab" in sys.modules and not Path("/content/multimodal-llms-hands-on/utils/runtime.py").exists():
    # The course at the version this notebook was written for ("main": a branch, a tag or a commit).
    subprocess.run(["git", "init", "-q", "/content/multimodal-llms-hands-on"], check=True)
    subprocess.run(["git", "-C", "/content/multimodal-llms-hands-on", "fetch", "-q", "--depth", "1", "https://github.com/mmllm-course/multimodal-llms-hands-on", "main"], check=True)
    subprocess.run(["git", "-C", "/content/multimodal-llms-hands-on", "checkout", "-q", "FETCH_HEAD"], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-r", "/content/multimodal-llms-hands-on/requirements-colab.txt"], check=True)
if "google.colab" in sys.modules:
    os.chdir("/content/multimodal-llms-hands-on/chapters")
COURSE_ROOT = next(p for p in (Path.cwd(), *Path.cwd().parents) if (p / "utils" / "runtime.py").exists())
sys.path.insert(0, str(COURSE_ROOT))

# %% [markdown]
# Worked answers to the exercises of [chapter 6](../chapters/06_beyond_text.ipynb). Each answer is
# followed by the same checker the chapter uses, and by a comparison with the library.

# %%
import math
import re

import torch

from utils import checks, claims, clip as clip_utils, grounding, zoo
from utils.shapes import ShapesWorld

# %% [markdown]
# ## Exercise 6.1 -- boxes to location tokens and back
#
# A coordinate $v$ becomes bin $k = \mathrm{round}(v \cdot 1023)$; PaliGemma writes $y$ before $x$.
# Reading back, bin $k$ stands for $k / 1023$, the middle of the values that round to it.

# %%
def encode(box: tuple[float, float, float, float]) -> str:
    x0, y0, x1, y1 = box
    return "".join(f"<loc{min(max(round(v * 1023), 0), 1023):04d}>" for v in (y0, x0, y1, x1))


def decode(text: str) -> tuple[float, float, float, float]:
    y0, x0, y1, x1 = (int(k) / 1023 for k in re.findall(r"<loc(\d{4})>", text))
    return (x0, y0, x1, y1)


checks.check_loc_tokens(encode, decode)
assert encode((0.05, 0.1, 0.4, 0.5)) == grounding.loc_tokens((0.05, 0.1, 0.4, 0.5))

# %% [markdown]
# ## Exercise 6.2 -- the prefix-LM mask
#
# A prefix query sees every prefix key; an answer query sees every key up to itself. Rows are
# queries, columns keys.

# %%
def build_mask(token_type_ids: torch.Tensor) -> torch.Tensor:
    L = len(token_type_ids)
    prefix = token_type_ids == 0  # (L,)
    causal = torch.ones(L, L, dtype=torch.bool).tril()  # (L, L): key j <= query i
    both_prefix = prefix[:, None] & prefix[None, :]
    return both_prefix | (~prefix[:, None] & causal)


checks.check_prefix_lm_mask(build_mask)
types = torch.tensor([0, 0, 0, 1, 1])
assert torch.equal(build_mask(types), grounding.prefix_lm_mask(types))

# %% [markdown]
# ## Exercise 6.3 -- IoU
#
# The overlap along each axis is clamped at zero, and the union counts the intersection once.

# %%
def iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


checks.check_iou(iou)

# %% [markdown]
# ## Exercise 6.4 -- evaluating emergent retrieval
#
# For each query, look at its k highest-scoring gallery items and count a hit if any shares the
# query's caption; average over the queries.

# %%
def recall_fn(similarity: torch.Tensor, query_captions: list[str], gallery_captions: list[str], k: int) -> float:
    top = similarity.topk(k, dim=1).indices  # (Q, k)
    hits = [any(gallery_captions[j] == q for j in row) for q, row in zip(query_captions, top.tolist())]
    return sum(hits) / len(hits)


checks.check_caption_recall(recall_fn)

# %% [markdown]
# The experiment: the same sounds, queried with captions whose size words are removed. A query
# "a red circle" now matches any red circle, so it is scored against the captions with their
# size words removed as well.

# %% tags=["nbval-ignore-output"]
from transformers import CLIPModel, CLIPProcessor

from utils import sound

clip = CLIPModel.from_pretrained(zoo.path("clip", mode="tiny"), dtype=torch.float32).eval()
processor = CLIPProcessor.from_pretrained(zoo.path("clip", mode="tiny"))
encoder = sound.SoundEncoder.from_pretrained(zoo.path("soundbind"))
world = ShapesWorld(500, seed=69, split="test")
no_size = [re.sub(r"\b(small|large) ", "", s.caption) for s in world.scenes]
with torch.no_grad():
    similarity = clip_utils.cosine_similarity_matrix(clip_utils.encode_texts(clip, processor, no_size),
                                                     sound.encode_sounds(encoder, sound.sounds(world.scenes)))
recall = recall_fn(similarity, no_size, no_size, 1)
claims.at_least("text -> sound recall@1 with the size words removed", recall, 0.5)
print(f"size words removed: recall@1 {recall:.1%} (chance {clip_utils.chance_caption_recall_at_k(no_size, no_size, 1):.1%})")

# %% [markdown]
# Retrieval still works when the text does not say how loud each tone is: the query fixes pitch,
# timbre and order, and any loudness is accepted. What the text cannot ask for is what the
# sound encodes and the caption never states: exact positions (the stereo balance beyond "left
# of") and the onset times.
#
# ## Exercise 6.5 -- how many bins?
#
# Each coordinate is off by at most half a bin, $\delta = \frac{W}{2(n-1)}$ pixels. The worst case
# is the box shrunk (or grown) by $\delta$ on all four sides; shrinking is worse, and then the
# IoU is the area ratio $(1 - 2\delta/s)^2$. Growing gives $1/(1 + 2\delta/s)^2$, which is larger
# because $(1 - 2x)(1 + 2x) = 1 - 4x^2 < 1$; a shift by $\delta$ on both axes gives
# $\frac{(s-\delta)^2}{2s^2 - (s-\delta)^2}$, larger again (the checker tries all 16 combinations). So
#
# $$\Big(1 - \frac{W}{(n-1)\,s}\Big)^2 \ge m \iff n - 1 \ge \frac{W}{s\,(1 - \sqrt m)} .$$

# %%
def min_bins(s: float, W: float, min_iou: float) -> int:
    return math.ceil(W / (s * (1 - math.sqrt(min_iou)))) + 1


checks.check_min_bins(min_bins)
print(f"small ShapesWorld objects (14 px of 64) at IoU >= 0.9: {min_bins(14, 64, 0.9)} bins")
print(f"at IoU >= 0.5, which the grounding score asks for: {min_bins(14, 64, 0.5)} bins (the tiny model has 32)")
