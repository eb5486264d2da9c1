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
# # 2. CLIP and contrastive learning
#
# [![Open in Colab](../images/colab-badge.svg)](https://colab.research.google.com/github/mmllm-course/multimodal-llms-hands-on/blob/main/chapters/02_clip.ipynb)

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
# A ViT turns an image into a vector. So does a text transformer for a sentence. CLIP trains
# the two together so that a photo and a sentence describing it get *nearby* vectors in one
# shared space. Nothing else is needed for a surprising range of tasks: classifying images into
# classes nobody trained it on (compare the image with the sentence "a photo of a {class}"),
# searching photos by text and text by photos, clustering both together, and steering image
# generators (chapter 5). This chapter computes CLIP's loss by hand, trains a tiny CLIP on a CPU,
# uses it the way the real one is used, and scales its training across processes.
#
# **What you will learn**
# - how CLIP's two encoders, projection heads, L2 normalisation and learned temperature fit together;
# - the symmetric InfoNCE loss, step by step on a $3 \times 3$ example, and why it works (density ratios);
# - SigLIP's sigmoid loss and why it frees training from the batch-wide softmax;
# - zero-shot classification, cross-modal retrieval (recall@k), clustering and linear probes;
# - how the loss is computed when the batch is split across GPUs, with gradients through the all-gather.
#
# **Prerequisites**: chapter 1 (the ViT); softmax and cross-entropy.

# %%
import math
import subprocess
import sys
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from transformers import CLIPModel, CLIPProcessor

from utils import claims, clip, plotting, runtime, zoo
from utils.shapes import COLOURS, SHAPES, ShapesWorld

runtime.seed_everything(0)
torch.set_printoptions(precision=4, sci_mode=False)

# %% [markdown]
# ## 2.1 Two encoders, one space
#
# CLIP has an image encoder $f$ (a ViT) and a text encoder $g$ (a transformer). Each is followed
# by a linear **projection** into a shared $d$-dimensional space, and the result is **L2-normalised**:
#
# $$x_i = \frac{W_i f(\text{image}_i)}{\lVert W_i f(\text{image}_i) \rVert}, \qquad
#   y_j = \frac{W_t g(\text{text}_j)}{\lVert W_t g(\text{text}_j) \rVert}, \qquad
#   S_{ij} = x_i \cdot y_j .$$
#
# On unit vectors the dot product $S_{ij}$ is the cosine similarity, between -1 and 1. The loss
# turns similarities into logits $S_{ij} / \tau$ with a **temperature** $\tau$ that is learned
# too: the model stores `logit_scale` $= \log(1/\tau)$, so $1/\tau = e^{\mathtt{logit\_scale}}$ stays positive.
# (The course material's pseudocode writes `np.linalg.norm(...)` for this step, which would return the
# lengths; what is meant is dividing each vector by its length, `F.normalize` below.)
#
# We load CLIP with transformers' `CLIPModel` from the course's model zoo: in tiny mode a CLIP
# trained on ShapesWorld captions that ships with the course, in full mode OpenAI's ViT-B/32.

# %%
dtype = runtime.DTYPE  # float16 in full mode, float32 in tiny mode
model = CLIPModel.from_pretrained(zoo.path("clip"), dtype=dtype).to(runtime.DEVICE).eval()
processor = CLIPProcessor.from_pretrained(zoo.path("clip"))
vision_config, text_config = model.config.vision_config, model.config.text_config
n_parameters = sum(p.numel() for p in model.parameters())
print(f"image encoder: ViT, {vision_config.image_size} px, patches of {vision_config.patch_size}, "
      f"width {vision_config.hidden_size}, {vision_config.num_hidden_layers} blocks")
print(f"text encoder: width {text_config.hidden_size}, {text_config.num_hidden_layers} blocks, "
      f"vocabulary {text_config.vocab_size:,}, up to {text_config.max_position_embeddings} tokens")
print(f"shared space: d = {model.config.projection_dim}; 1/tau = exp(logit_scale) = {model.logit_scale.exp().item():.2f}")
print(f"{n_parameters:,} parameters: {n_parameters * dtype.itemsize / 2**20:.1f} MiB in {dtype}")

# %% [markdown]
# The tiny image encoder has chapter 1's tiny ViT sizes. Now one image and its caption, embedded
# by hand: the image tower's output at [CLS] (after a final LayerNorm) goes through the visual
# projection; the text tower's output is read at the `<|endoftext|>` token -- with a causal mask,
# it is the only position that has seen the whole sentence -- and goes through the text
# projection. Both land in the same $d$-dimensional space, and `get_image_features` /
# `get_text_features` do the same. (We ask the tokenizer for the id of `<|endoftext|>`: the
# `eos_token_id` in OpenAI's `config.json` is a leftover 2, which no CLIP token ever has.)

# %%
scene = ShapesWorld(1, seed=7, split="test").scene(0)
inputs = processor(text=[scene.caption], images=[scene.render()], padding=True, return_tensors="pt").to(runtime.DEVICE)
with torch.no_grad():
    image_tokens = model.vision_model(pixel_values=inputs.pixel_values.to(dtype)).last_hidden_state  # (1, 1+N, D_v)
    image_summary = model.vision_model.post_layernorm(image_tokens[:, 0])  # (1, D_v): [CLS]
    x = F.normalize(model.visual_projection(image_summary), dim=-1)  # (1, d)
    text_tokens = model.text_model(**{k: inputs[k] for k in ("input_ids", "attention_mask")}).last_hidden_state  # (1, L, D_t)
    eos_position = (inputs.input_ids == processor.tokenizer.eos_token_id).int().argmax(dim=-1)  # first <|endoftext|>
    y = F.normalize(model.text_projection(text_tokens[0, eos_position]), dim=-1)  # (1, d)
    reference_x = F.normalize(model.get_image_features(pixel_values=inputs.pixel_values.to(dtype)).pooler_output, dim=-1)
    reference_y = F.normalize(model.get_text_features(input_ids=inputs.input_ids, attention_mask=inputs.attention_mask).pooler_output, dim=-1)
print(f"caption: {scene.caption!r}")
print(f"image tokens {tuple(image_tokens.shape)} -> x {tuple(x.shape)}; text tokens {tuple(text_tokens.shape)} -> y {tuple(y.shape)}")
tolerance = claims.rounding(dtype)  # 1e-5 in float32; float16 on a GPU rounds sooner
claims.close("the image embedding by hand vs get_image_features", x, reference_x, atol=tolerance)
claims.close("the text embedding by hand vs get_text_features", y, reference_y, atol=tolerance)
print(f"by hand and transformers agree to within {tolerance:g}, for the image and for the text")
print(f"|x| = {x.norm().item():.3f}, |y| = {y.norm().item():.3f}, cosine similarity S = x . y = {(x @ y.T).item():.3f}")

# %% [markdown]
# ## 2.2 CLIP's tokenizer
#
# CLIP's text encoder reads byte-level BPE tokens from a 49,408-entry vocabulary. Words that end
# before a space carry the `</w>` mark, and every text is wrapped in `<|startoftext|>` ...
# `<|endoftext|>`. There is no [CLS] token on the text side: the end-of-text position plays that
# role. The vocabulary is the real one in both modes (in tiny mode it was converted from the copy
# that ships with the open-clip-torch package), so these ids are the ones OpenAI's CLIP sees.

# %%
tokenizer = processor.tokenizer
caption = "a puppy playing in the snow"
ids = tokenizer(caption).input_ids
print(tokenizer.convert_ids_to_tokens(ids))
print(ids)

# %% [markdown]
# ## 2.3 The loss, by hand on a 3 x 3 example
#
# A batch of $B$ image-text pairs gives a $B \times B$ similarity matrix $S$: row $i$ is image
# $i$ against every text, column $j$ is text $j$ against every image, and the true pairs sit on
# the diagonal. CLIP asks each image to pick its own text among all $B$ texts (a softmax over
# its row) and each text to pick its own image (a softmax over its column):
#
# $$\mathcal{L}_{\text{image}\to\text{text}} = -\frac{1}{B}\sum_{i=1}^{B}
#   \log \frac{e^{S_{ii}/\tau}}{\sum_{j=1}^{B} e^{S_{ij}/\tau}}, \qquad
#   \mathcal{L}_{\text{text}\to\text{image}} = -\frac{1}{B}\sum_{j=1}^{B}
#   \log \frac{e^{S_{jj}/\tau}}{\sum_{i=1}^{B} e^{S_{ij}/\tau}},$$
#
# $$\mathcal{L}_{\text{CLIP}} = \tfrac{1}{2}\left(\mathcal{L}_{\text{image}\to\text{text}} + \mathcal{L}_{\text{text}\to\text{image}}\right).$$
#
# The course material's example has three pairs and $\tau = 1$. First the exponentials $e^{S_{ij}/\tau}$:

# %%
S = torch.tensor([[2.0, 0.5, 0.3],
                  [0.2, 2.5, 0.4],
                  [0.1, 0.6, 3.0]])
tau = 1.0
B = len(S)
exp_S = torch.exp(S / tau)  # (B, B)
print(exp_S)

# %% [markdown]
# **Image to text.** Row $i$'s denominator is $\sum_j e^{S_{ij}/\tau}$, and the loss of image $i$ is
# $-\log$ of its diagonal entry's share:

# %%
row_sums = exp_S.sum(dim=1)  # (B,): one denominator per image
row_losses = -torch.log(exp_S.diagonal() / row_sums)  # (B,)
for i in range(B):
    terms = " + ".join(f"{v:.4f}" for v in exp_S[i].tolist())
    print(f"image {i + 1}: denominator {terms} = {row_sums[i]:.4f}")
    print(f"         loss -log({exp_S[i, i]:.4f} / {row_sums[i]:.4f}) = -log({exp_S[i, i] / row_sums[i]:.4f}) = {row_losses[i]:.4f}")
loss_i2t = row_losses.mean()
print(f"L_image->text = mean = {loss_i2t:.4f}")

# %% [markdown]
# **Text to image.** Column $j$'s denominator is $\sum_i e^{S_{ij}/\tau}$; for text 1 that is
# $e^{2.0} + e^{0.2} + e^{0.1}$:

# %%
column_sums = exp_S.sum(dim=0)  # (B,): one denominator per text
column_losses = -torch.log(exp_S.diagonal() / column_sums)  # (B,)
for j in range(B):
    terms = " + ".join(f"{v:.4f}" for v in exp_S[:, j].tolist())
    print(f"text {j + 1}: denominator {terms} = {column_sums[j]:.4f}")
    print(f"        loss -log({exp_S[j, j]:.4f} / {column_sums[j]:.4f}) = -log({exp_S[j, j] / column_sums[j]:.4f}) = {column_losses[j]:.4f}")
loss_t2i = column_losses.mean()
loss = (loss_i2t + loss_t2i) / 2
print(f"L_text->image = mean = {loss_t2i:.4f}")
print(f"L_CLIP = ({loss_i2t:.4f} + {loss_t2i:.4f}) / 2 = {loss:.4f}")

# %% [markdown]
# The course material computes text 1's denominator as $7.3891 + 1.2214 + 1.1052 \approx 9.7157$:
# the sum of the *rounded* terms. The exact value, $9.71563\ldots$, rounds to 9.7156, as printed
# above. It then writes the probability as $0.7607$; the exact share is $0.7605$. Both slips are
# in the fourth decimal, and the loss, $0.2737$, is $0.274$ to the material's three decimals either way.
#
# The three matrices side by side: $S$, the softmax over each row (what each image predicts) and
# the softmax over each column (what each text predicts). Look at the diagonals: every image and
# every text gives its true partner most of its probability. Image 1 is the least sure (0.71): its
# true pair has the smallest similarity, 2.0, while its wrong texts score higher than those of
# the other rows.

# %%
fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
labels_t, labels_i = [f"text {j + 1}" for j in range(B)], [f"image {i + 1}" for i in range(B)]
plotting.heatmap(S, labels_i, labels_t, "similarity S", ax=axes[0])
plotting.heatmap(torch.softmax(S / tau, dim=1), labels_i, labels_t, "softmax over rows (image -> text)",
                 ax=axes[1], cmap="Blues")
plotting.heatmap(torch.softmax(S / tau, dim=0), labels_i, labels_t, "softmax over columns (text -> image)",
                 ax=axes[2], cmap="Greens")
plt.tight_layout()
plt.show()

# %% [markdown]
# Each direction is an ordinary classification whose "classes" are the $B$ items of the batch
# and whose target is the diagonal, so `F.cross_entropy` with targets $0, 1, \ldots, B-1$
# computes it -- on $S/\tau$ for the rows and on $S^\top/\tau$ for the columns. That is the
# three-line core of every CLIP implementation, `utils.clip.clip_loss`, and of transformers'
# `image_text_contrastive_loss` (which takes the logits directly):

# %%
from transformers.models.clip.modeling_clip import image_text_contrastive_loss

targets = torch.arange(B)  # the diagonal
by_cross_entropy = (F.cross_entropy(S / tau, targets) + F.cross_entropy(S.T / tau, targets)) / 2
print(f"by hand {loss:.4f} | F.cross_entropy {by_cross_entropy:.4f} | utils.clip.clip_loss "
      f"{clip.clip_loss(S, tau):.4f} | transformers {image_text_contrastive_loss(S / tau):.4f}")

# %% [markdown]
# **The temperature.** CLIP starts training at $\tau = 0.07$ ($1/\tau \approx 14.3$) and learns
# it. Dividing by a small $\tau$ stretches the logits, so the softmax becomes sharper: when the
# diagonal wins, the loss falls towards 0; when an image prefers a wrong text, the same sharpening
# makes the mistake expensive. The plot sweeps $\tau$ from 1 to 0.07 for our $S$ and for a copy
# in which image 1 prefers text 2 (its row reads 0.5, 2.0, 0.3).

# %%
taus = np.geomspace(1.0, 0.07, 60)
S_wrong = S.clone()
S_wrong[0, :2] = torch.tensor([0.5, 2.0])  # image 1 now prefers text 2
curves = {"S (diagonal wins)": S, "image 1 prefers text 2": S_wrong}
fig, ax = plt.subplots(figsize=(6, 3.4))
for name, matrix in curves.items():
    ax.plot(taus, [clip.clip_loss(matrix, float(t)).item() for t in taus], label=name)
ax.set(xscale="log", xlabel="temperature tau (log scale)", ylabel="CLIP loss", title="the loss as tau goes from 1 to 0.07")
ax.invert_xaxis()
ax.legend()
plt.show()
for name, matrix in curves.items():
    print(f"{name}: loss at tau = 1: {clip.clip_loss(matrix, 1.0):.4f}, at tau = 0.07: {clip.clip_loss(matrix, 0.07):.4f}")

# %% [markdown]
# ## 2.4 Why this loss? InfoNCE, and the triplet loss before it
#
# Each row of the loss is a game: given a context $c$ (an image), find the one positive $x_{\text{pos}}$
# (its caption) among $N$ candidates $X = \{x_1, \ldots, x_N\}$, where the other $N - 1$ were drawn
# independently of $c$ from $p(x)$. The probability that candidate $\text{pos}$ is the positive is
#
# $$p(C = \text{pos} \mid X, c) = \frac{p(x_{\text{pos}} \mid c) \prod_{i \neq \text{pos}} p(x_i)}
#   {\sum_{j=1}^{N} p(x_j \mid c) \prod_{i \neq j} p(x_i)}
#   = \frac{p(x_{\text{pos}} \mid c) / p(x_{\text{pos}})}{\sum_{j=1}^{N} p(x_j \mid c) / p(x_j)},$$
#
# dividing top and bottom by $\prod_i p(x_i)$. So the best score a model can learn is
# $f(x, c) \propto p(x \mid c) / p(x)$, the **density ratio**: how much more likely this text is
# for this image than in general. InfoNCE writes $f = e^{S/\tau}$ and minimises
# $-\mathbb{E}\left[\log \frac{f(x_{\text{pos}}, c)}{\sum_{x' \in X} f(x', c)}\right]$, which is exactly one row of
# CLIP's loss. A model that knows nothing scores every candidate alike and pays $\log N$:

# %%
print(f"all similarities equal: loss {clip.clip_loss(torch.zeros(B, B)):.4f} = log {B} = {math.log(B):.4f}")
print(f"a batch of 32768 pairs (CLIP's): chance loss log 32768 = {math.log(32768):.2f}")

# %% [markdown]
# The larger the batch, the more negatives each row must beat, and the more the loss can teach:
# CLIP used batches of 32,768 pairs.
#
# The older **triplet loss** looks at one anchor, one positive and one negative at a time and asks
# the positive to be closer than the negative by a margin $\epsilon$:
# $\mathcal{L}_{\text{triplet}} = \max(0, d(a, p) - d(a, n) + \epsilon)$ (the material writes $d$ as
# the squared Euclidean distance; on unit vectors that is $2(1 - \cos)$, and `utils.clip.triplet_loss`
# uses the cosine distance $1 - \cos$). Here are three toy image embeddings and three captions
# that each sit near their image, scored both ways:

# %%
generator = torch.Generator().manual_seed(0)
toy_images = F.normalize(torch.randn(B, 8, generator=generator), dim=-1)  # (B, D)
toy_texts = F.normalize(toy_images + 0.5 * torch.randn(B, 8, generator=generator), dim=-1)  # near their images
toy_S = toy_images @ toy_texts.T  # (B, B)
hardest = (toy_S - 10 * torch.eye(B)).argmax(dim=1)  # each image's most similar wrong text
print("similarities (rows: images, columns: texts):")
print(toy_S)
print(f"InfoNCE / CLIP loss at tau = 0.07: {clip.clip_loss(toy_S, 0.07):.4f} (every row sees all {B - 1} negatives)")
print(f"triplet loss, margin 0.2, hardest negatives {(hardest + 1).tolist()}: "
      f"{clip.triplet_loss(toy_images, toy_texts, toy_texts[hardest], margin=0.2):.4f} (one negative per anchor)")

# %% [markdown]
# The triplet loss is zero as soon as each positive beats its one negative by the margin, and
# then stops teaching; it also needs a scheme to pick informative negatives. InfoNCE weighs every
# negative by how close it comes (its softmax share), so the hard ones automatically count most.
#
# ## 2.5 SigLIP: a sigmoid per pair
#
# CLIP's softmax couples the whole batch: every denominator sums over all $B$ items. SigLIP
# replaces it by an independent yes/no question for every pair -- "do image $i$ and text $j$
# match?" -- with logit $t\,S_{ij} + b$ (a learned scale $t$ and bias $b$) and label $z_{ij} = 1$ on the
# diagonal, $-1$ elsewhere:
#
# $$\mathcal{L}_{\text{SigLIP}} = -\frac{1}{B}\sum_{i=1}^{B}\sum_{j=1}^{B} \log \frac{1}{1 + e^{-z_{ij}(t\,S_{ij} + b)}}.$$
#
# SigLIP initialises $t = 10$ and $b = -10$: with $B - 1$ negatives per positive, the bias
# starts every pair at "probably not a match". The loss of every pair of our $3 \times 3$ example:

# %%
t, b = 10.0, -10.0
z = 2 * torch.eye(B) - 1  # +1 on the diagonal, -1 off it
pair_losses = torch.log1p(torch.exp(-z * (t * S + b)))  # (B, B): -log(1 / (1 + e^(-z (t S + b))))
print(pair_losses)
siglip_by_hand = pair_losses.sum() / B
print(f"SigLIP loss by hand {siglip_by_hand:.4f} | utils.clip.siglip_loss {clip.siglip_loss(S, t, b):.4f}")

# %% [markdown]
# ($-\log \frac{1}{1 + e^{-u}} = \log(1 + e^{-u})$, which `log1p` computes accurately.) Every pair is
# nearly free: the diagonal logits are $10 \cdot 2.0 - 10 = 10$, $15$ and $20$, far on the "match" side,
# and the off-diagonal ones at most $10 \cdot 0.6 - 10 = -4$. The largest entry, image 3 with text 2, is
# that $-4$: $\log(1 + e^{-4}) = 0.0181$.
#
# Transformers' `SiglipModel` computes the same loss in its `forward`; on a small randomly
# initialised one, with our function fed its embeddings, scale and bias:

# %%
from transformers import SiglipConfig, SiglipModel

siglip_model = SiglipModel(SiglipConfig(
    text_config=dict(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4),
    vision_config=dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                       num_attention_heads=4))).eval()
with torch.no_grad():
    out = siglip_model(input_ids=torch.randint(0, 100, (4, 6), generator=generator),
                       pixel_values=torch.randn(4, 3, 32, 32, generator=generator), return_loss=True)
    ours = clip.siglip_loss(out.image_embeds @ out.text_embeds.T, siglip_model.logit_scale.exp(), siglip_model.logit_bias)
claims.close("SiglipModel's loss vs utils.clip.siglip_loss", ours, out.loss, atol=1e-5)
print(f"transformers SiglipModel loss {out.loss.item():.4f} | utils.clip.siglip_loss {ours.item():.4f}")

# %% [markdown]
# **Why no softmax matters.** Each $\mathcal{L}_{ij}$ depends on one image and one text only, so
# the batch's loss is a plain sum over blocks of pairs. Split the images between two devices:
# each computes its rows against all texts and the sums add up to the whole. CLIP's rows cannot
# be split the same way without first collecting every text, because each denominator needs them
# all (section 2.9 does that collecting). This is how SigLIP trains with batches of up to a million pairs.

# %%
half = B - 1  # device A holds images 1-2, device B image 3
split_sum = (clip.siglip_block_loss(S[:half], t, b, first_row=0)  # device A: its rows against all texts
             + clip.siglip_block_loss(S[half:], t, b, first_row=half)) / B  # device B
print(f"SigLIP, whole batch {clip.siglip_loss(S, t, b):.4f} = sum of the two devices' blocks {split_sum:.4f}")

# %% [markdown]
# ## 2.6 A tiny CLIP trained on ShapesWorld
#
# Real CLIP learned from 400 million image-text pairs. Ours learns from ShapesWorld scenes and
# their captions ("a large red circle to the left of a small blue square"), put into a few
# templates ("a photo of ...") and sometimes without the size words, so that short prompts work
# later. The loop is `utils.clip.train_clip`: draw a batch of pairs, encode both, compute the loss
# above with the learned temperature, step. A short demonstration first -- 200 steps from scratch:

# %% tags=["nbval-ignore-output"]
runtime.seed_everything(0)
demo_world = ShapesWorld(3000, seed=2, split="train")
demo_model = CLIPModel(clip.tiny_clip_config()).to(runtime.DEVICE)
demo_losses = clip.train_clip(demo_model, tokenizer, demo_world.images() * 2 - 1,
                              [s.caption for s in demo_world.scenes], steps=200, batch_size=64)

# %% [markdown]
# With 64 pairs per batch, guessing costs $\log 64 = 4.16$; the loss starts there and falls as
# the two encoders begin to agree: by the last ten steps it is at least 2 below chance (the exact
# digits vary a little from one computer to another):

# %% tags=["nbval-ignore-output"]
claims.between("the mean loss of the first 10 steps", np.mean(demo_losses[:10]), math.log(64) - 0.5, math.log(64) + 0.5)
claims.at_most("the mean loss of the last 10 steps", np.mean(demo_losses[-10:]), math.log(64) - 2)
print(f"loss: first 10 steps {np.mean(demo_losses[:10]):.2f} (chance {math.log(64):.2f}), "
      f"last 10 steps {np.mean(demo_losses[-10:]):.2f}")
fig, ax = plt.subplots(figsize=(6, 3))
ax.plot(demo_losses, lw=0.8)
ax.axhline(math.log(64), color="grey", ls="--", label="chance: log 64")
ax.set(xlabel="step", ylabel="CLIP loss", title="200 steps of a tiny CLIP from scratch")
ax.legend()
plt.show()

# %% [markdown]
# The model in the zoo was trained the same way for 2,500 steps on 12,000 scenes by
# `scripts/train_clip.py` (`make assets` rebuilds it in a few minutes on a CPU). Its record:

# %%
if runtime.MODE == "tiny":
    print(Path(zoo.path("clip"), "training.json").read_text())

# %% [markdown]
# ### Zero-shot classification
#
# To classify without training a classifier, write one prompt per class, embed the prompts once,
# and give each image the class whose prompt is most similar. With 5 colours and 3 shapes there
# are 15 prompts "a photo of a {colour} {shape}". We test on 600 held-out one-object scenes:

# %%
prompts = [f"a photo of a {colour} {shape}" for colour in COLOURS for shape in SHAPES]
zero_shot_world = ShapesWorld(600, seed=5, split="test", max_objects=1)
truth = zero_shot_world.labels("colour") * len(SHAPES) + zero_shot_world.labels("shape")  # index into prompts
image_embeds = clip.encode_images(model, processor, [s.render() for s in zero_shot_world.scenes])  # (600, d)
prompt_embeds = clip.encode_texts(model, processor, prompts)  # (15, d)
probabilities = clip.zero_shot_probabilities(image_embeds, prompt_embeds, logit_scale=model.logit_scale.exp().item())
predicted = probabilities.argmax(dim=1)
zero_shot_accuracy = (predicted == truth).float().mean().item()
print(f"{len(prompts)} prompts, e.g. {prompts[:2]}")
print(f"zero-shot accuracy on {len(truth)} held-out scenes: {zero_shot_accuracy:.1%} "
      f"(colour {(predicted // len(SHAPES) == truth // len(SHAPES)).float().mean():.1%}, "
      f"shape {(predicted % len(SHAPES) == truth % len(SHAPES)).float().mean():.1%}; chance {1 / len(prompts):.1%})")

# %% [markdown]
# A few of them with the model's best prompt and its probability (a softmax over the 15 prompts
# at the learned temperature). Wrong answers are marked:

# %%
titles = []
for i in range(8):
    best = int(predicted[i])
    mark = "" if best == truth[i] else "  [wrong]"
    titles.append(f"{prompts[best].removeprefix('a photo of a ')} ({probabilities[i, best]:.2f}){mark}")
plotting.show_images([zero_shot_world.scene(i).render() for i in range(8)], titles, columns=8, size=1.6,
                     title="zero-shot: the most similar prompt")
plt.show()

# %% [markdown]
# ### Searching images with text, and text with images
#
# Retrieval ranks every item of the other modality by similarity. **Recall@k** is the share of
# queries whose true partner is among the top $k$. We use 300 held-out scenes with one to three
# objects and their full captions. Some captions describe different scenes equally well (two
# scenes can both be "a small green triangle"), so recall@1 understates what the model gets right.

# %% tags=["nbval-ignore-output"]
retrieval_world = ShapesWorld(300, seed=6, split="test")
captions = [s.caption for s in retrieval_world.scenes]
scene_embeds = clip.encode_images(model, processor, [s.render() for s in retrieval_world.scenes])  # (300, d)
caption_embeds = clip.encode_texts(model, processor, captions)  # (300, d)
S_retrieval = clip.cosine_similarity_matrix(scene_embeds, caption_embeds)  # (images, texts)
recall = {}
for k in (1, 5):
    recall[k, "text -> image"], recall[k, "image -> text"] = clip.recall_at_k(S_retrieval.T, k), clip.recall_at_k(S_retrieval, k)
    print(f"recall@{k}: text -> image {recall[k, 'text -> image']:.1%}, "
          f"image -> text {recall[k, 'image -> text']:.1%}  (chance {k / len(captions):.1%})")
print(f"{len(set(captions))} distinct captions among {len(captions)} scenes")
# Identical captions tie exactly, and which of them ranks first can differ between computers: we state bounds.
for direction in ("text -> image", "image -> text") if runtime.MODE == "tiny" else ():  # (about the tiny CLIP)
    claims.at_least(f"recall@5, {direction}", recall[5, direction], 0.9)
    claims.at_least(f"recall@1, {direction}", recall[1, direction], 0.5)

# %% [markdown]
# Over nine queries in ten find their partner among the top five in both directions, and more than
# half rank it first. The top five images for three caption queries; the true scene has a green
# frame. The images that outrank it usually fit the caption too:

# %%
queries = [0, 1, 2]
fig, axes = plt.subplots(len(queries), 5, figsize=(9, 2.2 * len(queries)))
for row, q in enumerate(queries):
    top = S_retrieval[:, q].topk(5).indices  # best images for caption q
    for col, index in enumerate(top.tolist()):
        ax = axes[row, col]
        ax.imshow(retrieval_world.scene(index).render())
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"{S_retrieval[index, q]:.2f}", fontsize=8)
        for spine in ax.spines.values():  # a green frame around the true scene, no frame elsewhere
            spine.set(visible=index == q, color="green", linewidth=3)
    axes[row, 0].set_ylabel(plotting.wrap(captions[q], 22), fontsize=7, rotation=0, ha="right", va="center")
fig.suptitle("text -> image search: top 5 (cosine similarity above each)")
plt.tight_layout()
plt.show()

# %% [markdown]
# ### Images and words in one space
#
# Project the normalised embeddings of 150 one-object scenes and of the 15 prompts onto their two
# main directions (PCA) and draw them in one plot. The images form one group per colour and shape
# -- with the tiny model, the first direction mostly separates triangles, circles and squares and the second
# sets yellow apart -- and each prompt's star lands in the group it names. Clustering images by
# keywords needs nothing more than this shared space.

# %%
cluster_world = ShapesWorld(150, seed=8, split="test", max_objects=1)
points = F.normalize(torch.cat([clip.encode_images(model, processor, [s.render() for s in cluster_world.scenes]),
                                prompt_embeds]), dim=-1)  # (150 + 15, d)
centred = points - points.mean(dim=0)
_, _, V = torch.linalg.svd(centred, full_matrices=False)
xy = (centred @ V[:2].T).numpy()  # (165, 2)
palette = {"red": "#d62728", "green": "#2ca02c", "blue": "#1f77b4", "yellow": "#e6b800", "purple": "#9467bd"}
markers = {"circle": "o", "square": "s", "triangle": "^"}
fig, ax = plt.subplots(figsize=(6.5, 5))
for i, s in enumerate(cluster_world.scenes):
    obj = s.objects[0]
    ax.scatter(*xy[i], color=palette[obj.colour], marker=markers[obj.shape], s=18, alpha=0.6)
for k, prompt in enumerate(prompts):
    colour, shape = prompt.split()[-2:]
    ax.scatter(*xy[len(cluster_world) + k], color=palette[colour], marker="*", s=260, edgecolor="black")
    ax.annotate(f"{colour} {shape}", xy[len(cluster_world) + k], fontsize=7, xytext=(4, 4), textcoords="offset points")
ax.set(title="image embeddings (small marks) and prompts (stars), PCA", xlabel="component 1", ylabel="component 2")
plt.show()

# %% [markdown]
# ### A linear probe
#
# Zero-shot uses no labelled images at all. A **linear probe** uses some: freeze CLIP, embed
# labelled training images, and fit a logistic regression on the embeddings. The plot shows its
# test accuracy with 1, 2, 4, 8 and 32 labelled images per class ("k-shot"), against the
# zero-shot line. Here the probe needs about 32 images per class to catch up with the prompts,
# which carry the class names for free. (In the CLIP paper, zero-shot CLIP matched, on average,
# a 4-shot probe on its own features.)

# %% tags=["nbval-ignore-output"]
from sklearn.linear_model import LogisticRegression

probe_world = ShapesWorld(1500, seed=9, split="train", max_objects=1)
probe_embeds = F.normalize(clip.encode_images(model, processor, [s.render() for s in probe_world.scenes]), dim=-1)
probe_labels = (probe_world.labels("colour") * len(SHAPES) + probe_world.labels("shape")).numpy()
test_embeds = F.normalize(image_embeds, dim=-1).numpy()
rng = np.random.default_rng(0)
shots, probe_accuracy = [1, 2, 4, 8, 32], []
for k in shots:
    chosen = np.concatenate([rng.permutation(np.flatnonzero(probe_labels == c))[:k] for c in range(len(prompts))])
    probe = LogisticRegression(C=10.0, max_iter=2000).fit(probe_embeds[chosen].numpy(), probe_labels[chosen])
    probe_accuracy.append((probe.predict(test_embeds) == truth.numpy()).mean())
print("linear probe accuracy:", ", ".join(f"{k}-shot {a:.1%}" for k, a in zip(shots, probe_accuracy)),
      f"| zero-shot {zero_shot_accuracy:.1%}")
if runtime.MODE == "tiny":  # the text's claims are about the tiny CLIP
    claims.holds("the probe stays below zero-shot with up to 8 images per class",
                 max(probe_accuracy[:-1]) < zero_shot_accuracy)
    claims.at_least("the 32-shot probe's accuracy (it catches up with zero-shot)", probe_accuracy[-1],
                    zero_shot_accuracy - 0.02)
fig, ax = plt.subplots(figsize=(5.5, 3.2))
ax.plot(shots, probe_accuracy, marker="o", label="linear probe")
ax.axhline(zero_shot_accuracy, color="grey", ls="--", label="zero-shot (no labelled images)")
ax.set(xscale="log", xticks=shots, xticklabels=shots, xlabel="labelled images per class", ylabel="test accuracy",
       ylim=(0, 1.02), title="linear probe on frozen CLIP image embeddings")
ax.legend(loc="lower right")
plt.show()

# %% [markdown]
# ## 2.7 The sentence-transformers wrapper
#
# sentence-transformers wraps the same checkpoint behind one `encode` method that takes either
# strings or PIL images, and `util.cos_sim` gives the similarity matrix. (The course material
# loads `"clip-ViT-B-32"`, the library's own copy of ViT-B/32; the transformers checkpoint we use
# works directly.) The matrix for four scenes and their captions, and how closely it agrees with
# our own embeddings:

# %%
from sentence_transformers import SentenceTransformer, util

st_model = SentenceTransformer(zoo.path("clip"), device=runtime.DEVICE, model_kwargs={"dtype": dtype})
four = retrieval_world.scenes[:4]
st_images = st_model.encode([s.render() for s in four], convert_to_tensor=True)  # (4, d)
st_texts = st_model.encode([s.caption for s in four], convert_to_tensor=True)  # (4, d)
st_similarity = util.cos_sim(st_images, st_texts).float().cpu()
print(st_similarity)
claims.close("sentence-transformers' similarities vs ours", st_similarity, S_retrieval[:4, :4], atol=claims.rounding(dtype))
print(f"sentence-transformers and our own embeddings agree to within {claims.rounding(dtype):g}")

# %% [markdown]
# ## 2.8 What a good score looks like
#
# The course material embeds a photo of a puppy with the caption "a puppy playing in the snow"
# and finds a cosine similarity of 0.33, which "sounds low". It is high *for CLIP*: what matters
# is how far a matching pair sits above the mismatched ones. In full mode we score OpenAI's
# CLIP on the course's sample photos against one caption each; in tiny mode, our CLIP on
# ShapesWorld scenes. Each row is an image, each column a caption:

# %%
from utils.images import sample_image

if runtime.MODE == "full":
    photo_captions = {"cat": "a photo of a cat", "coffee": "a cup of coffee", "rocket": "a rocket on a launch pad",
                      "astronaut": "a portrait of an astronaut", "flower": "a close-up of a flower"}
    photos = [sample_image(name) for name in photo_captions]
    photo_captions = list(photo_captions.values())
else:
    photos = [s.render() for s in retrieval_world.scenes[10:15]]
    photo_captions = captions[10:15]
photo_S = clip.cosine_similarity_matrix(clip.encode_images(model, processor, photos),
                                        clip.encode_texts(model, processor, photo_captions))
for j, text in enumerate(photo_captions):
    print(f"caption {j + 1}: {text}")
plotting.heatmap(photo_S, [f"image {i + 1}" for i in range(len(photos))], [f"caption {j + 1}" for j in range(len(photo_captions))],
                 "cosine similarity: images x captions")
plt.show()

# %% [markdown]
# The distribution over many pairs: matched pairs (the diagonal of the 300-scene retrieval matrix
# in tiny mode) against all mismatched ones. Real CLIP's matched pairs typically score around
# 0.3 and mismatched ones around 0.1-0.2; the tiny model, with only 32 dimensions and a simple
# world, spreads its scores much wider. Either way, a score means something only next to the others.

# %%
if runtime.MODE == "full":
    distribution_S = photo_S
else:
    distribution_S = S_retrieval
matched = distribution_S.diagonal()
mismatched = distribution_S[~torch.eye(len(distribution_S), dtype=torch.bool)]
print(f"matched pairs: mean cosine {matched.mean():.2f}; mismatched: mean {mismatched.mean():.2f}")
fig, ax = plt.subplots(figsize=(6, 3))
ax.hist(mismatched.numpy(), bins=40, density=True, alpha=0.6, label=f"mismatched ({len(mismatched):,})")
ax.hist(matched.numpy(), bins=40, density=True, alpha=0.6, label=f"matched ({len(matched)})")
ax.set(xlabel="cosine similarity", ylabel="density", title="matched versus mismatched image-caption pairs")
ax.legend()
plt.show()

# %% [markdown]
# ## 2.9 Scaling out: the loss across GPUs
#
# CLIP's batch of 32,768 pairs does not fit on one GPU. With $W$ processes, each encodes $b = B/W$
# pairs. But each row of the loss needs *all* $B$ texts in its denominator, so every process first
# collects everyone's embeddings with an **all-gather**. Two details make the result exact:
#
# 1. **Gradients must flow through the gather.** A plain `dist.all_gather` returns copies with no
#    history. `utils.clip.gather_with_grad` wraps it in an autograd function whose backward sums,
#    over all processes, the gradients that reach each process's rows and hands each process its own.
# 2. **Each process takes its own rows and columns.** Process $r$ scores its $b$ images against all
#    $B$ texts and its $b$ texts against all $B$ images, with targets at positions $rb, \ldots, rb + b - 1$.
#    Its loss is the mean over those; the average over processes -- which is what
#    `DistributedDataParallel` optimises when it averages gradients -- equals the global loss.
#
# In one process, `distributed_clip_loss` is simply `clip_loss`:

# %%
x_toy, y_toy = F.normalize(torch.randn(6, 8, generator=generator), dim=-1), F.normalize(torch.randn(6, 8, generator=generator), dim=-1)
scale = torch.tensor(1 / 0.07)
distributed, single = clip.distributed_clip_loss(x_toy, y_toy, scale), clip.clip_loss(x_toy @ y_toy.T, 1 / scale)
claims.close("distributed_clip_loss in one process vs clip_loss", distributed, single, atol=1e-5)
print(f"distributed_clip_loss {distributed:.4f} | clip_loss {single:.4f}")

# %% [markdown]
# `scripts/train_clip.py` trains the tiny CLIP this way under `torchrun --nproc_per_node N`
# (gloo on CPUs, nccl on GPUs; every process draws the same global batch and encodes its share).
# Its `--record` option stops after the first backward pass and saves the loss and every gradient.
# We run it once as a single process and once as two CPU processes on the same global batch of
# 16 pairs, and compare:

# %%
def first_step(processes: int, folder: Path) -> dict:
    out = folder / f"step-{processes}.pt"
    launcher = [sys.executable] + (["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
                                   if processes > 1 else [])
    subprocess.run([*launcher, str(COURSE_ROOT / "scripts" / "train_clip.py"), "--cpu", "--train-scenes", "64",
                    "--batch-size", "16", "--record", str(out)], check=True, capture_output=True, cwd=COURSE_ROOT)
    return torch.load(out, weights_only=True)


with tempfile.TemporaryDirectory() as folder:
    one, two = first_step(1, Path(folder)), first_step(2, Path(folder))
# Each gradient is compared relative to its largest entry: the two runs add the same terms in another order.
worst = max((one["grads"][name] - two["grads"][name]).abs().max().item() / max(1.0, one["grads"][name].abs().max().item())
            for name in one["grads"])
claims.close("the loss with 1 and with 2 processes", two["loss"], one["loss"], atol=1e-5)
claims.at_most("the largest gradient difference between 1 and 2 processes (relative)", worst, 1e-5,
               hint="A gradient that differs by more than rounding means the gather lost a process's share.")
print(f"loss: 1 process {one['loss']:.4f}, 2 processes {two['loss']:.4f}")
print(f"{len(one['grads'])} gradient tensors; each agrees to within 1e-5 x max(1, its largest entry)")

# %% [markdown]
# The same loss and the same gradients, up to float rounding. Real CLIP training adds two
# memory savers on top: each process computes only its $b \times B$ block of logits (as here), and
# the gather happens once per step for both modalities.
#
# ## Summary
# - CLIP embeds images and texts with two encoders and linear projections into one space,
#   normalises, and compares by cosine similarity with a learned temperature.
# - Its loss is a cross-entropy in both directions over the $B \times B$ similarity matrix with the
#   diagonal as targets; on the $3 \times 3$ example it is 0.2224 (0.274 for text 1).
# - InfoNCE is "find the positive among $N$"; the optimal score is the density ratio $p(x \mid c)/p(x)$.
# - SigLIP scores each pair with its own sigmoid, so the loss splits freely across devices.
# - Zero-shot classification is retrieval among class prompts; recall@k measures search; a linear
#   probe measures what the frozen embeddings hold.
# - Across GPUs, embeddings are all-gathered with gradients, and each process owns its rows and columns.
#
# ## Where this goes next
# CLIP can match images and text, but it cannot talk. Chapter 3 (BLIP-2) connects a frozen image
# encoder to a frozen language model through a small trained bridge, so the model can caption
# and answer questions. CLIP's text encoder returns in chapter 5 to steer image generation.
#
# ## Further reading
# - A. Radford et al., *Learning Transferable Visual Models From Natural Language Supervision* (CLIP), 2021, [arXiv:2103.00020](https://arxiv.org/abs/2103.00020).
# - A. van den Oord, Y. Li, O. Vinyals, *Representation Learning with Contrastive Predictive Coding* (InfoNCE), 2018, [arXiv:1807.03748](https://arxiv.org/abs/1807.03748).
# - F. Schroff, D. Kalenichenko, J. Philbin, *FaceNet* (triplet loss), 2015, [arXiv:1503.03832](https://arxiv.org/abs/1503.03832).
# - X. Zhai et al., *Sigmoid Loss for Language Image Pre-Training* (SigLIP), 2023, [arXiv:2303.15343](https://arxiv.org/abs/2303.15343).
# - M. Cherti et al., *Reproducible Scaling Laws for Contrastive Language-Image Learning* (OpenCLIP), 2022, [arXiv:2212.07143](https://arxiv.org/abs/2212.07143).
#
# ## Exercises
# Each exercise has a stub that raises `NotImplementedError` and a checker under it. Replace the
# stub with your code and re-run the two cells. Worked answers are in
# `solutions/02_clip_solutions.ipynb`.
#
# **Exercise 2.1 -- the CLIP loss.** Write `clip_loss(S, tau)` for a $B \times B$ similarity matrix:
# the mean of the image-to-text and text-to-image cross-entropies over the logits $S / \tau$.

# %%
from utils import checks


def clip_loss(S: torch.Tensor, tau: float) -> torch.Tensor:
    raise NotImplementedError


checks.check_clip_loss(clip_loss)

# %% [markdown]
# **Exercise 2.2 -- the SigLIP loss.** Write `siglip_loss(S, t, b)`: the formula of section 2.5,
# with labels $+1$ on the diagonal and $-1$ elsewhere, summed over texts and averaged over images.

# %%
def siglip_loss(S: torch.Tensor, t: float, b: float) -> torch.Tensor:
    raise NotImplementedError


checks.check_siglip_loss(siglip_loss)

# %% [markdown]
# **Exercise 2.3 -- zero-shot classification.** Write `zero_shot_classify(image_embeds, class_embeds)`:
# for $(n, d)$ image embeddings and $(k, d)$ class-prompt embeddings (not normalised), return the
# $(n,)$ indices of each image's most similar class.

# %%
def zero_shot_classify(image_embeds: torch.Tensor, class_embeds: torch.Tensor) -> torch.Tensor:
    raise NotImplementedError


checks.check_zero_shot_classify(zero_shot_classify)

# %% [markdown]
# **Exercise 2.4 -- recall@k.** Write `recall_at_k(S, k)`: the share of rows (queries) whose own
# column (the diagonal) is among their $k$ highest scores, as a Python float.

# %%
def recall_at_k(S: torch.Tensor, k: int) -> float:
    raise NotImplementedError


checks.check_recall_at_k(recall_at_k)
