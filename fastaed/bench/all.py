"""Every benchmark in one go: JSON + PNG into one folder, and a generated section of BENCHMARKS.md.

    fastaed bench all                       # full sizes, ~15 min on 2 cores; rewrites BENCHMARKS.md's block
    fastaed bench all --quick --out /tmp/b  # small sizes (minutes): checks the pipeline, not the numbers

Runs index, features, sampler, batch-sizes, rtfx and (when both run folders exist) convergence, each with
the arguments printed in the generated section, then replaces what lies between ``<!-- bench:all -->`` and
``<!-- /bench:all -->`` in the document (appending the markers if missing): one table per benchmark with the
command, the machine and the date. The prose around it, with the analysis of each number, is left alone.
A benchmark that fails is reported in its place and the others still run (exit status 1).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import re
import shlex
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from fastaed.bench.convergence import held_out_table, held_out_where

BEGIN, END = "<!-- bench:all -->", "<!-- /bench:all -->"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# ---- one renderer per benchmark JSON -------------------------------------------------------------------


def render_index(r: dict) -> str:
    return _table(
        ["lines", "build", "lines/s", "reload", "targets"],
        [[f"{r['lines']:,}", f"{r['build_s']:.1f} s", f"{r['lines_per_s']:,}", f"{r['reload_s']:.2f} s",
          f"≤ {r['target_build_s']:.3g} s / ≤ {r['target_reload_s']:.3g} s"]],
    )  # fmt: skip


def render_features(r: dict) -> str:
    rows = [[k, f"{v:,.0f}x"] for k, v in r["xrt_per_core"].items()]
    return _table(["stage (batch)", f"real time per core (target ≥ {r['target_xrt_per_core']}x)"], rows)


def render_sampler(r: dict) -> str:
    rows = []
    for name, dist in r["distributions"].items():
        for key, s in dist["strategies"].items():
            rows.append([name, s.get("label", key), _pct(s["input_padding"]), _pct(s["output_padding"]),
                         s["num_batches"], f"{s['mean_batch_size']:.1f}"])  # fmt: skip
    out = _table(["lengths", "strategy", "input padding", "output padding", "batches", "mean batch"], rows)
    speed = [
        [name, f"{d['speed']['ours']['epoch_batches_per_s']:,.0f}",
         f"{d['speed']['lhotse']['batches'] / d['speed']['lhotse']['epoch_s']:,.0f}"
         if d["speed"].get("lhotse") else "-"]
        for name, d in r["distributions"].items()
    ]  # fmt: skip
    out += "\n\n" + _table(["lengths", "ours batches/s per epoch", "Lhotse batches/s"], speed)
    m = r.get("one_million")
    if m:
        out += (
            f"\n\n1M utterances: plan {m['plan_s']:.2f} s, restore mid-epoch {m['restore_s']:.3f} s "
            f"(+ {m['construct_s']:.2f} s construction), identical next batch: {m['identical_next_batch']}"
        )
    return out


def render_batch_sizes(r: dict) -> str:
    h, p = r["runs"]["heuristic"], r["runs"]["profile"]
    rows = [
        ["memory fill per bucket, min / mean",
         f"{_pct(r['heuristic_min_fill'])} / {_pct(r['heuristic_mean_fill'])}",
         f"{_pct(r['profile_min_fill'])} / {_pct(r['profile_mean_fill'])}"],
        ["mean batch size (one epoch)", f"{h['epoch_mean_batch_size']:.1f}",
         f"{p['epoch_mean_batch_size']:.1f}"],
        ["audio s/s (timed steps)", f"{h.get('audio_s_per_s', 0):.1f}", f"{p.get('audio_s_per_s', 0):.1f}"],
        ["OOM splits", h.get("oom_splits"), p.get("oom_splits")],
    ]  # fmt: skip
    out = _table(["", "NeMo heuristic", "profile"], rows)
    return out + (f"\n\n{r['model']} {r['dtype']} on {r['device_name']}, budget {r['budget_gib']:.2f} GiB, "
                  f"margin {r['safety_margin']:.0%}; mean batch {r['mean_batch_ratio']:.2f}x, "
                  f"throughput {r['throughput_ratio']:.2f}x")  # fmt: skip


def render_rtfx(r: dict) -> str:
    rows = [[c["model"], f"{c['encoder_layers']}+{c['decoder_layers']}", c["batch_size"], c["dtype"],
             c["device"], f"{c['rtfx']:.1f}"] for c in r["configs"]]  # fmt: skip
    out = _table(["model", "enc+dec", "batch", "dtype", "device", "RTFx"], rows)
    ratios = ", ".join(f"{k.replace('_', ' ')} {v:.2f}x" for k, v in r["flash_vs_balanced"].items())
    out += f"\n\nflash vs balanced: {ratios}\n\n"
    rows = [[d["model"], d["batch_size"], f"{d['kv_cache_tokens_per_s']:,.0f}",
             f"{d['nemo_style_tokens_per_s']:,.0f}",
             f"{d['speedup']:.2f}x", d["identical_tokens"]] for d in r["decoders"]]  # fmt: skip
    return out + _table(
        ["decoder of", "batch", "K/V cache tok/s", "NeMo-style tok/s", "speedup", "same"], rows
    )


def render_convergence(r: dict) -> str:
    a, b = r["names"]
    rows = [
        [x["step"], _pct(x["a_wer"]), _pct(x["b_wer"]), _pct(x["a_cer"]), _pct(x["b_cer"])] for x in r["rows"]
    ]
    out = _table(["step", f"WER {a}", f"WER {b}", f"CER {a}", f"CER {b}"], rows)
    rel = r.get("relative_wer_a_vs_b")
    out += "" if rel is None else f"\n\nfinal step: {a} WER {rel:+.1%} relative to {b}"
    if r.get("held_out"):
        out += f"\n\nHeld-out sets (greedy, {held_out_where(r['held_out'])}):\n\n"
        out += _table(*held_out_table(r["held_out"], r["names"]))
    return out


# ---- the plan ------------------------------------------------------------------------------------------


def plan(
    out: Path, quick: bool, flash_run: Path, balanced_run: Path
) -> list[tuple[str, list[str], Callable[[dict], str]]]:
    """(name, argv after ``fastaed bench``, renderer) of every benchmark to run."""
    tok = ["--tokenizer", "data/tokenizer"] if Path("data/tokenizer/tokenizer.json").is_file() else []
    demo_bins = Path("data/bins.json").is_file() and tok and not quick
    if quick:
        index = ["--lines", "3000"]
        features = ["--num-utts", "4", "--seconds", "2"]
        sampler = ["--quick", "--utterances", "1000"]
        batch = ["--model", "test", "--memory-budget", "0.3", "--utterances", "1500", "--steps", "2"]
        batch += ["--warmup", "0", "--synthetic"]
        rtfx = ["--flash", "test", "--balanced", "test", "--num-utts", "3", "--max-seconds", "3"]
        rtfx += ["--batch-sizes", "2", "--decoder-batch-sizes", "1", "--decoder-tokens", "5"]
        rtfx += ["--decoder-frames", "20"]
    else:
        index, features, sampler, rtfx = [], [], [], tok
        batch = ["--model", "tiny-flash", "--ctc-weight", "0.5", *tok]
        batch += ["--bins", "data/bins.json", "--manifest", "data/default/train.jsonl"] if demo_bins else []
    steps: list[tuple[str, list[str], Callable[[dict], str]]] = [
        ("index", ["index", *index, "--json", str(out / "index.json")], render_index),
        ("features", ["features", *features, "--json-out", str(out / "features.json")], render_features),
        ("sampler", ["sampler", *sampler, "--json", str(out / "sampler.json")], render_sampler),
        ("batch_sizes", ["batch-sizes", *batch, "--no-progress", "--json", str(out / "batch_sizes.json")],
         render_batch_sizes),
        ("rtfx", ["rtfx", *rtfx, "--json", str(out / "rtfx.json")], render_rtfx),
    ]  # fmt: skip
    if (flash_run / "metrics.jsonl").is_file() and (balanced_run / "metrics.jsonl").is_file():
        argv = ["convergence", str(flash_run), str(balanced_run), "--json", str(out / "convergence.json")]
        held_out = {"in-domain": "test.jsonl", "unseen-voice": "test_unseen_voice.jsonl"}
        for name, file in held_out.items():
            if not quick and (Path("data/default") / file).is_file():
                argv += ["--eval", f"{name}=data/default/{file}"]
        steps.append(("convergence", argv, render_convergence))
    return steps


def machine() -> str:
    cuda = f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"
    return f"{platform.machine()}, {torch.get_num_threads()} threads{cuda}, torch {torch.__version__}"


def run_all(args: argparse.Namespace) -> tuple[str, bool]:
    """Run every benchmark; returns the generated markdown section and whether all succeeded."""
    from fastaed.cli.main import build_parser

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    parser = build_parser()
    date = datetime.date.today().isoformat()
    quick = " --quick" if args.quick else ""
    parts = [
        f"Generated by `fastaed bench all{quick}` on {date}; machine: {machine()}. JSON and PNG files: "
        f"`{out}/`. Quick runs check the pipeline, not the numbers."
    ]
    ok = True
    for name, argv, render in plan(out, args.quick, args.flash_run, args.balanced_run):
        command = "fastaed bench " + shlex.join(argv)
        print(f"\n==== {command}", flush=True)
        t0 = time.perf_counter()
        try:
            bench_args = parser.parse_args(["bench", *argv])
            status = bench_args.func(bench_args)
            json_path = Path(argv[argv.index("--json-out" if "--json-out" in argv else "--json") + 1])
            body = render(json.loads(json_path.read_text()))
            if status:
                body += f"\n\n(exit status {status}: a target of this benchmark was missed)"
        except Exception as err:  # one failure must not cost the other benchmarks
            traceback.print_exc()
            body, ok = f"FAILED: {type(err).__name__}: {err}", False
        parts.append(f"### {name}\n\n```\n{command}\n```\n\n{body}\n\n({time.perf_counter() - t0:.0f} s)")
    return "\n\n".join(parts), ok


def update_document(doc: Path, section: str) -> None:
    """Replace the generated block of ``doc`` (or append it with its markers)."""
    text = doc.read_text() if doc.is_file() else "# Benchmarks\n"
    block = f"{BEGIN}\n{section}\n{END}"
    if BEGIN in text and END in text:
        text = re.sub(re.escape(BEGIN) + r".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n## Latest `fastaed bench all`\n\n" + block + "\n"
    doc.write_text(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("bench_results"), help="JSON and PNG folder")
    parser.add_argument("--doc", type=Path, default=Path("BENCHMARKS.md"), help="document to update")
    parser.add_argument("--quick", action="store_true", help="small sizes: checks the pipeline in minutes")
    parser.add_argument("--flash-run", type=Path, default=Path("runs/tiny-flash"))
    parser.add_argument("--balanced-run", type=Path, default=Path("runs/tiny-balanced"))


def main(args: argparse.Namespace) -> int:
    section, ok = run_all(args)
    update_document(args.doc, section)
    print(f"\nupdated {args.doc} ({'all benchmarks ran' if ok else 'some benchmarks FAILED'})")
    return 0 if ok else 1
