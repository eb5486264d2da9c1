"""Build CLIP's real tokenizer offline, from the vocabulary that ships in the open-clip-torch wheel.

    python scripts/build_clip_tokenizer.py [--out models/clip-tokenizer]

OpenAI's CLIP tokenizer is a byte-level BPE of 49,408 tokens. Its merge list is published as
`open_clip/bpe_simple_vocab_16e6.txt.gz` inside the open-clip-torch wheel (a few MB from PyPI).
This script fetches that wheel without installing it (installing would pull in torchvision),
rebuilds the vocabulary the way CLIP does, and saves a folder that
`CLIPTokenizer.from_pretrained` loads -- giving the same ids as `openai/clip-vit-base-patch32`.

The vocabulary, in id order:
  1. the 256 byte symbols (each byte mapped to a printable character; printable bytes first),
  2. the same 256 symbols with the end-of-word mark `</w>`,
  3. one token per merge, for the first 49,152 - 256 - 2 = 48,894 merges,
  4. `<|startoftext|>` (49406) and `<|endoftext|>` (49407).
"""

from __future__ import annotations

import argparse
import gzip
import io
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from utils import zoo  # noqa: E402

WHEEL_CACHE = ROOT / ".cache" / "wheels"
OPEN_CLIP_VERSION = "3.3.0"
VOCAB_MEMBER = "open_clip/bpe_simple_vocab_16e6.txt.gz"
NUM_MERGES = 49152 - 256 - 2  # CLIP keeps this many merges of the file's list
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
CONTEXT_LENGTH = 77


def byte_symbols() -> list[str]:
    """The 256 printable characters byte-level BPE uses for the bytes 0..255, in CLIP's id order.

    Printable Latin-1 bytes stand for themselves and come first, in byte order; every other byte
    (controls, space, ...) is shifted to an unused code point from 256 up and comes after them,
    so no token contains raw whitespace.
    """
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in keep]
    return [chr(b) for b in keep] + [chr(256 + i) for i, _ in enumerate(others)]


def fetch_merges_file() -> bytes:
    """The gzipped merge list, from the open-clip-torch wheel (downloaded once into .cache/)."""
    WHEEL_CACHE.mkdir(parents=True, exist_ok=True)
    wheels = sorted(WHEEL_CACHE.glob(f"open_clip_torch-{OPEN_CLIP_VERSION}-*.whl"))
    if not wheels:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
             f"open-clip-torch=={OPEN_CLIP_VERSION}", "-d", str(WHEEL_CACHE)],
            check=True,
        )
        wheels = sorted(WHEEL_CACHE.glob(f"open_clip_torch-{OPEN_CLIP_VERSION}-*.whl"))
    with zipfile.ZipFile(wheels[0]) as wheel:
        return wheel.read(VOCAB_MEMBER)


def vocabulary(gz: bytes) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP's token -> id table and its ordered merges, from the gzipped merge list."""
    lines = gzip.GzipFile(fileobj=io.BytesIO(gz)).read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : NUM_MERGES + 1]]  # line 0 is a version header
    if len(merges) != NUM_MERGES or any(len(m) != 2 for m in merges):
        raise ValueError(f"unexpected merge list: {len(merges)} entries")
    symbols = byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + [BOS, EOS]
    vocab = {token: i for i, token in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise ValueError("duplicate tokens in the vocabulary")
    return vocab, merges


def build(out_dir: Path) -> Path:
    from transformers import CLIPTokenizer

    vocab, merges = vocabulary(fetch_merges_file())
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=CONTEXT_LENGTH)
    if len(tokenizer) != 49408:
        raise ValueError(f"expected 49,408 tokens, built {len(tokenizer)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(out_dir)
    zoo.compact_json(out_dir)
    zoo.seal(out_dir)
    return out_dir


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "models" / "clip-tokenizer")
    args = parser.parse_args()
    folder = build(args.out)
    size = sum(f.stat().st_size for f in folder.iterdir())
    print(f"saved CLIP's tokenizer to {folder} ({size / 2**20:.2f} MB): {', '.join(sorted(f.name for f in folder.iterdir()))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
