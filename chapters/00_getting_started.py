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
# - how the pieces of a multimodal LLM fit together, and which chapter builds each one;
# - how the course runs in two modes, *tiny* (offline, CPU) and *full* (Colab GPU, real checkpoints), with the same code;
# - how the model zoo hands the same `from_pretrained` call a local tiny checkpoint or a pinned Hub checkpoint;
# - what ShapesWorld is: the synthetic scenes, captions, boxes and questions the tiny models learn from;
# - the multimodal tasks of the course -- visual question answering, visual reasoning, captioning,
#   image-text retrieval and grounding -- each on a concrete scene.
#
# **Prerequisites**: Python and NumPy; PyTorch tensors help from chapter 1 on.

# %% [markdown]
# ## The course in one picture
#
# Read the top row from left to right to follow an image on its way to a text answer, and the
# bottom row to follow a text prompt on its way to a new image. Each coloured box names the chapter
# that builds it (or, for the language model, the chapters that use it); grey boxes are what goes
# in and comes out; the dashed boxes and arrows are chapter 6's extensions and chapter 7's
# evaluation.

# %% tags=["hide-input"]
from utils import plotting

fig = plotting.course_map()

# %% [markdown]
# Chapter 1 builds the image encoder, chapter 2 trains it beside a text encoder so that the two
# share one space, and chapters 3 and 4 build the two common connectors that turn its output into
# something a language model can read. A CLIP text encoder steers the diffusion model of chapter 5
# (in tiny mode literally chapter 2's; Stable Diffusion v1.5 uses CLIP ViT-L/14's), whose VAE
# decoder turns the result into pixels. Chapter 6 stretches the picture (boxes as tokens, images out
# of a language model, a new modality bound to images) and chapter 7 measures what comes out:
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

# %% [markdown]
# ## Two modes, one code path
#
# | mode | picked when | models |
# |---|---|---|
# | `full` | a CUDA GPU is present **and** the Hugging Face Hub answers (Colab) | the real checkpoints, e.g. `openai/clip-vit-base-patch32` |
# | `tiny` | otherwise: CI, a laptop on a train | small checkpoints shipped in `models/`, trained on ShapesWorld |
#
# To run a chapter with the real models, open it on Colab with its badge and pick *Runtime >
# Change runtime type > T4 GPU*; to run it on your own computer, clone the repository and follow its
# [README](https://github.com/mmllm-course/multimodal-llms-hands-on#readme). The first import of
# `utils.runtime` picks the mode, once; to choose it yourself, set `MMLLM_MODE=tiny` or `full`
# before starting Jupyter, or, inside a notebook, run `os.environ["MMLLM_MODE"] = "tiny"` in a cell
# before the first `from utils import runtime`. This page was produced in tiny mode:

# %%
from utils import runtime

print(f"mode: {runtime.MODE}, device: {runtime.DEVICE}")

# %% [markdown]
# A chapter never names a Hub id or a folder: it asks the model zoo, and `zoo.path(name)` returns
# a local folder either way -- the shipped tiny checkpoint, or the real one downloaded at a pinned
# revision. Loading is then the ordinary Hugging Face call. CLIP's tokenizer is a good first
# example: its 49,408-token vocabulary is published inside the `open-clip-torch` package; the course
# converted it once and ships it in `models/`, so even offline we get the exact token ids the real
# CLIP uses.

# %%
from transformers import CLIPTokenizer

from utils import zoo

tokenizer = CLIPTokenizer.from_pretrained(zoo.path("clip-tokenizer"))
ids = tokenizer("a red circle to the left of a small blue square")["input_ids"]
print(f"vocabulary: {len(tokenizer):,} tokens")
print("tokens:", tokenizer.convert_ids_to_tokens(ids))
print("ids:   ", ids)

# %% [markdown]
# ### Will full mode fit a free Colab GPU?
#
# By the course's estimate, yes, with room to spare ([appendix A.3](appendix_under_the_hood.ipynb)
# shows how the estimate is made). Colab's free GPU is an NVIDIA T4 with 15 GiB of memory, and about 13 GB of
# system RAM beside it. The course works out what each notebook's full mode needs from the real
# models' sizes and from the calls the notebook makes of them, and keeps every notebook within
# 13 GiB of GPU memory and 10 GiB of RAM, to leave a margin. Notebooks that put no model on the GPU
# are left out.

# %%
from utils import t4plan

print(f"a free Colab T4: {t4plan.T4['gpu_gib']:g} GiB of GPU memory, {t4plan.T4['host_gb']:g} GB of RAM; "
      f"each notebook's limits: {t4plan.GPU_LIMIT_GIB:g} GiB and {t4plan.HOST_LIMIT_GIB:g} GiB\n")
t4plan.print_table(t4plan.table(t4plan.plan()),
                   ["notebook", "on the GPU", "weights", "peak GPU", "host RAM", "download", "T4 time", "fits"])

# %% [markdown]
# "Weights" is the memory the models' weights take on the GPU as the notebook loads them, "peak
# GPU" adds what its largest call needs on top (activations, the key-value cache) and the CUDA
# context, "host RAM" is what loading the models needs, "download" what the Hub sends the first
# time, and "T4 time" an estimate of the time the real models compute (the downloads and the small
# models a chapter trains itself come on top). The tightest fit is LLaVA-1.5-7B: in float16 its
# weights alone would take more than the 13 GiB limit, so chapter 4 loads its language model in 4
# bits (section 4.1 does the arithmetic, and exercise 0.3 below too). Chapter 7 evaluates BLIP-2
# and then LLaVA, freeing the first before loading the second, which is why its weights and peak
# are LLaVA's but its download is both. How these figures are computed, and how full mode is
# tested without a GPU, is in [Appendix: under the hood](appendix_under_the_hood.ipynb), together
# with the environment report to paste into a bug report.

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
# A question about the image, answered in a word or a phrase. Every scene comes with its questions,
# each a `Question(text, answer, kind)` of one of six kinds; chapter 3 trains a small BLIP-2 on
# them. Here is one question of each kind for scene 7:

# %%
scene = world.scene(7)
first_of_kind = {}
for q in scene.questions:
    first_of_kind.setdefault(q.kind, q)
print(f"scene 7 has {len(scene.questions)} questions of {len(first_of_kind)} kinds; the first of each kind:")
for q in first_of_kind.values():
    print(f"  {q.kind:<9} Q: {q.text:<46} A: {q.answer}")

# %% [markdown]
# ### Visual reasoning
# Reasoning combines several facts about the image, as in "is the square red **and** below the
# circle?". A model must get every part right to be sure of getting the whole right.

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
# The best match is scene 0, the only one with both a red square and a yellow circle. Scene 6 comes
# second although it shares only "a", "yellow" and "square", because its caption is short and the
# cosine divides by the length of each vector; scene 7 shares more words, but its many others
# dilute them (and its "square," with a comma counts as another word).
#
# Counting words cannot see word order. Swap the two objects and the query means the opposite --
# the circle is now the one below -- yet it has exactly the same words:

# %%
swapped = "a yellow circle below a red square"
swapped_scores = [cos(bag_of_words(swapped), bag_of_words(c)) for c in captions]
print(f"query:   {query}\nswapped: {swapped}")
print(f"cosine of the two queries: {cos(bag_of_words(query), bag_of_words(swapped)):.3f}")
print("the same score against every caption:", np.allclose(scores, swapped_scores))

# %% [markdown]
# Learned embeddings can tell the two apart only if their training forces them to, and real CLIP
# often does not: chapter 2 shows benchmarks on which it scores a caption and the same words in
# another order alike.
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
# ## Summary
# - A multimodal LLM encodes an image (chapters 1-2) and connects it to a language model (3-4); a
#   diffusion model goes from text to an image (5); chapter 6 extends both directions, and chapter 7
#   measures what comes out.
# - The course runs in **tiny** mode (offline, CPU, shipped checkpoints) or **full** mode (GPU,
#   real checkpoints at pinned revisions); the chapter code is the same.
# - `zoo.path(name)` gives `from_pretrained` a local folder in both modes, and, by the course's
#   estimate (appendix A.3), every notebook's full mode fits a free Colab T4 with a margin.
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
# - Y. Goyal et al., *Making the V in VQA Matter: Elevating the Role of Image Understanding in
#   Visual Question Answering* (VQA v2), 2016, [arXiv:1612.00837](https://arxiv.org/abs/1612.00837)
#   -- how far answering without looking gets on a benchmark written by people (exercise 0.2).
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

# %% [markdown]
# **Exercise 0.2 -- a model that never looks.** An accuracy means little until you know what a
# model that ignores the image would score. The best such a model can do is learn each question's
# habits: answer every question *text* with the answer it most often had in training. Write
# `blind_baseline(train_scenes, test_scenes)`: for each question text (`q.text`, for `q` in
# `scene.questions`), find its most common answer (`q.answer`) over the training scenes; answer
# every test question with the answer kept for its text; return the accuracy per question kind
# (`q.kind`) as a dict `{kind: share answered right}`. A test question whose text never appeared in
# training counts as wrong. Then run it on 3,000 training and 1,000 test scenes
# (`ShapesWorld(3000, seed=0, split="train").scenes`, and the same with `1000` and `split="test"`)
# and compare each kind with chance $p$, one over the number of possible answers. Which kinds, if
# any, beat chance by more than twice the sampling noise, $\sqrt{p(1-p)/n}$ for the $n$ test
# questions of that kind? What in the generator makes the others sit at chance, and what would you
# expect on a benchmark written by people? Every accuracy later in the course -- chapter 3's BLIP-2,
# chapter 4's LLaVA -- means something only above this floor, and chapter 7 measures the floor for
# those models themselves, by asking them the questions without the image.

# %%
from utils.shapes import ShapesWorld


def blind_baseline(train_scenes, test_scenes) -> dict[str, float]:
    """Accuracy per question kind of answering each question text with its most common training answer."""
    raise NotImplementedError


checks.check_blind_baseline(blind_baseline)

# %% [markdown]
# **Exercise 0.3 -- will it fit?** The T4 plan above rests on one piece of arithmetic. Write
# `weight_gib(n_parameters, bits)`: the memory of `n_parameters` weights stored at `bits` bits
# each, in GiB (1 GiB = $2^{30}$ bytes, not $10^9$). Then use it on LLaVA-1.5-7B, whose
# 7,063,427,072 parameters chapter 4 counts: 6,476,267,520 of them in its language model's 32
# blocks, the rest in the vision tower, the projector, the token embeddings and `lm_head`.
# (a) All in float16 (16 bits): do the weights fit within the course's 13 GiB limit (of a T4's
# 15 GiB), and how much is left for everything else? (b) With the 32 blocks in 4 bits and the rest
# in float16? (c) NF4, the 4-bit format chapter 4 loads the blocks in, also stores one 32-bit scale
# for every 64 weights: how many bits per weight is that, and what does (b) become? (d) Each
# question also needs its key-value cache: a key and a value vector of the language model's width
# (4,096) for every token in each of its 32 blocks, $2 \times 32 \times 4096 \times 2$ bytes per
# token in float16. A question is about 630 tokens, 576 of them image tokens. How many questions fit
# beside the weights of (a), and beside those of (c), within 13 GiB less 0.5 GiB for CUDA itself?

# %%
def weight_gib(n_parameters: float, bits: float) -> float:
    """Memory of n_parameters weights of `bits` bits each, in GiB (2**30 bytes)."""
    raise NotImplementedError


checks.check_weight_gib(weight_gib)
