"""A training run as ``train()`` set it up, and what it writes besides the per-step records: evaluations,
resume checkpoints and the end-of-run summary (``summary.json``, ``summary.txt``, the learning curve)."""

from __future__ import annotations

import dataclasses
import json
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fastaed.sampling import BucketingSampler
from fastaed.sampling.streaming import StreamingBucketingSampler
from fastaed.train import checkpoint as ckpt
from fastaed.train import distributed as D
from fastaed.train.config import TrainConfig
from fastaed.train.evaluate import evaluate
from fastaed.train.faults import FaultInjector, NonFiniteGuard
from fastaed.train.metrics import (
    CURVE_FILE,
    METRICS_FILE,
    SUMMARY_FILE,
    SUMMARY_TEXT_FILE,
    MetricsWriter,
    RunTotals,
    left_out,
    peak_memory_mb,
    plot_learning_curve,
    summary_table,
)
from fastaed.train.setup import ModelParts, Position, TrainData
from fastaed.train.shards import stream_states
from fastaed.train.step import Precision


@dataclass
class Session:
    """Everything the steps, evaluations and checkpoints of one run share; ``pos`` and ``totals`` advance."""

    cfg: TrainConfig
    info: D.DistInfo
    device: torch.device
    precision: Precision
    out_dir: Path
    data: TrainData
    parts: ModelParts
    guard: NonFiniteGuard
    injector: FaultInjector
    metrics: MetricsWriter
    pos: Position
    totals: RunTotals
    resumed_from: Path | None
    t_start: float  # perf_counter() when this process started
    frontend_entry: dict[str, Any] | None = None  # the fine-tuned checkpoint's front end (None: the default)
    carried_extra: dict[str, Any] | None = None  # the fine-tuned checkpoint's metadata (``Pretrained.extra``)

    def elapsed_s(self) -> float:
        """Wall time of the whole run: what the resumed-from checkpoint recorded plus this process's."""
        return self.pos.elapsed_s + time.perf_counter() - self.t_start

    def checkpoint_path(self) -> Path:
        """The checkpoint of the current step (the same path on every rank; rank 0 writes it)."""
        return self.out_dir / f"{ckpt.PREFIX}{self.pos.step}"

    def evaluate(self) -> dict[str, Any]:
        """Rank 0: dev loss and greedy WER, logged; other ranks wait. Runs under ``fork_rng``, so it draws
        nothing from the training RNG streams. Empty without a dev set."""
        result: dict[str, Any] = {}
        rt, dev_set = self.cfg.runtime, self.data.dev_set
        if dev_set is not None and self.info.is_main:
            t0 = time.perf_counter()
            parts = self.parts
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                result = evaluate(
                    parts.model, parts.frontend, dev_set, self.data.tokenizer, device=self.device,
                    autocast=self.precision.autocast, loss_cfg=self.cfg.loss,
                    on_bad_input=self.cfg.data.on_bad_input, max_wer_utts=rt.eval_max_utts,
                    batch_duration=rt.eval_batch_duration, num_workers=rt.num_workers,
                )  # fmt: skip
            result["eval_time_s"] = time.perf_counter() - t0
            self.metrics.log({"type": "eval", "step": self.pos.step, **result})
            wer = (
                f", WER {result['wer']:.3f}, CER {result['cer']:.3f}" if result.get("wer") is not None else ""
            )
            loss = result.get("dev_loss")
            shown = f"{loss:.4f}" if loss is not None else "n/a (no dev utterance scored)"
            D.print0(f"\nstep {self.pos.step}: dev loss {shown}{wer}")
        D.barrier()
        return result

    def save(self, sampler: BucketingSampler | StreamingBucketingSampler) -> Path:
        """A resume checkpoint of the current step (every rank's RNG state; rank 0 writes)."""
        rng_states = D.all_gather_objects(ckpt.capture_rng_state())
        pos = self.pos
        if isinstance(sampler, StreamingBucketingSampler):  # one state per rank: each holds its own buffers
            sampler_state: Any = stream_states(sampler, pos.batches_in_epoch)
        else:
            sampler_state = sampler.state_dict(steps_done=pos.batches_in_epoch)  # trained, not prefetched
        if self.info.is_main:
            parts = self.parts
            state = {
                "optimizer": parts.optimizer.state_dict(),
                "position": {**dataclasses.asdict(pos), "elapsed_s": self.elapsed_s()},
                "totals": dataclasses.asdict(self.totals),
                "guard": self.guard.state_dict(),
                "sampler": sampler_state,
                "rng": rng_states,
            }
            extra = {**(self.carried_extra or {}), "epoch": pos.epoch, "train_config": self.cfg.to_dict()}
            tokenizer = self.data.tokenizer
            ckpt.save_checkpoint(
                self.out_dir, pos.step, parts.model, state, tokenizer_identity=tokenizer.identity,
                keep=self.cfg.runtime.keep_checkpoints, extra=extra, tokenizer=tokenizer,
                frontend=self.frontend_entry,
            )  # fmt: skip
        D.barrier()  # no rank runs ahead (or exits) before the checkpoint is complete
        return self.checkpoint_path()

    def summary(
        self,
        stopped_by: str,
        recent_losses: Sequence[float],
        last_eval: dict[str, Any],
        checkpoint: Path,
        rejected: dict[str, int],
    ) -> dict[str, Any]:
        """The run summary (what ``train()`` returns); ``rejected``: the sampler's rejections by reason.

        ``bad_input`` counts what training skipped, by reason: training manifest lines (index build) plus
        audio (while training); ``rejected`` the utterances the sampler left out. ``summary_table`` shows
        both."""
        cfg, pos, data = self.cfg, self.pos, self.data
        skipped = data.train_report.counts + Counter(self.totals.bad_input)
        account = left_out(skipped, rejected)
        return {
            "steps": pos.step, "epoch": pos.epoch, "stopped_by": stopped_by, "wall_time_s": self.elapsed_s(),
            "final_train_loss": float(np.mean(recent_losses)) if recent_losses else None,
            **{k: last_eval.get(k) for k in ("dev_loss", "wer", "cer", "wer_utts", "examples")},
            **self.totals.summary(batches_per_step=cfg.optim.accumulation * self.info.world_size),
            "nonfinite_skipped": self.guard.skipped,
            "bad_input": {
                **account["bad_input"],
                "train_index": data.train_report.to_dict(),
                "dev_index": data.dev_index.report.to_dict() if data.dev_index is not None else None,
                "audio_skipped": sum(self.totals.bad_input.values()),
                "audio_by_reason": dict(self.totals.bad_input),
            },
            "rejected": account["rejected"],
            **({"replay": data.replay} if data.replay else {}),  # teacher-labelled replay sets: clips, drops
            "checkpoint": str(checkpoint),
            "resumed_from": str(self.resumed_from) if self.resumed_from else None,
            "model": cfg.model_name, "params": sum(p.numel() for p in self.parts.params),
            "device": str(self.device), "dtype": self.precision.name, "world_size": self.info.world_size,
            "peak_mem_mb": peak_memory_mb(self.device), "out_dir": str(self.out_dir),
        }  # fmt: skip

    def write_summary(self, summary: dict[str, Any]) -> None:
        """Rank 0: ``summary.json``, the learning curve, ``summary.txt``, and the table on the console."""
        if not self.info.is_main:
            return
        out_dir = self.out_dir
        (out_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
        self.metrics.close()
        title = f"{self.cfg.model_name}: {out_dir}"
        plot_learning_curve(out_dir / METRICS_FILE, out_dir / CURVE_FILE, title=title)
        table = summary_table(summary)
        (out_dir / SUMMARY_TEXT_FILE).write_text(table + "\n")
        D.print0(table)
