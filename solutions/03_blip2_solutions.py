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
# # Solutions: BLIP-2 and the Q-Former
#
# [![Open in Colab](../images/colab-badge.svg)](https://colab.research.google.com/github/mmllm-course/multimodal-llms-hands-on/blob/main/solutions/03_blip2_solutions.ipynb)

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
# Worked answers to the exercises of [chapter 3](../chapters/03_blip2.ipynb). Each answer is
# followed by the same checker the chapter uses, and by a comparison with the library.

# %%
import torch

from utils import chat, checks, qformer

# %% [markdown]
# ## Exercise 3.1 -- the ITG mask
#
# Start from "nobody sees anything" and open the three blocks one by one: every row sees the
# queries (the first Q columns); the query rows must not see the text, so that block stays
# closed; the text block is a lower triangle, token $t$ seeing $0..t$.

# %%
def itg_mask(Q: int, L: int) -> torch.Tensor:
    allowed = torch.zeros(Q + L, Q + L, dtype=torch.bool)
    allowed[:, :Q] = True  # queries are visible to every row
    allowed[Q:, Q:] = torch.tril(torch.ones(L, L, dtype=torch.bool))  # causal text
    return allowed  # allowed[:Q, Q:] stays False: queries never read the caption


checks.check_itg_mask(itg_mask)

# %% [markdown]
# The library's version gives the same matrix; printed for Q = 2 queries and L = 3 text tokens
# (1 = may attend):

# %%
print(itg_mask(2, 3).int())
print("equal to utils.qformer.itg_mask:", torch.equal(itg_mask(2, 3), qformer.itg_mask(2, 3)))

# %% [markdown]
# ## Exercise 3.2 -- the chat prompt
#
# Format each finished turn, then the open question, and join with spaces. Checking the
# question *before* building anything means an empty message fails fast with a message that
# says what is wrong.

# %%
def build_prompt(history: list[tuple[str, str]], question: str) -> str:
    if not question.strip():
        raise ValueError("the question is empty: type some words")
    turns = [f"Question: {q.strip()} Answer: {a.strip()}." for q, a in history]
    return " ".join(turns + [f"Question: {question.strip()} Answer:"])


checks.check_build_prompt(build_prompt)

# %%
history = [("How many shapes are there?", "2"), ("What colour is the square?", "green")]
print(build_prompt(history, "Where is the square relative to the circle?"))
print("same as utils.chat.build_prompt:",
      build_prompt(history, "Is it large?") == chat.build_prompt(history, "Is it large?"))

# %% [markdown]
# ## Exercise 3.3 -- cross-attention
#
# Queries come from one sequence, keys and values from another: that is the only difference
# from self-attention. The scores are (B, Q, N) -- one row per query, one column per image
# token -- and the softmax runs over the last axis, the N keys.

# %%
def cross_attention(queries: torch.Tensor, keys_values: torch.Tensor, Wq: torch.Tensor, Wk: torch.Tensor,
                    Wv: torch.Tensor) -> torch.Tensor:
    q = queries @ Wq  # (B, Q, D)
    k = keys_values @ Wk  # (B, N, D)
    v = keys_values @ Wv  # (B, N, D)
    scores = q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5  # (B, Q, N)
    return scores.softmax(dim=-1) @ v  # (B, Q, D)


checks.check_cross_attention(cross_attention)

# %% [markdown]
# However many image tokens N there are, the output has one row per query: with 4 queries
# and 50 image tokens, 4 vectors come out.

# %%
torch.manual_seed(0)
D = 8
out = cross_attention(torch.randn(1, 4, D), torch.randn(1, 50, D), *(torch.randn(D, D) for _ in range(3)))
print(tuple(out.shape))
