"""FASTAED_REQUIRE_PEERS turns a skip for a missing peer venv into a failure (CI sets it for whisper), and
leaves every other skip, and every run without it, alone (a skipif mark skips in setup: that becomes an
error)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SKIPS = """
import pytest

def test_needs_whisper_peer():
    pytest.skip("no .venv-whisper (make whisper-venv)")

@pytest.mark.skipif(True, reason="no .venv-whisper (make whisper-venv)")
def test_marked_for_whisper_peer():
    pass

def test_needs_gpu():
    pytest.skip("needs a CUDA device")
"""


def run_pytest(tmp_path: Path, required: str | None) -> str:
    shutil.copy(Path(__file__).parent / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_skips.py").write_text(SKIPS)
    env = {"PATH": "/usr/bin:/bin"}
    if required is not None:
        env["FASTAED_REQUIRE_PEERS"] = required
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_skips.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    return done.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize(
    ("required", "summary"),
    [(None, "3 skipped"), ("whisper", "1 failed, 1 skipped, 1 error"), ("nemo", "3 skipped")],
)
def test_required_peer_skip_is_a_failure(tmp_path, required, summary):
    assert run_pytest(tmp_path, required).startswith(summary)
