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
# # 5. Diffusion models: from noise to images
#
# [![Open in Colab](../images/colab-badge.svg)](https://colab.research.google.com/github/mmllm-course/multimodal-llms-hands-on/blob/main/chapters/05_diffusion.ipynb)

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
# The previous chapters went from images to words. This one goes the other way. A diffusion
# model learns to create images by learning to undo a process that destroys them: add a little
# Gaussian noise, then a little more, a thousand times, until nothing of the picture is left.
# Destroying needs no learning at all. Undoing one small step is a denoising problem a neural
# network can learn, and chaining a thousand learned steps turns pure noise into a new image.
# Stable Diffusion runs the same process in the compressed latent space of an autoencoder and
# steers it with CLIP's text encoder from chapter 2.
#
# **What you will learn**
# - the forward process $q(x_t \mid x_{t-1})$, its closed form $q(x_t \mid x_0)$, and noise schedules;
# - the reverse process $p_\theta(x_{t-1} \mid x_t)$: the posterior, the noise-prediction objective and the sampling loop,
#   each equal to diffusers' `DDPMScheduler`;
# - how to train a DDPM, on points in the plane and on ShapesWorld images, on a CPU;
# - latent diffusion: why a VAE makes diffusion cheaper, with the numbers for Stable Diffusion;
# - text conditioning through cross-attention and classifier-free guidance, from a tiny model to Stable Diffusion.
#
# **Prerequisites**: chapter 2 (CLIP's text encoder); Gaussian distributions; chapter 1's tiny ViT is used as a judge.

# %%
import json
import math
import time

import matplotlib.pyplot as plt
import numpy as np
import torch

from utils import claims, diffusion, images, plotting, runtime, zoo  # first: runtime silences known-harmless warnings
from utils.diffusion import NoiseSchedule
from utils.shapes import COLOURS, SHAPES, ShapesWorld

from diffusers import DDIMPipeline, DDIMScheduler, DDPMPipeline, DDPMScheduler, StableDiffusionPipeline  # noqa: E402

runtime.seed_everything(0)
torch.set_printoptions(precision=4, sci_mode=False)

# %% [markdown]
# ## 5.1 The forward process, one step at a time
#
# Take a clean image $x_0$. The forward process adds Gaussian noise in $T$ small steps, each
# shrinking the previous image a little and adding noise of variance $\beta_t$:
#
# $$q(x_t \mid x_{t-1}) = \mathcal{N}\big(x_t;\ \sqrt{1 - \beta_t}\, x_{t-1},\ \beta_t \mathbf{I}\big),
#   \qquad\text{i.e.}\qquad x_t = \sqrt{1 - \beta_t}\, x_{t-1} + \sqrt{\beta_t}\, \epsilon, \quad \epsilon \sim \mathcal{N}(0, \mathbf{I}).$$
#
# $\mathbf{I}$ says every pixel and channel gets its own independent noise. We start with a photo
# as a $[3 \times 224 \times 224]$ tensor, scaled to $[-1, 1]$ as diffusion models expect.

# %%
photo = images.sample_image("astronaut").resize((224, 224))
x0 = torch.from_numpy(np.asarray(photo, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)  # (3, 224, 224)
print(f"x0: shape {list(x0.shape)}, values from {x0.min():.2f} to {x0.max():.2f}")

# %% [markdown]
# The course material works through the very first step with DDPM's $\beta_1 = 0.0001$: the image
# is scaled by $\sqrt{1 - 0.0001}$ and each element of the noise $\epsilon_1$ is drawn from
# $\mathcal{N}(0, \beta_1)$, a standard deviation of $\sigma = \sqrt{0.0001} = 0.01$. The code takes
# that step and measures the noise it added.

# %%
schedule = NoiseSchedule.linear()  # beta from 1e-4 to 0.02 over T = 1000 steps
beta_1 = schedule.betas[0].item()  # index 0 holds the paper's step t = 1
generator = torch.Generator().manual_seed(0)
epsilon_1 = math.sqrt(beta_1) * torch.randn(x0.shape, generator=generator)  # each element ~ N(0, beta_1)
x1 = math.sqrt(1 - beta_1) * x0 + epsilon_1
print(f"beta_1 = {beta_1:.4f}; scale sqrt(1 - beta_1) = {math.sqrt(1 - beta_1):.6f}; sigma = sqrt(beta_1) = {math.sqrt(beta_1):.4f}")
print(f"the noise actually added: mean {epsilon_1.mean():+.5f}, standard deviation {epsilon_1.std():.5f} "
      f"over {epsilon_1.numel():,} elements")
print(f"x1 has shape {list(x1.shape)}; the largest change to any pixel is {(x1 - x0).abs().max():.3f}")

# %% [markdown]
# The library's `q_step` is the same formula (the schedule stores $\beta$ in an array indexed
# from 0, as diffusers does, so index $t$ is the paper's step $t + 1$):

# %%
torch.testing.assert_close(schedule.q_step(x0[None], 0, epsilon_1[None] / math.sqrt(beta_1))[0], x1)
print("schedule.q_step reproduces x1")

# %% [markdown]
# One step barely changes the photo. Now the whole chain: 1000 steps, applied one after the
# other, keeping the image at a few points along the way. Look at how slowly the first hundred
# steps erase the picture and how completely the last ones do.

# %%
keep = [0, 50, 100, 250, 500, 1000]
x, strip = x0[None], {0: x0}
generator = torch.Generator().manual_seed(1)
for t in range(1, schedule.T + 1):  # the paper's steps 1..T
    x = schedule.q_step(x, t - 1, torch.randn(x.shape, generator=generator))
    if t in keep:
        strip[t] = x[0]
fig = plotting.show_images([diffusion.to_pil(strip[t]) for t in keep], [f"t = {t}" for t in keep], columns=6, size=2.0,
                           title="The forward process, applied step by step")

# %% [markdown]
# ## 5.2 Jumping straight to step $t$
#
# Training needs noisy images at random steps, and walking $t$ steps every time would be slow.
# Because each step is Gaussian, so is their composition. Write $\alpha_t = 1 - \beta_t$ and
# $\bar\alpha_t = \prod_{s \le t} \alpha_s$. Two steps give
# $x_2 = \sqrt{\alpha_2}\big(\sqrt{\alpha_1} x_0 + \sqrt{1 - \alpha_1}\,\epsilon_1\big) + \sqrt{1 - \alpha_2}\,\epsilon_2$;
# the two noise terms are independent, so their variances add:
# $\alpha_2 (1 - \alpha_1) + (1 - \alpha_2) = 1 - \alpha_1 \alpha_2$. By induction
#
# $$q(x_t \mid x_0) = \mathcal{N}\big(x_t;\ \sqrt{\bar\alpha_t}\, x_0,\ (1 - \bar\alpha_t) \mathbf{I}\big),
#   \qquad x_t = \sqrt{\bar\alpha_t}\, x_0 + \sqrt{1 - \bar\alpha_t}\, \epsilon .$$
#
# A formula like this deserves an empirical check. We run the step-by-step chain on 4,000 copies
# of 300 pixels of the photo and compare the mean and variance of the result at step 250 with
# $\sqrt{\bar\alpha_t}\, x_0$ and $1 - \bar\alpha_t$.

# %%
t = 250
pixels = x0.flatten()[::500][:300]  # 300 pixel values of the photo
chain = pixels.expand(4000, -1).double()  # (4000, 300): 4,000 independent runs of the chain
generator = torch.Generator().manual_seed(2)
for s in range(t):
    chain = torch.sqrt(1 - schedule.betas[s]) * chain + torch.sqrt(schedule.betas[s]) * torch.randn(chain.shape, generator=generator, dtype=torch.float64)
alpha_bar_t = schedule.alpha_bars[t - 1]
mean_error = (chain.mean(0) - torch.sqrt(alpha_bar_t) * pixels).abs().mean()
variance_error = (chain.var(0) - (1 - alpha_bar_t)).abs().mean()
# With n runs, a sample mean and a sample variance are off by sigma / sqrt(n) and sigma^2 sqrt(2 / (n - 1))
# typically; for a normal error E|error| is sqrt(2 / pi) ~ 0.80 times that standard error.
n = len(chain)
print(f"t = {t}: alpha_bar_t = {alpha_bar_t:.4f}, so the mean should be {math.sqrt(alpha_bar_t):.4f} x0 and the variance {1 - alpha_bar_t:.4f}")
print(f"average error over the 300 pixels: mean {mean_error:.4f}, variance {variance_error:.4f}")
print(f"expected from sampling alone:       mean {0.8 * math.sqrt((1 - alpha_bar_t) / n):.4f}, variance {0.8 * (1 - alpha_bar_t) * math.sqrt(2 / (n - 1)):.4f}")

# %% [markdown]
# The errors are the size that sampling noise alone explains, so the shortcut samples the same
# distribution. `schedule.q_sample` implements it; here is the same strip in one jump per image.

# %%
noise = torch.randn((len(keep) - 1, *x0.shape), generator=torch.Generator().manual_seed(3))
jumped = schedule.q_sample(x0.expand(len(keep) - 1, -1, -1, -1), torch.tensor(keep[1:]) - 1, noise)
fig = plotting.show_images([diffusion.to_pil(x0)] + [diffusion.to_pil(x) for x in jumped], [f"t = {t}" for t in keep],
                           columns=6, size=2.0, title="The closed form q(x_t | x_0): one jump per image")

# %% [markdown]
# ## 5.3 Noise schedules
#
# The schedule $\beta_1, \dots, \beta_T$ decides how fast the signal fades. DDPM's **linear**
# schedule raises $\beta_t$ from $10^{-4}$ to $0.02$. Nichol and Dhariwal's **cosine** schedule
# defines $\bar\alpha_t = f(t) / f(0)$ directly, with $f(t) = \cos^2\!\big(\tfrac{t/T + s}{1 + s} \cdot \tfrac{\pi}{2}\big)$
# and $s = 0.008$ (dividing by $f(0)$ makes $\bar\alpha_0 = 1$), which keeps more signal in the middle steps. The **signal-to-noise ratio**
# $\mathrm{SNR}(t) = \bar\alpha_t / (1 - \bar\alpha_t)$ compares the two parts of $x_t$.

# %%
cosine = NoiseSchedule.cosine()
steps = np.arange(1, schedule.T + 1)
fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.4))
for name, s in [("linear", schedule), ("cosine", cosine)]:
    left.plot(steps, s.alpha_bars.numpy(), label=name)
    right.plot(steps, np.log10(s.snr().numpy()), label=name)
left.set(xlabel="step t", ylabel=r"$\bar\alpha_t$", title="How much of x0 is left")
right.set(xlabel="step t", ylabel=r"$\log_{10}$ SNR(t)", title="Signal-to-noise ratio")
left.legend(), right.legend()
fig.tight_layout()
for name, s in [("linear", schedule), ("cosine", cosine)]:
    print(f"{name}: alpha_bar at t = 250, 500, 1000: " + ", ".join(f"{s.alpha_bars[t - 1]:.4f}" for t in (250, 500, 1000)))

# %% [markdown]
# Under the linear schedule the image is mostly gone by step 500 ($\bar\alpha_{500} \approx 0.08$),
# so half of the steps spend their time on near-noise; the cosine schedule fades more evenly.
# Both equal diffusers' `DDPMScheduler`, which Hugging Face pipelines use, to float32 precision:

# %%
for name, diffusers_name, s in [("linear", "linear", schedule), ("cosine", "squaredcos_cap_v2", cosine)]:
    reference = DDPMScheduler(num_train_timesteps=1000, beta_schedule=diffusers_name)
    claims.close(f"the {name} alpha_bar vs DDPMScheduler.alphas_cumprod", s.alpha_bars.float(), reference.alphas_cumprod, atol=1e-6)
    print(f"{name}: alpha_bar and DDPMScheduler.alphas_cumprod agree to within 1e-6")
reference = DDPMScheduler(num_train_timesteps=1000)
t_batch = torch.tensor([0, 99, 499, 999])
noise = torch.randn((4, *x0.shape), generator=torch.Generator().manual_seed(4))
ours, theirs = schedule.q_sample(x0.expand(4, -1, -1, -1), t_batch, noise), reference.add_noise(x0.expand(4, -1, -1, -1), noise, t_batch)
claims.close("q_sample vs DDPMScheduler.add_noise", ours, theirs, atol=1e-5)
print("q_sample and DDPMScheduler.add_noise agree to within 1e-5")

# %% [markdown]
# ## 5.4 The reverse process
#
# To generate, we run the chain backwards: start from $x_T \sim \mathcal{N}(0, \mathbf{I})$ and
# step to $x_{T-1}, \dots, x_0$. Each reverse step is modelled as a Gaussian whose mean a network
# predicts:
#
# $$p_\theta(x_{t-1} \mid x_t) = \mathcal{N}\big(x_{t-1};\ \mu_\theta(x_t, t),\ \Sigma_\theta(x_t, t)\big).$$
#
# What should $\mu_\theta$ aim for? If we knew $x_0$, the reverse step would be exact and Gaussian
# (Bayes' rule on two Gaussians), the **posterior**
#
# $$q(x_{t-1} \mid x_t, x_0) = \mathcal{N}\big(\tilde\mu_t, \tilde\beta_t \mathbf{I}\big), \quad
#   \tilde\mu_t = \frac{\sqrt{\bar\alpha_{t-1}}\,\beta_t}{1 - \bar\alpha_t} x_0 + \frac{\sqrt{\alpha_t}\,(1 - \bar\alpha_{t-1})}{1 - \bar\alpha_t} x_t, \quad
#   \tilde\beta_t = \frac{1 - \bar\alpha_{t-1}}{1 - \bar\alpha_t} \beta_t .$$
#
# We do not know $x_0$, but $x_t = \sqrt{\bar\alpha_t}\, x_0 + \sqrt{1 - \bar\alpha_t}\, \epsilon$, so
# knowing the noise $\epsilon$ is as good as knowing $x_0$:
# $\hat x_0 = (x_t - \sqrt{1 - \bar\alpha_t}\, \epsilon_\theta(x_t, t)) / \sqrt{\bar\alpha_t}$.
# DDPM therefore trains a network $\epsilon_\theta$ to **predict the noise**, with the simple loss
#
# $$L_{\text{simple}} = \mathbb{E}_{x_0, t, \epsilon}\, \big\lVert \epsilon - \epsilon_\theta\big(\sqrt{\bar\alpha_t}\, x_0 + \sqrt{1 - \bar\alpha_t}\, \epsilon,\ t\big) \big\rVert^2 ,$$
#
# and samples with $\Sigma_\theta = \tilde\beta_t \mathbf{I}$. One reverse step, written out for a
# noise estimate `eps_theta` (any tensor will do to compare the arithmetic):

# %%
def reverse_step(eps_theta: torch.Tensor, t: int, x_t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """x_t -> x_{t-1} for the 0-based step index t, with fresh noise z."""
    alpha_t, beta_t = schedule.alphas[t], schedule.betas[t]
    alpha_bar_t, alpha_bar_prev = schedule.alpha_bars[t], schedule.alpha_bars_prev[t]
    x0_hat = ((x_t - torch.sqrt(1 - alpha_bar_t) * eps_theta) / torch.sqrt(alpha_bar_t)).clamp(-1, 1)
    mu_tilde = (torch.sqrt(alpha_bar_prev) * beta_t / (1 - alpha_bar_t)) * x0_hat \
        + (torch.sqrt(alpha_t) * (1 - alpha_bar_prev) / (1 - alpha_bar_t)) * x_t
    beta_tilde = (1 - alpha_bar_prev) / (1 - alpha_bar_t) * beta_t
    return mu_tilde + (torch.sqrt(beta_tilde) * z if t > 0 else 0)  # no noise on the very last step

# %% [markdown]
# It clips $\hat x_0$ to the data range $[-1, 1]$, as DDPM's reference code does. We compare it
# with the library's `p_step` and with `DDPMScheduler.step`, fed the same model output and the
# same noise (diffusers draws it from the generator we pass, so we draw ours from an identical
# one), at four steps. We hand the scheduler our float64 $\bar\alpha$ so that both compute in
# float64, where they should agree to rounding:

# %%
reference.set_timesteps(1000)  # sample with all 1000 steps
reference.alphas_cumprod = schedule.alpha_bars  # float64, like ours
generator = torch.Generator().manual_seed(5)
x_t, eps_theta = (torch.randn((2, 3, 8, 8), generator=generator, dtype=torch.float64) for _ in range(2))
for t in (999, 500, 1, 0):
    z = torch.randn((2, 3, 8, 8), generator=torch.Generator().manual_seed(t), dtype=torch.float64)
    ours = reverse_step(eps_theta, t, x_t, z)
    library = schedule.p_step(eps_theta, t, x_t, noise=z)
    theirs = reference.step(eps_theta, t, x_t, generator=torch.Generator().manual_seed(t)).prev_sample
    claims.close(f"reverse_step vs p_step at t = {t}", ours, library, atol=1e-12)
    claims.close(f"reverse_step vs DDPMScheduler.step at t = {t}", ours, theirs, atol=1e-12)
    print(f"t = {t:3d}: ours, p_step and DDPMScheduler.step agree to within 1e-12")

# %% [markdown]
# In float32 the agreement with diffusers is only about $10^{-4}$ near $t = 0$: `DDPMScheduler`
# computes $1 - \bar\alpha_t$ in the data's precision, and at $t = 0$ that number is $10^{-4}$,
# so float32 keeps only three or four of its digits. The library precomputes its coefficients in
# float64 once. The sampling loop itself (Algorithm 2 of the DDPM paper) is `diffusion.sample`:
# start from noise and call `p_step` for $t = T-1, \dots, 0$.
#
# ## 5.5 Training a DDPM
#
# ### Points in the plane
# Before images, a distribution we can see: points on two interleaved half-moons. The denoiser
# is a small MLP that gets $x_t$ and a sinusoidal embedding of $t$ (`diffusion.ToyDenoiser`); one
# training step draws a batch of points, a random step and noise, and regresses the noise
# (`diffusion.train_denoiser`, the $L_{\text{simple}}$ above).

# %% tags=["nbval-ignore-output"]
moons = diffusion.two_moons(8000, seed=0)
toy = diffusion.ToyDenoiser()
start = time.perf_counter()
losses = diffusion.train_denoiser(toy, toy, moons, schedule, steps=6000, batch_size=256, lr=4e-3, seed=0,
                                  show_progress=False)
toy_seconds = time.perf_counter() - start
claims.at_most("the mean loss of the last 100 steps, as a share of the first 100's",
               np.mean(losses[-100:]) / np.mean(losses[:100]), 0.5)
print(f"{sum(p.numel() for p in toy.parameters()):,} parameters; loss {np.mean(losses[:100]):.3f} over the first 100 steps, "
      f"{np.mean(losses[-100:]):.3f} over the last 100 (less than half); training took {toy_seconds:.1f} s")

# %% [markdown]
# Now we sample 2,000 points with the loop of section 5.4 and keep every 250th step, to draw the
# reverse trajectories. Watch the cloud contract from a round Gaussian onto the two moons.

# %%
with torch.no_grad():
    generated, trajectory = diffusion.sample(toy, schedule, (2000, 2), generator=torch.Generator().manual_seed(6),
                                             clip_x0=None, keep_every=250)
fig, axes = plt.subplots(1, len(trajectory) + 1, figsize=(3 * (len(trajectory) + 1), 3), sharex=True, sharey=True)
for ax, points, t in zip(axes, trajectory, [1000, 750, 500, 250, 0]):
    ax.scatter(points[:, 0], points[:, 1], s=1, alpha=0.5)
    ax.set_title(f"samples at t = {t}")
axes[-1].scatter(moons[:2000, 0], moons[:2000, 1], s=1, alpha=0.5, color="tab:orange")
axes[-1].set_title("training data")
for ax in axes:
    ax.set(xlim=(-2.5, 2.5), ylim=(-2.5, 2.5), aspect="equal")
fig.tight_layout()

# %% [markdown]
# A crude check of quality: the share of generated points that lie within 0.15 of some training
# point, against the same share for fresh points from the true distribution.

# %% tags=["nbval-ignore-output"]
def near_data(points: torch.Tensor, radius: float = 0.15) -> float:
    return (torch.cdist(points, moons).min(-1).values < radius).float().mean().item()


claims.at_least("the share of generated points near the moons", near_data(generated), 0.9)
claims.at_most("the share of the starting Gaussian's points near the moons", near_data(trajectory[0]), 0.5)

print(f"generated points near the moons: {near_data(generated):.1%}; fresh true points: {near_data(diffusion.two_moons(2000, seed=1)):.1%}; "
      f"points of the starting Gaussian: {near_data(trajectory[0]):.1%}")

# %% [markdown]
# ### Images: a UNet on ShapesWorld
# For images the denoiser is a **UNet**: convolutions that halve the resolution on the way down,
# double it on the way up, and skip connections that carry the fine detail across; at the lowest
# resolution, self-attention lets every position see every other. The step $t$ enters through a
# sinusoidal embedding (chapter 1's position embedding, applied to $t$), passed through a small MLP
# and added inside every residual block. diffusers'
# `UNet2DModel` is exactly this; a tiny one (`diffusion.tiny_unet`) for $32 \times 32$ ShapesWorld
# scenes, trained here for a few dozen steps to show the loop runs:

# %%
data = ShapesWorld(2000, seed=3, max_objects=1, image_size=32).images() * 2 - 1  # (2000, 3, 32, 32) in [-1, 1]
unet = diffusion.tiny_unet(32, (16, 32, 32))

# %% tags=["nbval-ignore-output"]
losses = diffusion.train_denoiser(unet, lambda x_t, t: unet(x_t, t).sample, data, schedule, steps=60, batch_size=32,
                                  lr=1e-3, warmup=10, seed=0, ema_decay=None, desc="demo")

# %% [markdown]
# The loss falls fast at first, to less than half its starting value within 60 steps: predicting the
# noise is easy at large $t$, where $x_t$ is almost all noise.

# %% tags=["nbval-ignore-output"]
claims.at_most("the mean loss of the last 10 steps, as a share of the first 10's",
               np.mean(losses[-10:]) / np.mean(losses[:10]), 0.5)
print(f"UNet2DModel with {sum(p.numel() for p in unet.parameters()):,} parameters; "
      f"loss {np.mean(losses[:10]):.3f} over the first 10 steps, {np.mean(losses[-10:]):.3f} over the last 10")

# %% [markdown]
# Good samples take many more steps than a chapter should spend, so the course ships the same
# UNet trained for longer, on a CPU (the first line below). It loads as a `DDPMPipeline`, the way
# `google/ddpm-cifar10-32` loads in full mode, and the pipeline runs the reverse process with
# `DDPMScheduler`. On a CPU we let it take 250 evenly spaced steps instead of all 1000.

# %%
dtype = runtime.DTYPE  # float16 in full mode, float32 in tiny mode
ddpm = DDPMPipeline.from_pretrained(zoo.path("ddpm"), dtype=dtype).to(runtime.DEVICE)
ddpm.set_progress_bar_config(disable=runtime.MODE == "tiny")  # bars on Colab, where sampling takes long
if runtime.MODE == "tiny":
    record = json.loads(Path(zoo.path("ddpm"), "training.json").read_text())
    print(f"the shipped UNet: {record['steps']:,} training steps, {record['seconds'] / 60:.0f} minutes on a CPU")
print(f"{type(ddpm.unet).__name__}: {sum(p.numel() for p in ddpm.unet.parameters()):,} parameters, "
      f"{ddpm.unet.config.sample_size} x {ddpm.unet.config.sample_size} pixels; scheduler {type(ddpm.scheduler).__name__} "
      f"with T = {ddpm.scheduler.config.num_train_timesteps}")
config = ddpm.unet.config
sides = [config.sample_size // 2**i for i in range(len(config.block_out_channels))]  # each block but the last halves
print("down path: " + " -> ".join(f"{b}({c} ch at {side} px)" for b, c, side in
                                  zip(config.down_block_types, config.block_out_channels, sides))
      + f"; a middle block with attention at {sides[-1]} px; up path: {' -> '.join(config.up_block_types)}")
print(f"time embedding: sin and cos of {config.block_out_channels[0] // 2} frequencies "
      f"({config.block_out_channels[0]} numbers), then an MLP to width {4 * config.block_out_channels[0]}")
samples = ddpm(batch_size=16, num_inference_steps=250, generator=torch.Generator().manual_seed(7), output_type="pt").images
fig = plotting.show_images([np.asarray(s.permute(1, 2, 0).float().cpu()) for s in samples], columns=8, size=1.3,
                           title="Samples from the shipped DDPM")

# %% [markdown]
# The objects come out with clean shapes and ShapesWorld colours, but look at the backgrounds:
# tinted and grainy, where every training scene has the same flat off-white. A few minutes of CPU
# training leave the last, finest denoising steps imprecise, and errors there stay in the image.
# (Section 5.6 will show a way around it.)
#
# How good are they? Image generators are usually scored by how confidently a classifier
# recognises their samples (the idea behind the Inception Score and FID). We ask chapter 1's tiny
# ViT, which names the object in a ShapesWorld scene, and count the samples it names with at
# least 90% confidence, against the same count for real scenes.

# %% tags=["nbval-ignore-output"]
from transformers import ViTForImageClassification, ViTImageProcessor

vit_processor = ViTImageProcessor.from_pretrained(zoo.path("vit"))
vit = ViTForImageClassification.from_pretrained(zoo.path("vit"), dtype=dtype).to(runtime.DEVICE).eval()


def judge(pictures: torch.Tensor) -> tuple[list[str], torch.Tensor]:
    """The ViT's label and confidence for each image (B, 3, H, W) in [0, 1] (`diffusion.vit_judge`)."""
    return diffusion.vit_judge(vit, vit_processor, pictures)


labels, confidence = judge(samples)
_, real_confidence = judge(ShapesWorld(64, seed=4, split="test", max_objects=1, image_size=32).images())
sure, real_sure = (confidence >= 0.9).float().mean().item(), (real_confidence >= 0.9).float().mean().item()
if runtime.MODE == "tiny":
    claims.at_least("the share of samples the ViT names with >= 90% confidence", sure, 0.25)
    claims.holds("real scenes are named confidently more often than samples", real_sure > sure)
print(f"named with >= 90% confidence: {sure:.0%} of 16 samples, {real_sure:.0%} of 64 real scenes")
print("the ViT's names for the first eight samples:", ", ".join(labels[:8]))

# %% [markdown]
# ### Fewer steps: DDIM
#
# Sampling took 250 network calls for 16 small images. DDIM (Song, Meng and Ermon, 2020) needs
# far fewer, with the *same trained network*. The DDPM loss only ever looks at the marginals
# $q(x_t \mid x_0) = \mathcal{N}(\sqrt{\bar\alpha_t}\, x_0, (1 - \bar\alpha_t) I)$, and many forward
# processes share those marginals; DDIM picks a family whose reverse step can jump from $t$ to
# any earlier $s$:
#
# $$\hat x_0 = \frac{x_t - \sqrt{1 - \bar\alpha_t}\, \epsilon_\theta(x_t, t)}{\sqrt{\bar\alpha_t}}, \qquad
# x_s = \sqrt{\bar\alpha_s}\, \hat x_0 + \sqrt{1 - \bar\alpha_s - \sigma^2}\, \epsilon_\theta(x_t, t) + \sigma z,$$
#
# $$\sigma = \eta \sqrt{\frac{1 - \bar\alpha_s}{1 - \bar\alpha_t}} \sqrt{1 - \frac{\bar\alpha_t}{\bar\alpha_s}}.$$
#
# Read it as: predict the clean image, then noise it again to level $s$, re-using the predicted
# noise as the direction back to $x_t$ (plus fresh noise of size $\sigma$). With $\eta = 0$ the
# sampler is deterministic, a map from $x_T$ to $x_0$; with $\eta = 1$ and $s = t - 1$ it is
# DDPM's reverse step with the posterior variance $\tilde\beta_t$. `diffusion.ddim_step` is the formula; one step on the shipped model equals
# diffusers' `DDIMScheduler.step`, and with $\eta = 1$ and $s = t - 1$ it equals our `p_step` (when
# neither clips $\hat x_0$ to $[-1, 1]$: after clipping, DDPM's posterior mean uses the clipped
# estimate, while DDIM keeps the network's noise estimate as its direction):

# %%
ddim_scheduler = DDIMScheduler.from_config(ddpm.scheduler.config)  # same betas, same network
ddim_scheduler.set_timesteps(50)
print(f"50 DDIM steps visit t = {[int(t) for t in ddim_scheduler.timesteps[:4]]} ... "
      f"{[int(t) for t in ddim_scheduler.timesteps[-2:]]}, every {1000 // 50}th step")
x_t = torch.randn((4, 3, 32, 32), generator=torch.Generator().manual_seed(5)).to(runtime.DEVICE, dtype)
t, t_prev = int(ddim_scheduler.timesteps[10]), int(ddim_scheduler.timesteps[11])
with torch.no_grad():
    eps = ddpm.unet(x_t, t).sample
linear = NoiseSchedule(ddpm.scheduler.betas)  # the shipped model's own schedule
ours = diffusion.ddim_step(linear, eps.double(), t, t_prev, x_t.double())
theirs = ddim_scheduler.step(eps, t, x_t).prev_sample
claims.close(f"ddim_step vs DDIMScheduler.step at t = {t}", ours, theirs.double(), atol=claims.rounding(dtype) * 10)
print(f"t = {t} -> {t_prev}: ddim_step and DDIMScheduler.step agree to within {claims.rounding(dtype) * 10:.0e}")
z = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
as_ddpm = diffusion.ddim_step(linear, eps.double(), t, t - 1, x_t.double(), eta=1.0, noise=z, clip_x0=None)
claims.close("DDIM with eta = 1 and s = t - 1 vs DDPM's p_step", as_ddpm,
             linear.p_step(eps.double(), t, x_t.double(), noise=z, clip_x0=None), atol=1e-12)
print(f"eta = 1, t = {t} -> {t - 1}: DDIM's step equals DDPM's p_step to within 1e-12")

# %% [markdown]
# How many steps does it need? The same starting noises (64 in tiny mode), sampled with DDIM in 10
# and 50 steps and with DDPM's sampler in 50, each judged by the tiny ViT as above. DDPM with 50
# strided steps is DDIM's formula with $\eta = 1$ on the same timesteps, so the last two rows are
# the DDIM paper's comparison, $\eta = 0$ against $\eta = 1$:

# %% tags=["nbval-ignore-output"]
n_judged = 64 if runtime.MODE == "tiny" else 16
runs = {"DDIM, 10 steps": (DDIMPipeline(unet=ddpm.unet, scheduler=ddim_scheduler), 10),
        "DDIM, 50 steps": (DDIMPipeline(unet=ddpm.unet, scheduler=ddim_scheduler), 50),
        "DDPM, 50 steps": (ddpm, 50)}
sure_by_sampler, rows = {}, []
for name, (sampler, steps) in runs.items():
    sampler.set_progress_bar_config(disable=runtime.MODE == "tiny")
    start = time.perf_counter()
    pictures = sampler(batch_size=n_judged, num_inference_steps=steps, generator=torch.Generator().manual_seed(7),
                       output_type="np").images
    pictures = torch.from_numpy(pictures).permute(0, 3, 1, 2)  # (N, 3, 32, 32) in [0, 1]
    rows.append(pictures[:8])
    seconds = time.perf_counter() - start
    if runtime.MODE == "tiny":  # (in full mode the samples are CIFAR-10's, which the ShapesWorld ViT cannot judge)
        _, confidence = judge(pictures)
        sure_by_sampler[name] = (confidence >= 0.9).float().mean().item()
        print(f"{name}: named with >= 90% confidence {sure_by_sampler[name]:.0%} of {n_judged} ({seconds:.1f} s)")
    else:
        print(f"{name}: {n_judged} samples in {seconds:.1f} s")
fig = plotting.show_images([np.asarray(p.permute(1, 2, 0)) for row in rows for p in row], columns=8, size=1.2,
                           title="rows: DDIM 10 steps, DDIM 50 steps, DDPM 50 steps (same starting noise)")
if runtime.MODE == "tiny":
    claims.at_least("DDIM with 10 steps: the share named confidently", sure_by_sampler["DDIM, 10 steps"], 0.15)
    claims.at_most("the largest difference between the three samplers' shares",
                   max(sure_by_sampler.values()) - min(sure_by_sampler.values()), 0.2)

# %% [markdown]
# By the ViT's count, ten DDIM steps do about as well as fifty, and both about as well as DDPM's
# sampler at fifty: one standard error of a share from 64 samples is about 6 points, and the
# largest gap, under 10 points, is about one standard error of a difference. The rows show what the
# count hides. DDIM's pictures keep a fine grain; DDPM's are smoother, with the tinted backgrounds
# seen earlier. That is the known trade-off: the deterministic sampler follows the network's noise
# estimates exactly, so what an imperfect, briefly trained network gets wrong at the last, finest
# steps stays in the picture, while the fresh noise of stochastic steps lets later steps correct
# earlier errors (Karras et al., 2022, section 4). The DDIM paper's advantage of $\eta = 0$ at few
# steps is measured with FID on well-trained models. Some starting noises keep their object's place
# and colour from 10 to 50 DDIM steps (the first column), others do not: ten steps follow the
# deterministic path coarsely.
#
# Stable Diffusion's pipeline uses yet
# another sampler, **PNDM** (pseudo-numerical methods, Liu et al. 2022). A PNDM step is a DDIM step
# ($\eta = 0$) whose noise estimate is replaced by a combination of the last four, as a linear
# multi-step ODE solver would (fourth-order Adams-Bashforth:
# $(55\epsilon_t - 59\epsilon_{t-1} + 37\epsilon_{t-2} - 9\epsilon_{t-3})/24$); Stable Diffusion's
# configuration (`skip_prk_steps`) uses that "PLMS" form throughout, with lower-order steps to
# start, and 50 steps are its usual setting. Its betas follow the `scaled_linear` schedule, $\beta_t$
# whose square root rises linearly from $\sqrt{0.00085}$ to $\sqrt{0.012}$
# (`NoiseSchedule.scaled_linear`): more noise at the first steps than DDPM's, much less at the last,
# so $\bar\alpha$ falls more slowly and never quite reaches 0:

# %%
for name, sched in [("DDPM's linear", NoiseSchedule.linear()), ("Stable Diffusion's scaled_linear", NoiseSchedule.scaled_linear())]:
    print(f"{name:33s} beta_1 {sched.betas[0]:.5f}, beta_T {sched.betas[-1]:.4f}; "
          f"alpha_bar at t = 500: {sched.alpha_bars[499]:.3f}, at t = T: {sched.alpha_bars[-1]:.5f}")

# %% [markdown]
# At $t = T$ Stable Diffusion's $\bar\alpha$ leaves a little of the image in $x_T$
# ($\sqrt{\bar\alpha_T} \approx 0.07$), which the sampler, starting from pure noise, never has:
# Lin et al. (2024) show this mismatch limits how dark or bright its images can be.
#
# One more variant, in one paragraph: DDPM fixes the reverse variance to $\beta_t$ or
# $\tilde\beta_t$; Nichol and Dhariwal (2021) let the network also predict it, as an interpolation
# between the two in log space, $\Sigma = \exp(v \log \beta_t + (1 - v) \log \tilde\beta_t)$, with
# $v$ an extra output per pixel (the UNet returns twice the channels). The mean is still trained
# with the plain noise loss; the variance with a small weight (0.001) on the variational bound.
# That "learned variance" allows good samples in fewer DDPM steps; diffusers calls it
# `variance_type="learned_range"`.
#
# ## 5.6 Latent diffusion
#
# A UNet's cost grows with the number of pixels it processes, at every one of hundreds of
# sampling steps. Latent diffusion (Rombach et al.) first trains an autoencoder, a VAE: the
# encoder compresses an image $x$ into a small latent $z = \mathcal{E}(x)$ and the decoder
# restores it, $x \approx \mathcal{D}(z)$. Diffusion then runs on $z$ instead of $x$: noise $z_t$,
# denoise with a UNet on latents, and decode only once at the end.
#
# The course's tiny Stable Diffusion (the `sd` zoo entry, trained on a CPU like the DDPM) compresses
# $32 \times 32 \times 3$ ShapesWorld images into $8 \times 8 \times 4$ latents. Its pieces are
# exactly Stable Diffusion's: `AutoencoderKL`, `UNet2DConditionModel`, a CLIP text encoder and
# tokenizer, and a scheduler, bundled as a `StableDiffusionPipeline`. In full mode the same call
# loads Stable Diffusion v1.5 in half precision.

# %%
pipe = StableDiffusionPipeline.from_pretrained(zoo.path("sd"), variant="fp16", dtype=dtype, safety_checker=None,
                                               requires_safety_checker=False).to(runtime.DEVICE)
pipe.set_progress_bar_config(disable=runtime.MODE == "tiny")  # bars on Colab, where sampling takes long
if runtime.MODE == "tiny":
    record = json.loads(Path(zoo.path("sd"), "training.json").read_text())
    print(f"the shipped pipeline: its VAE trained {record['vae_steps']:,} steps, then its latent UNet "
          f"{record['unet_steps']:,}; {(record['vae_seconds'] + record['unet_seconds']) / 60:.0f} minutes on a CPU")
for name in ("vae", "unet", "text_encoder"):
    part = getattr(pipe, name)
    print(f"{name:12s} {type(part).__name__:22s} {sum(p.numel() for p in part.parameters()):>13,} parameters")
print(f"{'scheduler':12s} {type(pipe.scheduler).__name__:22s} betas {pipe.scheduler.config.beta_schedule} from "
      f"{pipe.scheduler.config.beta_start} to {pipe.scheduler.config.beta_end} (section 5.5's PNDM and schedule)")
n_parameters = sum(p.numel() for name in ("vae", "unet", "text_encoder") for p in getattr(pipe, name).parameters())
print(f"in all {n_parameters:,} parameters: {n_parameters * dtype.itemsize / 2**30:.2f} GiB of weights in {dtype} "
      f"(a Colab T4 has 15 GB)")

# %% [markdown]
# Encode a few scenes, decode them again, and compare: the decoder restores the objects from
# 256 numbers per image.

# %%
scenes = ShapesWorld(6, seed=8, split="test", max_objects=1, image_size=32)
x = (scenes.images() * 2 - 1).to(runtime.DEVICE, dtype)  # (6, 3, 32, 32)
with torch.no_grad():
    z = pipe.vae.encode(x).latent_dist.mean  # (6, 4, 8, 8)
    restored = pipe.vae.decode(z).sample.clamp(-1, 1)
print(f"image {list(x.shape[1:])} -> latent {list(z.shape[1:])}; mean squared reconstruction error "
      f"{torch.mean((restored.float() - x.float()) ** 2):.4f} (pixel values in [-1, 1])")
fig = plotting.show_images([diffusion.to_pil(i) for i in torch.cat([x, restored])],
                           [f"original {i + 1}" for i in range(6)] + [f"decoded {i + 1}" for i in range(6)],
                           columns=6, size=1.6, title="Through the VAE and back")

# %% [markdown]
# The decoded scenes keep their shapes and colours (edges a little softer), and their backgrounds
# are clean: the decoder learned that flat off-white from every training image, so the diffusion
# model in latent space no longer has to get each background pixel right.
#
# The VAE is *variational*: its encoder does not return one latent but a Gaussian,
# $q(z \mid x) = \mathcal{N}(\mu(x), \operatorname{diag}\sigma^2(x))$, and training decodes a sample
# $z = \mu + \sigma \odot \epsilon$, $\epsilon \sim \mathcal{N}(0, I)$ (the *reparameterisation*, which
# lets gradients flow through the sampling into $\mu$ and $\sigma$). The loss adds to the
# reconstruction error a KL term, $\mathrm{KL}(q(z \mid x) \,\|\, \mathcal{N}(0, I)) =
# \tfrac12 \sum (\mu^2 + \sigma^2 - 1 - \log \sigma^2)$, that pulls the latents towards a standard
# Gaussian. Reconstruction log-likelihood minus this KL is a lower bound on $\log p(x)$, the
# evidence lower bound, and the loss is its negative: the "variational" bound that names the model.
# (Stable Diffusion's VAE adds perceptual and adversarial losses, so the bound is nominal there.)
# Its KL weight is tiny against a reconstruction error summed over 786,432 pixel values, its latents
# have a standard deviation of about 5.5, and it multiplies them by a **scaling factor**, 0.18215,
# before diffusion, whose schedules assume unit-variance data (and divides by it before decoding).
# The factor is one over the latents' standard deviation. The tiny VAE's was computed from the
# means $\mu$ of its training latents, and its latent UNet was trained on $\mu$ times that factor
# (Stable Diffusion trains on samples $z$). On held-out scenes:

# %% tags=["nbval-ignore-output"]
held_out = ShapesWorld(256, seed=9, split="test", max_objects=1, image_size=32)
x_held = (held_out.images() * 2 - 1).to(runtime.DEVICE, dtype)  # (256, 3, 32, 32)
with torch.no_grad():
    posterior = pipe.vae.encode(x_held).latent_dist
    latents = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=torch.Generator().manual_seed(0)
                                                          ).to(runtime.DEVICE, dtype)  # z = mu + sigma * eps
    reconstruction = torch.mean((pipe.vae.decode(posterior.mean).sample.float() - x_held.float()) ** 2).item()
    kl = posterior.kl().float().mean().item()  # summed over the latent's 256 numbers, averaged over images
mean_std, sample_std = posterior.mean.float().std().item(), latents.float().std().item()
print(f"std of the means mu {mean_std:.3f} (1 / std = {1 / mean_std:.3f}), of samples z {sample_std:.3f}; the VAE's "
      f"scaling_factor {pipe.vae.config.scaling_factor} (Stable Diffusion v1.5's: 0.18215); latents' mean "
      f"{posterior.mean.float().mean().item():.2f} (the factor rescales, it does not centre)")
print(f"the encoder's sigma is {posterior.std.float().mean().item():.2f} on average; the training loss's KL term "
      f"(weight 1e-6 x {kl:.0f}) is {1e-6 * kl / (reconstruction + 1e-6 * kl):.0%} of the loss")
if runtime.MODE == "tiny":
    claims.between("1 / std(mu) over the VAE's scaling factor", (1 / mean_std) / pipe.vae.config.scaling_factor, 0.95, 1.05)

# %% [markdown]
# Measured on held-out scenes, one over the means' standard deviation matches the stored factor.
# The tiny VAE's latents are close to unit variance already, unlike Stable Diffusion's, because its
# KL term is not negligible: with the reconstruction error averaged over pixels (not summed, as in
# Stable Diffusion), the same $10^{-6}$ weight makes the KL a visible share of the loss, and it pulls
# the latents towards $\mathcal{N}(0, I)$. Its encoder's $\sigma$ is not small against that spread,
# so a sample differs visibly from the mean: the encode-decode cell above used the mean, as some
# editing pipelines do (InstructPix2Pix), while Stable Diffusion's image-to-image pipeline draws a
# sample.
#
# What does this save? The UNet's work is proportional to the number of positions its
# convolutions visit, height times width, so compare those too. For our numbers and for Stable
# Diffusion's ($512 \times 512 \times 3$ images, $64 \times 64 \times 4$ latents):

# %%
def compression(image_side: int, latent_side: int, latent_channels: int = 4) -> tuple[float, float]:
    """(how many times fewer numbers, how many times fewer spatial positions) in the latent."""
    return image_side**2 * 3 / (latent_side**2 * latent_channels), image_side**2 / latent_side**2


latent_side = pipe.unet.config.sample_size
for label, (image_side, side) in [("this chapter", (latent_side * pipe.vae_scale_factor, latent_side)), ("Stable Diffusion", (512, 64))]:
    numbers, positions = compression(image_side, side)
    print(f"{label:16s}: {image_side} x {image_side} x 3 -> {side} x {side} x 4: {numbers:.0f}x fewer numbers, "
          f"{positions:.0f}x fewer positions per UNet layer")

# %% [markdown]
# Stable Diffusion's UNet works on 48 times fewer numbers and 64 times fewer positions than a
# pixel-space UNet on the same images, at every step; that is where the "10 to 100 times faster"
# of the course material comes from. The VAE runs once per image, not once per step.
#
# ## 5.7 Steering with text: cross-attention and classifier-free guidance
#
# The denoiser gets the prompt through **cross-attention**: inside the UNet, the latent positions
# are the queries and the text encoder's token states are the keys and values, so each region
# of the image can read the words. The text encoder is CLIP's (chapter 2), frozen. In tiny mode it
# is chapter 2's tiny CLIP text encoder, whose states are 32 tokens of width 32:

# %%
ids = pipe.tokenizer(["a red circle"], padding="max_length", max_length=pipe.tokenizer.model_max_length,
                     truncation=True, return_tensors="pt").input_ids.to(runtime.DEVICE)
with torch.no_grad():
    text_states = pipe.text_encoder(ids)[0]  # (1, L, D)
print(f"tokens: {pipe.tokenizer.convert_ids_to_tokens(ids[0, :5].tolist())} ... (padded to {ids.shape[1]})")
print(f"text states {list(text_states.shape)} -> the UNet's cross-attention (cross_attention_dim = {pipe.unet.config.cross_attention_dim})")

# %% [markdown]
# **Classifier-free guidance** sharpens the effect of the prompt. During training the caption is
# replaced by the empty prompt 10% of the time, so one network learns both the conditional
# estimate $\epsilon_\theta(z_t, t, c)$ and the unconditional one $\epsilon_\theta(z_t, t, \varnothing)$.
# At sampling time the two are extrapolated with a guidance scale $w$:
#
# $$\hat\epsilon = \epsilon_\theta(z_t, t, \varnothing) + w \,\big(\epsilon_\theta(z_t, t, c) - \epsilon_\theta(z_t, t, \varnothing)\big).$$
#
# $w = 1$ is the plain conditional model; larger $w$ pushes samples towards what makes them
# match the prompt, at some cost in variety. (This is diffusers' `guidance_scale` convention. Ho
# and Salimans write $(1 + w')\,\epsilon_\theta(z_t, t, c) - w'\,\epsilon_\theta(z_t, t, \varnothing)$, so
# their $w'$ is ours minus one.) The same prompt and the same starting noise at four
# guidance scales:

# %%
scales = [1.0, 2.0, 4.0, 7.5]
grid = []
for w in scales:
    out = pipe(["a red circle", "a blue triangle", "a yellow square"], guidance_scale=w, num_inference_steps=50,
               generator=torch.Generator().manual_seed(9), output_type="pil")
    grid.extend(out.images)
fig = plotting.show_images(grid, [f"w = {w}: {p}" for w in scales for p in ("red circle", "blue triangle", "yellow square")],
                           columns=3, size=1.8, title="Classifier-free guidance")

# %% [markdown]
# How often does the prompt come true? For each of the 15 prompts "a {colour} {shape}" we draw
# six samples at $w = 4$, read the colour off the pixels (`diffusion.dominant_colour`: the
# palette colour nearest the mean of the non-background pixels) and ask the tiny ViT for the shape.
# (In full mode: one sample per prompt, as Stable Diffusion takes seconds per image, and no shape
# judge, as the ViT there names ImageNet classes. The pipeline decodes one image at a time,
# `enable_vae_slicing`, since at 512 px a batch of decodes would fill the GPU.)

# %% tags=["nbval-ignore-output"]
prompts = [f"a {colour} {shape}" for colour in COLOURS for shape in SHAPES]
requested = [p for p in prompts for _ in range(6 if runtime.MODE == "tiny" else 1)]
pipe.vae.enable_slicing()
batch = 90 if runtime.MODE == "tiny" else 8  # prompts per call (full mode: a progress bar per 8; chapter 0's plan)
generator = torch.Generator().manual_seed(10)
generated = torch.cat([pipe(requested[i:i + batch], guidance_scale=4.0, num_inference_steps=50, generator=generator,
                            output_type="pt").images.cpu() for i in range(0, len(requested), batch)])  # (N, 3, H, W)
colours = [diffusion.dominant_colour(image.float()) for image in generated]
colour_accuracy = np.mean([c == p.split()[1] for c, p in zip(colours, requested)])
print(f"{len(requested)} samples: colour as requested {colour_accuracy:.1%} (chance: 20%)")
if runtime.MODE == "tiny":
    shape_names, _ = judge(generated)  # the tiny ViT's labels are "{colour} {shape}"
    shape_accuracy = np.mean([n.split()[-1] == p.split()[-1] for n, p in zip(shape_names, requested)])
    print(f"shape as requested {shape_accuracy:.1%} (chance: 33%)")
    claims.at_least("the share of samples in the requested colour", colour_accuracy, 0.8)
    claims.at_least("the share of samples in the requested shape", shape_accuracy, 0.6)

# %% [markdown]
# ### The same call with Stable Diffusion
# On Colab (full mode) the pipeline above is Stable Diffusion v1.5, and nothing else changes: the
# cell below asks it for a photo at its native $512 \times 512$. Offline it runs the tiny model
# at $32 \times 32$ with the same code. We keep $w = 4$: the pipeline's default of 7.5 suits Stable
# Diffusion, but the sweep above showed it already distorts the tiny model's shapes.

# %%
side = pipe.unet.config.sample_size * pipe.vae_scale_factor
picture = pipe("a photo of a red apple on a wooden table" if runtime.MODE == "full" else "a large red circle",
               height=side, width=side, guidance_scale=4.0, num_inference_steps=50,
               generator=torch.Generator().manual_seed(11)).images[0]
print(f"{runtime.MODE} mode: a {picture.size[0]} x {picture.size[1]} image")
fig = plotting.show_images([picture], ["generated"], columns=1, size=3.0)

# %% [markdown]
# ## Summary
# - The forward process adds Gaussian noise in $T$ steps; because Gaussians compose, $x_t$ can be
#   drawn in one jump: $x_t = \sqrt{\bar\alpha_t}\, x_0 + \sqrt{1 - \bar\alpha_t}\, \epsilon$.
# - The schedule (linear, cosine) sets how fast $\bar\alpha_t$ and the signal-to-noise ratio fall.
# - The reverse process needs the posterior mean; predicting the noise $\epsilon$ gives it, so DDPM
#   trains $\epsilon_\theta$ with a plain mean-squared error and samples by stepping from $x_T$ to $x_0$.
# - Our step equals `DDPMScheduler.step`; the same loop trains points in the plane in seconds and
#   ShapesWorld images in minutes.
# - DDIM re-uses the trained network with a reverse step that jumps from $t$ to any earlier $s$
#   (deterministic at $\eta = 0$, DDPM's step at $\eta = 1$ and $s = t - 1$): here ten steps score
#   as well as fifty by the ViT's count, with visibly grainier pictures than stochastic sampling.
#   Stable Diffusion's PNDM sampler follows the same path with multi-step updates.
# - Latent diffusion runs the process on a VAE's latents (a Gaussian encoder, sampled by
#   reparameterisation, regularised by a KL term, scaled to unit variance): 48x fewer numbers for
#   Stable Diffusion.
# - Text enters through cross-attention on CLIP's token states; classifier-free guidance
#   extrapolates from the unconditional to the conditional noise estimate.
#
# ## Where this goes next
# The course has now built every piece of today's multimodal models: encoders for images (ViT),
# a shared space for images and text (CLIP), bridges that let language models see (BLIP-2,
# LLaVA), and generators that turn text into images. Newer image generators replace the UNet with
# a transformer over latent patches (DiT), the ViT of chapter 1 in a new role.
#
# ## Further reading
# - J. Sohl-Dickstein et al., *Deep Unsupervised Learning using Nonequilibrium Thermodynamics*, 2015, [arXiv:1503.03585](https://arxiv.org/abs/1503.03585).
# - J. Ho, A. Jain, P. Abbeel, *Denoising Diffusion Probabilistic Models* (DDPM), 2020, [arXiv:2006.11239](https://arxiv.org/abs/2006.11239).
# - A. Nichol, P. Dhariwal, *Improved Denoising Diffusion Probabilistic Models* (cosine schedule), 2021, [arXiv:2102.09672](https://arxiv.org/abs/2102.09672).
# - J. Song, C. Meng, S. Ermon, *Denoising Diffusion Implicit Models* (DDIM), 2020, [arXiv:2010.02502](https://arxiv.org/abs/2010.02502).
# - L. Liu, Y. Ren, Z. Lin, Z. Zhao, *Pseudo Numerical Methods for Diffusion Models on Manifolds* (PNDM), 2022, [arXiv:2202.09778](https://arxiv.org/abs/2202.09778).
# - T. Karras, M. Aittala, T. Aila, S. Laine, *Elucidating the Design Space of Diffusion-Based Generative Models*, 2022, [arXiv:2206.00364](https://arxiv.org/abs/2206.00364).
# - S. Lin, B. Liu, J. Li, X. Yang, *Common Diffusion Noise Schedules and Sample Steps are Flawed*, 2024, [arXiv:2305.08891](https://arxiv.org/abs/2305.08891).
# - R. Rombach et al., *High-Resolution Image Synthesis with Latent Diffusion Models* (Stable Diffusion), 2021, [arXiv:2112.10752](https://arxiv.org/abs/2112.10752).
# - J. Ho, T. Salimans, *Classifier-Free Diffusion Guidance*, 2022, [arXiv:2207.12598](https://arxiv.org/abs/2207.12598).
# - D. P. Kingma, M. Welling, *Auto-Encoding Variational Bayes* (the VAE), 2013, [arXiv:1312.6114](https://arxiv.org/abs/1312.6114).
# - W. Peebles, S. Xie, *Scalable Diffusion Models with Transformers* (DiT), 2022, [arXiv:2212.09748](https://arxiv.org/abs/2212.09748).
#
# ## Exercises
# Each exercise has a stub that raises `NotImplementedError` and a checker under it. Replace the
# stub with your code and re-run the two cells. Worked answers are in
# `solutions/05_diffusion_solutions.ipynb`.
#
# **Exercise 5.1 -- jump to step t.** Write `q_sample(x0, t, eps, betas)`: $x_t$ from the closed
# form of section 5.2, for a batch `x0` (B, C, H, W), 0-based step indices `t` (B,), noise `eps`
# like `x0` and the schedule's `betas` (T,).

# %%
from utils import checks


def q_sample(x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor, betas: torch.Tensor) -> torch.Tensor:
    raise NotImplementedError


checks.check_q_sample(q_sample)

# %% [markdown]
# **Exercise 5.2 -- the cosine schedule.** Write `cosine_alpha_bars(T, s=0.008)`: the $(T,)$ values
# $\bar\alpha_t = f(t) / f(0)$ for $t = 1, \dots, T$, with $f(t) = \cos^2\!\big(\tfrac{t/T + s}{1 + s} \cdot \tfrac{\pi}{2}\big)$
# (no clipping needed).

# %%
def cosine_alpha_bars(T: int, s: float = 0.008) -> torch.Tensor:
    raise NotImplementedError


checks.check_cosine_alpha_bars(cosine_alpha_bars)

# %% [markdown]
# **Exercise 5.3 -- one reverse step.** Write `posterior_mean(x0, x_t, t, betas)`: the mean
# $\tilde\mu_t$ of $q(x_{t-1} \mid x_t, x_0)$ from section 5.4, for one 0-based step index `t` (an int).

# %%
def posterior_mean(x0: torch.Tensor, x_t: torch.Tensor, t: int, betas: torch.Tensor) -> torch.Tensor:
    raise NotImplementedError


checks.check_posterior_mean(posterior_mean)

# %% [markdown]
# **Exercise 5.4 -- classifier-free guidance, by hand.** Section 5.7 let the pipeline guide. Now
# write the two pieces yourself, in the chapter's convention (diffusers' `guidance_scale`: $w = 1$
# is the plain conditional model; Ho and Salimans' $w'$ is our $w - 1$). First
# `guided_eps(eps_u, eps_c, w)`: the guided noise estimate $\hat\epsilon$ from the unconditional and
# the conditional estimates. The checker tests what it must do: return `eps_u` at $w = 0$, `eps_c`
# at $w = 1$, and change linearly in $w$.

# %%
def guided_eps(eps_u: torch.Tensor, eps_c: torch.Tensor, w: float) -> torch.Tensor:
    raise NotImplementedError


checks.check_guided_eps(guided_eps)

# %% [markdown]
# Then the loop, `cfg_sample(unet, scheduler, text_states, null_states, latents, w, steps)`: from the
# starting latents `latents` (B, 4, h', w') (the latent grid's height and width; $w$ alone is the
# guidance scale), run `steps` steps of `scheduler` (call
# `scheduler.set_timesteps(steps)`, loop over `scheduler.timesteps`, and take
# `scheduler.step(eps, t, x).prev_sample`), with `eps` your guided estimate from the UNet's two
# estimates, `unet(x, t, encoder_hidden_states=states).sample` with the prompts' text states
# `text_states` (B, L, D) and with the empty prompt's `null_states`. Return the final latents. The
# checker compares your loop with a reference on a small random UNet, with PNDM (Stable
# Diffusion's sampler) and DDIM. Is it safe to guide the latents instead of the noise estimates
# (step once with each estimate and mix the two results with weights $1 - w$ and $w$)? Decide
# before you run it, for DDIM; for PNDM, first with the one scheduler object stepped twice per
# timestep and then with a copy of the scheduler for each branch; and for a sampler that adds
# fresh noise at every step or clips $\hat x_0$.
#
# Then the experiment. With your loop at 25 PNDM steps (as the worked solution does, so your shares
# can be compared with its) and the pipeline's parts (`pipe.unet`, `pipe.scheduler`,
# `pipe.vae` to decode `latents / pipe.vae.config.scaling_factor`, and the text states from
# `pipe.text_encoder` as in section 5.7), draw four samples for each of the 15 prompts at
# $w = 0, 1, 2, 4, 7.5$ and 15, from the same starting latents at every scale, and measure the share
# whose colour `diffusion.dominant_colour` reads as requested and the share whose shape `judge`
# names as requested. Predict first: what share should $w = 0$ give, and does the share keep rising with
# $w$? And what does `pipe(..., guidance_scale=0)` draw -- the unconditional model?

# %%
def cfg_sample(unet, scheduler, text_states: torch.Tensor, null_states: torch.Tensor, latents: torch.Tensor,
               w: float, steps: int) -> torch.Tensor:
    raise NotImplementedError


checks.check_cfg_sample(cfg_sample)

# %% [markdown]
# **Exercise 5.5 -- predicting v instead of the noise.** The chapter's networks predict the noise
# $\epsilon$. Stable Diffusion 2's 768-pixel models and many later models predict the *velocity*
# $v = \sqrt{\bar\alpha_t}\,\epsilon - \sqrt{1 - \bar\alpha_t}\,x_0$ (Salimans and Ho, 2022) and convert.
# Write `velocity(x0, eps, alpha_bar)`, which returns $v$, and `x0_eps_from_v(x_t, v, alpha_bar)`,
# which returns the pair $(x_0, \epsilon)$ that $x_t$ and $v$ came from; `alpha_bar` is a tensor
# shaped (B, 1, 1, 1), so it broadcasts over each image. Your conversion back must also work when
# $\bar\alpha_t = 0$, where nothing of $x_0$ is left in $x_t$. (Hint: write $(x_t, v)$ as a
# $2 \times 2$ matrix times $(x_0, \epsilon)$ and look at the matrix.) The checker compares $v$ with
# diffusers' `DDPMScheduler.get_velocity`.
#
# Then derive and measure why anyone would bother. An error $\delta$ in the network's output
# becomes an error in $\hat x_0$: by how much when the network predicts $\epsilon$, and by how much
# when it predicts $v$? Print both factors for the shipped DDPM's schedule at the paper's steps
# $t = 1, 100, 250, 500, 750, 1000$, which are indices $t - 1$ of the schedule's arrays (section 5.1).
# Predict first: where along the chain is the shipped DDPM's estimate of $x_0$ worst? Then measure
# it: noise 64 held-out scenes like the DDPM's training data,
# `ShapesWorld(64, seed=9, split="test", max_objects=1, image_size=32)` scaled to $[-1, 1]$, to each
# of those steps, and compare the RMS error of the model's $\hat\epsilon$, of the $\hat x_0$ it implies
# (unclipped), and of simply guessing the average scene. Then follow the error one step further: a
# DDPM step does not jump to $\hat x_0$ but weighs it in the posterior mean $\tilde\mu_t$ of section
# 5.4. By how much does an error $\delta$ in $\hat\epsilon$ move $x_{t-1}$, and which samplers would
# feel the factor you found for $\hat x_0$?

# %%
def velocity(x0: torch.Tensor, eps: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    raise NotImplementedError


def x0_eps_from_v(x_t: torch.Tensor, v: torch.Tensor, alpha_bar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    raise NotImplementedError


checks.check_v_prediction(velocity, x0_eps_from_v)
