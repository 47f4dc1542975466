"""Skips never hide failures (issue 29, item 10): no test turns an exception into a skip.

A test skips only for what is absent by choice (a peer environment, a device, an optional package); a fetch
that fails, a digest that does not match or a fixture that raises must fail. So no ``pytest.skip``,
``pytest.importorskip`` or ``pytest.xfail`` may run inside an ``except`` block anywhere under tests/, and
``pytest.importorskip`` is not used at all (it skips when an installed package fails to import, e.g. on a
dependency it forgot to declare): ``tests.import_optional`` skips only when the package is absent.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from tests import import_optional

TESTS = Path(__file__).resolve().parent
SKIPPERS = {"skip", "importorskip", "xfail"}


def skips_in_except_blocks(source: str) -> list[int]:
    """Line numbers of pytest.skip / importorskip / xfail calls inside an ``except`` block."""
    lines = []
    for handler in ast.walk(ast.parse(source)):
        if not isinstance(handler, ast.ExceptHandler):
            continue
        for node in ast.walk(handler):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in SKIPPERS
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "pytest"
            ):
                lines.append(node.lineno)
    return lines


def importorskip_calls(source: str) -> list[int]:
    return [
        node.lineno
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Attribute) and node.attr == "importorskip"
    ]


def test_the_check_finds_a_skip_in_an_except_block():
    source = "import pytest\ntry:\n    fetch()\nexcept OSError as e:\n    pytest.skip(str(e))\n"
    assert skips_in_except_blocks(source) == [5]
    assert skips_in_except_blocks("import pytest\nif not peer:\n    pytest.skip('no peer venv')\n") == []


def test_no_test_turns_an_exception_into_a_skip():
    found = {
        f"{path.relative_to(TESTS.parent)}:{line}"
        for path in sorted(TESTS.rglob("*.py"))
        for line in skips_in_except_blocks(path.read_text())
    }
    assert not found, f"an exception becomes a skip (make it fail): {sorted(found)}"


def test_no_test_uses_importorskip():
    found = {
        f"{path.relative_to(TESTS.parent)}:{line}"
        for path in sorted(TESTS.rglob("*.py"))
        if path != Path(__file__)
        for line in importorskip_calls(path.read_text())
    }
    assert not found, f"pytest.importorskip skips a broken install too (use tests.import_optional): {found}"


def test_an_absent_package_skips_a_broken_one_fails(tmp_path, monkeypatch):
    with pytest.raises(pytest.skip.Exception, match="not installed"):
        import_optional("fastaed_no_such_package", "never")
    (tmp_path / "fastaed_broken_pkg.py").write_text("import fastaed_missing_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        import_optional("fastaed_broken_pkg", "test")
    except BaseException as e:  # noqa: BLE001 - a skip must not pass for the failure
        assert type(e) is ModuleNotFoundError and "fastaed_missing_dependency" in str(e), repr(e)
    else:
        raise AssertionError("a package whose import fails was imported")
    finally:
        sys.modules.pop("fastaed_broken_pkg", None)
