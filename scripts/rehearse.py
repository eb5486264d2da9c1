"""Rehearse full mode: run chapters and solutions top to bottom with MMLLM_MODE=rehearsal.

Every cell runs the code a Colab reader runs (float16, the real processors, prompt templates and
batch sizes), on stand-ins of the real checkpoints (utils/rehearsal.py). The outputs are noise and
are not kept; a cell that raises fails the rehearsal. Stand-ins are built first, once.

    python scripts/rehearse.py                      # every chapter and solution
    python scripts/rehearse.py chapters/04_llava.py  # some of them
    python scripts/rehearse.py --jobs 2 --workload configs/t4_workload.json   # also record the workload

With --workload, each notebook's calls of the models (batch sizes, sequence lengths, image sizes,
generation lengths, sampling steps) are recorded, and the file that the T4 plan
(utils/t4plan.py) costs is rewritten.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CELL_TIMEOUT_S = 600


def notebooks(names: list[str]) -> list[Path]:
    if names:
        return [ROOT / Path(n).with_suffix(".py") if not Path(n).is_absolute() else Path(n).with_suffix(".py") for n in names]
    return sorted((ROOT / "chapters").glob("*.py")) + sorted((ROOT / "solutions").glob("*.py"))


def run(source: Path, log_dir: str | None) -> tuple[str, float, str | None]:
    """Execute one notebook in a rehearsal kernel; returns (name, seconds, error or None)."""
    import jupytext
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    os.environ["MMLLM_MODE"] = "rehearsal"
    if log_dir:
        os.environ["MMLLM_REHEARSAL_LOG"] = str(Path(log_dir) / f"{source.stem}.jsonl")
    nb = jupytext.read(source)
    client = NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                            resources={"metadata": {"path": str(source.parent)}})
    start = time.perf_counter()
    error = None
    try:
        client.execute()
    except CellExecutionError as exc:
        lines = [line for line in str(exc).splitlines() if line.strip()]
        error = "\n".join(lines[-3:]) if lines else repr(exc)
    return source.name, time.perf_counter() - start, error


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", help="chapters/... or solutions/... (.py or .ipynb); default: all")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--workload", help="write the recorded workload (JSON) here")
    args = parser.parse_args()

    os.environ["MMLLM_MODE"] = "rehearsal"
    os.environ.setdefault("MMLLM_THREADS", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from utils import rehearsal

    start = time.perf_counter()
    for name in rehearsal.BUILDERS:
        rehearsal.stand_in(name)
    print(f"stand-ins ready in {rehearsal.CACHE_DIR} ({time.perf_counter() - start:.0f} s)", flush=True)

    sources = notebooks(args.notebooks)
    log_dir = tempfile.mkdtemp(prefix="rehearsal-log-") if args.workload else None
    failures = 0
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for name, seconds, error in pool.map(run, sources, [log_dir] * len(sources)):
            print(f"{'FAILED' if error else 'ok':6s} {name:40s} {seconds:6.1f} s" + (f"\n{error}\n" if error else ""), flush=True)
            failures += error is not None
    if args.workload:  # (written even after a failure, so a first recording can bootstrap chapter 0's plan)
        workload = {Path(f).stem: [json.loads(line) for line in Path(f).read_text().splitlines()]
                    for f in sorted(Path(log_dir).glob("*.jsonl"))}
        Path(args.workload).write_text(json.dumps(workload, indent=1) + "\n")
        print(f"workload of {len(workload)} notebooks written to {args.workload}")
    print(f"{len(sources) - failures} of {len(sources)} notebooks rehearsed without an error "
          f"({time.perf_counter() - start:.0f} s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
