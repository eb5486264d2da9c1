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

# %% [markdown]
# ## Exercise 1.5 -- positions travel with their patches
#
# **The derivation.** Take away the position embeddings and a ViT cannot tell where a patch was.
# Every operation in a block acts on each token alone (LayerNorm, the projections, the MLP), except
# attention, and attention only mixes tokens through weighted sums over *all* of them. Permute the
# patch tokens by a permutation matrix $\Pi$, and the scores $QK^\top$ get their rows and columns
# permuted, the softmax rows permute with them, and the output is $\Pi$ times the old output. [CLS]
# sits outside the permutation, and its output is a sum over every token -- a sum whose order does
# not matter -- so its output, and the logits read from it, do not change at all.
#
# With position embeddings the input of token $k$ is $x_p^k E + E_\text{pos}^k$. Shuffle the
# patches so that position $k$ now holds old patch $\pi(k)$, and give position $k$ the old
# embedding $E_\text{pos}^{\pi(k)}$ as well: every token is then exactly an old token, only at
# another index, and the argument above applies. Positions must travel *with* their patches.
#
# `shuffle_patches` cuts the images into their grid of whole patches, as `patchify` does but
# keeping each patch as a $(C, P, P)$ block, reorders the patch axis with `perm`, and puts the grid
# back together:

# %%
import copy


def shuffle_patches(images: torch.Tensor, P: int, perm: torch.Tensor) -> torch.Tensor:
    B, C, H, W = images.shape
    x = images.reshape(B, C, H // P, P, W // P, P).permute(0, 2, 4, 1, 3, 5)  # (B, H/P, W/P, C, P, P)
    x = x.reshape(B, (H // P) * (W // P), C, P, P)[:, perm]  # (B, N, C, P, P): output k = input perm[k]
    x = x.reshape(B, H // P, W // P, C, P, P).permute(0, 3, 1, 4, 2, 5)  # (B, C, H/P, P, W/P, P)
    return x.reshape(B, C, H, W)


def permute_positions(model: vit.ViT, perm: torch.Tensor) -> vit.ViT:
    moved = copy.deepcopy(model)
    with torch.no_grad():  # row 0 is [CLS]: it stays; patch position k takes old position perm[k]
        moved.position_embeddings[:, 1:] = model.position_embeddings[:, 1:][:, perm]
    return moved


checks.check_shuffle_patches(shuffle_patches)
checks.check_permute_positions(permute_positions)

# %% [markdown]
# The mistake the checker looks for first is the inverse permutation: the patch now at position
# $k$ came *from* position $\pi(k)$, so the new table is the old one indexed with `perm`, not with
# `argsort(perm)`.
#
# **The experiment.** The tiny ViT trained on ShapesWorld (the one the zoo ships, in every mode),
# on 600 held-out one-object scenes: as they are, with their 64 patches shuffled by a random
# permutation (the position embeddings left where they were), and shuffled with the positions
# moved along. Before running it, a reasonable guess is that shuffling leaves the colour readable
# (the pixels are all still there) but scrambles the shape. Accuracies are over the 15 classes,
# and separately for the colour and the shape part of the label:

# %% tags=["nbval-ignore-output"]
from transformers import ViTForImageClassification

from utils import claims, zoo
from utils.shapes import SHAPES, ShapesWorld

tiny_vit = vit.ViT.from_transformers(ViTForImageClassification.from_pretrained(zoo.path("vit", mode="tiny"))).eval()
world = ShapesWorld(600, seed=1, split="test", max_objects=1)
pixels = world.images() * 2 - 1  # pixels to [-1, 1], as the ViT's image processor does
labels = world.labels("colour") * len(SHAPES) + world.labels("shape")  # the zoo ViT's label ids
order = torch.randperm(tiny_vit.config.num_patches, generator=torch.Generator().manual_seed(0))
shuffled = shuffle_patches(pixels, tiny_vit.config.patch_size, order)
with torch.no_grad():
    logits = {"as they are": tiny_vit(pixels), "patches shuffled": tiny_vit(shuffled),
              "shuffled, positions moved along": permute_positions(tiny_vit, order)(shuffled)}
accuracy = {}
for name, out in logits.items():
    predicted = out.argmax(dim=1)
    accuracy[name] = [(predicted == labels).float().mean().item(),
                      (predicted // len(SHAPES) == labels // len(SHAPES)).float().mean().item(),
                      (predicted % len(SHAPES) == labels % len(SHAPES)).float().mean().item()]
claims.close("logits with positions moved along vs the unshuffled images", logits["shuffled, positions moved along"],
             logits["as they are"], atol=1e-4)
claims.at_least("accuracy with the patches shuffled", accuracy["patches shuffled"][0], 0.9)
claims.at_least("colour accuracy with the patches shuffled", accuracy["patches shuffled"][1], 0.99)
for name, (overall, colour, shape) in accuracy.items():
    print(f"{name:<33} accuracy {overall:.1%}  (colour {colour:.1%}, shape {shape:.1%})")

# %% [markdown]
# Moving the positions along gives back the same logits, as derived. The surprise is the middle
# row: shuffling the patches costs the tiny ViT about one point, and the shape survives. The model
# has learned to name the shape from what is *inside* the patches -- a diagonal edge belongs to a
# triangle, a curved one to a circle, a straight edge meeting a right-angled corner to a square --
# and barely from where they sit, a bag of patches. Nothing in its task rewarded more: one object
# on a plain background, named by its colour and its shape wherever it is (section 1.3 saw the
# same in its only mildly structured position embeddings). A task that depends on the layout --
# "is the circle left of the square?" -- could not be solved this way. ImageNet-trained ViTs are
# also less disturbed by shuffled patches than convolutional networks (Naseer et al., 2021,
# [arXiv:2105.10497](https://arxiv.org/abs/2105.10497)), though on natural images they lose far more
# than one point.
#
# ## Exercise 1.6 -- the price of a smaller patch
#
# Count multiply-adds for one image with $L = N + 1$ tokens, $N = (\text{image\_size}/P)^2$:
#
# - patch embedding: each of the $N$ patches, $3P^2$ numbers, projected to $D$: $N \cdot 3P^2 \cdot D$;
# - per block, the query, key, value and output projections: $4 L D^2$;
# - per block, the attention scores $QK^\top$ ($L \times L$ dot products of length $D$ over all heads
#   together) and the weighted sum $AV$ (the same): $2 L^2 D$;
# - per block, the MLP's two layers: $2 L D \cdot \text{mlp\_dim}$.
#
# A multiply-add is two floating-point operations, so FLOPs are twice the sum. (LayerNorm, softmax,
# GELU and the residual additions cost $O(LD)$ per block, small next to these, and counters leave them out.)

# %%
def vit_flops(image_size: int, P: int, D: int, layers: int, mlp_dim: int) -> int:
    N = (image_size // P) ** 2
    L = N + 1  # the patches and [CLS]
    embedding = N * 3 * P * P * D
    block = 4 * L * D * D + 2 * L * L * D + 2 * L * D * mlp_dim
    return 2 * (embedding + layers * block)  # FLOPs = 2 x multiply-adds


checks.check_vit_flops(vit_flops)

# %% [markdown]
# ViT-B/32 and ViT-B/16 at 224 pixels, and ViT-B/16 at 384, against ViT-B/16 at 224. The last
# column is the attention's $2L^2D$ share of the total:

# %%
D, m, layers = 768, 3072, 12
reference = vit_flops(224, 16, D, layers, m)
print(f"{'model':<18}{'tokens L':>9}{'GFLOPs':>9}{'vs B/16 at 224':>16}{'L^2 share':>11}")
for name, size, P in [("ViT-B/32 at 224", 224, 32), ("ViT-B/16 at 224", 224, 16), ("ViT-B/16 at 384", 384, 16)]:
    L = (size // P) ** 2 + 1
    flops = vit_flops(size, P, D, layers, m)
    print(f"{name:<18}{L:>9}{flops / 1e9:>9.2f}{flops / reference:>15.2f}x{2 * layers * 2 * L * L * D / flops:>11.1%}")
print(f"ViT-B/16 vs ViT-B/32 at 224: {reference / vit_flops(224, 32, D, layers, m):.2f}x; "
      f"ViT-B/16 at 384 vs at 224: {vit_flops(384, 16, D, layers, m) / reference:.2f}x")

# %% [markdown]
# Halving the patch side quadruples the number of patches (49 to 196), and the cost follows almost
# exactly: 3.98 times. Going from 224 to 384 pixels at the same patch size gives 577 tokens, 2.9
# times as many, and costs 3.16 times as much: the terms linear in $L$ grow like $L$, and the
# attention's $L^2$ term, 4% of ViT-B/16's cost at 224, grows 8.6-fold and becomes 11% of it. The
# parameters hardly change (only the position table grows), so these models differ in compute,
# not in size. In multiply-adds these are 4.4, 17.6 and 55.5 billion, the figures model libraries
# list for the three models (often as "GMACs").
