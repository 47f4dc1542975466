"""Atomic resume checkpoints and the RNG state that makes a resumed run repeat the uninterrupted one.

Layout of a run directory::

    out_dir/
      ckpt-1500/                 one resume checkpoint
        model.safetensors        weights  } a self-describing model (``fastaed.model.save_model``):
        config.json              config   } ``load_model(out_dir / "ckpt-1500")`` needs no flags
        trainer_state.pt         optimizer, step, epoch, sampler state, RNG states, counters
        tokenizer/               the tokenizer, so the checkpoint decodes on its own
        checksums.json           size and sha256 of every file above, written last
      latest                     "ckpt-1500": the newest complete checkpoint

A checkpoint is written into a hidden temporary directory next to its final name and moved into place with
one ``os.replace``, and ``latest`` is replaced the same way afterwards: a process killed at any moment leaves
either the previous checkpoint or the new one, never a half-written one under a real name. Only the last
``keep`` checkpoints are kept.

Resuming checks every file against ``checksums.json``. ``resume="auto"`` passes over a corrupted checkpoint
to the newest intact one, says so, and moves the corrupted one aside to ``ckpt-N.corrupt`` (kept for
inspection, no longer counted by pruning, so it can never displace an intact checkpoint). A run folder that
holds checkpoints none of which is intact is an error naming each (:class:`NoIntactCheckpointError`; nothing
is moved): starting over silently would hide that the run's progress is gone. An explicitly named corrupted
checkpoint is an error too.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import shutil
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fastaed.data.tokenizer import Tokenizer
from fastaed.formats import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    CheckpointError,
    load_model,
    save_model,
    verify_checksums,
    write_checksums,
)
from fastaed.formats.native import make_temp, write_atomic

PREFIX = "ckpt-"
LATEST_FILE = "latest"
STATE_FILE = "trainer_state.pt"
STATE_VERSION = 1
_CKPT_NAME = re.compile(rf"^{PREFIX}(\d+)$")
_QUARANTINED = re.compile(rf"^{PREFIX}\d+\.corrupt(-\d+)?$")


class NoIntactCheckpointError(CheckpointError):
    """``resume="auto"`` in a run folder whose checkpoints are all damaged; the message names each."""


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers (seed, step, rank, ...): a hash, so neighbouring tuples are unrelated."""
    h = hashlib.blake2b(struct.pack(f"<{len(parts)}q", *parts), digest_size=8, person=b"fastaed-train")
    return int.from_bytes(h.digest(), "little") >> 1


# ---- RNG state ---------------------------------------------------------------------------------------------


def capture_rng_state() -> dict[str, Any]:
    """Python, numpy, torch CPU and (if initialised) CUDA generator states, ``weights_only``-safe."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_as_tuple(state["python"]))
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(obj: Any) -> Any:
    # random.setstate needs tuples all the way down; a serialised state may come back with lists.
    return tuple(_as_tuple(x) for x in obj) if isinstance(obj, list | tuple) else obj


# ---- writing -----------------------------------------------------------------------------------------------


def save_checkpoint(
    out_dir: str | os.PathLike[str],
    step: int,
    model: torch.nn.Module,
    trainer_state: dict[str, Any],
    *,
    tokenizer_identity: str | None,
    keep: int = 3,
    extra: dict[str, Any] | None = None,
    tokenizer: Tokenizer | None = None,
    frontend: dict[str, Any] | None = None,
) -> Path:
    """Write ``out_dir/ckpt-{step}`` atomically, point ``latest`` at it and prune old ones; returns its path.

    With ``tokenizer`` the checkpoint carries a copy in ``tokenizer/`` (a few hundred KB), so
    ``fastaed transcribe CKPT`` needs nothing else; ``frontend`` is the model's front end entry (a fine-tuned
    Whisper's; None: fastaed's default log-mel).

    Call on one process only (rank 0): the directory is shared by every rank.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(f".{PREFIX}*"):  # temp dirs of a save that was killed half-way
        shutil.rmtree(stale, ignore_errors=True)
    final = out / f"{PREFIX}{step}"
    tmp = make_temp(final, directory=True)
    try:
        save_model(
            model,
            tmp,
            tokenizer_identity=tokenizer_identity,
            extra={"step": step, **(extra or {})},
            frontend=frontend,
            tokenizer=tokenizer,
        )
        state_path = tmp / STATE_FILE
        torch.save({"version": STATE_VERSION, **trainer_state}, state_path)
        _fsync(state_path)
        write_checksums(tmp, extend=True)  # save_model listed model and tokenizer; add the trainer state
        if final.exists():  # the same step saved again (a resumed run that ends where it started)
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    write_atomic(out / LATEST_FILE, final.name + "\n")
    _fsync(out)
    for _, old in list_checkpoints(out)[:-keep]:
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


def _fsync(path: Path) -> None:
    """Flush a file or directory entry to disk (a rename is only durable once its directory is synced)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories; atomicity does not depend on it
    finally:
        os.close(fd)


# ---- reading -----------------------------------------------------------------------------------------------


def missing_files(path: Path) -> list[str]:
    """The files a resume checkpoint needs that ``path`` lacks."""
    return [name for name in (CONFIG_FILE, WEIGHTS_FILE, STATE_FILE) if not (path / name).is_file()]


def is_complete(path: Path) -> bool:
    return not missing_files(path)


def list_checkpoints(out_dir: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """(step, path) of the complete checkpoints in ``out_dir``, oldest first."""
    return [(step, p) for step, p in checkpoint_dirs(out_dir) if is_complete(p)]


def find_latest(out_dir: str | os.PathLike[str]) -> Path | None:
    """The checkpoint ``latest`` names, else the newest complete ``ckpt-*``; None if there is none."""
    out = Path(out_dir)
    pointer = out / LATEST_FILE
    if pointer.is_file():
        named = out / pointer.read_text().strip()
        if named.is_dir() and is_complete(named):
            return named
    found = list_checkpoints(out)
    return found[-1][1] if found else None


def verify_checkpoint(path: Path) -> None:
    """Raise :class:`CheckpointError` naming the file unless every file of ``path`` matches its checksum.

    A checkpoint written before checksums existed passes (with a warning): there is nothing to compare."""
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such checkpoint directory")
    if missing := missing_files(path):
        raise CheckpointError(f"{path}: missing {missing[0]}; not a complete resume checkpoint")
    verify_checksums(path)


def find_intact(
    out_dir: str | os.PathLike[str], *, report: Callable[[str], None] = print, quarantine: bool = True
) -> Path | None:
    """Like :func:`find_latest`, but the newest checkpoint whose files match their checksums; None when the
    folder holds no checkpoint at all.

    Each corrupted one passed over for an intact one is reported with the reason and, with ``quarantine``
    (one process per run directory: rank 0), renamed to ``ckpt-N.corrupt``. When there are checkpoints
    (incomplete ones and those set aside earlier included) and none is intact, raises
    :class:`NoIntactCheckpointError` naming each and why, and moves nothing.
    """
    out = Path(out_dir)
    candidates = [p for _, p in reversed(checkpoint_dirs(out))]
    named = find_latest(out)
    if named is not None and named in candidates:  # ``latest`` first, as find_latest would
        candidates.remove(named)
        candidates.insert(0, named)
    damaged: list[tuple[Path, CheckpointError]] = []
    for path in candidates:
        try:
            verify_checkpoint(path)
        except CheckpointError as err:
            damaged.append((path, err))
            continue
        for bad, err in damaged:
            moved = f"; moved it aside to {_quarantine(bad).name}" if quarantine else ""
            report(f"skipped checkpoint {bad}: {err}{moved}")
        return path
    set_aside = sorted(p.name for p in out.iterdir() if _QUARANTINED.match(p.name)) if out.is_dir() else []
    if not damaged and not set_aside:
        return None
    reasons = [f"{path.name}: {err}" for path, err in damaged]
    reasons += [f"{name}: set aside earlier as corrupted" for name in set_aside]
    raise NoIntactCheckpointError(
        f"{out} holds {len(reasons)} checkpoint(s) and none is intact, so the run cannot resume "
        f"({'; '.join(reasons)}). Nothing was changed; to start a fresh run here pass --resume none "
        "(runtime.resume=none): the earlier run's records and checkpoints are then moved into a previous-N "
        "folder, not deleted"
    )


def checkpoint_dirs(out_dir: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """(step, path) of every ``ckpt-N`` folder in ``out_dir``, complete or not, oldest first (a folder of
    that name only appears by an atomic rename, so an incomplete one was damaged after it was written)."""
    out = Path(out_dir)
    if not out.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in out.iterdir() if (m := _CKPT_NAME.match(p.name)) and p.is_dir()]
    return sorted(found)


def _quarantine(path: Path) -> Path:
    """Rename a corrupted checkpoint out of the ``ckpt-N`` namespace (never deleted: it may be inspected)."""
    dest, n = path.with_name(f"{path.name}.corrupt"), 1
    while dest.exists():  # corrupted at the same step before
        dest, n = path.with_name(f"{path.name}.corrupt-{n}"), n + 1
    os.replace(path, dest)
    return dest


def resolve_resume(
    resume: str | os.PathLike[str] | None,
    out_dir: str | os.PathLike[str],
    *,
    report: Callable[[str], None] = print,
    quarantine: bool = True,
) -> Path | None:
    """``"auto"``: ``out_dir``'s newest intact checkpoint (see :func:`find_intact`: an error when there are
    checkpoints and none is intact) or None when there are none; ``"none"``/None: None; else that
    checkpoint, which must be intact (:class:`CheckpointError` otherwise: no fallback when one was asked
    for by name)."""
    if resume is None or str(resume) == "none":
        return None
    if str(resume) == "auto":
        return find_intact(out_dir, report=report, quarantine=quarantine)
    path = Path(resume)
    try:
        verify_checkpoint(path)
    except CheckpointError as err:
        raise CheckpointError(f"cannot resume from {path}: {err}") from None
    return path


def load_trainer_state(ckpt_dir: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(ckpt_dir) / STATE_FILE
    if not path.is_file():
        raise CheckpointError(f"{ckpt_dir}: no {STATE_FILE}; not a fastaed resume checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch.load fails in many ways on a damaged file
        raise CheckpointError(f"{path}: unreadable ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        version = state.get("version") if isinstance(state, dict) else None
        raise CheckpointError(f"{path}: trainer state version {version} != {STATE_VERSION}")
    return state


def load_weights_(model: torch.nn.Module, ckpt_dir: str | os.PathLike[str]) -> None:
    """Copy a checkpoint's weights into ``model`` (its config must match; checked by ``load_model``)."""
    saved = load_model(ckpt_dir)
    if saved.config != getattr(model, "config", saved.config):
        raise ValueError(f"{ckpt_dir}: saved model config differs from the configured model: {saved.config}")
    model.load_state_dict(saved.state_dict())
