"""Retrain the tiny CLIP without one of its departures from CLIP's recipe, and record what it scores.

    python scripts/ablate_clip.py [--steps 2500]

Chapter 2's box "How this differs from CLIP, and why" prints these numbers. Each variant is the
recipe of `scripts/train_clip.py` (same scenes, steps, seed and evaluation) with one change:

- ``verbatim captions``: no templates around the captions and the size words never dropped;
- ``batch 16``: 16 pairs per batch instead of 64, for the same number of steps.

The record goes to models/clip-tiny/ablations.json (the checkpoint folder is sealed again). About
five minutes per variant on one CPU thread.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.train_clip import zero_shot_accuracy  # noqa: E402
from utils import runtime, zoo  # noqa: E402
from utils.clip import cosine_similarity_matrix, recall_at_k, tiny_clip_config, train_clip  # noqa: E402
from utils.shapes import ShapesWorld  # noqa: E402

VARIANTS = {
    "verbatim captions": dict(augment=False),
    "batch 16": dict(batch_size=16),
}


def evaluate(model, tokenizer) -> dict:
    """The numbers train_clip.py records: zero-shot accuracy on 600 one-object scenes, recall on 500 scenes."""
    single = ShapesWorld(600, seed=2, split="test", max_objects=1)
    accuracy = zero_shot_accuracy(model, tokenizer, single.images() * 2 - 1, single.labels("colour"), single.labels("shape"))
    scenes = ShapesWorld(500, seed=3, split="test")
    with torch.no_grad():
        text = model.get_text_features(**tokenizer([s.caption for s in scenes.scenes], padding=True,
                                                   return_tensors="pt")).pooler_output
        image = model.get_image_features(pixel_values=scenes.images() * 2 - 1).pooler_output
    similarity = cosine_similarity_matrix(text, image)
    return {"zero_shot_accuracy": {k: round(v, 4) for k, v in accuracy.items()},
            "text_to_image_recall": {f"@{k}": round(recall_at_k(similarity, k), 4) for k in (1, 5)}}


def main() -> int:
    from transformers import CLIPModel, CLIPTokenizer

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2500)
    parser.add_argument("--out", type=Path, default=zoo.entry("clip").local_dir / "ablations.json")
    args = parser.parse_args()
    tokenizer = CLIPTokenizer.from_pretrained(zoo.path("clip-tokenizer", mode="tiny"), local_files_only=True)
    train = ShapesWorld(12000, seed=2, split="train")
    pixels, captions = train.images() * 2 - 1, [s.caption for s in train.scenes]
    record = {}
    for name, change in VARIANTS.items():
        runtime.seed_everything(0)
        model = CLIPModel(tiny_clip_config())
        start = time.perf_counter()
        train_clip(model, tokenizer, pixels, captions, steps=args.steps, **{"batch_size": 64, **change})
        model.eval()
        record[name] = {"change": change, "steps": args.steps, "seconds": round(time.perf_counter() - start),
                        **evaluate(model, tokenizer)}
        print(name, record[name], flush=True)
    print(f"saved to {zoo.save_record(args.out, record)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
