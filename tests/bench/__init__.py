"""Shared helpers of the benchmark tests."""

from __future__ import annotations

import ast
import sys
from pathlib import Path


def third_party_imports(script: Path) -> set[str]:
    """Top-level packages a script imports that are not in the standard library: what a peer runner needs
    in its own venv."""
    roots = set()
    for node in ast.walk(ast.parse(script.read_text())):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            roots.add(node.module.split(".")[0])
    return {r for r in roots if r not in sys.stdlib_module_names and r != "__future__"}
