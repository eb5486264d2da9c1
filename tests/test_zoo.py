"""utils.zoo: one name, a local folder in tiny mode, a pinned Hub snapshot in full mode."""

from __future__ import annotations

from pathlib import Path

import pytest

from utils import zoo


def test_every_entry_has_a_shipped_tiny_checkpoint_within_budget() -> None:
    assert zoo.REGISTRY, "the zoo is empty"
    total = 0
    for name, item in zoo.REGISTRY.items():
        folder = Path(zoo.path(name, mode="tiny"))
        assert folder == item.local_dir and folder.is_dir()
        size = zoo.own_size(folder)  # links to another checkpoint's files count once, there
        for link in (f for f in folder.rglob("*") if f.is_symlink()):  # and they must stay inside models/
            assert link.resolve().is_relative_to(zoo.MODELS_DIR.resolve()) and link.resolve().is_file(), link
        assert size <= 5 * 2**20, f"{name}: {size / 2**20:.1f} MB is over the 5 MB budget per checkpoint"
        total += size
    assert total <= 30 * 2**20, f"models/ holds {total / 2**20:.1f} MB, over the 30 MB budget"


def test_missing_checkpoint_names_the_rebuild_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(zoo, "MODELS_DIR", tmp_path)
    with pytest.raises(zoo.ZooError, match=r"tiny checkpoint for 'clip-tokenizer' is missing.*python scripts/build_clip_tokenizer\.py.*make assets"):
        zoo.path("clip-tokenizer", mode="tiny")


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(zoo.ZooError, match=r"no model called 'gpt-5' in the zoo; known names: .*clip-tokenizer"):
        zoo.path("gpt-5")


def test_revisions_must_be_full_commit_hashes() -> None:
    with pytest.raises(ValueError, match="40-character commit hash"):
        zoo.ZooEntry("x", "org/x", "main", "x", "make assets", "bad pin")


def test_registering_a_different_entry_under_a_taken_name_fails() -> None:
    item = zoo.entry("clip-tokenizer")
    assert zoo.register(item) is item  # the same entry again is fine
    with pytest.raises(ValueError, match="already registered"):
        zoo.register(zoo.ZooEntry(item.name, "other/repo", item.revision, item.folder, item.rebuild, "other"))


def test_full_mode_downloads_the_pinned_revision_only_the_needed_files(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    calls = []

    def fake_snapshot_download(repo_id, revision, allow_patterns):
        calls.append((repo_id, revision, tuple(allow_patterns)))
        return "/cache/snapshot"

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    assert zoo.path("clip-tokenizer", mode="full") == "/cache/snapshot"
    item = zoo.entry("clip-tokenizer")
    assert calls == [(item.hub_id, item.revision, item.allow_patterns)]
    assert not any(p.endswith(".bin") or p == "*" for p in zoo.DEFAULT_PATTERNS)


def test_full_mode_failure_suggests_tiny_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(zoo.ZooError, match="could not download openai/clip-vit-base-patch32.*MMLLM_MODE=tiny"):
        zoo.path("clip-tokenizer", mode="full")


def test_table_reports_sizes() -> None:
    rows = {row["name"]: row for row in zoo.table()}
    assert rows["clip-tokenizer"]["tiny size"].endswith("MB")
    assert rows["clip-tokenizer"]["full mode (Hub)"] == "openai/clip-vit-base-patch32@3d74acf"
