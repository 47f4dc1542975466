"""Client of the faster-whisper peer: runs ``faster_whisper_runner.py`` with ``.venv-whisper``'s python.

faster-whisper, CTranslate2 and transformers pin their own numpy/tokenizers, so they never share fastaed's
venv: ``make whisper-venv`` builds ``.venv-whisper``. Requests and responses are JSON files; arrays travel as
``.npy`` files named in them. The runner's docstring lists the subcommands and their fields.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

RUNNER = Path(__file__).with_name("faster_whisper_runner.py")
REPO_ROOT = Path(__file__).resolve().parents[3]
WHISPER_VENV = REPO_ROOT / ".venv-whisper"
PYTHON_ENV = "FASTAED_WHISPER_PYTHON"  # overrides the venv's python (a peer installed elsewhere)


class PeerError(RuntimeError):
    """The peer failed; the message carries its exit status and the end of its stderr."""


def _candidate_python() -> Path:
    override = os.environ.get(PYTHON_ENV)
    return Path(override) if override else WHISPER_VENV / "bin" / "python"


@functools.cache
def _imports_faster_whisper(python: Path) -> bool:
    try:
        proc = subprocess.run(
            [str(python), "-c", "import faster_whisper, ctranslate2, soundfile, numpy"],
            capture_output=True,
            timeout=120,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


def whisper_peer_python() -> Path | None:
    """The peer venv's python if it exists and imports faster_whisper (else None: callers skip the peer)."""
    python = _candidate_python()
    if not python.exists():
        return None
    return python if _imports_faster_whisper(python) else None


def run_whisper_peer(subcommand: str, timeout_s: float | None = 3600.0, **request: Any) -> dict:
    """Run ``faster_whisper_runner.py SUBCOMMAND`` on ``request`` (JSON-able keyword arguments).

    Paths in ``request`` may be :class:`~pathlib.Path` objects, arrays numpy arrays. Returns the runner's JSON
    response.

    Raises:
        PeerError: no peer venv, the runner failed (its stderr is in the message), or it ran out of time.
    """
    python = whisper_peer_python()
    if python is None:
        raise PeerError(
            f"no faster-whisper peer: {_candidate_python()} is missing or cannot import faster_whisper "
            "(run `make whisper-venv`)"
        )
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONNOUSERSITE="1")
    env.pop("PYTHONPATH", None)  # the peer must not see fastaed's packages
    with tempfile.TemporaryDirectory(prefix="fastaed-peer-") as tmp:
        req, resp = Path(tmp) / "request.json", Path(tmp) / "response.json"
        req.write_text(json.dumps(request, default=_jsonable), encoding="utf-8")
        cmd = [str(python), str(RUNNER), subcommand, "--request", str(req), "--response", str(resp)]
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, env=env, timeout=timeout_s, check=False
            )
        except subprocess.TimeoutExpired as e:
            raise PeerError(f"faster-whisper peer {subcommand}: no answer within {timeout_s:.0f} s") from e
        if proc.returncode != 0 or not resp.exists():
            tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
            raise PeerError(f"faster-whisper peer {subcommand} failed (exit {proc.returncode}):\n{tail}")
        return json.loads(resp.read_text(encoding="utf-8"))


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return value.tolist()
    raise TypeError(f"cannot send {type(value).__name__} to the peer")
