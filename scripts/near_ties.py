"""Find the stored outputs that rest on a near tie: a choice a float rounding could tip.

The shipped checkpoints are data, identical on every computer, so what they output on fixed
inputs can be compared exactly by nbval -- unless a choice behind the output is a near tie: a
greedy token whose two best logits, an argmax whose two best scores, or a top-k cut whose k-th
and (k+1)-th scores lie closer than float rounding can move them on another processor. This
script runs each notebook with `generate`, `Tensor.argmax` and `Tensor.topk` instrumented, and
lists the cells whose smallest margin is below the threshold. Such a cell must be tagged
`nbval-ignore-output` and check its claims with `utils.claims` (README: stored outputs that hold
on any computer); the script fails if one is not.

    python scripts/near_ties.py chapters/04_llava.ipynb        # one notebook (a minute or two)
    python scripts/near_ties.py chapters/*.ipynb --threshold 1e-3
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import jupytext
import nbformat
from nbclient import NotebookClient

THRESHOLD = 1e-3  # float rounding moves a logit of order 10 by about 1e-5; a hundred times that is safe

# Runs in the kernel before the notebook: record the smallest margin of every decision, per cell.
INSTRUMENT = r'''
import json as _json
import torch
from transformers import LogitsProcessor as _LogitsProcessor, LogitsProcessorList as _LogitsProcessorList
from transformers.generation.utils import GenerationMixin as _GenerationMixin

_margins, _cell = {}, [0]
get_ipython().events.register("pre_run_cell", lambda info: _cell.__setitem__(0, _cell[0] + 1))

def _note(kind, values, dim, k=1):
    """The smallest gap between the k-th and (k+1)-th largest entries along ``dim``."""
    values = values.detach().float()
    if values.ndim == 0 or values.shape[dim] <= k:
        return
    top = torch.topk(values, k + 1, dim=dim).values
    gap = (top.select(dim, k - 1) - top.select(dim, k)).min().item()
    key = f"{_cell[0]} {kind}"
    _margins[key] = min(_margins.get(key, float("inf")), gap)

_argmax, _topk, _generate = torch.Tensor.argmax, torch.Tensor.topk, _GenerationMixin.generate

def _instrumented_argmax(self, dim=None, keepdim=False):
    if self.is_floating_point() and self.numel() > 1:
        _note("argmax", self.flatten() if dim is None else self, 0 if dim is None else dim)
    return _argmax(self) if dim is None else _argmax(self, dim=dim, keepdim=keepdim)

def _instrumented_topk(self, k, dim=-1, largest=True, sorted=True):
    if self.is_floating_point() and largest:
        _note("topk", self, dim, k)
    return _topk(self, k, dim=dim, largest=largest, sorted=sorted)

class _Margins(_LogitsProcessor):
    def __call__(self, input_ids, scores):
        _note("generate", scores, -1)
        return scores

def _instrumented_generate(self, *args, **kwargs):
    processors = kwargs.pop("logits_processor", None) or _LogitsProcessorList()
    processors.append(_Margins())
    return _generate(self, *args, logits_processor=processors, **kwargs)

torch.Tensor.argmax, torch.Tensor.topk = _instrumented_argmax, _instrumented_topk
_GenerationMixin.generate = _instrumented_generate
'''
REPORT = 'print("MARGINS" + _json.dumps(_margins))'


def margins(path: Path) -> list[tuple[int, str, float, bool, str]]:
    """(code cell number, kind, smallest margin, tagged nbval-ignore-output, first source line) per decision kind."""
    notebook = jupytext.read(path.with_suffix(".py") if path.with_suffix(".py").exists() else path)
    code = [c for c in notebook.cells if c.cell_type == "code" and c.source.strip()]
    notebook.cells.insert(notebook.cells.index(code[0]) + 1, nbformat.v4.new_code_cell(INSTRUMENT))
    notebook.cells.append(nbformat.v4.new_code_cell(REPORT))
    NotebookClient(notebook, timeout=900, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    recorded = json.loads("".join(o.get("text", "") for o in notebook.cells[-1].outputs).split("MARGINS", 1)[1])
    rows = []
    for key, gap in recorded.items():  # the counter starts after the instrument cell: n is the notebook's code[n]
        number, kind = key.split()
        cell = code[int(number)]
        ignored = "nbval-ignore-output" in cell.metadata.get("tags", [])
        rows.append((code.index(cell) + 1, kind, gap, ignored, cell.source.strip().splitlines()[0][:60]))
    return sorted(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--threshold", type=float, default=THRESHOLD)
    args = parser.parse_args()
    os.environ.setdefault("MMLLM_MODE", "tiny")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    unsafe = 0
    for path in args.notebooks:
        print(f"{path}")
        for number, kind, gap, ignored, first_line in margins(path):
            near = gap < args.threshold
            verdict = ("near tie, output ignored: fine" if ignored else "NEAR TIE IN A COMPARED OUTPUT") if near else ""
            unsafe += near and not ignored
            print(f"  code cell {number:>3}  {kind:<8} smallest margin {gap:9.2e}  {verdict:<33} {first_line}")
    if unsafe:
        print(f"{unsafe} compared output(s) rest on a near tie: tag them nbval-ignore-output and check their claims")
    return 1 if unsafe else 0


if __name__ == "__main__":
    sys.exit(main())
