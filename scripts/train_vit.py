"""Train the tiny ShapesWorld ViT and save it as a transformers ViTForImageClassification.

    python scripts/train_vit.py [--out models/vit-tiny]

The model names the single object in a 64 x 64 ShapesWorld scene (15 classes: 5 colours x
3 shapes). It is trained with the chapter's own code (`utils.vit`, `utils.training`), converted
with `ViT.to_transformers()`, and saved with a matching image processor, so chapter 1 loads it
with the same `from_pretrained` calls as `google/vit-base-patch16-224`. Deterministic on a CPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from utils import runtime, vit  # noqa: E402
from utils.shapes import COLOURS, SHAPES, ShapesWorld  # noqa: E402
from utils.training import train_classifier  # noqa: E402

LABELS = [f"{colour} {shape}" for colour in COLOURS for shape in SHAPES]
TARGET_ACCURACY = 0.95


def dataset(n: int, split: str, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Images scaled to [-1, 1] (what the saved processor produces) and class ids into LABELS."""
    world = ShapesWorld(n, seed=seed, split=split, max_objects=1)
    return world.images() * 2 - 1, world.labels("colour") * len(SHAPES) + world.labels("shape")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "models" / "vit-tiny")
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args()

    runtime.seed_everything(0)
    train = dataset(8000, "train")
    test = dataset(1000, "test")
    model = vit.ViT(vit.ViTConfig.named("tiny", num_classes=len(LABELS)))
    start = time.perf_counter()
    history = train_classifier(model, *train, epochs=args.epochs, batch_size=32, lr=3e-3, eval_data=test, seed=0)
    accuracy = history.eval_accuracy[-1]
    print(f"held-out accuracy {accuracy:.3f} after {time.perf_counter() - start:.0f} s")
    if accuracy < TARGET_ACCURACY:
        print(f"below the {TARGET_ACCURACY:.0%} target: not saving")
        return 1

    hf_model = model.to_transformers()
    hf_model.config.id2label = dict(enumerate(LABELS))
    hf_model.config.label2id = {label: i for i, label in enumerate(LABELS)}
    args.out.mkdir(parents=True, exist_ok=True)
    hf_model.save_pretrained(args.out)
    size = hf_model.config.image_size
    processor = {  # resize to 64 x 64, scale to [0, 1], then (x - 0.5) / 0.5 -> [-1, 1]
        "image_processor_type": "ViTImageProcessor",
        "do_resize": True,
        "size": {"height": size, "width": size},
        "resample": 2,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
    }
    (args.out / "preprocessor_config.json").write_text(json.dumps(processor, indent=2) + "\n")
    (args.out / "training.json").write_text(json.dumps(
        {"task": "name the object: 15 classes", "train_scenes": len(train[0]), "test_scenes": len(test[0]),
         "epochs": args.epochs, "held_out_accuracy": round(accuracy, 4)}, indent=2) + "\n")
    zoo.seal(args.out)
    print(f"saved to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
