"""Test settings: offline tiny mode, whatever the shell says, and the repository on sys.path."""

import os
import sys
from pathlib import Path

os.environ["MMLLM_MODE"] = "tiny"
os.environ["HF_HUB_OFFLINE"] = "1"
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
