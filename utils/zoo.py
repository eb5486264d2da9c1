"""The model zoo: one name per model, the same loading code in both modes.

A chapter never writes a Hub id or a folder itself. It asks the zoo::

    from transformers import CLIPTokenizer
    from utils import zoo

    tokenizer = CLIPTokenizer.from_pretrained(zoo.path("clip-tokenizer"))

In **full** mode ``zoo.path`` downloads the real checkpoint at its pinned revision (only the
files ``from_pretrained`` needs) and returns the local snapshot folder. In **tiny** mode it
returns the folder under ``models/`` that holds a small checkpoint trained offline on
ShapesWorld, in the same Hugging Face format. Either way the chapter calls the real
``from_pretrained`` on a local folder, so the loading code that runs on Colab runs in CI too.

Chapters add their models with :func:`register`; ``make assets`` rebuilds every tiny one.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from utils import runtime

REPO_ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = REPO_ROOT / "models"

# What from_pretrained reads: configs, safetensors weights, tokenizer and processor files.
# (Hub repos often also hold .bin, Flax and TF copies of the weights: several GB we never need.)
DEFAULT_PATTERNS: tuple[str, ...] = ("*.json", "*.safetensors", "*.txt", "*.model", "*.jinja")
# A folder counts as a checkpoint when it holds at least one of these.
MARKER_FILES = ("config.json", "tokenizer_config.json", "preprocessor_config.json", "model_index.json")
# Every shipped checkpoint lists the sha256 of each of its files here (sha256sum's format), so a
# damaged or half-copied folder is caught before from_pretrained reads it.
CHECKSUMS = "SHA256SUMS"
HUB_TIMEOUT_S = 10  # the longest wait for any one answer from the Hub (runtime sets the download timeout too)
CONVERTED_DIR = Path.home() / ".cache" / "mmllm-course" / "safetensors"  # .bin weights converted, see _safetensors_only


class ZooError(RuntimeError):
    """A model could not be found or fetched; the message says how to get it."""


@dataclass(frozen=True)
class ZooEntry:
    """One model, as the real Hub checkpoint (full mode) and as a shipped tiny one (tiny mode)."""

    name: str
    hub_id: str  # e.g. "openai/clip-vit-base-patch32"
    revision: str  # a full 40-character commit hash on the Hub, so full mode is reproducible
    folder: str  # under models/, e.g. "clip-tokenizer"
    rebuild: str  # the command that recreates the tiny folder
    description: str
    allow_patterns: tuple[str, ...] = DEFAULT_PATTERNS
    needs: tuple[str, ...] = ()  # zoo names whose tiny checkpoints the rebuild reads (make assets builds them first)
    tiny_only: bool = False  # no Hub checkpoint stands behind it (hub_id and revision ""): the tiny folder in every mode
    full_only: bool = False  # no tiny checkpoint (folder and rebuild ""): full mode only, see FULL_ONLY
    tiny_instead: str = ""  # for a full-only entry: what tiny mode uses in its place (said when tiny mode asks for it)

    def __post_init__(self) -> None:
        if self.full_only and (self.tiny_only or self.folder or self.rebuild or not self.tiny_instead):
            raise ValueError(f"zoo entry {self.name!r} is full-only: give it no folder and no rebuild command, "
                             "and say in tiny_instead what tiny mode uses in its place")
        if self.tiny_instead and not self.full_only:
            raise ValueError(f"zoo entry {self.name!r}: tiny_instead is for full-only entries")
        if self.tiny_only:
            if self.hub_id or self.revision:
                raise ValueError(f"zoo entry {self.name!r} is tiny-only: give it no hub_id and no revision")
            return
        if len(self.revision) != 40 or any(c not in "0123456789abcdef" for c in self.revision):
            raise ValueError(f"zoo entry {self.name!r}: revision must be a 40-character commit hash, got {self.revision!r}")

    @property
    def local_dir(self) -> Path:
        return MODELS_DIR / self.folder


REGISTRY: dict[str, ZooEntry] = {}  # every entry with a folder under models/ (what `make assets` builds and checks)
# Entries with no tiny checkpoint: a real model that only full mode runs (and the rehearsal stands in for). They are
# kept apart so that whatever walks REGISTRY for tiny checkpoints (make assets, the budget and checksum tests) never
# meets an entry without one.
FULL_ONLY: dict[str, ZooEntry] = {}


def register(entry: ZooEntry) -> ZooEntry:
    """Add ``entry`` to the zoo (re-registering the same entry is harmless)."""
    existing = REGISTRY.get(entry.name) or FULL_ONLY.get(entry.name)
    if existing is not None and existing != entry:
        raise ValueError(f"zoo name {entry.name!r} is already registered with different settings")
    (FULL_ONLY if entry.full_only else REGISTRY)[entry.name] = entry
    return entry


def entry(name: str) -> ZooEntry:
    """The registry entry for ``name`` (full-only ones included), or a clear error listing the names that exist."""
    found = REGISTRY.get(name) or FULL_ONLY.get(name)
    if found is None:
        known = ", ".join(sorted({*REGISTRY, *FULL_ONLY})) or "(none)"
        raise ZooError(f"no model called {name!r} in the zoo; known names: {known}")
    return found


def compact_json(folder: Path | str, name: str = "tokenizer.json") -> None:
    """Rewrite a saved JSON file without indentation (same content, about half the bytes).

    ``save_pretrained`` indents tokenizer.json; for CLIP's 49,408-token vocabulary that is the
    difference between 3.6 MiB and 1.7 MiB against the 5 MiB budget of a shipped checkpoint.
    """
    import json

    file = Path(folder) / name
    data = json.loads(file.read_text(encoding="utf-8"))
    file.write_text(json.dumps(data, ensure_ascii=False, separators=(",", ":")), encoding="utf-8")


def save_module(folder: Path | str, module: Any, config: dict[str, Any]) -> None:
    """Save a course module that is not a transformers model (the chapter-6 heads, the sound encoder):
    ``config.json`` (``config``) and ``model.safetensors`` (its weights), in ``folder``."""
    import json

    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(folder / "model.safetensors"))


def load_module_files(folder: Path | str, what: str, rebuild: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The config and weights :func:`save_module` wrote, or a ValueError naming what is missing and the
    command that rebuilds it."""
    import json

    from safetensors.torch import load_file

    folder = Path(folder)
    missing = [n for n in ("config.json", "model.safetensors") if not (folder / n).is_file()]
    if missing:
        raise ValueError(f"{folder} is not a saved {what}: {', '.join(missing)} missing (rebuild with `{rebuild}`)")
    return json.loads((folder / "config.json").read_text()), load_file(str(folder / "model.safetensors"))


def link_identical(folder: Path | str, source: Path | str, names: tuple[str, ...]) -> list[str]:
    """Replace each file ``names`` in ``folder`` that is byte for byte the same file in ``source`` (another
    shipped checkpoint) by a relative link to it, so the bytes count once against the budget. Returns
    the names linked; a file that differs, or that ``source`` lacks, stays a copy."""
    folder, source = Path(folder), Path(source)
    linked = []
    for name in names:
        mine, theirs = folder / name, source / name
        if mine.is_file() and not mine.is_symlink() and theirs.is_file() and mine.read_bytes() == theirs.read_bytes():
            mine.unlink()
            mine.symlink_to(os.path.relpath(os.path.abspath(theirs), os.path.abspath(mine.parent)))
            linked.append(name)
    return linked


def own_size(folder: Path) -> int:
    """Bytes of the files in ``folder``, not counting links to files another checkpoint ships."""
    if not folder.is_dir():
        return 0
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and not f.is_symlink())


def _sha256(file: Path) -> str:
    digest = hashlib.sha256()
    with file.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def seal(folder: Path | str) -> Path:
    """Write ``folder/SHA256SUMS``: one line per file (links followed), as ``sha256sum`` writes it.

    Every script that saves a tiny checkpoint calls this last; :func:`path` checks it on load.
    """
    folder = Path(folder)
    files = sorted(f for f in folder.rglob("*") if f.is_file() and f.name != CHECKSUMS)
    lines = [f"{_sha256(f)}  {f.relative_to(folder).as_posix()}" for f in files]
    (folder / CHECKSUMS).write_text("\n".join(lines) + "\n")
    return folder / CHECKSUMS


def save_record(path: Path | str, record: dict) -> Path:
    """Write ``record`` as indented JSON to ``path``; a file inside a shipped checkpoint folder
    (such as an ablation record beside the model) is sealed into that folder's SHA256SUMS."""
    import json

    path = Path(path)
    path.write_text(json.dumps(record, indent=2) + "\n")
    if path.parent.resolve().parent == MODELS_DIR.resolve():
        seal(path.parent)
    return path


_VERIFIED: set[Path] = set()


def verify(folder: Path, rebuild: str) -> None:
    """Check every file of a shipped checkpoint against its SHA256SUMS (once per process); a missing or
    changed file is a ZooError naming it and the command that rebuilds the checkpoint."""
    folder = Path(folder)
    if folder in _VERIFIED:
        return
    manifest = folder / CHECKSUMS
    fix = f"Rebuild it with `{rebuild}` (or restore it with `git checkout -- {folder.relative_to(REPO_ROOT) if folder.is_relative_to(REPO_ROOT) else folder}`)."
    if not manifest.is_file():
        raise ZooError(f"{folder} has no {CHECKSUMS}, so its files cannot be checked. {fix}")
    for line in manifest.read_text().splitlines():
        expected, name = line.split(maxsplit=1)
        file = folder / name
        if not file.is_file():
            raise ZooError(f"{file} is missing from the tiny checkpoint. {fix}")
        if _sha256(file) != expected:
            raise ZooError(f"{file} is damaged: its sha256 differs from the one recorded in {manifest}. {fix}")
    _VERIFIED.add(folder)


def path(name: str, mode: str | None = None) -> str:
    """A local folder holding model ``name``, ready for ``from_pretrained``.

    ``mode`` defaults to :data:`utils.runtime.MODE`; in a rehearsal (``MMLLM_MODE=rehearsal``) full
    mode's folder is a stand-in built by :mod:`utils.rehearsal` instead of a download.
    """
    item = entry(name)
    if item.tiny_only:  # the course's own model (e.g. a method with no transformers class): the same in every mode
        mode = "tiny"
    rehearse = runtime.REHEARSAL if mode is None else mode.strip().lower() == "rehearsal"
    mode = runtime.resolve_mode(mode) if mode is not None else runtime.MODE
    if mode == "full" and rehearse:  # MMLLM_MODE=rehearsal: a stand-in with the real interface, built offline
        from utils import rehearsal

        rehearsal.note_load(name)
        return str(rehearsal.stand_in(name))
    if mode == "tiny" and item.full_only:
        raise ZooError(f"{name!r} ({item.hub_id}) exists only in full mode: the course ships no tiny checkpoint of "
                       f"it. Tiny mode uses {item.tiny_instead} in its place; run with MMLLM_MODE=full on a GPU to "
                       f"use {name!r}.")
    if mode == "tiny":
        folder = item.local_dir
        if not folder.is_dir() or not any((folder / f).is_file() for f in (*MARKER_FILES, CHECKSUMS)):
            raise ZooError(
                f"the tiny checkpoint for {name!r} is missing: {folder} does not exist or holds no "
                f"{' / '.join(MARKER_FILES)}. Rebuild it with `{item.rebuild}` "
                "(or `make assets` for every model)."
            )
        verify(folder, item.rebuild)
        return str(folder)
    return _download(item)


def _download(item: ZooEntry, stall: float | None = None) -> str:
    """The snapshot folder of ``item`` at its pinned revision, downloaded if need be.

    A download may take long (gigabytes), but not stand still: when the Hub sends nothing for
    ``stall`` seconds (``MMLLM_HUB_STALL_S``, default 60) it is abandoned with a ZooError that
    says how to retry, instead of hanging the notebook.
    """
    import os
    import threading

    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.file_download import repo_folder_name

    stall = stall if stall is not None else float(os.environ.get("MMLLM_HUB_STALL_S", "60"))
    retry = ("Run the cell again to retry (finished files are kept), set HF_HUB_DOWNLOAD_TIMEOUT=60 on a slow "
             "network, or run offline with MMLLM_MODE=tiny to use the shipped tiny checkpoint.")
    outcome: dict[str, object] = {}

    def fetch() -> None:
        try:
            outcome["folder"] = snapshot_download(item.hub_id, revision=item.revision,
                                                  allow_patterns=list(item.allow_patterns), etag_timeout=HUB_TIMEOUT_S)
        except Exception as exc:  # network, auth, disk: all end the same way for the reader
            outcome["error"] = exc

    # Progress shows in the model's cache folder, or, for files the Hub serves through Xet, in Xet's chunk cache first.
    watched = [Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=item.hub_id, repo_type="model"),
               Path(constants.HF_XET_CACHE)]
    worker = threading.Thread(target=fetch, daemon=True)  # a stalled worker is left behind, not waited for
    worker.start()
    seen, still_since = -1, time.monotonic()
    while worker.is_alive():
        worker.join(1.0)
        size = sum(_bytes_under(folder) for folder in watched)
        if size != seen:
            seen, still_since = size, time.monotonic()
        elif time.monotonic() - still_since > stall:
            raise ZooError(f"could not download {item.hub_id} for {item.name!r}: the Hub has sent nothing for "
                           f"{stall:g} s. {retry}")
    if "error" in outcome:
        raise ZooError(f"could not download {item.hub_id} at revision {item.revision[:10]} for {item.name!r}: "
                       f"{outcome['error']}. {retry}") from outcome["error"]  # type: ignore[misc]
    return str(_safetensors_only(Path(str(outcome["folder"])), CONVERTED_DIR / item.hub_id / item.revision))


def _bytes_under(folder: Path) -> int:
    """Bytes of the files under ``folder`` (0 if it does not exist; files vanishing meanwhile are skipped)."""
    total = 0
    for file in folder.rglob("*") if folder.is_dir() else ():
        try:
            total += file.stat().st_size if file.is_file() else 0
        except OSError:  # a temporary file renamed or removed while we looked
            pass
    return total


def _safetensors_only(snapshot: Path, converted: Path) -> Path:
    """``snapshot`` itself, or where it holds PyTorch ``.bin`` weights, a copy with each one converted to
    safetensors. A .bin file is a pickle, which can run code when it is loaded; here it is read with
    ``torch.load(weights_only=True)``, which refuses anything but tensors, and never reaches from_pretrained."""
    import shutil

    import torch
    from safetensors.torch import save_file

    bins = sorted(snapshot.rglob("*.bin"))
    if not bins:
        return snapshot
    for file in snapshot.rglob("*"):
        if not file.is_file():
            continue
        target = converted / file.relative_to(snapshot)
        target.parent.mkdir(parents=True, exist_ok=True)
        if file.suffix == ".bin":
            name = "model.safetensors" if file.name == "pytorch_model.bin" else file.stem + ".safetensors"
            if not (target.parent / name).exists() and not (file.parent / name).exists():
                state = torch.load(file, map_location="cpu", weights_only=True)
                save_file({k: v.contiguous() for k, v in state.items()}, str(target.parent / name))
        elif not target.exists():
            shutil.copyfile(file, target)
    return converted


def table() -> list[dict[str, str]]:
    """The registry as rows (for printing in a chapter): name, Hub id, revision, tiny folder, size."""
    rows = []
    for item in sorted([*REGISTRY.values(), *FULL_ONLY.values()], key=lambda e: e.name):
        if item.full_only:
            rows.append({"name": item.name, "full mode (Hub)": f"{item.hub_id}@{item.revision[:7]}",
                         "tiny mode (models/)": "(full mode only)", "tiny size": "-"})
            continue
        folder = item.local_dir
        size = own_size(folder)
        rows.append(
            {
                "name": item.name,
                "full mode (Hub)": "(the tiny one)" if item.tiny_only else f"{item.hub_id}@{item.revision[:7]}",
                "tiny mode (models/)": item.folder,
                "tiny size": f"{size / 2**20:.2f} MiB" if size else "missing",
            }
        )
    return rows


# --- Entries. Each chapter's models are listed here so every chapter sees the same zoo. ---
# Hub commits are pinned so full mode gives the same weights next year as today.

register(
    ZooEntry(
        name="clip-tokenizer",
        hub_id="openai/clip-vit-base-patch32",
        revision="3d74acf9a28c67741b2f4f2ea7635f0aaf6f0268",
        folder="clip-tokenizer",
        rebuild="python scripts/build_clip_tokenizer.py",
        description="CLIP's byte-level BPE (49,408 tokens), converted from the vocabulary in the open-clip-torch wheel",
        allow_patterns=("tokenizer*.json", "special_tokens_map.json", "vocab.json", "merges.txt"),
    )
)

register(
    ZooEntry(
        name="clip",
        hub_id="openai/clip-vit-base-patch32",
        revision="3d74acf9a28c67741b2f4f2ea7635f0aaf6f0268",
        folder="clip-tiny",
        rebuild="python scripts/train_clip.py",
        needs=("clip-tokenizer",),
        description="CLIP: ViT-B/32 with its text encoder, or a 3-block CLIP trained on ShapesWorld captions",
    )
)

# Chapter 2's honest zero-shot test: the same recipe, but no training scene shows these three colour-shape
# combinations (each colour and shape still appears in other pairs). Only the course has it, so in every mode.
CLIP_HELD_OUT = ("red square", "green triangle", "blue circle")

register(
    ZooEntry(
        name="clip-heldout",
        hub_id="",
        revision="",
        folder="clip-tiny-heldout",
        rebuild=f'python scripts/train_clip.py --hold-out "{",".join(CLIP_HELD_OUT)}" --out models/clip-tiny-heldout',
        needs=("clip-tokenizer", "clip"),  # reads the tokenizer; links to the tiny CLIP's identical tokenizer files
        description="the tiny CLIP's recipe trained on ShapesWorld scenes that never show a red square, a green "
                    "triangle or a blue circle, for zero-shot accuracy on unseen colour-shape combinations",
        tiny_only=True,
    )
)

register(
    ZooEntry(
        name="vit",
        hub_id="google/vit-base-patch16-224",
        revision="3f49326eb077187dfe1c2a2bb15fbd74e6ab91e3",
        folder="vit-tiny",
        rebuild="python scripts/train_vit.py",
        description="ViT image classifier: ViT-B/16 on ImageNet-1k, or a 3-block ViT naming ShapesWorld objects (15 classes)",
    )
)

register(
    ZooEntry(
        name="ddpm",
        hub_id="google/ddpm-cifar10-32",
        revision="30eb34ce06e995c15ec349bc188a86d6bd0d5359",
        folder="ddpm-tiny",
        rebuild="python scripts/train_diffusion.py ddpm",
        description="Unconditional DDPM (UNet2DModel + DDPMScheduler): CIFAR-10 at 32 px, or ShapesWorld scenes at 32 px",
        # The pinned commit may hold only PyTorch .bin weights: _safetensors_only converts them on download.
        allow_patterns=("*.json", "*.safetensors", "*.bin"),
        needs=("vit",),  # the tiny ViT judges its samples
    )
)

register(
    ZooEntry(
        name="sd",
        hub_id="stable-diffusion-v1-5/stable-diffusion-v1-5",
        revision="451f4fe16113bff5a5d2269ed5ad43b0592e9a14",
        folder="sd-tiny",
        rebuild="python scripts/train_diffusion.py sd",
        description="Stable Diffusion v1.5 (fp16 variant), or a 32 px latent diffusion model on ShapesWorld "
                    "conditioned by the tiny CLIP's text encoder",
        # The repository also holds full-precision and EMA copies (over 10 GB): fetch the fp16 weights only.
        allow_patterns=("model_index.json", "scheduler/*.json", "feature_extractor/*.json", "tokenizer/*",
                        "text_encoder/config.json", "text_encoder/model.fp16.safetensors",
                        "unet/config.json", "unet/diffusion_pytorch_model.fp16.safetensors",
                        "vae/config.json", "vae/diffusion_pytorch_model.fp16.safetensors"),
        needs=("clip", "vit"),  # its text encoder is the tiny CLIP's; the tiny ViT judges its samples
    )
)

register(
    ZooEntry(
        name="blip2",
        hub_id="Salesforce/blip2-opt-2.7b",
        revision="51572668da0eb669e01a189dc22abe6088589a24",
        folder="blip2-tiny",
        rebuild="python scripts/train_blip2.py",
        description="BLIP-2: EVA ViT-g + Q-Former + OPT-2.7B, or a 3-block ViT + 4-layer Q-Former + 6-block "
                    "Llama-style LM trained on ShapesWorld",
        allow_patterns=("*.json", "*.safetensors", "*.txt"),
        needs=("clip",),  # its vision encoder starts from the tiny CLIP's image tower
    )
)

register(
    ZooEntry(
        name="llava",
        hub_id="llava-hf/llava-1.5-7b-hf",
        revision="b234b804b114d9e37bb655e11cbbb5f5e971b7a9",
        folder="llava-tiny",
        rebuild="python scripts/train_llava.py",
        description="LLaVA-1.5: CLIP ViT-L/14-336 + Vicuna-7B, or a 3-block CLIP tower + 6-block Llama-style LM "
                    "instruction-tuned on ShapesWorld",
        allow_patterns=("*.json", "*.safetensors", "tokenizer.model", "*.jinja"),
        needs=("clip",),  # its vision tower starts from the tiny CLIP's
    )
)

# Chapter 6's own models: FROMAGe, GILL, Ferret-style referring and ImageBind have no transformers
# checkpoints that fit a T4 and load without remote code (PaliGemma is gated), so these run tiny in
# both modes; the chapter's full mode adds Kosmos-2.
register(
    ZooEntry(
        name="paligemma",
        hub_id="",
        revision="",
        folder="paligemma-tiny",
        rebuild="python scripts/train_paligemma.py",
        description="a tiny PaliGemma (PaliGemmaForConditionalGeneration: the tiny CLIP tower + a 4-block Llama-style "
                    "LM, 32 location tokens) that detects and refers on ShapesWorld",
        needs=("clip",),  # its image tower starts from the tiny CLIP's
        tiny_only=True,
    )
)

register(
    ZooEntry(
        name="fromage",
        hub_id="",
        revision="",
        folder="fromage-tiny",
        rebuild="python scripts/train_fromage.py",
        description="FROMAGe/GILL heads ([RET], [IMG0..3], the image-in map, retrieval maps, a GILL mapper) "
                    "around the tiny LLaVA's frozen language model",
        needs=("llava", "clip", "sd"),  # the frozen LM; the image embeddings; the conditioning to imitate
        tiny_only=True,
    )
)

register(
    ZooEntry(
        name="soundbind",
        hub_id="",
        revision="",
        folder="soundbind-tiny",
        rebuild="python scripts/train_imagebind.py",
        description="an ImageBind-style encoder for ShapesWorld's synthetic stereo sounds, bound to the tiny CLIP's "
                    "image embeddings (and, in text-paired/, the same encoder trained on captions for comparison)",
        needs=("clip",),
        tiny_only=True,
    )
)

# Kosmos-2 grounds phrases to boxes with patch-index tokens and loads with transformers' own classes (MIT licence,
# not gated). It has no tiny checkpoint: offline, chapter 6 grounds with its tiny PaliGemma.
register(
    ZooEntry(
        name="kosmos2",
        hub_id="microsoft/kosmos-2-patch14-224",
        revision="1f66d913fde5307936383dc9460b12ccb82f2133",
        folder="",
        rebuild="",
        description="Kosmos-2: CLIP ViT-L/14 at 224 px + a 24-layer, 1.3B-parameter decoder that writes "
                    "<phrase>...</phrase><object><patch_index_XXXX><patch_index_YYYY></object> after what it grounds",
        full_only=True,
        tiny_instead="chapter 6's tiny PaliGemma (zoo name 'paligemma')",
    )
)
