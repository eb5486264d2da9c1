"""Two CPU processes under torchrun see the same loss and gradients as one process on the global batch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow  # starts torchrun with two processes

ROOT = Path(__file__).resolve().parent.parent
SMALL_RUN = ["--train-scenes", "64", "--batch-size", "16"]


def first_step(tmp_path: Path, processes: int) -> dict:
    out = tmp_path / f"step-{processes}.pt"
    if processes == 1:
        launcher = [sys.executable, "scripts/train_clip.py"]
    else:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
                    "scripts/train_clip.py"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([*launcher, *SMALL_RUN, "--record", str(out)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    return torch.load(out, weights_only=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[dict, dict]:
    tmp_path = tmp_path_factory.mktemp("distributed")
    return first_step(tmp_path, 1), first_step(tmp_path, 2)


def test_two_processes_compute_the_global_loss(runs) -> None:
    single, double = runs
    assert double["world_size"] == 2 and single["world_size"] == 1
    torch.testing.assert_close(double["loss"], single["loss"], atol=1e-6, rtol=1e-6)


def test_two_processes_compute_the_global_gradients(runs) -> None:
    single, double = runs
    assert single["grads"].keys() == double["grads"].keys()
    assert len(single["grads"]) > 40  # every weight of both towers, the projections and the scale
    for name, grad in single["grads"].items():
        # The two runs add the same terms in a different order, so they agree up to float32 rounding
        # of the tensor's largest entries: an embedding table whose gradient reaches 19 differs by a
        # few 1e-6 in rows of small values, which a fixed atol of 1e-6 would call a mismatch.
        atol = 1e-6 * max(1.0, grad.abs().max().item())
        torch.testing.assert_close(double["grads"][name], grad, atol=atol, rtol=1e-4, msg=name)
    assert single["grads"]["logit_scale"].abs() > 0  # the temperature is learned too
