"""``fastaed adapt``: a padded Whisper checkpoint made to keep its accuracy on the real frames alone.

Whisper was trained on 30 s windows only; fed the real frames of a short clip it loops. Self-distillation
fixes that without transcripts: the *teacher* is the checkpoint itself on its padded input, frozen; the
*student* is a copy that sees only the real frames and learns to reproduce the teacher's next-token
distributions (KL) and final decoder states (L2, as FUTO's whisper-acft does) on the same token sequences.

Stages, each resumable (a killed ``adapt`` run again with the same arguments continues where it was):

1. **targets** (:func:`build_targets`): the adaptation audio, chosen from the manifests (all real clips,
   synthetic ones up to ``max_clips``), written to ``WORK/train.jsonl`` and ``WORK/dev.jsonl`` with a text
   per entry: the manifest's transcript, or where there is none (or ``targets="teacher"``) the teacher's own
   greedy padded output. A pseudo-label the loop guard had to end is not a target: that clip is left out
   and counted.
2. **teacher pass** and **training**: an ordinary ``fastaed train`` run in ``WORK/run`` (2D-bucketed unpadded
   batches, per-bucket batch sizes from ``profile`` or the duration cap, exact resume, the bad-input policy)
   with ``distill.teacher`` set to the checkpoint: the trainer computes the teacher's view of every clip
   once (``fastaed.train.distill``) and trains against it until ``time_budget_s`` (all stages together).
3. **result**: the run's last checkpoint copied to ``OUT`` without its trainer state: an ordinary checkpoint
   whose front end is unpadded, plus ``adapt_summary.json`` (times, steps, data, dev WER).

Default audio (no ``audio``): ``DATA/default/train.jsonl`` and ``DATA/phrases/train.jsonl`` (synthetic
English; ``train_multilingual.jsonl`` too for a multilingual model) and the adaptation halves of the real
Asterisk sets (``fastaed.data.heldout``): never a held-out clip.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from fastaed.data import errors as E
from fastaed.train.teacher_labels import choose_clips, is_real, pseudo_label

TARGET_FILE, DEV_FILE, RUN_DIR = "train.jsonl", "dev.jsonl", "run"
STATE_FILE = "targets.json"  # what stage 1 was built from (a rerun with other inputs rebuilds it)
SUMMARY_FILE = "adapt_summary.json"
WORK_KIND = "adapt work folder"  # output kind (fastaed.util.outputs) of WORK
# Kept out of the trainer's budget for the last step, the final dev evaluation, the summary and the export:
# a share of time_budget_s, at least FINISH_MIN_S
FINISH_SHARE, FINISH_MIN_S = 0.02, 5.0


@dataclass(frozen=True)
class AdaptConfig:
    """Options of ``fastaed adapt`` (the ``help`` of each is the command line's)."""

    checkpoint: Path = field(metadata={"help": "Whisper checkpoint to adapt (the teacher, frozen)"})
    out: Path = field(metadata={"help": "where the adapted checkpoint goes (new, empty or an earlier one)"})
    audio: tuple[Path, ...] = field(
        default=(), metadata={"help": "adaptation manifests (default: synthetic corpus + real adapt halves)"}
    )
    data_dir: Path = field(default=Path("data"), metadata={"help": "where the default audio lives"})
    work: Path | None = field(default=None, metadata={"help": "work folder (default: OUT.work)"})
    targets: Literal["auto", "teacher", "transcript"] = field(
        default="auto",
        metadata={"help": "auto: transcripts where a manifest has them, the teacher's output elsewhere"},
    )
    max_clips: int = field(default=1000, metadata={"help": "synthetic clips at most (real clips: all)"})
    dev_clips: int = field(default=100, metadata={"help": "clips kept aside to watch the student's WER"})
    time_budget_s: float = field(default=1800.0, metadata={"help": "wall time of all stages together"})
    lr: float = field(default=3e-5, metadata={"help": "peak AdamW learning rate"})
    warmup_steps: int = field(default=20, metadata={"help": "linear warm-up steps"})
    kl_weight: float = field(default=1.0, metadata={"help": "weight of KL(teacher || student)"})
    state_weight: float = field(default=1.0, metadata={"help": "weight of the decoder-state L2 term"})
    ce_weight: float = field(default=0.0, metadata={"help": "weight of cross-entropy on the targets"})
    max_duration: float = field(default=60.0, metadata={"help": "real seconds per batch (no profile)"})
    profile: Path | None = field(
        default=None, metadata={"help": "per-bucket batch sizes (fastaed batch-sizes)"}
    )
    threads: int | None = field(default=None, metadata={"help": "torch threads (default: torch's)"})
    seed: int = field(default=0, metadata={"help": "clip choice, shuffling"})
    on_bad_input: Literal["error", "skip"] = field(
        default="skip", metadata={"help": "bad audio: error or skip"}
    )
    overrides: tuple[str, ...] = field(default=(), metadata={"help": "extra KEY=VALUE training overrides"})

    @property
    def work_dir(self) -> Path:
        return self.work or self.out.with_name(self.out.name + ".work")


# ---- stage 1: the adaptation audio and its targets ---------------------------------------------------------


def default_audio(data_dir: Path, multilingual: bool) -> list[Path]:
    """The default adaptation manifests that exist under ``data_dir`` (see the module doc)."""
    from fastaed.data.heldout import adaptation_manifests

    names = ["default/train.jsonl", "phrases/train.jsonl"]
    if multilingual:
        names.append("default/train_multilingual.jsonl")
    synthetic = [data_dir / n for n in names if (data_dir / n).is_file()]
    languages = None if multilingual else {"en"}
    return synthetic + adaptation_manifests(data_dir / "real", languages)


def dev_split(entries: list[dict[str, Any]], dev_clips: int) -> tuple[list[dict], list[dict]]:
    """(train, dev): ``dev_clips`` entries chosen by a hash of their audio path (stable under reordering)."""
    ranked = sorted(entries, key=lambda e: hashlib.sha1(e["audio_filepath"].encode()).hexdigest())
    dev_paths = {e["audio_filepath"] for e in ranked[:dev_clips]}
    return [e for e in entries if e["audio_filepath"] not in dev_paths], [
        e for e in entries if e["audio_filepath"] in dev_paths
    ]


def build_targets(cfg: AdaptConfig, manifests: list[Path], english_only: bool) -> dict[str, Any]:
    """Stage 1: ``WORK/train.jsonl`` and ``WORK/dev.jsonl``; reused when built from the same inputs."""
    work = cfg.work_dir
    key = {
        "checkpoint": str(cfg.checkpoint.resolve()),
        "manifests": [(str(m.resolve()), _digest(m)) for m in manifests],
        "targets": cfg.targets, "max_clips": cfg.max_clips, "dev_clips": cfg.dev_clips, "seed": cfg.seed,
    }  # fmt: skip
    state_path = work / STATE_FILE
    if state_path.is_file():
        state = json.loads(state_path.read_text())
        if state.get("key") == key and (work / TARGET_FILE).is_file() and (work / DEV_FILE).is_file():
            return state["report"]
    report = E.BadInputReport()
    chosen = choose_clips(manifests, english_only, cfg.max_clips, cfg.seed, report)
    need = [i for i, (u, _) in enumerate(chosen) if cfg.targets == "teacher" or not u.text.strip()]
    if cfg.targets == "transcript" and need:
        u = chosen[need[0]][0]
        raise E.BadInputError(
            E.BAD_FIELD, f"{u.manifest}:{u.line}: field 'text' is empty (--targets transcript)"
        )
    texts, dropped, label_s = pseudo_label(cfg.checkpoint, [chosen[i][0] for i in need], cfg.threads)
    entries, sources = [], {"transcript": 0, "teacher": 0}
    need_pos = {i: k for k, i in enumerate(need)}
    for i, (utt, raw) in enumerate(chosen):
        entry = {**raw, "audio_filepath": str(Path(utt.audio_filepath).resolve())}
        if i in need_pos:
            if need_pos[i] not in texts:
                continue
            entry["text"], entry["target_source"] = texts[need_pos[i]], "teacher"
        else:
            entry["target_source"] = "transcript"
        sources[entry["target_source"]] += 1
        entries.append(entry)
    if not entries:
        raise ValueError(
            f"no adaptation clip has a target: {len(chosen)} chosen, pseudo-labels dropped {dropped}, "
            f"left out {dict(report.counts)}"
        )
    train, dev = dev_split(entries, min(cfg.dev_clips, len(entries) // 2))
    work.mkdir(parents=True, exist_ok=True)
    for name, rows in ((TARGET_FILE, train), (DEV_FILE, dev)):
        tmp = work / f".{name}.tmp"
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        os.replace(tmp, work / name)
    out = {
        "manifests": [str(m) for m in manifests], "chosen": len(chosen), "train_clips": len(train),
        "dev_clips": len(dev), "train_audio_s": round(sum(e["duration"] for e in train), 1),
        "real_clips": sum(1 for _, raw in chosen if is_real(raw)), "targets": sources,
        "pseudo_label_dropped": dropped, "pseudo_label_s": round(label_s, 1), "left_out": report.to_dict(),
    }  # fmt: skip
    state_path.write_text(json.dumps({"key": key, "report": out}, indent=1) + "\n")
    return out


def _digest(path: Path) -> str:
    from fastaed.data.index import file_digest

    return file_digest(path)


# ---- stages 2 and 3: the distillation run, the adapted checkpoint ------------------------------------------


def train_config(cfg: AdaptConfig, budget_s: float) -> Any:
    """The ``TrainConfig`` of the distillation run (``WORK/run/config.yaml`` records it)."""
    from fastaed.train.config import TrainConfig

    work = cfg.work_dir
    doc = {
        "data": {"train_manifests": [str(work / TARGET_FILE)], "dev_manifest": str(work / DEV_FILE),
                 "on_bad_input": cfg.on_bad_input},
        "sampler": {"num_buckets": 20, "max_duration": cfg.max_duration, "seed": cfg.seed,
                    "short_first_epoch": False, "profile": str(cfg.profile) if cfg.profile else None},
        "model": {"init_from": str(cfg.checkpoint), "frontend_input": "unpadded", "ctc_weight": None,
                  "dropout": 0.0},
        "optim": {"lr": cfg.lr, "betas": [0.9, 0.98], "weight_decay": 0.0, "warmup_steps": cfg.warmup_steps,
                  "schedule": "constant", "max_steps": 1_000_000, "grad_clip": 1.0},
        "loss": {"label_smoothing": 0.0, "mask_prompt": True},
        "distill": {"teacher": str(cfg.checkpoint), "teacher_input": "padded", "ce_weight": cfg.ce_weight,
                    "kl_weight": cfg.kl_weight, "state_weight": cfg.state_weight},
        "specaugment": {"enabled": False},
        "runtime": {"out_dir": str(work / RUN_DIR), "num_workers": 1, "threads": cfg.threads,
                    "log_every": 10, "eval_every": 0, "ckpt_every": 100, "keep_checkpoints": 2,
                    "eval_max_utts": cfg.dev_clips, "time_budget_s": max(budget_s, 1.0)},
    }  # fmt: skip
    return TrainConfig.from_dict(doc, list(cfg.overrides))


def adapt(cfg: AdaptConfig) -> dict[str, Any]:
    """All three stages (see the module doc); returns what ``OUT/adapt_summary.json`` holds."""
    from fastaed.data.tokenizer import load_tokenizer
    from fastaed.formats import TOKENIZER_DIR, read_checkpoint_meta
    from fastaed.formats.native import CHECKPOINT_KIND, is_checkpoint_folder
    from fastaed.train.loop import train
    from fastaed.util.outputs import check_output_dir

    t0 = time.perf_counter()
    check_output_dir(cfg.out, CHECKPOINT_KIND, legacy=is_checkpoint_folder)  # before any work
    meta = read_checkpoint_meta(cfg.checkpoint)
    if (meta.get("frontend") or {}).get("kind") != "whisper":
        raise ValueError(
            f"{cfg.checkpoint}: adapt needs a Whisper checkpoint (padded teacher, unpadded student)"
        )
    tokenizer = load_tokenizer(cfg.checkpoint / TOKENIZER_DIR)
    multilingual = bool(getattr(tokenizer, "multilingual", False))
    manifests = list(cfg.audio) or default_audio(cfg.data_dir, multilingual)
    missing = [m for m in manifests if not m.is_file()]
    if missing or not manifests:
        raise FileNotFoundError(
            f"adaptation audio: {missing[0] if missing else 'none found under ' + str(cfg.data_dir)} "
            "(make demo builds the default data; or pass --audio MANIFEST)"
        )
    _adopt_work_dir(cfg.work_dir)
    elapsed_before = _previous_elapsed(cfg.work_dir)
    targets = build_targets(cfg, manifests, english_only=not multilingual)
    spent = elapsed_before + time.perf_counter() - t0
    # The trainer stops taking steps at its budget, then finishes its step, evaluates the dev clips and
    # writes a checkpoint, and the export follows: keep a share of the budget for that so the whole command
    # ends within time_budget_s (tiny.en at 30 min: 17 s of dev evaluation after the budget).
    finish = max(FINISH_SHARE * cfg.time_budget_s, FINISH_MIN_S)
    run = train(train_config(cfg, cfg.time_budget_s - spent - finish), resume="auto")
    summary = {
        "source": str(cfg.checkpoint), "out": str(cfg.out), "config": _plain(asdict(cfg)),
        "wall_s": round(elapsed_before + time.perf_counter() - t0, 1),
        "pseudo_label_s": targets["pseudo_label_s"], "teacher_s": _teacher_seconds(cfg.work_dir),
        "train_s": round(run["wall_time_s"], 1), "steps": run["steps"], "epochs": run["epoch"],
        "clips": targets["train_clips"], "audio_s": targets["train_audio_s"], "data": targets,
        "dev_wer_unpadded": run.get("wer"), "checkpoint": run["checkpoint"],
    }  # fmt: skip
    export_checkpoint(Path(run["checkpoint"]), cfg.out, summary)
    return summary


def export_checkpoint(checkpoint: Path, out: Path, summary: dict[str, Any]) -> None:
    """Copy a trainer checkpoint to ``out`` as an ordinary one (no trainer state), with ``SUMMARY_FILE``."""
    from fastaed.formats.native import CHECKPOINT_KIND, is_checkpoint_folder, write_checksums
    from fastaed.train.checkpoint import STATE_FILE as TRAINER_STATE
    from fastaed.util.outputs import building_dir

    with building_dir(out, CHECKPOINT_KIND, "adapt", legacy=is_checkpoint_folder) as tmp:
        for item in checkpoint.iterdir():
            if item.name == TRAINER_STATE or item.name.startswith("."):
                continue
            (shutil.copytree if item.is_dir() else shutil.copy2)(item, tmp / item.name)
        (tmp / SUMMARY_FILE).write_text(json.dumps(summary, indent=1) + "\n")
        write_checksums(tmp)


def _adopt_work_dir(work: Path) -> None:
    """WORK must be new, empty, or an earlier adapt's (marked): a user's folder is never written into."""
    from fastaed.util.outputs import MARKER, adopt_dir

    names = {TARGET_FILE, DEV_FILE, STATE_FILE, RUN_DIR, f".{TARGET_FILE}.tmp", f".{DEV_FILE}.tmp", MARKER}
    adopt_dir(work, WORK_KIND, "adapt", allowed=names.__contains__, flag="--work")


def _previous_elapsed(work: Path) -> float:
    """Time an interrupted earlier attempt already spent on stage 1 (its budget is the whole run's)."""
    state = work / STATE_FILE
    if not state.is_file():
        return 0.0
    return float(json.loads(state.read_text())["report"].get("pseudo_label_s", 0.0))


def _teacher_seconds(work: Path) -> float | None:
    from fastaed.train.distill import CACHE_FILE, TeacherCache

    cache = TeacherCache.load(work / RUN_DIR / CACHE_FILE)
    return round(cache.build_s, 1) if cache is not None else None


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    return str(obj) if isinstance(obj, Path) else obj
