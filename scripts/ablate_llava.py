"""Retrain the last part of the tiny LLaVA's stage 2 without one part of its recipe, and record what it scores.

    python scripts/ablate_llava.py --checkpoints DIR [--steps 2000]

Chapter 4's box "How this differs from LLaVA, and why" and its measurement of the generated
instruction data print these numbers. The variants start from the weights that
``scripts/train_llava.py --checkpoints DIR`` keeps (``after_warmup.pt``, which also holds the
stage-1 weights, and ``after_focus.pt``); run that first (25 to 55 minutes on two threads, as the
phases pass their gates sooner or later). Every variant then trains the mixed last part of stage 2
for ``--steps`` (2,000, as the shipped model did; 8 to 10 minutes on two threads) and is scored
like the shipped model:

- one-word QA accuracy through the processor and ``generate`` on the chapter's 60 held-out scenes;
- POPE F1 (random negatives) on its 200 held-out scenes;
- the generated-data prompts (conversation, detailed description, complex reasoning) of 120 other
  held-out scenes, each answer fact-checked against the boxes (``llava.fact_check_answers``); the
  answers themselves are kept in the record too.

The variants:

- ``recipe``: the shipped recipe at this budget (the reference for the others);
- ``no instruction records``: the generated records left out, their batches one-word chat questions;
- ``no compact batches``: the last part without compact questions (chat questions and records only);
- ``no focus phase``: the last part straight after the all-kinds warm-up;
- ``no compact phases``: the last part straight after stage 1, none of the compact steps before
  it (so not like for like in steps: the record says how many each had).

The record goes to models/llava-tiny/ablations.json (the checkpoint folder is sealed again).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts import train_llava as tl  # noqa: E402
from utils import llava, zoo  # noqa: E402
from utils.shapes import ShapesWorld  # noqa: E402

# name: (the checkpoint it starts from, the changed train_llava options)
VARIANTS = {
    "recipe": ("after_focus", {}),
    "no instruction records": ("after_focus", {"qa_share": 1.0}),
    "no compact batches": ("after_focus", {"compact_share": 0.0}),
    "no focus phase": ("after_warmup", {}),
    "no compact phases": ("after_stage1", {}),
}
PHASES = {"after_stage1": "stage 1", "after_warmup": "the all-kinds warm-up", "after_focus": "the focus phase"}
INSTRUCTION_SCENES = 120  # held-out scenes for the generated-data prompts, 40 per response type


def start_from(run: tl.Run, checkpoints: Path, name: str) -> dict[str, int]:
    """Load the weights a variant starts from; returns the compact steps they had taken."""
    warm = torch.load(checkpoints / "after_warmup.pt", weights_only=True)
    compact = ("colour warm-up", "relation warm-up", "warm-up")
    if name == "after_stage1":
        run.model.load_state_dict(warm["after_stage1"])
        taken = {}
    elif name == "after_warmup":
        run.model.load_state_dict(warm["model"])
        taken = {k: warm["steps_taken"][k] for k in compact}
    else:
        state = torch.load(checkpoints / "after_focus.pt", weights_only=True)
        run.model.load_state_dict(state["model"])
        taken = {k: state["steps_taken"][k] for k in (*compact, "focus")}
    llava.set_stage(run.model, 2)
    return taken


def score(run: tl.Run, processor) -> dict:
    qa = llava.qa_accuracy(run.model, processor, ShapesWorld(60, seed=23, split="test").scenes)
    probe = llava.pope(run.model, processor, ShapesWorld(200, seed=24, split="test").scenes)
    scenes = ShapesWorld(INSTRUCTION_SCENES, seed=29, split="test").scenes
    prompts = llava.instruction_prompts(scenes)
    answers = llava.answer_questions(run.model, processor, [scenes[i].render() for i, *_ in prompts],
                                     [question for _, _, question, _ in prompts], max_new_tokens=80)
    scores = llava.fact_check_answers(scenes, prompts, answers)
    return {"qa": {k: round(v, 4) for k, v in qa.items()}, "pope f1": round(probe.f1, 4),
            "pope yes-ratio": round(probe.yes_ratio, 4),
            "instructions": {kind: {k: round(v, 4) if isinstance(v, float) else v
                                    for k, v in dataclasses.asdict(s).items()} for kind, s in scores.items()},
            "long answers": answers}  # kept, so that a changed scoring rule needs no retraining


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoints", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--only", nargs="*", default=None, help="run these variants only (names as in the record)")
    parser.add_argument("--out", type=Path, default=zoo.entry("llava").local_dir / "ablations.json")
    args = parser.parse_args()
    for needed in ("after_warmup.pt", "after_focus.pt"):
        if not (args.checkpoints / needed).exists():
            parser.error(f"{args.checkpoints / needed} is missing: run scripts/train_llava.py "
                         f"--checkpoints {args.checkpoints} first")
    run = tl.prepare(tl.parse_args(["--steps2", str(args.steps)]))
    processor = llava.build_processor(run.image_processor, run.tokenizer, run.model.config.vision_config.patch_size)
    defaults = vars(run.args).copy()
    for name, (checkpoint, change) in VARIANTS.items():
        if args.only is not None and name not in args.only:
            continue
        vars(run.args).update(defaults, **change)
        before = start_from(run, args.checkpoints, checkpoint)
        start = time.perf_counter()
        tl.stage2(run, processor)
        run.model.eval()
        entry = {"starts after": PHASES[checkpoint], "change": change or "none",
                 "compact steps before": before, "last-part steps": args.steps,
                 "seconds": round(time.perf_counter() - start), "threads": torch.get_num_threads(),
                 **score(run, processor)}
        print(name, json.dumps(entry), flush=True)
        record = json.loads(args.out.read_text()) if args.out.exists() else {}
        zoo.save_record(args.out, {**record, name: entry})
    print(f"saved to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
