"""The batch-size profile file: what the trainer reads, with the identity of the run it was made for.

A profile is a JSON document (``format: fastaed.batch_size_profile``, ``version``) holding

- ``batch_sizes`` (one per flattened bucket) and ``bins`` (a Bins document): the two keys that
  ``fastaed.sampling.load_profile`` reads, so any consumer of plain profiles reads these too;
- ``identity``: the model-config hash, device name, dtype, tokenizer identity, prompt format and front end it
  was measured for. The trainer compares it with its own run and refuses a profile made for another model,
  device, precision, tokenizer or front end (``sampler.force_profile: true`` overrides), naming the file and
  every field that differs: a profile measured for a smaller model or a bigger GPU is an OOM hours into a
  run, and one measured on Whisper's unpadded input holds ten times too many utterances for its 30 s input;
- the memory budget, safety margin and target, and per bucket the batch size with its predicted and
  measured peak memory and fill (peak / target), the fitted memory model, the probes, optionally the
  OOMptimizer search results, and the NeMo heuristic's batch sizes and fill on the same bins.

:func:`plot_profile` draws batch size and memory fill per bucket (profile vs heuristic) as a PNG.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fastaed.constants import HOP_LENGTH, SAMPLE_RATE
from fastaed.data.whisper_features import WhisperFeatureConfig
from fastaed.data.whisper_tokenizer import WhisperTokenizer
from fastaed.sampling.bins import Bins
from fastaed.train.config import ConfigError
from fastaed.util.files import FileFormatError, read_json

PROFILE_FORMAT = "fastaed.batch_size_profile"
PROFILE_VERSION = 1
PROMPT_FORMAT = "canary-5"  # <|startoftranscript|><|src_lang|><|task|><|tgt_lang|><|pnc|>
# Compared by the trainer; ``model_name`` is only shown in messages.
IDENTITY_FIELDS = ("model_config_hash", "device", "dtype", "tokenizer", "prompt", "frontend")


def prompt_format(tokenizer: Any) -> str:
    """``KIND-LENGTH`` of a tokenizer's decoder prompt: ``canary-5`` (fastaed's and Canary's), ``canary2-N``,
    ``whisper-2`` (English-only) or ``whisper-4``; None (no tokenizer): fastaed's ``canary-5``."""
    if tokenizer is None:
        return PROMPT_FORMAT
    if isinstance(tokenizer, WhisperTokenizer):
        return f"whisper-{tokenizer.prompt_length}"
    kind = getattr(tokenizer, "prompt_format", "canary")  # fastaed's Tokenizer has Canary's prompt
    return f"{kind}-{tokenizer.prompt_length}"


def frontend_name(config: Any) -> str | None:
    """The front end as a profile's identity names it: what changes the frames a step sees.

    None for a log-mel front end at fastaed's 10 ms hop (from scratch, a fastaed or a NeMo checkpoint: the
    frames, hence the memory, are the same; profiles made before this field existed hold None too);
    ``whisper-padded`` (every input 3000 frames) or ``whisper-unpadded`` (the real frames) for Whisper's."""
    if config is None:
        return None
    if isinstance(config, WhisperFeatureConfig):
        return f"whisper-{config.input}"
    if config.hop_length == HOP_LENGTH and config.sample_rate == SAMPLE_RATE:
        return None
    return f"log-mel-hop{config.hop_length}-sr{config.sample_rate}"


class ProfileMismatchError(ConfigError):
    """A profile made for another model, device, dtype, tokenizer or front end than the run that loads it."""


def model_config_hash(model_config: Any) -> str:
    """Hash of a ``ModelConfig`` (any field that changes memory changes it): sha256 of its sorted JSON."""
    doc = json.dumps(model_config.to_dict(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(doc.encode()).hexdigest()[:16]


def device_name(device: Any) -> str:
    """``cpu``, or the CUDA device's name (e.g. ``NVIDIA H100 80GB HBM3``): memory differs between cards."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return device.type


@dataclass(frozen=True)
class ProfileIdentity:
    """What a profile was measured for."""

    model_config_hash: str  # model_config_hash() of the exact ModelConfig (vocabulary and CTC head included)
    model_name: str  # the preset name, for messages
    device: str  # device_name()
    dtype: str  # "bf16" | "fp32": the trainer's precision
    tokenizer: str | None  # Tokenizer.identity, None when made without a tokenizer
    prompt: str = PROMPT_FORMAT  # decoder prompt format, prompt_format() (its length is part of every U)
    frontend: str | None = None  # frontend_name(): None for fastaed's log-mel (and older profiles)

    @classmethod
    def for_run(
        cls,
        model_config: Any,
        device: Any,
        dtype: str,
        tokenizer: str | None,
        *,
        prompt: str = PROMPT_FORMAT,
        frontend: str | None = None,
    ) -> ProfileIdentity:
        name, dev = model_config.name, device_name(device)
        return cls(model_config_hash(model_config), name, dev, dtype, tokenizer, prompt, frontend)

    @classmethod
    def for_training(
        cls, model_config: Any, device: Any, dtype: str, tokenizer: Any, frontend: Any = None
    ) -> ProfileIdentity:
        """The identity of a training run: its model config, device, precision, tokenizer (the object: its
        identity and prompt) and front-end config (None: fastaed's log-mel, a run from scratch)."""
        return cls.for_run(
            model_config, device, dtype, tokenizer.identity,
            prompt=prompt_format(tokenizer), frontend=frontend_name(frontend),
        )  # fmt: skip

    def differences(self, other: ProfileIdentity) -> list[str]:
        """Human-readable ``field: profile value != run value`` for each compared field that differs."""
        out = []
        for name in IDENTITY_FIELDS:
            mine, theirs = getattr(self, name), getattr(other, name)
            if mine != theirs:
                if name == "model_config_hash":
                    mine, theirs = f"{mine} ({self.model_name})", f"{theirs} ({other.model_name})"
                out.append(f"{name}: profile {mine!r} != run {theirs!r}")
        return out


@dataclass
class BucketResult:
    """One bucket of a profile."""

    bucket: int  # flattened bucket id (duration-major)
    max_duration: float  # s, the bucket's duration bound (the synthetic batch's duration)
    max_u: int  # the bucket's U bound (the synthetic batch's output length)
    batch_size: int  # the answer
    predicted_bytes: float | None = None  # memory model prediction at batch_size
    measured_bytes: int | None = None  # the verifying trial at batch_size (CUDA peak allocated / CPU count)
    reserved_bytes: int | None = None  # CUDA: peak reserved by the caching allocator in that trial
    fill: float | None = None  # measured (else predicted) / target
    trials: int = 0  # trials spent on this bucket
    search_batch_size: int | None = None  # the OOMptimizer search's answer, where it ran
    heuristic_batch_size: int | None = None  # the NeMo heuristic's batch size on this bucket's row
    heuristic_bytes: float | None = None  # its peak memory (measured on CPU, predicted on CUDA)
    heuristic_fill: float | None = None  # heuristic_bytes / target
    note: str | None = None  # why a bucket holds no utterance (batch size 0), e.g. past Whisper's 30 s


@dataclass
class BatchSizeProfile:
    """Everything ``fastaed batch-sizes`` found; ``save``/``load`` as JSON."""

    bins: Bins
    batch_sizes: list[int]
    identity: ProfileIdentity
    budget_bytes: int  # memory the run may use
    safety_margin: float  # share of the budget kept free (see README: Batch-size profiles)
    target_bytes: int  # budget · (1 − margin): the limit for every bucket's peak
    method: str  # "model" (fit + verify) or "search" (OOMptimizer on every bucket)
    buckets: list[BucketResult]
    ddp_overhead_bytes: int = 0
    memory_model: dict[str, Any] | None = None  # MemoryModel.to_dict()
    probes: list[dict[str, Any]] = field(default_factory=list)  # Measurement.to_dict() of the probes
    heuristic: dict[str, Any] = field(default_factory=dict)  # settings and totals of the NeMo baseline
    meta: dict[str, Any] = field(default_factory=dict)  # versions, timing, command

    def __post_init__(self) -> None:
        if len(self.batch_sizes) != self.bins.num_buckets:
            raise ValueError(f"{len(self.batch_sizes)} batch sizes for {self.bins.num_buckets} buckets")

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": PROFILE_FORMAT,
            "version": PROFILE_VERSION,
            "batch_sizes": [int(b) for b in self.batch_sizes],
            "bins": json.loads(self.bins.to_json()),
            "identity": asdict(self.identity),
            "budget_bytes": int(self.budget_bytes),
            "safety_margin": self.safety_margin,
            "target_bytes": int(self.target_bytes),
            "ddp_overhead_bytes": int(self.ddp_overhead_bytes),
            "method": self.method,
            "buckets": [asdict(b) for b in self.buckets],
            "memory_model": self.memory_model,
            "probes": self.probes,
            "heuristic": self.heuristic,
            "meta": self.meta,
        }

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        return path

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "profile") -> BatchSizeProfile:
        if d.get("format") != PROFILE_FORMAT:
            raise ValueError(f"{where}: not a fastaed batch-size profile (format {d.get('format')!r})")
        version = d.get("version")
        if not isinstance(version, int) or version > PROFILE_VERSION:
            raise ValueError(
                f"{where}: profile version {version!r}, this fastaed reads up to {PROFILE_VERSION}"
            )
        return cls(
            bins=Bins.from_doc(d["bins"], f"{where}: bins"),
            batch_sizes=[int(b) for b in d["batch_sizes"]],
            identity=ProfileIdentity(**d["identity"]),
            budget_bytes=int(d["budget_bytes"]),
            safety_margin=float(d["safety_margin"]),
            target_bytes=int(d["target_bytes"]),
            method=d["method"],
            buckets=[BucketResult(**b) for b in d["buckets"]],
            ddp_overhead_bytes=int(d.get("ddp_overhead_bytes", 0)),
            memory_model=d.get("memory_model"),
            probes=list(d.get("probes", [])),
            heuristic=dict(d.get("heuristic", {})),
            meta=dict(d.get("meta", {})),
        )

    @classmethod
    def load(cls, path: str | Path) -> BatchSizeProfile:
        """Read a profile file; :class:`FileFormatError` names the file (and the line of a JSON error)."""
        doc = read_json(path)
        try:
            return cls.from_dict(doc if isinstance(doc, dict) else {}, where=str(path))
        except FileFormatError:  # the embedded bins, named already
            raise
        except ValueError as err:  # from_dict's own checks name the file
            raise FileFormatError(str(err)) from None
        except (KeyError, TypeError) as err:
            raise FileFormatError(f"{path}: missing or malformed field ({err!r})") from None


def read_identity(path: str | Path) -> ProfileIdentity | None:
    """The identity stored in a profile file; None for a plain ``{"batch_sizes", "bins"}`` profile."""
    doc = read_json(path)
    identity = doc.get("identity") if isinstance(doc, dict) else None
    try:
        return ProfileIdentity(**identity) if isinstance(identity, dict) else None
    except TypeError as err:
        raise FileFormatError(f"{path}: malformed 'identity' ({err})") from None


def check_profile(path: str | Path, run: ProfileIdentity, force: bool = False) -> list[str]:
    """Refuse (raise :class:`ProfileMismatchError`) a profile made for another run, unless ``force``.

    Returns the differences (empty when the profile matches; with ``force`` they are returned, not raised).
    A plain profile without identity cannot be checked and returns ``["no identity"]`` (hand-written
    sizes are the user's responsibility).
    """
    made_for = read_identity(path)
    if made_for is None:
        return ["no identity"]
    diffs = made_for.differences(run)
    if diffs and not force:
        hint = ""
        if made_for.frontend != run.frontend:
            hint = " (the front end's input, e.g. model.frontend_input, sets the frames every step sees)"
        raise ProfileMismatchError(
            f"{path}: batch-size profile made for another run; " + "; ".join(diffs) + hint + ". Make one for "
            "this run (fastaed batch-sizes --config YOUR_TRAIN_CONFIG ...) or set sampler.force_profile=true."
        )
    return diffs


# ---- plot ------------------------------------------------------------------------------------------------


def plot_profile(profile: BatchSizeProfile, path: str | Path) -> Path:
    """PNG: batch size per bucket (log scale) and memory fill per bucket, profile vs NeMo heuristic."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    buckets = profile.buckets
    x = np.arange(len(buckets))
    fig = Figure(figsize=(max(8.0, 0.09 * len(buckets) + 4), 7), dpi=100)
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(2, 1, sharex=True)
    ax1.plot(x, [b.batch_size for b in buckets], ".-", label="profile")
    heur = [b.heuristic_batch_size for b in buckets]
    if all(h is not None for h in heur):
        ax1.plot(x, heur, ".-", label="NeMo heuristic (360 s, q=15)")
    ax1.set_yscale("log")
    ax1.set_ylabel("batch size")
    ax1.legend(fontsize=8)
    ident = profile.identity
    gib = profile.target_bytes / 2**30
    ax1.set_title(
        f"{ident.model_name}, {ident.dtype}, {ident.device}: target {gib:.2f} GiB "
        f"(budget minus {100 * profile.safety_margin:.0f}% margin)",
        fontsize=9,
    )
    fills = [100 * (b.fill or 0.0) for b in buckets]
    ax2.bar(x - 0.2, fills, 0.4, label="profile")
    hfill = [100 * (b.heuristic_fill or 0.0) for b in buckets]
    if any(hfill):
        ax2.bar(x + 0.2, hfill, 0.4, label="NeMo heuristic")
    ax2.axhline(85, color="gray", lw=0.8, ls="--", label="85% target")
    ax2.axhline(100, color="red", lw=0.8)
    ax2.set_ylabel("peak memory / target (%)")
    ax2.set_xlabel("bucket (duration-major; labels: max duration s / max U)")
    step = max(1, len(buckets) // 30)
    ax2.set_xticks(
        x[::step], [f"{b.max_duration:g}/{b.max_u}" for b in buckets][::step], rotation=90, fontsize=6
    )
    ax2.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
