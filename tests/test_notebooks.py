"""Notebook conventions: paired, in sync, standard opening, executed, listed in the book and README."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat
import pytest
import yaml

from scripts import notebook_header

ROOT = Path(__file__).resolve().parent.parent
PY_FILES = notebook_header.notebooks()
IPYNB_FILES = sorted(p for d in notebook_header.NOTEBOOK_DIRS for p in (ROOT / d).glob("*.ipynb"))
CHAPTERS = sorted((ROOT / "chapters").glob("[0-9][0-9]_*.ipynb"))
# Appendices (maintainer matters: the environment report, the zoo's pins, the T4 plan's derivation) follow the
# notebook conventions but not the chapter-only rules: no "What you will learn", exercises or solutions.
APPENDICES = sorted((ROOT / "chapters").glob("appendix_*.ipynb"))


def ids(paths):
    return [p.name for p in paths]


def test_there_are_chapters() -> None:
    assert CHAPTERS and PY_FILES


@pytest.mark.parametrize("ipynb", IPYNB_FILES, ids=ids(IPYNB_FILES))
def test_every_notebook_is_paired_and_in_sync(ipynb: Path) -> None:
    py = ipynb.with_suffix(".py")
    assert py.exists(), f"{ipynb.name} has no paired {py.name}: run `make sync`"
    from_py = [(c.cell_type, c.source) for c in jupytext.read(py).cells]
    from_nb = [(c.cell_type, c.source) for c in jupytext.read(ipynb).cells]
    assert from_py == from_nb, f"{py.name} and {ipynb.name} differ: edit the .py, then run `make sync` or `make book`"
    assert jupytext.read(ipynb).metadata["jupytext"]["formats"] == "ipynb,py:percent"


@pytest.mark.parametrize("py", PY_FILES, ids=ids(PY_FILES))
def test_standard_opening(py: Path) -> None:
    assert notebook_header.problems(py) == []
    assert py.with_suffix(".ipynb").exists(), f"{py.name} has no .ipynb: run `make sync`"
    assert notebook_header.problems(py.with_suffix(".ipynb")) == []


@pytest.mark.parametrize("ipynb", IPYNB_FILES, ids=ids(IPYNB_FILES))
def test_stored_outputs_are_complete_and_clean(ipynb: Path) -> None:
    nb = nbformat.read(ipynb, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code" and c.source.strip()]
    unexecuted = [i for i, c in enumerate(code) if c.execution_count is None]
    assert not unexecuted, f"{ipynb.name}: code cells {unexecuted} were never executed: run `make book`"
    counts = [c.execution_count for c in code]
    assert counts == list(range(1, len(code) + 1)), f"{ipynb.name}: executed out of order; re-run top to bottom"
    for cell in code:
        for out in cell.get("outputs", []):
            assert out.output_type != "error", f"{ipynb.name}: a cell stored an error: {out.get('ename')}"
            if out.output_type == "stream" and out.name == "stderr":
                assert "Warning" not in out.text, f"{ipynb.name}: warning in stored output: {out.text[:300]}"


def test_setup_cell_builds_on_the_configured_repository() -> None:
    url = notebook_header.repository_url()
    assert url in notebook_header.setup_source() and "requirements-colab.txt" in notebook_header.setup_source()
    link = notebook_header.colab_url(ROOT / "chapters" / "00_getting_started.py")
    assert link == (f"https://colab.research.google.com/github/{url.removeprefix('https://github.com/')}"
                    "/blob/main/chapters/00_getting_started.ipynb")


def test_setup_cell_fetches_the_course_at_its_pinned_version(tmp_path: Path) -> None:
    """The Colab setup cell's git commands, run against a local copy: a tag gives that tag's files."""
    bare, tagged = tmp_path / "course.git", subprocess.run(["git", "rev-parse", "HEAD~1"], cwd=ROOT, capture_output=True,
                                                           text=True, check=True).stdout.strip()
    subprocess.run(["git", "clone", "-q", "--bare", str(ROOT), str(bare)], check=True)
    subprocess.run(["git", "-C", str(bare), "tag", "edition-test", tagged], check=True)
    assert notebook_header.course_version() in notebook_header.setup_source()
    source = notebook_header.setup_source(url="https://github.com/owner/course", version="edition-test")
    for line in (l.strip() for l in source.splitlines() if 'subprocess.run(["git"' in l):
        line = line.replace("https://github.com/owner/course", bare.as_uri()).replace("/content/course", str(tmp_path / "c"))
        eval(line, {"subprocess": subprocess})
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path / "c", capture_output=True, text=True).stdout.strip()
    assert head == tagged and (tmp_path / "c" / "utils" / "runtime.py").exists()
    with pytest.raises(ValueError, match="branch, tag or commit"):
        notebook_header.course_version(_config_with(tmp_path, "main; rm -rf /"))


def _config_with(tmp_path: Path, branch: str) -> Path:
    config = tmp_path / "_config.yml"
    config.write_text(f"repository:\n  url: https://github.com/a/b\n  branch: '{branch}'\n")
    return config


def test_setup_cell_does_nothing_outside_colab_but_find_the_course(tmp_path: Path) -> None:
    code = notebook_header.setup_source() + "\nprint(COURSE_ROOT)"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT / "chapters", capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == str(ROOT)
    assert not (tmp_path / "content").exists()


def test_every_chapter_is_in_the_toc_and_the_readme() -> None:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [c["file"] for part in toc["parts"] for c in part["chapters"]]
    readme = (ROOT / "README.md").read_text()
    for nb in CHAPTERS:
        rel = f"chapters/{nb.stem}"
        assert rel in files, f"{rel} is missing from _toc.yml"
        assert notebook_header.colab_url(nb) in readme, f"README.md lacks the Colab link of {nb.name}"


def test_every_appendix_comes_after_the_chapters_in_the_toc_and_is_in_the_readme() -> None:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [c["file"] for part in toc["parts"] for c in part["chapters"]]
    readme = (ROOT / "README.md").read_text()
    last_chapter = max(files.index(f"chapters/{nb.stem}") for nb in CHAPTERS)
    for nb in APPENDICES:
        rel = f"chapters/{nb.stem}"
        assert rel in files, f"{rel} is missing from _toc.yml"
        assert files.index(rel) > last_chapter, f"{rel} should come after the chapters in _toc.yml (an appendix part)"
        assert notebook_header.colab_url(nb) in readme, f"README.md lacks the Colab link of {nb.name}"


def test_the_chapters_folder_holds_chapters_and_appendices_only() -> None:
    others = sorted(p.name for p in (ROOT / "chapters").glob("*.ipynb") if p not in CHAPTERS and p not in APPENDICES)
    assert not others, f"name each notebook in chapters/ NN_topic or appendix_topic, so the tests find it: {others}"


def test_every_chapter_with_exercises_has_solutions() -> None:
    for nb in CHAPTERS:
        if "## Exercises" in nb.with_suffix(".py").read_text():
            solution = ROOT / "solutions" / f"{nb.stem}_solutions.ipynb"
            assert solution.exists(), f"{nb.name} has exercises but no {solution.name}"


def test_pins_are_generated_from_requirements() -> None:
    result = subprocess.run([sys.executable, "scripts/make_pins.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
    text = (ROOT / "requirements.txt").read_text()
    assert re.search(r"^torch==2\.13\.0$", text, re.M) and re.search(r"^transformers==5\.23\.0$", text, re.M)


def test_ci_runs_the_readme_test_command() -> None:
    assert "make test" in (ROOT / "README.md").read_text()
    assert "make test" in (ROOT / ".ci" / "run").read_text()


# The stored-output rule (README): nbval compares only what every CPU reproduces.
IGNORE = "nbval-ignore-output"
# The digits of a round-off-sized number (1.4e-06) are float noise that changes with the processor.
# Such a difference is stated as the bound it stays within, written without digits ("within 1e-05").
ROUNDOFF = re.compile(r"\b\d\.\d+e-(?:0[5-9]|[1-9]\d)\b")
# Cells whose output nbval ignores because it describes the machine, not a result: nothing to check.
MACHINE_REPORTS = {"appendix_under_the_hood.ipynb": ["runtime.print_environment_report()"]}


def code_cells(ipynb: Path) -> list:
    return [c for c in nbformat.read(ipynb, as_version=4).cells if c.cell_type == "code" and c.source.strip()]


def stored_text(cell) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if out.output_type == "stream":
            parts.append(out.text)
        elif out.output_type in ("execute_result", "display_data"):
            parts.append(out.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


@pytest.mark.parametrize("ipynb", IPYNB_FILES, ids=ids(IPYNB_FILES))
def test_compared_outputs_print_no_rounding_noise(ipynb: Path) -> None:
    for i, cell in enumerate(code_cells(ipynb)):
        if IGNORE in cell.metadata.get("tags", []):
            continue
        noise = ROUNDOFF.findall(stored_text(cell))
        assert not noise, (f"{ipynb.name}, code cell {i + 1} prints {noise} in an output nbval compares: float rounding "
                           "differs between computers. Print the bound it stays within and check it with "
                           "utils.claims.close (README: stored outputs that hold on any computer).")


@pytest.mark.parametrize("ipynb", IPYNB_FILES, ids=ids(IPYNB_FILES))
def test_ignored_outputs_have_their_claims_checked(ipynb: Path) -> None:
    cells = code_cells(ipynb)
    for i, cell in enumerate(cells):
        if IGNORE not in cell.metadata.get("tags", []):
            continue
        if any(snippet in cell.source for snippet in MACHINE_REPORTS.get(ipynb.name, [])):
            continue
        checked_here = "claims." in cell.source
        checked_next = i + 1 < len(cells) and "claims." in cells[i + 1].source  # a training cell, then its results
        assert checked_here or checked_next, (
            f"{ipynb.name}, code cell {i + 1} is tagged {IGNORE} but neither it nor the next cell checks what the "
            "text claims about its output with utils.claims, so a wrong result would pass unnoticed.")


@pytest.mark.parametrize("ipynb", IPYNB_FILES, ids=ids(IPYNB_FILES))
def test_a_claim_never_shows_up_as_a_bare_number(ipynb: Path) -> None:
    """A utils.claims check returns the number it checked: as a cell's last line, the book would show it raw."""
    for i, cell in enumerate(code_cells(ipynb)):
        shown = [out for out in cell.get("outputs", []) if out.output_type == "execute_result"]
        assert not ("claims." in cell.source and shown), (
            f"{ipynb.name}, code cell {i + 1} shows {stored_text(cell)[-60:]!r} as a bare value: end the cell with "
            "a print, and put the claim before it")
