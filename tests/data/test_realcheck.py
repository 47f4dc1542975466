"""Real-speech check: parsing on small fake files; the real pocketsphinx sdist when it can be downloaded."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from fastaed.data import errors, realcheck
from fastaed.data.errors import BadInputError, BadInputReport

# The sdist is cached outside the test's tmp folders so the suite downloads it at most once per machine.
ARCHIVE_CACHE = Path(
    os.environ.get("FASTAED_TEST_DOWNLOADS", Path.home() / ".cache" / "fastaed" / "downloads")
)


def _speech_like(n: int = 16000, seed: int = 0) -> np.ndarray:
    """A smooth, voiced-looking int16 signal (harmonics with an envelope)."""
    t = np.arange(n) / 16000
    x = sum(np.sin(2 * np.pi * f * t) / k for k, f in enumerate((140, 280, 420, 700), start=1))
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t + seed)
    return (6000 * x * env).astype(np.int16)


def _fake_package(root: Path) -> Path:
    """A miniature pocketsphinx-5.1.1 tree with one clip of each kind (and one with no stated transcript)."""
    pkg = root / "pocketsphinx-5.1.1"
    data = pkg / "test" / "data"
    (data / "librivox").mkdir(parents=True)
    (data / "cards").mkdir()
    (data / "forever").mkdir()
    (pkg / "cython" / "test").mkdir(parents=True)
    (data / "librivox" / "fileids").write_text("clip-a\nclip-b\n")
    sf.write(data / "librivox" / "clip-a.wav", _speech_like(), 16000, subtype="PCM_16")
    (data / "librivox" / "clip-a.txt").write_text("  he was not an ill disposed\n young man\n")
    sf.write(data / "librivox" / "clip-b.wav", _speech_like(), 16000, subtype="PCM_16")  # no .txt: counted
    sf.write(data / "cards" / "001.wav", _speech_like(8000), 16000, subtype="PCM_16")
    (data / "cards" / "cards.transcription").write_text("<s> ten of clubs  </s> (001)\n")
    (data / "goforward.raw").write_bytes(_speech_like(24000).astype("<i2").tobytes())
    (pkg / "cython" / "test" / "decoder_test.py").write_text('assert hyp == "go forward ten meters"\n')
    sf.write(data / "forever" / "input_2_16k.wav", _speech_like(), 16000, subtype="PCM_16")
    (pkg / "cython" / "test" / "alignment_test.py").write_text("# no alignment text here\n")
    return pkg


def test_parse_sphinx_transcription():
    text = "<s> ten of clubs  </s> (001)\n<s> five five </s> (004)\nnoise without id\nplain words (x7)\n"
    assert realcheck.parse_sphinx_transcription(text) == {
        "001": "ten of clubs",
        "004": "five five",
        "x7": "plain words",
    }


def test_raw_pcm_is_checked(tmp_path):
    samples = _speech_like()
    le = tmp_path / "le.raw"
    le.write_bytes(samples.astype("<i2").tobytes())
    np.testing.assert_array_equal(realcheck.read_raw_pcm(le), samples)
    be = tmp_path / "be.raw"
    be.write_bytes(samples.astype(">i2").tobytes())
    with pytest.raises(BadInputError, match="big-endian"):
        realcheck.read_raw_pcm(be)
    odd = tmp_path / "odd.raw"
    odd.write_bytes(b"\x01\x02\x03")
    with pytest.raises(BadInputError) as info:
        realcheck.read_raw_pcm(odd)
    assert info.value.reason == errors.CORRUPT_AUDIO


def test_wrong_sample_rate_is_reported(tmp_path):
    path = tmp_path / "x.wav"
    sf.write(path, _speech_like(), 8000, subtype="PCM_16")
    with pytest.raises(BadInputError, match="8000 Hz"):
        realcheck.read_clip_audio(path)


def test_collect_and_write_on_fake_archive_tree(tmp_path):
    pkg = _fake_package(tmp_path / "src")
    report = BadInputReport()
    clips = realcheck.collect_clips(pkg, report)
    texts = {c.utt_id: c.text for c in clips}
    assert texts == {
        "librivox-clip-a": "he was not an ill disposed young man",
        "cards-001": "ten of clubs",
        "goforward": "go forward ten meters",
    }
    # clip-b has no transcript file; forever's text is not stated in its test file: both counted, not guessed.
    assert report.counts == {errors.EMPTY_TEXT: 1, errors.BAD_FIELD: 1}

    out = tmp_path / "out"
    entries = realcheck.write_real_check(clips, out, report)
    lines = [json.loads(x) for x in (out / realcheck.MANIFEST_NAME).read_text().splitlines()]
    assert lines == entries and len(lines) == 3
    for e in lines:
        assert e["pnc"] == "no" and e["task"] == "transcribe" and e["source_lang"] == "en"
        data, sr = sf.read(out / e["audio_filepath"], dtype="int16")
        assert sr == 16000 and abs(len(data) / sr - e["duration"]) <= 1e-3
    assert {e["utt_id"]: e["duration"] for e in lines}["goforward"] == 1.5


def test_extract_needed_takes_only_the_recordings(tmp_path):
    pkg = _fake_package(tmp_path / "src")
    (pkg / "src").mkdir()
    (pkg / "src" / "big.c").write_text("int main;")
    archive = tmp_path / realcheck.ARCHIVE_NAME
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(pkg, arcname=pkg.name)
        evil = tarfile.TarInfo("../evil.py")
        evil.size = 1
        tar.addfile(evil, io.BytesIO(b"x"))
    root = realcheck.extract_needed(archive, tmp_path / "x")
    assert root == tmp_path / "x" / "pocketsphinx-5.1.1"
    assert (root / "test" / "data" / "goforward.raw").exists()
    assert not (root / "src").exists() and not (tmp_path / "evil.py").exists()


def test_real_check_on_the_pocketsphinx_sdist(tmp_path):
    archive = realcheck.fetch_archive(ARCHIVE_CACHE, timeout=60)  # from PyPI once; a failure fails, no skip
    result = realcheck.prepare_real_check(tmp_path / "real", archive=archive)
    by_id = {e["utt_id"]: e for e in result.entries}
    assert len(result.entries) >= 12 and result.report.total == 0
    assert by_id["goforward"]["text"] == "go forward ten meters"
    assert by_id["cards-005"]["text"] == "eight of spades four of clubs seven of hearts"
    assert sum(e["corpus"] == "librivox" for e in result.entries) == 5
    assert 30 < result.seconds < 90
