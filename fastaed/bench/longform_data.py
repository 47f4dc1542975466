"""Long test files whose every speech boundary is known, and the scores of a timed transcript against them.

A long file is real clips (by default the Asterisk English prompts) laid end to end with pauses of varied
length between them, written as one 16 kHz mono wav. Each clip is first cut to its speech (the 10 ms frames
within ``trim_db`` of its loudest frame, edges faded over 5 ms), so a clip's start and end in the file *are*
its speech boundaries, to the sample. The pauses are drawn from ``short_pause_s`` (uniform), and with
probability ``long_pause_probability`` from ``long_pause_s`` (5-10 s: a silence a VAD or a 30 s window must
cross); a faint noise floor (``noise_dbfs``) runs under the whole file, as in a real recording, so silence is
never digital zero. Everything is drawn from one generator seeded by (seed, length): the same arguments give
the same bytes. When a long file needs more speech than the clips hold, they are used again, each round
reshuffled with new pauses; the truth records how many rounds (``cycles``) it took.

The truth (``truth.json`` beside ``audio.wav``) lists every clip's start, end (seconds) and text, and the
reference text (the clips' texts in order). The scores (:func:`score_transcript`) take any engine's
transcript shaped like OpenAI's ``verbose_json`` (segments with start, end, text and optional words);
:func:`targets` holds a benchmark run's rows (``fastaed bench longform``) against issue 25's targets.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SAMPLE_RATE = 16000
FRAME = 160  # 10 ms at 16 kHz: the trimming resolution
FADE = 80  # 5 ms fade at each trimmed edge, so a cut never clicks
TRUTH_FORMAT = "fastaed.longform-truth"
TRUTH_VERSION = 1
FILE_KIND = "longform-file"  # the outputs.py kind of one built file's folder
AUDIO_NAME, TRUTH_NAME = "audio.wav", "truth.json"


@dataclass(frozen=True)
class SourceClip:
    """One real recording to place into long files."""

    utt_id: str
    audio: str  # absolute path
    text: str
    seconds: float


@dataclass(frozen=True)
class LongFileSpec:
    """How the pauses, the noise floor and the trimming of a long file are drawn (the defaults: issue 25)."""

    short_pause_s: tuple[float, float] = (0.3, 3.0)
    long_pause_s: tuple[float, float] = (5.0, 10.0)
    long_pause_probability: float = 0.1
    lead_s: float = 1.0  # silence before the first clip (and at least this much after the last)
    noise_dbfs: float = -65.0  # RMS of the white noise floor under the whole file
    trim_db: float = 45.0  # a clip's speech: frames within this many dB of its loudest frame


def load_source_clips(manifest: str | Path, max_clip_s: float = 30.0) -> list[SourceClip]:
    """The transcribe-task entries of ``manifest`` with text and at most ``max_clip_s`` seconds (a clip is
    one utterance: the Asterisk set's three prompts over 30 s, a 73 s menu among them, are left out).
    A bad manifest line raises :class:`~fastaed.data.errors.BadInputError` naming the file and line."""
    from fastaed.data.manifest import read_manifest

    clips = []
    for u in read_manifest(manifest):
        if u.task != "transcribe" or not u.text.strip() or u.duration > max_clip_s:
            continue
        stem = Path(u.audio_filepath).stem
        utt_id = stem if u.offset == 0 else f"{stem}@{u.offset:.3f}"
        clips.append(SourceClip(utt_id, u.audio_filepath, u.text.strip(), u.duration))
    if not clips:
        raise ValueError(f"{manifest}: no transcribe entry with text of at most {max_clip_s:g} s")
    return clips


def trim_to_speech(wave: np.ndarray, trim_db: float) -> tuple[int, int]:
    """``(start, end)`` samples of a clip's speech: from the first to the last 10 ms frame that opens (ends)
    a run of three frames within ``trim_db`` of the loudest frame; a lone click does not count as speech.
    ``(0, 0)`` when nothing is louder than the floor."""
    frames = len(wave) // FRAME
    if frames == 0:
        return 0, 0
    rms = np.sqrt(np.mean(wave[: frames * FRAME].reshape(frames, FRAME).astype(np.float64) ** 2, axis=1))
    db = 20 * np.log10(rms + 1e-10)
    loud = db >= db.max() - trim_db
    if not loud.any() or db.max() < -80:
        return 0, 0
    run = min(3, frames)
    runs = np.convolve(loud.astype(int), np.ones(run, dtype=int), mode="valid") == run
    if not runs.any():
        runs = loud[: len(runs)]
    starts = np.flatnonzero(runs)
    return int(starts[0]) * FRAME, (int(starts[-1]) + run) * FRAME


def _read_clip(clip: SourceClip, trim_db: float) -> np.ndarray:
    """The clip's speech at 16 kHz, edges faded."""
    from fastaed.data.audio import load_audio

    wave = load_audio(clip.audio).numpy().astype(np.float32)
    start, end = trim_to_speech(wave, trim_db)
    speech = wave[start:end].copy()
    if len(speech) > 2 * FADE:
        ramp = np.linspace(0.0, 1.0, FADE, dtype=np.float32)
        speech[:FADE] *= ramp
        speech[-FADE:] *= ramp[::-1]
    return speech


def clips_fingerprint(clips: Sequence[SourceClip], spec: LongFileSpec) -> str:
    """What a built file depends on besides its length and seed: the clip list and the spec."""
    doc = json.dumps([[c.utt_id, c.text, round(c.seconds, 4)] for c in clips] + [asdict(spec), TRUTH_VERSION])
    return hashlib.sha1(doc.encode()).hexdigest()[:16]


def _rng(seed: int, minutes: float) -> np.random.Generator:
    return np.random.default_rng([seed, round(minutes * 1000)])


def build_long_file(
    clips: Sequence[SourceClip],
    minutes: float,
    seed: int,
    out_dir: str | Path,
    spec: LongFileSpec = LongFileSpec(),
    source: str = "",
) -> tuple[Path, dict[str, Any]]:
    """Write ``out_dir/audio.wav`` (exactly ``minutes`` long) and ``out_dir/truth.json``; returns the wav's
    path and the truth. ``out_dir`` is built beside and swapped in (``outputs.building_dir``): it may be
    missing, empty or a folder this function made. ``source``: where the clips came from (noted)."""
    import soundfile as sf

    from fastaed.util.outputs import building_dir

    total = round(minutes * 60 * SAMPLE_RATE)
    lead = round(spec.lead_s * SAMPLE_RATE)
    if total < 2 * lead + SAMPLE_RATE:
        raise ValueError(f"{minutes:g} min is too short for a long file (at least {2 * spec.lead_s + 1:g} s)")
    rng = _rng(seed, minutes)
    noise_rms = 10 ** (spec.noise_dbfs / 20)
    placed: list[dict[str, Any]] = []
    with building_dir(out_dir, FILE_KIND, "bench longform") as tmp:
        with sf.SoundFile(tmp / AUDIO_NAME, "w", SAMPLE_RATE, 1, "PCM_16") as out:
            position, cycle, order, next_clip, misses = 0, 0, [], 0, 0

            def write(piece: np.ndarray) -> None:
                nonlocal position
                noise = rng.standard_normal(len(piece)).astype(np.float32) * noise_rms
                out.write(np.clip(piece + noise, -1.0, 1.0))
                position += len(piece)

            write(np.zeros(lead, dtype=np.float32))
            while True:
                if next_clip == len(order):  # a new round: every clip once more, in a new order
                    order, next_clip, cycle = list(rng.permutation(len(clips))), 0, cycle + 1
                clip = clips[order[next_clip]]
                next_clip += 1
                speech = _read_clip(clip, spec.trim_db)
                if len(speech) == 0:
                    continue  # nothing above the floor: not a speech clip
                if position + len(speech) + lead > total:
                    misses += 1  # too long for what is left: a few more tries, so the end is not all silence
                    if misses > 20:
                        break
                    continue
                placed.append({"id": len(placed), "utt_id": clip.utt_id, "audio": clip.audio, "cycle": cycle,
                               "start_sample": position, "end_sample": position + len(speech),
                               "start": position / SAMPLE_RATE, "end": (position + len(speech)) / SAMPLE_RATE,
                               "text": clip.text})  # fmt: skip
                write(speech)
                long_pause = rng.random() < spec.long_pause_probability
                low, high = spec.long_pause_s if long_pause else spec.short_pause_s
                pause = round(rng.uniform(low, high) * SAMPLE_RATE)
                write(np.zeros(min(pause, total - position), dtype=np.float32))
                if position >= total - lead:
                    break
            for at in range(position, total, SAMPLE_RATE * 10):  # the rest: silence, in 10 s pieces
                write(np.zeros(min(SAMPLE_RATE * 10, total - at), dtype=np.float32))
        cycle = max((c["cycle"] for c in placed), default=0)  # rounds that placed a clip
        speech_s = sum(c["end"] - c["start"] for c in placed)
        available = sum(c.seconds for c in clips)
        truth = {
            "format": TRUTH_FORMAT, "version": TRUTH_VERSION, "minutes": minutes, "seed": seed,
            "sample_rate": SAMPLE_RATE, "duration": total / SAMPLE_RATE, "speech_seconds": speech_s,
            "source": {"manifest": source, "clips": len(clips), "seconds": available},
            "fingerprint": clips_fingerprint(clips, spec), "spec": asdict(spec), "cycles": cycle,
            "note": (f"{len(placed)} clips; the {len(clips)} source clips hold {available / 60:.1f} min, so "
                     f"they were used in {cycle} rounds, each reshuffled with new pauses")
            if cycle > 1 else f"{len(placed)} clips, each used once",
            "clips": placed, "reference_text": " ".join(c["text"] for c in placed),
        }  # fmt: skip
        text = json.dumps(truth, indent=1) + "\n"
        (tmp / TRUTH_NAME).write_text(text, encoding="utf-8")
    return Path(out_dir) / AUDIO_NAME, json.loads(text)  # as a reader of the file sees it (lists, not tuples)


def long_file(
    clips: Sequence[SourceClip],
    minutes: float,
    seed: int,
    data_dir: str | Path,
    spec: LongFileSpec = LongFileSpec(),
    source: str = "",
) -> tuple[Path, dict[str, Any]]:
    """The long file of these arguments under ``data_dir`` (``{minutes}min-seed{seed}/``): reused when its
    truth records the same clips, spec, length and seed, else (re)built."""
    folder = Path(data_dir) / f"{minutes:g}min-seed{seed}"
    truth_path = folder / TRUTH_NAME
    if truth_path.is_file() and (folder / AUDIO_NAME).is_file():
        try:
            truth = json.loads(truth_path.read_text(encoding="utf-8"))
        except ValueError:
            truth = {}
        same = {"minutes": minutes, "seed": seed, "fingerprint": clips_fingerprint(clips, spec)}
        if all(truth.get(k) == v for k, v in same.items()) and truth.get("format") == TRUTH_FORMAT:
            return folder / AUDIO_NAME, truth
    return build_long_file(clips, minutes, seed, folder, spec, source)


# ---- scores against the truth -------------------------------------------------------------------------


@dataclass(frozen=True)
class Timed:
    """A span of the file with its text (a segment, a word or a true clip)."""

    start: float
    end: float
    text: str = ""


@dataclass
class TranscriptScores:
    """What :func:`score_transcript` reports for one engine on one file (times in ms, fractions 0-1)."""

    wer: float | None
    segments: int
    boundary_median_ms: float | None  # segment starts/ends vs the nearest true clip start/end, pooled
    boundary_p90_ms: float | None
    boundary_start_median_ms: float | None
    boundary_end_median_ms: float | None
    word_median_ms: float | None  # first word start / last word end of each clip vs its true start / end
    word_p90_ms: float | None
    word_clips: int  # clips that got at least one word
    words_outside_speech: int  # words more than ``max_word_gap_s`` from every clip (text in silence)
    coverage: float  # fraction of true speech seconds inside some predicted segment
    clips_missed: int  # true clips that no segment overlaps
    clips: int
    seam_repeats: int  # segments that repeat the previous segment's text or its last words
    details: dict[str, Any] = field(default_factory=dict)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100, linear between order statistics); None for no values."""
    if not values:
        return None
    v = sorted(values)
    at = (len(v) - 1) * q / 100
    low = math.floor(at)
    high = min(low + 1, len(v) - 1)
    return v[low] + (v[high] - v[low]) * (at - low)


def nearest_distance(sorted_points: Sequence[float], x: float) -> float:
    """Distance from ``x`` to the nearest of ``sorted_points`` (non-empty, ascending)."""
    i = bisect.bisect_left(sorted_points, x)
    near = sorted_points[max(i - 1, 0) : i + 1]
    return min(abs(x - p) for p in near)


def boundary_errors(segments: Sequence[Timed], clips: Sequence[Timed]) -> dict[str, Any]:
    """Each segment's start against the nearest true clip start and its end against the nearest true end,
    in ms: median and 90th percentile of both pooled, and the medians of each side."""
    if not segments or not clips:
        return {"median_ms": None, "p90_ms": None, "start_median_ms": None, "end_median_ms": None}
    starts, ends = sorted(c.start for c in clips), sorted(c.end for c in clips)
    s = [1000 * nearest_distance(starts, x.start) for x in segments]
    e = [1000 * nearest_distance(ends, x.end) for x in segments]
    return {"median_ms": percentile(s + e, 50), "p90_ms": percentile(s + e, 90),
            "start_median_ms": percentile(s, 50), "end_median_ms": percentile(e, 50)}  # fmt: skip


def _gap(word: Timed, clip: Timed) -> float:
    """Seconds from the word's midpoint to the clip (0 inside it)."""
    mid = (word.start + word.end) / 2
    return max(clip.start - mid, mid - clip.end, 0.0)


def word_errors(
    words: Sequence[Timed], clips: Sequence[Timed], max_word_gap_s: float = 1.0
) -> dict[str, Any]:
    """Words matched to the clip nearest their midpoint (within ``max_word_gap_s``); for every clip with
    words, its first word's start against the clip's start and its last word's end against the clip's end,
    in ms (median, 90th percentile). Words near no clip are counted as ``outside``."""
    starts = [c.start for c in clips]
    by_clip: dict[int, list[Timed]] = {}
    outside = 0
    for w in words:
        i = bisect.bisect_right(starts, (w.start + w.end) / 2)
        candidates = [j for j in (i - 1, i) if 0 <= j < len(clips)]
        best = min(candidates, key=lambda j: _gap(w, clips[j]), default=None)
        if best is None or _gap(w, clips[best]) > max_word_gap_s:
            outside += 1
            continue
        by_clip.setdefault(best, []).append(w)
    errors = []
    for j, matched in by_clip.items():
        errors.append(1000 * abs(min(w.start for w in matched) - clips[j].start))
        errors.append(1000 * abs(max(w.end for w in matched) - clips[j].end))
    return {"median_ms": percentile(errors, 50), "p90_ms": percentile(errors, 90), "clips": len(by_clip),
            "outside": outside}  # fmt: skip


def union(spans: Sequence[Timed]) -> list[tuple[float, float]]:
    """The spans merged where they overlap, in time order."""
    out: list[tuple[float, float]] = []
    for s in sorted(spans, key=lambda x: x.start):
        if s.end <= s.start:
            continue
        if out and s.start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], s.end))
        else:
            out.append((s.start, s.end))
    return out


def coverage(segments: Sequence[Timed], clips: Sequence[Timed]) -> dict[str, Any]:
    """Fraction of the clips' seconds inside some segment, and the clips no segment overlaps."""
    covered = union(segments)  # disjoint and sorted: their ends are sorted too
    ends = [b for _, b in covered]
    inside, missed, total = 0.0, 0, 0.0
    for c in clips:
        total += c.end - c.start
        overlap, k = 0.0, bisect.bisect_right(ends, c.start)  # the first span ending after the clip starts
        while k < len(covered) and covered[k][0] < c.end:
            overlap += min(covered[k][1], c.end) - max(covered[k][0], c.start)
            k += 1
        inside += overlap
        missed += overlap <= 0
    return {"fraction": inside / total if total else 1.0, "missed": missed}


def _words_of(text: str) -> list[str]:
    from fastaed.data.text import strip_pnc

    return strip_pnc(text).split()


def seam_repeats(texts: Sequence[str], min_words: int = 3) -> int:
    """Segments that repeat what the one before said: the same words, or (for segments of at least
    ``min_words`` words) a start equal to the previous segment's last ``min_words`` words. Loops and text
    decoded twice where two windows or chunks meet show up here."""
    count, previous = 0, []
    for text in texts:
        words = _words_of(text)
        if not words:
            continue
        n = min_words
        same = words == previous
        seam = len(words) >= n and len(previous) >= n and words[:n] == previous[-n:]
        count += same or seam
        previous = words
    return count


def text_wer(reference: str, hypothesis: str) -> float | None:
    """WER of one long transcript after Whisper's English normaliser (None: the reference is empty then)."""
    from fastaed.decode.scoring import text_normalizer, word_error_rates

    if not text_normalizer("whisper")(reference):
        return None
    return word_error_rates([reference], [hypothesis], "whisper")["wer"]


def same_text(a: str, b: str) -> bool:
    """Equal after collapsing whitespace (the comparison of two engines' transcripts)."""
    return " ".join(a.split()) == " ".join(b.split())


def compare_texts(a: str, b: str, name_a: str, name_b: str, context: int = 50) -> dict[str, Any]:
    """Whether two transcripts are the same text (:func:`same_text`), and if not, where they part: the
    character offset and ``context`` characters around it in each."""
    x, y = " ".join(a.split()), " ".join(b.split())
    if x == y:
        return {"same": True, "first_difference": None}
    at = next((i for i, (p, q) in enumerate(zip(x, y)) if p != q), min(len(x), len(y)))
    window = slice(max(at - context, 0), at + context)
    return {"same": False, "first_difference": {"at": at, name_a: x[window], name_b: y[window]}}


def truth_clips(truth: dict[str, Any]) -> list[Timed]:
    return [Timed(float(c["start"]), float(c["end"]), c["text"]) for c in truth["clips"]]


def score_transcript(
    truth: dict[str, Any], doc: dict[str, Any], max_word_gap_s: float = 1.0
) -> TranscriptScores:
    """Every score of one engine's transcript of one long file. ``doc``: ``text`` and ``segments`` (each
    with ``start``, ``end``, ``text`` and optionally ``words``: ``start``, ``end``, ``word``), OpenAI's
    ``verbose_json`` shape. Segments without text (a skipped window) are left out."""
    clips = truth_clips(truth)
    spoken = [s for s in doc.get("segments", []) if s.get("text", "").strip()]
    segments = [Timed(float(s["start"]), float(s["end"]), s["text"]) for s in spoken]
    words = [
        Timed(float(w["start"]), float(w["end"]), w.get("word", ""))
        for s in spoken
        for w in s.get("words") or []
    ]
    text = doc.get("text") or " ".join(s.text for s in segments)
    bounds = boundary_errors(segments, clips)
    timing = word_errors(words, clips, max_word_gap_s) if words else {}
    cover = coverage(segments, clips)
    return TranscriptScores(
        wer=text_wer(truth["reference_text"], text), segments=len(segments),
        boundary_median_ms=bounds["median_ms"], boundary_p90_ms=bounds["p90_ms"],
        boundary_start_median_ms=bounds["start_median_ms"], boundary_end_median_ms=bounds["end_median_ms"],
        word_median_ms=timing.get("median_ms"), word_p90_ms=timing.get("p90_ms"),
        word_clips=timing.get("clips", 0), words_outside_speech=timing.get("outside", 0),
        coverage=cover["fraction"], clips_missed=cover["missed"], clips=len(clips),
        seam_repeats=seam_repeats([s.text for s in segments]),
        details={"words": len(words), "truth_seam_repeats": seam_repeats([c.text for c in clips])},
    )  # fmt: skip


# ---- a benchmark run's rows against issue 25's targets --------------------------------------------------

TARGETS = {"same_text": 0.95, "seq_rtfx": 1.0, "batched_rtfx": 1.5, "boundary_ms": 150.0, "word_cost": 0.10,
           "rss_growth": 2.0}  # fmt: skip


def same_text_rows(texts: dict, models: tuple[str, ...], minutes: tuple[float, ...]) -> list[dict]:
    """Per file: did fastaed sequential write openai-whisper's text (and where they part, when not)."""
    out = []
    for model in models:
        for m in minutes:
            ours, theirs = (texts.get((model, m, e)) for e in ("fastaed-sequential", "openai-sequential"))
            if ours is not None and theirs is not None:
                out.append({"model": model, "minutes": m, **compare_texts(ours, theirs, "fastaed", "openai")})
    return out


def targets(rows: list[dict[str, Any]], same: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each of issue 25's targets this run measured: value, threshold and whether it was met."""
    ok = [r for r in rows if "error" not in r]
    by = {(r["model"], r["minutes"], r["engine"]): r for r in ok}
    out: list[dict[str, Any]] = []

    def add(target: str, where: str, value: float | None, threshold: float, at_least: bool = False) -> None:
        if value is not None:
            met = value >= threshold if at_least else value <= threshold
            out.append({"target": target, "where": where, "value": value, "threshold": threshold, "met": met})

    if same:
        share = sum(s["same"] for s in same) / len(same)
        add("same text as openai-whisper (share of files)", "all", share, TARGETS["same_text"], True)
    for (model, m, name), r in by.items():
        where, s = f"{model} {m:g} min", r["scores"]
        fw_seq = by.get((model, m, "faster-whisper-sequential"))
        fw_batched = by.get((model, m, "faster-whisper-batched-8"))
        if name == "fastaed-sequential" and fw_seq:
            ratio = r["rtfx"] / fw_seq["rtfx"]
            add("sequential RTFx / faster-whisper's", where, ratio, TARGETS["seq_rtfx"], True)
        if r["mode"] == "batched" and r["program"] == "fastaed" and fw_batched:
            ratio = r["rtfx"] / fw_batched["rtfx"]
            add(f"{name} RTFx / faster-whisper batched 8", where, ratio, TARGETS["batched_rtfx"], True)
            if s["wer"] is not None and fw_batched["scores"]["wer"] is not None:
                more = s["wer"] - fw_batched["scores"]["wer"]
                add(f"{name} WER minus faster-whisper batched 8's", where, more, 0)
        if r["program"] == "fastaed":
            add(f"{name} median boundary error (ms)", where, s["boundary_median_ms"], TARGETS["boundary_ms"])
            add(f"{name} clips missed", where, s["clips_missed"], 0)
            repeats, truths = s["seam_repeats"], s["details"]["truth_seam_repeats"]
            add(f"{name} repeats at seams (<= the truth's own)", where, repeats, truths)
        nowords = by.get((model, m, "fastaed-sequential-nowords"))
        if name == "fastaed-sequential" and nowords and r["word_timestamps"]:
            cost = r["wall_seconds"] / nowords["wall_seconds"] - 1
            add("word timestamps' extra time", where, cost, TARGETS["word_cost"])
    for model, name in dict.fromkeys((r["model"], r["engine"]) for r in ok if r["program"] == "fastaed"):
        runs = sorted(
            (r for r in ok if (r["model"], r["engine"]) == (model, name)), key=lambda r: r["minutes"]
        )
        if len(runs) > 1 and runs[0]["peak_rss_mb"]:
            growth = runs[-1]["peak_rss_mb"] / runs[0]["peak_rss_mb"]
            what = f"{name} peak RSS {runs[-1]['minutes']:g} min / {runs[0]['minutes']:g} min"
            add(what, model, growth, TARGETS["rss_growth"])
    return out
