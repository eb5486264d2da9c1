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
# # Getting started: the course, its two modes and ShapesWorld
#
# [![Open in Colab](../images/colab-badge.svg)](https://colab.research.google.com/github/mmllm-course/multimodal-llms-hands-on/blob/main/chapters/00_getting_started.ipynb)

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
# A multimodal large language model reads pixels and words together and answers in words.
# This course builds one piece at a time -- the Vision Transformer that turns an image into
# tokens, CLIP's shared space for images and text, the bridges that feed images to a language
# model (BLIP-2, LLaVA), and diffusion models that go the other way, from words to pixels.
# Every chapter runs on your laptop in a few minutes and on a Colab GPU with the real models.
#
# **What you will learn**
# - how the course runs in two modes, *tiny* (offline, CPU) and *full* (Colab GPU, real checkpoints), with the same code;
# - how the model zoo hands the same `from_pretrained` call a local tiny checkpoint or a pinned Hub checkpoint;
# - what ShapesWorld is: the synthetic scenes, captions, boxes and questions the tiny models learn from;
# - the multimodal tasks of the course -- visual question answering, visual reasoning, captioning,
#   image-text retrieval and grounding -- each on a concrete scene.
#
# **Prerequisites**: Python and NumPy; PyTorch tensors help from chapter 1 on.

# %% [markdown]
# ## Where am I running?
#
# The first import of `utils.runtime` decides the mode once. The report below is the first thing
# to paste into a bug report; yours describes your machine, so it will differ from the one here.

# %% tags=["nbval-ignore-output"]
from utils import runtime

runtime.print_environment_report()

# %% [markdown]
# ## Two modes, one code path
#
# | mode | picked when | models |
# |---|---|---|
# | `full` | a CUDA GPU is present **and** the Hugging Face Hub answers within 2 s (Colab) | the real checkpoints, e.g. `openai/clip-vit-base-patch32` |
# | `tiny` | otherwise: CI, a laptop on a train | small checkpoints shipped in `models/`, trained on ShapesWorld |
#
# Set `MMLLM_MODE=tiny`, `full` or `auto` (the default) before starting Jupyter to override the
# choice. A chapter never names a Hub id or a folder: it asks the model zoo, and the zoo returns a
# local folder either way -- the shipped tiny checkpoint, or the real one downloaded at a pinned
# revision. Here is the zoo as this chapter sees it (later chapters add their models):

# %%
from utils import zoo

for row in zoo.table():
    print(" | ".join(f"{key}: {value}" for key, value in row.items()))

# %% [markdown]
# ### Will full mode fit a free Colab GPU?
#
# Colab's free GPU is an NVIDIA T4, with about 13 GB of system RAM beside it (the first line below
# gives the figures). Before a reader spends an hour there, the course works out what each notebook
# needs of it, from two things it records: the real checkpoints' configuration files (each model
# is built at full size on PyTorch's `meta` device, which allocates nothing, to count its
# parameters) and every call each notebook makes of its models (batch sizes, sequence lengths,
# image sizes, new tokens, sampling steps), recorded while the notebook runs in **rehearsal**
# mode, described below. `utils.t4plan` turns them into a plan; each row must stay within 13 GiB
# of GPU memory and 10 GiB of host RAM, to leave a margin.

# %%
from utils import t4plan

print(f"a T4: {t4plan.T4['gpu_gib']:g} GiB of GPU memory, {t4plan.T4['fp16_flops'] / 1e12:g} TFLOPS in float16, "
      f"{t4plan.T4['bandwidth'] / 1e9:g} GB/s; Colab's host RAM: {t4plan.T4['host_gb']:g} GB\n")
plan = t4plan.table(t4plan.plan())
columns = list(plan[0])
widths = [max(len(c), *(len(row[c]) for row in plan)) for c in columns]
print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
for row in plan:
    print("  ".join(row[c].ljust(w) for c, w in zip(columns, widths)))
print("\nassumptions:")
for key, value in t4plan.ASSUMPTIONS.items():
    print(f"  {key} = {value:g}")

# %% [markdown]
# "Peak GPU" is the weights of every model the notebook keeps on the GPU, plus the activations and
# key-value cache of its largest call (the batch sizes full mode uses are chosen so that it fits),
# plus half a gibibyte for CUDA itself (the first assumption). "Host RAM" is what loading needs: a model moved to the GPU
# with `.to("cuda")` passes through host memory whole, one loaded with `device_map` tensor by
# tensor. "GPU time" estimates the notebook's calls of the real checkpoints from their FLOPs at 35%
# of the T4's peak (and, for each generated token, one read of the weights); the small models a
# chapter trains itself and the downloads come on top. Notebooks that put no model on the GPU
# (chapter 1 runs ViT-B/16 on one photo, on the CPU) are left out. Chapter 7 evaluates BLIP-2 and
# then LLaVA, freeing the first before loading the second, so its row counts the one that needs
# more, not the two together (its download, 29 GB, is both). The one model
# that needs care is LLaVA-1.5-7B: in float16 its weights alone would fill almost all of the T4,
# so chapter 4 loads its language model in 4 bits (section 4.1 does the arithmetic).
#
# **Rehearsal mode.** Full mode cannot run in CI, which has no GPU and no Hub. `MMLLM_MODE=rehearsal`
# runs every notebook's full-mode code anyway, in float16 on the CPU, against *stand-ins* of the
# real checkpoints (`utils.rehearsal`): the same classes, processors, image and patch sizes,
# special tokens, chat templates and files, with narrow layers and random weights. Its answers
# are noise, but a cell that would fail on Colab fails there too; the test suite rehearses every
# notebook (`python scripts/rehearse.py`).
#
# Loading is the real Hugging Face call in both modes. CLIP's tokenizer is a good first example:
# its 49,408-token vocabulary ships inside a Python package, so even offline we get the exact
# token ids the real CLIP uses.

# %%
from transformers import CLIPTokenizer

tokenizer = CLIPTokenizer.from_pretrained(zoo.path("clip-tokenizer"))
ids = tokenizer("a red circle to the left of a small blue square")["input_ids"]
print(f"vocabulary: {len(tokenizer):,} tokens")
print("tokens:", tokenizer.convert_ids_to_tokens(ids))
print("ids:   ", ids)

# %% [markdown]
# ## ShapesWorld
#
# Real photos need real models, and real models need a GPU. So that every chapter also runs
# offline, the tiny models learn from **ShapesWorld**: small scenes of one to three coloured
# shapes, generated from a seed. Each scene is a list of objects; its pixels, caption, boxes and
# questions are all derived from that list, so they can never disagree.

# %%
from utils.shapes import COLOURS, SHAPES, SIZES, ShapesWorld

world = ShapesWorld(8, seed=0)
scene = world.scene(1)
print(f"{len(SHAPES)} shapes x {len(COLOURS)} colours x {len(SIZES)} sizes, 1-3 objects per scene")
for obj in scene.objects:
    print(f"  {obj.size:<5} {obj.colour:<6} {obj.shape:<8} centre=({obj.cx:.2f}, {obj.cy:.2f})")
print("caption:", scene.caption)

# %% [markdown]
# Eight scenes with their captions; the dashed rectangles are the bounding boxes that come with
# each scene. Look at how the caption's relation ("to the left of", "above") follows the boxes.

# %%
from utils import plotting

fig = plotting.show_scenes(world.scenes, columns=4, title="ShapesWorld, seed 0: the first eight scenes")

# %% [markdown]
# The same scenes are a PyTorch `Dataset`, so training code later in the course is ordinary
# PyTorch. Each image is a `(3, 64, 64)` tensor with values in $[0, 1]$.

# %%
item = world[1]
print("pixel_values:", tuple(item["pixel_values"].shape), item["pixel_values"].dtype)
print("boxes (x0, y0, x1, y1):", [[round(v, 2) for v in box] for box in item["boxes"].tolist()])
print("shape ids:", item["shape_ids"].tolist(), " colour ids:", item["colour_ids"].tolist())

# %% [markdown]
# ## The multimodal tasks of the course
#
# Each task below is shown on a ShapesWorld scene, with the answer computed from the scene itself
# -- what a perfect model would say. Later chapters train models to do the same from pixels.
#
# ### Visual question answering
# A question about the image, answered in a word or a phrase. These question/answer pairs come
# with every scene; chapter 3 trains a small BLIP-2 on them.

# %%
scene = world.scene(7)
for question, answer in scene.qa[:7]:
    print(f"Q: {question:<40} A: {answer}")

# %% [markdown]
# ### Visual reasoning
# Reasoning combines several facts about the image, as in "is the square red **and** below the
# circle?". A model must get every part right to get the whole right.

# %%
from utils.shapes import relation


def find(scene, shape):
    """The object of a given shape in a scene, or None."""
    return next((o for o in scene.objects if o.shape == shape), None)


square, circle = find(scene, "square"), find(scene, "circle")
is_red = square.colour == "red"
is_below = relation(square, circle) == "below"
print(f"Is the square red? {is_red}.  Is it below the circle? {is_below}.")
print("Is the square red AND below the circle?", "yes" if is_red and is_below else "no")

# %% [markdown]
# ### Captioning
# A single sentence, or a paragraph that goes through the objects one by one.

# %%
print("sentence: ", scene.caption)
paragraph = " ".join(
    f"There is {o.phrase} near the {'left' if o.cx < 0.4 else 'right' if o.cx > 0.6 else 'middle'} "
    f"of the picture." for o in scene.objects
)
print("paragraph:", paragraph)

# %% [markdown]
# ### Image-text retrieval
# Given a text query, rank the images (or given an image, rank the texts). Retrieval needs a
# similarity between a query and each candidate; CLIP (chapter 2) uses the cosine similarity of
# two embedding vectors $u$ and $v$:
#
# $$\cos(u, v) = \frac{u \cdot v}{\lVert u \rVert \, \lVert v \rVert}.$$
#
# Here, as a stand-in for learned embeddings, each caption is a bag-of-words vector: one count per
# word of the vocabulary. The query is a caption with the size words left out.

# %%
import numpy as np

captions = [s.caption for s in world.scenes]
vocabulary = sorted({word for text in captions for word in text.split()})


def bag_of_words(text):
    words = text.split()
    return np.array([words.count(w) for w in vocabulary], dtype=float)


def cos(u, v):
    return float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v)))


query = "a red square below a yellow circle"
scores = [cos(bag_of_words(query), bag_of_words(c)) for c in captions]
for rank, i in enumerate(np.argsort(scores)[::-1][:3], start=1):
    print(f"{rank}. scene {i}  cos = {scores[i]:.3f}  {captions[i]}")

# %% [markdown]
# The best match is scene 0, the only one with both a red square and a yellow circle. Counting
# words cannot see that "below" and "above" swap the meaning, though; learned embeddings can.
#
# ### Grounding
# Grounding points at the part of the image a phrase refers to, here as a box. Boxes are
# normalised to $[0, 1]$, so multiplying by the image size gives pixels.

# %%
import matplotlib.pyplot as plt
from matplotlib.patches import Rectangle

phrase = "yellow triangle"
label, box = next((lbl, b) for lbl, b in scene.boxes if lbl == phrase)
pixels = [round(v * scene.image_size) for v in box]
print(f"'{phrase}' -> normalised box {box} -> pixels {pixels}")

fig, ax = plt.subplots(figsize=(3, 3))
ax.imshow(scene.render())
x0, y0, x1, y1 = pixels
ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec="black", lw=2))
ax.set_title(f"grounding: '{phrase}'")
ax.set_xlabel("x (pixels)")
ax.set_ylabel("y (pixels)")
plt.show()

# %% [markdown]
# The black rectangle sits exactly on the yellow triangle: the box and the pixels come from the
# same scene description.
#
# ## The map of the course
#
# | chapter | the piece it builds | direction |
# |---|---|---|
# | 1 ViT | an image encoder: patches become tokens | image $\to$ vectors |
# | 2 CLIP | a shared space where images and texts meet (retrieval, zero-shot) | image $\leftrightarrow$ text |
# | 3 BLIP-2 | a bridge (Q-Former) from a frozen image encoder into a frozen LLM | image $\to$ text |
# | 4 LLaVA | a projector and visual instruction tuning | image $\to$ text |
# | 5 Diffusion | a generator that turns text into pixels | text $\to$ image |
# | 6 Beyond text out | boxes as tokens, images out of an LLM, new modalities bound to images | image $\leftrightarrow$ text, any $\to$ any |
# | 7 Evaluation | the benchmarks' scoring rules and the uncertainty of a score, applied to chapters 3 and 4's models | (measures the others) |
#
# ## Summary
# - The course runs in **tiny** mode (offline, CPU, shipped checkpoints) or **full** mode (GPU,
#   real checkpoints at pinned revisions); the chapter code is the same.
# - `zoo.path(name)` gives `from_pretrained` a local folder in both modes.
# - **ShapesWorld** generates scenes whose pixels, captions, boxes and questions agree by
#   construction; the tiny models are trained on it.
# - The tasks ahead: visual question answering, visual reasoning, captioning, image-text
#   retrieval and grounding.
#
# ## Where this goes next
# Chapter 1 opens up the image side: how a Vision Transformer cuts an image into patches and turns
# them into tokens a transformer can read.
#
# ## Further reading
# - A. Dosovitskiy et al., *An Image is Worth 16x16 Words: Transformers for Image Recognition at
#   Scale*, 2020, [arXiv:2010.11929](https://arxiv.org/abs/2010.11929).
# - A. Radford et al., *Learning Transferable Visual Models From Natural Language Supervision*
#   (CLIP), 2021, [arXiv:2103.00020](https://arxiv.org/abs/2103.00020).
# - J. Johnson et al., *CLEVR: A Diagnostic Dataset for Compositional Language and Elementary
#   Visual Reasoning*, 2016, [arXiv:1612.06890](https://arxiv.org/abs/1612.06890) -- the idea
#   behind ShapesWorld.
#
# ## Exercises
#
# **Exercise 0.1 -- relations from boxes.** LLaVA's instruction data (chapter 4) is written from
# captions and boxes alone. Write `relation_from_boxes(a, b)` that says where box `a` lies
# relative to box `b`: `"left"`, `"right"`, `"above"` or `"below"`. Boxes are `(x0, y0, x1, y1)`,
# normalised, with y pointing down. Compare the box centres along the axis where they are further
# apart. The checker below compares your answers with ShapesWorld's on 200 scenes.

# %%
from utils import checks


def relation_from_boxes(a, b):
    """Where box a lies relative to box b: "left", "right", "above" or "below"."""
    raise NotImplementedError


checks.check_relation_from_boxes(relation_from_boxes)
