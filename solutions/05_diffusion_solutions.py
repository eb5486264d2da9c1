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
noisy = schedule.q_sample(x0, 400, eps)
x0_hat = schedule.predict_x0(noisy, 400, eps)
mean, _ = schedule.posterior(x0_hat, noisy, 400)
claims.close("posterior_mean vs NoiseSchedule.posterior", posterior_mean(x0_hat.double(), noisy.double(), 400, schedule.betas), mean,
             atol=1e-5)
print("posterior_mean and NoiseSchedule.posterior agree to within 1e-5")

# %% [markdown]
# ## Exercise 5.4 -- classifier-free guidance, by hand
#
# The guided estimate starts at the unconditional one and moves $w$ times the distance to the
# conditional one. The properties the checker tests follow from that: $w = 0$ gives
# $\epsilon_\theta(z_t, t, \varnothing)$, $w = 1$ gives $\epsilon_\theta(z_t, t, c)$, and it is linear in
# $w$ in between and beyond.

# %%
def guided_eps(eps_u: torch.Tensor, eps_c: torch.Tensor, w: float) -> torch.Tensor:
    return eps_u + w * (eps_c - eps_u)  # eps_hat = eps(z_t, t, null) + w (eps(z_t, t, c) - eps(z_t, t, null))


checks.check_guided_eps(guided_eps)

# %% [markdown]
# The loop is Stable Diffusion's: at each timestep run the UNet on the latents twice, once with
# the empty prompt's text states and once with the prompt's, guide, and take one scheduler step
# with the guided estimate. Batching the two runs into one call of twice the batch, as diffusers
# does, halves the number of calls. The scheduler is an object with state -- Stable Diffusion's
# PNDM counts its calls and keeps the last few estimates it was handed for its multi-step
# formula -- so the loop hands it exactly one estimate per timestep, the guided one.

# %%
@torch.no_grad()
def cfg_sample(unet, scheduler, text_states: torch.Tensor, null_states: torch.Tensor, latents: torch.Tensor,
               w: float, steps: int) -> torch.Tensor:
    scheduler.set_timesteps(steps)  # also resets PNDM's history of noise estimates
    x = latents  # (B, 4, h', w'): the latent grid (w alone is the guidance scale)
    states = torch.cat([null_states, text_states])  # (2B, L, D): unconditional half first
    for t in scheduler.timesteps:
        eps_u, eps_c = unet(torch.cat([x, x]), t, encoder_hidden_states=states).sample.chunk(2)  # each (B, 4, h', w')
        x = scheduler.step(guided_eps(eps_u, eps_c, w), t, x).prev_sample
    return x


checks.check_cfg_sample(cfg_sample)

# %% [markdown]
# On the shipped text-to-image model (Stable Diffusion v1.5 in full mode) the loop reproduces
# `StableDiffusionPipeline` when both start from the same latents and text states. There is one
# catch in the pipeline: it guides only when `guidance_scale` is above 1, and below that it runs
# the conditional model alone, so `guidance_scale=0` there is not the unconditional model but
# $w = 1$:

# %%
from utils import diffusion, plotting, runtime, zoo

from diffusers import DDIMScheduler, StableDiffusionPipeline  # noqa: E402  (after utils.runtime)

dtype = runtime.DTYPE
pipe = StableDiffusionPipeline.from_pretrained(zoo.path("sd"), variant="fp16", dtype=dtype, safety_checker=None,
                                               requires_safety_checker=False).to(runtime.DEVICE)
pipe.set_progress_bar_config(disable=True)


def text_states_of(prompts: list[str]) -> torch.Tensor:
    """The text encoder's token states (B, L, D) for the prompts, as the pipeline computes them."""
    ids = pipe.tokenizer(prompts, padding="max_length", max_length=pipe.tokenizer.model_max_length, truncation=True,
                         return_tensors="pt").input_ids.to(runtime.DEVICE)
    with torch.no_grad():
        return pipe.text_encoder(ids)[0]


prompts = ["a red circle", "a blue triangle"]
text, null = text_states_of(prompts), text_states_of([""] * len(prompts))
side = pipe.unet.config.sample_size
start = torch.randn((2, pipe.unet.config.in_channels, side, side), generator=torch.Generator().manual_seed(0))
start = start.to(runtime.DEVICE, dtype)  # (B, 4, side, side)
tolerance = claims.rounding(dtype) * 10
for w, same_as in ((4.0, 4.0), (0.0, 1.0)):
    theirs = pipe(prompt_embeds=text, negative_prompt_embeds=null, latents=start, guidance_scale=w,
                  num_inference_steps=10, output_type="latent").images
    claims.close(f"the pipeline at guidance_scale = {w} vs cfg_sample at w = {same_as}",
                 cfg_sample(pipe.unet, pipe.scheduler, text, null, start, same_as, 10).float(), theirs.float(),
                 atol=tolerance)
    print(f"pipe(guidance_scale={w}) equals cfg_sample with w = {same_as} to within {tolerance:.0e}")

# %% [markdown]
# Guiding the latents instead -- stepping once with each estimate and mixing the two results with
# weights $1 - w$ and $w$ -- gives the same sample whenever, for a given $x_t$, the step is an
# affine function of the noise estimate: an affine map commutes with a mix whose weights add up to
# 1. A DDIM step without clipping is affine in $\epsilon$,
# $x_s = \sqrt{\bar\alpha_s}\,(x_t - \sqrt{1 - \bar\alpha_t}\,\epsilon)/\sqrt{\bar\alpha_t} + \sqrt{1 - \bar\alpha_s}\,\epsilon$.
# So is a PNDM step: it feeds the same kind of formula a combination of its stored estimates whose
# weights add up to 1 (55, -59, 37 and -9, over 24, once it holds four).
#
# What goes wrong with PNDM is bookkeeping. The scheduler counts its calls and treats the second
# one as a redo of the first interval (it steps from the first sample again, with the average of
# two estimates), so a second call at the first timestep asks for the noise level one interval
# further from the data, step 1001 of a 1000-step table: the `IndexError` below. Had it not crashed, its history `ets`
# would hold unconditional and conditional estimates in turn, and the multi-step formula would mix
# the two branches. Give each branch its own copy of the scheduler and the history stays clean:
# mixing the latents then equals guiding the noise, for PNDM as for DDIM.

# %%
@torch.no_grad()
def mixed_latents(unet, scheduler_u, scheduler_c, text_states, null_states, latents, w, steps):
    """Guidance on the latents: one step per estimate, each with its own scheduler, then mix the two results."""
    scheduler_u.set_timesteps(steps)
    scheduler_c.set_timesteps(steps)
    x = latents  # (B, 4, h', w')
    for t in scheduler_u.timesteps:
        x_u = scheduler_u.step(unet(x, t, encoder_hidden_states=null_states).sample, t, x).prev_sample
        x_c = scheduler_c.step(unet(x, t, encoder_hidden_states=text_states).sample, t, x).prev_sample
        x = x_u + w * (x_c - x_u)
    return x


guided = cfg_sample(pipe.unet, pipe.scheduler, text, null, start, 4.0, 10)
ddim = DDIMScheduler.from_config(pipe.scheduler.config, clip_sample=False)  # Stable Diffusion's betas
claims.close("DDIM: guided latents vs guided noise estimates",
             mixed_latents(pipe.unet, ddim, ddim, text, null, start, 4.0, 10),  # DDIM keeps no history: one object will do
             cfg_sample(pipe.unet, ddim, text, null, start, 4.0, 10), atol=tolerance * 10)
print(f"DDIM, one scheduler: mixing the latents gives the guided sample to within {tolerance * 10:.0e}")
try:
    mixed_latents(pipe.unet, pipe.scheduler, pipe.scheduler, text, null, start, 4.0, 10)
    failure = None
except IndexError as exc:
    failure = exc
claims.holds("PNDM fails when the one scheduler is stepped twice per timestep", failure is not None)
print(f"PNDM, one scheduler stepped twice per timestep: {type(failure).__name__}: {failure}")
pndm_u, pndm_c = (type(pipe.scheduler).from_config(pipe.scheduler.config) for _ in range(2))  # a history per branch
claims.close("PNDM with a scheduler per branch: guided latents vs guided noise estimates",
             mixed_latents(pipe.unet, pndm_u, pndm_c, text, null, start, 4.0, 10), guided, atol=tolerance * 10)
print(f"PNDM, one scheduler per branch: mixing the latents gives the guided sample to within {tolerance * 10:.0e}")

# %% [markdown]
# What does break guidance on the latents is any part of a step that is not affine in the
# estimate. A stochastic step (DDPM, DDIM with $\eta > 0$) adds fresh noise $\sigma z$. Two calls
# draw two independent noises, and the mix carries $(1 - w)\,\sigma z_u + w\,\sigma z_c$, of variance
# $((1 - w)^2 + w^2)\,\sigma^2$ instead of $\sigma^2$; only if both branches drew the same $z$ would
# the mix keep $\sigma z$. Clipping or thresholding $\hat x_0$ (DDPM's clip to $[-1, 1]$, Imagen's
# dynamic thresholding) is not affine either: on the latents it would clip each branch's $\hat x_0$
# and mix the clipped ones, where guidance on the noise clips the guided $\hat x_0$ once. How much
# larger the fresh noise's standard deviation gets at the experiment's scales:

# %%
for w in (0.0, 1.0, 2.0, 4.0, 7.5, 15.0):
    print(f"w = {w:4}: the mixed latents get {math.sqrt((1 - w) ** 2 + w ** 2):5.2f} times one step's fresh noise")

# %% [markdown]
# Now the experiment. Four samples for each of the 15 prompts "a {colour} {shape}", the same 60
# starting latents at every $w$, 25 PNDM steps (half the chapter's 50, to save time), judged as in
# section 5.7: the colour read off the pixels, the shape named by the tiny ViT. (In full mode,
# with Stable Diffusion's photographs, neither judge applies, and the cell draws a single prompt
# at each $w$ for the figure below.)

# %% tags=["nbval-ignore-output"]
from utils.shapes import COLOURS, SHAPES

scales = [0.0, 1.0, 2.0, 4.0, 7.5, 15.0]
if runtime.MODE == "tiny":
    from transformers import ViTForImageClassification, ViTImageProcessor

    vit_processor = ViTImageProcessor.from_pretrained(zoo.path("vit"))
    vit = ViTForImageClassification.from_pretrained(zoo.path("vit"), dtype=dtype).to(runtime.DEVICE).eval()
    requested = [f"a {colour} {shape}" for colour in COLOURS for shape in SHAPES for _ in range(4)]
else:
    requested = ["a photo of a red apple on a wooden table"]
text, null = text_states_of(requested), text_states_of([""] * len(requested))
start = torch.randn((len(requested), pipe.unet.config.in_channels, side, side),
                    generator=torch.Generator().manual_seed(1)).to(runtime.DEVICE, dtype)
pictures, colour_share, shape_share = {}, {}, {}
for w in scales:
    latents = cfg_sample(pipe.unet, pipe.scheduler, text, null, start, w, 25)
    with torch.no_grad():
        decoded = torch.cat([pipe.vae.decode(z[None] / pipe.vae.config.scaling_factor).sample for z in latents])
    pictures[w] = (decoded.float().cpu() / 2 + 0.5).clamp(0, 1)  # (N, 3, H, W) in [0, 1]
    if runtime.MODE == "tiny":
        colours = [diffusion.dominant_colour(p) for p in pictures[w]]
        names, _ = diffusion.vit_judge(vit, vit_processor, pictures[w])
        colour_share[w] = sum(c == r.split()[1] for c, r in zip(colours, requested)) / len(requested)
        shape_share[w] = sum(n.split()[-1] == r.split()[-1] for n, r in zip(names, requested)) / len(requested)
        print(f"w = {w:4}: colour as requested {colour_share[w]:6.1%}, shape as requested {shape_share[w]:6.1%}")
if runtime.MODE == "tiny":
    chance = 1 / len(COLOURS)  # a prompt-blind model, with each colour requested equally often
    chance_error = math.sqrt(chance * (1 - chance) / len(requested))  # one standard error of a share near 20%
    gap = (colour_share[0.0] - chance) / chance_error
    print(f"w = 0: colour as requested {colour_share[0.0]:.1%}; a prompt-blind model gets at most {chance:.0%}, "
          f"one standard error {chance_error:.1%} over {len(requested)} samples: a gap of {gap:+.1f} standard errors")
    claims.at_most("the colour share at w = 0 minus 20%, in standard errors", gap, 2.0)
    best = max(colour_share.values())
    claims.at_least("the best colour share over w", best, 0.8)
    claims.holds("the best colour share comes at w = 1, 2 or 4", best in (colour_share[1.0], colour_share[2.0],
                                                                           colour_share[4.0]))
    claims.at_most("the colour share at w = 15, as a drop from the best", colour_share[15.0] - best, -0.25)
    claims.at_least("the shape share at w = 4 minus at w = 1", shape_share[4.0] - shape_share[1.0], 0.0)
    print(f"one standard error of a share near 85% from {len(requested)} samples: "
          f"{math.sqrt(0.85 * 0.15 / len(requested)):.1%}")

# %% [markdown]
# The first sample of three prompts at each scale (one column per $w$, one row per prompt), from
# the same starting latents:

# %%
chosen = ["a red circle", "a blue triangle", "a yellow square"] if runtime.MODE == "tiny" else requested[:1]
shown = [requested.index(prompt) for prompt in chosen]  # the first of each prompt's samples
fig = plotting.show_images([diffusion.to_pil(pictures[w][i] * 2 - 1) for i in shown for w in scales],
                           [f"{requested[i][2:]}, w = {w}" for i in shown for w in scales], columns=len(scales),
                           size=1.5, title="Classifier-free guidance: the same start at six scales")

# %% [markdown]
# The share does not keep rising with $w$. At $w = 0$ the model ignores the prompt, and the colour
# is right no more often than by chance. With five colours each requested equally often, a model
# blind to the prompt gets 20% right on average, or less if some of its samples read as no colour at
# all, and over 60 samples one standard error of that share is about 5 points. The line under the
# table puts the share at $w = 0$ no more than two standard errors above 20%. $w = 1$, the conditional model alone, already gets most
# colours right; guidance helps the shapes most, and the best shares come at moderate scales.
# Beyond them the guided estimate overshoots: it extrapolates far past anything the network was
# trained to predict, and the colour and then the shape fall apart (look at the last two
# columns). The pipeline's default of 7.5 was chosen for Stable Diffusion; the tiny model's best
# scales are lower, as section 5.7 found. Those shares come from 60 samples each, so a
# difference of a few points between neighbouring scales is within noise (one standard error of
# a share near 85% is about 5 points).
#
# ## Exercise 5.5 -- predicting v instead of the noise
#
# Write $a = \sqrt{\bar\alpha_t}$ and $s = \sqrt{1 - \bar\alpha_t}$, so $a^2 + s^2 = 1$. Then
#
# $$\begin{pmatrix} x_t \\ v \end{pmatrix} = \begin{pmatrix} a & s \\ -s & a \end{pmatrix}
#   \begin{pmatrix} x_0 \\ \epsilon \end{pmatrix},$$
#
# a rotation by the angle $\phi$ with $\cos\phi = a$. Its inverse is its transpose, so
# $x_0 = a\, x_t - s\, v$ and $\epsilon = s\, x_t + a\, v$: no division anywhere, even at
# $\bar\alpha_t = 0$.

# %%
def velocity(x0: torch.Tensor, eps: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(alpha_bar) * eps - torch.sqrt(1 - alpha_bar) * x0  # v = a eps - s x0


def x0_eps_from_v(x_t: torch.Tensor, v: torch.Tensor, alpha_bar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    a, s = torch.sqrt(alpha_bar), torch.sqrt(1 - alpha_bar)
    return a * x_t - s * v, s * x_t + a * v  # the rotation turned back: (x0, eps)


checks.check_v_prediction(velocity, x0_eps_from_v)

# %% [markdown]
# With the conversion, a DDIM step for a network that predicts $v$ is the chapter's DDIM step on the
# $\hat x_0$ and $\hat\epsilon$ it implies. It equals diffusers' `DDIMScheduler` configured with
# `prediction_type="v_prediction"` (Stable Diffusion 2's setting), at every step of a 10-step run:

# %%
v_scheduler = DDIMScheduler(num_train_timesteps=1000, prediction_type="v_prediction", clip_sample=False)
v_scheduler.set_timesteps(10)
alpha_bars = v_scheduler.alphas_cumprod.double()
generator = torch.Generator().manual_seed(2)
z = torch.randn((2, 3, 8, 8), generator=generator, dtype=torch.float64)  # x_T
for t in v_scheduler.timesteps.tolist():
    v_hat = torch.randn(z.shape, generator=generator, dtype=torch.float64)  # any network output will do
    t_prev = t - 1000 // 10
    a_prev = alpha_bars[t_prev] if t_prev >= 0 else torch.tensor(1.0, dtype=torch.float64)  # the last step: x_0 itself
    x0_hat, eps_hat = x0_eps_from_v(z, v_hat, alpha_bars[t])
    ours = torch.sqrt(a_prev) * x0_hat + torch.sqrt(1 - a_prev) * eps_hat  # DDIM, eta = 0
    theirs = v_scheduler.step(v_hat, t, z).prev_sample
    claims.close(f"the v-DDIM step at t = {t}", ours, theirs, atol=1e-6)
    z = theirs
print("10 DDIM steps from v: ours and DDIMScheduler(prediction_type='v_prediction') agree to within 1e-6")

# %% [markdown]
# Why bother? Compare what an error $\delta$ in the network's output does to the clean-image
# estimate. From $\epsilon$: $\hat x_0 = (x_t - s\,\hat\epsilon)/a$, so the error in $\hat x_0$ is
# $(s/a)\,\delta$. From $v$: $\hat x_0 = a\,x_t - s\,\hat v$, so it is $s\,\delta \le \delta$.
#
# A DDPM step, though, does not move to $\hat x_0$: it takes the posterior mean $\tilde\mu_t$ of
# section 5.4, which weighs $\hat x_0$ by $\sqrt{\bar\alpha_{t-1}}\,\beta_t / (1 - \bar\alpha_t)$. Since
# $a = \sqrt{\bar\alpha_{t-1}}\sqrt{\alpha_t}$, that weight cancels the division by $a$, and an error
# $\delta$ in $\hat\epsilon$ reaches $x_{t-1}$ as $\beta_t / (\sqrt{\alpha_t}\, s)\;\delta$. All four
# factors for the shipped DDPM's schedule (the paper's steps $t$, indices $t - 1$):

# %%
schedule = NoiseSchedule.linear()
print("     t   alpha_bar   eps -> x0_hat   v -> x0_hat   weight of x0_hat in mu_tilde   eps -> x_(t-1)")
for step in (1, 100, 250, 500, 750, 1000):
    i = step - 1  # the schedule's arrays start at the paper's t = 1
    a, s = schedule.alpha_bars[i].sqrt(), (1 - schedule.alpha_bars[i]).sqrt()
    weight = schedule.alpha_bars_prev[i].sqrt() * schedule.betas[i] / (1 - schedule.alpha_bars[i])  # mu_tilde's x0 weight
    into_step = schedule.betas[i] / (schedule.alphas[i].sqrt() * s)  # = weight * s / a
    claims.close(f"the weight of x0_hat times s / a at t = {step}", weight * s / a, into_step, atol=1e-12)
    print(f"{step:6d}   {a**2:9.5f}   {s / a:13.3f}   {s:11.3f}   {weight:28.5f}   {into_step:14.3f}")
largest = (schedule.betas / (schedule.alphas.sqrt() * (1 - schedule.alpha_bars).sqrt())).max()
print(f"largest factor from eps_hat to x_(t-1) over all 1000 DDPM steps: {largest:.3f}")
a_500 = schedule.alpha_bars[499].sqrt()
jump = a_500 * (1 - schedule.alpha_bars[999]).sqrt() / schedule.alpha_bars[999].sqrt() - (1 - a_500**2).sqrt()
print(f"one DDIM jump from t = 1000 to t = 500 (a two-step sampler's first step): {jump:.1f} delta in x_500")

# %% [markdown]
# From $\epsilon$, the factor into $\hat x_0$ is 0.010 at the first step and 157 at the last: a
# network that predicts the noise almost perfectly near $t = T$ can still imply a useless $\hat x_0$
# there. Does that happen to the shipped DDPM? For 64 held-out scenes, noised to each step, the RMS
# error of its noise estimate, of the $\hat x_0$ it implies (unclipped), and of the dullest guess
# there is, the average scene; and how far clipping $\hat x_0$ to $[-1, 1]$ moves the DDPM step's mean,
# as a share of the noise the step adds anyway, $\sqrt{\tilde\beta_t}$ (none at $t = 1$):

# %% tags=["nbval-ignore-output"]
from diffusers import DDPMPipeline

from utils.shapes import ShapesWorld

ddpm = DDPMPipeline.from_pretrained(zoo.path("ddpm"), dtype=dtype).to(runtime.DEVICE)
model_schedule = NoiseSchedule(ddpm.scheduler.betas)  # the model's own betas (DDPM's linear ones)
scenes = ShapesWorld(64, seed=9, split="test", max_objects=1, image_size=32).images() * 2 - 1  # (64, 3, 32, 32)
average = (ShapesWorld(512, seed=3, max_objects=1, image_size=32).images() * 2 - 1).mean(0, keepdim=True)  # (1, 3, 32, 32)
generator = torch.Generator().manual_seed(3)
errors, clip_moves = {}, {}
for step in (1, 100, 250, 500, 750, 1000):
    eps = torch.randn(scenes.shape, generator=generator)
    noisy = model_schedule.q_sample(scenes, step - 1, eps)
    with torch.no_grad():
        eps_hat = ddpm.unet(noisy.to(runtime.DEVICE, dtype), step - 1).sample.float().cpu()
    x0_hat = model_schedule.predict_x0(noisy, step - 1, eps_hat)  # (x_t - s eps_hat) / a
    errors[step] = {name: torch.sqrt(torch.mean((guess - truth) ** 2)).item() for name, guess, truth in
                    (("eps", eps_hat, eps), ("x0", x0_hat, scenes), ("average", average.expand_as(scenes), scenes))}
    # mu_tilde with the clipped x0_hat minus mu_tilde with the raw one: only the x0 term differs
    moved = model_schedule.posterior_coef_x0[step - 1] * torch.sqrt(torch.mean((x0_hat.clamp(-1, 1) - x0_hat) ** 2))
    step_noise = model_schedule.posterior_variance[step - 1].sqrt()
    clip_moves[step] = (moved / step_noise).item() if step > 1 else 0.0
    print(f"t = {step:4d}: RMS error of eps_hat {errors[step]['eps']:.3f}, of x0_hat {errors[step]['x0']:7.3f}, "
          f"of the average scene {errors[step]['average']:.3f}; clipping moves the mean by "
          + (f"{clip_moves[step]:6.2%} of the step's noise" if step > 1 else "-- (no noise at t = 1)"))
if runtime.MODE == "tiny":
    claims.at_most("eps_hat's error at t = 1000 as a share of its error at t = 1", errors[1000]["eps"] / errors[1]["eps"], 0.3)
    claims.at_least("x0_hat's error at t = 1000 over the average scene's", errors[1000]["x0"] / errors[1000]["average"], 5)
    claims.at_most("x0_hat's error at t = 1 over the average scene's", errors[1]["x0"] / errors[1]["average"], 0.2)
    claims.at_most("how far clipping moves the DDPM step at t = 750 and 1000, as a share of its noise",
                   max(clip_moves[750], clip_moves[1000]), 0.02)

# %% [markdown]
# The noise estimate is most accurate near $t = T$, where $x_t$ is nearly all noise and copying it
# is almost right, and least accurate at $t = 1$, where the noise is tiny and hard to find. The
# clean-image estimate does the opposite: excellent at $t = 1$, and at $t = 1000$ many times worse
# than guessing the average scene, because its small noise error is multiplied by 157.
#
# DDPM's own sampler does not suffer from it. Its step gives $\hat x_0$ a weight that cancels the
# 157, so an error in $\hat\epsilon$ reaches $x_{t-1}$ shrunk, never by more than 0.020 of itself at
# any of the 1000 steps. For the same reason the clipping of $\hat x_0$ in section 5.4 hardly acts at
# large $t$: it cuts the wild $\hat x_0$ back into the data range, yet at $t = 750$ and $1000$ it moves
# the step by under 2% of the noise the step adds anyway.
#
# The 157 matters wherever a sampler trusts $\hat x_0$ across a long jump: DDIM with a few steps
# (from $t = 1000$ straight to $500$, the error is multiplied by 43), distillation into samplers of
# one to four steps -- the reason Salimans and Ho (2022,
# [arXiv:2202.00512](https://arxiv.org/abs/2202.00512)) introduced $v$ -- and previews of $\hat x_0$
# shown while sampling. It matters most when $\bar\alpha_T = 0$, where the division by $a$ fails
# outright: Lin et al. (2024), who fix the schedule mismatch of section 5.5 that way, must switch to
# $v$. With $v$, an error reaches $\hat x_0$ shrunk by $s \le 1$ and $\hat\epsilon$ shrunk by $a \le 1$,
# so neither end of the chain amplifies it.
