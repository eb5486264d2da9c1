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
# # Solutions: Evaluating multimodal LLMs
#
# [![Open in Colab](../images/colab-badge.svg)](https://colab.research.google.com/github/mmllm-course/multimodal-llms-hands-on/blob/main/solutions/07_evaluation_solutions.ipynb)

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
# Worked answers to the exercises of [chapter 7](../chapters/07_evaluation.ipynb). Each answer is
# followed by the same checker the chapter uses, and by a comparison with the library.

# %%
import numpy as np

from utils import checks, claims
from utils.evaluation import choice, stats, vqa

# %% [markdown]
# ## Exercise 7.1 -- VQA accuracy
#
# Leave each annotator out in turn, count how many of the others gave the prediction, cap the
# count's third at 1, and average. With $n$ of 10 annotators agreeing, $n$ subsets see $n - 1$
# matches and $10 - n$ see $n$, which gives 0.3, 0.6, 0.9 and 1.0 for $n = 1 \dots 4$.

# %%
def vqa_accuracy(prediction: str, answers: list[str]) -> float:
    per_subset = []
    for left_out in range(len(answers)):
        matches = sum(a == prediction for i, a in enumerate(answers) if i != left_out)
        per_subset.append(min(1.0, matches / 3))
    return sum(per_subset) / len(per_subset)


checks.check_vqa_accuracy(vqa_accuracy)
assert vqa_accuracy("red", ["red"] * 3 + ["blue"] * 7) == vqa.accuracy("red", ["red"] * 3 + ["blue"] * 7)

# %% [markdown]
# ## Exercise 7.2 -- reading the option
#
# Two passes: a capital letter standing alone once the separators are spaces, then the option texts.
# Either pass counts only when it finds exactly one candidate.

# %%
def read_option(answer: str, options: list[str]) -> str | None:
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[:len(options)]
    spaced = answer
    for mark in ".()[],:;!*#{}":
        spaced = spaced.replace(mark, " ")
    found = [letter for letter in letters if letter in spaced.split()]
    if len(found) == 1:
        return found[0]
    named = [letter for letter, text in zip(letters, options) if text.lower() in answer.lower()]
    return named[0] if len(named) == 1 else None


checks.check_read_option(read_option)
example = choice.Choice("q", "What colour is the circle?", ("red", "blue", "green", "yellow"), "blue")
assert all(read_option(a, list(example.options)) == choice.extract_choice(a, example) for a in ["B", "blue", "A blue circle", "x"])

# %% [markdown]
# ## Exercise 7.3 -- CircularEval
#
# A question counts only if all its rotations are right. A model that always answers "A" is right in
# exactly one of four rotations of every question (the one that puts the answer first): vanilla 25%,
# circular 0%.

# %%
def circular_accuracy(right: list[list[bool]]) -> float:
    return sum(all(rotations) for rotations in right) / len(right)


checks.check_circular_accuracy(circular_accuracy)
colours = ("red", "blue", "green", "yellow")
questions = [choice.Choice(f"q{k}", "What colour is the circle?", colours, colours[k]) for k in range(4)]  # answer in each slot
always_a = [[rotation.right_letter == "A" for rotation in q.rotations()] for q in questions]
vanilla = np.mean([rotations[0] for rotations in always_a])
print(f"always 'A': vanilla {vanilla:.0%}, circular {circular_accuracy(always_a):.0%}")
assert vanilla == 0.25 and circular_accuracy(always_a) == 0

# %% [markdown]
# ## Exercise 7.4 -- a bootstrap interval
#
# Resample the questions with replacement (indices drawn uniformly), take each resample's mean, and
# read the interval off the quantiles of those means.

# %%
def bootstrap_ci(scores: list[float], level: float = 0.95, resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    values = np.asarray(scores, dtype=float)  # (N,)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(resamples, len(values)))].mean(axis=1)  # (R,)
    tail = (1 - level) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


checks.check_bootstrap_ci(bootstrap_ci)
ours, library = bootstrap_ci([1.0] * 140 + [0.0] * 60), stats.bootstrap_interval([1.0] * 140 + [0.0] * 60)
print(f"ours [{ours[0]:.3f}, {ours[1]:.3f}], library [{library.low:.3f}, {library.high:.3f}] (2,000 vs 10,000 resamples)")

# %% [markdown]
# ## Exercise 7.5 -- how many questions?
#
# Each trial draws both models' answers, computes $z = (\hat p_a - \hat p_b) / \sqrt{\bar p (1 - \bar p)\, 2/n}$
# with the pooled accuracy $\bar p$, and counts $|z| > 1.96$.

# %%
def separated_share(p_a: float, p_b: float, n: int, trials: int = 400, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    right_a = rng.binomial(n, p_a, size=trials) / n  # (trials,) accuracies of model a
    right_b = rng.binomial(n, p_b, size=trials) / n
    pooled = (right_a + right_b) / 2
    z = (right_a - right_b) / np.sqrt(np.maximum(pooled * (1 - pooled), 1e-12) * 2 / n)
    return float(np.mean(np.abs(z) > 1.96))


checks.check_separated_share(separated_share, stats.questions_needed)

# %% [markdown]
# At the formula's $N$ the simulated power is close to the promised 0.8; with a quarter of the
# questions it falls below a third. For a 2-point gap at 70%, $N$ is about 8,000 per model, so two
# 2,000-question samples (a quarter of that) separate two such models in little more than one trial
# of four. On the *same* 2,000 questions a paired test does much better when the models mostly
# agree (chapter 7.7).

# %%
n_full = stats.questions_needed(0.72, 0.70)
power_full, power_quarter = separated_share(0.72, 0.70, n_full, 1000, 1), separated_share(0.72, 0.70, 2000, 1000, 2)
print(f"72% vs 70%: N = {n_full:,}; simulated power at N {power_full:.2f}, at 2,000 questions {power_quarter:.2f}")
claims.between("the simulated power at the formula's N", power_full, 0.72, 0.88)
_ = claims.between("the simulated power at 2,000 questions", power_quarter, 0.2, 0.45)
