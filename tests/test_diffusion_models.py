"""The shipped tiny diffusion models load with the same calls as their Hub originals and do their job."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import DDPMPipeline, StableDiffusionPipeline
from safetensors import safe_open

from utils import diffusion, zoo
from utils.shapes import COLOURS, SHAPES


@pytest.fixture(scope="module")
def sd() -> StableDiffusionPipeline:
    pipe = StableDiffusionPipeline.from_pretrained(zoo.path("sd"), variant="fp16", dtype=torch.float32,
                                                   safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_ddpm_samples_look_like_shapesworld_objects() -> None:
    pipe = DDPMPipeline.from_pretrained(zoo.path("ddpm"), dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.unet.config.sample_size == 32 and pipe.scheduler.config.num_train_timesteps == 1000
    images = pipe(batch_size=8, num_inference_steps=100, generator=torch.Generator().manual_seed(123), output_type="pt").images
    assert images.shape == (8, 3, 32, 32)
    # Most samples hold one object in a ShapesWorld colour on a light background, as the training scenes do.
    colours = [diffusion.dominant_colour(image) for image in images]
    assert sum(c is not None for c in colours) >= 6, colours


def test_sd_pipeline_parts_and_shared_files(sd: StableDiffusionPipeline) -> None:
    folder = Path(zoo.path("sd"))
    assert sd.vae_scale_factor == 4 and sd.unet.config.sample_size == 8 and sd.unet.config.in_channels == 4
    assert sd.unet.config.cross_attention_dim == sd.text_encoder.config.hidden_size
    assert sd.tokenizer.model_max_length == sd.text_encoder.config.max_position_embeddings
    # The text encoder and vocabulary are the tiny CLIP's own files, linked rather than copied.
    link = folder / "text_encoder" / "model.fp16.safetensors"
    assert link.is_symlink() and link.resolve() == (Path(zoo.path("clip")) / "model.safetensors").resolve()
    assert (folder / "tokenizer" / "tokenizer.json").resolve() == (Path(zoo.path("clip")) / "tokenizer.json").resolve()
    with safe_open(str(folder / "unet" / "diffusion_pytorch_model.fp16.safetensors"), "pt") as f:
        assert f.get_tensor(next(iter(f.keys()))).dtype == torch.float16
    assert zoo.own_size(folder) < 5 * 2**20


def test_sd_vae_reconstructs_scenes(sd: StableDiffusionPipeline) -> None:
    from utils.shapes import ShapesWorld

    x = ShapesWorld(16, seed=21, split="test", max_objects=1, image_size=32).images() * 2 - 1
    with torch.no_grad():
        z = sd.vae.encode(x).latent_dist.mean
        restored = sd.vae.decode(z).sample
    assert z.shape == (16, 4, 8, 8)
    assert torch.mean((restored - x) ** 2) < 0.01


def test_sd_draws_the_requested_colour(sd: StableDiffusionPipeline) -> None:
    prompts = [f"a {colour} {shape}" for colour in COLOURS for shape in SHAPES]
    images = sd(prompts, guidance_scale=4.0, num_inference_steps=25, generator=torch.Generator().manual_seed(321),
                output_type="pt").images
    right = [diffusion.dominant_colour(image) == prompt.split()[1] for image, prompt in zip(images, prompts)]
    assert sum(right) / len(right) >= 0.8, right


def test_guidance_changes_the_result(sd: StableDiffusionPipeline) -> None:
    outputs = [sd("a green square", guidance_scale=w, num_inference_steps=10, generator=torch.Generator().manual_seed(0),
                  output_type="pt").images for w in (1.0, 6.0)]
    assert (outputs[0] - outputs[1]).abs().max() > 0.05
