"""Long-form transcription of long real recordings: fastaed against openai-whisper and faster-whisper.

    fastaed bench longform --models tiny.en base --minutes 2 10 60 --json bench_results/longform.json
    fastaed bench longform --quick     # one ~1 min file, tiny.en: checks the pipeline, not the numbers

Files (:mod:`fastaed.bench.longform_data`): real clips (the Asterisk English prompts, ``--manifest``) cut to
their speech and joined with pauses of 0.3-3 s, one in ten 5-10 s, into one 16 kHz wav per length, so every
true segment boundary is known to the sample; built once into ``--data-dir`` and reused (same seed, same
bytes). Weights: the same Whisper release for every engine: the CTranslate2 folder (faster-whisper), its
``fastaed import whisper`` checkpoint (fastaed) and that checkpoint's ``fastaed export openai`` ``.pt``
(openai-whisper), all float32, made once into ``--work-dir``.

Engines (``--engines``), each file in a process of its own (its peak RSS is its own), one after another:

* ``fastaed-sequential``: openai-whisper's algorithm (``--long-form sequential``), word timestamps;
  ``fastaed-sequential-nowords``: the same without them (what word timestamps cost);
* ``fastaed-batched-8`` / ``-16``: voice activity -> chunks -> duration-sorted batches of 8 / 16;
* ``openai-sequential``: openai-whisper 20250625 ``transcribe()`` (``.venv-openai``, ``make openai-venv``);
* ``faster-whisper-sequential``: ``WhisperModel.transcribe`` without VAD; ``faster-whisper-batched-8``:
  ``BatchedInferencePipeline`` with its default VAD, batch 8 (``.venv-whisper``, ``make whisper-venv``).

Every engine: greedy (beam 1), temperature 0 with no fallback (``--temperatures``), conditioned on the
previous text, English, the same CPU threads (``--threads``); batched engines without word timestamps
unless ``--batched-word-timestamps``. Timed: reading the file through the last segment; model loading and
one warm-up pass on a short file of the same kind (``--warmup-s``, 0: none) are not. An engine whose venv
is missing is left out and named in the notes.

Scores (against the truth): WER (Whisper's English normaliser), RTFx, segment-boundary error (every segment
start/end against the nearest true clip start/end; median, 90th percentile, ms), word-timestamp error (first
/ last word of each clip against its start / end), speech coverage and clips no segment touches, segments
that repeat the previous one's words (chunk seams), peak RSS; the load average before and after each
engine; and per file whether fastaed sequential wrote the same text as openai-whisper (whitespace aside).
Targets (issue 25): same text on >= 95% of files; sequential RTFx >= faster-whisper sequential; batched RTFx
>= 1.5x faster-whisper batched at no worse WER; median boundary error <= 150 ms; word timestamps <= 10% extra
time; peak RSS of the longest file <= 2x the shortest's; no clip missed, no repeats at seams.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fastaed.util.tables import format_table, pct
from fastaed.util.threads import wait_settings


@dataclass(frozen=True)
class Engine:
    """One way of transcribing a long file."""

    name: str
    program: str  # fastaed | openai | faster-whisper
    mode: str  # sequential | batched
    batch_size: int = 1
    words: bool | None = None  # None: the config's choice for this mode; False: never


ENGINES = {
    e.name: e
    for e in (
        Engine("fastaed-sequential", "fastaed", "sequential"),
        Engine("fastaed-sequential-nowords", "fastaed", "sequential", words=False),
        Engine("fastaed-batched-8", "fastaed", "batched", 8),
        Engine("fastaed-batched-16", "fastaed", "batched", 16),
        Engine("openai-sequential", "openai", "sequential"),
        Engine("faster-whisper-sequential", "faster-whisper", "sequential"),
        Engine("faster-whisper-batched-8", "faster-whisper", "batched", 8),
    )
}
QUICK_ENGINES = ("fastaed-sequential", "fastaed-batched-8", "openai-sequential", "faster-whisper-sequential",
                 "faster-whisper-batched-8")  # fmt: skip


@dataclass(frozen=True)
class LongformBenchConfig:
    """Options of ``fastaed bench longform``."""

    models: tuple[str, ...] = field(default=("tiny.en", "base"), metadata={"help": "Whisper releases"})
    minutes: tuple[float, ...] = field(default=(2.0, 10.0, 60.0), metadata={"help": "file lengths (minutes)"})
    engines: tuple[str, ...] = field(default=tuple(ENGINES), metadata={"help": f"of {', '.join(ENGINES)}"})
    threads: int = field(default=2, metadata={"help": "CPU threads of every engine"})
    temperatures: tuple[float, ...] = field(
        default=(0.0,), metadata={"help": "sequential engines' temperature ladder (0: greedy, no fallback)"}
    )
    word_timestamps: bool = field(default=True, metadata={"help": "sequential engines time every word"})
    batched_word_timestamps: bool = field(default=False, metadata={"help": "batched engines too"})
    seed: int = field(default=0, metadata={"help": "seed of the long files (clip order, pauses, noise)"})
    manifest: Path = field(
        default=Path("data/real/asterisk.jsonl"), metadata={"help": "clips to join (built when missing)"}
    )
    max_clip_s: float = field(default=30.0, metadata={"help": "longest clip used (seconds)"})
    data_dir: Path = field(default=Path("data/longform"), metadata={"help": "where the long files are built"})
    work_dir: Path = field(
        default=Path("runs/bench-longform"), metadata={"help": "checkpoints, .pt exports and transcripts"}
    )
    quick: bool = field(default=False, metadata={"help": "one short file, tiny.en only: checks the pipeline"})
    quick_minutes: float = field(default=1.0, metadata={"help": "--quick: the file's length (minutes)"})
    warmup_s: float = field(default=15.0, metadata={"help": "warm-up file's seconds (0: none)"})
    engine_timeout_s: float = field(default=7200.0, metadata={"help": "most one engine takes on a file"})
    json: Path | None = field(default=None, metadata={"help": "write the results here"})

    def __post_init__(self) -> None:
        unknown = [e for e in self.engines if e not in ENGINES]
        if unknown:
            raise ValueError(f"--engines: unknown {', '.join(unknown)}; known: {', '.join(ENGINES)}")
        if (
            self.threads < 1
            or not self.minutes
            or min(*self.minutes, self.quick_minutes) <= 0
            or 0 < self.warmup_s < 3
        ):
            raise ValueError("--threads must be >= 1; --minutes, --quick-minutes > 0; --warmup-s 0 or >= 3")


# ---- the fastaed engine: a process of its own ------------------------------------------------------------


def engine_main(request: dict[str, Any]) -> dict[str, Any]:
    """Transcribe ``request["audio"]`` with fastaed (the child process's work; see :func:`run_fastaed`)."""
    import resource

    import torch

    from fastaed.decode.longform import LongFormConfig, transcribe_long
    from fastaed.decode.transcribe import DecodeConfig, Transcriber, utterances_from_audio

    torch.set_num_threads(int(request["threads"]))
    start = time.perf_counter()
    decode = DecodeConfig(batch_size=int(request.get("batch_size", 1)), device="cpu", dtype="fp32",
                          progress=False)  # fmt: skip
    transcriber = Transcriber(request["checkpoint"], decode)
    config = LongFormConfig(long_form=request["mode"], temperatures=tuple(request["temperatures"]),
                            word_timestamps=bool(request["word_timestamps"]))  # fmt: skip
    load_seconds = time.perf_counter() - start

    def utterances(paths: list[str]):
        return utterances_from_audio(paths, source_lang="en", target_lang="en", task="transcribe", pnc=True)

    start = time.perf_counter()
    if request.get("warmup_audio"):
        transcribe_long(transcriber, utterances(request["warmup_audio"]), config)
    warmup_seconds = time.perf_counter() - start
    result = transcribe_long(transcriber, utterances(request["audio"]), config)
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    return {"files": [t.to_verbose_json() for t in result.transcripts], "audio_seconds": result.audio_seconds,
            "wall_seconds": result.wall_seconds, "peak_rss_mb": peak_rss_mb, "load_seconds": load_seconds,
            "warmup_seconds": warmup_seconds, "mode": result.mode, "windows": result.windows,
            "fallbacks": result.fallbacks}  # fmt: skip


# A child's ru_maxrss starts at its parent's peak (Linux keeps the high-water mark through fork and exec), so
# an engine started from this process would report at least this process's own peak (measured: a 13 MB child
# of an 800 MB parent reported 813 MB). Started by a shell that forks it, an engine reports its own. (A peer
# that outlives --engine-timeout-s is left running: its client kills the shell only.)
LAUNCHER = '#!/bin/sh\n{python} "$@"\nexit $?\n'


def launcher(python: str | Path, folder: Path) -> Path:
    """An executable that runs ``python`` with its arguments in a forked child (see :data:`LAUNCHER`)."""
    path = folder / f"python-{abs(hash(str(python))):x}"
    if not path.exists():
        path.write_text(LAUNCHER.format(python=shlex.quote(str(python))))
        path.chmod(0o755)
    return path


def run_fastaed(request: dict[str, Any], timeout_s: float, python: Path) -> tuple[dict[str, Any], str]:
    """:func:`engine_main` in a child process (``python -m fastaed.bench.longform engine``, ``python``: a
    :func:`launcher`); returns its response and the command."""
    with tempfile.TemporaryDirectory(prefix="fastaed-longform-") as tmp:
        req, resp = Path(tmp) / "request.json", Path(tmp) / "response.json"
        req.write_text(json.dumps(request), encoding="utf-8")
        cmd = [str(python), "-m", "fastaed.bench.longform", "engine", str(req), str(resp)]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)  # fmt: skip
        try:
            _, stderr = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired as e:
            os.killpg(proc.pid, 9)  # the launcher and the engine it forked: a session of their own
            proc.wait()
            raise RuntimeError(f"fastaed {request['mode']}: no answer within {timeout_s:.0f} s") from e
        if proc.returncode != 0 or not resp.exists():
            tail = "\n".join(stderr.strip().splitlines()[-15:])
            raise RuntimeError(f"fastaed {request['mode']} failed (exit {proc.returncode}):\n{tail}")
        command = shlex.join([sys.executable, *cmd[1:4]]) + " " + json.dumps(request)
        return json.loads(resp.read_text(encoding="utf-8")), command


# ---- one engine on one file ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Weights:
    """One Whisper release in each engine's format."""

    name: str
    ctranslate2: Path
    checkpoint: Path
    openai_pt: Path | None


def _words(engine: Engine, config: LongformBenchConfig) -> bool:
    if engine.words is not None:
        return engine.words
    return config.word_timestamps if engine.mode == "sequential" else config.batched_word_timestamps


def run_engine(
    engine: Engine,
    weights: Weights,
    audio: Path,
    warmup: Path | None,
    config: LongformBenchConfig,
    launch_dir: Path,
) -> dict[str, Any]:
    """One engine on one file: ``{"doc": verbose_json-like, "command", "word_timestamps", "wall_seconds",
    "audio_seconds", "peak_rss_mb", "load_seconds", ...}``. ``launch_dir``: where :func:`launcher` scripts
    are written."""
    from fastaed.bench.peers import openai_whisper, whisper

    words = _words(engine, config)
    ladder = list(config.temperatures)
    common = {"threads": config.threads, "word_timestamps": words, "mode": engine.mode, "language": "en",
              "batch_size": engine.batch_size, "audio": [str(audio)], "condition_on_previous_text": True,
              "warmup_audio": [str(warmup)] if warmup else [],
              "temperature": ladder[0] if len(ladder) == 1 else ladder}  # fmt: skip
    if engine.program == "fastaed":
        request = {"checkpoint": str(weights.checkpoint), "temperatures": ladder, **common}
        response, command = run_fastaed(
            request, config.engine_timeout_s, launcher(sys.executable, launch_dir)
        )
        doc = response["files"][0]
    elif engine.program == "openai":
        # its own warm-up would run the long file's list once more: both files go in, the long one is timed
        request = {"model": str(weights.openai_pt), **common, "audio": [str(p) for p in (warmup, audio) if p],
                   "warmup": 0, "alignment_heads": weights.name}  # fmt: skip
        venv_python = openai_whisper.openai_peer_python()
        python = launcher(venv_python, launch_dir)
        response = openai_whisper.run_openai_peer(
            "transcribe", config.engine_timeout_s, python=python, **request
        )
        doc = response["files"][-1]
        response["wall_seconds"], response["audio_seconds"] = doc["seconds"], doc["audio_seconds"]
        response["warmup_seconds"] = response["files"][0]["seconds"] if warmup else 0.0
        command = f"{venv_python} {openai_whisper.RUNNER} transcribe {json.dumps(request)}"
    else:
        request = {"model": str(weights.ctranslate2), **common}
        venv_python = whisper.whisper_peer_python()
        python = launcher(venv_python, launch_dir)
        response = whisper.run_whisper_peer("longform", config.engine_timeout_s, python=python, **request)
        doc = response["files"][0]
        command = f"{venv_python} {whisper.RUNNER} longform {json.dumps(request)}"
    keep = ("wall_seconds", "audio_seconds", "peak_rss_mb", "load_seconds", "warmup_seconds", "windows",
            "fallbacks")  # fmt: skip
    return {"doc": doc, "command": command, "word_timestamps": words} | {k: response.get(k) for k in keep}


def available(engine: Engine) -> str | None:
    """Why ``engine`` cannot run here (its peer venv is missing), or None."""
    if engine.program == "openai":
        from fastaed.bench.peers.openai_whisper import openai_peer_python

        if openai_peer_python() is None:
            return "no openai-whisper peer venv .venv-openai (make openai-venv)"
    if engine.program == "faster-whisper":
        from fastaed.bench.peers.whisper import whisper_peer_python

        if whisper_peer_python() is None:
            return "no faster-whisper peer venv .venv-whisper (make whisper-venv)"
    return None


def prepare_weights(model: str, work_dir: Path, need_openai: bool) -> Weights:
    """The release's CTranslate2 folder, its fastaed checkpoint and (``need_openai``) its openai ``.pt``,
    made once into ``work_dir``."""
    from fastaed.formats.fetch import fetch_whisper
    from fastaed.formats.native import is_checkpoint_folder
    from fastaed.formats.whisper_import import import_whisper

    folder = fetch_whisper(model)
    checkpoint = work_dir / f"whisper-{model}"
    if not is_checkpoint_folder(checkpoint):
        import_whisper(folder, checkpoint)
    pt = work_dir / f"openai-{model}.pt"
    if need_openai and not pt.is_file():
        from fastaed.formats.openai_export import export_openai

        export_openai(checkpoint, pt)
    return Weights(model, folder, checkpoint, pt if need_openai else None)


def _source_clips(config: LongformBenchConfig):
    from fastaed.bench.longform_data import load_source_clips

    manifest = config.manifest
    if not manifest.is_file() and manifest.name == "asterisk.jsonl":
        from fastaed.data.asterisk import prepare_asterisk

        prepare_asterisk(manifest.parent)  # from the Debian packages (make apt); says what is missing
    return load_source_clips(manifest, config.max_clip_s)


def _save_transcript(path: Path, row: dict[str, Any], doc: dict[str, Any]) -> None:
    from fastaed.util.outputs import json_kind, replacing_file

    kind = json_kind("longform benchmark transcript", "engine", "model", "segments")
    with replacing_file(path, kind, flag="--work-dir") as tmp:
        body = {"engine": row["engine"], "model": row["model"], "minutes": row["minutes"], **doc}
        tmp.write_text(json.dumps(body) + "\n", encoding="utf-8")


# ---- the benchmark -------------------------------------------------------------------------------------


def measure(engine: Engine, weights: Weights, audio: Path, truth: dict, minutes: float, warmup: Path | None,
            config: LongformBenchConfig, launch_dir: Path) -> tuple[dict[str, Any], str | None]:  # fmt: skip
    """One engine on one file, scored: its row of the results and its text (None when it failed)."""
    from fastaed.bench.longform_data import score_transcript

    row = {"model": weights.name, "minutes": minutes, "file": str(audio), "engine": engine.name,
           "program": engine.program, "mode": engine.mode, "batch_size": engine.batch_size,
           "load_before": list(os.getloadavg())}  # fmt: skip
    print(f"{weights.name} {minutes:g} min: {engine.name} ...", end=" ", flush=True, file=sys.stderr)
    try:
        out = run_engine(engine, weights, audio, warmup, config, launch_dir)
    except Exception as err:  # one engine's failure must not cost the others their rows
        print(f"failed: {str(err).splitlines()[0]}", file=sys.stderr)
        return row | {"error": str(err), "load_after": list(os.getloadavg())}, None
    row["load_after"] = list(os.getloadavg())
    doc = out.pop("doc")
    row |= out
    row["rtfx"] = out["audio_seconds"] / out["wall_seconds"] if out["wall_seconds"] else None
    row["scores"] = asdict(score_transcript(truth, doc))
    row["transcript"] = str(
        config.work_dir / "transcripts" / f"{weights.name}-{minutes:g}min-{engine.name}.json"
    )
    _save_transcript(Path(row["transcript"]), row, doc)
    print(f"RTFx {row['rtfx']:.2f}, WER {pct(row['scores']['wer'], 1)}", file=sys.stderr)
    return row, doc.get("text", "")


def run(config: LongformBenchConfig) -> dict[str, Any]:
    from fastaed.bench.longform_data import long_file, same_text_rows, targets
    from fastaed.bench.whisper import _cpu_name as cpu_name

    models = ("tiny.en",) if config.quick else config.models
    minutes = (config.quick_minutes,) if config.quick else config.minutes
    names = [e for e in config.engines if not config.quick or e in QUICK_ENGINES]
    engines = [ENGINES[e] for e in names]
    notes: list[str] = []
    for engine in list(engines):
        if (why := available(engine)) is not None:
            notes.append(f"{engine.name} not run: {why}")
            engines.remove(engine)
    clips = _source_clips(config)
    source = str(config.manifest)
    files = [long_file(clips, m, config.seed, config.data_dir, source=source) for m in minutes]
    warmup: Path | None = None  # --warmup-s 0
    if config.warmup_s:
        warmup, _ = long_file(clips, config.warmup_s / 60, config.seed + 1, config.data_dir, source=source)
    config.work_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    texts: dict[tuple[str, float, str], str] = {}
    with tempfile.TemporaryDirectory(prefix="fastaed-longform-launch-") as launch_dir:
        for model in models:
            weights = prepare_weights(model, config.work_dir, any(e.program == "openai" for e in engines))
            for (audio, truth), m in zip(files, minutes):
                for engine in engines:
                    row, text = measure(engine, weights, audio, truth, m, warmup, config, Path(launch_dir))
                    rows.append(row)
                    if text is not None:
                        texts[model, m, engine.name] = text
    same = same_text_rows(texts, models, minutes)
    versions = _versions(engines)
    return {
        "protocol": (
            "each engine on each file in its own process, one after another; RTFx = audio s / wall s from "
            f"reading the file to the last segment (model load and a {config.warmup_s:g} s warm-up file "
            "excluded); greedy, "
            f"temperatures {list(config.temperatures)}, English, float32, {config.threads} CPU threads each; "
            "WER after Whisper's English normaliser; boundary errors against the nearest true clip edge"
        ),
        "models": list(models),
        "files": [
            {
                "minutes": m,
                "audio": str(a),
                "clips": len(t["clips"]),
                "cycles": t["cycles"],
                "speech_seconds": t["speech_seconds"],
                "note": t["note"],
            }
            for (a, t), m in zip(files, minutes)
        ],  # fmt: skip
        "rows": rows,
        "same_text_as_openai": same,
        "targets": targets(rows, same),
        "versions": versions,
        "environment": wait_settings() | {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")},
        "cpu": cpu_name(),
        "command": command_line(config),
        "notes": notes,
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
    }


def command_line(config: LongformBenchConfig) -> str:
    """The ``fastaed bench longform`` command of this config (fields at their defaults left out)."""
    words = ["fastaed", "bench", "longform"]
    default = LongformBenchConfig()
    for name, value in asdict(config).items():
        if value == getattr(default, name):
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            words.append(flag if value else "--no-" + name.replace("_", "-"))
        elif isinstance(value, tuple):
            words += [flag, *(f"{v:g}" if isinstance(v, float) else str(v) for v in value)]
        else:
            words += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    return shlex.join(words)


def _versions(engines: list[Engine]) -> dict[str, Any]:
    import torch

    import fastaed
    from fastaed.bench.peers.openai_whisper import run_openai_peer
    from fastaed.bench.peers.whisper import run_whisper_peer

    out: dict[str, Any] = {"fastaed": fastaed.__version__, "torch": torch.__version__}
    programs = {e.program for e in engines}
    if "openai" in programs:
        out["openai_peer"] = run_openai_peer("versions")
    if "faster-whisper" in programs:
        out["faster_whisper_peer"] = run_whisper_peer("versions")
    return out


# ---- the report ----------------------------------------------------------------------------------------


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.0f}"


def print_report(result: dict[str, Any]) -> None:
    for f in result["files"]:
        speech = f"{f['speech_seconds'] / 60:.1f} min of speech"
        print(f"{f['minutes']:g} min file: {f['clips']} clips, {speech}; {f['note']}")
    header = ["model", "min", "engine", "WER", "RTFx", "bound med/p90 ms", "word med/p90 ms", "coverage",
              "missed", "repeats", "peak RSS MB", "load before/after"]  # fmt: skip
    rows = []
    for r in result["rows"]:
        load = f"{r['load_before'][0]:.1f}/{r['load_after'][0]:.1f}"
        if "error" in r:
            rows.append([r["model"], f"{r['minutes']:g}", r["engine"], "failed", *["-"] * 7, load])
            continue
        s = r["scores"]
        rows.append([
            r["model"], f"{r['minutes']:g}", r["engine"], pct(s["wer"], 1), f"{r['rtfx']:.2f}",
            f"{_ms(s['boundary_median_ms'])}/{_ms(s['boundary_p90_ms'])}",
            f"{_ms(s['word_median_ms'])}/{_ms(s['word_p90_ms'])}", pct(s["coverage"], 1),
            f"{s['clips_missed']}/{s['clips']}", s["seam_repeats"], f"{r['peak_rss_mb']:.0f}", load,
        ])  # fmt: skip
    print(format_table(header, rows))
    for s in result["same_text_as_openai"]:
        line = f"same text as openai-whisper, {s['model']} {s['minutes']:g} min: {['no', 'yes'][s['same']]}"
        if s["first_difference"]:
            d = s["first_difference"]
            line += f" (from character {d['at']}: fastaed {d['fastaed']!r} | openai {d['openai']!r})"
        print(line)
    for t in result["targets"]:
        mark = "met" if t["met"] else "MISSED"
        print(f"target {t['target']} [{t['where']}]: {t['value']:.3g} (threshold {t['threshold']:g}) {mark}")
    for note in result["notes"]:
        print(f"note: {note}")
    print(f"({result['protocol']})")


def main(argv: list[str] | None = None) -> int:
    """``python -m fastaed.bench.longform engine REQUEST RESPONSE``: one fastaed engine run."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3 or args[0] != "engine":
        print("usage: python -m fastaed.bench.longform engine REQUEST.json RESPONSE.json", file=sys.stderr)
        return 2
    response = engine_main(json.loads(Path(args[1]).read_text(encoding="utf-8")))
    tmp = Path(args[2]).with_suffix(".tmp")
    tmp.write_text(json.dumps(response), encoding="utf-8")
    tmp.replace(args[2])
    return 0


if __name__ == "__main__":
    from fastaed.util.threads import set_thread_wait_policy

    set_thread_wait_policy(argv=["transcribe"])  # as `fastaed transcribe` does, before torch loads
    sys.exit(main())
