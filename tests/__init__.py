"""Helpers shared by the tests."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

import pytest


def import_optional(name: str, install: str) -> ModuleType:
    """Module ``name`` of an optional extra. Skips only when it is not installed at all; an installed module
    whose import fails (a dependency it forgot to declare) fails the test, where ``pytest.importorskip``
    would have skipped it."""
    if importlib.util.find_spec(name) is None:
        pytest.skip(f"{name} is not installed ({install})", allow_module_level=True)
    return importlib.import_module(name)
