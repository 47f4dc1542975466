"""``fastaed bench adapt-ablation``: which distillation loss ``fastaed adapt`` should use, decided on
adaptation data only (never on the held-out sets).

Each variant trains the same student (the original checkpoint, unpadded input) on the same targets, batches,
seed and number of optimizer steps (steps, not wall time, so the machine's load cannot decide), from the
work folder of a finished ``fastaed adapt`` (its ``train.jsonl``, ``dev.jsonl`` and teacher cache, copied
so no variant pays the teacher pass), and is scored by the trainer's final dev evaluation on ``dev.jsonl``
(clips of the adaptation audio kept out of training), greedy and unpadded.

The criterion is the student's WER against the padded original's own output on those clips: adaptation
exists to make the unpadded model behave as the padded one does, on any speech. WER against the references
is reported beside it (real and synthetic clips apart) but does not decide: on the synthetic majority it
rewards learning the synthetic domain, which is what costs a fine-tune its accuracy on real speech.

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

import yaml

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
    reuse: bool = field(
        default=False, metadata={"help": "score a variant's finished run instead of training"}
    )
    json: Path | None = field(default=None, metadata={"help": "write the results here"})


def run(config: AdaptAblationConfig) -> dict[str, Any]:
    from fastaed.train.adapt import RUN_DIR
    from fastaed.train.distill import CACHE_FILE
    from fastaed.train.teacher_labels import is_real

    unknown = sorted(set(config.variants) - set(VARIANTS))
    if unknown:
        raise ValueError(f"--variants: unknown {unknown}; expected some of {list(VARIANTS)}")
    base = config.work / RUN_DIR
    recipe, cache = base / "config.yaml", base / CACHE_FILE
    for needed in (recipe, cache):
        if not needed.is_file():
            raise FileNotFoundError(f"{needed}: run fastaed adapt first (--work {config.work})")
    teacher = Path(yaml.safe_load(recipe.read_text())["distill"]["teacher"])
    dev = config.work / "dev.jsonl"
    reference = decode(teacher, dev, "padded")  # what adaptation tries to keep: the padded original's output
    rows = [json.loads(line) for line in dev.read_text().splitlines() if line.strip()]
    real_paths = {r["audio_filepath"] for r in rows if is_real(r)}
    runs = []
    for name in config.variants:
        out = config.out_dir / name.replace("+", "_")
        t0 = time.perf_counter()
        if not (config.reuse and _finished(out, config.steps)):
            _train(name, recipe, cache, out, config.steps)
        summary = json.loads((out / "summary.json").read_text())
        student = decode(Path(summary["checkpoint"]), dev, "unpadded")
        runs.append({"variant": name, "overrides": VARIANTS[name], "steps": summary["steps"],
                     "wall_s": round(time.perf_counter() - t0, 1),
                     **agreement(student, reference, real_paths)})  # fmt: skip
    best = min(runs, key=lambda r: r["wer_vs_teacher"], default=None)
    return {
        "work": str(config.work), "steps": config.steps, "machine": platform.machine(), "dev": str(dev),
        "teacher_wer": _wer([u for u, _ in reference], [t for _, t in reference]),
        "runs": runs, "best": best["variant"] if best else None,
    }  # fmt: skip


def _finished(out: Path, steps: int) -> bool:
    summary = out / "summary.json"
    return summary.is_file() and json.loads(summary.read_text()).get("steps") == steps


def _train(name: str, recipe: Path, cache: Path, out: Path, steps: int) -> None:
    """One variant's ``fastaed train`` run in ``out`` (the teacher cache copied in, so it is not rebuilt)."""
    from fastaed.train.distill import CACHE_FILE
    from fastaed.train.setup import RUN_KIND, is_older_run
    from fastaed.util.outputs import check_output_dir, read_marker, write_marker

    check_output_dir(out, RUN_KIND, flag="--out-dir", legacy=is_older_run)
    out.mkdir(parents=True, exist_ok=True)
    if read_marker(out) is None:  # a run folder the trainer adopts, the cache already in it
        write_marker(out, RUN_KIND, "bench adapt-ablation", None)
    if name != "ce":
        shutil.copy2(cache, out / CACHE_FILE)  # same teacher, same index: the trainer reuses it
    run = [f"runtime.out_dir={out}", f"optim.max_steps={steps}", "runtime.time_budget_s=null"]
    overrides = [
        *run,
        "runtime.eval_every=0",
        "runtime.ckpt_every=0",
        "runtime.progress=false",
        *VARIANTS[name],
    ]
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
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)


def decode(checkpoint: Path, manifest: Path, shape: str) -> list[tuple[Any, str]]:
    """(utterance, greedy text) of every entry of ``manifest``, Whisper input ``shape``."""
    from fastaed.data.manifest import read_manifest
    from fastaed.decode.transcribe import DecodeConfig, Transcriber

    utts = list(read_manifest(manifest))
    config = DecodeConfig(batch_size=16, whisper_input=shape, progress=False)
    result = Transcriber(checkpoint, config).run(utts, warmup=False)
    return [(t.utterance, t.text) for t in result.transcripts]


def _wer(utts: list[Any], hyps: list[str], refs: list[str] | None = None) -> float | None:
    from fastaed.decode.scoring import word_error_rates

    refs = refs if refs is not None else [u.text for u in utts]
    keep = [i for i, r in enumerate(refs) if r.strip()]
    if not keep:
        return None
    langs = [utts[i].source_lang for i in keep]
    return word_error_rates([refs[i] for i in keep], [hyps[i] for i in keep], "whisper", langs)["wer"]


def agreement(
    student: list[tuple[Any, str]], teacher: list[tuple[Any, str]], real_paths: set[str]
) -> dict[str, Any]:
    """The student's WER against the teacher's output (the criterion) and against the references, on the
    real (``real_paths``) and the synthetic dev clips apart (Whisper normaliser)."""
    utts, hyps = [u for u, _ in student], [t for _, t in student]
    real = [i for i, u in enumerate(utts) if u.audio_filepath in real_paths]
    synthetic = [i for i, u in enumerate(utts) if u.audio_filepath not in real_paths]
    pick = lambda idx: ([utts[i] for i in idx], [hyps[i] for i in idx])  # noqa: E731
    return {
        "wer_vs_teacher": _wer(utts, hyps, [t for _, t in teacher]),
        "dev_wer": _wer(utts, hyps),
        "dev_wer_real": _wer(*pick(real)) if real else None,
        "dev_wer_synthetic": _wer(*pick(synthetic)) if synthetic else None,
        "dev_utts": len(utts), "real_utts": len(real),
    }  # fmt: skip


def print_report(result: dict[str, Any]) -> None:
    rows = [
        [r["variant"], pct(r["wer_vs_teacher"]), pct(r["dev_wer"]), pct(r["dev_wer_real"]),
         pct(r["dev_wer_synthetic"]), r["steps"]]
        for r in result["runs"]
    ]  # fmt: skip
    print(format_table(["loss", "WER vs teacher", "dev WER", "real", "synthetic", "steps"], rows))
    print(f"padded original on the same dev clips: {pct(result['teacher_wer'])}")
    print(f"closest to the padded original: {result['best']} ({result['steps']} steps each)")


def markdown(result: dict[str, Any]) -> str:
    """BENCHMARKS.md's ablation part (rendered with ``fastaed bench adapt``'s section)."""
    steps, work = result["steps"], result["work"]
    lines = [
        f"#### Which loss: ablation on adaptation data ({steps} steps each)", "",
        f"Command: `fastaed bench adapt-ablation --work {work} --steps {steps}`  ",
        "Dev clips of the adaptation audio (never the held-out sets), greedy, unpadded, Whisper normaliser. "
        "Criterion: WER against the padded original's own output (its WER against the references on the same "
        f"clips: {pct(result['teacher_wer'])}).", "",
        "| loss | WER vs padded original | dev WER | real clips | synthetic clips | steps |",
        "|---|---|---|---|---|---|",
    ]  # fmt: skip
    for r in result["runs"]:
        cells = [r["variant"], pct(r["wer_vs_teacher"]), pct(r["dev_wer"]), pct(r["dev_wer_real"]),
                 pct(r["dev_wer_synthetic"]), r["steps"]]  # fmt: skip
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines += ["", f"Closest to the padded original: **{result['best']}**."]
    return "\n".join(lines)
