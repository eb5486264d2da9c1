"""Build the Jupyter Book from the stored (nbval-checked) outputs and look at it in a browser."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from scripts import build_book, notebook_header

pytestmark = pytest.mark.slow  # builds the whole book and opens it in Chromium

ROOT = Path(__file__).resolve().parent.parent
HTML = ROOT / "_build" / "html"
SHOTS = ROOT / "_build" / "screenshots"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars"]


@pytest.fixture(scope="module")
def book() -> Path:
    result = build_book.build()
    assert result.returncode == 0, f"book build failed or warned:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return HTML


def pages(book: Path) -> list[Path]:
    return [book / "intro.html"] + sorted((book / "chapters").glob("*.html"))


def test_every_page_is_built_without_errors_or_tracebacks(book: Path) -> None:
    for page in pages(book):
        assert page.exists(), f"{page} was not built"
        html = page.read_text()
        assert "Traceback (most recent call last)" not in html, f"{page.name} shows a traceback"
        assert 'class="output traceback' not in html and "stderr" not in re.findall(r'class="([^"]*)"', html), page.name


def test_chapters_have_colab_buttons_and_local_mathjax(book: Path) -> None:
    chapter = book / "chapters" / "00_getting_started.html"
    html = chapter.read_text()
    assert notebook_header.colab_url(ROOT / "chapters" / "00_getting_started.py") in html
    scripts = re.findall(r'<script[^>]*src="([^"]+)"', html)
    mathjax = [s for s in scripts if "mathjax" in s.lower() or "tex-chtml" in s]
    assert mathjax and all(s.startswith("../_static/mathjax/") for s in mathjax), mathjax
    assert not [s for s in scripts if s.startswith(("http://", "https://", "//"))], "a script loads from the network"
    assert (book / "_static" / "mathjax" / "tex-chtml.js").exists()


def chromium(args: list[str], timeout: int = 90) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def browser() -> str:
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium is required in CI: `scripts/setup_env.sh browser` installs it")
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    return CHROMIUM


def test_maths_renders_offline_in_a_browser(book: Path, browser: str) -> None:
    page = book / "chapters" / "00_getting_started.html"
    dom = chromium(["--virtual-time-budget=15000", "--dump-dom", page.as_uri()]).stdout
    assert "<mjx-container" in dom, "MathJax did not typeset the page"
    assert "cos" in dom and "Open in Colab" in dom or "colab-badge" in dom


@pytest.mark.parametrize("name", ["intro"] + [f"chapters/{p.stem}" for p in sorted((ROOT / "chapters").glob("*.ipynb"))])
def test_screenshots_for_a_person_to_look_at(book: Path, browser: str, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    shot = SHOTS / f"{name.replace('/', '_')}.png"
    shot.unlink(missing_ok=True)
    chromium(["--virtual-time-budget=15000", "--window-size=1280,1000", f"--screenshot={shot}",
              (book / f"{name}.html").as_uri()])
    assert shot.exists() and shot.stat().st_size > 20_000, f"no usable screenshot at {shot}"
