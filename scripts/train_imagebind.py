"""Bind a new modality, ShapesWorld sounds, to the tiny CLIP through images only (ImageBind's recipe).

    python scripts/train_imagebind.py [--out models/soundbind-tiny] [--steps 3000]

The tiny CLIP of chapter 2 (models/clip-tiny) is frozen. A small :class:`utils.sound.SoundEncoder`
is trained with CLIP's InfoNCE loss (``utils.clip.clip_loss``, learned temperature) to put the
sound of each scene next to the frozen CLIP embedding of the scene's *image*; text is never
paired with sound. Afterwards caption -> sound retrieval works anyway ("emergent"), because the
image embeddings it was bound to already sit next to their captions.

Measured on held-out test-split scenes and saved in training.json:

* sound -> image recall@1/@5 over 500 scenes (what was trained; a hit is the sound's own image);
* emergent text -> sound recall@1/@5: the caption through CLIP's text encoder queries the 500
  sounds. Several scenes can share a caption (one-object scenes especially), so a hit is any
  retrieved sound whose scene has the query's caption; chance is the expected recall of a random
  ranking under the same rule (``utils.clip.caption_recall_at_k``, ``chance_caption_recall_at_k``);
* the baseline: the same encoder, same steps, trained directly on (sound, caption embedding)
  pairs, evaluated on the same text -> sound task;
* text -> sound recall@1 among one-object scenes (what chapter 6 feeds to a diffusion model);
* for scale, CLIP's own text -> image recall under the same caption rule.

The checkpoint is the image-bound encoder (config.json + model.safetensors, float32) with the
baseline beside it in ``text-paired/`` (same files), so the chapter can compare the two; it is
refused if emergent text -> sound recall@1 is below EMERGENT_TARGET times chance. Deterministic on
a CPU with one thread (two trainings of 3000 steps, about 5-6 minutes with the data).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from utils import runtime, zoo  # noqa: E402
from utils.clip import (caption_recall_at_k, chance_caption_recall_at_k, cosine_similarity_matrix,  # noqa: E402
                        encode_images, encode_texts, recall_at_k)
from utils.shapes import ShapesWorld  # noqa: E402
from utils.sound import (SoundEncoder, SoundEncoderConfig, encode_sounds, sounds, spectrogram,  # noqa: E402
                         train_to_targets)

EMERGENT_TARGET = 10.0  # emergent text -> sound recall@1 must reach this many times chance
TRAIN_SEED, TEST_SEED, SINGLE_SEED = 11, 12, 13


@dataclass
class Pairs:
    """Scenes with everything the training and evaluation need, index-aligned."""

    captions: list[str]
    waves: torch.Tensor  # (n, 2, S)
    images: torch.Tensor  # (n, d) frozen CLIP image embeddings, unit length
    texts: torch.Tensor  # (n, d) frozen CLIP caption embeddings, unit length


def load_clip():
    """The frozen tiny CLIP (stored in float16, run in float32) and its processor."""
    from transformers import CLIPModel, CLIPProcessor

    model = CLIPModel.from_pretrained(zoo.path("clip", mode="tiny"), dtype=torch.float32).eval()
    processor = CLIPProcessor.from_pretrained(zoo.path("clip", mode="tiny"))
    model.requires_grad_(False)
    return model, processor


def make_pairs(clip, processor, world: ShapesWorld) -> Pairs:
    """Sounds, image embeddings and caption embeddings of every scene of ``world``."""
    scenes = world.scenes
    captions = [s.caption for s in scenes]
    images = encode_images(clip, processor, [s.render() for s in scenes])
    texts = encode_texts(clip, processor, captions)
    normal = torch.nn.functional.normalize
    return Pairs(captions, sounds(scenes), normal(images, dim=-1), normal(texts, dim=-1))


def train(pairs: Pairs, targets: torch.Tensor, projection_dim: int, steps: int, name: str) -> tuple[SoundEncoder, dict]:
    """A fresh SoundEncoder (seed 0) trained to ``targets``; prints and returns its log."""
    torch.manual_seed(0)
    encoder = SoundEncoder(SoundEncoderConfig(projection_dim=projection_dim))
    specs = spectrogram(pairs.waves)  # (n, 2, F, T)
    start = time.perf_counter()
    log = train_to_targets(encoder, specs, targets, steps=steps, seed=0)
    seconds = time.perf_counter() - start
    losses = log["losses"]
    print(f"[{name}] {steps} steps in {seconds:.0f} s; loss {sum(losses[:50]) / 50:.3f} -> "
          f"{sum(losses[-50:]) / 50:.3f}, 1/tau {log['inverse_temperature']:.1f}")
    return encoder, {"seconds": round(seconds), "final_loss": round(sum(losses[-50:]) / 50, 4),
                     "inverse_temperature": round(log["inverse_temperature"], 2)}


def text_to_sound(encoder: SoundEncoder, pairs: Pairs, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Caption-matched text -> sound recall@k: every scene's caption queries all the scenes' sounds."""
    similarity = cosine_similarity_matrix(pairs.texts, encode_sounds(encoder, pairs.waves))  # (n, n)
    return {f"@{k}": round(caption_recall_at_k(similarity, pairs.captions, pairs.captions, k), 4) for k in ks}


def evaluate(bound: SoundEncoder, baseline: SoundEncoder, test: Pairs, single: Pairs) -> dict:
    """Every retrieval number of the module docstring, with the chance levels."""
    sound = encode_sounds(bound, test.waves)  # (n, d)
    sound_to_image = cosine_similarity_matrix(sound, test.images)  # (n, n), own image on the diagonal
    text_to_image = cosine_similarity_matrix(test.texts, test.images)
    return {
        "gallery": len(test.captions), "one_object_gallery": len(single.captions),
        "sound_to_image_recall": {f"@{k}": round(recall_at_k(sound_to_image, k), 4) for k in (1, 5)},
        "sound_to_image_chance": {f"@{k}": round(k / len(test.captions), 4) for k in (1, 5)},
        "emergent_text_to_sound_recall": text_to_sound(bound, test),
        "baseline_text_to_sound_recall": text_to_sound(baseline, test),
        "text_to_sound_chance": {f"@{k}": round(chance_caption_recall_at_k(test.captions, test.captions, k), 4)
                                 for k in (1, 5)},
        "one_object_emergent_text_to_sound_recall": text_to_sound(bound, single, (1,)),
        "one_object_baseline_text_to_sound_recall": text_to_sound(baseline, single, (1,)),
        "one_object_chance": {"@1": round(chance_caption_recall_at_k(single.captions, single.captions, 1), 4)},
        "clip_text_to_image_recall": {
            f"@{k}": round(caption_recall_at_k(text_to_image, test.captions, test.captions, k), 4) for k in (1, 5)},
    }


def save(bound: SoundEncoder, baseline: SoundEncoder, out: Path, record: dict) -> None:
    """The bound encoder in ``out``, the baseline in ``out/text-paired``, training.json, then SHA256SUMS."""
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    bound.save_pretrained(out)
    baseline.save_pretrained(out / "text-paired")
    (out / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    zoo.seal(out)
    print(f"saved to {out} ({zoo.own_size(out) / 2**20:.2f} MB)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "models" / "soundbind-tiny")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--train-scenes", type=int, default=8000)
    args = parser.parse_args()

    torch.set_num_threads(1)
    runtime.seed_everything(0)
    start = time.perf_counter()
    clip, processor = load_clip()
    train_pairs = make_pairs(clip, processor, ShapesWorld(args.train_scenes, seed=TRAIN_SEED, split="train"))
    test = make_pairs(clip, processor, ShapesWorld(500, seed=TEST_SEED, split="test"))
    single = make_pairs(clip, processor, ShapesWorld(300, seed=SINGLE_SEED, split="test", max_objects=1))
    print(f"data: {args.train_scenes} training scenes, {time.perf_counter() - start:.0f} s")

    dim = clip.config.projection_dim
    bound, bound_log = train(train_pairs, train_pairs.images, dim, args.steps, "sound -> image (ImageBind)")
    baseline, baseline_log = train(train_pairs, train_pairs.texts, dim, args.steps, "sound -> text (baseline)")
    metrics = evaluate(bound, baseline, test, single)
    for key, value in metrics.items():
        print(f"  {key}: {value}")
    seconds = time.perf_counter() - start
    record = {"steps": args.steps, "batch_size": 128, "train_scenes": args.train_scenes, "seconds": round(seconds),
              "threads": torch.get_num_threads(), "bind_training": bound_log, "baseline_training": baseline_log,
              **metrics}
    emergent, chance = metrics["emergent_text_to_sound_recall"]["@1"], metrics["text_to_sound_chance"]["@1"]
    print(f"all done in {seconds:.0f} s; emergent text -> sound recall@1 {emergent:.3f} "
          f"= {emergent / chance:.0f}x chance")
    if emergent < EMERGENT_TARGET * chance:
        print(f"below the target of {EMERGENT_TARGET:g}x chance: not saving")
        return 1
    save(bound, baseline, args.out, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
