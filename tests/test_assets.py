"""`make assets` runs each rebuild once, two at a time, each after the checkpoints it needs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from utils import zoo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import train_tiny_models  # noqa: E402


def entry(name: str, command: str, needs: tuple[str, ...] = ()) -> zoo.ZooEntry:
    return zoo.ZooEntry(name=name, hub_id="course/test", revision="0" * 40, folder=name, rebuild=command,
                        description="", needs=needs)


def test_needs_order_the_builds_and_shared_commands_run_once(tmp_path: Path) -> None:
    log = tmp_path / "log.txt"

    def write(word: str, pause: float = 0.0) -> str:
        return f'python -c "import time; time.sleep({pause}); open({str(log)!r}, \'a\').write({word!r} + chr(10))"'

    first = entry("first", write("first", 0.5))
    second = entry("second", write("second"), needs=("first",))
    other = entry("other", write("other"))
    same = entry("same", write("other"))  # one script that builds two entries
    train_tiny_models.build([second, first, other, same], jobs=2)
    lines = log.read_text().split()
    assert sorted(lines) == ["first", "other", "second"]  # the shared command ran once
    assert lines.index("first") < lines.index("second")


def test_a_failed_build_stops_with_its_command() -> None:
    with pytest.raises(SystemExit, match="failed with exit code 3"):
        train_tiny_models.build([entry("broken", 'python -c "raise SystemExit(3)"')], jobs=2)


def test_registered_needs_name_real_entries() -> None:
    for item in zoo.REGISTRY.values():
        assert all(name in zoo.REGISTRY for name in item.needs), item.name


def test_entries_that_need_each_other_are_named_instead_of_waiting_forever() -> None:
    a, b, c = entry("a", "python -c 1", needs=("c",)), entry("b", "python -c 2", needs=("a",)), entry("c", "python -c 3", needs=("b",))
    with pytest.raises(SystemExit, match=r"need each other.*a -> c -> b -> a"):
        train_tiny_models.build([a, b, c, entry("free", "python -c 4")], jobs=2)
    assert train_tiny_models.needs_cycle([entry("x", "1", needs=("y",)), entry("y", "2")]) is None
