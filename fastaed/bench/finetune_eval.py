"""What ``fastaed bench finetune`` measures after training: WER of a checkpoint on a set, under a chosen
Whisper input (30 s padded or the real frames only), and the learning curves of the recipes against time.

Every model is decoded by the same code (fastaed's greedy transcriber, Whisper's suppression rules, the
Whisper text normaliser before WER), so the recipes differ only in the weights they produced. A model is
scored on in-domain dev data in the input shape it was trained with; the real-speech sets (never trained on)
are scored under both shapes where the question is what unpadded inference costs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

WhisperInput = Literal["padded", "unpadded"]
NORMALIZER = "whisper"


def spread_subset(items: list, limit: int) -> list:
    """At most ``limit`` items spread evenly over ``items`` (all of them when ``limit`` is 0 or larger).

    Evenly spread, not the first N: manifests are often ordered by speaker or prompt family, and a prefix
    would score one of them only."""
    if limit <= 0 or limit >= len(items):
        return list(items)
    return [items[(i * len(items)) // limit] for i in range(limit)]


def score_checkpoint(
    checkpoint: Path,
    manifest: Path,
    whisper_input: WhisperInput,
    max_utts: int,
    batch_size: int = 16,
) -> dict[str, Any]:
    """Greedy WER/CER of ``checkpoint`` on (a spread subset of) ``manifest``; RTFx and bad-input skips.

    The caller sets the torch thread count (the bench runs every decode under the same one)."""
    from fastaed.data.errors import BadInputReport
    from fastaed.decode.scoring import score
    from fastaed.decode.transcribe import DecodeConfig, Transcriber, utterances_from_manifest

    report = BadInputReport()
    utts = spread_subset(utterances_from_manifest(manifest, "skip", report), max_utts)
    config = DecodeConfig(
        batch_size=batch_size, device="cpu", dtype="fp32", progress=False, whisper_input=whisper_input
    )
    result = Transcriber(checkpoint, config).run(utts, on_bad_input="skip")
    report.merge(result.skipped)
    scores = score(result.transcripts, NORMALIZER)
    return {
        "manifest": str(manifest),
        "input": whisper_input,
        "utterances": scores["utterances"],
        "wer": scores["wer"],
        "cer": scores["cer"],
        "rtfx": result.rtfx,
        "skipped": report.to_dict(),
    }


# ---- learning curves ---------------------------------------------------------------------------------------


def fastaed_curve(run_dir: Path) -> list[tuple[float, float]]:
    """(training seconds so far, loss) per step of a ``fastaed train`` run (its ``metrics.jsonl``)."""
    points, elapsed = [], 0.0
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record.get("type") != "train" or record.get("loss") is None:
            continue
        elapsed += float(record["step_time_s"])
        points.append((elapsed, float(record["loss"])))
    return points


def hf_curve(run_dir: Path) -> list[tuple[float, float]]:
    """(training seconds so far, loss) per step of the Hugging Face runner (its ``metrics.jsonl``)."""
    points = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record.get("loss") is not None:
            points.append((float(record["elapsed_s"]), float(record["loss"])))
    return points


def _smooth(values: list[float], window: int) -> list[float]:
    """Trailing mean over ``window`` steps (per-step losses of different batches are noisy)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def plot_curves(curves: dict[str, list[tuple[float, float]]], labels: dict[str, str], png: Path) -> Path:
    """Training loss of each recipe against training wall time (smoothed), one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for name, points in curves.items():
        if not points:
            continue
        times, losses = zip(*points, strict=True)
        window = max(1, len(points) // 20)
        ax.plot([t / 60 for t in times], _smooth(list(losses), window), label=labels.get(name, name))
    ax.set_xlabel("training wall time (min)")
    ax.set_ylabel("training loss per target token (smoothed)")
    ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend()
    ax.set_title("Fine-tuning Whisper: loss against wall time, same weights, data and threads")
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


# ---- BENCHMARKS.md section ---------------------------------------------------------------------------------

SECTION_BEGIN = "<!-- bench finetune: begin (written by fastaed bench finetune --markdown) -->"
SECTION_END = "<!-- bench finetune: end -->"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def markdown_section(result: dict[str, Any], labels: dict[str, str], command: str, png: str) -> str:
    """The measured tables of one ``fastaed bench finetune`` run as Markdown (between the section markers)."""
    lines = [
        SECTION_BEGIN,
        f"Command: `{command}`  ",
        f"Machine: {result.get('machine', '?')}; {result['threads']} threads per run; "
        f"checkpoint {result['checkpoint']}; "
        f"{result['config']['time_budget_s']:.0f} s of training per recipe on "
        f"{', '.join(f'`{m}`' for m in result['config']['train_manifests'])}.",
        "",
        "| recipe | steps | audio s/s | input padding | output padding | mean batch | peak MB | dev WER |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["runs"]:
        lines.append(
            f"| {labels[r['recipe']]} | {r['steps']} | {r['audio_s_per_s']:.2f} | "
            f"{_pct(r['input_padding'])} | {_pct(r['output_padding'])} | {r['mean_batch_size']:.1f} | "
            f"{r['peak_mem_mb']:.0f} | "
            f"{_pct(r['dev_wer'])} ({r['dev_input']}) |"
        )
    original = result["original_dev_wer"]
    lines.append(
        f"| original, no fine-tuning | 0 | - | - | - | - | - | {_pct(original['padded'])} (padded), "
        f"{_pct(original['unpadded'])} (unpadded) |"
    )
    lines.append("")
    for name, c in result["comparisons"].items():
        met = "met" if c["throughput_met"] else "**missed**"
        wer = "equal or better" if c["dev_wer_equal_or_better"] else "**worse**"
        lines.append(
            f"- bucketed / {labels[name]}: audio throughput **{c['audio_s_per_s']:.2f}x** (target "
            f"≥ {c['throughput_target']:.0f}x: {met}), mean batch {c['mean_batch_size']:.2f}x, dev WER {wer}."
        )
    for name, why in result["skipped_recipes"].items():
        lines.append(f"- not run: {name} ({why}).")
    for manifest in result.get("real_sets_missing", []):
        lines.append(f"- real set not scored: `{manifest}` does not exist.")
    if result["real_speech"]:
        lines += ["", "Real speech, never trained on (greedy, Whisper normaliser):", ""]
        lines += ["| set | model | input | utts | WER | RTFx |", "|---|---|---|---:|---:|---:|"]
        for r in result["real_speech"]:
            lines.append(
                f"| {Path(r['manifest']).name} | {r['model']} | {r['input']} | {r['utterances']} | "
                f"{_pct(r['wer'])} | {r['rtfx']:.1f} |"
            )
        lines.append("")
        for manifest, v in result["real_speech_verdict"].items():
            for recipe, r in v.get("by_recipe", {}).items():
                met = "met" if r["met"] else "**missed**"
                lines.append(
                    f"- {Path(manifest).name}: fine-tuned ({recipe}) unpadded − original padded = "
                    f"{r['points']:+.1f} points (target ≤ +1: {met})."
                )
    lines += ["", f"![learning curves]({png})", SECTION_END]
    return "\n".join(lines)


def update_markdown(path: Path, section: str, heading: str) -> None:
    """Replace the marked section of ``path`` (or append it under ``heading`` the first time)."""
    text = path.read_text() if path.is_file() else ""
    if SECTION_BEGIN in text and SECTION_END in text:
        before, rest = text.split(SECTION_BEGIN, 1)
        after = rest.split(SECTION_END, 1)[1]
        text = before + section + after
    else:
        text = text.rstrip("\n") + f"\n\n{heading}\n\n{section}\n"
    path.write_text(text)
