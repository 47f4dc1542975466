"""Training telemetry: a JSON line per step and per evaluation, optional TensorBoard, a PNG learning curve.

``metrics.jsonl`` records are flat dicts with a ``type`` (``train`` | ``eval`` | ``event``) and a ``step``.
Lines are flushed as they are written, so a killed run keeps everything up to its last step. On resume, the
lines past the checkpoint's step (steps that will be trained again) are dropped, so the file reads like one
uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import json
import math
import resource
import warnings
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fastaed.constants import HOP_LENGTH, SAMPLE_RATE
from fastaed.data.dataset import Batch
from fastaed.util.tables import format_table, pct

METRICS_FILE = "metrics.jsonl"
CURVE_FILE = "learning_curve.png"
SUMMARY_FILE = "summary.json"
SUMMARY_TEXT_FILE = "summary.txt"


class MetricsWriter:
    """Appends records to ``out_dir/metrics.jsonl`` (and TensorBoard scalars); a no-op when disabled."""

    def __init__(
        self,
        out_dir: str | Path,
        *,
        enabled: bool = True,
        tensorboard: bool = False,
        name: str = METRICS_FILE,
    ):
        self.path = Path(out_dir) / name
        self.enabled = enabled
        self._file = None
        self._tb = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", buffering=1)  # noqa: SIM115 (kept open for the run)
        if tensorboard:
            try:  # optional dependency: imported only when asked for
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(Path(out_dir) / "tb"))
            except ImportError:
                warnings.warn(
                    "runtime.tensorboard=true but tensorboard is not installed; skipping it", stacklevel=2
                )

    def truncate_after(self, step: int) -> None:
        """Drop train/eval lines with ``step`` > ``step`` (they are about to be trained again)."""
        if not self.enabled or not self.path.is_file():
            return
        kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= step]
        assert self._file is not None
        self._file.close()
        tmp = self.path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
        tmp.replace(self.path)
        self._file = open(self.path, "a", buffering=1)  # noqa: SIM115

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled or self._file is None:
            return
        clean = {k: _json_value(v) for k, v in record.items()}
        self._file.write(json.dumps(clean) + "\n")
        if self._tb is not None and "step" in clean:
            prefix = clean.get("type", "train")
            for k, v in clean.items():
                if isinstance(v, int | float) and not isinstance(v, bool) and k != "step":
                    self._tb.add_scalar(f"{prefix}/{k}", v, clean["step"])

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def _json_value(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None  # JSON has no NaN/inf; null marks it (the record also says why, e.g. "skipped")
    return v


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut short by a kill
    return out


def peak_memory_mb(device: torch.device) -> float:
    """CUDA: peak allocated tensor memory; CPU: the process's peak resident set (ru_maxrss, KiB on Linux)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---- per-step statistics -----------------------------------------------------------------------------------

# The statistics of one step, summed over its micro-batches and over ranks in one all-reduce, in this order:
STAT_FIELDS = (
    "ce_targets",  # tokens the cross-entropy counts (text + EOS, + prompt tail without prompt masking)
    "ctc_targets",  # transcript tokens (no prompt, no EOS)
    "utterances",
    "samples",  # real audio samples
    "real_frames",  # Σ feature frames, frames = samples // hop + 1
    "padded_frames",  # B · T_max
    "real_tokens",  # Σ U
    "padded_tokens",  # B · U_max
    "skipped",  # utterances skipped as bad input
)


def batch_stats(batch: Batch, mask_prompt: bool) -> torch.Tensor:
    """(len(STAT_FIELDS),) float64 statistics of one batch; ``skipped`` is left to the caller."""
    ce_targets = batch.token_lens - (batch.prompt_lens if mask_prompt else 1)
    ctc_targets = batch.token_lens - batch.prompt_lens - 1
    frames = batch.audio_lens // HOP_LENGTH + 1
    t_max = batch.audio.shape[1] // HOP_LENGTH + 1
    values = [ce_targets.sum(), ctc_targets.sum(), len(batch), batch.audio_lens.sum(), frames.sum()]
    values += [len(batch) * t_max, batch.token_lens.sum(), batch.tokens.numel(), 0]
    return torch.tensor([float(v) for v in values], dtype=torch.float64)


def step_telemetry(totals: torch.Tensor, step_time: float) -> dict[str, Any]:
    """Per-step metrics from a step's global statistics; padding as the SPEC defines it."""
    t = dict(zip(STAT_FIELDS, totals.tolist()))
    return {
        "batch_size": int(t["utterances"]),
        "input_padding": 1 - t["real_frames"] / max(t["padded_frames"], 1),
        "output_padding": 1 - t["real_tokens"] / max(t["padded_tokens"], 1),
        "audio_s_per_s": t["samples"] / SAMPLE_RATE / step_time,
        "tokens_per_s": t["real_tokens"] / step_time,
        "step_time_s": step_time,
        "bad_input_skipped": int(t["skipped"]),
    }


@dataclass
class RunTotals:
    """Totals over the whole run (resumes included: they are checkpointed)."""

    steps: int = 0
    utterances: int = 0
    audio_seconds: float = 0.0
    real_frames: int = 0
    padded_frames: int = 0
    real_tokens: int = 0
    padded_tokens: int = 0
    train_time_s: float = 0.0  # wall time inside optimizer steps
    oom_splits: int = 0
    bad_input: dict[str, int] = dataclasses.field(default_factory=dict)  # skipped audio by reason

    def add_step(self, totals: torch.Tensor, skipped: Counter, step_time: float, oom_splits: int) -> None:
        t = dict(zip(STAT_FIELDS, totals.tolist()))
        self.steps += 1
        self.utterances += int(t["utterances"])
        self.audio_seconds += t["samples"] / SAMPLE_RATE
        self.real_frames += int(t["real_frames"])
        self.padded_frames += int(t["padded_frames"])
        self.real_tokens += int(t["real_tokens"])
        self.padded_tokens += int(t["padded_tokens"])
        self.train_time_s += step_time
        self.oom_splits += oom_splits
        for reason, n in skipped.items():
            self.bad_input[reason] = self.bad_input.get(reason, 0) + n

    def summary(self, batches_per_step: int) -> dict[str, Any]:
        """Run-level throughput and padding (aggregated as 1 - Σ real / Σ padded, as the SPEC asks)."""
        time_s = max(self.train_time_s, 1e-9)
        return {
            "train_time_s": self.train_time_s,
            "utterances_seen": self.utterances,
            "audio_hours_seen": self.audio_seconds / 3600,
            "mean_batch_size": self.utterances / max(self.steps * batches_per_step, 1),
            "input_padding": 1 - self.real_frames / max(self.padded_frames, 1),
            "output_padding": 1 - self.real_tokens / max(self.padded_tokens, 1),
            "audio_s_per_s": self.audio_seconds / time_s,
            "tokens_per_s": self.real_tokens / time_s,
            "oom_splits": self.oom_splits,
        }


# ---- what training left out -------------------------------------------------------------------------------


def format_counts(counts: Mapping[str, int]) -> str:
    """``"3 (too_short 2, over_budget 1)"``: the total, then the nonzero counts by reason, largest first."""
    nonzero = sorted(((r, n) for r, n in counts.items() if n), key=lambda item: -item[1])
    reasons = ", ".join(f"{r} {n}" for r, n in nonzero)
    return f"{sum(counts.values())} ({reasons})" if nonzero else "0"


def left_out(bad_input: Mapping[str, int], rejected: Mapping[str, int]) -> dict[str, Any]:
    """The summary's account of what training left out: bad input skipped (manifest lines while indexing,
    audio while training) and utterances the sampler rejected, each by reason."""
    return {
        "bad_input": {"skipped": sum(bad_input.values()), "by_reason": dict(bad_input)},
        "rejected": {"total": sum(rejected.values()), "by_reason": dict(rejected)},
    }


def left_out_line(bad_input: Mapping[str, int], rejected: Mapping[str, int]) -> str:
    """One console line for :func:`left_out`'s counts."""
    return (
        f"left out: bad input {format_counts(bad_input)}; rejected by the sampler {format_counts(rejected)}"
    )


# ---- learning curve ----------------------------------------------------------------------------------------


def plot_learning_curve(metrics_path: str | Path, png_path: str | Path, title: str = "") -> Path | None:
    """Train and dev cross-entropy (the same per-token, label-smoothed loss) and dev WER against the step;
    None when there is nothing to plot. The train curve is the decoder's CE, not CE + CTC, so it compares
    with the dev curve."""
    records = read_metrics(metrics_path)
    train = [
        (r["step"], r["ce_loss"])
        for r in records
        if r.get("type") == "train" and r.get("ce_loss") is not None
    ]
    evals = [r for r in records if r.get("type") == "eval"]
    if not train and not evals:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    if train:
        steps, losses = zip(*train)
        ax.plot(steps, losses, color="tab:blue", alpha=0.3, lw=0.8, label="train CE")
        ax.plot(steps, _smooth(losses), color="tab:blue", lw=1.5, label="train CE (smoothed)")
    dev = [(r["step"], r["dev_loss"]) for r in evals if r.get("dev_loss") is not None]
    if dev:
        ax.plot(*zip(*dev), "o-", color="tab:orange", label="dev CE")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (per token)")
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    wer = [(r["step"], r["wer"]) for r in evals if r.get("wer") is not None]
    if wer:
        ax2 = ax.twinx()
        ax2.plot(*zip(*wer), "s--", color="tab:green", label="dev WER")
        ax2.set_ylabel("WER")
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    ax.legend(handles, labels, loc="upper right")
    ax.set_title(title or "learning curve")
    fig.tight_layout()
    png_path = Path(png_path)
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
    return png_path


def _smooth(values: tuple[float, ...], alpha: float = 0.05) -> list[float]:
    """Exponential moving average, bias-corrected so the first points are not pulled towards 0."""
    out, avg = [], 0.0
    for i, v in enumerate(values, start=1):
        avg = (1 - alpha) * avg + alpha * v
        out.append(avg / (1 - (1 - alpha) ** i))
    return out


def summary_table(summary: dict[str, Any]) -> str:
    """The run summary a person reads at the end of training (also written to ``summary.txt``)."""
    wall = summary.get("wall_time_s") or 0.0
    rows = [
        ["model", f"{summary.get('model')} ({(summary.get('params') or 0) / 1e6:.2f}M params)"],
        ["device / dtype / ranks", "{device} / {dtype} / {world_size}".format_map(summary)],
        ["steps (epoch)", f"{summary.get('steps')} ({summary.get('epoch')})"],
        ["stopped by", summary.get("stopped_by")],
        ["wall time", f"{wall / 60:.1f} min"],
        ["dev WER / CER", f"{pct(summary.get('wer'))} / {pct(summary.get('cer'))}"],
        ["dev utterances decoded", summary.get("wer_utts")],
        ["dev loss", f"{summary['dev_loss']:.3f}" if summary.get("dev_loss") is not None else "-"],
        ["audio seen", f"{summary.get('audio_hours_seen', 0.0):.2f} h"],
        ["audio seconds per second", f"{summary.get('audio_s_per_s', 0.0):.1f}"],
        ["tokens per second", f"{summary.get('tokens_per_s', 0.0):.0f}"],
        ["mean batch size", f"{summary.get('mean_batch_size', 0.0):.1f}"],
        ["padding in / out", f"{pct(summary.get('input_padding'))} / {pct(summary.get('output_padding'))}"],
        ["OOM splits / non-finite skips", "{oom_splits} / {nonfinite_skipped}".format_map(summary)],
        ["bad input skipped", format_counts(summary.get("bad_input", {}).get("by_reason", {}))],
        ["rejected by the sampler", format_counts(summary.get("rejected", {}).get("by_reason", {}))],
        ["checkpoint", summary.get("checkpoint")],
    ]
    return format_table(["run summary", ""], rows)
