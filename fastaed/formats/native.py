"""Self-describing model checkpoints: a directory with ``model.safetensors`` and ``config.json``.

``config.json`` holds the format version, the :class:`ModelConfig` as a dict, the tokenizer identity, the
parameter counts and the weights file size, so :func:`load_model` rebuilds the model with no flags and
notices a truncated or swapped weights file. Training resume state (optimizer, scheduler, sampler) is not
a model concern and is stored elsewhere.

Writes are atomic per file: each is written to a temporary file in the same directory and moved into place
with ``os.replace``, so a crash never leaves a half-written ``model.safetensors`` under its real name.
``config.json`` is replaced last.

This lives outside ``fastaed.model`` so that the model package imports nothing but torch.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from fastaed.model.aed import EncoderDecoderModel
from fastaed.model.config import ModelConfig

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
FORMAT_VERSION = 1  # bump when the layout of config.json or the parameter names change


class CheckpointError(RuntimeError):
    """A checkpoint directory is missing, incomplete, corrupted or from an incompatible version."""


def save_model(
    model: EncoderDecoderModel,
    path_dir: str | os.PathLike[str],
    *,
    tokenizer_identity: str | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` to ``path_dir`` (created if needed); returns the directory.

    tokenizer_identity: the tokenizer's identity hash, so a loader can check it decodes with the right one.
    extra: any JSON-able metadata (training step, data description); checked before anything is written.
    """
    path = Path(path_dir)
    path.mkdir(parents=True, exist_ok=True)
    # Contiguous CPU copies: safetensors stores raw buffers and refuses views of shared storage.
    state = {name: t.detach().to("cpu").contiguous() for name, t in model.state_dict().items()}
    meta: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "model_config": model.config.to_dict(),
        "tokenizer_identity": tokenizer_identity,
        "num_params": model.num_params(),
        "weights_file": WEIGHTS_FILE,
        "extra": extra or {},
    }
    try:
        json.dumps(meta)
    except TypeError as e:
        raise TypeError(f"checkpoint metadata (extra=...) must be JSON-serialisable: {e}") from None

    temps: list[Path] = []
    try:
        weights_tmp = _temp_path(path / WEIGHTS_FILE, temps)
        save_file(state, str(weights_tmp))
        meta["weights_bytes"] = weights_tmp.stat().st_size
        config_tmp = _temp_path(path / CONFIG_FILE, temps)
        config_tmp.write_text(json.dumps(meta, indent=2) + "\n")
        os.replace(weights_tmp, path / WEIGHTS_FILE)
        os.replace(config_tmp, path / CONFIG_FILE)
    finally:
        for tmp in temps:  # only left over when something above failed
            tmp.unlink(missing_ok=True)
    return path


def _temp_path(target: Path, registry: list[Path]) -> Path:
    """A fresh hidden temporary file next to ``target`` (same filesystem, so ``os.replace`` is atomic)."""
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    registry.append(Path(name))
    return registry[-1]


def read_checkpoint_meta(path_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The parsed ``config.json`` of a checkpoint (format version, model config, tokenizer identity, ...)."""
    path = Path(path_dir)
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such checkpoint directory")
    config_path = path / CONFIG_FILE
    if not config_path.is_file():
        raise CheckpointError(f"{path}: missing {CONFIG_FILE}; not a fastaed model checkpoint")
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
