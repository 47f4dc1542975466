"""``fastaed bench adapt-ablation``: which distillation loss ``fastaed adapt`` should use, decided on
adaptation data only (never on the held-out sets).

Each variant trains the same student (the original checkpoint, unpadded input) on the same targets, batches,
seed and number of optimizer steps (steps, not wall time, so the machine's load cannot decide), from the
work folder of a finished ``fastaed adapt`` (its ``train.jsonl``, ``dev.jsonl`` and teacher cache, copied
so no variant pays the teacher pass), and is scored by the trainer's final dev evaluation on ``dev.jsonl``
(clips of the adaptation audio kept out of training): greedy WER, unpadded.

Variants (``distill.*`` weights):

* ``kl+state`` (``fastaed adapt``'s default): KL to the teacher's token distributions + L2 to its final
  decoder states;
* ``kl``: KL alone (distil-whisper's word-level term);
* ``state``: L2 alone (FUTO's whisper-acft matches decoder states);
* ``ce``: no teacher at all, cross-entropy on the targets (an ordinary unpadded fine-tune).
"""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastaed.util.tables import format_table, pct

VARIANTS: dict[str, list[str]] = {
    "kl+state": ["distill.kl_weight=1.0", "distill.state_weight=1.0", "distill.ce_weight=0.0"],
    "kl": ["distill.kl_weight=1.0", "distill.state_weight=0.0", "distill.ce_weight=0.0"],
    "state": ["distill.kl_weight=0.0", "distill.state_weight=1.0", "distill.ce_weight=0.0"],
    "ce": ["distill.teacher=null"],
}


@dataclass(frozen=True)
class AdaptAblationConfig:
    """Options of ``fastaed bench adapt-ablation``."""

    work: Path = field(
        default=Path("runs/adapted-tiny.en.work"),
        metadata={"help": "work folder of a finished fastaed adapt"},
    )
    variants: tuple[str, ...] = field(default=tuple(VARIANTS), metadata={"help": "loss variants to train"})
    steps: int = field(default=150, metadata={"help": "optimizer steps of each variant"})
    out_dir: Path = field(default=Path("runs/adapt-ablation"), metadata={"help": "the variants' runs"})
    json: Path | None = field(default=None, metadata={"help": "write the results here"})


def run(config: AdaptAblationConfig) -> dict[str, Any]:
    from fastaed.train.adapt import RUN_DIR
    from fastaed.train.distill import CACHE_FILE
    from fastaed.train.setup import RUN_KIND, is_older_run
    from fastaed.util.outputs import check_output_dir, read_marker, write_marker

    unknown = sorted(set(config.variants) - set(VARIANTS))
    if unknown:
        raise ValueError(f"--variants: unknown {unknown}; expected some of {list(VARIANTS)}")
    base = config.work / RUN_DIR
    recipe, cache = base / "config.yaml", base / CACHE_FILE
    for needed in (recipe, cache):
        if not needed.is_file():
            raise FileNotFoundError(f"{needed}: run fastaed adapt first (--work {config.work})")
    runs = []
    for name in config.variants:
        out = config.out_dir / name.replace("+", "_")
        check_output_dir(out, RUN_KIND, flag="--out-dir", legacy=is_older_run)
        out.mkdir(parents=True, exist_ok=True)
        if read_marker(out) is None:  # a run folder the trainer adopts, the cache already in it
            write_marker(out, RUN_KIND, "bench adapt-ablation", None)
        if name != "ce":
            shutil.copy2(cache, out / CACHE_FILE)  # same teacher, same index: the trainer reuses it
        run = [f"runtime.out_dir={out}", f"optim.max_steps={config.steps}", "runtime.time_budget_s=null"]
        overrides = [*run, "runtime.eval_every=0", "runtime.ckpt_every=0", "runtime.progress=false"]
        overrides += VARIANTS[name]
        command = [
            sys.executable,
            "-m",
            "fastaed.cli.train",
            "--config",
            str(recipe),
            *overrides,
            "--resume",
            "none",
        ]
        t0 = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        summary = json.loads((out / "summary.json").read_text())
        runs.append({"variant": name, "overrides": VARIANTS[name], "dev_wer": summary.get("wer"),
                     "dev_cer": summary.get("cer"), "dev_utts": summary.get("wer_utts"),
                     "steps": summary["steps"], "wall_s": round(time.perf_counter() - t0, 1)})  # fmt: skip
    best = min((r for r in runs if r["dev_wer"] is not None), key=lambda r: r["dev_wer"], default=None)
    return {
        "work": str(config.work),
        "steps": config.steps,
        "machine": f"{platform.machine()}",
        "runs": runs,
        "best": best["variant"] if best else None,
    }


def print_report(result: dict[str, Any]) -> None:
    rows = [
        [r["variant"], pct(r["dev_wer"]), pct(r["dev_cer"]), r["dev_utts"], r["steps"]]
        for r in result["runs"]
    ]
    print(format_table(["loss", "dev WER", "dev CER", "dev utts", "steps"], rows))
    print(f"best on the adaptation dev set: {result['best']} ({result['steps']} steps each)")


def markdown(result: dict[str, Any]) -> str:
    """BENCHMARKS.md's ablation part (rendered with ``fastaed bench adapt``'s section)."""
    steps, work = result["steps"], result["work"]
    lines = [
        f"#### Which loss: ablation on adaptation data ({steps} steps each)", "",
        f"Command: `fastaed bench adapt-ablation --work {work} --steps {steps}`  ",
        "Scored by the trainer's dev evaluation on the adaptation dev clips (never the held-out sets): "
        "greedy, unpadded, basic normaliser.", "",
        "| loss | dev WER | dev CER | dev clips | steps |", "|---|---|---|---|---|",
    ]  # fmt: skip
    for r in result["runs"]:
        cells = [r["variant"], pct(r["dev_wer"]), pct(r["dev_cer"]), r["dev_utts"], r["steps"]]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines += ["", f"Lowest dev WER: **{result['best']}**."]
    return "\n".join(lines)
