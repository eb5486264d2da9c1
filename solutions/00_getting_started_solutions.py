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
# # Solutions: Getting started
#
# [![Open in Colab](../images/colab-badge.svg)](https://colab.research.google.com/github/mmllm-course/multimodal-llms-hands-on/blob/main/solutions/00_getting_started_solutions.ipynb)

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
# Worked answers to the exercises of [chapter 0](../chapters/00_getting_started.ipynb). Try each
# exercise yourself first: the checker in the chapter tells you whether your version is right.
#
# ## Exercise 0.1 -- relations from boxes
#
# A box's centre is the midpoint of its corners. The offsets between the two centres, $\Delta x$
# and $\Delta y$, say which axis separates the boxes more; the sign along that axis gives the
# direction. Image coordinates put $y = 0$ at the top, so a *smaller* $y$ means *above*.

# %%
from utils import checks


def relation_from_boxes(a, b):
    """Where box a lies relative to box b: "left", "right", "above" or "below"."""
    ax, ay = (a[0] + a[2]) / 2, (a[1] + a[3]) / 2
    bx, by = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
    dx, dy = ax - bx, ay - by
    if abs(dx) >= abs(dy):
        return "left" if dx < 0 else "right"
    return "above" if dy < 0 else "below"


checks.check_relation_from_boxes(relation_from_boxes)

# %% [markdown]
# A common slip is to compare the left edges (`a[0] < b[0]`) instead of the centres: a large box
# and a small one can have their left edges in one order and their centres in the other.
#
# ## Exercise 0.2 -- a model that never looks
#
# An answerer that cannot see the image can still learn each question's habits. For every question
# text, count its answers over the training scenes and keep the most common one; then answer each
# test question with the answer kept for its text. A text never seen in training counts as wrong
# (with a few thousand training scenes every one of ShapesWorld's 33 question texts has been seen,
# so the rule never fires here).

# %%
from collections import Counter, defaultdict


def blind_baseline(train_scenes, test_scenes) -> dict[str, float]:
    """Accuracy per question kind of answering each question text with its most common training answer."""
    counts = defaultdict(Counter)  # question text -> how often each answer was right in training
    for scene in train_scenes:
        for q in scene.questions:
            counts[q.text][q.answer] += 1
    guess = {text: answers.most_common(1)[0][0] for text, answers in counts.items()}
    right, asked = Counter(), Counter()
    for scene in test_scenes:
        for q in scene.questions:
            asked[q.kind] += 1
            right[q.kind] += guess.get(q.text) == q.answer  # an unseen text (guess None) is wrong
    return {kind: right[kind] / asked[kind] for kind in asked}


checks.check_blind_baseline(blind_baseline)

# %% [markdown]
# Measured on 3,000 training and 1,000 test scenes, next to chance $p$ (one over the number of
# answers a question of that kind can have) and the sampling noise of $n$ test questions,
# $\sqrt{p(1-p)/n}$: how far a model that guesses at random would stray from $p$ by luck. The
# last column says how many of those noise units the blind answers lie above chance. These are
# counts, so every computer prints the same digits:

# %%
from math import sqrt

from utils.shapes import QUESTION_KINDS, ShapesWorld

training_scenes = ShapesWorld(3000, seed=0, split="train").scenes
held_out_scenes = ShapesWorld(1000, seed=0, split="test").scenes
floor = blind_baseline(training_scenes, held_out_scenes)
answers_per_kind, asked_per_kind = defaultdict(set), Counter()
for scene in training_scenes:
    for q in scene.questions:
        answers_per_kind[q.kind].add(q.answer)
for scene in held_out_scenes:
    for q in scene.questions:
        asked_per_kind[q.kind] += 1
print(f"{'kind':<10}{'blind':>7}{'chance':>8}{'n':>6}{'noise':>7}{'above':>7}   possible answers")
for kind in QUESTION_KINDS:
    options = sorted(answers_per_kind[kind])
    p, n = 1 / len(options), asked_per_kind[kind]
    noise = sqrt(p * (1 - p) / n)
    print(f"{kind:<10}{floor[kind]:>7.3f}{p:>8.3f}{n:>6}{noise:>7.3f}{(floor[kind] - p) / noise:>7.1f}   "
          f"{', '.join(options)}")

# %% [markdown]
# Only size beats chance by more than twice the noise, by almost three noise units: "small" is
# right 53% of the time, because the generator redraws a scene whose objects do not fit side by
# side, and large objects fail to fit more often in scenes of three. A blind model that always
# says "small" gains three points without looking. Count lies 1.3 noise units above chance, which
# luck explains: over the training scenes each count is drawn a third of the time (33.6% of scenes
# hold one shape), and this test set happens to hold 35.3% of one-shape scenes, the answer the
# blind model gives. The other kinds sit at chance because the generator gives their question
# texts no habit to learn: colours and shapes are drawn uniformly and independently, every scene
# gets one existence question answered "yes" and one answered "no", and relations follow from
# positions drawn at random. So a ShapesWorld accuracy means something only measured against this
# floor, kind by kind -- 55% on size questions is barely better than guessing, 55% on colour
# questions is far better.
#
# A benchmark written by people has far stronger habits, because people ask about what is there
# and word their questions in telling ways. On the first VQA dataset a model that read only the
# question answered almost half of them right, and "yes" was the right answer to 87% of the
# questions that begin "Do you see a ..." (Goyal et al., 2016). That is why VQA v2 pairs each
# question with a second, similar image on which its answer differs. Chapter 7 measures this floor
# for BLIP-2 and LLaVA themselves, by asking them the questions without the image.
#
# ## Exercise 0.3 -- will it fit?
#
# A parameter stored in `bits` bits takes `bits / 8` bytes, and a gibibyte is $2^{30}$ bytes:
#
# $$\text{GiB} = \frac{n \cdot \text{bits} / 8}{2^{30}}.$$

# %%
def weight_gib(n_parameters: float, bits: float) -> float:
    """Memory of n_parameters weights of `bits` bits each, in GiB (2**30 bytes)."""
    return n_parameters * bits / 8 / 2**30


checks.check_weight_gib(weight_gib)

# %% [markdown]
# LLaVA-1.5-7B, with the parameter counts chapter 4 takes from its configuration. Its language
# model's 32 blocks hold most of the weights; the rest is the vision tower, the projector, the
# token embeddings, the final norm and `lm_head`. bitsandbytes' NF4 stores 4 bits per weight plus
# one float32 scale for every 64 weights, $4 + 32/64 = 4.5$ bits in all:

# %%
total = 7_063_427_072
blocks = 6_476_267_520  # the language model's 32 blocks
rest = total - blocks  # vision tower, projector, embeddings, final norm, lm_head
LIMIT_GIB, T4_GIB = 13.0, 15.0  # the course's limit for a notebook, and the card
float16 = weight_gib(total, 16)
four_bit = weight_gib(blocks, 4) + weight_gib(rest, 16)
nf4 = weight_gib(blocks, 4.5) + weight_gib(rest, 16)
print(f"(a) all in float16:                     {float16:5.2f} GiB: {'within' if float16 <= LIMIT_GIB else 'over'} the "
      f"{LIMIT_GIB:g} GiB limit by {abs(LIMIT_GIB - float16):.2f} GiB, {T4_GIB - float16:.2f} GiB left on the card")
print(f"(b) blocks in 4 bits, the rest float16:  {four_bit:5.2f} GiB")
print(f"(c) blocks in NF4 (4.5 bits), the rest:  {nf4:5.2f} GiB")
print(f"    counted in GB (1e9 bytes), float16:  {total * 2 / 1e9:5.2f} GB -- the same bytes, a bigger-looking number")

# %% [markdown]
# In float16 the weights fit on the card, barely, but not within the course's limit: 13.2 GiB is
# more than 13, and the 1.8 GiB left on the card would have to hold CUDA itself (about half a
# gibibyte), the activations and the key-value cache. With the blocks in 4 bits the weights shrink
# to about 4 GiB (4.5 GiB counting NF4's scales, the figure chapter 4 prints). Note the units: the
# same 14.1 GB is 13.2 GiB, and GPU memory is reported in GiB.
#
# (d) Every token keeps a key and a value vector of width 4,096 in each of the 32 blocks, in
# float16: $2 \times 32 \times 4096 \times 2$ bytes, half a mebibyte per token.

# %%
kv_bytes_per_token = 2 * 32 * 4096 * 2  # keys and values x blocks x width x bytes of a float16
question_gib = 630 * kv_bytes_per_token / 2**30
room = {"(a) float16": LIMIT_GIB - 0.5 - float16, "(c) NF4": LIMIT_GIB - 0.5 - nf4}
print(f"key-value cache: {kv_bytes_per_token / 2**20:.2f} MiB a token, {question_gib:.3f} GiB a question of 630 tokens")
for weights, free in room.items():
    print(f"beside the weights of {weights:<12} {free:+6.2f} GiB free -> {max(0, int(free // question_gib))} questions")

# %% [markdown]
# With float16 weights not even one question fits: the weights alone are over the limit. With the
# blocks in NF4 about 8 GiB are free, room for the caches of 26 questions at once. That is an upper
# bound: each question also needs activations while it runs, the vision tower's hidden states
# among them, which is why chapter 4's full mode asks `t4plan.largest_batch` and gets batches of 16.
