"""Chapter 5's exercise checkers: diffusion models."""

from __future__ import annotations

import traceback
from typing import Any, Callable

import torch

from utils.checks.core import Verdict, Wrong, expect, reject_known_mistakes, run_check


def _diffusion_case(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A batch (x0, t, eps) and DDPM's linear betas, with steps that include both ends of the schedule."""
    generator = torch.Generator().manual_seed(seed)
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    x0 = torch.rand((5, 3, 4, 4), generator=generator, dtype=torch.float64) * 2 - 1
    eps = torch.randn((5, 3, 4, 4), generator=generator, dtype=torch.float64)
    return x0, torch.tensor([0, 1, 250, 600, 999]), eps, betas


def check_q_sample(q_sample: Callable, quiet: bool = False) -> Verdict:
    """Exercise 5.1: x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps for 0-based step indices t."""
    def test() -> None:
        x0, t, eps, betas = _diffusion_case()
        alpha_bars = torch.cumprod(1 - betas, 0)

        def closed_form(a: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
            a_t = a[steps].reshape(-1, 1, 1, 1)
            return torch.sqrt(a_t) * x0 + torch.sqrt(1 - a_t) * eps

        got = q_sample(x0.clone(), t.clone(), eps.clone(), betas.clone())
        want = closed_form(alpha_bars, t)
        expect(isinstance(got, torch.Tensor) and got.shape == x0.shape,
               f"return x_t with the shape of x0 {tuple(x0.shape)}, got {getattr(got, 'shape', type(got).__name__)}")
        if torch.allclose(got.double(), want, atol=1e-6):
            return
        a_t = alpha_bars[t].reshape(-1, 1, 1, 1)
        mistakes = [
            (a_t * x0 + (1 - a_t) * eps, "take square roots: x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps"),
            (closed_form(1 - betas, t), "use alpha_bar_t, the product of alpha_s = 1 - beta_s for s up to t, not alpha_t alone"),
            (closed_form(torch.cat([torch.ones(1, dtype=torch.float64), alpha_bars[:-1]]), t),
             "index t is the paper's step t + 1: alpha_bar for index t is the product of the first t + 1 alphas "
             "(torch.cumprod(1 - betas, 0)[t])"),
            (torch.sqrt(a_t) * x0 + torch.sqrt(1 - a_t) * eps * torch.sqrt(a_t), "the noise term is sqrt(1 - alpha_bar_t) eps, nothing more"),
        ]
        reject_known_mistakes(got.double(), mistakes, atol=1e-6)
        raise Wrong(f"x_t differs from the closed form (max abs difference {(got.double() - want).abs().max():.3g}); "
                    "compute alpha_bar = cumprod(1 - betas) and pick alpha_bar[t] per image")

    return run_check("5.1 (q_sample)", test, quiet=quiet)


def check_cosine_alpha_bars(cosine_alpha_bars: Callable, quiet: bool = False) -> Verdict:
    """Exercise 5.2: alpha_bar_t = f(t) / f(0), f(t) = cos^2(((t/T + s) / (1 + s)) pi/2), for t = 1..T."""
    import math

    def reference(T: int, s: float) -> torch.Tensor:
        f = lambda t: torch.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
        return f(torch.arange(1, T + 1, dtype=torch.float64)) / f(torch.zeros((), dtype=torch.float64))

    def test() -> None:
        for T, s in ((1000, 0.008), (50, 0.008), (10, 0.1)):
            got = cosine_alpha_bars(T, s)
            expect(isinstance(got, torch.Tensor) and got.shape == (T,),
                   f"return a tensor of shape ({T},) for T = {T}, got {getattr(got, 'shape', type(got).__name__)}")
            want = reference(T, s)
            if torch.allclose(got.double(), want, atol=1e-6):
                continue
            f = lambda t: torch.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
            steps = torch.arange(1, T + 1, dtype=torch.float64)
            if torch.allclose(got.double(), f(steps), atol=1e-6):
                raise Wrong("divide by f(0), so that alpha_bar would be exactly 1 at t = 0")
            if torch.allclose(got.double(), torch.cos((steps / T + s) / (1 + s) * math.pi / 2) / math.cos(s / (1 + s) * math.pi / 2), atol=1e-6):
                raise Wrong("square the cosine: f(t) = cos(...)^2")
            if torch.allclose(got.double(), f(steps - 1) / f(torch.zeros((), dtype=torch.float64)), atol=1e-6):
                raise Wrong("the values are for t = 1..T (torch.arange(1, T + 1)), not t = 0..T-1")
            raise Wrong(f"for T = {T}, s = {s} the values differ from the formula (max abs difference "
                        f"{(got.double() - want).abs().max():.3g})")

    return run_check("5.2 (cosine_alpha_bars)", test, quiet=quiet)


def check_posterior_mean(posterior_mean: Callable, quiet: bool = False) -> Verdict:
    """Exercise 5.3: the mean of q(x_{t-1} | x_t, x0) for one 0-based step index t."""
    from utils.diffusion import NoiseSchedule

    def test() -> None:
        x0, _, x_t, betas = _diffusion_case(1)
        schedule = NoiseSchedule(betas)
        for t in (0, 1, 500, 999):
            got = posterior_mean(x0.clone(), x_t.clone(), t, betas.clone())
            want, _ = schedule.posterior(x0, x_t, t)
            expect(isinstance(got, torch.Tensor) and got.shape == x0.shape,
                   f"return a tensor shaped like x_t {tuple(x0.shape)}, got {getattr(got, 'shape', type(got).__name__)}")
            if torch.allclose(got.double(), want, atol=1e-6):
                continue
            alpha, alpha_bar = 1 - betas, torch.cumprod(1 - betas, 0)
            prev = alpha_bar[t - 1] if t > 0 else torch.tensor(1.0, dtype=torch.float64)
            swapped = (torch.sqrt(alpha[t]) * (1 - prev) / (1 - alpha_bar[t])) * x0 + (torch.sqrt(prev) * betas[t] / (1 - alpha_bar[t])) * x_t
            no_sqrt = (prev * betas[t] / (1 - alpha_bar[t])) * x0 + (alpha[t] * (1 - prev) / (1 - alpha_bar[t])) * x_t
            if torch.allclose(got.double(), swapped, atol=1e-6):
                raise Wrong("the coefficients are swapped: sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t) multiplies x0")
            if torch.allclose(got.double(), no_sqrt, atol=1e-6):
                raise Wrong("take the square roots of alpha_bar_{t-1} and alpha_t in the two coefficients")
            hint = "at t = 0 use alpha_bar_{t-1} = 1 (nothing has been noised before the first step)" if t == 0 else \
                "alpha_bar_{t-1} is the product of the alphas before index t: cumprod(1 - betas)[t - 1]"
            raise Wrong(f"at t = {t} the mean differs from the posterior (max abs difference "
                        f"{(got.double() - want).abs().max():.3g}). {hint}")

    return run_check("5.3 (posterior_mean)", test, quiet=quiet)


# --- Exercise 5.4: classifier-free guidance, by hand ----------------------------------------------

def _guided(eps_u: torch.Tensor, eps_c: torch.Tensor, w: float) -> torch.Tensor:
    """The chapter's convention (diffusers' guidance_scale): w = 0 unconditional, w = 1 conditional."""
    return eps_u + w * (eps_c - eps_u)


_GUIDANCE_SLIPS = {
    "this is Ho and Salimans' convention, (1 + w) eps_c - w eps_u, in which w = 0 is the plain conditional model; "
    "the chapter (like diffusers' guidance_scale) writes eps_u + w (eps_c - eps_u), so that w = 1 is the plain "
    "conditional model and their w is ours minus one": lambda u, c, w: (1 + w) * c - w * u,
    "the two estimates are swapped: start from the unconditional estimate eps_u and move w times along "
    "eps_c - eps_u, towards the prompt": lambda u, c, w: c + w * (u - c),
    "you returned only the guidance direction w (eps_c - eps_u): add it to the unconditional estimate eps_u":
        lambda u, c, w: w * (c - u),
    "add w times the difference eps_c - eps_u to eps_u, not w times eps_c itself": lambda u, c, w: u + w * c,
}


def check_guided_eps(guided_eps: Callable, quiet: bool = False) -> Verdict:
    """Exercise 5.4 (a): eps_u + w (eps_c - eps_u), checked by its properties at w = 0, 1, 2 and 7.5."""
    def test() -> None:
        generator = torch.Generator().manual_seed(54)
        eps_u, eps_c = (torch.randn((2, 4, 8, 8), generator=generator, dtype=torch.float64) for _ in range(2))
        kept_u, kept_c = eps_u.clone(), eps_c.clone()
        got = {}
        for w in (0.0, 1.0, 2.0, 7.5):
            out = guided_eps(eps_u, eps_c, w)
            expect(isinstance(out, torch.Tensor) and out.shape == eps_u.shape,
                   f"return a tensor shaped like the estimates {tuple(eps_u.shape)}, got "
                   f"{getattr(out, 'shape', type(out).__name__)}")
            expect(torch.equal(eps_u, kept_u) and torch.equal(eps_c, kept_c),
                   "guided_eps changed eps_u or eps_c in place (`+=`, `.add_`, `.mul_`): the sampler may still need "
                   "them; compute a new tensor")
            got[w] = out.detach().double()

        def same(a: torch.Tensor, b: torch.Tensor) -> bool:
            return torch.allclose(a, b, atol=1e-6)

        at_0, at_1 = same(got[0.0], eps_u), same(got[1.0], eps_c)
        linear = all(same(got[w] - got[0.0], w * (got[1.0] - got[0.0])) for w in got)
        if at_0 and at_1 and linear:
            return  # a line in w through eps_u at w = 0 and eps_c at w = 1 is the formula
        for hint, slip in _GUIDANCE_SLIPS.items():
            if all(same(got[w], slip(eps_u, eps_c, w)) for w in got):
                raise Wrong(hint)
        expect(at_1, "at w = 1 guidance must return the conditional estimate eps_c unchanged: w = 1 is the plain "
                     "conditional model")
        expect(at_0, "at w = 0 guidance must return the unconditional estimate eps_u")
        raise Wrong("the guided estimate must be linear in w: moving from w = 1 to w = 2 changes it as much as "
                    "moving from w = 0 to w = 1 (eps_u + w (eps_c - eps_u))")

    return run_check("5.4 (guided_eps)", test, quiet=quiet)


def _tiny_conditional_unet():
    """A UNet2DConditionModel of the tiny Stable Diffusion's kind, random but fixed (16-wide text states)."""
    from utils.diffusion import tiny_text_unet

    with torch.random.fork_rng():  # leave the notebook's random state alone
        torch.manual_seed(54)
        return tiny_text_unet(16, sample_size=8, channels=(16, 32)).eval()


def _sd_schedulers() -> dict[str, Any]:
    """Stable Diffusion's sampler (PNDM, which keeps the last noise estimates) and a DDIM one, SD's betas."""
    from diffusers import DDIMScheduler, PNDMScheduler

    config = dict(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                  steps_offset=1, set_alpha_to_one=False)
    return {"PNDMScheduler": PNDMScheduler(skip_prk_steps=True, **config),
            "DDIMScheduler": DDIMScheduler(clip_sample=False, **config)}


@torch.no_grad()
def _cfg_loop(unet, scheduler, text_states: torch.Tensor, null_states: torch.Tensor, latents: torch.Tensor, w: float,
              steps: int, guide: Callable = _guided) -> torch.Tensor:
    """The sampling loop of StableDiffusionPipeline: one guided noise estimate, one scheduler step, per timestep."""
    scheduler.set_timesteps(steps)
    x = latents.clone()  # (B, 4, h', w')
    for t in scheduler.timesteps:
        eps_u = unet(x, t, encoder_hidden_states=null_states).sample
        eps_c = unet(x, t, encoder_hidden_states=text_states).sample
        x = scheduler.step(guide(eps_u, eps_c, w), t, x).prev_sample
    return x


def check_cfg_sample(cfg_sample: Callable, quiet: bool = False) -> Verdict:
    """Exercise 5.4 (b): the guided sampling loop, against a reference loop with the same start and schedulers."""
    def test() -> None:
        unet = _tiny_conditional_unet()
        generator = torch.Generator().manual_seed(55)
        latents = torch.randn((2, 4, 8, 8), generator=generator)  # (B, 4, h', w')
        text_states, null_states = (torch.randn((2, 5, 16), generator=generator) for _ in range(2))  # (B, L, D)
        for name, scheduler in _sd_schedulers().items():
            for w, steps in ((4.0, 8), (0.0, 5)) if name == "PNDMScheduler" else ((2.5, 5),):
                scheduler.set_timesteps(3)  # left over from an earlier run: the loop must set its own
                try:
                    with torch.no_grad():
                        got = cfg_sample(unet, scheduler, text_states.clone(), null_states.clone(), latents.clone(), w,
                                         steps)
                except Exception as exc:
                    if "scheduling_pndm" not in traceback.extract_tb(exc.__traceback__)[-1].filename:
                        raise  # NotImplementedError, or the learner's own crash: run_check reports it
                    raise Wrong(f"PNDMScheduler.step failed ({type(exc).__name__}: {exc}). PNDM, Stable Diffusion's "
                                "sampler, counts the noise estimates it is handed and keeps the last few for its "
                                "multi-step formula, so it must get exactly one per timestep: combine eps_u and eps_c "
                                "into the guided estimate and call scheduler.step once per timestep (stepping this "
                                "one scheduler once per estimate runs it past the end of its schedule, and would "
                                "interleave the two branches' estimates in its history)") from exc
                expect(isinstance(got, torch.Tensor) and got.shape == latents.shape,
                       f"return the final latents, shaped like the starting ones {tuple(latents.shape)}, got "
                       f"{getattr(got, 'shape', type(got).__name__)}")
                got = got.detach().float()

                def matches(**slip) -> bool:
                    return torch.allclose(got, _cfg_loop(unet, scheduler, text_states, null_states, latents,
                                                         slip.pop("w", w), slip.pop("steps", steps), **slip), atol=1e-4)

                if matches():
                    continue
                where = f"with {name}, w = {w} and {steps} steps"
                if matches(guide=lambda u, c, w: c + w * (u - c)):
                    raise Wrong(f"{where}: the conditional and unconditional estimates are swapped (check the order "
                                "of null_states and text_states if you batch them, and which half is which)")
                if matches(guide=lambda u, c, w: (1 + w) * c - w * u):
                    raise Wrong(f"{where}: your loop guides with Ho and Salimans' convention, (1 + w) eps_c - w eps_u; "
                                "use the chapter's eps_u + w (eps_c - eps_u) (check guided_eps, which the loop "
                                "should call)")
                if matches(steps=3):
                    raise Wrong(f"{where}: your loop ran the scheduler's old timesteps; call "
                                "scheduler.set_timesteps(steps) first (it also resets PNDM's history)")
                worst = (got - _cfg_loop(unet, scheduler, text_states, null_states, latents, w, steps)).abs().max()
                raise Wrong(f"{where} your final latents differ from the reference loop's (max abs difference "
                            f"{worst:.3g}). For each t in scheduler.timesteps: eps_u = unet(x, t, "
                            "encoder_hidden_states=null_states).sample, eps_c likewise with text_states, then "
                            "x = scheduler.step(guided_eps(eps_u, eps_c, w), t, x).prev_sample")

    return run_check("5.4 (cfg_sample)", test, quiet=quiet)


# --- Exercise 5.5: predicting v instead of the noise ----------------------------------------------

def check_v_prediction(velocity: Callable, x0_eps_from_v: Callable, quiet: bool = False) -> Verdict:
    """Exercise 5.5: v = sqrt(a) eps - sqrt(1 - a) x0 and back, a = alpha_bar_t, including a = 0 (no signal left)."""
    from diffusers import DDPMScheduler

    def test() -> None:
        scheduler = DDPMScheduler(num_train_timesteps=1000, prediction_type="v_prediction")  # DDPM's linear betas
        generator = torch.Generator().manual_seed(55)
        x0 = torch.rand((6, 3, 4, 4), generator=generator, dtype=torch.float64) * 2 - 1
        eps = torch.randn((6, 3, 4, 4), generator=generator, dtype=torch.float64)
        t = torch.tensor([0, 1, 250, 600, 999])
        alpha_bar = torch.cat([scheduler.alphas_cumprod[t].double(), torch.zeros(1, dtype=torch.float64)])
        alpha_bar = alpha_bar.reshape(-1, 1, 1, 1)  # (B, 1, 1, 1); the last image: alpha_bar = 0, pure noise
        a, s = alpha_bar.sqrt(), (1 - alpha_bar).sqrt()
        want_v = torch.cat([scheduler.get_velocity(x0[:5], eps[:5], t), -x0[5:]])  # diffusers; v = -x0 at alpha_bar = 0

        def same(got: torch.Tensor, want: torch.Tensor) -> bool:
            return torch.allclose(got, want, atol=1e-6)

        v = velocity(x0.clone(), eps.clone(), alpha_bar.clone())
        expect(isinstance(v, torch.Tensor) and v.shape == x0.shape,
               f"velocity: return v shaped like x0 {tuple(x0.shape)}, got {getattr(v, 'shape', type(v).__name__)}")
        v = v.detach().double()
        if not same(v, want_v):
            slips = {
                "velocity has the wrong sign: v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x0": -want_v,
                "velocity: the coefficients are swapped; sqrt(alpha_bar) multiplies eps, so that v is the noise when "
                "no noise has been added (alpha_bar = 1) and -x0 when nothing of x0 is left": s * eps - a * x0,
                "velocity: take square roots, v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x0":
                    alpha_bar * eps - (1 - alpha_bar) * x0,
                "velocity: x0 enters with a minus sign, v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x0":
                    a * eps + s * x0,
            }
            hint = next((h for h, slip in slips.items() if same(v, slip)),
                        f"velocity differs from diffusers' DDPMScheduler.get_velocity (max abs difference "
                        f"{(v - want_v).abs().max():.3g}); v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x0")
            raise Wrong(hint)

        x_t = a * x0 + s * eps  # the forward process, section 5.2
        out = x0_eps_from_v(x_t.clone(), want_v.clone(), alpha_bar.clone())
        expect(isinstance(out, (tuple, list)) and len(out) == 2
               and all(isinstance(o, torch.Tensor) and o.shape == x0.shape for o in out),
               f"x0_eps_from_v: return a pair (x0, eps) of tensors shaped like x_t {tuple(x0.shape)}")
        got_x0, got_eps = (o.detach().double() for o in out)
        if not (torch.isfinite(got_x0).all() and torch.isfinite(got_eps).all()):
            raise Wrong("x0_eps_from_v: at alpha_bar = 0 (nothing of x0 left, the zero terminal SNR of Lin et al.) "
                        "your answer is not finite, so you divide by sqrt(alpha_bar) somewhere. (x_t, v) is (x0, eps) "
                        "turned by an angle whose cosine is sqrt(alpha_bar), so turning back needs no division")
        if same(got_x0, eps) and same(got_eps, x0):
            raise Wrong("x0_eps_from_v: return the pair in the order (x0, eps)")
        if not same(got_x0, x0):
            hint = ("x0 = sqrt(alpha_bar) x_t - sqrt(1 - alpha_bar) v: mind the sign of the v term"
                    if same(got_x0, a * x_t + s * want_v) else
                    "substitute x_t = sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) eps and v into "
                    "sqrt(alpha_bar) x_t - sqrt(1 - alpha_bar) v and simplify")
            raise Wrong(f"x0_eps_from_v: the x0 you return is not the one x_t was made from (max abs difference "
                        f"{(got_x0 - x0).abs().max():.3g}). {hint}")
        if not same(got_eps, eps):
            hint = ("eps = sqrt(1 - alpha_bar) x_t + sqrt(alpha_bar) v: mind the sign of the v term"
                    if same(got_eps, s * x_t - a * want_v) else
                    "eps = sqrt(1 - alpha_bar) x_t + sqrt(alpha_bar) v")
            raise Wrong(f"x0_eps_from_v: the eps you return is not the noise x_t was made with (max abs difference "
                        f"{(got_eps - eps).abs().max():.3g}). {hint}")

    return run_check("5.5 (v-prediction)", test, quiet=quiet)
