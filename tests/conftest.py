"""Test settings: offline tiny mode, whatever the shell says, and the repository on sys.path."""

import os
import sys
from pathlib import Path

os.environ["MMLLM_MODE"] = "tiny"
os.environ["HF_HUB_OFFLINE"] = "1"
# Notebook kernels start as new processes and inherit these. One thread per kernel is for speed
# (two kernels run side by side); the compared outputs hold for any thread count and CPU.
for name, value in {"MMLLM_THREADS": "1", "PYTHONHASHSEED": "0"}.items():
    os.environ.setdefault(name, value)
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
