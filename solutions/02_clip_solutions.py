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
import math

import torch
import torch.nn.functional as F

from utils import checks, clip, zoo

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

# %% [markdown]
# ## Exercise 2.5 -- SigLIP in chunks
#
# Device $d$ keeps its $n = B / W$ images ($W$ devices) for the whole step. The text blocks go
# round a ring: at step $s$ device $d$ holds block $(d + s) \bmod W$, scores its images against it
# -- one $n \times n$ block of logits $t\,x_i \cdot y_j + b$ -- and passes it on to its neighbour.
# After $W$ steps every device has met every text block once. The labels are $+1$ only on the
# diagonal of the device's *own* block (its images' own texts) and $-1$ everywhere else, and the
# sum over all blocks of all devices, divided once by the global $B$, is SigLIP's loss. Here the
# devices take their turns in a loop; on real hardware they run at once, and each holds one text
# block at a time instead of all $B$ texts.

# %%
def siglip_loss_chunked(image_embeds: torch.Tensor, text_embeds: torch.Tensor, t: float, b: float,
                        devices: int) -> torch.Tensor:
    B = len(image_embeds)
    if B % devices:
        raise ValueError(f"a batch of {B} pairs does not split into {devices} equal shares")
    n = B // devices  # each device's share of the batch
    images, texts = image_embeds.split(n), text_embeds.split(n)  # device d holds images[d] and, at first, texts[d]
    total = image_embeds.new_zeros(())
    for d in range(devices):  # every device (at the same time, on real hardware)
        for step in range(devices):  # the ring: at step s, device d holds text block (d + s) mod W
            k = (d + step) % devices
            logits = t * images[d] @ texts[k].T + b  # (n, n): the only block of similarities in memory
            eye = torch.eye(n, dtype=logits.dtype, device=logits.device)
            labels = 2 * eye - 1 if k == d else -torch.ones_like(logits)  # positives only in its own block
            total = total - F.logsigmoid(labels * logits).sum()
    return total / B  # summed over texts, averaged over the global batch's B images


checks.check_siglip_loss_chunked(siglip_loss_chunked)

# %% [markdown]
# On a batch of 64 random pairs split over 1, 2, 4 and 8 devices, against the whole-matrix loss of
# `utils.clip`. Each device's largest block shrinks with the number of devices; the loss does not
# change:

# %%
generator = torch.Generator().manual_seed(0)
x = F.normalize(torch.randn(64, 32, generator=generator), dim=-1)
y = F.normalize(x + 0.5 * torch.randn(64, 32, generator=generator), dim=-1)
whole = clip.siglip_loss(x @ y.T, 10.0, -10.0)
for devices in (1, 2, 4, 8):
    chunked = siglip_loss_chunked(x, y, 10.0, -10.0, devices)
    n = 64 // devices
    print(f"{devices} device(s): blocks of {n}x{n}, loss {chunked:.4f} (whole matrix {whole:.4f})")

# %% [markdown]
# ## Exercise 2.6 -- the floor at tau = 1
#
# Take matched pairs at cosine 1, so image and text share one unit vector, $x_i = y_i$. Row $i$'s
# loss is
#
# $$\ell_i = \log\Big(1 + \sum_{j \ne i} e^{(S_{ij} - 1)/\tau}\Big).$$
#
# The mismatched cosines cannot all be low: $0 \le \lVert \sum_i x_i \rVert^2 = B + \sum_{i \ne j} S_{ij}$,
# so their average is at least $-1/(B-1)$. For a fixed average, the sum of exponentials is smallest
# when all terms are equal (the exponential is convex), and $\log(1 + (B-1)e^{u})$ is convex in $u$
# too, so spreading the average unevenly over rows cannot help. Every mismatched cosine at exactly
# $-1/(B-1)$ is possible: the $B$ corners of a regular simplex, centred on the origin. So
#
# $$\mathcal{L}_\text{min}(B, \tau) = \log\Big(1 + (B-1)\,e^{-(1 + \frac{1}{B-1})/\tau}\Big),$$
#
# the same in both directions (the matrix is symmetric). For $B = 2$ the two vectors are opposite,
# cosine $-1$; for any larger batch they cannot all be.

# %%
def clip_loss_floor(B: int, tau: float) -> float:
    mismatched = -1 / (B - 1)  # every off-diagonal cosine of a regular simplex
    return math.log1p((B - 1) * math.exp((mismatched - 1) / tau))


checks.check_clip_loss_floor(clip_loss_floor)

# %% [markdown]
# For a batch of 64, next to the loss of a model that knows nothing ($\log 64$):

# %%
B = 64
print(f"log {B} = {math.log(B):.4f}")
for tau in (1.0, 0.07):
    print(f"tau = {tau:<4}: the lowest possible loss is {clip_loss_floor(B, tau):.6f}")

# %% [markdown]
# At $\tau = 1$ even a perfect arrangement pays 3.17, just one nat below chance: the logits are
# cosines, confined to $[-1, 1]$, and a softmax over 64 of them cannot become confident. At
# $\tau = 0.07$ (CLIP's initial value) the logits span $[-14.3, 14.3]$ and the floor, 0.00003, is
# practically zero. A model cannot get its softmax sharp with unit vectors alone, so it needs the
# scale $1/\tau$; and because the right sharpness is not known in advance, CLIP learns it, as
# `logit_scale`, clipped so that $1/\tau$ stays at most 100.
#
# ## Exercise 2.7 -- a prompt ensemble
#
# The CLIP paper embeds each class name in many templates ("a photo of a {}.", "a blurry photo of
# a {}.", ...), normalises each embedding, averages them and normalises the average. Normalising
# first gives every template the same vote; normalising at the end returns a unit vector, which
# cosine similarity needs.

# %%
def ensemble_class_embeddings(model, processor, classes: list[str], templates: list[str]) -> torch.Tensor:
    per_template = torch.stack([F.normalize(clip.encode_texts(model, processor, [tp.format(c) for c in classes]), dim=-1)
                                for tp in templates])  # (templates, k, d), each row a unit vector
    return F.normalize(per_template.mean(dim=0), dim=-1)  # (k, d)


# %% [markdown]
# The checker needs a CLIP to embed prompts with; the tiny one from the zoo, in every mode:

# %%
from transformers import CLIPModel, CLIPProcessor

tiny_clip = CLIPModel.from_pretrained(zoo.path("clip", mode="tiny"), dtype=torch.float32).eval()
tiny_processor = CLIPProcessor.from_pretrained(zoo.path("clip", mode="tiny"))
checks.check_ensemble_class_embeddings(ensemble_class_embeddings, tiny_clip, tiny_processor)

# %% [markdown]
# The chapter's zero-shot test -- 600 held-out one-object scenes, 15 classes -- with the chapter's
# single template, and with an ensemble of six: the four wordings the tiny CLIP saw in training
# and two that name a size.

# %% tags=["nbval-ignore-output"]
from utils import claims
from utils.shapes import COLOURS, SHAPES, ShapesWorld

class_names = [f"{colour} {shape}" for colour in COLOURS for shape in SHAPES]
world = ShapesWorld(600, seed=5, split="test", max_objects=1)
truth = world.labels("colour") * len(SHAPES) + world.labels("shape")  # index into class_names
scene_embeds = F.normalize(clip.encode_images(tiny_clip, tiny_processor, [s.render() for s in world.scenes]), dim=-1)
ensembles = {"one template": ["a photo of a {}"],
             "six templates": ["a {}", "a photo of a {}", "a picture of a {}", "an image of a {}",
                               "a photo of a small {}", "a photo of a large {}"]}
accuracy = {}
for name, templates in ensembles.items():
    class_embeds = ensemble_class_embeddings(tiny_clip, tiny_processor, class_names, templates)
    accuracy[name] = ((scene_embeds @ class_embeds.T).argmax(dim=1) == truth).float().mean().item()
claims.at_most("the ensemble's change in accuracy (either way)", abs(accuracy["six templates"] - accuracy["one template"]),
               0.02)
for name, value in accuracy.items():
    print(f"{name:<14} zero-shot accuracy {value:.1%}")

# %% [markdown]
# The ensemble changes almost nothing here, and that is the finding: ensembling helps when single
# prompts are unreliable views of a class, and for the tiny CLIP they are not -- it was trained on
# captions in exactly these wordings, so each template alone already lands where the class is.
# Its remaining errors are in the images, which no choice of prompt can fix. For the real CLIP
# on ImageNet the paper reports about 3.5 points from an ensemble of 80 templates: web captions
# come in every wording, and a single template picks one of them.
