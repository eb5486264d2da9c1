"""Keep every notebook's opening cells in the course's standard form.

Each chapter, solution and appendix starts with
  1. a markdown cell: the title, then an "Open in Colab" badge linking to this notebook;
  2. the setup cell: on Colab it fetches the course at the version the notebook was written
     against and installs requirements-colab.txt; elsewhere it only puts the course folder on
     ``sys.path``.
Both are built from ``repository.url`` and ``repository.branch`` in _config.yml, the one place the
address and the version live. ``branch`` may be a branch, a tag or a commit: a released edition
pins a tag, so a reader's notebook and the code it fetches always agree.

    python scripts/notebook_header.py --check   # report notebooks that differ (used by the tests)
    python scripts/notebook_header.py --write   # rewrite the .py files, then `make sync`

The notebooks' metadata also asks Colab for a GPU runtime.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import jupytext
import yaml

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIRS = ("chapters", "solutions")
SETUP_MARKER = "# Setup: on Colab"
BADGE_RE = re.compile(r"\[!\[Open in Colab\]\([^)]*\)\]\([^)]*\)")

SETUP_TAGS = ["hide-input"]  # the book shows a "show code" toggle instead of the whole cell
COLAB_METADATA = {"accelerator": "GPU", "colab": {"gpuType": "T4", "provenance": []}}


def repository_url(config_path: Path = ROOT / "_config.yml") -> str:
    config = yaml.safe_load(config_path.read_text())
    url = config["repository"]["url"].rstrip("/")
    if not re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", url):
        raise ValueError(f"repository.url in _config.yml must look like https://github.com/OWNER/REPO, got {url!r}")
    return url


def course_version(config_path: Path = ROOT / "_config.yml") -> str:
    """The version the notebooks open and fetch: ``repository.branch`` (a branch, a tag or a commit)."""
    version = str(yaml.safe_load(config_path.read_text())["repository"].get("branch", "main"))
    if not re.fullmatch(r"[\w./-]+", version) or version.startswith("-"):
        raise ValueError(f"repository.branch in _config.yml must be a branch, tag or commit name, got {version!r}")
    return version


def colab_url(notebook: Path, url: str | None = None) -> str:
    """The Colab address that opens ``notebook`` (a path inside the repository) from GitHub."""
    url = url or repository_url()
    branch = course_version()
    rel = notebook.resolve().relative_to(ROOT).with_suffix(".ipynb").as_posix()
    return f"https://colab.research.google.com/github/{url.removeprefix('https://github.com/')}/blob/{branch}/{rel}"


def badge(notebook: Path, url: str | None = None) -> str:
    return f"[![Open in Colab](../images/colab-badge.svg)]({colab_url(notebook, url)})"


def setup_source(url: str | None = None, version: str | None = None) -> str:
    url, version = url or repository_url(), version or course_version()
    folder = url.rsplit("/", 1)[-1]
    return f'''{SETUP_MARKER}, fetch the course and the packages Colab lacks; elsewhere, find the course folder.
import os, subprocess, sys
from pathlib import Path

if "google.colab" in sys.modules and not Path("/content/{folder}/utils/runtime.py").exists():
    # The course at the version this notebook was written for ("{version}": a branch, a tag or a commit).
    subprocess.run(["git", "init", "-q", "/content/{folder}"], check=True)
    subprocess.run(["git", "-C", "/content/{folder}", "fetch", "-q", "--depth", "1", "{url}", "{version}"], check=True)
    subprocess.run(["git", "-C", "/content/{folder}", "checkout", "-q", "FETCH_HEAD"], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-r", "/content/{folder}/requirements-colab.txt"], check=True)
if "google.colab" in sys.modules:
    os.chdir("/content/{folder}/chapters")
COURSE_ROOT = next(p for p in (Path.cwd(), *Path.cwd().parents) if (p / "utils" / "runtime.py").exists())
sys.path.insert(0, str(COURSE_ROOT))'''


NOTEBOOK_PATTERNS = ("[0-9][0-9]_*.py", "appendix_*.py")  # numbered chapters and solutions, and the appendices


def notebooks() -> list[Path]:
    """Every chapter, solution and appendix, as its paired .py file."""
    return sorted(p for d in NOTEBOOK_DIRS for pattern in NOTEBOOK_PATTERNS for p in (ROOT / d).glob(pattern))


def problems(path: Path, url: str | None = None) -> list[str]:
    """What is wrong with the opening of notebook ``path`` (.py or .ipynb); empty when all is well."""
    nb = jupytext.read(path)
    found = []
    cells = nb.cells
    if len(cells) < 2:
        return [f"{path.name}: needs at least a title cell and a setup cell"]
    title, setup = cells[0], cells[1]
    if title.cell_type != "markdown" or not title.source.startswith("# "):
        found.append(f"{path.name}: the first cell must be markdown starting with '# <title>'")
    if badge(path, url) not in title.source:
        found.append(f"{path.name}: the first cell lacks the Colab badge {badge(path, url)}")
    if setup.cell_type != "code" or setup.source.strip() != setup_source(url):
        found.append(f"{path.name}: the second cell must be the standard setup cell (run --write)")
    elif setup.metadata.get("tags") != SETUP_TAGS:
        found.append(f"{path.name}: the setup cell should be tagged {SETUP_TAGS} (the book folds it away)")
    for key, value in COLAB_METADATA.items():
        if nb.metadata.get(key) != value:
            found.append(f"{path.name}: notebook metadata {key!r} should be {value!r} (asks Colab for a GPU)")
    return found


def rewrite(path: Path, url: str | None = None) -> bool:
    """Bring the opening of ``path`` (.py) to the standard form; True when something changed."""
    nb = jupytext.read(path)
    before = jupytext.writes(nb, fmt="py:percent")
    title = nb.cells[0]
    if BADGE_RE.search(title.source):
        title.source = BADGE_RE.sub(badge(path, url), title.source)
    else:
        head, _, rest = title.source.partition("\n")
        title.source = f"{head}\n\n{badge(path, url)}" + (f"\n{rest}" if rest.strip() else "")
    if nb.cells[1].cell_type == "code" and nb.cells[1].source.startswith(SETUP_MARKER):
        nb.cells[1].source = setup_source(url)
    else:
        nb.cells.insert(1, jupytext.reads(f"# %%\n{setup_source(url)}\n", fmt="py:percent").cells[0])
    nb.cells[1].metadata["tags"] = list(SETUP_TAGS)
    nb.metadata.update(COLAB_METADATA)
    after = jupytext.writes(nb, fmt="py:percent")
    if after != before:
        path.write_text(after)
    return after != before


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help="rewrite the .py files in place")
    parser.add_argument("--check", action="store_true", help="only report (the default)")
    args = parser.parse_args()
    if args.write:
        changed = [p.name for p in notebooks() if rewrite(p)]
        print(f"rewrote {len(changed)} notebook(s): {', '.join(changed) or '-'}; now run `make sync`")
        return 0
    found = [msg for p in notebooks() for msg in problems(p)]
    print("\n".join(found) or f"all {len(notebooks())} notebooks have the standard opening")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
