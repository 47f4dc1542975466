"""``fastaed bench finetune``: fine-tuning a pretrained Whisper, fastaed's bucketed unpadded recipe against
the 30 s padded recipe with a fixed batch size, on the same weights, data, thread count and wall time.

Recipes (each one ``fastaed train`` subprocess on ``configs/finetune_whisper_tiny.yaml`` with overrides, so
its peak memory is its own):

* ``bucketed``: 2D bucketing, per-bucket batch sizes from the duration budget, unpadded Whisper input;
* ``padded``: Whisper's pre-training shapes, as the standard fine-tuning recipe feeds them: every input 30 s
  (``model.frontend_input=padded``) and one bucket of ``padded_batch_size`` utterances, shuffled.

Reported per recipe: training audio seconds per second, input padding (for the padded recipe counted
against the 30 s the encoder computes, not the audio's own padding), output padding, mean batch size, peak
resident memory, steps, and the dev loss / greedy WER after the equal wall time; ratios bucketed / padded.

Not measured here (issue 15, open): the Hugging Face ``Seq2SeqTrainer`` baseline.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastaed.util.tables import format_table, pct

RECIPES = ("bucketed", "padded")
WINDOW_S = 30.0  # Whisper's padded input


@dataclass(frozen=True)
class FinetuneBenchConfig:
    """Options of ``fastaed bench finetune``."""

    config: Path = field(
        default=Path("configs/finetune_whisper_tiny.yaml"), metadata={"help": "fine-tuning recipe (YAML)"}
    )
    checkpoint: Path | None = field(
        default=None,
        metadata={"help": "checkpoint to fine-tune (default: Whisper --model, fetched+imported)"},
    )
    model: str = field(default="tiny.en", metadata={"help": "Whisper release fetched when no --checkpoint"})
    train_manifest: Path = field(default=Path("data/default/train.jsonl"), metadata={"help": "training data"})
    dev_manifest: Path = field(default=Path("data/default/dev.jsonl"), metadata={"help": "dev data (WER)"})
    time_budget_s: float = field(default=180.0, metadata={"help": "training wall time per recipe (s)"})
    max_steps: int = field(default=100_000, metadata={"help": "step cap per recipe"})
    threads: int = field(default=2, metadata={"help": "torch threads of each run"})
    max_duration: float = field(default=60.0, metadata={"help": "bucketed: seconds of audio per batch"})
    padded_batch_size: int = field(default=8, metadata={"help": "padded recipe: utterances per batch"})
    eval_max_utts: int = field(default=50, metadata={"help": "dev utterances decoded for WER"})
    out_dir: Path = field(default=Path("runs/bench-finetune"), metadata={"help": "one run folder per recipe"})
    json: Path | None = field(default=None, metadata={"help": "write the results here"})


def _durations(manifest: Path) -> list[float]:
    lines = [line for line in manifest.read_text().splitlines() if line.strip()]
    return [float(json.loads(line)["duration"]) for line in lines]


def recipe_overrides(config: FinetuneBenchConfig, recipe: str, checkpoint: Path) -> list[str]:
    """``fastaed train`` overrides of one recipe (the same data, weights, threads and budget for both)."""
    common = [
        f"model.init_from={checkpoint}",
        f"data.train_manifests=[{config.train_manifest}]",
        f"data.dev_manifest={config.dev_manifest}",
        f"runtime.out_dir={config.out_dir / recipe}",
        f"runtime.threads={config.threads}",
        f"runtime.time_budget_s={config.time_budget_s}",
        f"runtime.eval_max_utts={config.eval_max_utts}",
        f"optim.max_steps={config.max_steps}",
        "runtime.device=cpu",
        "runtime.progress=false",
        "runtime.eval_every=0",
        "runtime.ckpt_every=0",
    ]
    if recipe == "bucketed":
        return [*common, "model.frontend_input=unpadded", f"sampler.max_duration={config.max_duration}"]
    # One bucket whose longest utterance fits padded_batch_size times: a fixed batch size, shuffled.
    budget = config.padded_batch_size * max(_durations(config.train_manifest)) * (1 + 1e-6)
    return [
        *common,
        "model.frontend_input=padded",
        "sampler.num_buckets=1",
        "sampler.num_subbuckets=1",
        "sampler.method=equal_mass",
        f"sampler.max_duration={budget}",
    ]


def run_recipe(config: FinetuneBenchConfig, recipe: str, checkpoint: Path) -> dict[str, Any]:
    """Train one recipe in its own process; its summary with the bench's view of padding."""
    out = config.out_dir / recipe
    command = [sys.executable, "-m", "fastaed.cli.train", "--config", str(config.config), "--resume", "none"]
    command += recipe_overrides(config, recipe, checkpoint)
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"fastaed train ({recipe}) failed:\n{done.stderr[-3000:]}")
    s = json.loads((out / "summary.json").read_text())
    audio_s = s["audio_hours_seen"] * 3600
    input_padding = s["input_padding"]
    if recipe == "padded":  # the encoder computes 30 s per utterance, whatever the audio's length
        input_padding = 1 - audio_s / max(s["utterances_seen"] * WINDOW_S, 1e-9)
    return {
        "recipe": recipe,
        "steps": s["steps"],
        "train_time_s": s["train_time_s"],
        "wall_time_s": s["wall_time_s"],
        "audio_s": audio_s,
        "audio_s_per_s": s["audio_s_per_s"],
        "input_padding": input_padding,
        "output_padding": s["output_padding"],
        "mean_batch_size": s["mean_batch_size"],
        "peak_mem_mb": s["peak_mem_mb"],
        "dev_loss": s.get("dev_loss"),
        "dev_wer": s.get("wer"),
        "out_dir": str(out),
    }


def _checkpoint(config: FinetuneBenchConfig, tmp: Path) -> Path:
    if config.checkpoint is not None:
        return config.checkpoint
    from fastaed.formats.fetch import fetch_whisper
    from fastaed.formats.whisper_import import import_whisper

    return import_whisper(fetch_whisper(config.model), tmp / "checkpoint")


def run(config: FinetuneBenchConfig) -> dict[str, Any]:
    for path in (config.config, config.train_manifest, config.dev_manifest):
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path}: not found (the demo corpus: make demo, or fastaed synth)")
    with tempfile.TemporaryDirectory(prefix="fastaed-finetune-bench-") as tmp:
        checkpoint = _checkpoint(config, Path(tmp))
        runs = [run_recipe(config, recipe, checkpoint) for recipe in RECIPES]
    by = {r["recipe"]: r for r in runs}
    b, p = by["bucketed"], by["padded"]
    ratios = {
        "audio_s_per_s": b["audio_s_per_s"] / max(p["audio_s_per_s"], 1e-12),
        "mean_batch_size": b["mean_batch_size"] / max(p["mean_batch_size"], 1e-12),
    }
    return {
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in config.__dict__.items()},
        "checkpoint": str(config.checkpoint or config.model),
        "runs": runs,
        "ratios_bucketed_over_padded": ratios,
        "not_measured": ["Hugging Face Seq2SeqTrainer baseline (issue 15, open)"],
    }


def print_report(result: dict[str, Any]) -> None:
    header = ["recipe", "steps", "audio s/s", "in pad", "out pad", "batch", "peak MB", "dev loss", "dev WER"]
    rows = [
        [
            r["recipe"], r["steps"], f"{r['audio_s_per_s']:.2f}", pct(r["input_padding"]),
            pct(r["output_padding"]), f"{r['mean_batch_size']:.1f}", f"{r['peak_mem_mb']:.0f}",
            "-" if r["dev_loss"] is None else f"{r['dev_loss']:.3f}", pct(r["dev_wer"]),
        ]
        for r in result["runs"]
    ]  # fmt: skip
    print(f"fine-tuning {result['checkpoint']}, equal wall time per recipe")
    print(format_table(header, rows))
    r = result["ratios_bucketed_over_padded"]
    ratio = f"audio throughput {r['audio_s_per_s']:.2f}x, batch size {r['mean_batch_size']:.2f}x"
    print(f"bucketed / padded: {ratio}")
    for note in result["not_measured"]:
        print(f"not measured: {note}")
