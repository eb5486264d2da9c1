"""`make test` again under other floating-point configurations of this machine (`make test-portable`).

What nbval compares in the stored outputs must come out the same on every computer: the
README's "Stored outputs that hold on any computer". `make test` checks it with this machine's
defaults; this script reruns the whole of `make test` under configurations that take other
floating-point paths, each of which rounds long sums differently:

  no-simd-2-threads    PyTorch's kernels without vector instructions (ATEN_CPU_CAPABILITY=default)
                       and two threads per process, one test process at a time
  avx2-mkl-compatible  PyTorch and oneDNN limited to AVX2, MKL on its vendor-neutral branch
                       (MKL_CBWR=COMPATIBLE): the matrix products of an older or an AMD processor

The variables are x86-64 ones; elsewhere they change less (threads still differ). Run it before
closing work that touches a notebook; it prints each configuration's wall time.

    python scripts/test_portable.py              # the two configurations above
    python scripts/test_portable.py --all        # and the default one first
    python scripts/test_portable.py avx2-mkl-compatible
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIGURATIONS: dict[str, dict[str, str]] = {
    "default": {},
    # Two threads per process on two cores: one process at a time, and threads that sleep rather
    # than spin while they wait, or the machine spends its time switching between them.
    "no-simd-2-threads": {"ATEN_CPU_CAPABILITY": "default", "MMLLM_THREADS": "2", "OMP_WAIT_POLICY": "PASSIVE",
                          "JOBS": "1"},
    "avx2-mkl-compatible": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "COMPATIBLE"},
}
FLOAT_VARIABLES = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS",
                   "OMP_WAIT_POLICY", "MMLLM_THREADS", "JOBS")


def run(name: str) -> tuple[int, float]:
    """`make test` under one configuration; returns (exit status, seconds)."""
    env = {k: v for k, v in os.environ.items() if k not in FLOAT_VARIABLES}
    env.update(CONFIGURATIONS[name])
    # The full-mode rehearsal compares no digits (and runs float16 on the CPU, slowly without vector
    # units): `make test` runs it once; here it would only repeat itself.
    env["PYTEST_ADDOPTS"] = (env.get("PYTEST_ADDOPTS", "") + " --deselect tests/test_rehearsal.py::"
                             "test_every_notebook_runs_in_the_rehearsal_and_the_workload_is_current").strip()
    settings = " ".join(f"{k}={v}" for k, v in CONFIGURATIONS[name].items()) or "this machine's defaults"
    print(f"\n=== {name}: {settings}", flush=True)
    start = time.perf_counter()
    status = subprocess.run(["make", "--no-print-directory", "test"], cwd=ROOT, env=env).returncode
    return status, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", metavar="configuration",
                        help=f"any of {', '.join(CONFIGURATIONS)} (default: all but 'default')")
    parser.add_argument("--all", action="store_true", help="every configuration, the default one first")
    args = parser.parse_args()
    unknown = [name for name in args.names if name not in CONFIGURATIONS]
    if unknown:
        parser.error(f"unknown configuration {', '.join(unknown)}; choose from {', '.join(CONFIGURATIONS)}")
    names = list(CONFIGURATIONS) if args.all else (args.names or [n for n in CONFIGURATIONS if n != "default"])
    results = {name: run(name) for name in names}
    print("\nconfiguration          result   wall time")
    for name, (status, seconds) in results.items():
        print(f"{name:<22} {'passed' if status == 0 else 'FAILED':<8} {seconds / 60:5.1f} min")
    return 0 if all(status == 0 for status, _ in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
