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
# # Solutions: Diffusion models
#
# [![Open in Colab](../images/colab-badge.svg)](https://colab.research.google.com/github/mmllm-course/multimodal-llms-hands-on/blob/main/solutions/05_diffusion_solutions.ipynb)

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
# Worked answers to the exercises of [chapter 5](../chapters/05_diffusion.ipynb). Each answer is
# followed by the same checker the chapter uses, and by a comparison with the library.

# %%
import math

import torch

from utils import checks, claims
from utils.diffusion import NoiseSchedule

# %% [markdown]
# ## Exercise 5.1 -- jump to step t
#
# $\bar\alpha = \mathrm{cumprod}(1 - \beta)$, and index $t$ holds the product of the first $t + 1$
# factors, the paper's $\bar\alpha_{t+1}$. Reshape the per-image values to $(B, 1, 1, 1)$ so they
# broadcast over channels and pixels.

# %%
def q_sample(x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor, betas: torch.Tensor) -> torch.Tensor:
    alpha_bar = torch.cumprod(1 - betas, dim=0)  # (T,)
    alpha_bar_t = alpha_bar[t].reshape(-1, *([1] * (x0.ndim - 1))).to(x0.dtype)  # (B, 1, 1, 1)
    return torch.sqrt(alpha_bar_t) * x0 + torch.sqrt(1 - alpha_bar_t) * eps


checks.check_q_sample(q_sample)

# %% [markdown]
# It agrees with the library's `NoiseSchedule.q_sample`:

# %%
schedule = NoiseSchedule.linear()
generator = torch.Generator().manual_seed(0)
x0, eps = torch.randn((3, 3, 8, 8), generator=generator), torch.randn((3, 3, 8, 8), generator=generator)
t = torch.tensor([0, 500, 999])
claims.close("q_sample vs NoiseSchedule.q_sample", q_sample(x0, t, eps, schedule.betas), schedule.q_sample(x0, t, eps), atol=1e-5)
print("q_sample and the library agree to within 1e-5")

# %% [markdown]
# ## Exercise 5.2 -- the cosine schedule
#
# Evaluate $f$ at $t = 1, \dots, T$ and divide by $f(0)$, so that the product of the alphas would
# start from 1. The library also clips each $\beta_t$ at 0.999, which changes only the last step.

# %%
def cosine_alpha_bars(T: int, s: float = 0.008) -> torch.Tensor:
    def f(t: torch.Tensor) -> torch.Tensor:
        return torch.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2

    return f(torch.arange(1, T + 1, dtype=torch.float64)) / f(torch.tensor(0.0, dtype=torch.float64))


checks.check_cosine_alpha_bars(cosine_alpha_bars)

# %% tags=["nbval-ignore-output"]
ours, library = cosine_alpha_bars(1000), NoiseSchedule.cosine().alpha_bars
claims.close("cosine_alpha_bars vs the library over the first 999 steps", ours[:-1], library[:-1], atol=1e-12)
print("over the first 999 steps they agree with the library to within 1e-12")
claims.at_most("the last alpha_bar without clipping", ours[-1], 1e-30)
claims.between("the library's last alpha_bar (its last beta clipped at 0.999)", library[-1], 2e-9, 3e-9)
print(f"last step: {ours[-1]:.2e} here, {library[-1]:.2e} in the library (its last beta is clipped at 0.999)")

# %% [markdown]
# ## Exercise 5.3 -- one reverse step
#
# The posterior mean weighs the clean image and the noisy one. At index 0 (the paper's $t = 1$)
# there is no earlier step, and $\bar\alpha_{t-1}$ is 1 by definition: reading `alpha_bar[t - 1]`
# there would silently wrap around to the last entry.

# %%
def posterior_mean(x0: torch.Tensor, x_t: torch.Tensor, t: int, betas: torch.Tensor) -> torch.Tensor:
    alphas = 1 - betas
    alpha_bars = torch.cumprod(alphas, dim=0)
    alpha_bar_prev = alpha_bars[t - 1] if t > 0 else torch.ones((), dtype=betas.dtype)
    coef_x0 = torch.sqrt(alpha_bar_prev) * betas[t] / (1 - alpha_bars[t])
    coef_xt = torch.sqrt(alphas[t]) * (1 - alpha_bar_prev) / (1 - alpha_bars[t])
    return coef_x0 * x0 + coef_xt * x_t


checks.check_posterior_mean(posterior_mean)

# %% [markdown]
# With the noise estimate turned into $\hat x_0$, this mean plus $\sqrt{\tilde\beta_t}\, z$ is the whole reverse step:

# %%
x_t = schedule.q_sample(x0, 400, eps)
x0_hat = schedule.predict_x0(x_t, 400, eps)
mean, _ = schedule.posterior(x0_hat, x_t, 400)
claims.close("posterior_mean vs NoiseSchedule.posterior", posterior_mean(x0_hat.double(), x_t.double(), 400, schedule.betas), mean,
             atol=1e-5)
print("posterior_mean and NoiseSchedule.posterior agree to within 1e-5")
