"""Benchmark the from-scratch ViT against transformers' ViT on the CPU (`make bench`).

    python scripts/bench_vit.py [--repeats 10] [--skip-training]

1. Forward time at ViT-Base size (batch 8, 224 x 224, random weights copied across, eval mode,
   no_grad, both using PyTorch's fused scaled-dot-product attention): median of each, their
   ratio (target <= 1.10) and the largest logit difference.
2. The chapter's tiny-ViT training recipe on ShapesWorld with the machine's threads: seconds of
   training and held-out accuracy (target >= 95% within 60 s on 2 cores).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from utils import runtime, vit  # noqa: E402


def forward_benchmark(repeats: int, warmup: int = 2) -> None:
    runtime.seed_everything(0)
    ours = vit.ViT(vit.ViTConfig.named("base")).eval()
    theirs = ours.to_transformers(attn_implementation="sdpa")  # same weights, same fused attention
    x = torch.randn(8, 3, 224, 224)
    runs = {"from scratch (utils.vit)": lambda: ours(x), "transformers ViT": lambda: theirs(pixel_values=x).logits}
    times: dict[str, list[float]] = {name: [] for name in runs}
    with torch.no_grad():
        diff = (ours(x) - theirs(pixel_values=x).logits).abs().max().item()
        for fn in runs.values():  # first calls pay for allocation and kernel selection
            for _ in range(warmup):
                fn()
        for _ in range(repeats):  # alternate the two so that drifting clock speeds affect both alike
            for name, fn in runs.items():
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    ours_s, theirs_s = (statistics.median(t) for t in times.values())
    print(f"ViT-Base/16 forward, batch 8, 224 px, CPU, {torch.get_num_threads()} threads, "
          f"{warmup} warm-up + median of {repeats} runs each:")
    print(f"  {'model':<28}{'median':>10}{'min':>10}")
    for name, t in times.items():
        print(f"  {name:<28}{statistics.median(t) * 1000:>7.0f} ms{min(t) * 1000:>7.0f} ms")
    print(f"  {'ratio ours / transformers':<28}{ours_s / theirs_s:>10.3f}   (target <= 1.10)")
    print(f"  {'max |logit difference|':<28}{diff:>10.1e}")


def training_benchmark() -> None:
    from utils.shapes import SHAPES, ShapesWorld
    from utils.training import train_classifier

    def data(n: int, split: str):
        world = ShapesWorld(n, seed=1, split=split, max_objects=1)
        return world.images() * 2 - 1, world.labels("colour") * len(SHAPES) + world.labels("shape")

    train, test = data(8000, "train"), data(600, "test")
    runtime.seed_everything(0)
    model = vit.ViT(vit.ViTConfig.named("tiny", num_classes=15))
    history = train_classifier(model, *train, epochs=5, batch_size=32, lr=3e-3, eval_data=test, seed=0,
                               show_progress=False)
    print(f"tiny ViT on ShapesWorld (chapter 1 recipe), {torch.get_num_threads()} threads:")
    print(f"  training time {history.seconds:.1f} s (target <= 60 s), held-out accuracy "
          f"{history.eval_accuracy[-1]:.3f} (target >= 0.95)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=10, help="timed forward passes per model")
    parser.add_argument("--skip-training", action="store_true")
    args = parser.parse_args()
    forward_benchmark(args.repeats)
    if not args.skip_training:
        training_benchmark()
    return 0


if __name__ == "__main__":
    sys.exit(main())
