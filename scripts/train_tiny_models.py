"""Rebuild every tiny checkpoint in models/ (what `make assets` runs).

Each zoo entry names the command that rebuilds it; this script runs them in order, then
reports each folder's size against the budgets (5 MB each, 30 MB in all) and the time taken.

    python scripts/train_tiny_models.py            # everything
    python scripts/train_tiny_models.py clip-tokenizer
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from utils import zoo  # noqa: E402

BUDGET_EACH, BUDGET_ALL = 5 * 2**20, 30 * 2**20


def folder_size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) if folder.is_dir() else 0


def main(names: list[str]) -> int:
    entries = [zoo.entry(n) for n in names] if names else list(zoo.REGISTRY.values())
    done: set[str] = set()
    start_all = time.perf_counter()
    for item in entries:
        if item.rebuild in done:  # one script may build several entries
            continue
        done.add(item.rebuild)
        command = shlex.split(item.rebuild)
        if command[0] == "python":
            command[0] = sys.executable
        start = time.perf_counter()
        print(f"[assets] {item.rebuild}", flush=True)
        subprocess.run(command, cwd=ROOT, check=True)
        print(f"[assets]   {time.perf_counter() - start:.1f} s", flush=True)
    total = 0
    over = []
    for item in zoo.REGISTRY.values():
        size = folder_size(item.local_dir)
        total += size
        print(f"[assets] models/{item.folder:<24} {size / 2**20:6.2f} MB")
        if size > BUDGET_EACH:
            over.append(f"{item.folder} is over 5 MB")
    print(f"[assets] all models: {total / 2**20:.2f} MB (budget 30 MB), built in {time.perf_counter() - start_all:.0f} s")
    if total > BUDGET_ALL:
        over.append("models/ is over 30 MB")
    if over:
        print("[assets] over budget: " + "; ".join(over))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
