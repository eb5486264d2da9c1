"""utils.diffusion against diffusers' DDPMScheduler and against the definitions it implements."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDPMScheduler

from utils import diffusion
from utils.diffusion import NoiseSchedule, sample


@pytest.mark.parametrize("name, diffusers_name", [("linear", "linear"), ("cosine", "squaredcos_cap_v2")])
def test_schedules_equal_diffusers(name: str, diffusers_name: str) -> None:
    ours = getattr(NoiseSchedule, name)()
    theirs = DDPMScheduler(num_train_timesteps=1000, beta_schedule=diffusers_name)
    torch.testing.assert_close(ours.betas.float(), theirs.betas, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(ours.alpha_bars.float(), theirs.alphas_cumprod, atol=1e-6, rtol=1e-4)


def test_the_course_numbers() -> None:
    linear = NoiseSchedule.linear()
    assert linear.T == 1000
    assert linear.betas[0].item() == pytest.approx(1e-4) and linear.betas[-1].item() == pytest.approx(0.02)
    assert linear.betas[0].sqrt().item() == pytest.approx(0.01)  # the first step's noise has sigma 0.01
    assert linear.alpha_bars[-1].item() < 1e-4  # x_T is almost pure noise
    assert (linear.snr()[1:] < linear.snr()[:-1]).all()  # the signal-to-noise ratio only falls


def test_add_noise_equals_diffusers() -> None:
    schedule, scheduler = NoiseSchedule.linear(), DDPMScheduler(num_train_timesteps=1000)
    generator = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(4, 3, 8, 8, generator=generator), torch.randn(4, 3, 8, 8, generator=generator)
    t = torch.tensor([0, 10, 500, 999])
    torch.testing.assert_close(schedule.q_sample(x0, t, noise), scheduler.add_noise(x0, noise, t), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("t", [999, 500, 1, 0])
@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, 1e-10), (torch.float32, 1e-3)])
def test_reverse_step_equals_diffusers(t: int, dtype: torch.dtype, tolerance: float) -> None:
    # diffusers forms 1 - alpha_bar_t in the data's precision; in float32 that loses digits near
    # t = 0, where it is about 1e-4, so float32 agrees to 1e-3; on the same float64 schedule the two agree to 1e-10.
    schedule, scheduler = NoiseSchedule.linear(), DDPMScheduler(num_train_timesteps=1000)
    scheduler.set_timesteps(1000)
    scheduler.alphas_cumprod = schedule.alpha_bars  # diffusers' own are float32; give it the float64 ones
    generator = torch.Generator().manual_seed(t)
    x_t, eps = (torch.randn(2, 3, 8, 8, generator=generator, dtype=dtype) for _ in range(2))
    noise = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(123), dtype=dtype)
    ours = schedule.p_step(eps, t, x_t, noise=noise)
    theirs = scheduler.step(eps, t, x_t, generator=torch.Generator().manual_seed(123)).prev_sample
    assert ours.dtype == dtype
    torch.testing.assert_close(ours, theirs.to(dtype), atol=tolerance, rtol=tolerance)


def test_closed_form_matches_the_iterated_process_in_distribution() -> None:
    schedule = NoiseSchedule.linear()
    torch.manual_seed(0)
    x0 = torch.tensor([-1.0, 0.0, 0.5, 1.0]).expand(20000, 4).clone()  # (N, 4): 20,000 copies of 4 pixels
    x = x0
    for t in range(100):  # 100 single steps of eq. (2) ...
        x = schedule.q_step(x, t)
    alpha_bar = schedule.alpha_bars[99].item()  # ... against eq. (4) at the same step
    torch.testing.assert_close(x.mean(dim=0), alpha_bar ** 0.5 * x0[0], atol=0.02, rtol=0)
    torch.testing.assert_close(x.var(dim=0), torch.full((4,), 1 - alpha_bar), atol=0.02, rtol=0)


def test_posterior_mean_is_a_weighted_average_of_x0_and_xt() -> None:
    schedule = NoiseSchedule.linear()
    x0, x_t = torch.zeros(1, 2), torch.ones(1, 2)
    mean_from_x0, _ = schedule.posterior(torch.ones(1, 2), torch.zeros(1, 2), 500)
    mean_from_xt, variance = schedule.posterior(x0, x_t, 500)
    # At t = 0 (the paper's step 1) the posterior is x_0 itself, with no variance.
    first, first_variance = schedule.posterior(torch.full((1, 2), 3.0), torch.zeros(1, 2), 0)
    torch.testing.assert_close(first, torch.full((1, 2), 3.0))
    assert first_variance.item() == 0.0
    assert 0 < variance.item() < schedule.betas[500].item()  # beta_tilde_t <= beta_t
    assert 0 < mean_from_x0[0, 0] < 1 and 0 < mean_from_xt[0, 0] < 1


def test_sampling_with_the_ideal_noise_predictor_recovers_the_data_point() -> None:
    schedule = NoiseSchedule.linear(T=100, beta_end=0.2)
    target = torch.tensor([0.3, -0.7])

    def ideal(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # the data set is the one point `target`
        alpha_bar = schedule.alpha_bars[t].float()[:, None]
        return (x_t - alpha_bar.sqrt() * target) / (1 - alpha_bar).sqrt()

    x, trajectory = sample(ideal, schedule, (5, 2), generator=torch.Generator().manual_seed(0), keep_every=10)
    torch.testing.assert_close(x, target.expand(5, 2), atol=1e-4, rtol=0)
    assert len(trajectory) == 11 and trajectory[0].std() > 0.5


@pytest.mark.parametrize("call, error, message", [
    (lambda s: NoiseSchedule(torch.tensor([0.1, 1.0])), ValueError, r"in \(0, 1\)"),
    (lambda s: NoiseSchedule(torch.tensor([[0.1]])), ValueError, "1-D"),
    (lambda s: s.q_sample(torch.zeros(2, 3), 1000), ValueError, "0..999"),
    (lambda s: s.q_sample(torch.zeros(2, 3), -1), ValueError, "0..999"),
    (lambda s: s.q_sample(torch.zeros(2, 3), torch.tensor([1, 2, 3])), ValueError, "one timestep per image"),
    (lambda s: s.q_sample(torch.zeros(2, 3), 0.5), TypeError, "integers"),
    (lambda s: s.q_sample(torch.zeros(2, 3), 5, noise=torch.zeros(2, 4)), ValueError, "noise has shape"),
    (lambda s: s.p_step(torch.zeros(2, 3), 5, torch.zeros(2, 4)), ValueError, "eps_theta has shape"),
])
def test_clear_errors(call, error, message: str) -> None:
    with pytest.raises(error, match=message):
        call(NoiseSchedule.linear())


def test_scaled_linear_equals_stable_diffusions_schedule() -> None:
    theirs = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    torch.testing.assert_close(NoiseSchedule.scaled_linear().alpha_bars.float(), theirs.alphas_cumprod, atol=1e-6, rtol=1e-4)


def test_training_a_toy_denoiser_learns_the_data() -> None:
    from utils.diffusion import ToyDenoiser, train_denoiser, two_moons

    data = two_moons(2000, seed=0)
    model = ToyDenoiser(width=64)
    schedule = NoiseSchedule.linear(T=100)
    losses = train_denoiser(model, model, data, schedule, steps=600, batch_size=128, lr=3e-3, seed=0, show_progress=False)
    assert sum(losses[-50:]) / 50 < 0.8 * sum(losses[:50]) / 50
    with torch.no_grad():
        points, _ = sample(model, schedule, (500, 2), generator=torch.Generator().manual_seed(1), clip_x0=None)
    near = (torch.cdist(points, data).min(-1).values < 0.2).float().mean()
    start = (torch.cdist(torch.randn(500, 2, generator=torch.Generator().manual_seed(1)), data).min(-1).values < 0.2).float().mean()
    assert near > 0.6 and near > start + 0.2, (near, start)


def test_ema_tracks_the_weights() -> None:
    from utils.diffusion import EMA

    model = torch.nn.Linear(2, 2)
    ema = EMA(model, decay=0.5)
    before = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)
    ema.copy_to(model)
    torch.testing.assert_close(model.weight, before + 0.5)
    with pytest.raises(ValueError, match="decay"):
        EMA(model, decay=1.0)


def test_conditional_training_needs_a_null_condition() -> None:
    from utils.diffusion import train_denoiser

    model = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match="null_condition"):
        train_denoiser(model, lambda x, t, condition: model(x), torch.zeros(4, 2), NoiseSchedule.linear(T=10), steps=1,
                       conditions=torch.zeros(4, 3), show_progress=False)
    with pytest.raises(ValueError, match="one condition per example"):
        train_denoiser(model, lambda x, t, condition: model(x), torch.zeros(4, 2), NoiseSchedule.linear(T=10), steps=1,
                       conditions=torch.zeros(3, 3), null_condition=torch.zeros(3), show_progress=False)


def test_dominant_colour_reads_shapesworld_colours() -> None:
    from utils.diffusion import dominant_colour
    from utils.shapes import ShapesWorld

    world = ShapesWorld(30, seed=2, split="test", max_objects=1, image_size=32)
    assert [dominant_colour(image) for image in world.images()] == [s.objects[0].colour for s in world.scenes]
    assert dominant_colour(torch.ones(3, 32, 32) * torch.tensor([245, 245, 240])[:, None, None] / 255) is None
    with pytest.raises(ValueError, match="one RGB image"):
        dominant_colour(torch.zeros(1, 3, 32, 32))


def test_to_pil_rejects_batches() -> None:
    from utils.diffusion import to_pil

    assert to_pil(torch.zeros(3, 4, 5)).size == (5, 4)
    with pytest.raises(ValueError, match="one RGB image"):
        to_pil(torch.zeros(2, 3, 4, 4))


# --- DDIM ---------------------------------------------------------------------------------------
def test_ddim_step_equals_diffusers_ddim_scheduler() -> None:
    from diffusers import DDIMScheduler

    schedule = diffusion.NoiseSchedule.linear(1000)
    scheduler = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02)
    scheduler.set_timesteps(50)
    assert [int(t) for t in scheduler.timesteps] == diffusion.ddim_timesteps(1000, 50)
    g = torch.Generator().manual_seed(0)
    x_t, eps, z = (torch.randn(2, 3, 8, 8, generator=g, dtype=torch.float64) for _ in range(3))
    for t, eta in [(980, 0.0), (500, 0.0), (0, 0.0), (500, 1.0)]:
        ours = diffusion.ddim_step(schedule, eps, t, max(t - 20, -1), x_t, eta=eta, noise=z)
        theirs = scheduler.step(eps, t, x_t, eta=eta, variance_noise=z if eta else None).prev_sample
        torch.testing.assert_close(ours, theirs.to(torch.float64), rtol=1e-4, atol=1e-5)  # diffusers keeps its tables in float32


def test_ddim_with_eta_1_and_unit_strides_is_ddpms_reverse_step() -> None:
    schedule = diffusion.NoiseSchedule.linear(100)
    g = torch.Generator().manual_seed(1)
    x_t, eps, z = (torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64) for _ in range(3))
    for t in (50, 1):
        ddim = diffusion.ddim_step(schedule, eps, t, t - 1, x_t, eta=1.0, noise=z, clip_x0=None)
        ddpm = schedule.p_step(eps, t, x_t, noise=z, clip_x0=None)
        torch.testing.assert_close(ddim, ddpm)
    with pytest.raises(ValueError, match="t_prev < t"):
        diffusion.ddim_step(schedule, eps, 10, 10, x_t)
    with pytest.raises(ValueError, match="steps must lie"):
        diffusion.ddim_timesteps(100, 0)


def test_ddim_sample_equals_diffusers_ddim_pipeline() -> None:
    from diffusers import DDIMPipeline, DDIMScheduler

    torch.manual_seed(0)
    unet = diffusion.tiny_unet(8, (8, 16, 16)).eval()
    scheduler = DDIMScheduler(num_train_timesteps=1000)
    theirs = DDIMPipeline(unet=unet, scheduler=scheduler)
    theirs.set_progress_bar_config(disable=True)
    images = theirs(batch_size=2, num_inference_steps=5, generator=torch.Generator().manual_seed(3), output_type="np").images
    ours = diffusion.ddim_sample(lambda x, t: unet(x, t).sample, NoiseSchedule.linear(1000), (2, 3, 8, 8), steps=5,
                                 generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close((ours / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1), torch.from_numpy(images),
                               rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="eta must lie"):
        diffusion.ddim_step(NoiseSchedule.linear(10), ours, 5, 4, ours, eta=1.5)
