"""Build the Jupyter Book from the outputs stored in the notebooks (nothing is re-executed).

    python scripts/build_book.py            # -> _build/html/index.html
Fails on any Sphinx warning, so broken links, bad cross-references and missing files are caught.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MATHJAX = ROOT / ".cache" / "book-static" / "mathjax" / "tex-chtml.js"


def build(root: Path = ROOT) -> subprocess.CompletedProcess:
    if not MATHJAX.exists():
        raise SystemExit(f"{MATHJAX} is missing: run `scripts/setup_env.sh book` (or `make book`) first")
    jupyter_book = Path(sys.executable).parent / "jupyter-book"
    return subprocess.run(
        [str(jupyter_book), "build", str(root), "--builder", "html", "--warningiserror", "--keep-going", "--quiet"],
        cwd=root, capture_output=True, text=True,
    )


if __name__ == "__main__":
    result = build()
    sys.stdout.write(result.stdout[-4000:])
    sys.stderr.write(result.stderr[-4000:])
    sys.exit(result.returncode)
