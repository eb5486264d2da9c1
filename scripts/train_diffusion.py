"""Train chapter 5's tiny diffusion models on ShapesWorld and save them as diffusers pipelines.

    python scripts/train_diffusion.py ddpm   # models/ddpm-tiny: a DDPMPipeline (UNet2DModel + DDPMScheduler)
    python scripts/train_diffusion.py sd     # models/sd-tiny: a StableDiffusionPipeline in miniature

``ddpm`` stands in for google/ddpm-cifar10-32: an unconditional pixel-space DDPM on 32 x 32
one-object scenes. ``sd`` stands in for Stable Diffusion v1.5: an AutoencoderKL squeezing 32 x 32 x 3
images into 8 x 8 x 4 latents, and a text-conditioned UNet2DConditionModel that denoises those
latents while cross-attending to chapter 2's tiny CLIP text encoder (frozen, shared with the
``clip`` zoo entry through symbolic links instead of a second copy). Both are trained with the
chapter's own code (``utils.diffusion``), judged with chapter 1's tiny ViT, and refused if they
miss their targets. Deterministic on a CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from utils import diffusion, runtime, zoo  # noqa: E402
from utils.shapes import COLOURS, SHAPES, ShapesWorld  # noqa: E402

IMAGE_SIZE = 32
DDPM_TARGET = 0.35  # share of samples the tiny ViT names with confidence >= 0.9 (real 32 px scenes: about 0.9)
SD_COLOUR_TARGET = 0.8  # share of "a {colour} {shape}" samples whose colour is right
CONFIDENT = 0.9


def shapes_images(n: int, seed: int, split: str = "train") -> tuple[torch.Tensor, ShapesWorld]:
    """One-object 32 x 32 scenes scaled to [-1, 1], the range diffusion models work in."""
    world = ShapesWorld(n, seed=seed, split=split, max_objects=1, image_size=IMAGE_SIZE)
    return world.images() * 2 - 1, world


@torch.no_grad()
def vit_judge(images: torch.Tensor) -> tuple[list[str], torch.Tensor]:
    """Chapter 1's tiny ViT on images (B, 3, H, W) in [0, 1]: its label and confidence for each."""
    from transformers import ViTForImageClassification, ViTImageProcessor

    processor = ViTImageProcessor.from_pretrained(zoo.path("vit"))
    model = ViTForImageClassification.from_pretrained(zoo.path("vit")).eval()
    return diffusion.vit_judge(model, processor, images)


def train_ddpm(out: Path, steps: int, preview: Path | None = None) -> int:
    from diffusers import DDPMPipeline, DDPMScheduler

    data, _ = shapes_images(6000, seed=3)
    unet = diffusion.tiny_unet(IMAGE_SIZE, (16, 32, 32))
    print(f"UNet2DModel: {sum(p.numel() for p in unet.parameters()):,} parameters")
    start = time.perf_counter()
    diffusion.train_denoiser(unet, lambda x_t, t: unet(x_t, t).sample, data, diffusion.NoiseSchedule.linear(),
                             steps=steps, batch_size=32, lr=1e-3, seed=0, desc="ddpm")
    seconds = time.perf_counter() - start

    pipeline = DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=1000))
    samples = pipeline(batch_size=32, generator=torch.Generator().manual_seed(0), output_type="pt").images
    _, confidence = vit_judge(samples)
    real, _ = shapes_images(200, seed=4, split="test")
    _, real_confidence = vit_judge((real + 1) / 2)
    share, real_share = (confidence >= CONFIDENT).float().mean().item(), (real_confidence >= CONFIDENT).float().mean().item()
    print(f"trained {steps} steps in {seconds:.0f} s; ViT-confident samples {share:.1%} (real images {real_share:.1%})")
    if preview is not None:
        preview_grid(samples, preview)
    if share < DDPM_TARGET:
        print(f"below the {DDPM_TARGET:.0%} target: not saving")
        return 1
    shutil.rmtree(out, ignore_errors=True)
    pipeline.save_pretrained(out)
    (out / "training.json").write_text(json.dumps(
        {"steps": steps, "seconds": round(seconds), "vit_confident_samples": round(share, 3),
         "vit_confident_real": round(real_share, 3)}, indent=2) + "\n")
    zoo.seal(out)
    return 0


def preview_grid(images: torch.Tensor, file: Path, columns: int = 8) -> None:
    """Save images (B, 3, H, W) in [0, 1] as one PNG grid, enlarged 4x, for a quick look."""
    from PIL import Image

    B, _, H, W = images.shape
    rows = -(-B // columns)
    grid = torch.ones(3, rows * H, columns * W)
    for i, image in enumerate(images):
        grid[:, (i // columns) * H:(i // columns + 1) * H, (i % columns) * W:(i % columns + 1) * W] = image
    picture = Image.fromarray((grid.permute(1, 2, 0).numpy() * 255).round().astype("uint8"))
    picture.resize((columns * W * 4, rows * H * 4), Image.Resampling.NEAREST).save(file)
    print(f"preview: {file}")


def prompts_for(world: ShapesWorld, seed: int) -> list[str]:
    """A caption per scene, "a {colour} {shape}" or, half the time, "a {size} {colour} {shape}"."""
    generator = torch.Generator().manual_seed(seed)
    coin = torch.rand(len(world), generator=generator) < 0.5
    return [scene.objects[0].phrase if keep else scene.objects[0].phrase.replace(f"{scene.objects[0].size} ", "")
            for scene, keep in zip(world.scenes, coin.tolist())]


def train_sd(out: Path, vae_steps: int, unet_steps: int, preview: Path | None = None) -> int:
    from diffusers import PNDMScheduler, StableDiffusionPipeline
    from transformers import CLIPTextModel, CLIPTokenizer

    data, world = shapes_images(6000, seed=5)

    # 1. The autoencoder: reconstruct images through an 8 x 8 x 4 bottleneck (a tiny KL term keeps it a VAE).
    vae = diffusion.tiny_vae(IMAGE_SIZE, (16, 32, 32))
    start = time.perf_counter()
    diffusion.train_vae(vae, data, steps=vae_steps, batch_size=32, lr=2e-3, seed=0)
    vae_seconds = time.perf_counter() - start
    with torch.no_grad():
        latents = torch.cat([vae.encode(data[i:i + 256]).latent_dist.mean for i in range(0, len(data), 256)])
        reconstruction = vae.decode(latents[:256]).sample
    vae.register_to_config(scaling_factor=round(1 / latents.std().item(), 5))  # unit-variance latents, as SD's 0.18215
    print(f"VAE: {sum(p.numel() for p in vae.parameters()):,} parameters, {vae_seconds:.0f} s, "
          f"reconstruction MSE {torch.mean((reconstruction - data[:256]) ** 2):.4f}, "
          f"scaling factor {vae.config.scaling_factor}")

    # 2. The frozen text encoder: chapter 2's tiny CLIP, padded to its 32 positions as the pipeline pads.
    clip_folder = Path(zoo.path("clip"))
    tokenizer = CLIPTokenizer.from_pretrained(clip_folder, model_max_length=32)
    text_encoder = CLIPTextModel.from_pretrained(clip_folder, dtype=torch.float32).eval()

    @torch.no_grad()
    def encode(texts: list[str]) -> torch.Tensor:
        ids = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                        return_tensors="pt").input_ids
        return text_encoder(ids)[0]  # (B, L, D)

    prompts = prompts_for(world, seed=6)
    distinct = sorted(set(prompts))
    table = encode(distinct)  # (P, L, D)
    conditions = table[torch.tensor([distinct.index(p) for p in prompts])]  # (n, L, D)

    # 3. The denoiser in latent space, conditioned through cross-attention, with 10% of captions dropped for CFG.
    unet = diffusion.tiny_text_unet(text_encoder.config.hidden_size, sample_size=IMAGE_SIZE // 4, channels=(32, 64))
    print(f"UNet2DConditionModel: {sum(p.numel() for p in unet.parameters()):,} parameters")
    start = time.perf_counter()
    diffusion.train_denoiser(
        unet, lambda z_t, t, condition: unet(z_t, t, encoder_hidden_states=condition).sample,
        latents * vae.config.scaling_factor, diffusion.NoiseSchedule.scaled_linear(), steps=unet_steps,
        batch_size=64, lr=2e-3, seed=0, conditions=conditions, null_condition=encode([""]), desc="latent unet")
    unet_seconds = time.perf_counter() - start

    scheduler = PNDMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                              beta_schedule="scaled_linear", skip_prk_steps=True, set_alpha_to_one=False,
                              steps_offset=1)
    pipeline = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                       scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
    colour_accuracy, shape_accuracy = evaluate_sd(pipeline, preview)
    print(f"latent UNet {unet_seconds:.0f} s; samples with the right colour {colour_accuracy:.1%}, "
          f"right shape (tiny ViT) {shape_accuracy:.1%}")
    if colour_accuracy < SD_COLOUR_TARGET:
        print(f"below the {SD_COLOUR_TARGET:.0%} colour target: not saving")
        return 1
    save_sd(pipeline, out, clip_folder)
    (out / "training.json").write_text(json.dumps(
        {"vae_steps": vae_steps, "unet_steps": unet_steps, "vae_seconds": round(vae_seconds),
         "unet_seconds": round(unet_seconds), "colour_accuracy": round(colour_accuracy, 3),
         "shape_accuracy": round(shape_accuracy, 3)}, indent=2) + "\n")
    zoo.seal(out)
    return 0


@torch.no_grad()
def evaluate_sd(pipeline, preview: Path | None = None, per_prompt: int = 6,
                guidance_scale: float = 4.0) -> tuple[float, float]:
    """Colour and shape accuracy of samples for each of the 15 prompts "a {colour} {shape}"."""
    prompts = [f"a {colour} {shape}" for colour in COLOURS for shape in SHAPES]
    images = pipeline([p for p in prompts for _ in range(per_prompt)], guidance_scale=guidance_scale,
                      num_inference_steps=50, generator=torch.Generator().manual_seed(0), output_type="pt").images
    truth = [p for p in prompts for _ in range(per_prompt)]
    if preview is not None:
        preview_grid(images, preview, columns=per_prompt * 3)
    colours = [diffusion.dominant_colour(image) for image in images]
    labels, _ = vit_judge(images)
    colour_accuracy = sum(c == t.split()[1] for c, t in zip(colours, truth)) / len(truth)
    shape_accuracy = sum(label.split()[1] == t.split()[2] for label, t in zip(labels, truth)) / len(truth)
    return colour_accuracy, shape_accuracy


def save_sd(pipeline, out: Path, clip_folder: Path) -> None:
    """Save in half precision under the "fp16" variant names SD v1.5 uses; share CLIP's files by links."""
    shutil.rmtree(out, ignore_errors=True)
    pipeline.unet.half()
    pipeline.vae.half()
    pipeline.save_pretrained(out, variant="fp16")
    # The text encoder and the 49,408-token vocabulary are chapter 2's: link to them rather than copy 4.9 MB.
    relative = Path(os.path.relpath(clip_folder, out / "text_encoder"))
    (out / "text_encoder" / "model.fp16.safetensors").unlink()
    (out / "text_encoder" / "model.fp16.safetensors").symlink_to(relative / "model.safetensors")
    (out / "tokenizer" / "tokenizer.json").unlink()
    (out / "tokenizer" / "tokenizer.json").symlink_to(relative / "tokenizer.json")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", choices=["ddpm", "sd"])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--steps", type=int, default=None, help="denoiser training steps")
    parser.add_argument("--vae-steps", type=int, default=800)
    parser.add_argument("--preview", type=Path, help="also save a PNG grid of samples here")
    args = parser.parse_args()
    runtime.seed_everything(0)
    if args.model == "ddpm":
        return train_ddpm(args.out or ROOT / "models" / "ddpm-tiny", args.steps or 2000, args.preview)
    return train_sd(args.out or ROOT / "models" / "sd-tiny", args.vae_steps, args.steps or 1500, args.preview)


if __name__ == "__main__":
    sys.exit(main())
