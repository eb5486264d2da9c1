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
# # 3. BLIP-2 and the Q-Former
#
# [![Open in Colab](../images/colab-badge.svg)](https://colab.research.google.com/github/mmllm-course/multimodal-llms-hands-on/blob/main/chapters/03_blip2.ipynb)

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
# CLIP puts images and texts in one embedding space, but it cannot talk: it scores pairs, it
# writes nothing. To get a model that answers questions about a picture we have to feed the
# picture to a language model. Training such a model from scratch takes billions of image-text
# pairs and GPU-years. BLIP-2 takes two models that already exist and stay **frozen** -- an image
# encoder and a large language model -- and trains only a small bridge between them, the
# **Q-Former**. This chapter builds that bridge from scratch, checks it against transformers,
# trains a tiny BLIP-2 offline that captions scenes and answers questions about them, shows what
# its tiny frozen LM had to be taught before any bridge could help, and puts a chat with memory
# on top of it.
#
# **What you will learn**
# - the recipe most multimodal LLMs share: frozen image encoder, frozen LLM, small trainable connector;
# - the Q-Former: learned queries, self-attention, cross-attention to the image every other
#   layer, and a text transformer that shares the self-attention;
# - stage 1's three objectives (ITC, ITM, ITG) with the attention mask each one needs, and
#   stage 2's *soft visual prompts* for the LLM, shapes end to end;
# - what the real `Salesforce/blip2-opt-2.7b` costs in memory, and how its processor and
#   tokenizer prepare the inputs;
# - captioning, visual question answering and a chat that remembers earlier turns;
# - other bridges: Flamingo's gated cross-attention and Perceiver Resampler.
#
# **Prerequisites**: chapter 1 (ViT: patches and attention) and chapter 2 (CLIP's contrastive loss).

# %%
import json
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
from PIL import Image

from utils import blip2, bridges, chat, claims, plotting, qformer, runtime, zoo  # first: runtime silences known-harmless warnings
from utils.images import sample_image
from utils.qformer import QFormer, QFormerConfig, QFormerForPretraining
from utils.shapes import BACKGROUND, ShapesWorld, make_scene

from transformers import AutoProcessor, Blip2ForConditionalGeneration, Blip2QFormerModel  # noqa: E402

runtime.seed_everything(0)
torch.set_printoptions(precision=4, sci_mode=False)

# %% [markdown]
# ## 3.1 The recipe: frozen encoder, frozen LLM, a trainable bridge
#
# Every model in this chapter has the same three parts. On Colab the cell below loads
# BLIP-2 with OPT-2.7B (an EVA ViT-g image encoder, a Q-Former, and the 2.7-billion-parameter OPT
# language model); offline it loads the course's tiny BLIP-2, trained on ShapesWorld in section
# 3.7, which has the same class, the same files and the same processor. Only the sizes differ.

# %%
device = runtime.DEVICE
dtype = runtime.DTYPE  # float16 in full mode, float32 in tiny mode
model_path = zoo.path("blip2")
processor = AutoProcessor.from_pretrained(model_path)
# device_map puts each tensor on the GPU as it is read: the checkpoint (float32, 15 GB) never sits in host RAM.
model = Blip2ForConditionalGeneration.from_pretrained(model_path, dtype=dtype, device_map=device).eval()
config = model.config
print(f"{runtime.MODE} mode: {type(model).__name__} from "
      f"{zoo.entry('blip2').folder if runtime.MODE == 'tiny' else zoo.entry('blip2').hub_id}")
parts = {"image encoder (frozen)": [model.vision_model],
         "Q-Former + queries + projection (trained)": [model.qformer, model.language_projection],
         "language model (frozen)": [model.language_model]}
counts = {name: sum(p.numel() for m in mods for p in m.parameters()) for name, mods in parts.items()}
counts["Q-Former + queries + projection (trained)"] += model.query_tokens.numel()
for name, count in counts.items():
    print(f"  {name:<44}{count:>14,} parameters")
bridge_share = counts["Q-Former + queries + projection (trained)"] / sum(counts.values())
print(f"the bridge is {bridge_share:.1%} of the model")

# %% [markdown]
# Why train only the bridge? The image encoder already knows what is in a picture (it was
# trained contrastively, like chapter 2's CLIP), and the LLM already knows how to write; both
# cost a fortune to train. Freezing them keeps what they know -- no catastrophic forgetting of
# the LLM's language -- and makes training cheap: gradients and optimizer state are needed only
# for the bridge. In the real BLIP-2 that bridge is a few percent of the model (section 3.5
# computes it). In our tiny model the two frozen parts are themselves tiny, so the bridge is a
# larger share, as the last line printed.
#
# ## 3.2 The Q-Former from scratch
#
# The Q-Former is a small BERT-like transformer with a twist: besides text tokens it holds **Q
# learned query tokens** (BLIP-2 uses Q = 32 of width 768). Each layer runs
#
# 1. self-attention among the queries (and, in stage 1, the text tokens);
# 2. every other layer, **cross-attention** from the queries to the frozen image features:
#    $\mathrm{softmax}(q k^\top / \sqrt{d})\, v$ with $q$ from the queries and $k, v$ from the patches;
# 3. a feed-forward block, each sub-block followed by "Add & Norm" as in BERT.
#
# However many patches the image has, out come exactly Q vectors: the Q-Former is an
# information bottleneck. Our implementation is `utils/qformer.py`; below it runs next to
# transformers' `Blip2QFormerModel` holding the same random weights.

# %%
qf_config = QFormerConfig.named("tiny")  # 4 layers, width 32, Q = 4 queries; image features 24 wide
torch.manual_seed(0)
theirs = Blip2QFormerModel(qf_config.to_transformers()).eval()
ours = QFormer.from_transformers(theirs, num_query_tokens=qf_config.num_query_tokens).eval()
B, N = 2, 10  # two images of 10 patch features each
image_embeds = torch.randn(B, N, qf_config.encoder_hidden_size)  # (B, N, E)
queries = torch.randn(B, qf_config.num_query_tokens, qf_config.hidden_size)  # (B, Q, D)
with torch.no_grad():
    mine = ours(queries, image_embeds)  # (B, Q, D)
    reference = theirs(query_embeds=queries, encoder_hidden_states=image_embeds).last_hidden_state
print(f"queries {tuple(queries.shape)} + image features {tuple(image_embeds.shape)} -> {tuple(mine.shape)}")
print("layers with cross-attention:", [i for i in range(qf_config.num_layers) if qf_config.has_cross_attention(i)])
claims.close("our Q-Former vs transformers' Blip2QFormerModel", mine, reference, atol=1e-5)
print("ours and transformers' agree to within 1e-5")

# %% [markdown]
# The same check on the trained Q-Former inside the model loaded above: `from_transformers`
# copies its weights and its 32 query tokens, and our module reproduces the query outputs on a
# real image's features.

# %%
scene = make_scene(1, seed=0)
pixel_values = processor(images=scene.render(), return_tensors="pt")["pixel_values"].to(device, dtype)
qformer_dtype = model.qformer.dtype  # transformers keeps BLIP-2's Q-Former in float32, even in a float16 model
with torch.no_grad():
    features = model.vision_model(pixel_values=pixel_values).last_hidden_state.to(qformer_dtype)  # (1, 1 + patches, E)
    ours_trained = QFormer.from_transformers(model).to(device, qformer_dtype).eval()
    mine = ours_trained(None, features)  # None: use the learned query tokens
    reference = model.qformer(query_embeds=model.query_tokens, encoder_hidden_states=features).last_hidden_state
# (Full mode's 12 layers of real weights, through a GPU's attention kernel, round more than the tiny model's 4.)
tolerance = claims.rounding(qformer_dtype) * (10 if runtime.MODE == "full" else 1)
claims.close("our Q-Former vs the trained model's (query outputs)", mine, reference, atol=tolerance)
print(f"image features {tuple(features.shape)} -> query outputs {tuple(mine.shape)}; they agree to within {tolerance:g}")

# %% [markdown]
# Which patches does each query read? The weights of the last cross-attention layer, averaged
# over heads, say where each query looks. Below, the four most focused queries of the trained
# tiny model on one scene: each heat map is one query's attention over the 8 x 8 patch grid.

# %%
with torch.no_grad():
    _, cross = ours_trained(None, features, output_cross_attentions=True)
grid = config.vision_config.image_size // config.vision_config.patch_size
weights = cross[-1][0].float().mean(0)[:, 1:].reshape(-1, grid, grid).cpu()  # (Q, grid, grid), [CLS] dropped
picked = weights.flatten(1).max(1).values.argsort(descending=True)[:4].tolist()  # the most focused queries
fig, axes = plt.subplots(1, 5, figsize=(12, 2.6))
axes[0].imshow(scene.render())
axes[0].set_title(plotting.wrap(scene.caption, 26), fontsize=8)
for ax, q in zip(axes[1:], picked):
    ax.imshow(weights[q], cmap="magma")
    ax.set_title(f"query {q}", fontsize=9)
for ax in axes:
    ax.axis("off")
fig.suptitle("Last cross-attention layer: where four queries look")
fig.tight_layout()


def patches_of(o) -> torch.Tensor:
    """(grid, grid) True where a patch overlaps object o's box."""
    edges = torch.arange(grid) / grid
    x0, y0, x1, y1 = o.box
    return ((edges < y1) & (edges + 1 / grid > y0))[:, None] & ((edges < x1) & (edges + 1 / grid > x0))[None, :]


def share_on(o, maps: torch.Tensor) -> torch.Tensor:
    """The share of each map's attention that falls on the patches of object o."""
    return (maps * patches_of(o)).flatten(1).sum(1) / maps.flatten(1).sum(1)


square, triangle = (next(o for o in scene.objects if o.shape == s) for s in ("square", "triangle"))
on_triangle, on_square = share_on(triangle, weights[picked]), share_on(square, weights[picked])
print(f"patches touched: triangle {patches_of(triangle).float().mean():.0%}, square {patches_of(square).float().mean():.0%}")
for q, t, sq in zip(picked, on_triangle, on_square):
    print(f"query {q:>2}: {t:.0%} of its attention on the triangle, {sq:.0%} on the square")
if runtime.MODE == "tiny":  # the sentences below describe the tiny model's maps
    claims.holds("every shown query puts more attention on the triangle than on the square",
                 bool((on_triangle > on_square).all()))
    claims.at_least("the smallest share of a shown query's attention on the triangle's patches",
                    on_triangle.min(), 2 * patches_of(triangle).float().mean())
    claims.at_least("the largest share of a shown query's attention on the triangle's patches", on_triangle.max(), 0.5)
    inside = patches_of(triangle).float().mean()
    claims.holds("per patch, every shown query looks at the triangle more than at the rest of the image",
                 bool((on_triangle / inside > (1 - on_triangle) / (1 - inside)).all()))

# %% [markdown]
# All four favour the triangle: 39% to 57% of their attention falls on the few patches it
# touches, a seventh of the image, so per patch they look there more than anywhere else. The
# three sharpest give most of the rest to the square, the fainter patch on their maps (query 3
# splits almost evenly); the fourth spreads it over the background. Nothing made the queries
# divide the objects between them; in this scene the sharpest ones all chose the small shape.
#
# ## 3.3 Stage 1: three objectives, three masks
#
# In stage 1 the Q-Former learns to pull out of the frozen image features what the caption
# talks about. The LLM is not involved yet. Queries and caption tokens go through the *same*
# transformer, and a self-attention mask decides who may see whom:
#
# - **ITC, image-text contrastive** (uni-modal mask): queries see only queries, text sees only
#   text, so neither can copy from the other. CLIP's InfoNCE of chapter 2 on a new similarity:
#   $s_{ij} = \max_q \cos(z_{iq}, t_j)$, the best-matching query of image $i$ for text $j$.
# - **ITM, image-text matching** (bidirectional mask): everyone sees everyone; a two-way
#   classifier says whether the pair belongs together, trained on hard negatives.
# - **ITG, image-grounded text generation** (multimodal causal mask): text token $t$ sees all
#   queries and the text tokens up to $t$; the queries see no text. To write the caption, the
#   text must get everything about the image *through the queries*.

# %%
Q_demo, L_demo = 3, 4
masks = {"ITC: uni-modal": qformer.itc_mask(Q_demo, L_demo), "ITM: bidirectional": qformer.itm_mask(Q_demo, L_demo),
         "ITG: multimodal causal": qformer.itg_mask(Q_demo, L_demo)}
labels = [f"q{i}" for i in range(Q_demo)] + [f"t{i}" for i in range(L_demo)]
fig, axes = plt.subplots(1, 3, figsize=(11, 3.6))
for ax, (name, mask) in zip(axes, masks.items()):
    ax.imshow(mask.numpy(), cmap="Greens", vmin=0, vmax=1.3)
    ax.set_xticks(range(Q_demo + L_demo), labels)
    ax.set_yticks(range(Q_demo + L_demo), labels)
    ax.axhline(Q_demo - 0.5, color="grey", lw=1)
    ax.axvline(Q_demo - 0.5, color="grey", lw=1)
    ax.set_title(name)
    ax.set_xlabel("key (may be attended to)")
axes[0].set_ylabel("query position (attends)")
fig.suptitle("Stage-1 self-attention masks: green = row may attend to column (3 queries, 4 text tokens)")
fig.tight_layout()

# %% [markdown]
# Read each matrix by rows. In ITC the two green blocks never touch: queries and text are
# encoded separately. In ITG the bottom-right block is a lower triangle (causal text) and the
# top-right block is empty (the queries must not peek at the caption they help to write).
#
# `QFormerForPretraining` puts one small head on the Q-Former per objective and computes all
# three losses on a batch of matching image-text pairs. Stage 1 trains on their sum; with random
# weights the ITM loss starts near $\ln 2$ and ITC near $\ln B$ (chance for a batch of B).

# %%
torch.manual_seed(0)
stage1 = QFormerForPretraining(QFormerConfig.named("tiny")).eval()
B, L = 4, 6
fake_images = torch.randn(B, 10, stage1.config.encoder_hidden_size)  # (B, N, E) frozen image features
text_ids = torch.randint(1, stage1.config.vocab_size, (B, L))  # (B, L) caption tokens
with torch.no_grad():
    losses = stage1.stage1_losses(fake_images, text_ids, generator=torch.Generator().manual_seed(0))
print({name: round(value.item(), 3) for name, value in losses.items()},
      f"chance: ln 2 = {np.log(2):.3f}, ln {B} = {np.log(B):.3f}")

# %% [markdown]
# That was one step with random weights. Stage 1 has also been run for real: it is the first
# training stage of the tiny BLIP-2 of section 3.7. For the run its Q-Former gets the parts only
# stage 1 needs: word embeddings and feed-forward layers for the text side, and the three heads
# (ITC's projections, ITM's classifier, ITG's word predictor). Stage 2 keeps the queries and the
# shared layers and drops the rest, as BLIP-2 does: its stage-2 Q-Former reads no text. The run
# trained on ShapesWorld training scenes, as the frozen image encoder sees them, paired with
# their captions. Then we measured **retrieval** on held-out scenes. Image to text:
# is the caption with the highest similarity $s_{ij}$ the image's own? Text to image: is the
# image ranked first for a caption the right one? Two scenes can share a caption, so a retrieved
# caption counts as right when its words equal the true caption. BLIP-2 retrieves in two steps,
# and we measured both: ITC ranks every caption, then ITM, which sees image and text together,
# re-scores the top of ITC's list. The run's record is kept beside the model:

# %%
tiny_folder = Path(zoo.path("blip2", mode="tiny"))  # the tiny model's folder, in every mode
tiny_qformer = json.loads((tiny_folder / "config.json").read_text())["qformer_config"]
stage1_record = json.loads((tiny_folder / "training.json").read_text())["stage 1"]
crossing = [i for i in range(tiny_qformer["num_hidden_layers"]) if i % tiny_qformer["cross_attention_frequency"] == 0]
print(f"the tiny Q-Former: {tiny_qformer['num_hidden_layers']} layers of width {tiny_qformer['hidden_size']},\n"
      f"cross-attention to the image in layers {crossing}")
curve = stage1_record["curve"]
fig, ax = plt.subplots(figsize=(7, 3))
for name in ("itc", "itm", "itg"):
    ax.plot([c["step"] for c in curve], [c[name] for c in curve], label=name.upper())
ax.axhline(np.log(2), color="grey", ls=":", lw=1, label="ln 2: ITM at chance")
ax.set(xlabel="step", ylabel="loss (one batch)", yscale="log",
       title=f"Stage 1 of the tiny BLIP-2: {stage1_record['steps']:,} steps on captions")
ax.legend()
plt.show()
before, after = stage1_record["before"], stage1_record["after"]
print(f"retrieval among 300 held-out scenes (the training script's check scenes),\n"
      f"{stage1_record['distinct_captions']} different captions: a random caption is right "
      f"{after['chance']:.1%} of the time")
for key in ("image->text ITC", "text->image ITC", "image->text ITC+ITM"):
    print(f"  {key:<22} before training {before[key]:6.1%}   after {after[key]:6.1%}")
print("(ITC+ITM: ITM re-scores ITC's top 8 captions by its match probability)")
rerun = json.loads((tiny_folder / "ablations.json").read_text())["stage 1, re-run"]
claims.holds("a re-run of stage 1 reproduces the record", all(rerun["after"][k] == v for k, v in after.items()))
print(f"re-scored as BLIP-2's code does, ITM's match logit + ITC's similarity: "
      f"{rerun['after']['image->text ITC+ITM sum']:.1%}\n(from a re-run of this stage that reproduced every number above)")
print(f"learned temperature {stage1_record['temperature']:.3f} (it starts at 0.07, and may not go below 0.001)")

# %% [markdown]
# All three losses fall, and retrieval goes from near chance to nearly every pair: the queries
# have learned to pull out of the image what its caption says. Re-ranking with ITM made things
# slightly worse here, and we ruled out two explanations. First, two scenes can share a caption,
# so a "hard negative" drawn by similarity would often be the very caption of the image, and ITM
# would be trained to call a true pair a mismatch. BLIP-2's code, in pre-training, masks only the
# pair itself (web captions rarely repeat); when it fine-tunes on COCO, where each image has five
# captions, it masks every pair of the same image. Our run masks every pair with the same caption
# (`matches` in `qformer.sample_hard_negatives`), and re-ranking is still no better. (ITC still
# counts two scenes with the same caption as each other's negatives, as BLIP-2's pre-training
# does; its COCO fine-tuning spreads the ITC target over such pairs instead.) Second, our ITM
# ranks by its own match probability, where BLIP-2's code adds ITM's match logit to ITC's
# similarity; scored that way re-ranking gains a little (95.3% against 94.7%), but still stays
# below ITC alone. Why ITM is the weaker judge here we have not found out. The shipped bridge of
# section 3.7 starts from the queries this run trained; section 3.7 also measures what starting
# there is worth.

# %% [markdown]
# ## 3.4 Stage 2: soft visual prompts
#
# After stage 1 the Q outputs carry what the image shows, but in the Q-Former's own space (768
# wide in BLIP-2), not in the LLM's embedding space (2,560 wide for OPT-2.7B). Stage 2 adds one
# **linear projection** $W \in \mathbb{R}^{D \times H}$ that maps each query output $z_q$ to a vector
# $p_q = z_q W + b$ of the LLM's width. These Q vectors take the place of Q tokens at the start of
# the prompt: **soft visual prompts**, vectors that spell no word of the vocabulary. The LLM stays
# frozen; the Q-Former and $W$ learn to write vectors it can read, with the LLM's ordinary
# next-token loss on the caption.
#
# We follow one image and one question through the tiny model, shape by shape, and check that
# our hand-built pipeline gives the logits of `model(...)`, up to float rounding.

# %%
question = "Question: What colour is the circle? Answer:"
inputs = processor(images=scene.render(), text=question, return_tensors="pt").to(device)
inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
ids = inputs["input_ids"]
with torch.no_grad():
    patches_out = model.vision_model(pixel_values=inputs["pixel_values"]).last_hidden_state  # (1, 1 + P, E)
    z = model.qformer(query_embeds=model.query_tokens, encoder_hidden_states=patches_out).last_hidden_state  # (1, Q, D)
    p = model.language_projection(z.to(dtype))  # (1, Q, H): the soft visual prompts (the Q-Former ran in float32)
    embeds = model.get_input_embeddings()(ids)  # (1, Q + L, H): the <image> slots hold a placeholder embedding
    embeds = embeds.masked_scatter((ids == config.image_token_index).unsqueeze(-1), p)
    by_hand = model.language_model(inputs_embeds=embeds, attention_mask=inputs["attention_mask"]).logits
    by_model = model(**inputs).logits
Q = config.num_query_tokens
print(f"pixels {tuple(inputs['pixel_values'].shape)} -> image features {tuple(patches_out.shape)} "
      f"-> query outputs {tuple(z.shape)} -> soft prompts {tuple(p.shape)}")
print(f"input ids {tuple(ids.shape)}: {Q} <image> slots + {ids.shape[1] - Q} prompt tokens -> logits {tuple(by_hand.shape)}")
claims.close("the stage-2 pipeline by hand vs model(...) (logits)", by_hand, by_model, atol=claims.rounding(dtype))
print(f"by hand and model(...) agree to within {claims.rounding(dtype):g}")

# %% [markdown]
# The processor wrote Q `<image>` placeholders in front of the prompt; the model swapped in the
# soft prompts at exactly those positions. BLIP-2 works the same way with an encoder-decoder LLM
# (Flan-T5): there the soft prompts go to the encoder and the answer comes from the decoder.
#
# ## 3.5 What the real model costs
#
# `Salesforce/blip2-opt-2.7b` is too big to download here, but its architecture is not: we build
# it from its configuration on PyTorch's `meta` device, which allocates no memory, and count.

# %%
big_config = blip2.blip2_opt_2_7b_config()
with torch.device("meta"):
    big = Blip2ForConditionalGeneration(big_config)
big_parts = {"EVA ViT-g image encoder": [big.vision_model],
             "Q-Former + queries + projection": [big.qformer, big.language_projection],
             "OPT-2.7B language model": [big.language_model]}
big_counts = {name: sum(p.numel() for m in mods for p in m.parameters()) for name, mods in big_parts.items()}
big_counts["Q-Former + queries + projection"] += big.query_tokens.numel()
total = sum(big_counts.values())
for name, count in big_counts.items():
    print(f"{name:<34}{count / 1e6:>9,.0f} M  ({count / total:.1%})")
gib = total * 2 / 2**30  # float16: 2 bytes per parameter
print(f"{'total':<34}{total / 1e9:>9.2f} B parameters; float16 weights {gib:.1f} GiB of a T4's 15 GB")

# %% [markdown]
# The trainable bridge is the small line in the middle -- a few percent of the whole. In float16
# the weights take the memory printed on the last line, which leaves a Colab T4 room for
# activations, so full mode loads the whole model on the GPU.
#
# ## 3.6 Preprocessing: square images and Ġ tokens
#
# The processor resizes every image to the encoder's square input without keeping the aspect
# ratio (224 x 224 for BLIP-2, 64 x 64 for the tiny model). A wide photo is squashed: the
# rocket below was 640 x 427 pixels.

# %%
rocket = sample_image("rocket")
squashed = processor(images=rocket, return_tensors="pt")["pixel_values"][0].float()  # (3, S, S) in [-1, 1]
squashed_image = ((squashed.permute(1, 2, 0) + 1) / 2).clamp(0, 1).cpu().numpy()
print(f"before: {rocket.size[0]} x {rocket.size[1]} pixels (aspect {rocket.size[0] / rocket.size[1]:.2f}); "
      f"after: {tuple(squashed.shape)}")
fig, axes = plt.subplots(1, 2, figsize=(8, 3.2), gridspec_kw={"width_ratios": [rocket.size[0] / rocket.size[1], 1]})
axes[0].imshow(rocket)
axes[0].set_title(f"original, {rocket.size[0]} x {rocket.size[1]}")
axes[1].imshow(squashed_image)
axes[1].set_title(f"what the encoder sees, {squashed.shape[2]} x {squashed.shape[1]}")
for ax in axes:
    ax.axis("off")
fig.tight_layout()

# %% [markdown]
# Look at the rocket: squashed to a square it becomes fatter. Objects in wide or tall photos
# change proportions before the model ever sees them.
#
# The text side uses a GPT-2 style byte-level BPE, as OPT does. Bytes are mapped to printable
# characters, and the space (code point 32) becomes `Ġ` (code point 32 + 256 = 288), so a token
# that starts a new word carries a leading `Ġ`. The tiny model's tokenizer was trained the same
# way on ShapesWorld text (OPT's own tokenizer in full mode). The processor also puts the Q
# `<image>` placeholders and the start token in front: `<s>` in the tiny vocabulary, `</s>` in
# OPT's, which begins every sequence with its end-of-text token.

# %%
text = "Is the purple triangle larger than the circle?"
token_ids = processor(images=scene.render(), text=text, return_tensors="pt")["input_ids"][0]
tokens = processor.tokenizer.convert_ids_to_tokens(token_ids)
print(f"space -> {chr(32 + 256)!r} (code point {32 + 256})")
print(f"{len(tokens)} tokens: {tokens[Q - 2:Q]} ... then {tokens[Q:]}")
print("with _ for the word starts:", [t.replace("Ġ", "_") for t in tokens[Q + 1:]])

# %% [markdown]
# Words the tokenizer saw often are one token; rarer words (here "larger", which ShapesWorld never
# uses) fall apart into pieces, and the `Ġ` still tells where each word begins.
#
# ## 3.7 A mini BLIP-2 that works offline
#
# The tiny model is a real `Blip2ForConditionalGeneration`, trained on a CPU in four steps:
#
# 1. **A frozen image encoder.** The tiny CLIP's image tower from chapter 2, copied into BLIP's
#    ViT layout, learns a little more about where things are (chapter 4's patch lesson), then freezes.
# 2. **A frozen LLM.** A 6-block Llama-style language model learns ShapesWorld from text
#    alone. A real LLM has read the web; ours has read, before every caption or question, a
#    32-word *note* of the scene, the same fixed slots each time, and was shown where in the note
#    each answer lies (more on that below). Then it freezes.
# 3. **Stage 1.** The query tokens and a 4-layer Q-Former learn from image-caption pairs under
#    ITC, ITM and ITG, exactly as in section 3.3 (the record shown there is this run's).
# 4. **The bridge (stage 2).** Starting from what stage 1 trained, the query tokens, the
#    Q-Former and the projection train with the LLM's loss on captions and questions, the soft
#    prompts sitting where the note was. A second loss pulls the soft prompt of query $k$
#    towards the LLM's embedding of note word $k$: the note is the "language the LLM already
#    speaks", made explicit.
#
# (Why Llama-style blocks instead of OPT's? In our trials an OPT-style LM, with its learned
# absolute positions, did not learn to tie a colour to its shape in the note; with the rotary
# positions of Llama blocks it did. InstructBLIP, too, swapped OPT for Vicuna, a Llama model.)
# Here is a scene's note, and what each step reached, as recorded next to the model's weights:

# %%
print(f"scene: {scene.caption}\nnote:  {' '.join(blip2.scene_notes(scene))}")
training = json.loads((Path(zoo.path("blip2", mode="tiny")) / "training.json").read_text())
lesson, lm, final, seconds = training["patch lesson"], training["text"], training["qa"], training["timings (s)"]
kinds = ("count", "colour", "shape", "size", "exists", "relation")  # the LM's record holds its settings too
print(f"1. image encoder: the patch lesson reads pair {lesson['pair']:.1%}, size {lesson['size']:.1%}, "
      f"relation {lesson['relation']:.1%} of held-out patches ({seconds['patch lesson'] / 60:.0f} min)")
print(f"2. frozen LM, {lm['steps']:,} steps, reading true notes: every kind of question at least "
      f"{min(lm[k] for k in kinds):.1%}, captions {lm['caption']:.1%} ({seconds['text pretraining'] / 60:.0f} min)")
retrieved = training["stage 1"]["after"]
print(f"3. stage 1, {training['stage 1']['steps']:,} steps on captions: image-to-text retrieval "
      f"{retrieved['image->text ITC']:.1%} of held-out scenes ({seconds['stage 1'] / 60:.0f} min)")
print(f"4. bridge, {training['bridge steps']:,} steps: {training['trainable']:,} trainable parameters of "
      f"{training['total']:,} ({seconds['bridge'] / 60:.0f} min)")
print(f"the finished model, through generate: {final['all']:.1%} of questions right (weakest kind: "
      f"{min(kinds, key=final.get)}, {min(final[k] for k in kinds):.1%}); {training['caption words']:.1%} of "
      "caption content words")

# %% [markdown]
# The note is four small tables. First the objects left to right, as a caption reads them
# (`shape size colour`, the relation word between neighbours, `none` where there is no object);
# then one group per shape (`circle none none` when there is no circle); then the shape of each
# colour, in the order red, green, blue, yellow, purple; then, per ordered pair of shapes, where
# the first lies relative to the second. Together they give every question's answer a fixed
# slot. The first line is what the frozen image encoder knows per patch. The second is the frozen
# LM reading *true* notes of held-out scenes (teacher-forced, so each answer word is predicted
# from the correct words before it): the ceiling for what the bridge can reach. The third is
# stage 1 (section 3.3): how often ITC ranks an image's own caption first among 300 held-out
# scenes. The fourth is the size of the bridge that stage 2 trains, starting from stage 1's
# queries. The last line is the finished model reading soft prompts instead, through `generate`.
#
# Does the bridge write notes? It was trained to: the second loss of step 4 pulls each soft
# prompt towards the embedding of its note word. (Real BLIP-2 has no such target. Its soft prompts
# are read by the LLM as vectors; nothing draws them towards any word, so their nearest words are
# not expected to mean anything.) For each of the 32
# soft prompts we look up the vocabulary word whose embedding is closest (cosine similarity) and
# compare it with the true note, for three held-out scenes and then for all 60.

# %%
held_out = ShapesWorld(60, seed=23, split="test").scenes
with torch.no_grad():
    pv = processor(images=[s.render() for s in held_out], return_tensors="pt")["pixel_values"].to(device, dtype)
    nearest = blip2.nearest_words(model, processor.tokenizer, blip2.soft_prompts(model, pv))
same_word = [[a == b for a, b in zip(words, blip2.scene_notes(s))] for s, words in zip(held_out, nearest)]
for s, words, same in zip(held_out[:3], nearest, same_word):
    print(f"{s.caption}\n  soft prompts read as: {' '.join(words)}\n  {sum(same)}/{len(same)} slots equal the true note")
note_words = float(np.mean(same_word))
print(f"all {len(held_out)} held-out scenes: {note_words:.0%} of the slots read as their note word")

# %% [markdown]
# Now the model proper, through the processor and `generate`, exactly as on Colab: captions for
# held-out scenes it never saw in training.

# %%
if runtime.MODE == "tiny":
    shown = held_out[:8]
    got = blip2.captions(model, processor, [s.render() for s in shown])
    fig = plotting.show_images([s.render() for s in shown], [f"model: {g}" for g in got], columns=4, size=2.6,
                               title="Tiny BLIP-2 captions on held-out scenes")
    for s, g in zip(shown[:4], got[:4]):
        print(f"truth: {s.caption!r}\nmodel: {g!r}")

# %% [markdown]
# We score captions by their content words (colours, shapes, sizes, relations) compared position
# by position with the true caption, and questions by exact match of the answer word, on all 60
# held-out scenes. The chapter's targets are 80% for both.

# %%
if runtime.MODE == "tiny":
    start = time.perf_counter()
    caption_scores = blip2.caption_accuracy(model, processor, held_out)
    qa_scores = blip2.qa_accuracy(model, processor, held_out)
    claims.at_least("the share of caption content words right", caption_scores["words"], 0.80)
    claims.at_least("the share of questions answered right", qa_scores["all"], 0.80)
    claims.at_least("the weakest kind of question's accuracy", min(qa_scores.values()), 0.90)
    claims.holds("captions score below questions", caption_scores["words"] < qa_scores["all"])
    print(f"captions: content words {caption_scores['words']:.1%}, exactly right {caption_scores['exact']:.1%}")
    print(f"questions: {qa_scores['all']:.1%} right; by kind "
          + ", ".join(f"{k} {v:.0%}" for k, v in qa_scores.items() if k != "all"))
    print(f"({sum(len(s.qa) for s in held_out)} questions and {len(held_out)} captions in "
          f"{time.perf_counter() - start:.0f} s)")

# %% [markdown]
# Both pass the 80% target. Captions are the weaker of the two: a caption is right only if every
# slot of the left-to-right table is, and a three-object scene has many slots. In the fourth
# scene above the model gets the third object right and mixes up the first two.
#
# ### What the tiny recipe adds, measured
#
# The recipe departs from BLIP-2's in several places. To see what each departure buys, the bridge
# was retrained with one thing changed at a time, from the same frozen encoder and LM, for 1,000
# steps each (a quarter of the shipped model's budget, so that each run takes under an hour on a
# CPU; one run each, so differences of a few points are within the noise), and scored like the
# shipped model on answers and captions through `generate` on the 60 held-out scenes. These short
# runs were made before stage 1 joined the recipe: *no stage 1 (1,000)* is the reference,
# *stage 1 first* adds stage 1 to it (the shipped recipe at a quarter of the budget, except
# that its stage 1 still allowed same-caption ITM negatives), and *no note pull* and *captions
# only* each change one other thing. The line *no stage 1 (4,000)* is the first edition's shipped bridge: the full
# budget without stage 1. The last column, *notes*, is the share of soft prompts that read as
# their note word; for the other bridges it was measured on the training script's 300 check
# scenes. The LM was retrained once too, without the "look" loss explained below, and scored
# reading true notes. Last, stage 1 itself was run with and without one change of ours to ITM.

# %%
def leftmost_answer(scene, question):
    """Answer as if the object asked about were always the leftmost one."""
    first = scene.objects[0]
    return {"colour": first.colour, "size": first.size, "shape": first.shape}.get(question.kind)


def scores_row(qa, captions, notes):
    return (f"{qa['all']:6.1%} {qa['colour']:7.1%} {qa['shape']:6.1%} {captions:9.1%} "
            + (f"{notes:6.0%}" if notes is not None else f"{'--':>6}"))


blip2_ablations = json.loads((Path(zoo.path("blip2", mode="tiny")) / "ablations.json").read_text())
print(f"{'bridge (steps)':<26}{'QA':>6} {'colour':>7} {'shape':>6} {'captions':>9} {'notes':>6}")
shipped_notes = note_words if runtime.MODE == "tiny" else None  # full mode measured OPT-2.7B's prompts above
print(f"{'shipped, stage 1 (' + format(training['bridge steps'], ',') + ')':<26}"
      + scores_row(training["qa"], training["caption words"], shipped_notes))
labels = {"previous edition (no stage 1)": "no stage 1", "no stage 1": "no stage 1"}
for name in ("previous edition (no stage 1)", "no stage 1", "stage 1 first", "no note pull", "captions only"):
    entry = blip2_ablations[name]
    print(f"{labels.get(name, name) + ' (' + format(entry['bridge steps'], ',') + ')':<26}"
          + scores_row(entry["qa"], entry["caption words"], entry["note words"]))
previous = blip2_ablations["previous edition (no stage 1)"]
print(f"captions exactly right: shipped {training['caption exact']:.1%}, no stage 1 (4,000) "
      f"{previous['caption exact']:.1%}")
without_look = blip2_ablations["LM without the look loss"]["notes probe"]
print(f"\nthe frozen LM on true notes: with the look loss ({training['text']['steps']:,} steps), "
      f"without ({without_look['steps']:,})")
for kind in ("colour", "size", "shape"):
    asked = [(s, q) for s in held_out for q in s.questions if q.kind == kind]
    leftmost = np.mean([leftmost_answer(s, q) == q.answer for s, q in asked])
    print(f"  {kind:>6}: with {training['text'][kind]:4.0%}, without {without_look[kind]:4.0%}; "
          f"always the leftmost object {leftmost:4.0%}")
masked, unmasked = training["stage 1"], blip2_ablations["stage 1 first"]["stage 1"]
late_itm = lambda run: np.mean([c["itm"] for c in run["curve"][-5:]])  # noqa: E731  (logged every 50 steps)
re_ranked = [run["after"]["image->text ITC+ITM"] for run in (masked, unmasked)]
print(f"\n{'stage 1 (' + format(masked['steps'], ',') + ' steps), same-caption ITM negatives:':<52}"
      f"{'excluded':>9} {'allowed':>8}")
print(f"{'  ITM loss, mean of the last 5 logged batches':<52}{late_itm(masked):9.3f} {late_itm(unmasked):8.3f}")
print(f"{'  images whose caption ranks first after ITM':<52}{re_ranked[0]:9.1%} {re_ranked[1]:8.1%}")

# %% [markdown]
# ```{admonition} How this differs from BLIP-2, and why
# :class: note
# - **A frozen LLM that has read notes, not the web.** BLIP-2's OPT arrives knowing what "red" and
#   "circle" mean. Our LM learned ShapesWorld from text that always began with a 32-word note of
#   the scene; the bridge's job is to write that note from pixels. Not ablated: without it there
#   is no reader to bridge to.
# - **Where to look, taught.** A second loss in the LM's pretraining puts one block's attention on
#   the note slot that holds the answer. Without it, the LM reading *true* notes answers 59% of the
#   colour, 77% of the size and 60% of the shape questions after 1,000 steps, against 100% for the
#   shipped LM after 3,000 (teacher-forced, on the training script's 300 check scenes). Always
#   naming the leftmost object scores 52%, 70% and 52% on this chapter's 60 held-out scenes (the
#   last lines of the table), so without the loss the LM does only a little better than a
#   leftmost-object habit. The aside below tells how the loss was found. The attention map further
#   down shows a habit we trained in, not a discovery about BLIP-2.
# - **Soft prompts pulled onto note words.** BLIP-2's stage 2 has only the LLM's loss. Without the
#   pull, the 1,000-step bridge answers *more* questions than the reference *no stage 1 (1,000)*
#   (60.0% against 53.0%), and only 22% of its soft prompts read as their note word (reference:
#   68%). So the pull is what makes the soft prompts legible, which the display above and exercise 3.5 rely
#   on; at 1,000 steps, in one run each, it did not help the answers. At longer budgets it may: an
#   earlier trial with a weaker pull and a longer run answered far fewer questions.
# - **Questions in stage 2.** BLIP-2's pretraining stage 2 sees captions only, and the "Question:
#   ... Answer:" prompt is asked zero-shot (its fine-tuned VQA model does train on questions, with
#   the question fed to the Q-Former too). Trained on captions alone, but still with the note pull,
#   which names every fact a question asks about, the 1,000-step bridge answers as many questions
#   as the reference (53.0%) and writes better captions (86.2% of content words against 72.9%, having
#   trained on nothing else). With the pull standing in for the questions, the questions
#   in the recipe buy nothing we can measure at this budget. Whether a bridge would learn
#   to answer from captions with no pull at all, as BLIP-2's does, was not run.
# - **Stage 1 first, as in BLIP-2; here it mostly buys speed.** The shipped bridge starts from
#   the queries of section 3.3's stage-1 run. The first edition's bridge skipped stage 1 and
#   trained the same 4,000 steps from the same frozen encoder and LM (the line *no stage 1
#   (4,000)*): it answers 98.8% of the questions against 99.1%; both get 93.1% of caption words
#   right, and 86.7% against 81.7% of captions exactly right; 98% of note words either way
#   (measured on the 300 check scenes for the old bridge, on the 60 held-out scenes for the
#   shipped one). Two questions of 673 and three captions of 60 apart: within the noise, both
#   bridges reach what the frozen LM can read. At a quarter of the budget the head start shows:
#   after 1,000 bridge steps, *stage 1 first* against *no stage 1*: 64.8% against 53.0% of the
#   questions, 80.1% against 72.9% of caption words and 80% against 68% of note words. That run
#   gave the Q-Former 1,000 more steps (stage 1's), so part of the gain may be training time
#   alone; a 2,000-step run without stage 1 would separate the two and was not made. Its stage 1
#   also still allowed same-caption ITM negatives (next item). The BLIP-2 paper reports a larger
#   effect at its scale (its Figure 5): without stage 1 its zero-shot VQA is far lower.
# - **Same-caption pairs are never ITM negatives.** In pre-training, BLIP-2 masks only the pair
#   itself when it draws a hard negative (and every pair of the same image when it fine-tunes on
#   COCO); ShapesWorld repeats captions (229 different ones among the 300 check scenes), so we mask
#   every pair with the same caption (section 3.3). Stage 1 run both ways (the last lines of the
#   table; the run that allowed them is the stage 1 of *stage 1 first*): ITM's loss, averaged over
#   its last five logged batches, is 0.077 with such pairs excluded and 0.266 with them allowed,
#   since it no longer has to call true pairs mismatches, but re-ranked retrieval barely moves
#   (94.7% against 94.0% of the images get their caption first).
# - **Llama-style blocks in the LM instead of OPT's.** In trials before this edition, an OPT-style
#   LM with learned absolute positions did not learn to tie a colour to its shape in the note, and
#   the rotary positions of Llama blocks did. That trial was not kept, so there is no number for
#   it.
# - **Size.** 2.5M parameters in all (the record above), against 3.7B in BLIP-2 OPT-2.7B (section
#   3.5), and 64-pixel pictures. Not ablated: it is what lets the model train in an hour on a CPU.
# - **The same as BLIP-2:** frozen image encoder and LLM; 32 learned queries; cross-attention in
#   every other Q-Former layer; one linear projection to the LLM's width; soft prompts in front of
#   the text; the "Question: ... Answer:" prompt; the three stage-1 objectives of section 3.3,
#   trained before the bridge.
# ```
#
# ```{admonition} The look loss: how it was found
# :class: dropdown
# A tiny LM trained for minutes is not an LLM that has read the web, and the hard part for it was
# not reading the note but *finding* the word a question asks about. Without help it learned to
# copy the note in order, which is all a caption needs, and scored about what always naming the
# leftmost object scores (in those trials colour 60%, size 81%, shape 61%; the retrained LM of the
# table is a few points above that). It stayed there whatever we changed:
# one kind of question at a time, reworded questions, 3 or 8 heads, an OPT-style LM, learning
# rates from 3e-4 to 2e-3. What worked was a hint during its text pretraining: besides the loss on
# the answer, a second loss $-\log a$, where $a$ is the attention of one block, averaged over its
# heads, at the position that predicts the answer, on the note slot holding it. `blip2.answer_slot` names
# that slot: for "What colour is the circle?" it is the circle's colour in the by-shape table. Once
# the heads looked in the right place, the answers followed.
# ```
#
# The heads were taught to look while reading true notes. The finished model reads soft prompts
# instead, so a fair question is whether the heads still look at the slot where the answer should
# be, now that the slots hold soft prompts.
# `blip2.answer_attention` runs the frozen LM with its attention weights switched on and returns
# what the taught block pays to each of the 32 soft prompts while it is about to answer.

# %%
look_layer, look_head = training["text"]["look layer"], training["text"]["look head"]
if runtime.MODE == "tiny":
    hits, mass = [], []
    for s in held_out:
        for q, _ in s.qa:
            slot = blip2.answer_slot(q)
            if slot is not None:
                weights = blip2.answer_attention(model, processor, s.render(), q, look_layer, look_head)
                hits.append(int(weights.argmax()) == slot)
                mass.append(weights[slot].item())
    claims.at_least("the share of questions whose answer slot gets the most attention", np.mean(hits), 0.95)
    print(f"block {look_layer}, heads {'averaged' if look_head < 0 else look_head}: on {len(hits)} held-out questions "
          f"the answer's slot gets the most attention {np.mean(hits):.0%} of the time, "
          f"{np.mean(mass):.0%} of the attention on average")
    scene = next(s for s in held_out if len(s.objects) == 3)
    kinds = ("colour", "size", "shape", "exists", "relation")
    asked = [next(q.text for q in scene.questions if q.kind == k) for k in kinds]
    matrix = np.stack([blip2.answer_attention(model, processor, scene.render(), q, look_layer, look_head).numpy()
                       for q in asked])
    fig, ax = plt.subplots(figsize=(13, 3.4))
    plotting.heatmap(matrix, asked, blip2.scene_notes(scene), f"Block {look_layer} while answering, over the "
                     "soft prompts (labelled with the true note)", fmt="{:.1f}", ax=ax)
    plt.setp(ax.get_xticklabels(), rotation=90)
    print("scene:", scene.caption)
    for q, answer in zip(asked, blip2.answers(model, processor, [scene.render()] * len(asked), asked)):
        print(f"{q:<46} -> {answer:<8} slot {blip2.answer_slot(q)}")

# %% [markdown]
# Each row is one question; each column one soft prompt, labelled with the word the true note has
# in that slot. The attention sits on the slot that answers the question: the circle's colour,
# the shape of the named colour, the pair's relation. So the heads still look where the answer
# should be. On its own that does not show the answer is there: the heads may find the slot by its
# position alone. The evidence that the bridge put each fact in its slot is the nearest-word
# display above, which the note pull trained for, and the answers; exercise 3.5 tests it directly.
# None of this is new about attention in BLIP-2: we put it there. What carries over is BLIP-2's
# design lesson in miniature. With a frozen LLM, the LLM's abilities are the ceiling of the whole
# system. The bridge only has to deliver what the LLM can already read, and it cannot teach the
# LLM to read.
#
# Does the model look at the image at all? Ask the same questions about a blank picture: what
# it still gets right is what the language model guesses from the question alone.

# %%
if runtime.MODE == "tiny":
    blank = Image.new("RGB", (64, 64), BACKGROUND)
    items = [q for s in held_out for q in s.questions]
    blind = blip2.answers(model, processor, [blank] * len(items), [q.text for q in items])
    by_kind = {}
    for q, g in zip(items, blind):
        by_kind.setdefault(q.kind, []).append(g == q.answer)
    for kind, chance in (("size", 1 / 2), ("exists", 1 / 2), ("colour", 1 / 5), ("relation", 1 / 4)):
        claims.between(f"on a blank image, the accuracy on {kind} questions", np.mean(by_kind[kind]),
                       chance / 2, chance * 3 / 2, hint=f"The text says it is near chance ({chance:.0%}).")
    print(f"blank image: {np.mean([g == q.answer for g, q in zip(blind, items)]):.1%} right; by kind "
          + ", ".join(f"{k} {np.mean(v):.0%}" for k, v in by_kind.items()))

# %% [markdown]
# On a blank picture the model is reduced to guessing: size and yes/no questions come out about
# half right, colours and relations about as often as picking one of five colours or four
# relations at random. With the real image every kind is at 90% or better, so what the answers
# know comes from the image, through the bridge.
#
# ## 3.8 Chat with memory
#
# BLIP-2's OPT models have no chat template: they were trained on captions, and "Question: ...
# Answer:" is the prompt the BLIP-2 paper uses to ask them questions zero-shot. A conversation is
# made by writing the earlier turns into the prompt, oldest first, each as "Question: {q} Answer:
# {a}." (`utils/chat.py`).

# %%
history = [("How many shapes are there?", "3"), ("What colour is the circle?", "red")]
print(chat.build_prompt(history, "Is there a blue square?"))

# %% [markdown]
# The prompt grows with every turn, but the context does not: the tiny LM has 128 positions, of
# which the image takes 32 and the answer needs a few. When the turns no longer fit,
# `fit_history` drops the oldest ones first. `Blip2Chat.respond(history, question)` is a plain
# function of its arguments: it fits the history, builds the prompt, runs the processor and
# `generate`, and reports in `last_dropped` how many turns it had to leave out.

# %%
chat_scene = make_scene(4, seed=23, split="test")
bot = chat.Blip2Chat(model, processor, chat_scene.render(), max_new_tokens=4)
print(f"scene: {chat_scene.caption}")
print(f"context {bot.context_length} - {config.num_query_tokens} image tokens - {bot.max_new_tokens} new tokens "
      f"= {bot.token_budget} tokens for the prompt")
history = []
for question, truth in chat_scene.qa[:9]:
    answer = bot.respond(history, question)
    note = f"   [the oldest {bot.last_dropped} turn(s) left out]" if bot.last_dropped else ""
    print(f"Q: {question:<46} A: {answer:<8} (truth: {truth}){note}")
    history.append((question, answer))
print(f"empty message -> {bot.respond(history, '   ')!r}")

# %% [markdown]
# The later questions no longer fit with the whole history, so the oldest turns go; an empty
# message gets a polite reply and never reaches the model. But look at the answers: several are
# wrong, from a model that answers 99.1% of single questions right. Is it the history? We ask the
# first nine questions of 30 held-out scenes three ways: alone, after the earlier turns with the
# model's own answers (as the chat does), and after the earlier turns with the true answers.

# %% tags=["nbval-ignore-output"]
if runtime.MODE == "tiny":  # (an experiment on the tiny model; full mode skips it)
    from collections import defaultdict

    def right(answer: str, truth: str) -> bool:
        return (answer.split() or [""])[0].strip(".,") == truth

    alone, own, true = [], defaultdict(list), defaultdict(list)  # by the number of earlier turns in the prompt
    for s in ShapesWorld(30, seed=27, split="test").scenes:
        probe = chat.Blip2Chat(model, processor, s.render(), max_new_tokens=4)
        own_history, true_history = [], []
        for question, truth in s.qa[:9]:
            answer = probe.respond(own_history, question)
            own[min(len(own_history) - probe.last_dropped, 3)].append(right(answer, truth))
            true[min(len(true_history) - probe.last_dropped, 3)].append(right(probe.respond(true_history, question), truth))
            alone.append(right(probe.respond([], question), truth))
            own_history.append((question, answer))
            true_history.append((question, truth))
    few = lambda d: np.mean(d[1] + d[2])  # noqa: E731  (one or two earlier turns, as in the training chats)
    print(f"alone: {np.mean(alone):.0%} of {len(alone)} questions right")
    print(f"after 1-2 earlier turns: {few(own):.0%} (own answers), {few(true):.0%} (true answers)")
    print(f"after 3 or more: {np.mean(own[3]):.0%} (own answers), {np.mean(true[3]):.0%} (true answers)")
    claims.at_least("the accuracy on questions asked alone", np.mean(alone), 0.95)
    claims.at_most("the accuracy after 1-2 earlier turns (own answers)", few(own), 0.85)
    claims.at_most("the accuracy after 3 or more earlier turns (own answers)", np.mean(own[3]), 0.6)
    claims.at_most("the gap between own and true answers in the history", abs(few(own) - few(true)), 0.1)

# %% [markdown]
# The history is the trouble. Asked alone, nearly every question is answered right; after one or
# two earlier turns (the tiny model's training data holds some chats of two or three turns) about
# seven in ten; after three or more, longer than any training chat, fewer than half. With the
# true answers in the history the numbers barely move, so the errors are not the model repeating
# its own mistakes: the earlier turns themselves pull its answers astray. (The real BLIP-2 was
# never trained on chats at all; the course's chat is a way to hold a conversation with it, not
# something it was built for.)
#
# The widget is a thin shell over the same `respond`: an image, a transcript, a text box, **Send**
# and **Reset**. In a live notebook, type into the box and press Enter (or Send); while the model
# answers, the box and the buttons are disabled and Send reads "Thinking...", and an error shows
# in the transcript. Here the cell drives it through its buttons, so that the transcript appears
# on this page.

# %%
widget = chat.ChatWidget(bot)
for message in ["What colour is the circle?", "", "Is the circle small or large?"]:
    widget.text.value = message
    widget.send_button.click()
print("\n".join(line.replace("<b>", "").replace("</b>", "").replace("<i>", "").replace("</i>", "")
                for line in widget.lines))
widget

# %% [markdown]
# ## 3.9 Other bridges: InstructBLIP and Flamingo
#
# ### InstructBLIP: the instruction enters the Q-Former
#
# BLIP-2's queries read the image the same way whatever will be asked: the question reaches only
# the LLM, after the Q-Former has already chosen its 32 summaries. InstructBLIP (Dai et al., 2023)
# also feeds the instruction's tokens into the Q-Former, beside the queries, in its
# self-attention layers (every token sees every token, the ITM pattern of stage 1); the text
# tokens never cross-attend to the image, they steer the queries that do. Only the Q query outputs
# go on to the LLM, which reads the instruction as text too. It starts from a pretrained BLIP-2
# (whose Q-Former kept the text weights stage 1 trained) and instruction-tunes only the Q-Former
# and its projection, with the image encoder and the LLM frozen, on 13 of 26 datasets, the other
# 13 held out for zero-shot evaluation. The instruction is tokenised twice: by the Q-Former's own
# BERT tokenizer and by the LLM's. `qformer.InstructionQFormer` is the Q-Former of section 3.2 with
# an embedding for the instruction. Below, with random weights and the tiny LM's tokenizer standing
# in for BERT's, it equals transformers' `InstructBlipQFormerModel` on the same weights; and its
# queries change with the instruction while the same Q-Former without an instruction (BLIP-2's use)
# gives the same queries every time:

# %%
from transformers import InstructBlipQFormerConfig, InstructBlipQFormerModel

torch.manual_seed(0)
iq_config = InstructBlipQFormerConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                                      encoder_hidden_size=model.config.vision_config.hidden_size,
                                      vocab_size=len(processor.tokenizer), cross_attention_frequency=1)
reference = InstructBlipQFormerModel(iq_config).eval()  # random weights: the point is the wiring
instruct_qformer = qformer.InstructionQFormer.from_transformers(reference).eval()
with torch.no_grad():
    pixels = processor(images=chat_scene.render(), return_tensors="pt")["pixel_values"].to(model.device, model.dtype)
    patches = model.vision_model(pixel_values=pixels).last_hidden_state.float().cpu()  # (1, 1 + N, E)
    outputs, blind = {}, []
    for instruction in ("What colour is the circle?", "How many shapes are there?"):
        qformer_ids = processor.tokenizer(instruction, return_tensors="pt")["input_ids"]  # (1, L)
        outputs[instruction] = instruct_qformer(patches, qformer_ids)  # (1, Q, D)
        Q = outputs[instruction].shape[1]
        theirs = reference(input_ids=qformer_ids, query_embeds=instruct_qformer.qformer.query_tokens,
                           encoder_hidden_states=patches).last_hidden_state[:, :Q]
        claims.close(f"InstructionQFormer vs InstructBlipQFormerModel ({instruction})", outputs[instruction], theirs,
                     atol=1e-5)
        blind.append(instruct_qformer.qformer(None, patches))  # (1, Q, D): the queries alone, as BLIP-2 runs them
first, second = outputs.values()
change = ((first - second).norm() / first.norm()).item()
print(f"query outputs {tuple(first.shape)} (B, Q, D), equal to transformers' within 1e-5 for both instructions")
claims.at_least("the relative change of the queries between the two instructions", change, 1e-3)
print(f"with the instruction, the queries change between the two questions (relative change above 0.1%, small "
      f"with random weights: using it is what instruction tuning learns); without it they are identical: "
      f"{torch.equal(blind[0], blind[1])}")

# %% [markdown]
# ### Flamingo: the text reads the image inside the LM
#
# BLIP-2 puts the image *in front of* the prompt. Flamingo (DeepMind, 2022) lets the text read
# the image *inside* the frozen LM instead, with two new pieces (`utils/bridges.py`):
#
# - a **gated cross-attention block** before each frozen LM layer: the text tokens cross-attend
#   to visual tokens, and the result is added through $\tanh(\alpha)$ with $\alpha = 0$ at the
#   start;
# - a **Perceiver Resampler** that turns any number of visual tokens into a fixed number of
#   latents, which is what the gated blocks read.
#
# With $\tanh(0) = 0$, a freshly inserted block is the identity: on day one the frozen LM
# computes exactly what it computed before.

# %%
torch.manual_seed(0)
block = bridges.GatedCrossAttentionBlock(dim=32, visual_dim=24, num_heads=4).eval()
text_states = torch.randn(2, 7, 32)  # (B, L, D): hidden states of the frozen LM
visual = torch.randn(2, 16, 24)  # (B, N, Dv): visual tokens
with torch.no_grad():
    closed = block(text_states, visual)
    block.attn_gate.fill_(0.5)
    block.ff_gate.fill_(0.5)
    opened = block(text_states, visual)
print(f"gates at 0: largest change of the LM's hidden states {(closed - text_states).abs().max().item():.1e}")
print(f"gates at tanh(0.5) = {np.tanh(0.5):.3f}: largest change {(opened - text_states).abs().max().item():.3f}")

# %% [markdown]
# The Perceiver Resampler's R latents attend to the N inputs (and to themselves), never the
# inputs to each other, so its attention costs $2 R (N + R) D$ multiply-adds per layer: linear in
# N, where self-attention over the inputs would cost $2 N^2 D$. We time it on growing inputs.

# %%
resampler = bridges.PerceiverResampler(dim=64, num_latents=16, depth=2, num_heads=4, input_dim=48).eval()
lengths = [64, 256, 1024, 4096]
with torch.no_grad():
    rows = bridges.benchmark_resampler(resampler, lengths)
for r in rows:
    print(f"N = {r['length']:>5}: {r['latents']} latents out, attention {r['attention_macs'] / 1e6:7.1f} M MACs "
          f"(self-attention over N: {bridges.self_attention_macs(r['length'], 64, 2) / 1e6:9.1f} M)")
fig, ax = plt.subplots(figsize=(5.5, 3.2))
ax.plot(lengths, [r["attention_macs"] / 1e6 for r in rows], "o-", label="Perceiver Resampler (R = 16)")
ax.plot(lengths, [bridges.self_attention_macs(n, 64, 2) / 1e6 for n in lengths], "s--", label="self-attention over N")
ax.set_xscale("log")
ax.set_yscale("log")
ax.set_xlabel("visual input tokens N")
ax.set_ylabel("attention multiply-adds (M)")
ax.set_title("Resampler cost grows like N, self-attention like N²")
ax.legend()
fig.tight_layout()

# %% [markdown]
# On log-log axes the resampler's line has slope 1 and self-attention's slope 2: at 4,096
# inputs the gap is more than two orders of magnitude. (Wall-clock times vary by machine, so the
# plot uses the multiply-add counts; `rows` holds the measured seconds too.)
#
# **Where the modalities meet.** Three families, by where image and text first interact:
#
# | fusion | where | example |
# |---|---|---|
# | early | image tokens enter the LM's input sequence, and every layer mixes them | BLIP-2, LLaVA (soft prompts / projected patches) |
# | model-level | new layers inside the LM read the image | Flamingo's gated cross-attention, CogVLM's visual expert |
# | late | separate encoders, combined only at the end | CLIP's dot product, retrieval |
#
# ## 3.10 Full mode: BLIP-2 OPT-2.7B on photos
#
# With `MMLLM_MODE=full` on a GPU the model above is `Salesforce/blip2-opt-2.7b` at a pinned
# revision in float16, and the cell below captions two photos and holds a short conversation.
# Offline, the same code runs the tiny model on ShapesWorld scenes.

# %%
if runtime.MODE == "full":
    pictures = [sample_image("rocket"), sample_image("cat")]
    questions = ["What is in this picture?", "What would it be used for?"]
else:
    offline_scenes = [make_scene(k, seed=8, split="test") for k in range(2)]
    pictures = [s.render() for s in offline_scenes]
    questions = ["What colour is the circle?", "How many shapes are there?"]
start = time.perf_counter()
inputs = processor(images=pictures, return_tensors="pt").to(device)
inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
with torch.no_grad():
    generated = model.generate(**inputs, max_new_tokens=20)
full_captions = [c.strip() for c in processor.batch_decode(generated, skip_special_tokens=True)]
talk = chat.Blip2Chat(model, processor, pictures[0], max_new_tokens=20 if runtime.MODE == "full" else 4)
turns = []
for q in questions:
    turns.append((q, talk.respond(turns, q)))
for k, c in enumerate(full_captions):
    print(f"caption: {c}" + ("" if runtime.MODE == "full" else f"\n  truth: {offline_scenes[k].caption}"))
for q, a in turns:
    print(f"Q: {q}  A: {a}")
fig = plotting.show_images(pictures, [plotting.wrap(c, 40) for c in full_captions], columns=2, size=3.0)
if runtime.MODE == "tiny":  # the sentence below describes the tiny model's output
    claims.holds("the tiny model miscaptions the three-object scene and gets the second one and both answers right",
                 full_captions[0] != offline_scenes[0].caption and full_captions[1] == offline_scenes[1].caption
                 and [a for _, a in turns] == [dict(offline_scenes[0].qa)[q] for q in questions])

# %% [markdown]
# Offline, the tiny model answers both questions right and captions the one-object scene
# exactly, but its caption of the three-object scene is wrong: the triangle's colour and the
# order of the objects, as happens to about one caption in five (section 3.7).

# %% [markdown]
# ## Summary
# - BLIP-2 = frozen image encoder + frozen LLM + a trainable Q-Former and linear projection; the
#   bridge is a few percent of the parameters.
# - The Q-Former's Q learned queries self-attend, cross-attend to the image every other layer,
#   and come out as exactly Q vectors however large the image.
# - Stage 1 trains ITC, ITM and ITG at once, with the uni-modal, bidirectional and multimodal
#   causal masks; stage 2 projects the query outputs into soft visual prompts for the LLM. The
#   tiny BLIP-2 goes through both, and stage 1 alone already retrieves the right caption for
#   nearly every held-out image.
# - The processor squashes images to a square and writes Q `<image>` slots before the prompt;
#   OPT's byte-level BPE marks word starts with `Ġ`.
# - The tiny BLIP-2 captions and answers held-out scenes above the 80% targets, but only because
#   its frozen LM was taught, during its own pretraining, where in the note to look: with a frozen
#   LLM, what the LLM can read is the ceiling, and the bridge cannot raise it.
# - A chat is the earlier turns written into the prompt; when they do not fit, the oldest go.
# - InstructBLIP feeds the instruction into the Q-Former beside the queries, so what the queries
#   extract depends on what is asked; only the Q-Former (and projection) is instruction-tuned.
# - Flamingo fuses inside the LM with tanh-gated cross-attention (identity at initialisation) fed
#   by a Perceiver Resampler whose cost is linear in the number of visual tokens.
#
# ## Where this goes next
# Chapter 4 replaces the Q-Former by a plain projector of every patch (LLaVA) and shows that the
# data -- visual instructions written from captions and boxes -- matters as much as the bridge.
#
# ## Further reading
# - J. Li, D. Li, S. Savarese, S. Hoi, *BLIP-2: Bootstrapping Language-Image Pre-training with Frozen Image Encoders and Large Language Models*, 2023, [arXiv:2301.12597](https://arxiv.org/abs/2301.12597).
# - J. Li, D. Li, C. Xiong, S. Hoi, *BLIP: Bootstrapping Language-Image Pre-training for Unified Vision-Language Understanding and Generation*, 2022, [arXiv:2201.12086](https://arxiv.org/abs/2201.12086).
# - W. Dai et al., *InstructBLIP: Towards General-purpose Vision-Language Models with Instruction Tuning*, 2023, [arXiv:2305.06500](https://arxiv.org/abs/2305.06500).
# - J.-B. Alayrac et al., *Flamingo: a Visual Language Model for Few-Shot Learning*, 2022, [arXiv:2204.14198](https://arxiv.org/abs/2204.14198).
# - A. Jaegle et al., *Perceiver: General Perception with Iterative Attention*, 2021, [arXiv:2103.03206](https://arxiv.org/abs/2103.03206).
# - S. Zhang et al., *OPT: Open Pre-trained Transformer Language Models*, 2022, [arXiv:2205.01068](https://arxiv.org/abs/2205.01068).
#
# ## Exercises
# Each exercise has a stub that raises `NotImplementedError` and a checker under it. Replace the
# stub with your code and re-run the two cells. Worked answers are in
# `solutions/03_blip2_solutions.ipynb`.
#
# **Exercise 3.1 -- the ITG mask.** Write `itg_mask(Q, L)`: a boolean (Q+L, Q+L) matrix, True
# where the row may attend to the column, queries first. Queries see all queries and no text;
# text token $t$ sees every query and the text tokens $0..t$.

# %%
from utils import checks


def itg_mask(Q: int, L: int) -> torch.Tensor:
    raise NotImplementedError


checks.check_itg_mask(itg_mask)

# %% [markdown]
# **Exercise 3.2 -- the chat prompt.** Write `build_prompt(history, question)`: the earlier
# (question, answer) turns, oldest first, each as "Question: {q} Answer: {a}.", then
# "Question: {question} Answer:", joined by single spaces. Strip surrounding whitespace from
# every question and answer, and raise `ValueError` for an empty or whitespace-only question.

# %%
def build_prompt(history: list[tuple[str, str]], question: str) -> str:
    raise NotImplementedError


checks.check_build_prompt(build_prompt)

# %% [markdown]
# **Exercise 3.3 -- cross-attention.** Write `cross_attention(queries, keys_values, Wq, Wk, Wv)`:
# one head, no biases; $q$ = queries @ Wq (B, Q, D), $k$ = keys_values @ Wk and $v$ =
# keys_values @ Wv (B, N, D), and the output softmax($q k^\top / \sqrt{D}$, over the N keys) @ $v$,
# shape (B, Q, D).

# %%
def cross_attention(queries: torch.Tensor, keys_values: torch.Tensor, Wq: torch.Tensor, Wk: torch.Tensor,
                    Wv: torch.Tensor) -> torch.Tensor:
    raise NotImplementedError


checks.check_cross_attention(cross_attention)

# %% [markdown]
# **Exercise 3.4 -- ITC's similarity, the best of the queries.** Section 3.3 gave ITC's
# similarity as $s_{ij} = \max_q \cos(z_{iq}, t_j)$ and left the code to `utils.qformer`. Write
# `itc_similarity(query_feats, text_feat)`: query features $z$ of shape (B, Q, d) for B images and
# text features $t$ of shape (M, d) for M texts (M need not equal B) in, the (B, M) matrix $s$
# out, both sides L2-normalised along $d$. Then test it on the tiny BLIP-2, whose soft prompts were
# trained to sit near the LM's embeddings of the words of the scene's note (section 3.7). Take the
# soft prompts of the 60 held-out scenes (`held_out`, through `blip2.soft_prompts`) as query
# features, and as texts the LM's input embeddings of single words
# (`model.get_input_embeddings().weight` at `blip2.note_ids(processor.tokenizer, words)`), for every
# colour, size and shape. For each word, how well does the score separate the scenes that contain
# it from the rest? Measure it by the AUC, the share of (scene with the word, scene without) pairs
# that the score puts in the right order, and compare with the mean over the queries in place of
# the max. Predict first: which of the two separates better, and is the answer the same for every
# kind of word? (In full mode, load the tiny model from `zoo.path("blip2", mode="tiny")`.)

# %%
def itc_similarity(query_feats: torch.Tensor, text_feat: torch.Tensor) -> torch.Tensor:
    raise NotImplementedError


checks.check_itc_similarity(itc_similarity)

# %% [markdown]
# **Exercise 3.5 -- splicing the soft prompts in.** Section 3.4 put the soft prompts into the
# LM's input with one `masked_scatter`. Make it a function you can trust, then use it for an
# experiment. Write `splice_prompts(inputs_embeds, input_ids, prompts, image_token_id)` for
# `inputs_embeds` (B, T, H), `input_ids` (B, T) and `prompts` (B, Q, H): it returns a new (B, T, H)
# tensor in which the image-token positions, taken row by row and left to right, hold the B·Q
# prompt vectors in order (image 0's Q first), and every other position is unchanged. It must
# leave `inputs_embeds` as it was, and raise a `ValueError` unless every row holds exactly Q
# image-token positions: given more prompt vectors than positions, `masked_scatter` drops the
# surplus without a word, and a total of B·Q spread as Q+1 and Q-1 over two rows would hand one
# image's vector to the other. The checker compares it with a loop on random inputs and runs it inside
# the model, whose logits it must reproduce. Then the experiment. Section 3.7 showed that while
# the LM is about to answer, its attention sits on the soft prompt whose note slot holds the
# answer; but attention shows where a model looks, not what it uses. Take a held-out scene A, one
# of its questions, and a scene B in which the same question has another answer. Run the LM on
# A's soft prompts with only the answer's slot (`blip2.answer_slot(question)`; it is `None` for
# "How many shapes are there?", so skip those) taken from B, and read the first answer word (the
# argmax of the logits at the prompt's last real token: the tokenizer pads on the right). Predict
# first: will the answer be A's or B's? As a control, transplant instead a slot that does not hold
# the answer but on which A's and B's notes differ.

# %%
def splice_prompts(inputs_embeds: torch.Tensor, input_ids: torch.Tensor, prompts: torch.Tensor,
                   image_token_id: int) -> torch.Tensor:
    raise NotImplementedError


checks.check_splice_prompts(splice_prompts, model, processor)
