"""Client of the openai-whisper peer: runs ``openai_whisper_runner.py`` with ``.venv-openai``'s python.

openai-whisper is the reference of Whisper's long-form ``transcribe()`` (issue 25); it lives in its own venv
(``make openai-venv``) and reads the ``.pt`` files ``fastaed export openai`` writes. The request/response
protocol is faster-whisper's (:func:`fastaed.bench.peers.whisper.run_whisper_peer` does the transport); the
runner's docstring lists the subcommands and their fields.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fastaed.bench.peers.whisper import REPO_ROOT, PeerError, peer_imports, run_whisper_peer

RUNNER = Path(__file__).with_name("openai_whisper_runner.py")
OPENAI_VENV = REPO_ROOT / ".venv-openai"
PYTHON_ENV = "FASTAED_OPENAI_PYTHON"  # overrides the venv's python (a peer installed elsewhere)


def _candidate_python() -> Path:
    override = os.environ.get(PYTHON_ENV)
    return Path(override) if override else OPENAI_VENV / "bin" / "python"


def openai_peer_python() -> Path | None:
    """The peer venv's python if it exists and imports whisper, torch and numpy (else None: callers skip)."""
    python = _candidate_python()
    if not python.exists():
        return None
    return python if peer_imports(python, "whisper, torch, numpy") else None


def run_openai_peer(
    subcommand: str,
    timeout_s: float | None = 3600.0,
    *,
    python: Path | None = None,
    env: dict[str, str] | None = None,
    **request: Any,
) -> dict:
    """Run ``openai_whisper_runner.py SUBCOMMAND`` on ``request`` (JSON-able keyword arguments; paths may be
    :class:`~pathlib.Path` objects) with the peer venv's python; returns the runner's JSON response.

    Raises:
        PeerError: no peer venv, the runner failed (its stderr is in the message), or it ran out of time.
    """
    python = python or openai_peer_python()
    if python is None:
        raise PeerError(
            f"no openai-whisper peer: {_candidate_python()} is missing or cannot import whisper "
            "(run `make openai-venv`)"
        )
    return run_whisper_peer(subcommand, timeout_s, runner=RUNNER, python=python, env=env, **request)
