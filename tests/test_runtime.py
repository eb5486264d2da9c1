"""utils.runtime: mode selection, seeding, thread pinning and the environment report."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from utils import runtime

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=120)


def test_tests_run_in_tiny_mode_on_the_cpu() -> None:
    assert runtime.MODE == "tiny" and runtime.DEVICE == "cpu"


@pytest.mark.filterwarnings("ignore:MMLLM_MODE=full on a machine without a CUDA GPU")  # tested below
@pytest.mark.parametrize("value", ["tiny", "TINY", " tiny ", "full"])
def test_explicit_modes(value: str) -> None:
    assert runtime.resolve_mode(value) == value.strip().lower()


def test_auto_is_tiny_without_a_gpu_or_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert runtime.resolve_mode("auto") == "tiny"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(runtime, "hub_reachable", lambda: False)
    assert runtime.resolve_mode("auto") == "tiny"
    monkeypatch.setattr(runtime, "hub_reachable", lambda: True)
    assert runtime.resolve_mode("auto") == "full"


def test_hub_check_respects_offline_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert runtime.hub_reachable() is False


def test_bad_mode_is_a_clear_error() -> None:
    with pytest.raises(runtime.ModeError, match="'gpu' is not a mode; use one of tiny, full, auto"):
        runtime.resolve_mode("gpu")
    result = run_python("import utils.runtime", MMLLM_MODE="fast")
    assert result.returncode != 0 and "MMLLM_MODE='fast' is not a mode" in result.stderr


def test_threads_are_pinned_from_the_environment() -> None:
    result = run_python("from utils import runtime; print(runtime.THREADS)", MMLLM_THREADS="1")
    assert result.stdout.strip() == "1"
    result = run_python("import utils.runtime", MMLLM_THREADS="many")
    assert result.returncode != 0 and "MMLLM_THREADS='many' must be a positive whole number" in result.stderr


def test_seed_everything_repeats_random_draws() -> None:
    runtime.seed_everything(3)
    first = torch.randn(4)
    runtime.seed_everything(3)
    assert torch.equal(first, torch.randn(4))


def test_environment_report_lists_mode_and_versions(capsys: pytest.CaptureFixture) -> None:
    report = runtime.environment_report()
    assert report["mode"] == "tiny" and report["GPU"] == "none"
    assert report["torch"].startswith("2.13.0") and report["transformers"] == "5.23.0"
    for key in ("course version", "CUDA", "OS", "CPU capability", "huggingface_hub", "accelerate", "bitsandbytes"):
        assert report[key], key
    assert report["CUDA"] == "none" and report["CPU capability"] != "unknown"
    runtime.print_environment_report()
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["mode", "tiny"] and len(lines) == len(report)


def test_environment_report_without_git_or_a_package(monkeypatch: pytest.MonkeyPatch) -> None:
    """Outside a git checkout, or where git itself is missing, the report still builds and says so."""
    import subprocess

    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(subprocess, "run", no_git)
    report = runtime.environment_report(("torch", "no-such-package"))
    assert report["course version"].startswith("unknown") and report["no-such-package"] == "not installed"


def test_full_mode_without_a_gpu_warns_once_with_the_cost(monkeypatch: pytest.MonkeyPatch) -> None:
    import warnings

    monkeypatch.setattr(runtime.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(runtime, "_WARNED", set())
    with pytest.warns(UserWarning, match="without a CUDA GPU.*minutes per answer.*MMLLM_MODE=tiny"):
        assert runtime.resolve_mode("full") == "full"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert runtime.resolve_mode("full") == "full"  # once is enough
        assert runtime.resolve_mode("tiny") == "tiny"


def test_rehearsal_is_full_mode_on_stand_ins() -> None:
    assert runtime.resolve_mode("rehearsal") == "full"
    code = ("from utils import runtime, zoo; import torch; "
            "print(runtime.MODE, runtime.REHEARSAL, runtime.DEVICE, runtime.DTYPE, zoo.path('vit'))")
    result = run_python(code, MMLLM_MODE="rehearsal")
    assert result.returncode == 0, result.stderr
    mode, rehearsal, device, dtype, folder = result.stdout.split()
    assert (mode, rehearsal, device, dtype) == ("full", "True", "cpu", "torch.float16")
    assert folder.endswith("/vit") and "models/" not in folder  # a stand-in, not the shipped tiny ViT
    assert "MMLLM_MODE=full on a machine without a CUDA GPU" not in result.stderr  # no warning for a rehearsal
