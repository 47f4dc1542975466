"""What ``train()`` sets up before its first step: the run folder, the data, the model with its optimizer and
front end, the resume state, and the metrics file. Each piece is one function, called in this order by
``loop.train``.

The run folder (``runtime.out_dir``) is one the trainer made: it carries ``fastaed.util.outputs``' marker
of kind ``training run`` (written when the trainer creates or adopts an empty folder; runs from before the
marker are recognised by their checkpoints or ``metrics.jsonl``). Any other non-empty folder is refused
before any work, so a user's files are never mixed with, or moved as, a run's; files a user adds to a run
folder later (an evaluation report) are left where they are. A fresh start in a folder that holds an
earlier run moves that run's records and checkpoints into ``previous-N/`` (never truncated or deleted).

RNG: :func:`build_model_parts` seeds the global torch RNG for the initial weights; the trainer then reseeds
per rank, and :func:`resume_position` restores a checkpoint's RNG state last, so nothing set up here shifts
the random streams of the steps.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fastaed.data.dataset import AEDDataset
from fastaed.data.errors import BadInputReport
from fastaed.data.features import SpecAugment
from fastaed.data.frontend import build_frontend
from fastaed.data.index import MetadataIndex, build_index
from fastaed.data.manifest import ManifestSpec
from fastaed.data.shards import ShardDataset
from fastaed.data.tokenizer import Tokenizer
from fastaed.model import EncoderDecoderModel, ModelConfig, build_model
from fastaed.sampling import LengthLimits
from fastaed.train import checkpoint as ckpt
from fastaed.train import distributed as D
from fastaed.train.batches import SamplerFactory, length_limits, make_sampler_factory
from fastaed.train.config import TrainConfig
from fastaed.train.distill import (
    CACHE_FILE,
    Distiller,
    DistillWeights,
    LiveTeacher,
    TeacherCache,
    TeacherIdentity,
    build_teacher_cache,
    describe,
)
from fastaed.train.faults import NonFiniteGuard
from fastaed.train.metrics import (
    CURVE_FILE,
    METRICS_FILE,
    SUMMARY_FILE,
    SUMMARY_TEXT_FILE,
    MetricsWriter,
    RunTotals,
)
from fastaed.train.pretrained import AnyTokenizer, Pretrained
from fastaed.train.profile.profile import ProfileIdentity
from fastaed.train.replay import replay_specs
from fastaed.train.shards import ShardData, make_stream_sampler, open_train_shards
from fastaed.train.step import Precision, build_optimizer
from fastaed.util import outputs

RUN_KIND = "training run"  # the kind in the output marker of every run folder (fastaed.util.outputs)
CONFIG_FILE = "config.yaml"  # the run's TrainConfig, as it ran
PREVIOUS_PREFIX = "previous-"  # an earlier run's records, moved aside by a fresh start in its folder
# What a run writes into its folder besides the marker (the names a fresh start moves aside).
RUN_RECORDS = (
    METRICS_FILE, "metrics.rank*.jsonl", SUMMARY_FILE, SUMMARY_TEXT_FILE, CURVE_FILE, "tb", CONFIG_FILE,
    ckpt.LATEST_FILE, f"{ckpt.PREFIX}*", f".{ckpt.PREFIX}*",
)  # fmt: skip


def prepare_run_dir(cfg: TrainConfig, info: D.DistInfo, resume: str | Path) -> Path | None:
    """Check and set up ``runtime.out_dir``; returns the checkpoint to resume from (None: a fresh start).

    Rank 0 alone touches the folder: it refuses a non-empty folder that is not a fastaed run
    (:class:`~fastaed.util.outputs.OutputExistsError`), resolves ``resume`` (``auto`` with only damaged
    checkpoints is an error, see ``checkpoint.find_intact``), on a fresh start moves an earlier run's
    records into ``previous-N/``, and writes ``config.yaml``. Every rank gets the same answer, or raises the
    same error (no rank is left waiting in a collective)."""
    outcome: Any = None
    if info.is_main:
        try:
            outcome = _prepare_run_dir(cfg, resume)
        except Exception as err:  # re-raised on every rank below
            outcome = err
    outcome = D.all_gather_objects(outcome)[0]
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


def _prepare_run_dir(cfg: TrainConfig, resume: str | Path) -> Path | None:
    out = Path(cfg.runtime.out_dir)
    # A marked run folder may hold anything (what a user added is never moved): ``allowed`` is always true.
    anything = lambda _: True  # noqa: E731
    outputs.check_output_dir(out, RUN_KIND, flag="runtime.out_dir", legacy=is_older_run, allowed=anything)
    checkpoint = ckpt.resolve_resume(resume, out, report=D.print0, quarantine=True)
    out.mkdir(parents=True, exist_ok=True)
    if outputs.read_marker(out) is None:  # new, empty, or a run from before the marker
        outputs.write_marker(out, RUN_KIND, "train", None)  # None: no fixed list of entries
    if checkpoint is None:
        if kept := move_aside_previous_run(out):
            D.print0(f"starting a fresh run in {out}: the earlier run's records are kept in {kept}")
    cfg.to_yaml(out / CONFIG_FILE)
    return checkpoint


def is_older_run(out: Path) -> bool:
    """A run folder from before the marker: it holds the trainer's checkpoints, ``latest`` pointer or
    ``metrics.jsonl``."""
    return (
        (out / METRICS_FILE).is_file()
        or (out / ckpt.LATEST_FILE).is_file()
        or any((p / ckpt.STATE_FILE).is_file() for _, p in ckpt.checkpoint_dirs(out))
    )


def move_aside_previous_run(out: Path) -> Path | None:
    """Move an earlier run's records and checkpoints (:data:`RUN_RECORDS`) into a new ``out/previous-N/``
    (N: the first unused number); None when there is nothing to keep. Files a user put in the folder stay."""
    found = sorted({p for pattern in RUN_RECORDS for p in out.glob(pattern)})
    if not found:
        return None
    n = 1
    while (out / f"{PREVIOUS_PREFIX}{n}").exists():
        n += 1
    dest = out / f"{PREVIOUS_PREFIX}{n}"
    dest.mkdir()
    for path in found:
        os.replace(path, dest / path.name)
    return dest


@dataclass
class Position:
    """Where the run is; goes into every checkpoint with the run totals."""

    step: int = 0  # optimizer steps done
    epoch: int = 0  # epoch of the last trained batch
    batches_in_epoch: int = 0  # batches of that epoch trained: what the sampler resumes from
    elapsed_s: float = 0.0  # run wall time up to the checkpoint this process resumed from (0 if fresh)


@dataclass
class TrainData:
    """The run's tokenizer, indices (with their bad-input reports), datasets and sampler factory.

    On shards (``data.train_shards``) there is no training index: ``shards`` holds the shard set and its
    dataset, and ``sampler_for`` returns the one streaming sampler whatever ``shuffle`` asks."""

    tokenizer: AnyTokenizer  # data.tokenizer's, or the init_from checkpoint's
    train_index: MetadataIndex | None
    dev_index: MetadataIndex | None
    train_set: AEDDataset | ShardDataset
    dev_set: AEDDataset | None
    sampler_for: SamplerFactory
    shards: ShardData | None = None
    replay: dict[str, Any] = field(default_factory=dict)  # per distill.replay_manifests entry: clips, dropped

    @property
    def train_report(self) -> BadInputReport:
        """What reading the training data left out before training (index lines, or missing shards)."""
        return self.shards.report if self.shards is not None else self.train_index.report

    @property
    def train_items(self) -> int:
        return self.shards.num_items if self.shards is not None else len(self.train_index)


@dataclass
class ModelParts:
    """What a step trains with: the model, its optimizer, the front end and SpecAugment."""

    model: EncoderDecoderModel
    params: list[nn.Parameter]  # trainable, in model order (gradients are reduced and clipped in it)
    optimizer: torch.optim.AdamW
    frontend: nn.Module  # waves (B, N), lens (B,) -> feats (B, T, F), feat_lens (B,)
    specaug: SpecAugment
    distiller: Distiller | None = None  # distill.teacher's cached view of the training data


@dataclass
class Start:
    """Where training starts: a fresh position, or what a checkpoint restored."""

    pos: Position
    totals: RunTotals
    sampler_state: dict[str, Any] | None = None  # the resumed epoch's sampler
    checkpoint: Path | None = None  # the checkpoint resumed from


def run_model_config(cfg: TrainConfig, vocab_size: int, pretrained: Pretrained | None) -> ModelConfig:
    """The model the run trains: the preset sized for the tokenizer, or the ``init_from`` checkpoint's
    config; either with the ``model`` section's overrides."""
    if pretrained is None:
        return cfg.model.model_config(vocab_size)
    return cfg.model.model_config(None, base=pretrained.model_config)


def load_data(
    cfg: TrainConfig,
    info: D.DistInfo,
    device: torch.device,
    precision: Precision,
    pretrained: Pretrained | None = None,
) -> TrainData:
    """Indices and datasets (DataLoader workers always skip-and-report bad input; the main process applies
    ``data.on_bad_input``), and the sampler factory, checked against ``sampler.profile`` when there is one:
    the profile must have been made for this very run (model, device, precision, tokenizer).

    ``pretrained`` (fine-tuning): its tokenizer replaces ``data.tokenizer`` (U, prompt, vocabulary)."""
    policy = cfg.data.on_bad_input
    tokenizer = pretrained.tokenizer if pretrained else Tokenizer.load(cfg.data.tokenizer)
    model_cfg = run_model_config(cfg, tokenizer.vocab_size, pretrained)
    limits = length_limits(cfg, model_cfg, tokenizer.prompt_length)
    identity = None
    if cfg.sampler.profile:
        frontend = pretrained.frontend if pretrained else None  # None: fastaed's log-mel
        identity = ProfileIdentity.for_training(model_cfg, device, precision.name, tokenizer, frontend)
    if cfg.data.train_shards:
        return _load_shard_data(cfg, info, tokenizer, identity, limits)
    replay, replay_report = replay_specs(cfg)  # distill.replay_manifests, labelled by the teacher
    with D.rank0_first():  # rank 0 builds the index cache, the other ranks then read it
        specs = [ManifestSpec.parse(m) for m in cfg.data.train_manifests] + replay
        train_index = build_index(specs, tokenizer, on_bad_input=policy)
        dev_index = (
            build_index([cfg.data.dev_manifest], tokenizer, on_bad_input=policy)
            if cfg.data.dev_manifest
            else None
        )
    train_set = AEDDataset(train_index, tokenizer, on_bad_input="skip")
    dev_set = AEDDataset(dev_index, tokenizer, on_bad_input="skip") if dev_index is not None else None
    sampler_for = make_sampler_factory(cfg, train_index, info, identity, limits)
    return TrainData(tokenizer, train_index, dev_index, train_set, dev_set, sampler_for, replay=replay_report)


def _load_shard_data(
    cfg: TrainConfig,
    info: D.DistInfo,
    tokenizer: AnyTokenizer,
    identity: ProfileIdentity | None,
    limits: LengthLimits,
) -> TrainData:
    """``load_data`` on tar shards: the shard set, the dev index (if any) and the streaming sampler."""
    shards = open_train_shards(cfg, tokenizer)
    dev_index, dev_set = None, None
    if cfg.data.dev_manifest:
        with D.rank0_first():
            dev_index = build_index([cfg.data.dev_manifest], tokenizer, on_bad_input=cfg.data.on_bad_input)
        dev_set = AEDDataset(dev_index, tokenizer, on_bad_input="skip")
    sampler = make_stream_sampler(cfg, shards, info, identity, limits)
    return TrainData(tokenizer, None, dev_index, shards.dataset, dev_set, lambda **_: sampler, shards)


def build_model_parts(
    cfg: TrainConfig, vocab_size: int, device: torch.device, pretrained: Pretrained | None = None
) -> ModelParts:
    """The model (the same initial weights on every rank: seeded, or ``pretrained``'s, and broadcast from
    rank 0 to be sure), the optimizer, front end (``pretrained``'s when fine-tuning) and SpecAugment, all in
    training mode."""
    torch.manual_seed(cfg.sampler.seed)
    model = build_model(run_model_config(cfg, vocab_size, pretrained))
    if pretrained is not None:
        pretrained.load_weights_into_(model)
    model = D.broadcast_model_(model.to(device))
    o = cfg.optim
    optimizer, params = build_optimizer(model, device, lr=o.lr, weight_decay=o.weight_decay, betas=o.betas)
    if pretrained is not None:
        frontend = build_frontend(pretrained.training_frontend(cfg.features.dither)).to(device)
    else:
        frontend = build_frontend(cfg.features.feature_config()).to(device)
    specaug = SpecAugment(cfg.specaugment)
    model.train()
    frontend.train()
    specaug.train()
    return ModelParts(model, params, optimizer, frontend, specaug)


def load_distiller(
    cfg: TrainConfig, info: D.DistInfo, data: TrainData, device: torch.device
) -> Distiller | None:
    """``distill.teacher``'s cache for this run's training index: read from ``out_dir`` when it matches
    (index, teacher weights, teacher input), else built by rank 0 while the others wait, then read."""
    d = cfg.distill
    if not d.enabled:
        return None
    path = Path(cfg.runtime.out_dir) / CACHE_FILE
    teacher = Path(d.teacher)
    weights = DistillWeights(d.ce_weight, d.kl_weight, d.state_weight, d.temperature)
    if d.cache == "lazy":
        return Distiller(LiveTeacher(teacher, d.teacher_input, device), weights, device)
    with D.rank0_first():
        identity = TeacherIdentity.of(teacher, d.teacher_input, data.train_index)
        cache = TeacherCache.load(path)
        if cache is None or cache.identity != identity:
            if not info.is_main:
                raise RuntimeError(f"{path}: rank 0 did not leave a teacher cache for this run")
            D.print0(f"teacher pass: {teacher} ({d.teacher_input} input) over {len(data.train_index)} utts")
            cache = build_teacher_cache(
                teacher, d.teacher_input, data.train_set, batch_size=d.cache_batch_size, device=device,
                progress=cfg.runtime.progress,
            )  # fmt: skip
            cache.save(path)
        else:
            D.print0(f"teacher cache: {path} ({describe(cache)})")
    return Distiller(cache, weights, device)


def resume_position(
    checkpoint: Path | None, info: D.DistInfo, parts: ModelParts, guard: NonFiniteGuard
) -> Start:
    """Restore ``checkpoint`` (from :func:`prepare_run_dir`; None: a fresh start): weights, optimizer,
    position, totals, guard and this rank's RNG state (last: nothing may draw from the RNG after it)."""
    if checkpoint is None:
        return Start(Position(), RunTotals())
    state = ckpt.load_trainer_state(checkpoint)
    if len(state["rng"]) != info.world_size:
        raise ValueError(f"{checkpoint} was written by {len(state['rng'])} ranks; resume with as many")
    ckpt.load_weights_(parts.model, checkpoint)
    parts.optimizer.load_state_dict(state["optimizer"])
    start = Start(Position(**state["position"]), RunTotals(**state["totals"]), state["sampler"], checkpoint)
    guard.load_state_dict(state["guard"])
    ckpt.restore_rng_state(state["rng"][info.rank])
    D.print0(f"resumed from {checkpoint} at step {start.pos.step} (epoch {start.pos.epoch})")
    return start


def open_metrics(cfg: TrainConfig, info: D.DistInfo, out_dir: Path, start: Start) -> MetricsWriter:
    """Rank 0's ``metrics.jsonl`` (other ranks' only under ``debug.log_all_ranks``), cut back to the start
    step (a resumed run trains the later steps again), with a start or resume event."""
    metrics = MetricsWriter(
        out_dir,
        enabled=info.is_main or cfg.debug.log_all_ranks,
        tensorboard=cfg.runtime.tensorboard and info.is_main,
        name=METRICS_FILE if info.is_main else f"metrics.rank{info.rank}.jsonl",
    )
    metrics.truncate_after(start.pos.step)
    event = "resume" if start.checkpoint else "start"
    metrics.log({"type": "event", "event": event, "step": start.pos.step})
    return metrics
