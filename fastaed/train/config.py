"""Training configuration: one frozen dataclass per concern, loaded from YAML with ``key=value`` overrides.

A config file has one mapping per section (``data``, ``sampler``, ``model``, ``optim``, ``loss``,
``specaugment``, ``features``, ``runtime``, ``debug``); every key is optional except one of
``data.train_manifests`` / ``data.train_shards``, and ``data.tokenizer`` unless ``model.init_from`` names a
checkpoint to fine-tune (which brings its own tokenizer and front end). Values are type-checked against
the field annotations, and an unknown or mistyped key is an error that names the key::

    cfg = TrainConfig.from_yaml("configs/train_tiny_flash.yaml", overrides=["optim.lr=1e-3"])

Paths are used as written (relative paths resolve against the working directory). The resolved config is
written to ``<out_dir>/config.yaml`` by the trainer, so every run records exactly what it ran with.
"""

from __future__ import annotations

import dataclasses
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from fastaed.data.errors import ON_BAD_INPUT_CHOICES
from fastaed.data.features import FeatureConfig, SpecAugmentConfig
from fastaed.model.config import PRESETS, ModelConfig, preset_config

SCHEDULES = ("inverse_sqrt", "cosine", "constant")
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "bf16", "fp32")
BIN_METHODS = ("equal_mass", "min_padding")


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message names the key."""


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


@dataclass(frozen=True)
class DataConfig:
    tokenizer: str | None = None  # tokenizer directory (U and the vocabulary); None with model.init_from
    train_manifests: list[str] = field(default_factory=list)  # NeMo JSONL manifests, each PATH or PATH:WEIGHT
    # Tar shards instead of manifests (streamed: each rank reads its own shards; see fastaed/train/shards.py):
    # a DIR (`fastaed data shard` output, NeMo manifest_N.json + audio_N.tar, or Lhotse Shar) or NeMo brace
    # patterns MANIFESTS::TARS (manifest__OP_0..63_CL_.json::audio__OP_0..63_CL_.tar).
    train_shards: list[str] = field(default_factory=list)
    shard_buffer_size: int = 10_000  # items each rank holds in its bucket buffers (streaming sampler)
    shard_bins_items: int = 100_000  # items read (manifests only) from a sample of shards to estimate bins
    dev_manifest: str | None = None  # dev set for loss and greedy WER; None disables evaluation
    on_bad_input: str = "error"  # "error": stop at the first bad item; "skip": leave it out and count it

    def __post_init__(self) -> None:
        _require(
            bool(self.train_manifests) != bool(self.train_shards),
            "data: give data.train_manifests or data.train_shards (exactly one of them)",
        )
        _require(self.shard_buffer_size >= 1 and self.shard_bins_items >= 1, "data.shard_*: must be >= 1")
        _require(
            self.on_bad_input in ON_BAD_INPUT_CHOICES, f"data.on_bad_input: one of {ON_BAD_INPUT_CHOICES}"
        )


@dataclass(frozen=True)
class SamplerConfig:
    bins: str | None = None  # bins JSON (`fastaed bins`); None: estimate from the training data
    num_buckets: int = 30  # duration bins when estimating
    num_subbuckets: int | str = (
        "auto"  # U sub-buckets per duration bin ("auto": per bin from the data; 1: 1D)
    )
    method: str = "min_padding"  # bin estimation: "equal_mass" | "min_padding"
    max_duration: float | None = 90.0  # padded seconds per batch and rank (a strict cap)
    max_tokens: int | None = None  # padded output tokens per batch and rank (a strict cap)
    quadratic_duration: float | None = None  # charge d + d²/q seconds per utterance (NeMo's quadratic term)
    profile: str | None = None  # JSON with "batch_sizes" (one per bucket, e.g. from `fastaed batch-sizes`)
    force_profile: bool = False  # use a profile made for another model/device/dtype/tokenizer anyway
    seed: int = 0  # shuffling seed; also seeds model init, dither, SpecAugment and dropout
    short_first_epoch: bool = True  # epoch 0 unshuffled: buckets in ascending order, short utterances first
    drop_last: bool = False  # drop each bucket's incomplete final step

    def __post_init__(self) -> None:
        _require(self.method in BIN_METHODS, f"sampler.method: one of {BIN_METHODS}")
        subs_ok = self.num_subbuckets == "auto" or (
            isinstance(self.num_subbuckets, int) and self.num_subbuckets >= 1
        )
        _require(
            self.num_buckets >= 1 and subs_ok, "sampler.num_buckets must be >= 1, num_subbuckets >= 1 or auto"
        )
        _require(
            self.profile is not None or self.max_duration is not None or self.max_tokens is not None,
            "sampler: give a profile or a budget (max_duration and/or max_tokens)",
        )
        for name in ("max_duration", "max_tokens", "quadratic_duration"):
            value = getattr(self, name)
            _require(value is None or value > 0, f"sampler.{name} must be > 0 or null, got {value}")
        _require(0 <= self.seed < 2**63, f"sampler.seed must be in [0, 2**63), got {self.seed}")


@dataclass(frozen=True)
class ModelSection:
    preset: str = "tiny-flash"  # a name from fastaed.model.PRESETS (ignored with init_from)
    # Fine-tuning: a fastaed checkpoint (e.g. `fastaed import whisper`) whose weights, model config,
    # tokenizer and front end the run starts from; data.tokenizer must then be null.
    init_from: str | None = None
    # Whisper front end of an init_from checkpoint: "unpadded" (real frames only: bucketing pays off) or
    # "padded" (every input 30 s, Whisper's pre-training shapes); null keeps the checkpoint's.
    frontend_input: str | None = "unpadded"
    ctc_weight: float | None = None  # auxiliary CTC loss weight; None keeps the preset's, 0 removes the head
    dropout: float | None = None  # overrides every dropout of encoder and decoder; None keeps the preset's

    def __post_init__(self) -> None:
        _require(
            self.preset in PRESETS, f"model.preset: unknown {self.preset!r}; known: {', '.join(PRESETS)}"
        )
        _require(self.ctc_weight is None or 0 <= self.ctc_weight <= 1, "model.ctc_weight must be in [0, 1]")
        _require(
            self.frontend_input in (None, "padded", "unpadded"),
            "model.frontend_input: padded, unpadded or null",
        )
        _require(
            self.init_from is None or not self.ctc_weight,
            "model.ctc_weight: a checkpoint named by model.init_from cannot gain a CTC head (use null or 0)",
        )
        _require(self.dropout is None or 0 <= self.dropout < 1, "model.dropout must be in [0, 1)")

    def model_config(self, vocab_size: int | None, base: ModelConfig | None = None) -> ModelConfig:
        """The preset sized for the tokenizer (None: the preset's default vocabulary), or ``base`` (the
        ``init_from`` checkpoint's config, see ``fastaed.train.pretrained``), with this section's CTC weight
        and dropout overrides."""
        cfg = preset_config(self.preset, vocab_size) if base is None else base
        if self.ctc_weight is not None:
            cfg = dataclasses.replace(cfg, ctc_weight=self.ctc_weight or None)  # 0 removes the head
        if self.dropout is not None:
            p = self.dropout
            encoder = dataclasses.replace(cfg.encoder, dropout=p, dropout_att=p)
            decoder = dataclasses.replace(cfg.decoder, dropout=p, dropout_att=p)
            cfg = dataclasses.replace(cfg, encoder=encoder, decoder=decoder)
        return cfg


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 1e-3  # peak learning rate (AdamW)
    betas: tuple[float, float] = (0.9, 0.98)
    weight_decay: float = 1e-3  # applied to matrices only (not to biases and norm scales)
    warmup_steps: int = 1000  # linear warmup from ~0 to ``lr``
    schedule: str = (
        "inverse_sqrt"  # after warmup: "inverse_sqrt" | "cosine" (to min_lr at max_steps) | "constant"
    )
    min_lr: float = 1e-5  # floor of the decaying schedules
    max_steps: int = 10_000  # optimizer steps of the whole run (resumes included)
    grad_clip: float | None = 1.0  # max global gradient norm; None disables clipping
    accumulation: int = 1  # batches per optimizer step
    freeze_encoder_steps: int = 0  # fine-tuning: the encoder gets no update for the first N steps

    def __post_init__(self) -> None:
        _require(self.lr > 0 and 0 <= self.min_lr <= self.lr, "optim: need lr > 0 and 0 <= min_lr <= lr")
        _require(all(0 <= b < 1 for b in self.betas), f"optim.betas must be in [0, 1), got {self.betas}")
        _require(self.weight_decay >= 0, "optim.weight_decay must be >= 0")
        _require(self.warmup_steps >= 0 and self.max_steps >= 1, "optim: warmup_steps >= 0, max_steps >= 1")
        _require(self.schedule in SCHEDULES, f"optim.schedule: one of {SCHEDULES}, got {self.schedule!r}")
        _require(self.grad_clip is None or self.grad_clip > 0, "optim.grad_clip must be > 0 or null")
        _require(self.accumulation >= 1, "optim.accumulation must be >= 1")
        _require(self.freeze_encoder_steps >= 0, "optim.freeze_encoder_steps must be >= 0")


@dataclass(frozen=True)
class LossConfig:
    label_smoothing: float = 0.1  # NeMo's definition: the target keeps 1 - ε
    mask_prompt: bool = True  # do not train the decoder to predict the prompt tokens

    def __post_init__(self) -> None:
        _require(0 <= self.label_smoothing < 1, "loss.label_smoothing must be in [0, 1)")


@dataclass(frozen=True)
class DistillSection:
    """Distillation from a frozen teacher (``fastaed adapt``; or any fine-tune keeping a model's accuracy):
    see ``fastaed.train.distill``. Off while ``teacher`` is null."""

    teacher: str | None = None  # teacher checkpoint folder (usually model.init_from itself)
    teacher_input: str = "padded"  # the teacher's input: "padded" | "unpadded" (Whisper), "native" (others)
    ce_weight: float = 1.0  # the ordinary loss on the transcripts (0: distillation alone)
    kl_weight: float = 1.0  # KL(teacher || student) of the next-token distributions
    state_weight: float = 0.0  # squared distance of the final decoder states (per dimension)
    temperature: float = 1.0  # softens both distributions in the KL term
    cache: str = "before"  # "before": a teacher pass over the data first, kept on disk; "lazy": per batch
    cache_batch_size: int = 8  # utterances per teacher batch while building the cache
    # Other audio trained on beside the data, labelled by the teacher (PATH or PATH:WEIGHT), so a fine-tune
    # keeps the teacher's behaviour there too (``fastaed.train.replay``)
    replay_manifests: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        _require(
            self.teacher_input in ("padded", "unpadded", "native"),
            f"distill.teacher_input: padded, unpadded or native, got {self.teacher_input!r}",
        )
        weights = (self.ce_weight, self.kl_weight, self.state_weight)
        _require(min(weights) >= 0 and sum(weights) > 0, "distill: weights must be >= 0, not all 0")
        _require(self.temperature > 0, "distill.temperature must be > 0")
        _require(self.cache_batch_size >= 1, "distill.cache_batch_size must be >= 1")
        _require(self.cache in ("before", "lazy"), f"distill.cache: before or lazy, got {self.cache!r}")
        _require(
            self.teacher is not None or not self.replay_manifests,
            "distill.replay_manifests needs distill.teacher (the teacher labels the replay audio)",
        )

    @property
    def enabled(self) -> bool:
        return self.teacher is not None


@dataclass(frozen=True)
class SpecAugmentSection(SpecAugmentConfig):
    """SpecAugment's masks (``SpecAugmentConfig``: counts, widths) and when the trainer applies them."""

    enabled: bool = True
    start_step: int = 0  # first optimizer step with masking (let the model start aligning first)

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(self.start_step >= 0, "specaugment.start_step must be >= 0")


@dataclass(frozen=True)
class FeaturesSection:
    """The front end's one training setting. The rest of ``FeatureConfig`` stays at its defaults, which is
    what inference (``fastaed transcribe``, evaluation) computes, so a model cannot be trained on features
    that decoding does not reproduce."""

    dither: float = FeatureConfig.dither  # std of the training-time Gaussian noise on the waveform

    def __post_init__(self) -> None:
        self.feature_config()  # FeatureConfig validates

    def feature_config(self) -> FeatureConfig:
        return FeatureConfig(**dataclasses.asdict(self))


@dataclass(frozen=True)
class RuntimeConfig:
    out_dir: str = "runs/train"  # checkpoints, metrics.jsonl, summary.json, learning_curve.png, config.yaml
    # "auto": continue from out_dir's newest intact checkpoint (an error when it holds only damaged ones);
    # "none": start fresh (an earlier run's records move to out_dir/previous-N/); or a checkpoint folder.
    # `fastaed train --resume X` sets it too.
    resume: str = "auto"
    device: str = "auto"  # "auto" (cuda if available) | "cpu" | "cuda"
    dtype: str = "auto"  # "auto"/"bf16": bf16 autocast on CUDA; CPU always trains in fp32
    num_workers: int = 1  # DataLoader workers (they only read audio; features run in the main process)
    threads: int | None = None  # torch intra-op threads; None keeps torch's default
    log_every: int = 25  # progress-bar / console cadence in steps (metrics.jsonl gets every step)
    eval_every: int = 1000  # dev loss + greedy WER every N steps and at the end; 0: only at the end
    ckpt_every: int = 500  # resume checkpoint every N steps and at the end; 0: only at the end
    keep_checkpoints: int = 3  # most recent resume checkpoints kept
    eval_max_utts: int = 200  # dev utterances decoded for WER/CER (the first N of the dev manifest)
    eval_batch_duration: float = 120.0  # padded seconds per evaluation batch
    max_nonfinite: int = 10  # abort after this many consecutive non-finite losses
    time_budget_s: float | None = None  # stop cleanly (eval, checkpoint, summary) after this wall time (s)
    tensorboard: bool = False  # also log to <out_dir>/tb (needs the tensorboard package)
    progress: bool = True  # tqdm progress bar with ETA

    def __post_init__(self) -> None:
        _require(self.device in DEVICES, f"runtime.device: one of {DEVICES}, got {self.device!r}")
        _require(bool(self.resume), "runtime.resume: auto, none or a checkpoint folder")
        _require(self.dtype in DTYPES, f"runtime.dtype: one of {DTYPES}, got {self.dtype!r}")
        _require(self.num_workers >= 0, "runtime.num_workers must be >= 0")
        _require(self.threads is None or self.threads >= 1, "runtime.threads must be >= 1 or null")
        _require(
            self.log_every >= 1 and self.keep_checkpoints >= 1, "runtime: log_every, keep_checkpoints >= 1"
        )
        _require(min(self.eval_every, self.ckpt_every, self.eval_max_utts) >= 0, "runtime: cadences >= 0")
        _require(self.eval_batch_duration > 0, "runtime.eval_batch_duration must be > 0")
        _require(self.max_nonfinite >= 1, "runtime.max_nonfinite must be >= 1")
        _require(self.time_budget_s is None or self.time_budget_s > 0, "runtime.time_budget_s must be > 0")


@dataclass(frozen=True)
class DebugConfig:
    """Fault injection for tests: exercises the recovery paths on CPU."""

    oom_above_batch_size: int | None = None  # raise a CUDA OOM in any piece with more utterances than this
    oom_phase: str = "forward"  # where the injected OOM happens: "forward" | "backward" (after grads landed)
    nan_loss_steps: list[int] = field(default_factory=list)  # steps (numbered from 1) whose loss becomes NaN
    sleep_per_step_s: float = 0.0  # slow steps down (lets a test kill the process mid-run)
    log_all_ranks: bool = False  # ranks > 0 also write metrics.rank{r}.jsonl (checks bucket synchronisation)

    def __post_init__(self) -> None:
        _require(self.oom_phase in ("forward", "backward"), "debug.oom_phase: forward or backward")
        _require(self.oom_above_batch_size is None or self.oom_above_batch_size >= 0, "debug.oom_above >= 0")
        _require(self.sleep_per_step_s >= 0, "debug.sleep_per_step_s must be >= 0")


@dataclass(frozen=True)
class TrainConfig:
    data: DataConfig
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    model: ModelSection = field(default_factory=ModelSection)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    distill: DistillSection = field(default_factory=DistillSection)
    specaugment: SpecAugmentSection = field(default_factory=SpecAugmentSection)
    features: FeaturesSection = field(default_factory=FeaturesSection)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    debug: DebugConfig = field(default_factory=DebugConfig)

    def __post_init__(self) -> None:
        _require(
            not (self.distill.enabled and self.data.train_shards),
            "distill.teacher needs data.train_manifests (the teacher cache is indexed by manifest line), "
            "not data.train_shards",
        )
        if self.model.init_from is None:
            _require(
                self.data.tokenizer is not None,
                "missing required key 'data.tokenizer' (or fine-tune a checkpoint: model.init_from)",
            )
        else:
            _require(
                self.data.tokenizer is None,
                "data.tokenizer: leave it null with model.init_from (the checkpoint's tokenizer is used)",
            )

    @property
    def model_name(self) -> str:
        """What summaries call the model: the preset, or the checkpoint fine-tuned from."""
        return self.model.init_from or self.model.preset

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (lists instead of tuples), the form written to YAML."""
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any], overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
        d = _plain(d)
        for item in overrides:
            _apply_override(d, item)
        return _build(cls, d, "")

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
        """Load ``path``, apply ``KEY=VALUE`` overrides (e.g. ``optim.lr=1e-3``)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        try:
            doc = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(_yaml_problem(path, err)) from None
        except UnicodeDecodeError as err:
            raise ConfigError(f"{path}: not UTF-8 text (byte {err.start}); expected YAML") from None
        if not isinstance(doc, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
        try:
            return cls.from_dict(doc, overrides)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None

    def with_overrides(self, overrides: list[str] | tuple[str, ...]) -> TrainConfig:
        return TrainConfig.from_dict(self.to_dict(), overrides)

    def to_yaml(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        return path


# ---- building and type checking ----------------------------------------------------------------------------


def _yaml_problem(path: Path, err: yaml.YAMLError) -> str:
    """``FILE:LINE:COLUMN: what`` of a YAML syntax error (yaml's marks are 0-based)."""
    mark = getattr(err, "problem_mark", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
    what = "; ".join(str(x) for x in (getattr(err, "context", None), getattr(err, "problem", None)) if x)
    return f"{where}: not valid YAML ({what or err})"


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    return obj


def _build(cls: type, d: Any, prefix: str) -> Any:
    """Instantiate dataclass ``cls`` from mapping ``d``; every key is checked and type-coerced."""
    where = prefix.rstrip(".") or "the config"
    if not isinstance(d, dict):
        raise ConfigError(f"{where}: expected a mapping, got {d!r}")
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in d if k not in names]
    if unknown:
        raise ConfigError(f"unknown key '{prefix}{unknown[0]}' (known in {where}: {', '.join(names)})")
    kwargs = {}
    for f in dataclasses.fields(cls):
        key = prefix + f.name
        if f.name not in d:
            no_default = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            if no_default and not dataclasses.is_dataclass(hints[f.name]):
                raise ConfigError(f"missing required key {key!r}")
            continue
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            kwargs[f.name] = _build(tp, d[f.name] if d[f.name] is not None else {}, key + ".")
        else:
            kwargs[f.name] = _coerce(d[f.name], tp, key)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where}: {err}") from None


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """``value`` as type ``tp``, converting only where it is lossless (int -> float, "1e-3" -> float)."""
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, option, key)
            except ConfigError:
                pass
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value in args:
            return value
        raise ConfigError(f"{key}: expected one of {list(args)}, got {value!r}")
    if origin in (list, tuple):
        if isinstance(value, str):  # "a,b" from a command-line override
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if origin is tuple and Ellipsis not in args:
            if len(value) != len(args):
                raise ConfigError(f"{key}: expected {len(args)} values, got {value!r}")
            return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        return origin(_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        number = _as_float(value)
        if number is not None and number.is_integer():
            return int(number)
    elif tp is float:
        number = _as_float(value)
        if number is not None:
            return number
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is Any:
        return value
    raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")


def _as_float(value: Any) -> float | None:
    # YAML 1.1 reads "1e-3" (no dot) as a string, so numeric strings are accepted for numeric fields.
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _type_name(tp: Any) -> str:
    if get_origin(tp) in (Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _type_name(a) for a in get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _apply_override(d: dict[str, Any], item: str) -> None:
    """Set ``section.key=value`` in the nested dict ``d`` (the value is parsed as YAML)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected KEY=VALUE, e.g. optim.lr=1e-3")
    key, _, raw = item.partition("=")
    key = key.strip()
    parts = key.split(".")
    cls: Any = TrainConfig
    node = d
    for i, part in enumerate(parts):
        hints = get_type_hints(cls) if dataclasses.is_dataclass(cls) else {}
        if part not in hints:
            known = ", ".join(hints) if hints else "(not a section)"
            raise ConfigError(f"override {item!r}: unknown key {'.'.join(parts[: i + 1])!r} (known: {known})")
        cls = hints[part]
        if i < len(parts) - 1:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
    if dataclasses.is_dataclass(cls):
        raise ConfigError(f"override {item!r}: {key!r} is a section; set one of its keys")
    text = raw.strip()
    # A string field takes the text as written (a path "007" stays "007"); other types are parsed as YAML.
    string_field = cls is str or (get_origin(cls) in (Union, types.UnionType) and str in get_args(cls))
    if string_field and text not in ("null", "~", ""):
        value: Any = text
    else:
        try:
            value = yaml.safe_load(text) if text else None
        except yaml.YAMLError as err:
            raise ConfigError(f"override {item!r}: cannot parse the value ({err})") from None
    node[parts[-1]] = _coerce(value, cls, key)
