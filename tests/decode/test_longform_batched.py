"""Batched long-form decoding (issue 25): voice activity -> chunks with their true offsets -> duration-sorted
batches, for Whisper and for fastaed's own models.

Batching never changes a chunk's text (each chunk decodes as it would alone); segments follow the speech of
a real long file (every clip inside a segment, boundaries close to the clips' edges); a FastConformer model
with a CTC head gets timed words; several files decode together and each keeps its own times.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from fastaed.decode.longform import LongFormConfig, transcribe_long
from fastaed.decode.transcribe import DecodeConfig, Transcriber, utterances_from_audio
from fastaed.formats import save_model
from fastaed.model import build_model, preset_config
from fastaed.testing import train_tiny_tokenizer
from tests.decode.test_longform import _joined_real_file
from tests.decode.test_longform import long_file as long_file  # noqa: F401  (module fixture, reused)
from tests.decode.test_longform import tiny_en as tiny_en  # noqa: F401

BATCHED = LongFormConfig(long_form="batched")


def _utts(*paths):
    return utterances_from_audio(list(paths), source_lang="en", target_lang="en", task="transcribe", pnc=True)


@pytest.fixture(scope="module")
def whisper_batched(tiny_en, long_file):  # noqa: F811
    tr = Transcriber(tiny_en, DecodeConfig(progress=False, batch_size=8))
    return transcribe_long(tr, _utts(long_file[0]), BATCHED)


def test_batching_never_changes_a_chunks_text(tiny_en, long_file, whisper_batched):  # noqa: F811
    one = Transcriber(tiny_en, DecodeConfig(progress=False, batch_size=1))
    alone = transcribe_long(one, _utts(long_file[0]), BATCHED)
    assert [s.text for s in alone.transcripts[0].segments] == [
        s.text for s in whisper_batched.transcripts[0].segments
    ]
    assert whisper_batched.mode == "batched" and whisper_batched.windows >= 2  # several chunks, one batch


def test_segments_follow_the_speech_of_a_real_long_file(whisper_batched, long_file):  # noqa: F811
    _, truth = long_file
    segments = whisper_batched.transcripts[0].segments
    assert all(a.end <= b.start for a, b in zip(segments, segments[1:]))  # in order, never overlapping
    for clip in truth:  # every clip's speech is one segment (the clips' own leading/trailing silence aside)
        overlapping = [s for s in segments if s.start < clip["end"] and clip["start"] < s.end]
        assert len(overlapping) == 1, clip
    errors = [min(abs(c["start"] - s.start) for s in segments) for c in truth]
    errors += [min(abs(c["end"] - s.end) for s in segments) for c in truth]
    assert float(np.median(errors)) < 0.35, errors  # the recordings hold ~0.1-0.3 s of their own silence
    text = whisper_batched.transcripts[0].text.lower()
    assert "dashwood" in text and "selfish" in text


def test_several_files_decode_together_and_keep_their_own_times(tiny_en, long_file, tmp_path):  # noqa: F811
    path, truth = long_file
    wave, rate = sf.read(path, dtype="float32")
    shifted = tmp_path / "shifted.wav"  # the same speech 4 s later
    sf.write(shifted, np.concatenate([np.zeros(4 * rate, dtype=np.float32), wave]), rate)
    tr = Transcriber(tiny_en, DecodeConfig(progress=False, batch_size=16))
    a, b = transcribe_long(tr, _utts(path, shifted), BATCHED).transcripts
    assert (a.audio_filepath, b.audio_filepath) == (str(path), str(shifted))
    assert [s.text for s in a.segments] == [s.text for s in b.segments]
    for x, y in zip(a.segments, b.segments):
        assert y.start - x.start == pytest.approx(4.0, abs=0.1)  # the detector decides per 32 ms window


@pytest.fixture(scope="module")
def ctc_checkpoint(tmp_path_factory):
    """A random FastConformer model with a CTC head and a SentencePiece tokenizer (fastaed's own family)."""
    root = tmp_path_factory.mktemp("ctc")
    tokenizer = train_tiny_tokenizer(root / "tokenizer", vocab_size=64)
    torch.manual_seed(0)
    config = preset_config("test", tokenizer.vocab_size)
    # At most 14 tokens per chunk: a random decoder loops, and a loop is longer than CTC frames can align.
    config = dataclasses.replace(
        config, ctc_weight=0.3, decoder=dataclasses.replace(config.decoder, max_len=16)
    )
    return save_model(build_model(config).eval(), root / "ckpt", tokenizer=tokenizer)


def test_a_ctc_model_gets_timed_words_inside_its_speech(ctc_checkpoint, long_file):  # noqa: F811
    path, truth = long_file
    tr = Transcriber(ctc_checkpoint, DecodeConfig(progress=False, batch_size=4))
    cfg = dataclasses.replace(BATCHED, word_timestamps=True, chunk_s=12.0)
    (t,) = transcribe_long(tr, _utts(path), cfg).transcripts
    assert t.segments, "a random model still writes something for every chunk"
    segments = t.segments
    for i, s in enumerate(segments):  # a random model's words fall anywhere in their chunk, but each word's
        # middle lies between the neighbouring segments (words go to the speech region their middle is in)
        assert s.end - s.start <= 12.0 + 1e-6 and s.words
        low = segments[i - 1].end if i else 0.0
        high = segments[i + 1].start if i + 1 < len(segments) else truth[-1]["end"] + 1.0
        assert all(low <= (w.start + w.end) / 2 <= high and w.start <= w.end for w in s.words)
        assert all(a.start <= b.start for a, b in zip(s.words, s.words[1:]))
    speech = [(c["start"] - 0.3, c["end"] + 0.3) for c in truth]
    for s in t.segments:  # segments lie on speech, never on the pauses alone
        assert any(a < s.end and s.start < b for a, b in speech), (s.start, s.end)


def test_sequential_is_refused_for_a_model_without_timestamp_tokens(ctc_checkpoint, long_file, tmp_path):  # noqa: F811
    run = subprocess.run(
        [sys.executable, "-m", "fastaed", "transcribe", str(ctc_checkpoint), str(long_file[0]), "--out",
         str(tmp_path / "x.srt"), "--long-form", "sequential", "--no-progress"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 2 and "sequential" in run.stderr and "batched" in run.stderr
    assert "Traceback" not in run.stderr and not (tmp_path / "x.srt").exists()


def test_word_timestamps_reach_the_json_output(tiny_en, long_file, tmp_path):  # noqa: F811
    out = tmp_path / "t.json"
    run = subprocess.run(
        [sys.executable, "-m", "fastaed", "transcribe", str(tiny_en), str(long_file[0]), "--out", str(out),
         "--long-form", "batched", "--word-timestamps", "--no-progress"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["segments"] and all(s["words"] for s in doc["segments"])
    assert doc["words"] == [w for s in doc["segments"] for w in s["words"]]
    assert doc["duration"] == pytest.approx(sf.info(long_file[0]).duration, abs=0.01)


def test_builder_of_joined_files_is_reproducible(tmp_path):
    a, truth_a = _joined_real_file(tmp_path / "a.wav")
    b, truth_b = _joined_real_file(tmp_path / "b.wav")
    assert truth_a == truth_b and a.read_bytes() == b.read_bytes()
