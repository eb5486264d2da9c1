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
# # Solutions: The Vision Transformer from scratch
#
# [![Open in Colab](../images/colab-badge.svg)](https://colab.research.google.com/github/mmllm-course/multimodal-llms-hands-on/blob/main/solutions/01_vit_solutions.ipynb)

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
# Worked answers to the exercises of [chapter 1](../chapters/01_vit.ipynb). Each answer is
# followed by the same checker the chapter uses.

# %%
import torch

from utils import checks, vit

# %% [markdown]
# ## Exercise 1.1 -- patchify
#
# Split each spatial axis into (number of patches, $P$), move the two patch-grid axes in front of
# the channel axis, and flatten. The order `(B, H/P, W/P, C, P, P)` reads patches row by row and
# flattens each one channels first, matching `conv.weight.reshape(D, -1)`.

# %%
def patchify(images: torch.Tensor, P: int) -> torch.Tensor:
    B, C, H, W = images.shape
    x = images.reshape(B, C, H // P, P, W // P, P)  # (B, C, H/P, P, W/P, P)
    x = x.permute(0, 2, 4, 1, 3, 5)  # (B, H/P, W/P, C, P, P)
    return x.reshape(B, (H // P) * (W // P), C * P * P)  # (B, N, C*P*P)


checks.check_patchify(patchify)

# %% [markdown]
# A bare `images.reshape(B, N, C * P * P)` has the right shape but the wrong contents: it cuts
# the image's memory into runs of consecutive values, which mixes rows of different patches.
#
# ## Exercise 1.2 -- LayerNorm
#
# Mean and *biased* variance over the last axis, `keepdim=True` so they broadcast back, $\epsilon$
# inside the square root, then the learned scale and shift.

# %%
def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    mu = x.mean(dim=-1, keepdim=True)
    var = ((x - mu) ** 2).mean(dim=-1, keepdim=True)
    return weight * (x - mu) / torch.sqrt(var + eps) + bias


checks.check_layer_norm(layer_norm)

# %% [markdown]
# ## Exercise 1.3 -- attention
#
# Scores between every query and every key, scaled by $1/\sqrt{h_s}$, a softmax over the keys
# (the last axis), then a weighted sum of the values.

# %%
def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    hs = q.shape[-1]
    scores = q @ k.transpose(-2, -1) / hs**0.5  # (B, nh, L, L)
    return torch.softmax(scores, dim=-1) @ v  # (B, nh, L, hs)


checks.check_attention(attention)

# %% [markdown]
# ## Exercise 1.4 -- counting parameters
#
# Go through the model in order. The patch projection has $CP^2 \cdot D$ weights and $D$ biases;
# the [CLS] token has $D$ values and the position table $(N+1) D$. Each block has two LayerNorms
# ($2D$ each), four $D \times D$ projections with biases, and the MLP's $D \times m$ and
# $m \times D$ layers with biases. After the blocks come the final LayerNorm ($2D$) and the head.

# %%
def vit_parameters(image_size: int, P: int, C: int, D: int, layers: int, mlp_dim: int, classes: int) -> int:
    N = (image_size // P) ** 2
    embeddings = (C * P * P * D + D) + D + (N + 1) * D
    per_block = 2 * (2 * D) + 4 * (D * D + D) + (D * mlp_dim + mlp_dim) + (mlp_dim * D + D)
    return embeddings + layers * per_block + 2 * D + (D * classes + classes)


checks.check_vit_parameter_count(vit_parameters)

# %% [markdown]
# With it, the rule of thumb for ViT-Base: $12D^2$ against the exact count of one block.

# %%
D, m = 768, 3072
per_block = vit_parameters(224, 16, 3, D, 1, m, 0) - vit_parameters(224, 16, 3, D, 0, m, 0)
print(f"one block: {per_block:,} parameters; 12 D^2 = {12 * D**2:,} ({12 * D**2 / per_block:.2%} of it)")
print(f"ViT-Base/16 with a 1,000-class head: {vit_parameters(224, 16, 3, D, 12, m, 1000):,}")
