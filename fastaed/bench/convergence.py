"""Convergence of two training runs on the same data: dev WER / CER / loss against optimizer steps.

Reads the ``eval`` records of each run's ``metrics.jsonl`` (written by ``fastaed train``) and its
``summary.json``, prints a table at the steps both runs evaluated, plots dev WER and dev loss against steps
(PNG) and writes JSON. The comparison the paper makes (claim 4): a deep-encoder / shallow-decoder model
reaches the accuracy of a balanced one with the same parameters, data and number of steps. Target: the
flash run's final dev WER within 10% (relative) of the balanced run's.

With ``--eval NAME=MANIFEST`` (repeatable) both runs' checkpoints at the same step — the last step both
saved, else each run's latest, flagged — are also decoded on held-out sets with the fast decoder (greedy),
so the comparison covers the test sets, not only the trainer's dev subset:

    fastaed bench convergence runs/tiny-flash runs/tiny-balanced --json bench_results/convergence.json \
        --eval in-domain=data/default/test.jsonl --eval unseen-voice=data/default/test_unseen_voice.jsonl
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastaed.train.checkpoint import find_latest, list_checkpoints
from fastaed.util.tables import format_table, pct

TARGET_RELATIVE_WER = 0.10


@dataclass(frozen=True)
class ConvergenceBenchConfig:
    """Options of ``fastaed bench convergence`` (the run folders are positional, ``--eval`` repeats)."""

    run_a: Path = field(metadata={"cli": False, "help": "run folder, e.g. runs/tiny-flash"})
    run_b: Path = field(
        metadata={"cli": False, "help": "run folder to compare against, e.g. runs/tiny-balanced"}
    )
    json: Path | None = field(default=None, metadata={"help": "write the comparison here"})
    png: Path | None = field(default=None, metadata={"help": "plot (default: next to --json)"})
    eval_sets: tuple[tuple[str, Path], ...] = field(
        default=(),
        metadata={
            "cli": False,
            "help": "also decode both runs' checkpoints at a common step on this held-out set (repeatable)",
        },
    )
    batch_size: int = field(default=32, metadata={"help": "utterances per batch for --eval"})


def read_run(run_dir: Path) -> dict[str, Any]:
    """Eval records by step, and the run summary, of one run folder."""
    metrics = run_dir / "metrics.jsonl"
    if not metrics.is_file():
        raise FileNotFoundError(f"{metrics}: not a fastaed training run (no metrics.jsonl)")
    evals: dict[int, dict[str, Any]] = {}
    for line in metrics.read_text().splitlines():
        record = json.loads(line)
        if record.get("type") == "eval":
            evals[int(record["step"])] = record  # a resumed run may repeat a step: the last one counts
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    return {"dir": str(run_dir), "evals": evals, "summary": summary}


def compare(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Rows at the common eval steps and the final-step relative WER difference (a vs b)."""
    common = sorted(set(a["evals"]) & set(b["evals"]))
    rows = []
    for step in common:
        ea, eb = a["evals"][step], b["evals"][step]
        rows.append({
            "step": step, "a_wer": ea.get("wer"), "b_wer": eb.get("wer"), "a_cer": ea.get("cer"),
            "b_cer": eb.get("cer"), "a_dev_loss": ea.get("dev_loss"), "b_dev_loss": eb.get("dev_loss"),
        })  # fmt: skip
    final = rows[-1] if rows else None
    rel = None
    if final and final["a_wer"] is not None and final["b_wer"]:
        rel = (final["a_wer"] - final["b_wer"]) / final["b_wer"]
    return {"rows": rows, "final_step": final["step"] if final else None, "relative_wer_a_vs_b": rel}


def paired_checkpoints(a_dir: Path, b_dir: Path) -> tuple[int | None, Path, Path]:
    """(step, checkpoint of a, checkpoint of b) at the last step both runs saved; step None if they share
    none (each run's latest checkpoint then, which the report flags)."""
    a, b = dict(list_checkpoints(a_dir)), dict(list_checkpoints(b_dir))
    common = sorted(set(a) & set(b))
    if common:
        return common[-1], a[common[-1]], b[common[-1]]
    latest_a, latest_b = find_latest(a_dir), find_latest(b_dir)
    for run, latest in ((a_dir, latest_a), (b_dir, latest_b)):
        if latest is None:
            raise FileNotFoundError(f"{run}: no complete checkpoint to evaluate on the held-out sets")
    return None, latest_a, latest_b  # type: ignore[return-value]


def evaluate_held_out(
    checkpoints: dict[str, Path], sets: Sequence[tuple[str, Path]], batch_size: int = 32
) -> list[dict[str, Any]]:
    """Greedy WER / CER / RTFx of each checkpoint on each held-out manifest (bad input is an error)."""
    from fastaed.data.errors import BadInputReport
    from fastaed.decode.scoring import score
    from fastaed.decode.transcribe import DecodeConfig, Transcriber, utterances_from_manifest

    rows = []
    for model_name, ckpt in checkpoints.items():
        transcriber = Transcriber(ckpt, DecodeConfig(batch_size=batch_size, progress=False))
        for set_name, manifest in sets:
            result = transcriber.run(utterances_from_manifest(manifest, "error", BadInputReport()))
            scores = score(result.transcripts)
            rows.append({
                "model": model_name, "set": set_name, "manifest": str(manifest), "checkpoint": str(ckpt),
                "utterances": scores["utterances"], "wer": scores["wer"], "cer": scores["cer"],
                "rtfx": result.rtfx,
            })  # fmt: skip
    return rows


def plot(a: dict[str, Any], b: dict[str, Any], names: tuple[str, str], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_wer, ax_loss) = plt.subplots(1, 2, figsize=(11, 4))
    for run, name in zip((a, b), names):
        steps = sorted(run["evals"])
        ax_wer.plot(
            steps, [100 * (run["evals"][s].get("wer") or float("nan")) for s in steps], "o-", label=name
        )
        ax_loss.plot(steps, [run["evals"][s].get("dev_loss") for s in steps], "o-", label=name)
    ax_wer.set(xlabel="optimizer step", ylabel="dev WER (%)", title="dev WER (greedy)")
    ax_loss.set(xlabel="optimizer step", ylabel="dev loss (nats/token)", title="dev loss")
    for ax in (ax_wer, ax_loss):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run(config: ConvergenceBenchConfig) -> dict[str, Any]:
    """Compare the two runs (and decode the held-out sets); writes the plot (``png``, else beside
    ``json``). Returns the JSON-able comparison."""
    a, b = read_run(config.run_a), read_run(config.run_b)
    names = (
        a["summary"].get("model") or config.run_a.name,
        b["summary"].get("model") or config.run_b.name,
    )
    if names[0] == names[1]:  # two runs of one model (another lr, another seed): name them by folder
        names = (f"{names[0]} ({config.run_a.name})", f"{names[1]} ({config.run_b.name})")
    result = compare(a, b)
    held_out: dict[str, Any] | None = None
    if config.eval_sets:
        step, ckpt_a, ckpt_b = paired_checkpoints(config.run_a, config.run_b)
        ckpts = {names[0]: ckpt_a, names[1]: ckpt_b}
        rows = evaluate_held_out(ckpts, config.eval_sets, config.batch_size)
        held_out = {"step": step, "checkpoints": {names[0]: str(ckpt_a), names[1]: str(ckpt_b)}, "rows": rows}
    doc = {
        "runs": {names[0]: {"dir": a["dir"], "summary": _brief(a["summary"])},
                 names[1]: {"dir": b["dir"], "summary": _brief(b["summary"])}},
        "names": list(names), **result, "target_relative_wer": TARGET_RELATIVE_WER, "held_out": held_out,
    }  # fmt: skip
    png = config.png or (config.json.with_suffix(".png") if config.json else None)
    if png is not None:
        doc["png"] = str(plot(a, b, names, png))
    return doc


def print_report(result: dict[str, Any]) -> None:
    """The step table, each run's summary, the verdict against the target, the held-out table."""
    names = result["names"]
    rows = [
        [r["step"], pct(r["a_wer"]), pct(r["b_wer"]), pct(r["a_cer"]), pct(r["b_cer"]),
         f"{r['a_dev_loss']:.3f}", f"{r['b_dev_loss']:.3f}"]
        for r in result["rows"]
    ]  # fmt: skip
    header = ["step", f"WER {names[0]}", f"WER {names[1]}", f"CER {names[0]}", f"CER {names[1]}",
              f"loss {names[0]}", f"loss {names[1]}"]  # fmt: skip
    print(format_table(header, rows))
    for name in names:
        s = result["runs"][name]["summary"]
        if any(v is not None for v in s.values()):  # the run wrote a summary.json
            print(f"{name}: {s['steps']} steps, {(s['wall_time_s'] or 0) / 60:.1f} min, "
                  f"{s['audio_s_per_s'] or 0:.1f} audio s/s, "
                  f"{(s['params'] or 0) / 1e6:.2f}M params")  # fmt: skip
    rel = result["relative_wer_a_vs_b"]
    if rel is not None:
        verdict = "PASS" if rel <= TARGET_RELATIVE_WER else "FAIL"
        print(f"final step {result['final_step']}: {names[0]} WER {rel:+.1%} relative to {names[1]} "
              f"(target <= +{TARGET_RELATIVE_WER:.0%}: {verdict})")  # fmt: skip
    if held_out := result["held_out"]:
        print(format_table(*held_out_table(held_out, names)))
        print(f"(greedy, fast decoder; {held_out_where(held_out)})")
    if "png" in result:
        print(f"wrote {result['png']}")


def held_out_table(held_out: dict[str, Any], names: Sequence[str]) -> tuple[list[str], list[list[Any]]]:
    """(header, rows) with one row per held-out set: WER / CER of both models side by side."""
    by = {(r["set"], r["model"]): r for r in held_out["rows"]}
    a, b = names
    rows = [
        [s, by[s, a]["utterances"], pct(by[s, a]["wer"]), pct(by[s, b]["wer"]), pct(by[s, a]["cer"]),
         pct(by[s, b]["cer"])]
        for s in dict.fromkeys(r["set"] for r in held_out["rows"])
    ]  # fmt: skip
    return ["held-out set", "utts", f"WER {a}", f"WER {b}", f"CER {a}", f"CER {b}"], rows


def held_out_where(held_out: dict[str, Any]) -> str:
    """Which checkpoints were compared: a common step, or (flagged) each run's latest."""
    if held_out["step"] is not None:
        return f"both at step {held_out['step']}"
    latest = ", ".join(f"{k} {v}" for k, v in held_out["checkpoints"].items())
    return f"WARNING: the runs share no checkpoint step; each run's latest: {latest}"


def _brief(summary: dict[str, Any]) -> dict[str, Any]:
    keys = ("model", "params", "steps", "wall_time_s", "wer", "cer", "dev_loss", "audio_s_per_s", "device")
    return {k: summary.get(k) for k in keys}
