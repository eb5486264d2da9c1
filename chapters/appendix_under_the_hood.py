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
# # Appendix: under the hood
#
# [![Open in Colab](../images/colab-badge.svg)](https://colab.research.google.com/github/mmllm-course/multimodal-llms-hands-on/blob/main/chapters/appendix_under_the_hood.ipynb)

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
# The chapters are about multimodal models. This page is about the machinery that runs them: the
# environment report, the model zoo and the exact checkpoints it pins, how chapter 0's T4 plan is
# worked out, the rehearsal that tests full mode without a GPU, and how the course tests itself.
# It is written for maintainers and for a reader filing a bug; no chapter depends on it. The
# commands and their options are listed once, in the README's
# [table of scripts](https://github.com/mmllm-course/multimodal-llms-hands-on#scripts-and-their-options);
# this page says how things work.

# %% [markdown]
# ## A.1 The environment report
#
# `utils.runtime` picks the mode once, when a notebook first imports it: **full** when a CUDA GPU
# is present and the Hugging Face Hub accepts a connection within `runtime.HUB_TIMEOUT_S`
# seconds, **tiny** otherwise. These environment variables change what it does:
#
# | variable | what it does |
# |---|---|
# | `MMLLM_MODE` | `tiny`, `full`, `auto` (the default: the rule above) or `rehearsal` (section A.4) |
# | `MMLLM_THREADS` | how many CPU threads PyTorch uses |
# | `HF_HUB_OFFLINE=1` | no request ever goes to the Hub, so under `auto` the mode is tiny |
# | `HF_HUB_DOWNLOAD_TIMEOUT` | how many seconds any one request to the Hub may wait for an answer; the course sets 30 unless you set it |
# | `MMLLM_HUB_STALL_S` | how many seconds a full-mode download may receive nothing before `zoo.path` gives up and says how to retry (default 60) |
# | `MMLLM_REHEARSAL_DIR` | where the rehearsal builds its stand-ins (default `~/.cache/mmllm-course/rehearsal`) |
#
# Full mode's downloads go to huggingface_hub's cache (`HF_HUB_CACHE`, by default
# `~/.cache/huggingface/hub`); a checkpoint the Hub offers only as PyTorch `.bin` files is
# converted to safetensors once, into `~/.cache/mmllm-course/safetensors`. Deleting these folders
# costs a download, nothing more.
#
# The report below says what was picked, on which device, the course's own version (its git
# commit, when it runs from a git checkout, as it does on Colab), the GPU, CUDA and driver, the
# operating system, the vector instructions PyTorch's CPU kernels use (they change the last digits
# of a float, section A.5), and the versions of the libraries whose behaviour the course relies
# on. Paste it into a bug report, with the cell that failed and its message; a claim that fails
# (section A.5) asks for it too. It describes the computer that ran this page, so yours will
# differ, and the notebook tests do not compare it.

# %% tags=["nbval-ignore-output"]
from utils import runtime

runtime.print_environment_report()

# %% [markdown]
# ## A.2 The model zoo
#
# Every name a chapter passes to `zoo.path` is one entry of `utils/zoo.py`: a Hub checkpoint for
# full mode, pinned to a commit so that a reader gets the same weights next year as today (the
# table shows the first seven characters of each 40-character hash), and a folder under
# `models/` for tiny mode. Entries marked "(the tiny one)" have no Hub checkpoint behind them, so
# the same folder serves both modes: chapter 6's models stand for methods without an ungated
# transformers checkpoint, and `clip-heldout` is chapter 2's tiny CLIP trained without three
# colour-shape combinations, an experiment about ShapesWorld that no real checkpoint repeats.
# Kosmos-2 runs in full mode only, with the tiny PaliGemma in its place offline. Sizes are in MiB
# ($2^{20}$ bytes); `t4plan.print_table` prints any such list of rows as columns.

# %%
from utils import t4plan, zoo

t4plan.print_table(zoo.table())
total = sum(zoo.own_size(item.local_dir) for item in zoo.REGISTRY.values())
print(f"\nall tiny checkpoints together: {total / 2**20:.1f} MiB of the 30 MiB budget")

# %% [markdown]
# Each tiny folder is rebuilt, deterministically and on a CPU, by the command its entry names, after
# the checkpoints that command reads (its `needs`: a judge, a text encoder); `make assets` rebuilds
# them all and prints each folder's size against the budget. A folder also carries a `SHA256SUMS`
# file: `zoo.path` checks it before loading, so a damaged or half-copied checkpoint fails with the
# command that rebuilds it rather than with a confusing error inside `from_pretrained`.

# %%
for item in zoo.REGISTRY.values():
    needs = f"   (after {', '.join(item.needs)})" if item.needs else ""
    print(f"{item.name:<15} {item.rebuild}{needs}")

# %% [markdown]
# CLIP's tokenizer is the one checkpoint that is not trained: `scripts/build_clip_tokenizer.py`
# converts the merge list published inside the `open-clip-torch` wheel
# (`open_clip/bpe_simple_vocab_16e6.txt.gz`) into the tokenizer files that
# `CLIPTokenizer.from_pretrained` reads, which give the same ids as the real
# `openai/clip-vit-base-patch32`. Rebuilding it needs the network once, for pip to download that
# wheel (without installing it); the result is shipped, so reading it never does. The tiny CLIP's
# script also trains on two processes, which is how chapter 2's loss across processes is checked
# against one process.

# %% [markdown]
# ## A.3 How the T4 plan is worked out
#
# Chapter 0 shows, for each notebook, what its full mode asks of a free Colab T4. Nothing in that
# table is typed in; `utils.t4plan` computes it from two records and a few stated assumptions:
#
# 1. **The real checkpoints' configuration files**, kept in `configs/` (where each was copied from:
#    `configs/SOURCES.md`). Each model is built at full size on PyTorch's `meta` device, which
#    allocates no memory, to count its parameters per part; the diffusion UNet and VAE are even run
#    there, at batch 1, to measure their activations and count their FLOPs.
# 2. **Every call each notebook makes of its models** -- batch sizes, sequence lengths, image sizes,
#    new tokens, sampling steps -- recorded while the notebook runs in the rehearsal (section A.4)
#    into `configs/t4_workload.json`.
#
# The machine's figures come from NVIDIA's T4 datasheet and a free Colab runtime; the assumptions
# are named where they are used in `utils/t4plan.py`:

# %%
print(f"a T4: {t4plan.T4['gpu_gib']:g} GiB of GPU memory, {t4plan.T4['fp16_flops'] / 1e12:g} TFLOPS in float16, "
      f"{t4plan.T4['bandwidth'] / 1e9:g} GB/s; Colab's host RAM: {t4plan.T4['host_gb']:g} GB")
print(f"each notebook's limits: {t4plan.GPU_LIMIT_GIB:g} GiB of GPU memory, {t4plan.HOST_LIMIT_GIB:g} GiB of host RAM")
print("assumptions:")
for key, value in t4plan.ASSUMPTIONS.items():
    print(f"  {key} = {value:g}")

# %% [markdown]
# The whole plan, with the weights each notebook keeps on the GPU and the call that sets its peak:

# %%
plans = [p for p in t4plan.plan() if p.models]
t4plan.print_table(t4plan.table(plans))
print("\nthe largest call of each notebook:")
for p in plans:
    print(f"  {p.chapter:<15} {p.largest_call}")

# %% [markdown]
# How each column is made:
#
# - **peak GPU** = `cuda_overhead_gib` (the CUDA context, cuBLAS's workspace and the allocator's
#   slack) + the weights of every model the notebook keeps on the GPU, as loaded (LLaVA's
#   language model in 4 bits at `nf4_bytes_per_parameter`, BLIP-2's Q-Former in float32 as
#   transformers keeps it, the rest in float16) + the activations and key-value cache of its
#   largest call. Full mode's LLaVA batch size is chosen by `t4plan.largest_batch` (through
#   `llava.full_mode_batch`) so that this stays within the limit; BLIP-2's answers come in the
#   fixed batches of `blip2.generate_text`, which the plan costs like any other recorded call.
# - **host RAM** = `host_baseline_gib` (a Colab kernel after importing torch, transformers and
#   diffusers) + what loading needs: a model moved to the GPU with `.to("cuda")` passes through
#   host memory whole, one loaded with `device_map` tensor by tensor.
# - **download** is the weights of the models the notebook loads, as the Hub stores them.
# - **T4 time** adds up the notebook's calls of the real models: their FLOPs at
#   `matmul_efficiency` of the T4's peak and, for each generated token, the longer of its FLOPs and
#   one read of the weights and the key-value cache at `bandwidth_efficiency` of the T4's
#   bandwidth. The downloads and the small models a chapter trains itself come on top.
#
# Two special cases are listed in `utils/t4plan.py`: `KEPT_ON_CPU` (chapter 1 runs ViT-B/16 on one
# photo, on the CPU, so its notebook has no row) and `ONE_AT_A_TIME` (chapter 7 frees BLIP-2
# before it loads LLaVA, so its weights and peak are those of whichever needs more alone, while its
# download is both). The shapes in the "largest call" list are the real ones: batch sizes,
# lengths and image sizes as the notebook used them, and widths (the last size of an
# `inputs_embeds` or `image_embeds`) read from the real configuration, since the stand-ins that
# recorded the calls are narrower. `tests/test_rehearsal.py` fails if any notebook leaves its
# limits or needs an estimated 10 minutes or more of T4 compute (downloads excluded).

# %% [markdown]
# ## A.4 The rehearsal: full mode without a GPU
#
# CI has no GPU and no Hub, so full mode could break unnoticed. `MMLLM_MODE=rehearsal` runs every
# notebook's full-mode code anyway, in float16 on the CPU, against *stand-ins* of the real
# checkpoints that `utils/rehearsal.py` builds offline, in seconds, from the same configuration
# files in `configs/` (into the folder of section A.1). A stand-in keeps the real model and
# processor classes, image and patch sizes, vocabulary, special tokens and their ids, chat
# template, generation config and file layout (Stable Diffusion's fp16 variant, LLaVA's 4-bit
# loading through bitsandbytes); only its layers are narrow and its weights random. One size is
# not kept: Stable Diffusion's stand-in samples at 64 px rather than 512, since its UNet at full
# size would take hours on a CPU, and the calls it records are scaled back to 512 px, so the T4
# plan costs the real size. Here is what changes for CLIP ViT-B/32:

# %%
from utils import rehearsal

real = rehearsal.recorded(zoo.entry("clip").hub_id, "config.json")
stand_in = {tower: rehearsal.narrowed(real[tower]) for tower in ("vision_config", "text_config")}
keys = ["hidden_size", "intermediate_size", "num_attention_heads", "num_hidden_layers", "image_size", "patch_size",
        "vocab_size", "max_position_embeddings"]
print(f"{'':<28}{'real':>8}{'stand-in':>10}")
for tower in ("vision_config", "text_config"):
    for key in keys:
        if key in real[tower]:
            print(f"{tower.split('_')[0] + ' ' + key:<28}{real[tower][key]:>8}{stand_in[tower][key]:>10}")

# %% [markdown]
# The widths and depths shrink; everything that decides how the inputs are cut and which ids the
# tokenizer gives stays as it is, so a prompt with the wrong number of image tokens, a processor
# called with the wrong arguments or a chat template that does not apply fails in the rehearsal
# as it would on Colab. Its answers are noise and are never stored.
#
# `make rehearse` rehearses every chapter and solution and records their model calls into
# `configs/t4_workload.json`, the file the T4 plan costs (`scripts/rehearse.py` can also rehearse a
# single notebook; its options are in the README's table of scripts). `tests/test_rehearsal.py`
# runs the whole rehearsal (it is marked `slow`, about 3 minutes on 2 cores) and fails when the
# recorded calls differ from `configs/t4_workload.json`, so the plan cannot drift from the
# chapters.
#
# What the rehearsal cannot show: anything that needs CUDA (placement on a real GPU, bitsandbytes'
# GPU kernels, running out of memory), the downloads from the Hub, and the real models' answers.

# %% [markdown]
# ## A.5 How the course is tested
#
# Every output in the book comes from a fresh top-to-bottom run in tiny mode
# (`scripts/execute_notebooks.py`, which `make book` calls), and the tests run the notebooks again
# and compare. The main commands, each of which sets up `.venv` itself (the README lists them all):
#
# | command | what it does |
# |---|---|
# | `make check` | the quick inner loop: unit, parity and checker tests, without the notebooks and the tests marked `slow` |
# | `make test` | everything: the tests above, nbval over every chapter and solution, the rehearsal, the book build and its screenshots in Chromium |
# | `make test-portable` | `make test` again under two other floating-point configurations |
# | `make book` | execute every notebook in tiny mode, then build the book into `_build/html` |
# | `make rehearse` | section A.4 |
# | `make sync` | pair every notebook with its py:percent file (edit the `.py`, then sync or `make book`) |
# | `make assets` | retrain every tiny checkpoint (section A.2) |
# | `make pins` | regenerate `requirements-colab.txt` and `environment.yml` from `requirements.txt` |
#
# `make book` and `make test` run in tiny mode with `HF_HUB_OFFLINE=1`, `PYTHONHASHSEED=0` and one
# CPU thread per notebook kernel, two notebooks at a time: the one thread is for speed with two
# kernels side by side, not for reproducibility.
#
# **What nbval compares.** Different processors add up long sums in different orders (vector
# widths, thread counts, MKL's and oneDNN's choice of kernel, Apple silicon against x86), so the
# seventh digit of a float differs between computers, and training or sampling amplifies that into
# a different second digit. nbval therefore compares exactly only what every computer reproduces:
# shapes, counts, token ids, everything ShapesWorld generates, closed-form maths printed to at most
# four decimals, and what the shipped checkpoints output on fixed inputs (similarities to two or
# three decimals, captions, answers, and scores over many of them). The checkpoints in `models/`
# are data, identical everywhere; float rounding moves their logits by about 1e-5, far below the
# printed digits. Agreement between two implementations is printed as the bound it stays within
# ("agree to within 1e-5"), never as a round-off-sized number. Whatever comes out of training or
# sampling, and any output of a checkpoint that rests on a near tie (two candidate tokens or scores
# within 1e-3, which another processor could tip), is printed in a cell tagged
# `nbval-ignore-output`, and what the text claims about it is checked in that cell or the next
# with `utils.claims`, at a stated tolerance. A claim that fails stops the notebook with one
# sentence; this is what a reader sees when, say, a learning rate was set 1000 times too small:

# %%
from utils import claims

try:
    claims.at_least("held-out accuracy after 5 epochs", 0.31, 0.95)
except claims.ClaimError as error:
    print(f"{type(error).__name__}: {error}")

# %% [markdown]
# The test suite holds the notebooks to these rules mechanically (`tests/test_notebooks.py`): every
# notebook is paired with its `.py` and in sync, starts with the standard title, Colab badge and
# setup cell (`scripts/notebook_header.py` restores them), was executed in order without errors or
# warnings, prints no round-off-sized digits in a compared output, and checks a claim wherever it
# ignores an output -- the environment report in section A.1 is the one exception, since it
# describes the machine rather than a result. Three more checks look at the rules' intent:
#
# - `scripts/near_ties.py` runs a notebook and lists the outputs of a shipped checkpoint that rest
#   on a near tie; such a cell must be ignored by nbval and check its claim instead.
# - `scripts/plant_failures.py` breaks one thing per chapter on purpose (a learning rate, the
#   all-reduce, the attention scale) in a copy of the repository and checks that the chapter's
#   tests catch it.
# - `make test-portable` runs `make test` again under two other floating-point configurations of
#   the same machine: PyTorch without vector instructions and two threads per kernel
#   (`ATEN_CPU_CAPABILITY=default`), and PyTorch and oneDNN limited to AVX2 with MKL on its
#   vendor-neutral branch (`MKL_CBWR=COMPATIBLE`). Run it before closing work that touches a
#   notebook; it prints each configuration's wall time.
#
# A few smaller conventions: `scripts/execute_notebooks.py` keeps only the final state of a
# progress bar in the stored output, as Jupyter shows it; nbval runs cells without IPython's
# history, so a trailing `;` does not hide a value there, and the exercise checkers return an
# object that displays nothing; benchmarks are scripts that print figures (`make bench`), never
# timed tests.
#
# **Filing a bug.** Open an issue on the course's
# [issue tracker](https://github.com/mmllm-course/multimodal-llms-hands-on/issues) with the
# environment report of section A.1, the notebook and cell, the message it printed, and whether
# `make check` passes on your computer.
