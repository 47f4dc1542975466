"""The front end a checkpoint was trained with, rebuilt from the ``frontend`` entry of its config.

A checkpoint's ``config.json`` may carry ``"frontend": {"kind": ..., <fields>}``: ``"whisper"``
(:class:`~fastaed.data.whisper_features.WhisperFeatureConfig`) or ``"nemo"``
(:class:`~fastaed.data.features.FeatureConfig`, NeMo's ``AudioToMelSpectrogramPreprocessor``). Checkpoints
trained by fastaed before this entry existed use the default :class:`FeatureConfig`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from fastaed.data.features import FeatureConfig, LogMelFeatures
from fastaed.data.whisper_features import WhisperFeatureConfig, WhisperLogMel

FRONTEND_KINDS = ("nemo", "whisper")


def frontend_config(spec: dict[str, Any] | None) -> FeatureConfig | WhisperFeatureConfig:
    """The typed config of a ``frontend`` entry (None: fastaed's default log-mel, without dither)."""
    if spec is None:
        return FeatureConfig(dither=0.0)
    fields = dict(spec)
    kind = fields.pop("kind", None)
    if kind == "whisper":
        return WhisperFeatureConfig(**fields)
    if kind == "nemo":
        return FeatureConfig(**fields)
    raise ValueError(f"unknown front-end kind {kind!r}; expected one of {FRONTEND_KINDS}")


def frontend_dict(config: FeatureConfig | WhisperFeatureConfig) -> dict[str, Any]:
    """Inverse of :func:`frontend_config` (what a checkpoint stores)."""
    kind = "whisper" if isinstance(config, WhisperFeatureConfig) else "nemo"
    return {"kind": kind, **dataclasses.asdict(config)}


def build_frontend(config: FeatureConfig | WhisperFeatureConfig) -> nn.Module:
    """The feature module for ``config``: waves (B, N), lens (B,) -> feats (B, T, F), feat_lens (B,)."""
    if isinstance(config, WhisperFeatureConfig):
        return WhisperLogMel(config)
    return LogMelFeatures(config)
