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
def peer_imports(python: Path, modules: str = "faster_whisper, ctranslate2, soundfile, numpy") -> bool:
    """Whether ``python`` imports ``modules`` (a comma-separated list; the answer is cached per pair)."""
    try:
        proc = subprocess.run(
            [str(python), "-c", f"import {modules}"],
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
    return python if peer_imports(python) else None


def run_whisper_peer(
    subcommand: str,
    timeout_s: float | None = 3600.0,
    *,
    runner: Path = RUNNER,
    python: Path | None = None,
    env: dict[str, str] | None = None,
    **request: Any,
) -> dict:
    """Run ``RUNNER SUBCOMMAND`` (by default ``faster_whisper_runner.py``) on ``request`` (JSON-able keyword
    arguments) with the peer venv's python.

    Paths in ``request`` may be :class:`~pathlib.Path` objects, arrays numpy arrays. ``python``: the
    interpreter to use (default: :func:`whisper_peer_python`, which checks faster-whisper imports); ``env``:
    extra environment variables. Returns the runner's JSON response.

    Raises:
        PeerError: no peer venv, the runner failed (its stderr is in the message), or it ran out of time.
    """
    name = "faster-whisper" if runner == RUNNER else runner.stem.removesuffix("_runner")
    python = python or whisper_peer_python()
    if python is None:
        raise PeerError(
            f"no faster-whisper peer: {_candidate_python()} is missing or cannot import faster_whisper "
            "(run `make whisper-venv`)"
        )
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONNOUSERSITE="1", **(env or {}))
    env.pop("PYTHONPATH", None)  # the peer must not see fastaed's packages
    with tempfile.TemporaryDirectory(prefix="fastaed-peer-") as tmp:
        req, resp = Path(tmp) / "request.json", Path(tmp) / "response.json"
        req.write_text(json.dumps(request, default=_jsonable), encoding="utf-8")
        cmd = [str(python), str(runner), subcommand, "--request", str(req), "--response", str(resp)]
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, env=env, timeout=timeout_s, check=False
            )
        except subprocess.TimeoutExpired as e:
            raise PeerError(f"{name} peer {subcommand}: no answer within {timeout_s:.0f} s") from e
        if proc.returncode != 0 or not resp.exists():
            tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
            raise PeerError(f"{name} peer {subcommand} failed (exit {proc.returncode}):\n{tail}")
        return json.loads(resp.read_text(encoding="utf-8"))


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return value.tolist()
    raise TypeError(f"cannot send {type(value).__name__} to the peer")
