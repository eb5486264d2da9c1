"""The worked solutions' own code, for the checker tests.

A checker test should check the checker against the solution readers are given, not against a
copy that can drift from it. :func:`load` reads ``solutions/<name>.py`` and runs only its import
statements and the definitions asked for (no checker calls, no printing).
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def load(notebook: str, *names: str) -> dict[str, Any]:
    """``{name: object}`` for top-level functions, classes or assignments of ``solutions/<notebook>.py``."""
    tree = ast.parse((ROOT / "solutions" / f"{notebook}.py").read_text())
    wanted = set(names)
    kept = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))
            and not any(alias.name in ("os", "subprocess", "sys") for alias in node.names)]  # not the Colab setup
    for node in tree.body:
        defined = ({node.name} if isinstance(node, (ast.FunctionDef, ast.ClassDef)) else
                   {t.id for t in node.targets if isinstance(t, ast.Name)} if isinstance(node, ast.Assign) else set())
        if defined & wanted or (isinstance(node, ast.Assign) and defined and defined <= _names_used(tree, wanted)):
            kept.append(node)
    namespace: dict[str, Any] = {"__name__": f"solutions.{notebook}"}
    exec(compile(ast.Module(body=kept, type_ignores=[]), f"solutions/{notebook}.py", "exec"), namespace)
    missing = wanted - namespace.keys()
    if missing:
        raise LookupError(f"solutions/{notebook}.py defines no {', '.join(sorted(missing))}")
    return {name: namespace[name] for name in names}


def _names_used(tree: ast.Module, names: set[str]) -> set[str]:
    """Module-level names the wanted definitions read (e.g. a compiled pattern a class uses)."""
    used: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name in names:
            used |= {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
    return used
