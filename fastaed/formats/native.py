"""Self-describing model checkpoints: a directory with ``model.safetensors``, ``config.json`` and
``checksums.json``.

``config.json`` holds the format version, the :class:`ModelConfig` as a dict, the tokenizer identity, the
parameter counts and the weights file size, so :func:`load_model` rebuilds the model with no flags and
notices a truncated or swapped weights file. Training resume state (optimizer, scheduler, sampler) is not
a model concern and is stored elsewhere.

``checksums.json`` lists the size and sha256 of every file of the checkpoint, ``tokenizer/`` included, and
is written last. Loading checks the files it reads against it (:func:`load_model` the config and weights,
:func:`verify_tokenizer` the tokenizer before anyone reads it), so bytes flipped on disk or in transfer (same
size, still a valid file) raise :class:`CheckpointError` instead of decoding garbage. Checkpoints written
before checksums existed still load, with a warning, and so does a tokenizer an older listing left out.

Writes are atomic per file: each is written to a temporary file in the same directory and moved into place
with ``os.replace``, so a crash never leaves a half-written ``model.safetensors`` under its real name.
``config.json`` is replaced after the weights and ``checksums.json`` last; a crash in between leaves files
that disagree with the listed checksums, which loading reports rather than trusts. Files and folders get
the permissions an ordinary ``open()``/``mkdir`` would give (the umask applies), not ``tempfile``'s 0600.

This lives outside ``fastaed.model`` so that the model package imports nothing but torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from fastaed.model.aed import EncoderDecoderModel
from fastaed.model.config import ModelConfig

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
CHECKSUMS_FILE = "checksums.json"
TOKENIZER_DIR = "tokenizer"  # a checkpoint's own copy of its tokenizer
FORMAT_VERSION = 1  # bump when the layout of config.json or the parameter names change
CHECKPOINT_KIND = "checkpoint"  # output kind (fastaed.util.outputs) of the checkpoint folders commands write
_HASH_CHUNK = 1 << 20


class CheckpointError(RuntimeError):
    """A checkpoint directory is missing, incomplete, corrupted or from an incompatible version."""


class UnverifiedCheckpointWarning(UserWarning):
    """A checkpoint written before checksums existed: it loads, but corruption cannot be detected."""


def save_model(
    model: EncoderDecoderModel,
    path_dir: str | os.PathLike[str],
    *,
    tokenizer_identity: str | None = None,
    extra: dict[str, Any] | None = None,
    frontend: dict[str, Any] | None = None,
    tokenizer: Any = None,
) -> Path:
    """Write ``model`` to ``path_dir`` (created if needed); returns the directory.

    tokenizer_identity: the tokenizer's identity hash, so a loader can check it decodes with the right one.
    tokenizer: saved into ``tokenizer/`` (anything with ``save(folder)``) before ``checksums.json`` is
    written, so the checksums cover it too (default: the identity of ``tokenizer`` when one is given).
    frontend: the feature front end the model takes (``{"kind": ..., fields}``, see
    ``fastaed.data.frontend``); None = fastaed's default log-mel.
    extra: any JSON-able metadata (training step, data description); checked before anything is written.
    """
    path = Path(path_dir)
    path.mkdir(parents=True, exist_ok=True)
    if tokenizer is not None and tokenizer_identity is None:
        tokenizer_identity = tokenizer.identity
    # Contiguous CPU copies: safetensors stores raw buffers and refuses views of shared storage.
    state = {name: t.detach().to("cpu").contiguous() for name, t in model.state_dict().items()}
    meta: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "model_config": model.config.to_dict(),
        "tokenizer_identity": tokenizer_identity,
        "num_params": model.num_params(),
        "weights_file": WEIGHTS_FILE,
        "checksums_file": CHECKSUMS_FILE,  # so a loader knows a missing checksums.json was deleted
        "extra": extra or {},
    }
    if frontend is not None:
        meta["frontend"] = frontend
    try:
        json.dumps(meta)
    except TypeError as e:
        raise TypeError(f"checkpoint metadata (extra=...) must be JSON-serialisable: {e}") from None

    weights_tmp = make_temp(path / WEIGHTS_FILE)
    try:
        # safetensors replaces the file with a 0600 one of its own; give it back the mode ``make_temp`` got
        mode = weights_tmp.stat().st_mode & 0o777
        save_file(state, str(weights_tmp))
        os.chmod(weights_tmp, mode)
        meta["weights_bytes"] = weights_tmp.stat().st_size
        os.replace(weights_tmp, path / WEIGHTS_FILE)
    finally:
        weights_tmp.unlink(missing_ok=True)  # only left over when something above failed
    write_atomic(path / CONFIG_FILE, json.dumps(meta, indent=2) + "\n")
    if tokenizer is not None:
        tokenizer.save(path / TOKENIZER_DIR)
    write_checksums(path)  # every file of the folder: config, weights, tokenizer (and anything else there)
    return path


# ---- atomic, umask-honouring writes ------------------------------------------------------------------------


def make_temp(target: Path, *, directory: bool = False) -> Path:
    """A fresh hidden temporary file (or folder) next to ``target``, so ``os.replace`` onto it is atomic.

    Created like ``open(..., "x")``/``os.mkdir`` would, mode 0666/0777 less the umask: ``tempfile``'s
    0600/0700 would leave checkpoints unreadable to the rest of a team."""
    while True:
        tmp = target.parent / f".{target.name}.{secrets.token_hex(4)}.tmp"
        try:
            if directory:
                os.mkdir(tmp, 0o777)
            else:
                os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` in one step, durably."""
    tmp = make_temp(path)
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# ---- checksums ---------------------------------------------------------------------------------------------


def file_sha256(path: Path) -> str:
    """Streamed, so memory stays flat for any size (about 1 s per GB)."""
    h = hashlib.sha256()
    buf = bytearray(_HASH_CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def write_checksums(
    path_dir: str | os.PathLike[str], names: Iterable[str] | None = None, *, extend: bool = False
) -> None:
    """Write ``checksums.json`` (size and sha256 per file) into a checkpoint folder, atomically.

    names: paths relative to the folder; default every file under it except hidden temporaries.
    extend: keep the entries already listed and hash only the other files (the folder gained files since
    :func:`save_model` listed its own; those were hashed moments ago by this process).
    """
    path = Path(path_dir)
    if names is None:
        names = sorted(
            p.relative_to(path).as_posix()
            for p in path.rglob("*")
            if p.is_file() and p.name != CHECKSUMS_FILE and not p.name.startswith(".")
        )
    listed = (_read_checksums(path) or {}) if extend else {}
    files = {
        name: listed.get(name) or {"bytes": (path / name).stat().st_size, "sha256": file_sha256(path / name)}
        for name in names
    }
    write_atomic(path / CHECKSUMS_FILE, json.dumps({"algorithm": "sha256", "files": files}, indent=2) + "\n")


def _read_checksums(path: Path) -> dict[str, dict[str, Any]] | None:
    """The ``files`` table of ``checksums.json``, None if the folder has none."""
    listing_path = path / CHECKSUMS_FILE
    if not listing_path.is_file():
        return None
    try:
        listing = json.loads(listing_path.read_text())
        files = listing["files"]
        if listing.get("algorithm") != "sha256" or not all(
            isinstance(e["sha256"], str) and isinstance(e["bytes"], int) for e in files.values()
        ):
            raise ValueError("unknown algorithm or malformed entry")
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{listing_path}: corrupted ({e})") from None
    return files


_warned_unverified: set[Path | tuple[Path, str]] = set()


def verify_checksums(path_dir: str | os.PathLike[str], names: Iterable[str] | None = None) -> bool:
    """Check a checkpoint's files against its ``checksums.json``: sizes first (cheap), then contents.

    names: only these files (default: every listed one). Raises :class:`CheckpointError` naming the first
    file that is missing or differs. Returns False, with one warning per checkpoint, for a checkpoint
    written before checksums existed.
    """
    path = Path(path_dir)
    files = _read_checksums(path)
    if files is None:
        _require_legacy(path)
        if path.resolve() not in _warned_unverified:
            _warned_unverified.add(path.resolve())
            warnings.warn(
                f"{path}: no {CHECKSUMS_FILE} (written before fastaed checked checksums); loading it "
                "unverified, so on-disk corruption would go unnoticed",
                UnverifiedCheckpointWarning,
                stacklevel=3,
            )
        return False
    wanted = list(files if names is None else names)
    for name in wanted:
        if name not in files:
            raise CheckpointError(f"{path / CHECKSUMS_FILE}: does not list {name}")
        file, expected = path / name, files[name]["bytes"]
        if not file.is_file():
            raise CheckpointError(f"{file}: missing (listed in {CHECKSUMS_FILE})")
        if (size := file.stat().st_size) != expected:
            raise CheckpointError(
                f"{file}: {size} bytes, {CHECKSUMS_FILE} says {expected} (truncated or replaced)"
            )
    for name in wanted:
        if file_sha256(path / name) != files[name]["sha256"]:
            raise CheckpointError(
                f"{path / name}: sha256 differs from {CHECKSUMS_FILE}: the file changed after it was written "
                "(corrupted on disk or in transfer)"
            )
    return True


def verify_tokenizer(path_dir: str | os.PathLike[str]) -> bool:
    """Check a checkpoint's ``tokenizer/`` files against its ``checksums.json`` before they are read.

    Raises :class:`CheckpointError` naming a file that differs, is missing, or was added after the listing.
    Returns False, with one warning per checkpoint, when the listing predates tokenizer checksums (fastaed
    imports of Whisper listed only config and weights) or the checkpoint has no listing at all.
    """
    path = Path(path_dir)
    files = _read_checksums(path)
    if files is None:
        return verify_checksums(path, [])  # the legacy warning, or the error for a deleted listing
    prefix = f"{TOKENIZER_DIR}/"
    listed = [name for name in files if name.startswith(prefix)]
    on_disk = sorted(
        p.relative_to(path).as_posix()
        for p in (path / TOKENIZER_DIR).rglob("*")
        if p.is_file() and not p.name.startswith(".")
    )
    if not listed:
        if on_disk and (path.resolve(), TOKENIZER_DIR) not in _warned_unverified:
            _warned_unverified.add((path.resolve(), TOKENIZER_DIR))
            warnings.warn(
                f"{path / TOKENIZER_DIR}: not listed in {CHECKSUMS_FILE} (written before fastaed covered the "
                "tokenizer); loading it unverified",
                UnverifiedCheckpointWarning,
                stacklevel=2,
            )
        return False
    if unlisted := [name for name in on_disk if name not in files]:
        raise CheckpointError(
            f"{path / unlisted[0]}: not listed in {CHECKSUMS_FILE} (added or replaced after the checkpoint "
            "was written)"
        )
    return verify_checksums(path, listed)


def _require_legacy(path: Path) -> None:
    """No checksums: fine for an old checkpoint, an error for one whose config says they were written."""
    try:
        meta = json.loads((path / CONFIG_FILE).read_text())
    except (OSError, ValueError):
        return  # reported by whoever reads config.json
    if isinstance(meta, dict) and meta.get("checksums_file"):
        raise CheckpointError(f"{path}: missing {CHECKSUMS_FILE} (deleted, or the save was interrupted)")


# ---- reading -----------------------------------------------------------------------------------------------


def read_checkpoint_meta(path_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The parsed, checksum-verified ``config.json`` of a checkpoint (format version, model config, ...)."""
    path = Path(path_dir)
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such checkpoint directory")
    config_path = path / CONFIG_FILE
    if not config_path.is_file():
        raise CheckpointError(f"{path}: missing {CONFIG_FILE}; not a fastaed model checkpoint")
    verify_checksums(path, [CONFIG_FILE])
    try:
        meta = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{config_path}: corrupted JSON ({e})") from None
    if not isinstance(meta, dict) or "model_config" not in meta:
        raise CheckpointError(f"{config_path}: no model_config; not a fastaed model checkpoint")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{config_path}: format_version {version!r}, this fastaed reads up to {FORMAT_VERSION}"
        )
    return meta


def is_checkpoint_folder(path: Path) -> bool:
    """Whether ``path`` holds a fastaed checkpoint and nothing else: a ``config.json`` with fastaed's format
    version and model config, a ``checksums.json``, ``tokenizer/`` and the files it lists (an import written
    before output folders carried a marker, whose listing may leave out the tokenizer; see
    ``fastaed.util.outputs``). Reads, never raises."""
    try:
        meta = json.loads((path / CONFIG_FILE).read_text())
        files = _read_checksums(path)
    except (OSError, ValueError, CheckpointError):
        return False
    if not isinstance(meta, dict) or not isinstance(meta.get("format_version"), int) or files is None:
        return False
    if "model_config" not in meta:
        return False
    listed = {name.split("/", 1)[0] for name in files} | {CHECKSUMS_FILE, TOKENIZER_DIR}
    return all(p.name in listed for p in path.iterdir())


def load_model(
    path_dir: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> EncoderDecoderModel:
    """Rebuild a model saved by :func:`save_model`, weights on ``map_location``, in eval mode.

    Raises :class:`CheckpointError` naming the file when the directory is incomplete or corrupted.
    """
    path = Path(path_dir)
    meta = read_checkpoint_meta(path)
    try:
        config = ModelConfig.from_dict(meta["model_config"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path / CONFIG_FILE}: invalid model_config ({e})") from None

    weights_path = path / WEIGHTS_FILE
    if not weights_path.is_file():
        raise CheckpointError(f"{path}: missing {WEIGHTS_FILE}")
    expected = meta.get("weights_bytes")
    if expected is not None and weights_path.stat().st_size != expected:
        raise CheckpointError(
            f"{weights_path}: {weights_path.stat().st_size} bytes, {CONFIG_FILE} says {expected} "
            "(truncated, or not the weights this config was saved with)"
        )
    # Hashing first reads the file once more; the load below then comes from the page cache.
    verify_checksums(path, [WEIGHTS_FILE])
    try:
        state = load_file(str(weights_path), device=str(torch.device(map_location)))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{weights_path}: unreadable safetensors file ({e})") from None

    # Build on the meta device and adopt the loaded tensors: no time or memory spent on a throwaway init.
    with torch.device("meta"):
        model = EncoderDecoderModel(config)
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as e:
        raise CheckpointError(f"{weights_path}: weights do not match the saved config ({e})") from None
    return model.eval()
