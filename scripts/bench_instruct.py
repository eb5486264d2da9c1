"""Benchmark LLaVA-style instruction-data generation on ShapesWorld (chapter 4's library).

    python scripts/bench_instruct.py [--n 1000] [--seed 0] [--plant 0.3]

1. Rule-based generation of ``n`` records, one per scene, response types cycled
   (conversation, detail, complex_reasoning): records/s for writing alone and for the whole
   pipeline (write, validate, fact-check), the rejection rate and reasons, and the statistics
   table that chapter 4 prints.
2. The fact checker's recall: the same records with a mistake planted in a fraction of them
   (a colour, a count, a relation or a shape changed by a plain text substitution, as a careless
   LLM might write it), and how many of those the checker rejects.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from utils import instruct  # noqa: E402
from utils.instruct import ImageContext, Turn, dataset_stats, generate_dataset, rule_based_turns  # noqa: E402
from utils.shapes import COLOURS, make_scene  # noqa: E402

FLIPS = {"to the left of": "to the right of", "to the right of": "to the left of", "above": "below", "below": "above"}


NEGATED = re.compile(r"[^.!?]*\b(?:no|not|none|neither|nor|never)\b[^.!?]*|[^.!?]*n't[^.!?]*", re.IGNORECASE)


def plant_mistake(answer: str, context: ImageContext, rng: random.Random) -> tuple[str, str] | None:
    """``answer`` with one fact changed, and the kind of change; None if nothing could be changed.

    Sentences with a negation are left alone: changing 'there is no red star' gives another true sentence.
    """
    negated = [m.span() for m in NEGATED.finditer(answer)]
    present = {o.colour for o in context.objects}
    absent = sorted(set(COLOURS) - present)
    patterns = {
        "relation": (r"to the left of|to the right of|\babove\b|\bbelow\b", lambda m: FLIPS[m.group()]),
        "colour": (rf"\b(?:{'|'.join(sorted(present))})\b", lambda m: rng.choice(absent)),
        "count": (r"\b(?:one|two|three|[123])(?= (?:small |large )?shapes?\b)",
                  lambda m: {"one": "two", "two": "three", "three": "four", "1": "2", "2": "3", "3": "4"}[m.group()]),
        "shape": (r"\b(?:circle|square|triangle)\b", lambda m: "star"),
    }
    options = [(kind, m, replace) for kind, (pattern, replace) in patterns.items()
               for m in re.finditer(pattern, answer) if not any(a <= m.start() < b for a, b in negated)]
    if not options:
        return None
    kind = rng.choice(sorted({k for k, _, _ in options}))
    _, m, replace = rng.choice([o for o in options if o[0] == kind])
    return answer[:m.start()] + replace(m) + answer[m.end():], kind


class Planter:
    """Wraps the rule-based generator and plants a mistake in a fraction of its records."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.planted: dict[str, str] = {}  # image -> kind of mistake

    def __call__(self, context: ImageContext, response_type: str, rng: random.Random) -> list[Turn]:
        turns = rule_based_turns(context, response_type, rng)
        if rng.random() >= self.rate:
            return turns
        i = rng.randrange(len(turns))
        changed = plant_mistake(turns[i][1], context, rng)
        if changed is None:
            return turns
        self.planted[context.image] = changed[1]
        return [*turns[:i], (turns[i][0], changed[0]), *turns[i + 1:]]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1000, help="records to generate (one ShapesWorld scene each)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plant", type=float, default=0.3, help="fraction of records given a planted mistake")
    args = parser.parse_args()

    contexts = [ImageContext.from_scene(make_scene(i, seed=args.seed)) for i in range(args.n)]
    types = instruct.RESPONSE_TYPES

    start = time.perf_counter()
    for i, context in enumerate(contexts):
        rule_based_turns(context, types[i % len(types)], random.Random(f"{args.seed}/{i}"))
    write_s = time.perf_counter() - start

    start = time.perf_counter()
    records, rejected = generate_dataset(contexts, types, seed=args.seed, cycle_types=True)
    pipeline_s = time.perf_counter() - start

    print(f"Rule-based instruction data: {args.n} ShapesWorld scenes, types cycled, seed {args.seed}")
    print(f"  writing only:                     {args.n / write_s:8.0f} records/s")
    print(f"  write + validate + fact-check:    {args.n / pipeline_s:8.0f} records/s ({pipeline_s:.2f} s)")
    print(f"  rejection rate: {len(rejected) / args.n:.1%}")
    print()
    print(dataset_stats(records, rejected))

    planter = Planter(args.plant)
    records, rejected = generate_dataset(contexts, types, seed=args.seed, cycle_types=True, generator=planter)
    rejected_images = {(r if isinstance(r, str) else r["image"]) for r, _ in rejected}
    caught = Counter(kind for image, kind in planter.planted.items() if image in rejected_images)
    planted = Counter(planter.planted.values())
    false_alarms = len(rejected_images - set(planter.planted))
    print()
    print(f"Fact-checker recall on planted mistakes ({len(planter.planted)} of {args.n} records changed):")
    for kind in sorted(planted):
        print(f"  {kind:<10}{caught[kind]:>5} / {planted[kind]:<5} caught ({caught[kind] / planted[kind]:.0%})")
    total = sum(planted.values())
    print(f"  {'all':<10}{sum(caught.values()):>5} / {total:<5} caught ({sum(caught.values()) / max(total, 1):.0%}); "
          f"unchanged records rejected: {false_alarms}")
    print()
    print(dataset_stats(records, rejected))
    return 0


if __name__ == "__main__":
    sys.exit(main())
