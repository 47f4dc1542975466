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

import datetime
import json
import platform
import re
import shlex
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from fastaed.bench.convergence import held_out_table, held_out_where
from fastaed.util.tables import pct

BEGIN, END = "<!-- bench:all -->", "<!-- /bench:all -->"


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
            rows.append([name, s.get("label", key), pct(s["input_padding"], 2), pct(s["output_padding"], 2),
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
         f"{pct(r['heuristic_min_fill'], 2)} / {pct(r['heuristic_mean_fill'], 2)}",
         f"{pct(r['profile_min_fill'], 2)} / {pct(r['profile_mean_fill'], 2)}"],
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
        [x["step"], pct(x["a_wer"], 2), pct(x["b_wer"], 2), pct(x["a_cer"], 2), pct(x["b_cer"], 2)]
        for x in r["rows"]
    ]
    out = _table(["step", f"WER {a}", f"WER {b}", f"CER {a}", f"CER {b}"], rows)
    rel = r.get("relative_wer_a_vs_b")
    out += "" if rel is None else f"\n\nfinal step: {a} WER {rel:+.1%} relative to {b}"
    if r.get("held_out"):
        out += f"\n\nHeld-out sets (greedy, {held_out_where(r['held_out'])}):\n\n"
        out += _table(*held_out_table(r["held_out"], r["names"]))
    return out


# ---- the plan ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One benchmark of the plan: ``flags`` are the config fields set, in the order the command shows them."""

    title: str  # section heading and JSON file stem
    command: str  # `fastaed bench COMMAND`
    config_class: type
    flags: dict[str, Any]
    render: Callable[[dict], str]

    @property
    def config(self) -> Any:
        return self.config_class(**self.flags)

    def argv(self) -> list[str]:
        """The command-line words of ``flags`` (the CLI's rule: field ``a_b`` is ``--a-b``; booleans are
        ``--x`` / ``--no-x``; convergence's run folders are positional and its held-out sets ``--eval``)."""
        words = [self.command]
        for name, value in self.flags.items():
            flag = "--" + name.replace("_", "-")
            if name in ("run_a", "run_b"):
                words.append(str(value))
            elif name == "eval_sets":
                words += [w for set_name, path in value for w in ("--eval", f"{set_name}={path}")]
            elif isinstance(value, bool):
                words.append(flag if value else "--no-" + flag[2:])
            elif isinstance(value, tuple):
                words += [flag, *(_word(v) for v in value)]
            else:
                words += [flag, _word(value)]
        return words


def _word(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def plan(out: Path, quick: bool, flash_run: Path, balanced_run: Path) -> list[Step]:
    """Every benchmark to run, with its flags; each writes ``out/TITLE.json``."""
    from fastaed.bench import batch_sizes, convergence, features, index, rtfx, sampler

    tok = {"tokenizer": Path("data/tokenizer")} if Path("data/tokenizer/tokenizer.json").is_file() else {}
    demo_bins = Path("data/bins.json").is_file() and tok and not quick
    index_flags: dict[str, Any] = {}
    features_flags: dict[str, Any] = {}
    sampler_flags: dict[str, Any] = {}
    if quick:
        index_flags = {"lines": 3000}
        features_flags = {"num_utts": 4, "seconds": 2.0}
        sampler_flags = {"quick": True, "utterances": 1000}
        batch = {"model": "test", "memory_budget": "0.3", "utterances": 1500, "steps": 2, "warmup": 0}
        batch |= {"synthetic": True}
        rtfx_flags = {"flash": "test", "balanced": "test", "num_utts": 3, "max_seconds": 3.0}
        rtfx_flags |= {"batch_sizes": (2,), "decoder_batch_sizes": (1,), "decoder_tokens": 5}
        rtfx_flags |= {"decoder_frames": 20}
    else:
        rtfx_flags = dict(tok)
        batch = {"model": "tiny-flash", "ctc_weight": 0.5, **tok}
        if demo_bins:
            batch |= {"bins": Path("data/bins.json"), "manifest": Path("data/default/train.jsonl")}
    batch |= {"progress": False}

    def at(title: str) -> dict[str, Path]:  # the JSON of section `title`
        return {"json": out / f"{title}.json"}

    steps = [
        Step("index", "index", index.IndexBenchConfig, index_flags | at("index"), render_index),
        Step("features", "features", features.FeaturesBenchConfig, features_flags | at("features"),
             render_features),
        Step("sampler", "sampler", sampler.SamplerBenchConfig, sampler_flags | at("sampler"),
             render_sampler),
        Step("batch_sizes", "batch-sizes", batch_sizes.BatchSizesBenchConfig, batch | at("batch_sizes"),
             render_batch_sizes),
        Step("rtfx", "rtfx", rtfx.RtfxBenchConfig, rtfx_flags | at("rtfx"), render_rtfx),
    ]  # fmt: skip
    if (flash_run / "metrics.jsonl").is_file() and (balanced_run / "metrics.jsonl").is_file():
        flags = {"run_a": flash_run, "run_b": balanced_run} | at("convergence")
        held_out = {"in-domain": "test.jsonl", "unseen-voice": "test_unseen_voice.jsonl"}
        sets = tuple((name, Path("data/default") / file) for name, file in held_out.items())
        sets = tuple((name, path) for name, path in sets if not quick and path.is_file())
        flags |= {"eval_sets": sets} if sets else {}
        steps.append(Step("convergence", "convergence", convergence.ConvergenceBenchConfig, flags,
                          render_convergence))  # fmt: skip
    return steps


def machine() -> str:
    cuda = f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"
    return f"{platform.machine()}, {torch.get_num_threads()} threads{cuda}, torch {torch.__version__}"


def execute(module: ModuleType, config: Any) -> tuple[dict[str, Any], int]:
    """What ``fastaed bench NAME`` does with a config: run, write the JSON (when the config has a ``json``
    path), print the report; returns the result and the exit status (``module.exit_status`` if any)."""
    result = module.run(config)
    path = getattr(config, "json", None)
    if path is not None:  # written before the report: a failing report never costs the measurement
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2, default=float) + "\n")  # default: numpy scalars
        print(f"wrote {path}", file=sys.stderr)  # stderr: some reports end with a JSON line on stdout
    module.print_report(result)
    status = module.exit_status(result, config) if hasattr(module, "exit_status") else 0
    return result, status


@dataclass(frozen=True)
class AllBenchConfig:
    """Options of ``fastaed bench all``."""

    out: Path = field(default=Path("bench_results"), metadata={"help": "JSON and PNG folder"})
    doc: Path = field(default=Path("BENCHMARKS.md"), metadata={"help": "document to update"})
    quick: bool = field(default=False, metadata={"help": "small sizes: checks the pipeline in minutes"})
    flash_run: Path = field(
        default=Path("runs/tiny-flash"), metadata={"help": "run folder of the flash model"}
    )
    balanced_run: Path = field(
        default=Path("runs/tiny-balanced"), metadata={"help": "run folder of the balanced model"}
    )


def run(config: AllBenchConfig) -> dict[str, Any]:
    """Run every benchmark and rewrite the document's generated section; returns the section, the document
    and whether every benchmark ran (a failure is reported in its place and the others still run)."""
    out = config.out
    out.mkdir(parents=True, exist_ok=True)
    date = datetime.date.today().isoformat()
    quick = " --quick" if config.quick else ""
    parts = [
        f"Generated by `fastaed bench all{quick}` on {date}; machine: {machine()}. JSON and PNG files: "
        f"`{out}/`. Quick runs check the pipeline, not the numbers."
    ]
    ok = True
    for step in plan(out, config.quick, config.flash_run, config.balanced_run):
        command = "fastaed bench " + shlex.join(step.argv())
        print(f"\n==== {command}", flush=True)
        t0 = time.perf_counter()
        try:
            _, status = execute(sys.modules[step.config_class.__module__], step.config)
            body = step.render(json.loads(step.flags["json"].read_text()))
            if status:
                body += f"\n\n(exit status {status}: a target of this benchmark was missed)"
        except Exception as err:  # one failure must not cost the other benchmarks
            traceback.print_exc()
            body, ok = f"FAILED: {type(err).__name__}: {err}", False
        parts.append(
            f"### {step.title}\n\n```\n{command}\n```\n\n{body}\n\n({time.perf_counter() - t0:.0f} s)"
        )
    section = "\n\n".join(parts)
    update_document(config.doc, section)
    return {"doc": str(config.doc), "ok": ok, "section": section}


def print_report(result: dict[str, Any]) -> None:
    print(f"\nupdated {result['doc']} ({'all benchmarks ran' if result['ok'] else 'some benchmarks FAILED'})")


def exit_status(result: dict[str, Any], config: AllBenchConfig) -> int:
    return 0 if result["ok"] else 1


def update_document(doc: Path, section: str) -> None:
    """Replace the generated block of ``doc`` (or append it with its markers)."""
    text = doc.read_text() if doc.is_file() else "# Benchmarks\n"
    block = f"{BEGIN}\n{section}\n{END}"
    if BEGIN in text and END in text:
        text = re.sub(re.escape(BEGIN) + r".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n## Latest `fastaed bench all`\n\n" + block + "\n"
    doc.write_text(text)
