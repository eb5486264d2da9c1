"""Break one thing per chapter on purpose and check that the chapter's tests catch it.

The stored-output rule (README) lets nbval ignore the digits of training and sampling, so each
chapter must still fail when a result is really wrong: through a checked claim (`utils.claims`)
or through an exact output that changes. Each planted failure below edits one line in a copy of
the repository, runs nbval on the chapter, and reports where it was caught.

    python scripts/plant_failures.py           # every chapter (about 6 minutes on 2 cores)
    python scripts/plant_failures.py 01 05     # chapters 1 and 5
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import jupytext

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Plant:
    chapter: str  # the notebook's number, e.g. "01"
    what: str  # the regression, in words
    file: str  # the file edited, relative to the repository
    old: str  # a line fragment found exactly once in it
    new: str


PLANTS = [
    Plant("00", "relation() swaps 'above' and 'below'", "utils/shapes.py",
          'return "above" if dy < 0 else "below"', 'return "below" if dy < 0 else "above"'),
    Plant("01", "the tiny ViT trained with a learning rate 1000 times too small", "chapters/01_vit.py",
          "epochs=5, batch_size=32, lr=3e-3,", "epochs=5, batch_size=32, lr=3e-6,"),
    Plant("02", "the all-reduce removed from the gather's backward pass", "utils/clip.py",
          "dist.all_reduce(grad)  # summed over the processes' losses", "pass  # all-reduce removed"),
    Plant("03", "attention scores in the Q-Former not scaled by 1/sqrt(hs)", "utils/qformer.py",
          "scores = q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5", "scores = q @ k.transpose(-2, -1)"),
    Plant("04", "questions asked without LLaVA-1.5's request for a one-word answer", "utils/llava.py",
          'return f"{question.strip()}\\n{SHORT_ANSWER}"', "return question.strip()"),
    Plant("05", "the toy DDPM trained with a learning rate 1000 times too small", "chapters/05_diffusion.py",
          "steps=6000, batch_size=256, lr=4e-3,", "steps=6000, batch_size=256, lr=4e-6,"),
]


def copy_repository(target: Path) -> None:
    """The tracked and untracked-but-not-ignored files, plus links to .venv and models/."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split("\n")
    for name in filter(None, files):
        source = ROOT / name
        if source.is_file() and not name.startswith("models/"):
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name, follow_symlinks=False)
    (target / "models").symlink_to(ROOT / "models")
    (target / ".venv").symlink_to(ROOT / ".venv")


def run(plant: Plant) -> tuple[bool, str]:
    """Plant one failure; returns (caught, where and how)."""
    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder)
        copy_repository(copy)
        path = copy / plant.file
        text = path.read_text()
        if text.count(plant.old) != 1:
            return False, f"the line to break is no longer in {plant.file}: update PLANTS"
        path.write_text(text.replace(plant.old, plant.new))
        notebook = next((copy / "chapters").glob(f"{plant.chapter}_*.ipynb"))
        if plant.file.startswith("chapters/"):  # the notebook runs its cells; rebuild them from the edited .py
            stored = jupytext.read(notebook)
            edited = jupytext.read(notebook.with_suffix(".py"))
            for cell, new in zip(stored.cells, edited.cells):
                cell.source = new.source
            jupytext.write(stored, notebook, fmt="ipynb")
        env = {**os.environ, "MMLLM_MODE": "tiny", "HF_HUB_OFFLINE": "1", "MMLLM_THREADS": "1", "PYTHONHASHSEED": "0"}
        result = subprocess.run([str(ROOT / ".venv" / "bin" / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                 "--nbval", "--nbval-current-env", "--nbval-sanitize-with", "sanitize.cfg",
                                 str(notebook.relative_to(copy))], cwd=copy, env=env, capture_output=True, text=True)
    if result.returncode == 0:
        return False, "NOT CAUGHT: the notebook still passes"
    output = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout)  # IPython colours its tracebacks
    cells = re.findall(r"FAILED \S+::Cell (\d+)", output)
    claim = re.search(r"ClaimError: (Claim not met: .*?)(?= If you changed|$)", output, re.M)
    how = f"claim: {claim.group(1)}" if claim else "nbval: an exact output changed"
    return True, f"caught in cell(s) {', '.join(cells) or '?'}; {how}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("chapters", nargs="*", help="chapter numbers, e.g. 01 05 (default: all)")
    args = parser.parse_args()
    plants = [p for p in PLANTS if not args.chapters or p.chapter in args.chapters]
    missed = 0
    for plant in plants:
        caught, how = run(plant)
        missed += not caught
        print(f"chapter {plant.chapter}: {plant.what}\n    {how}", flush=True)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
