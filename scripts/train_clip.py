"""Train the tiny ShapesWorld CLIP and save it as a transformers CLIPModel with its processor.

    python scripts/train_clip.py [--out models/clip-tiny] [--steps 2500]
    torchrun --nproc_per_node 2 scripts/train_clip.py    # the same global batch split over 2 processes

Image tower: a ViT of chapter 1's tiny size (64 x 64, patches of 8, 3 blocks, exact GELU) in
transformers' CLIP layout (which adds one LayerNorm before the blocks). Text tower: a 2-block
transformer over CLIP's real 49,408-token vocabulary, pooled at <|endoftext|>. Both project to
a shared 32-dimensional space; the loss is `utils.clip.clip_loss` with a learned temperature.

Captions are ShapesWorld's, put into a few templates ("a photo of ...") and with the size
words sometimes dropped, so prompts such as "a photo of a red circle" work zero-shot.
Under torchrun each process encodes its share of every global batch and the loss is computed
with `utils.clip.distributed_clip_loss`, which all-gathers the embeddings (with gradients), so
training sees the same global batch and the same gradients as a single process (gloo on CPU,
nccl on GPUs). `--record FILE` saves the first step's loss and gradients for that comparison.

Weights are stored in float16 and tokenizer.json without indentation to keep the checkpoint
under the 5 MB budget (the vocabulary dominates both); load with `dtype=torch.float32` on a CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from utils import runtime, zoo  # noqa: E402
from utils.clip import cosine_similarity_matrix, recall_at_k, tiny_clip_config, train_clip  # noqa: E402
from utils.shapes import COLOURS, SHAPES, ShapesWorld  # noqa: E402

ZERO_SHOT_TARGET = 0.90


def zero_shot_accuracy(model, tokenizer, pixel_values: torch.Tensor, colour_ids, shape_ids) -> dict[str, float]:
    """Classify one-object scenes among the 15 prompts "a photo of a {colour} {shape}"."""
    prompts = [f"a photo of a {c} {s}" for c in COLOURS for s in SHAPES]
    with torch.no_grad():
        text = model.get_text_features(**tokenizer(prompts, padding=True, return_tensors="pt")).pooler_output
        image = model.get_image_features(pixel_values=pixel_values).pooler_output
    predicted = cosine_similarity_matrix(image, text).argmax(-1)
    colour_ok = predicted // len(SHAPES) == colour_ids
    shape_ok = predicted % len(SHAPES) == shape_ids
    return {"both": (colour_ok & shape_ok).float().mean().item(), "colour": colour_ok.float().mean().item(),
            "shape": shape_ok.float().mean().item()}


def setup_distributed(cpu: bool) -> tuple[int, int, torch.device]:
    """(rank, world size, device): torchrun sets WORLD_SIZE, RANK and LOCAL_RANK; otherwise one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, torch.device("cuda" if torch.cuda.is_available() and not cpu else "cpu")
    backend = "nccl" if torch.cuda.is_available() and not cpu else "gloo"
    dist.init_process_group(backend)
    if backend == "nccl":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    return dist.get_rank(), world, device


def record_first_step(path: Path, loss: torch.Tensor, model: torch.nn.Module, world: int) -> None:
    """Save the global loss and every gradient after the first backward pass."""
    loss = loss.detach().clone()
    if world > 1:  # the global loss is the mean of the per-process ones
        dist.all_reduce(loss)
        loss /= world
    grads = {name: p.grad.detach().cpu().clone() for name, p in model.named_parameters() if p.grad is not None}
    if world == 1 or dist.get_rank() == 0:
        torch.save({"loss": loss.cpu(), "grads": grads, "world_size": world}, path)


def main() -> int:
    from torch.nn.parallel import DistributedDataParallel
    from transformers import CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "models" / "clip-tiny")
    parser.add_argument("--steps", type=int, default=2500)
    parser.add_argument("--batch-size", type=int, default=64, help="the global batch, split over processes")
    parser.add_argument("--train-scenes", type=int, default=12000)
    parser.add_argument("--cpu", action="store_true", help="stay on the CPU (gloo) even when GPUs are present")
    parser.add_argument("--record", type=Path, help="save the first step's loss and gradients here and stop")
    args = parser.parse_args()

    rank, world, device = setup_distributed(args.cpu)
    runtime.seed_everything(0)  # every process builds the same initial model and draws the same batches
    tokenizer = CLIPTokenizer.from_pretrained(zoo.path("clip-tokenizer", mode="tiny"))
    train = ShapesWorld(args.train_scenes, seed=2, split="train")
    train_pixels = train.images() * 2 - 1  # what the saved processor produces: (x - 0.5) / 0.5
    model = CLIPModel(tiny_clip_config()).to(device)
    wrapped = DistributedDataParallel(model) if world > 1 else model
    record = (lambda loss: record_first_step(args.record, loss, model, world)) if args.record else None
    start = time.perf_counter()
    train_clip(model, tokenizer, train_pixels, [s.caption for s in train.scenes], steps=args.steps,
               batch_size=args.batch_size, rank=rank, world=world, wrapped=wrapped, stop_after_backward=record)
    if args.record:
        return 0
    seconds = time.perf_counter() - start
    if rank != 0:
        return 0
    model = model.cpu()
    model.eval()

    single = ShapesWorld(600, seed=2, split="test", max_objects=1)
    accuracy = zero_shot_accuracy(model, tokenizer, single.images() * 2 - 1, single.labels("colour"), single.labels("shape"))
    scenes = ShapesWorld(500, seed=3, split="test")
    with torch.no_grad():
        tokens = tokenizer([s.caption for s in scenes.scenes], padding=True, return_tensors="pt")
        text = model.get_text_features(**tokens).pooler_output
        image = model.get_image_features(pixel_values=scenes.images() * 2 - 1).pooler_output
    similarity = cosine_similarity_matrix(text, image)  # text -> image retrieval
    recall = {k: recall_at_k(similarity, k) for k in (1, 5)}
    print(f"trained {args.steps} steps in {seconds:.0f} s; zero-shot accuracy {accuracy}; "
          f"text->image recall@1 {recall[1]:.3f}, recall@5 {recall[5]:.3f}")
    if accuracy["both"] < ZERO_SHOT_TARGET:
        print(f"zero-shot accuracy is below the {ZERO_SHOT_TARGET:.0%} target: not saving")
        return 1

    args.out.mkdir(parents=True, exist_ok=True)
    model.half().save_pretrained(args.out)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64},
                                         image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(args.out)
    zoo.compact_json(args.out)
    (args.out / "training.json").write_text(json.dumps(
        {"steps": args.steps, "batch_size": args.batch_size, "processes": world, "train_scenes": len(train), "seconds": round(seconds),
         "zero_shot_accuracy": {k: round(v, 4) for k, v in accuracy.items()},
         "text_to_image_recall": {f"@{k}": round(v, 4) for k, v in recall.items()}}, indent=2) + "\n")
    zoo.seal(args.out)
    print(f"saved to {args.out}")
    return 0


if __name__ == "__main__":
    try:
        status = main()
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    sys.exit(status)
