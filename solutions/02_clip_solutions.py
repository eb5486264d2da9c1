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
# # Solutions: CLIP and contrastive learning
#
# [![Open in Colab](../images/colab-badge.svg)](https://colab.research.google.com/github/mmllm-course/multimodal-llms-hands-on/blob/main/solutions/02_clip_solutions.ipynb)

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
# Worked answers to the exercises of [chapter 2](../chapters/02_clip.ipynb). Each answer is
# followed by the same checker the chapter uses.

# %%
import torch
import torch.nn.functional as F

from utils import checks

# %% [markdown]
# ## Exercise 2.1 -- the CLIP loss
#
# Divide by $\tau$ once; the targets are the diagonal, $0, 1, \ldots, B-1$. `F.cross_entropy` takes
# a softmax over the last axis, so the rows of $S/\tau$ give image-to-text and the rows of its
# transpose (the columns) give text-to-image.

# %%
def clip_loss(S: torch.Tensor, tau: float) -> torch.Tensor:
    logits = S / tau  # (B, B)
    targets = torch.arange(len(S))  # the diagonal
    image_to_text = F.cross_entropy(logits, targets)  # each row: an image over all texts
    text_to_image = F.cross_entropy(logits.T, targets)  # each column: a text over all images
    return (image_to_text + text_to_image) / 2


checks.check_clip_loss(clip_loss)

# %% [markdown]
# On the chapter's worked example this gives 0.2224:

# %%
S = torch.tensor([[2.0, 0.5, 0.3], [0.2, 2.5, 0.4], [0.1, 0.6, 3.0]])
print(f"{clip_loss(S, 1.0):.4f}")

# %% [markdown]
# ## Exercise 2.2 -- the SigLIP loss
#
# Labels $z = 2I - 1$; $-\log \sigma(u)$ is `-F.logsigmoid(u)`, which stays accurate for large
# $|u|$ where `torch.log(torch.sigmoid(u))` would underflow to $-\infty$.

# %%
def siglip_loss(S: torch.Tensor, t: float, b: float) -> torch.Tensor:
    z = 2 * torch.eye(len(S)) - 1  # +1 on the diagonal, -1 elsewhere
    pair_losses = -F.logsigmoid(z * (t * S + b))  # (B, B)
    return pair_losses.sum(dim=1).mean()  # sum over texts, mean over images


checks.check_siglip_loss(siglip_loss)

# %% [markdown]
# ## Exercise 2.3 -- zero-shot classification
#
# Normalise both sets so the dot product is the cosine similarity, then take the best class for
# each image (the argmax along the class axis). Without the normalisation, a prompt whose
# embedding happens to be long would win for many images.

# %%
def zero_shot_classify(image_embeds: torch.Tensor, class_embeds: torch.Tensor) -> torch.Tensor:
    similarity = F.normalize(image_embeds, dim=-1) @ F.normalize(class_embeds, dim=-1).T  # (n, k)
    return similarity.argmax(dim=1)  # (n,)


checks.check_zero_shot_classify(zero_shot_classify)

# %% [markdown]
# ## Exercise 2.4 -- recall@k
#
# `topk` along the columns gives each query's $k$ best items; a query is a hit when its own index
# is among them.

# %%
def recall_at_k(S: torch.Tensor, k: int) -> float:
    top = S.topk(k, dim=1).indices  # (B, k)
    hits = (top == torch.arange(len(S))[:, None]).any(dim=1)  # (B,)
    return hits.float().mean().item()


checks.check_recall_at_k(recall_at_k)
