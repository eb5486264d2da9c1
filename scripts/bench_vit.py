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


def median_seconds(fn, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def forward_benchmark(repeats: int) -> None:
    runtime.seed_everything(0)
    ours = vit.ViT(vit.ViTConfig.named("base")).eval()
    theirs = ours.to_transformers()
    theirs.config._attn_implementation = "sdpa"
    x = torch.randn(8, 3, 224, 224)
    with torch.no_grad():
        diff = (ours(x) - theirs(pixel_values=x).logits).abs().max().item()
        # alternate the two so that drifting clock speeds affect both alike
        t_ours, t_theirs = [], []
        for _ in range(repeats):
            t_ours.append(median_seconds(lambda: ours(x), 1, warmup=1 if not t_ours else 0))
            t_theirs.append(median_seconds(lambda: theirs(pixel_values=x), 1, warmup=1 if not t_theirs else 0))
    a, b = statistics.median(t_ours), statistics.median(t_theirs)
    print(f"ViT-Base/16 forward, batch 8, 224 px, {torch.get_num_threads()} threads, median of {repeats}:")
    print(f"  {'from scratch (utils.vit)':<28}{a * 1000:8.1f} ms")
    print(f"  {'transformers ViT':<28}{b * 1000:8.1f} ms")
    print(f"  {'ratio (target <= 1.10)':<28}{a / b:8.3f}")
    print(f"  {'max |logit difference|':<28}{diff:8.1e}")


def training_benchmark() -> None:
    from utils.shapes import SHAPES, ShapesWorld
    from utils.training import train_classifier

    def data(n: int, split: str):
        world = ShapesWorld(n, seed=1, split=split, max_objects=1)
        return world.images() * 2 - 1, world.labels("colour") * len(SHAPES) + world.labels("shape")

    train, test = data(6000, "train"), data(600, "test")
    runtime.seed_everything(0)
    model = vit.ViT(vit.ViTConfig.named("tiny", num_classes=15))
    history = train_classifier(model, *train, epochs=4, batch_size=32, lr=3e-3, eval_data=test, seed=0,
                               show_progress=False)
    print(f"tiny ViT on ShapesWorld (chapter 1 recipe), {torch.get_num_threads()} threads:")
    print(f"  training time {history.seconds:.1f} s (target <= 60 s), held-out accuracy "
          f"{history.eval_accuracy[-1]:.3f} (target >= 0.95)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--skip-training", action="store_true")
    args = parser.parse_args()
    forward_benchmark(args.repeats)
    if not args.skip_training:
        training_benchmark()
    return 0


if __name__ == "__main__":
    sys.exit(main())
