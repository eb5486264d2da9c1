"""Where the course is running, and the two modes it runs in.

Every chapter starts with ``from utils import runtime``. The mode is picked once, here:

=========  ==============================================  =========================================
mode       when                                            models
=========  ==============================================  =========================================
full       a CUDA GPU is present and the Hugging Face      the real checkpoints (CLIP ViT-B/32,
           Hub answers (e.g. on Colab)                     BLIP-2 OPT-2.7B, ...), in float16
tiny       otherwise: CI, offline laptops                  small checkpoints shipped in models/
rehearsal  only when asked for: the tests                  stand-ins of the real checkpoints
=========  ==============================================  =========================================

``MMLLM_MODE=tiny|full|auto|rehearsal`` overrides the choice (default ``auto``). ``MMLLM_THREADS=N``
sets the number of CPU threads torch uses (the tests use one per notebook, as two run side by side).

**Rehearsal** is full mode without a GPU or a network, so that the path a Colab reader takes is
tested on every change. ``MODE`` is ``"full"`` and every chapter runs its full-mode code, in
float16; only :func:`utils.zoo.path` differs: it returns a *stand-in* built offline from the real
checkpoint's recorded configuration files (``configs/``): the same classes, image and patch sizes,
vocabulary, special tokens and chat template, with narrow layers and random weights
(:mod:`utils.rehearsal`). Its outputs are noise; what it proves is that no cell fails.
"""

from __future__ import annotations

import logging
import os
import platform
import random
import socket
import sys
import warnings
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

MODES = ("tiny", "full", "auto", "rehearsal")
HUB_HOST = "huggingface.co"
HUB_TIMEOUT_S = 2.0

# Packages whose versions the environment report lists, in reading order.
REPORTED_PACKAGES = (
    "torch",
    "transformers",
    "diffusers",
    "huggingface_hub",
    "accelerate",
    "bitsandbytes",
    "sentence-transformers",
    "tokenizers",
    "numpy",
    "pillow",
    "matplotlib",
    "scikit-image",
    "scikit-learn",
)


class ModeError(ValueError):
    """Raised when MMLLM_MODE holds something other than tiny, full or auto."""


def hub_reachable(timeout: float = HUB_TIMEOUT_S) -> bool:
    """True when the Hugging Face Hub answers a TCP connection within ``timeout`` seconds."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    try:
        with socket.create_connection((HUB_HOST, 443), timeout=timeout):
            return True
    except OSError:
        return False


def resolve_mode(requested: str | None = None) -> str:
    """Turn a requested mode (or ``$MMLLM_MODE``) into ``"tiny"`` or ``"full"`` (rehearsal is full mode)."""
    value = (requested if requested is not None else os.environ.get("MMLLM_MODE", "auto")).strip().lower()
    if value not in MODES:
        raise ModeError(
            f"MMLLM_MODE={value!r} is not a mode; use one of {', '.join(MODES)} "
            "(e.g. `export MMLLM_MODE=tiny` to run offline on a CPU)."
        )
    if value == "rehearsal":
        return "full"
    if value == "full" and not torch.cuda.is_available():
        _warn_once("MMLLM_MODE=full on a machine without a CUDA GPU: the real checkpoints (gigabytes) will be "
                   "downloaded and run on the CPU, where BLIP-2 and LLaVA take minutes per answer and need more "
                   "memory than most laptops have. Use MMLLM_MODE=tiny for the offline course, or a GPU runtime.")
    if value != "auto":
        return value
    # Full mode needs both a GPU and the Hub: the real checkpoints are gigabytes.
    return "full" if torch.cuda.is_available() and hub_reachable() else "tiny"


_WARNED: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _WARNED:
        _WARNED.add(message)
        warnings.warn(message, stacklevel=3)


def _configure_threads() -> int:
    threads = os.environ.get("MMLLM_THREADS", "").strip()
    if threads:
        if not threads.isdigit() or int(threads) < 1:
            raise ValueError(f"MMLLM_THREADS={threads!r} must be a positive whole number of threads, e.g. 2.")
        torch.set_num_threads(int(threads))
    return torch.get_num_threads()


def silence_known_warnings() -> None:
    """Hide library warnings that are harmless for this course, so chapter outputs stay short.

    Each filter names the exact message; anything else still shows.
    """
    quiet = [
        # transformers falls back to PIL image processors because torchvision is not installed.
        r".*torchvision.*",
        r".*fast image processor.*",
        # Hub chatter when running offline.
        r".*HF_HUB_OFFLINE.*",
        # Jupyter's tqdm widgets when ipywidgets is not active (plain-text bars are used instead).
        r".*IProgress not found.*",
    ]
    for pattern in quiet:
        warnings.filterwarnings("ignore", message=pattern)
    for name in ("transformers", "diffusers", "sentence_transformers", "huggingface_hub", "bitsandbytes"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:  # transformers has its own verbosity switch and progress bars
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()  # "Loading weights" bars on every from_pretrained
    except ImportError:  # pragma: no cover - transformers is a hard requirement
        pass
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    if "diffusers" in sys.modules:
        silence_diffusers()


def silence_diffusers() -> None:
    """diffusers' own switches (its "Loading pipeline components" bars). Importing diffusers costs
    seconds, so this runs only where diffusers is used: ``utils.diffusion`` calls it on import."""
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()


def seed_everything(seed: int = 0) -> None:
    """Seed Python, NumPy and torch so a chapter gives the same numbers on every run."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def free_gpu_memory() -> None:
    """After ``del model``: collect the model's tensors and hand the GPU memory they held back to the
    driver, so the next model loads into the whole card (chapter 7 evaluates one model at a time)."""
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def gpu_summary() -> str:
    """Name and memory of the first GPU, or ``"none"``."""
    if not torch.cuda.is_available():
        return "none"
    props = torch.cuda.get_device_properties(0)
    return f"{props.name}, {props.total_memory / 2**30:.1f} GiB"


def _run(command: list[str]) -> str | None:
    """The stripped output of a short command, or None when it is missing, fails or hangs."""
    import subprocess

    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def course_version() -> str:
    """The git commit of the course checkout (on Colab, the one the setup cell fetched), with a note when
    files differ from it; ``"unknown"`` outside a git checkout or without git."""
    root = str(Path(__file__).resolve().parent.parent)
    commit = _run(["git", "-C", root, "rev-parse", "--short=10", "HEAD"])
    if not commit:
        return "unknown (not a git checkout, or git is missing)"
    changed = _run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"])
    return f"{commit} (with local changes)" if changed else commit


def cuda_summary() -> str:
    """The CUDA version torch was built with and the NVIDIA driver's version, or ``"none"`` without a GPU."""
    if not torch.cuda.is_available():
        return "none"
    driver = _run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
    return f"{torch.version.cuda or torch.version.hip}, driver {driver.splitlines()[0] if driver else 'unknown'}"


def cpu_capability() -> str:
    """The vector instructions torch's CPU kernels use (AVX2, AVX512, DEFAULT, ...): they change the last digits."""
    try:
        return torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):
        return "unknown"


def environment_report(packages: tuple[str, ...] = REPORTED_PACKAGES) -> dict[str, str]:
    """Everything a bug report needs, as an ordered ``{name: value}`` table."""
    report = {
        "mode": f"{MODE} (rehearsal: stand-in checkpoints)" if REHEARSAL else MODE,
        "course version": course_version(),
        "device": DEVICE,
        "GPU": gpu_summary(),
        "CUDA": cuda_summary(),
        "OS": platform.platform(),
        "CPU capability": cpu_capability(),
        "CPU threads": str(torch.get_num_threads()),
        "python": platform.python_version(),
    }
    report.update({name: _version(name) for name in packages})
    return report


def print_environment_report(versions: bool = True) -> None:
    """Print :func:`environment_report` as an aligned two-column table."""
    report = environment_report(REPORTED_PACKAGES if versions else ())
    width = max(len(k) for k in report)
    for key, value in report.items():
        print(f"{key:<{width}}  {value}")


# Every request to the Hub answers within this many seconds or fails (huggingface_hub reads it once, on import).
os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", "30")
MODE: str = resolve_mode()
# True when MMLLM_MODE=rehearsal: full mode's code on stand-in checkpoints (see the module's docstring).
REHEARSAL: bool = os.environ.get("MMLLM_MODE", "").strip().lower() == "rehearsal"
DEVICE: str = "cuda" if MODE == "full" and torch.cuda.is_available() else "cpu"
# Full mode computes in float16, as a T4 does (it has no fast bfloat16); the rehearsal too, on the CPU.
DTYPE: torch.dtype = torch.float16 if MODE == "full" else torch.float32
THREADS: int = _configure_threads()
silence_known_warnings()
if REHEARSAL and os.environ.get("MMLLM_REHEARSAL_LOG"):  # scripts/rehearse.py --workload: note every model call
    from utils import rehearsal as _rehearsal

    _rehearsal.record_workload(os.environ["MMLLM_REHEARSAL_LOG"])
