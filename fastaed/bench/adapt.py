"""Whisper adapted to unpadded input (``fastaed adapt``) on held-out real speech: does it keep the padded
original's accuracy without looping, and how much faster than faster-whisper is it?

For one Whisper model (``--model tiny.en``: the English held-out sets; ``--model base``: also the Spanish and
French Asterisk prompts, each decoded in its manifest's ``source_lang``), on every held-out set
(``fastaed.data.heldout``; all clips unless ``--max-clips-per-set``), four systems, each at every
``--batch-sizes``:

* (a) the original checkpoint, padded input (30 s windows, as Whisper was trained; loop guard off);
* (b) the original, unpadded input (the encoder sees only the real frames; loop guard on);
* (c) the adapted checkpoint (``--adapted``, ``fastaed adapt``'s output), unpadded, loop guard on;
* (d) faster-whisper ``float32`` on the same release's CTranslate2 weights, its default padding
  (``.venv-whisper``, ``make whisper-venv``; without it these cells say so and are skipped).

All greedy, no timestamps, the same CPU thread count (``--threads``) for both engines. Timing and warm-up as
in ``fastaed bench whisper`` (model load and one warm-up batch excluded). WER after the ``whisper``
normaliser: Whisper's English one on English sets, its basic one with accents removed on the others.

Loops: ``guard`` counts the outputs fastaed's loop guard ended (fastaed rows); ``runaway`` counts, for every
row, transcripts that look like a loop when re-tokenised with the model's tokenizer: more tokens than the
guard's cap (6.5 tokens per audio second, plus its slack of 10 tokens so that a one-second prompt with a long
number is not one) or a unit of tokens repeated at the end as the guard detects it. An output the guard cut
counts as a guard loop, not as a runaway. The load average is recorded before and after each run, and the
adaptation's wall time and steps are read from ``DIR/adapt_summary.json``.

Targets (issue 28): adapted WER within +0.5 points of the padded original's on every set, RTFx >= 3x
faster-whisper's at batch 1 and 16, no loops.
"""

from __future__ import annotations

import collections
import os
import shlex
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from fastaed.bench import whisper as wb
from fastaed.util.tables import format_table, pct

if TYPE_CHECKING:
    from fastaed.bench.whisper import Clip

TARGET_WER_POINTS = 0.5  # adapted minus padded-original WER, per set, at most
TARGET_RTFX_VS_PEER = 3.0  # adapted RTFx over faster-whisper float32's, at batch 1 and 16, at least
TARGET_LOOPS = 0
WINDOW_S = 30.0  # one Whisper window: longer held-out clips are left out (counted)
SET_LANGUAGES = {"pocketsphinx": "en", "asterisk": "en", "asterisk_es": "es", "asterisk_fr": "fr"}
MODEL_LANGUAGES = {"tiny.en": frozenset({"en"}), "base": frozenset({"en", "es", "fr"})}
SUMMARY_FILE = "adapt_summary.json"
NO_PEER = "faster-whisper not run: no .venv-whisper (make whisper-venv)"


@dataclass(frozen=True)
class System:
    """One row of the comparison."""

    key: str  # a, b, c, d
    label: str
    engine: Literal["fastaed", "faster-whisper"]
    checkpoint: Literal["original", "adapted"]
    input: Literal["padded", "unpadded"]


SYSTEMS = (
    System("a", "original, padded", "fastaed", "original", "padded"),
    System("b", "original, unpadded", "fastaed", "original", "unpadded"),
    System("c", "adapted, unpadded", "fastaed", "adapted", "unpadded"),
    System("d", "faster-whisper float32", "faster-whisper", "original", "padded"),
)


@dataclass(frozen=True)
class AdaptBenchConfig:
    """Options of ``fastaed bench adapt``."""

    original: Path = field(metadata={"help": "the imported Whisper checkpoint (fastaed import whisper)"})
    adapted: Path = field(metadata={"help": "fastaed adapt's output folder (with adapt_summary.json)"})
    model: Literal["tiny.en", "base"] = field(
        default="tiny.en", metadata={"help": "the Whisper release both came from (faster-whisper's weights)"}
    )
    data_dir: Path = field(default=Path("data/real"), metadata={"help": "folder of the held-out sets"})
    sets: tuple[str, ...] = field(
        default=(), metadata={"help": "held-out sets (default: every one in the model's languages)"}
    )
    batch_sizes: tuple[int, ...] = field(default=(1, 16), metadata={"help": "batch sizes to time"})
    threads: int = field(default=2, metadata={"help": "CPU threads for both engines"})
    max_clips_per_set: int | None = field(
        default=None, metadata={"help": "clips per set, evenly chosen (default: all)"}
    )
    peer: bool = field(default=True, metadata={"help": "run faster-whisper (.venv-whisper)"})
    json: Path | None = field(default=None, metadata={"help": "write the results here"})

    def __post_init__(self) -> None:
        languages = MODEL_LANGUAGES[self.model] if self.model in MODEL_LANGUAGES else None
        if languages is None:
            raise ValueError(f"--model must be one of {', '.join(MODEL_LANGUAGES)}, got {self.model!r}")
        for name in self.sets:
            if name not in SET_LANGUAGES:
                raise ValueError(f"--sets: unknown set {name!r}; expected some of {', '.join(SET_LANGUAGES)}")
            if SET_LANGUAGES[name] not in languages:
                raise ValueError(
                    f"--sets: {name} is {SET_LANGUAGES[name]!r} speech; {self.model} is English only"
                )
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise ValueError(f"--batch-sizes must be positive, got {self.batch_sizes}")
        if self.threads < 1:
            raise ValueError(f"--threads must be at least 1, got {self.threads}")
        if self.max_clips_per_set is not None and self.max_clips_per_set < 1:
            raise ValueError(f"--max-clips-per-set must be at least 1, got {self.max_clips_per_set}")


# ---- inputs ------------------------------------------------------------------------------------------------


def held_out_sets(data_dir: Path, languages: set[str]) -> dict[str, Path]:
    """Name -> manifest of the held-out real-speech sets in ``languages`` (``fastaed.data.heldout``)."""
    from fastaed.data.heldout import heldout_manifests

    return heldout_manifests(data_dir, languages)


def _choose_sets(config: AdaptBenchConfig) -> dict[str, Path]:
    """Name -> held-out manifest of each set to score (``--sets``, else every set in the model's languages);
    a missing one is an error saying what writes it."""
    from fastaed.data.heldout import HELDOUT_SETS

    languages = MODEL_LANGUAGES[config.model]
    available = held_out_sets(config.data_dir, set(languages))
    wanted = config.sets or tuple(n for n, lang in SET_LANGUAGES.items() if lang in languages)
    missing = [n for n in wanted if n not in available or not Path(available[n]).is_file()]
    if missing:
        files = ", ".join(str(available.get(n, config.data_dir / HELDOUT_SETS[n])) for n in missing)
        raise FileNotFoundError(
            f"held-out set(s) {', '.join(missing)} not found: {files} (`fastaed data real-check --out "
            f"{config.data_dir}` writes them; the Asterisk sets need their Debian packages: make apt)"
        )
    return {n: Path(available[n]) for n in wanted}


def read_summary(adapted: Path) -> dict[str, Any] | None:
    """The single values of ``fastaed adapt``'s ``adapt_summary.json`` (times, steps, clips, audio seconds,
    source; its config and data listing stay in the file), None when the folder has none; a broken one
    raises ``FileFormatError`` naming it."""
    from fastaed.util.files import FileFormatError, read_json

    path = Path(adapted) / SUMMARY_FILE
    if not path.is_file():
        return None
    doc = read_json(path)
    if not isinstance(doc, dict) or not isinstance(doc.get("steps"), int):
        raise FileFormatError(f"{path}: not an adaptation summary (want a JSON object with integer 'steps')")
    return {k: v for k, v in doc.items() if not isinstance(v, dict | list)}


# ---- loops -------------------------------------------------------------------------------------------------


def runaway(ids: list[int], seconds: float) -> str | None:
    """Why a transcript of ``seconds`` of audio, as Whisper token ``ids``, looks like a loop: ``token_rate``
    (more tokens than the loop guard's cap for that audio), ``repetition`` (ends in a unit repeated as the
    guard detects it), or None."""
    import torch

    from fastaed.decode.search import LoopGuard

    guard = LoopGuard()
    if len(ids) > int(guard.cap(torch.tensor([float(seconds)]))[0]):
        return "token_rate"
    if ids and int(guard.period(torch.tensor([ids]), len(ids))[0]) > 0:
        return "repetition"
    return None


def runaways(texts: list[str], clips: list[Clip], tokenizer: Any, keep: int = 3) -> dict[str, Any]:
    """How many ``texts`` look like a loop (:func:`runaway`), by reason, with a few of them."""
    found = []
    for text, clip in zip(texts, clips, strict=True):
        why = runaway(tokenizer.encode_text(text), clip.seconds)
        if why:
            found.append({"utt_id": clip.utt_id, "why": why, "text": text[:120]})
    reasons = collections.Counter(f["why"] for f in found)
    return {"count": len(found), "by_reason": dict(reasons), "examples": found[:keep]}


# ---- the benchmark -----------------------------------------------------------------------------------------


def _cell(
    system: System, name: str, clips: list[Clip], batch_size: int, language: str, config: AdaptBenchConfig,
    peer: tuple[Path | None, str | None], tokenizer: Any,
) -> dict[str, Any]:  # fmt: skip
    """One system on one set at one batch size: WER, loops, RTFx and the machine's load around it."""
    from fastaed.bench.peers.whisper import PeerError
    from fastaed.bench.serve_load import machine_load

    cell: dict[str, Any] = {"set": name, "system": system.key, "label": system.label,
                            "engine": system.engine, "input": system.input, "batch_size": batch_size,
                            "language": language}  # fmt: skip
    folder, why_not = peer
    if system.engine == "faster-whisper" and why_not:
        return cell | {"skipped": why_not}
    cell["load_before"] = machine_load()
    if system.engine == "fastaed":
        checkpoint = config.original if system.checkpoint == "original" else config.adapted
        out = wb.run_fastaed(checkpoint, clips, system.input, batch_size, "fp32", language)
    else:
        try:
            out = wb.run_peer(folder, clips, "float32", batch_size, config.threads, language)
        except PeerError as e:
            return cell | {"skipped": f"faster-whisper failed: {e}"}
    cell["load_after"] = machine_load()
    texts = out.pop("texts")
    cell |= {k: out[k] for k in ("rtfx", "audio_seconds", "wall_seconds")}
    cell["wer"] = wb.wer_by_set(clips, texts, "whisper")[name]
    guard = out.get("loops")
    cell["guard"] = None if guard is None else {"count": sum(guard.values()), "by_kind": guard}
    cell["runaway"] = runaways(texts, clips, tokenizer)
    print(f"{name} ({system.key}) {system.label} batch {batch_size}: RTFx {cell['rtfx']:.2f}, WER "
          f"{pct(cell['wer'], 1)}, guard {cell['guard']['count'] if guard is not None else '-'}, runaway "
          f"{cell['runaway']['count']}", flush=True)  # fmt: skip
    return cell


def _peer(config: AdaptBenchConfig) -> tuple[Path | None, str | None]:
    """faster-whisper's weights folder, or None and why it is not run."""
    from fastaed.bench.peers.whisper import whisper_peer_python

    if not config.peer:
        return None, "faster-whisper not run (--no-peer)"
    if whisper_peer_python() is None:
        return None, NO_PEER
    from fastaed.formats.fetch import fetch_whisper

    return fetch_whisper(config.model), None


def command(config: AdaptBenchConfig) -> str:
    """The command line that runs ``config``."""
    words = ["fastaed", "bench", "adapt", "--model", config.model, "--original", str(config.original),
             "--adapted", str(config.adapted), "--data-dir", str(config.data_dir)]  # fmt: skip
    words += ["--sets", *config.sets] if config.sets else []
    words += ["--batch-sizes", *map(str, config.batch_sizes), "--threads", str(config.threads)]
    if config.max_clips_per_set is not None:
        words += ["--max-clips-per-set", str(config.max_clips_per_set)]
    words += [] if config.peer else ["--no-peer"]
    words += ["--json", str(config.json)] if config.json else []
    return shlex.join(words)


def run(config: AdaptBenchConfig) -> dict[str, Any]:
    import platform

    import torch

    from fastaed.bench.peers.whisper import run_whisper_peer
    from fastaed.data.whisper_tokenizer import WhisperTokenizer
    from fastaed.formats.native import read_checkpoint_meta
    from fastaed.util.outputs import check_output_file, json_kind

    if config.json is not None:  # refused before minutes of decoding, not after
        check_output_file(config.json, json_kind("adapt benchmark", "adapted", "cells"), flag="--json")
    for checkpoint in (config.original, config.adapted):
        read_checkpoint_meta(checkpoint)
    summary = read_summary(config.adapted)
    sets = _choose_sets(config)
    torch.set_num_threads(config.threads)
    tokenizer = WhisperTokenizer.load(config.original / "tokenizer")
    peer = _peer(config)
    versions = {"torch": torch.__version__}
    if peer[0] is not None:
        versions |= run_whisper_peer("versions")
    notes = [] if summary else [f"no {SUMMARY_FILE} in {config.adapted}: adaptation time unknown"]
    notes += [peer[1]] if peer[1] else []
    cells, set_info = [], {}
    for name, manifest in sets.items():
        every = wb.load_clips(config.data_dir, (name,), None, {name: manifest})
        # One window each: a clip past Whisper's 30 s is long-form work (decode/longform.py), not this
        # comparison's; left out before the even choice, and counted.
        fitting = [c for c in every if c.seconds <= WINDOW_S]
        if len(fitting) < len(every):
            notes.append(f"{name}: {len(every) - len(fitting)} clip(s) over {WINDOW_S:.0f} s left out")
        n = config.max_clips_per_set
        clips = fitting if n is None else wb.evenly(fitting, n)
        if not clips:
            notes.append(f"{name}: {manifest} has no clips")
            continue
        language = collections.Counter(c.language for c in clips).most_common(1)[0][0]
        set_info[name] = {"manifest": str(manifest), "language": language, "clips": len(clips),
                          "audio_seconds": sum(c.seconds for c in clips),
                          "over_window": len(every) - len(fitting)}  # fmt: skip
        for system in SYSTEMS:
            for bs in config.batch_sizes:
                cells.append(_cell(system, name, clips, bs, language, config, peer, tokenizer))
    result = {
        "protocol": (
            "RTFx = audio s / wall s; model load and one warm-up batch excluded; greedy; same CPU threads "
            "for both engines; WER after Whisper's English normaliser (en) or its basic one, accents "
            "removed (es, fr); "
            "runaway: more tokens than the loop guard's cap (6.5/s + 10) or a repeated unit at the end"
        ),
        "command": command(config),
        "model": config.model,
        "original": str(config.original),
        "adapted": str(config.adapted),
        "peer_weights": str(peer[0]) if peer[0] else None,
        "adaptation": summary,
        "threads": config.threads,
        "machine": f"{platform.machine()}, {wb._cpu_name()}, {os.cpu_count()} CPUs",
        "versions": versions,
        "sets": set_info,
        "cells": cells,
        "notes": notes,
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
    }
    result["summary"] = summarize(cells, list(set_info), config.batch_sizes)
    return result


def _pooled(cells: list[dict[str, Any]]) -> float | None:
    """RTFx over several cells' audio and wall time together (None when one was skipped)."""
    if not cells or any("rtfx" not in c for c in cells):
        return None
    return sum(c["audio_seconds"] for c in cells) / max(sum(c["wall_seconds"] for c in cells), 1e-9)


def summarize(cells: list[dict[str, Any]], sets: list[str], batch_sizes: tuple[int, ...]) -> dict[str, Any]:
    """The ratios the targets are about: adapted minus padded-original WER per set (points, the worst batch
    size), adapted RTFx over faster-whisper's per batch size (all sets pooled), loops per system."""
    at = {(c["system"], c["set"], c["batch_size"]): c for c in cells}
    keys = [s.key for s in SYSTEMS]
    wer = {k: {s: at[k, s, batch_sizes[0]].get("wer") for s in sets} for k in keys}
    delta: dict[str, float] = {}
    for s in sets:
        pairs = [(at["c", s, b].get("wer"), at["a", s, b].get("wer")) for b in batch_sizes]
        diffs = [c - a for c, a in pairs if c is not None and a is not None]
        if diffs:
            delta[s] = 100 * max(diffs)
    rtfx = {k: {f"batch_{b}": _pooled([at[k, s, b] for s in sets]) for b in batch_sizes} for k in keys}
    vs_peer = {
        f"batch_{b}": rtfx["c"][f"batch_{b}"] / rtfx["d"][f"batch_{b}"]
        for b in batch_sizes
        if rtfx["c"][f"batch_{b}"] and rtfx["d"][f"batch_{b}"]
    }
    loops = {}
    for k in keys:
        run = [c for c in cells if c["system"] == k and "runaway" in c]
        guard = sum(c["guard"]["count"] for c in run if c["guard"])
        runaway_count = sum(c["runaway"]["count"] for c in run)
        loops[k] = {"guard": guard, "runaway": runaway_count, "total": guard + runaway_count}
    both = {"batch_1", "batch_16"} <= set(vs_peer)  # the target's two sizes; else "not measured"
    met = {
        "wer": bool(delta) and max(delta.values()) <= TARGET_WER_POINTS,
        "rtfx": min(vs_peer.values()) >= TARGET_RTFX_VS_PEER if both else None,
        "loops": loops["c"]["total"] <= TARGET_LOOPS,
    }
    return {
        "wer": wer, "wer_delta_points": delta, "rtfx": rtfx, "rtfx_vs_faster_whisper": vs_peer,
        "loops": loops, "adapted_loops": loops["c"]["total"], "met": met,
        "targets": {"wer_delta_points_max": TARGET_WER_POINTS,
                    "rtfx_vs_faster_whisper_min": TARGET_RTFX_VS_PEER, "loops": TARGET_LOOPS},
    }  # fmt: skip


# ---- reports -----------------------------------------------------------------------------------------------


def _seconds(x: float | None) -> str:
    return "? s" if x is None else f"{x:.0f} s"


def _verdict(met: bool | None) -> str:
    return "not measured" if met is None else "met" if met else "missed"


def _rows(result: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    header = ["set", "system", "batch", "WER", "guard loops", "runaways", "RTFx", "load 1 min before/after"]
    rows = []
    for c in result["cells"]:
        system = f"({c['system']}) {c['label']}"
        if "skipped" in c:
            rows.append([c["set"], system, c["batch_size"], "-", "-", "-", "-", f"skipped: {c['skipped']}"])
            continue
        load = f"{c['load_before']['loadavg'][0]:.2f} / {c['load_after']['loadavg'][0]:.2f}"
        guard = "-" if c["guard"] is None else c["guard"]["count"]
        rows.append([c["set"], system, c["batch_size"], pct(c["wer"], 1), guard, c["runaway"]["count"],
                     f"{c['rtfx']:.2f}", load])  # fmt: skip
    return header, rows


def _findings(result: dict[str, Any]) -> list[str]:
    s = result["summary"]
    lines = []
    for name, points in s["wer_delta_points"].items():
        lines.append(f"{name}: adapted − padded original WER {points:+.2f} points, worst batch size (target "
                     f"≤ +{TARGET_WER_POINTS:g})")  # fmt: skip
    for key, ratio in s["rtfx_vs_faster_whisper"].items():
        lines.append(f"adapted RTFx over faster-whisper float32, {key.replace('_', ' ')}: {ratio:.2f}x "
                     f"(target ≥ {TARGET_RTFX_VS_PEER:g}x)")  # fmt: skip
    for key, n in s["loops"].items():
        lines.append(f"loops ({key}): guard {n['guard']}, runaway {n['runaway']}")
    met = s["met"]
    lines.append(f"targets: WER {_verdict(met['wer'])}, RTFx {_verdict(met['rtfx'])}, loops "
                 f"{_verdict(met['loops'])} (adapted: {s['adapted_loops']})")  # fmt: skip
    a = result.get("adaptation")
    if a:
        lines.append(f"adaptation: {_seconds(a.get('wall_s'))} wall, {a['steps']} steps (teacher "
                     f"{_seconds(a.get('teacher_s'))}, training {_seconds(a.get('train_s'))}) on "
                     f"{a.get('clips', '?')} clips from {a.get('source', '?')}")  # fmt: skip
    return lines + [f"note: {n}" for n in result["notes"]]


def print_report(result: dict[str, Any]) -> None:
    sets = ", ".join(f"{k} {v['clips']} clips ({v['language']})" for k, v in result["sets"].items())
    print(f"\nWhisper {result['model']} adapted ({result['adapted']}) vs the original "
          f"({result['original']}): {sets}; {result['threads']} threads; {result['machine']}")  # fmt: skip
    print(format_table(*_rows(result)))
    for line in _findings(result):
        print(line)
    print(f"({result['protocol']})")


def markdown_section(results: list[dict[str, Any]]) -> str:
    """BENCHMARKS.md's section for the recorded adaptation benchmarks (one part per model)."""
    parts = []
    for r in results:
        versions = ", ".join(f"{k} {v}" for k, v in r["versions"].items())
        header, rows = _rows(r)
        table = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        table += ["| " + " | ".join(str(x) for x in row) + " |" for row in rows]
        parts.append("\n".join([
            f"#### Whisper {r['model']}: adapted to unpadded input", "",
            f"Command: `{r['command']}`  ",
            f"Machine: {r['machine']}; {r['threads']} threads; {versions}.  ",
            "Sets: " + ", ".join(f"{k} {v['clips']} clips, {v['audio_seconds']:.0f} s ({v['language']})"
                                 for k, v in r["sets"].items()) + ".", "",
            *table, "", *(f"- {line}" for line in _findings(r)),
        ]))  # fmt: skip
    return "\n\n".join(parts)


# ---- BENCHMARKS.md (rendered by `fastaed bench readme`) ----------------------------------------------------

SECTION_BEGIN = (
    "<!-- bench adapt: begin (rendered by `fastaed bench readme` from bench_results/adapt_*.json) -->"
)
SECTION_END = "<!-- bench adapt: end -->"
SECTION_HEADING = "## Whisper adapted to unpadded input (`make adapt`)"
RECORDS = ("adapt_tiny_en.json", "adapt_base.json")  # `make adapt`'s records, in section order
ABLATION_RECORD = "adapt_ablation.json"  # `fastaed bench adapt-ablation`'s, rendered after them
# Whisper base re-judged on every held-out clip (batch 16, no peer): `make adapt` samples 30 clips per set.
ALL_CLIPS_RECORD = "adapt_base_all_clips.json"
ALL_CLIPS_INTRO = (
    "The base record above scores 30 clips per Asterisk set, to keep its run (batch 1 and 16, with the "
    "peer) under an hour. Its WER is judged again here on every held-out clip of every set, at batch 16 and "
    "without the peer; speed and the peer ratios are the record above's."
)


def document_with_section(text: str | None, load: Any, exists: Any) -> str | None:
    """``text`` (BENCHMARKS.md, None when missing) with the section rendered from the records that exist
    (``exists(name)``, ``load(name)``) between its markers, appended under a heading the first time; None
    when no record exists (the document is left as it is)."""
    results = [load(name) for name in RECORDS if exists(name)]
    if not results:
        return None
    body = markdown_section(results)
    if exists(ALL_CLIPS_RECORD):
        every = load(ALL_CLIPS_RECORD)
        body += f"\n\n#### Whisper {every['model']}: every held-out clip\n\n{ALL_CLIPS_INTRO}\n"
        body += markdown_section([every]).split("\n", 1)[1]  # its table, below this heading
    if exists(ABLATION_RECORD):
        from fastaed.bench.adapt_ablation import markdown as ablation_markdown

        body += "\n\n" + ablation_markdown(load(ABLATION_RECORD))
    block = f"{SECTION_BEGIN}\n{body}\n{SECTION_END}"
    text = text or "# Benchmarks\n"
    start, end = text.find(SECTION_BEGIN), text.find(SECTION_END)
    if 0 <= start < end:
        return text[:start] + block + text[end + len(SECTION_END) :]
    return text.rstrip("\n") + f"\n\n{SECTION_HEADING}\n\n{block}\n"


def update_section(doc: Path, load: Any, exists: Any, *, write: bool) -> str:
    """Render the section into ``doc`` (:func:`document_with_section`); write it when it changed and
    ``write``. Returns the diff (empty: unchanged, or no record yet)."""
    import difflib

    old = doc.read_text() if doc.is_file() else None
    new = document_with_section(old, load, exists)
    if new is None or new == old:
        return ""
    if write:
        doc.write_text(new)
    lines = difflib.unified_diff(
        (old or "").splitlines(), new.splitlines(), f"{doc} (now)", "records", lineterm=""
    )
    return "\n".join(lines)
