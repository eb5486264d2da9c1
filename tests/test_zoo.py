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
        assert size <= 5 * 2**20, f"{name}: {size / 2**20:.1f} MiB is over the 5 MiB budget per checkpoint"
        total += size
    assert total <= 30 * 2**20, f"models/ holds {total / 2**20:.1f} MiB, over the 30 MiB budget"


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


@pytest.mark.filterwarnings("ignore:MMLLM_MODE=full on a machine without a CUDA GPU")
def test_full_mode_downloads_the_pinned_revision_only_the_needed_files(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    calls = []

    def fake_snapshot_download(repo_id, revision, allow_patterns, **timeouts):
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
    assert rows["clip-tokenizer"]["tiny size"].endswith(" MiB")  # divided by 2**20
    assert rows["clip-tokenizer"]["full mode (Hub)"] == "openai/clip-vit-base-patch32@3d74acf"


# --- damaged checkpoints and downloads ----------------------------------------------------------

@pytest.fixture()
def copied_clip(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """models/clip-tiny copied into a throwaway models/ folder the zoo reads instead."""
    import shutil

    shutil.copytree(zoo.entry("clip").local_dir, tmp_path / "clip-tiny")
    monkeypatch.setattr(zoo, "MODELS_DIR", tmp_path)
    monkeypatch.setattr(zoo, "_VERIFIED", set())
    return tmp_path / "clip-tiny"


def test_every_shipped_checkpoint_matches_its_checksums() -> None:
    for item in zoo.REGISTRY.values():
        zoo.verify(item.local_dir, item.rebuild)  # raises on any missing or changed file
        listed = {line.split(maxsplit=1)[1] for line in (item.local_dir / zoo.CHECKSUMS).read_text().splitlines()}
        shipped = {f.relative_to(item.local_dir).as_posix() for f in item.local_dir.rglob("*") if f.is_file()}
        assert listed == shipped - {zoo.CHECKSUMS}, item.name  # every shipped file is covered


def test_bit_rot_in_tensor_data_is_caught_with_the_rebuild_command(copied_clip: Path) -> None:
    weights = copied_clip / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2:len(data) // 2 + 4096] = b"\0" * 4096  # 4 KB inside the tensors
    weights.write_bytes(bytes(data))
    with pytest.raises(zoo.ZooError, match=r"model\.safetensors is damaged.*python scripts/train_clip\.py"):
        zoo.path("clip", mode="tiny")


def test_a_missing_config_names_the_file_and_the_fix(copied_clip: Path) -> None:
    (copied_clip / "config.json").unlink()
    with pytest.raises(zoo.ZooError, match=r"clip-tiny/config\.json is missing from the tiny checkpoint.*Rebuild it"):
        zoo.path("clip", mode="tiny")


def test_bin_weights_are_converted_to_safetensors_without_unpickling_code(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file

    snapshot = tmp_path / "snapshot"
    (snapshot / "unet").mkdir(parents=True)
    (snapshot / "model_index.json").write_text("{}")
    weights = {"conv.weight": torch.arange(6.0).reshape(2, 3)}
    torch.save(weights, snapshot / "unet" / "diffusion_pytorch_model.bin")
    out = zoo._safetensors_only(snapshot, tmp_path / "converted")
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "model_index.json", "unet/diffusion_pytorch_model.safetensors"]
    torch.testing.assert_close(load_file(out / "unet" / "diffusion_pytorch_model.safetensors")["conv.weight"],
                               weights["conv.weight"])

    class Exploit:
        def __reduce__(self):
            return (exec, ("raise SystemExit('pickled code ran')",))

    torch.save({"w": Exploit()}, snapshot / "unet" / "diffusion_pytorch_model.bin")
    with pytest.raises(Exception, match="Weights only load failed|Unsupported global"):
        zoo._safetensors_only(snapshot, tmp_path / "again")
    assert zoo._safetensors_only(tmp_path / "converted", tmp_path / "x") == tmp_path / "converted"  # nothing to do


@pytest.mark.slow
def test_a_hub_that_never_answers_fails_in_seconds_with_a_retry_hint() -> None:
    import socket
    import subprocess
    import sys
    import time

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)  # accepts connections and never says a word
    code = ("from utils import zoo\n"
            "try:\n    zoo._download(zoo.entry('vit'))\nexcept zoo.ZooError as error:\n    print(error)\n")
    env = {**__import__("os").environ, "HF_ENDPOINT": f"http://127.0.0.1:{server.getsockname()[1]}",
           "HF_HUB_OFFLINE": "0", "MMLLM_HUB_STALL_S": "3",
           "HF_HOME": str(Path(__file__).parent / ".." / "_build" / "hf-test-home")}
    start = time.monotonic()
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                            cwd=Path(__file__).resolve().parent.parent)
    server.close()
    assert "sent nothing for 3 s" in result.stdout and "Run the cell again to retry" in result.stdout, \
        result.stdout + result.stderr
    assert time.monotonic() - start < 30


def test_a_tiny_only_entry_is_its_tiny_folder_in_every_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    tiny_only = [item for item in zoo.REGISTRY.values() if item.tiny_only]
    assert tiny_only, "chapter 6's own models are tiny-only entries"
    for item in tiny_only:
        for mode in ("tiny", "full", "rehearsal"):
            assert Path(zoo.path(item.name, mode=mode)) == item.local_dir
    monkeypatch.setattr(zoo, "_download", lambda item, stall=None: pytest.fail("a tiny-only entry never downloads"))
    zoo.path(tiny_only[0].name, mode="full")
    assert "(the tiny one)" in {row["full mode (Hub)"] for row in zoo.table()}


def test_a_tiny_only_entry_names_no_hub_checkpoint() -> None:
    with pytest.raises(ValueError, match="tiny-only: give it no hub_id"):
        zoo.ZooEntry("x", "some/repo", "", "x", "python x.py", "x", tiny_only=True)


# --- full-only entries: a real checkpoint with no tiny one (Kosmos-2) ----------------------------------------

def test_a_full_only_entry_in_tiny_mode_says_what_tiny_mode_uses_instead() -> None:
    item = zoo.entry("kosmos2")
    assert item.full_only and item.name in zoo.FULL_ONLY and item.name not in zoo.REGISTRY  # make assets never sees it
    with pytest.raises(zoo.ZooError, match=r"'kosmos2' \(microsoft/kosmos-2-patch14-224\) exists only in full mode.*"
                                           r"tiny PaliGemma \(zoo name 'paligemma'\).*MMLLM_MODE=full"):
        zoo.path("kosmos2", mode="tiny")
    assert "'paligemma'" in item.tiny_instead and zoo.entry("paligemma").tiny_only  # what it names exists


@pytest.mark.filterwarnings("ignore:MMLLM_MODE=full on a machine without a CUDA GPU")
def test_a_full_only_entry_downloads_its_pinned_revision_in_full_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    calls = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download",
                        lambda repo_id, revision, allow_patterns, **kw: calls.append((repo_id, revision)) or "/snap")
    assert zoo.path("kosmos2", mode="full") == "/snap"
    assert calls == [("microsoft/kosmos-2-patch14-224", "1f66d913fde5307936383dc9460b12ccb82f2133")]


def test_a_full_only_entry_is_listed_without_a_tiny_folder() -> None:
    rows = {row["name"]: row for row in zoo.table()}
    assert rows["kosmos2"] == {"name": "kosmos2", "full mode (Hub)": "microsoft/kosmos-2-patch14-224@1f66d91",
                               "tiny mode (models/)": "(full mode only)", "tiny size": "-"}
    with pytest.raises(zoo.ZooError, match="known names: .*kosmos2"):
        zoo.entry("kosmos-3")


def test_a_full_only_entry_has_no_folder_and_says_what_replaces_it() -> None:
    revision = zoo.entry("kosmos2").revision
    with pytest.raises(ValueError, match="full-only: give it no folder"):
        zoo.ZooEntry("x", "org/x", revision, "x-tiny", "", "x", full_only=True, tiny_instead="y")
    with pytest.raises(ValueError, match="say in tiny_instead"):
        zoo.ZooEntry("x", "org/x", revision, "", "", "x", full_only=True)
    with pytest.raises(ValueError, match="tiny_instead is for full-only entries"):
        zoo.ZooEntry("x", "org/x", revision, "x-tiny", "python x.py", "x", tiny_instead="y")
    with pytest.raises(ValueError, match="40-character commit hash"):  # its pin is checked like any other
        zoo.ZooEntry("x", "org/x", "main", "", "", "x", full_only=True, tiny_instead="y")


def test_a_record_saved_inside_a_checkpoint_is_sealed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(zoo, "MODELS_DIR", tmp_path)
    folder = tmp_path / "thing-tiny"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"weights")
    zoo.seal(folder)
    zoo.save_record(folder / "ablations.json", {"variant": {"accuracy": 0.5}})
    sums = (folder / zoo.CHECKSUMS).read_text()
    assert "ablations.json" in sums and "model.safetensors" in sums
    outside = zoo.save_record(tmp_path / "elsewhere.json", {"a": 1})  # not in a checkpoint folder: no seal written
    assert outside.read_text().startswith("{") and not (tmp_path / zoo.CHECKSUMS).exists()
