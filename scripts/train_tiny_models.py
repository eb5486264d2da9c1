"""Rebuild every tiny checkpoint in models/ (what `make assets` runs).

Each zoo entry names the command that rebuilds it and the models it needs first (a judge, a
text encoder); this script runs them side by side where it can, then
reports each folder's size against the budgets (5 MiB each, 30 MiB in all) and the time taken.

    python scripts/train_tiny_models.py                 # everything, two trainings at a time
    python scripts/train_tiny_models.py clip-tokenizer  # one model
    python scripts/train_tiny_models.py --jobs 1        # one at a time
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from utils import zoo  # noqa: E402

BUDGET_EACH, BUDGET_ALL = 5 * 2**20, 30 * 2**20




def needs_cycle(entries: list[zoo.ZooEntry]) -> list[str] | None:
    """A cycle of ``needs`` among ``entries`` (["a", "b", "a"]), or None: such entries could never start."""
    by_name = {item.name: item for item in entries}
    state: dict[str, str] = {}  # "open" while on the path, "done" once all its needs are explored

    def visit(name: str, path: list[str]) -> list[str] | None:
        state[name] = "open"
        for need in by_name[name].needs:
            if need not in by_name:
                continue
            if state.get(need) == "open":
                return path[path.index(need):] + [need]
            if need not in state and (cycle := visit(need, path + [need])):
                return cycle
        state[name] = "done"
        return None

    for name in by_name:
        if name not in state and (cycle := visit(name, [name])):
            return cycle
    return None


def build(entries: list[zoo.ZooEntry], jobs: int) -> None:
    """Run each entry's rebuild command once, ``jobs`` at a time, each after the models it needs."""
    pending = list(dict.fromkeys(entries))  # keep order, drop repeats
    cycle = needs_cycle(pending)
    if cycle:
        raise SystemExit(f"[assets] these zoo entries need each other, so none can be built first: "
                         f"{' -> '.join(cycle)}; fix the needs=(...) of one of them in utils/zoo.py")
    names = {item.name for item in pending}
    running: dict[subprocess.Popen, tuple[zoo.ZooEntry, float]] = {}
    finished: set[str] = set()
    commands_started: set[str] = set()
    while pending or running:
        for item in list(pending):
            waiting_for = [n for n in item.needs if n in names and n not in finished]
            if len(running) >= jobs or waiting_for:
                continue
            pending.remove(item)
            if item.rebuild in commands_started:  # one script may build several entries
                finished.add(item.name)
                continue
            commands_started.add(item.rebuild)
            command = shlex.split(item.rebuild)
            if command[0] == "python":
                command[0] = sys.executable
            print(f"[assets] start {item.rebuild}", flush=True)
            running[subprocess.Popen(command, cwd=ROOT)] = (item, time.perf_counter())
        if not running:
            continue
        time.sleep(0.5)
        for process in [p for p in running if p.poll() is not None]:
            item, start = running.pop(process)
            if process.returncode != 0:
                for other in running:
                    other.kill()
                raise SystemExit(f"[assets] `{item.rebuild}` failed with exit code {process.returncode}")
            finished.add(item.name)
            print(f"[assets] done  {item.rebuild} in {time.perf_counter() - start:.1f} s", flush=True)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="zoo names to rebuild (default: all)")
    parser.add_argument("--jobs", type=int, default=2, help="trainings run side by side, one thread each")
    args = parser.parse_args(argv)
    entries = [zoo.entry(n) for n in args.names] if args.names else list(zoo.REGISTRY.values())
    start_all = time.perf_counter()
    build(entries, args.jobs)
    total = 0
    over = []
    for item in zoo.REGISTRY.values():
        size = zoo.own_size(item.local_dir)
        total += size
        print(f"[assets] models/{item.folder:<24} {size / 2**20:6.2f} MiB")
        if size > BUDGET_EACH:
            over.append(f"{item.folder} is over 5 MiB")
    print(f"[assets] all models: {total / 2**20:.2f} MiB (budget 30 MiB), built in {time.perf_counter() - start_all:.0f} s")
    if total > BUDGET_ALL:
        over.append("models/ is over 30 MiB")
    if over:
        print("[assets] over budget: " + "; ".join(over))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
