"""Test settings: offline tiny mode, whatever the shell says, and the repository on sys.path."""

import os
import sys
from pathlib import Path

os.environ["MMLLM_MODE"] = "tiny"
os.environ["HF_HUB_OFFLINE"] = "1"
# Notebook kernels start as new processes and inherit these: the same float code paths on every
# x86-64 CPU with AVX2, Intel or AMD, as when the stored outputs were made (see the Makefile).
for name, value in {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "COMPATIBLE", "ONEDNN_MAX_CPU_ISA": "AVX2",
                    "MMLLM_THREADS": "1", "PYTHONHASHSEED": "0"}.items():
    os.environ.setdefault(name, value)
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
