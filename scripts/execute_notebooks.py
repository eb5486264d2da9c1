"""Execute notebooks top to bottom in fresh kernels and store their outputs (used by `make book`).

The paired py:percent file is the source: each notebook is rebuilt from its .py, executed in
its own folder, and written back as .ipynb with outputs. Those stored outputs are what the
book shows and what nbval checks in `make test`.

    python scripts/execute_notebooks.py chapters/00_getting_started.ipynb [...] [--jobs 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import jupytext
import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

BUDGET_S = 120  # every notebook must run in 2 minutes on 2 cores in tiny mode (CHAPTER_DONE's budget)
CELL_TIMEOUT_S = 600


def last_state(line: str) -> str:
    """What a terminal shows for a line redrawn with carriage returns (a progress bar): its last state."""
    states = [part for part in line.split("\r") if part]
    return states[-1] if states else ""


def tidy_streams(nb: nbformat.NotebookNode) -> None:
    """Merge consecutive stdout/stderr chunks and keep each progress-bar line's final state only.

    Jupyter does this on screen; doing it in the stored notebook makes the book show one bar, not
    one line per redraw. Cells with progress bars are tagged nbval-ignore-output, so nbval is unaffected.
    """
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        merged: list = []
        for out in cell.get("outputs", []):
            if out.output_type == "stream" and merged and merged[-1].output_type == "stream" and merged[-1].name == out.name:
                merged[-1].text += out.text
            else:
                merged.append(out)
        for out in merged:
            if out.output_type == "stream" and "\r" in out.text:
                out.text = "\n".join(last_state(line) for line in out.text.split("\n"))
        cell.outputs = merged


def execute(path: str) -> tuple[str, float, str | None]:
    """Execute one notebook in place; returns (name, seconds, error or None)."""
    ipynb = Path(path).with_suffix(".ipynb")
    source = ipynb.with_suffix(".py")
    nb = jupytext.read(source if source.exists() else ipynb)
    nb.metadata.setdefault("jupytext", {})["formats"] = "ipynb,py:percent"
    for i, cell in enumerate(nb.cells):  # stable ids and no timestamps, so re-running changes no line needlessly
        cell.id = f"cell-{i:03d}"
    client = NotebookClient(
        nb, timeout=CELL_TIMEOUT_S, kernel_name="python3", record_timing=False,
        resources={"metadata": {"path": str(ipynb.parent)}},
    )
    start = time.perf_counter()
    error = None
    try:
        client.execute()
    except CellExecutionError as exc:
        error = str(exc).splitlines()[-1] if str(exc) else repr(exc)
    seconds = time.perf_counter() - start
    tidy_streams(nb)
    nb.metadata["jupytext"].pop("text_representation", None)  # as `make sync` writes it
    nbformat.write(nb, ipynb)
    return ipynb.name, seconds, error


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="+")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("MMLLM_MODE", "tiny")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    print(f"executing {len(args.notebooks)} notebook(s) in {os.environ['MMLLM_MODE']} mode, {args.jobs} at a time")
    failed = []
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for name, seconds, error in pool.map(execute, args.notebooks):
            flag = "  (over the 2-minute budget)" if seconds > BUDGET_S else ""
            print(f"  {name:<40} {seconds:6.1f} s{flag}" + (f"  FAILED: {error}" if error else ""))
            if error:
                failed.append(name)
    if failed:
        print(f"{len(failed)} notebook(s) failed: {', '.join(failed)}; their error output is stored in the .ipynb")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
