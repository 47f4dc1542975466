"""Asterisk prompts as real speech: parsing a fake transcript file; G.722 decoding and the manifest on real
files (skipped without the Debian packages and ffmpeg)."""

from __future__ import annotations

import gzip
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from fastaed.cli.main import main
from fastaed.data import asterisk, errors
from fastaed.data.errors import BadInputError, BadInputReport
from fastaed.data.manifest import read_manifest

FAKE_TRANSCRIPTS = """; Core Asterisk Sounds in English

activated: Activated.
beep: [this is a simple beep tone]
digits/1: one
letters/at: at [@]
silence/1: (1 second of silence)
no-recording: This prompt was never recorded.
"""

needs_packages = pytest.mark.skipif(
    bool(asterisk.missing_sources()), reason=f"needs {', '.join(asterisk.PACKAGES)} (make apt)"
)
needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")


def test_parsing_keeps_spoken_text_and_counts_silence_and_non_speech():
    report = BadInputReport()
    prompts, left_out = asterisk.parse_transcripts(FAKE_TRANSCRIPTS, "sounds.txt", report)
    assert [(p.name, p.text) for p in prompts] == [
        ("activated", "Activated."),
        ("digits/1", "one"),
        ("letters/at", "at"),  # the bracketed symbol is not spoken
        ("no-recording", "This prompt was never recorded."),
    ]
    assert left_out == {"beep", "silence/1"}
    assert dict(report.counts) == {asterisk.NON_SPEECH: 1, asterisk.SILENCE: 1}
    assert "sounds.txt:4" in report.examples[asterisk.NON_SPEECH][0]  # file and line named


def test_keypad_keys_are_written_as_the_voice_says_them():
    text = "dictate/both_help: press * to toggle pause, press # to enter a new name\nx: C# and a*b stay\n"
    prompts, _ = asterisk.parse_transcripts(text, "sounds.txt", BadInputReport())
    assert [p.text for p in prompts] == [
        "press star to toggle pause, press pound to enter a new name",
        "C# and a*b stay",
    ]


@pytest.mark.parametrize(
    "text, message", [("activated: a\nactivated: b\n", "given twice"), ("just words\n", "not a 'name: text'")]
)
def test_malformed_transcript_lines_are_errors_naming_the_line(text, message):
    with pytest.raises(BadInputError, match=message) as info:
        asterisk.parse_transcripts(text, "sounds.txt", BadInputReport())
    assert info.value.line == 2 if "twice" in message else info.value.line == 1


def test_missing_sources_names_what_to_install(tmp_path):
    missing = asterisk.missing_sources(tmp_path / "voice", tmp_path / "t.txt.gz")
    assert str(tmp_path / "voice") in missing and str(tmp_path / "t.txt.gz") in missing
    with pytest.raises(asterisk.AsteriskSourceError, match="apt-get install asterisk-core-sounds-en"):
        asterisk.prepare_asterisk(tmp_path / "out", tmp_path / "voice", tmp_path / "t.txt.gz")


def _encode_g722(path: Path, seconds: float, freq: float) -> None:
    """A voiced-looking tone encoded to raw G.722 by ffmpeg (the codec the Debian package ships)."""
    t = np.arange(int(16000 * seconds)) / 16000
    x = (0.3 * np.sin(2 * np.pi * freq * t) * np.hanning(len(t)) * 32767).astype("<i2")
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "s16le", "-ar", "16000", "-ac", "1", "-i", "-",
         "-c:a", "g722", "-f", "g722", str(path)],
        input=x.tobytes(), check=True,
    )  # fmt: skip


@pytest.fixture
def fake_voice(tmp_path):
    voice = tmp_path / "voice"
    for name, seconds in (("activated", 1.0), ("beep", 0.5), ("digits/1", 0.6), ("letters/at", 0.4)):
        _encode_g722(voice / f"{name}.g722", seconds, 220)
    _encode_g722(voice / "orphan.g722", 0.3, 300)  # a recording nobody transcribed
    transcripts = tmp_path / "core-sounds-en.txt.gz"
    transcripts.write_bytes(gzip.compress(FAKE_TRANSCRIPTS.encode()))
    return voice, transcripts


@needs_ffmpeg
def test_every_entry_is_written_or_counted(tmp_path, fake_voice):
    voice, transcripts = fake_voice
    result = asterisk.prepare_asterisk(tmp_path / "out", voice, transcripts, workers=2)
    assert [e["utt_id"] for e in result.entries] == [
        "asterisk-activated", "asterisk-digits-1", "asterisk-letters-at",
    ]  # fmt: skip
    assert dict(result.report.counts) == {
        asterisk.NON_SPEECH: 1, asterisk.SILENCE: 1, errors.MISSING_AUDIO: 1, asterisk.NO_TRANSCRIPT: 1,
    }  # fmt: skip
    first = result.entries[0]
    assert first["duration"] == pytest.approx(1.0, abs=0.01)
    assert {k: first[k] for k in ("source_lang", "target_lang", "task", "pnc", "corpus", "category")} == {
        "source_lang": "en", "target_lang": "en", "task": "asr", "pnc": "no", "corpus": "asterisk",
        "category": "prompts",
    }  # fmt: skip
    audio, rate = sf.read(tmp_path / "out" / result.entries[1]["audio_filepath"], dtype="int16")
    assert rate == 16000 and len(audio) == pytest.approx(0.6 * 16000, abs=160)
    utts = list(read_manifest(result.manifest))  # a manifest fastaed reads as is
    assert [u.task for u in utts] == ["transcribe"] * 3 and utts[2].text == "at"


@needs_ffmpeg
def test_output_is_deterministic(tmp_path, fake_voice):
    voice, transcripts = fake_voice
    a = asterisk.prepare_asterisk(tmp_path / "a", voice, transcripts, workers=1)
    b = asterisk.prepare_asterisk(tmp_path / "b", voice, transcripts, workers=3)
    assert a.manifest.read_text() == b.manifest.read_text()


def test_undecodable_or_empty_recordings_are_named(tmp_path):
    empty = tmp_path / "empty.g722"
    empty.write_bytes(b"")
    with pytest.raises(BadInputError) as info:
        asterisk.decode_g722(empty)
    assert info.value.reason in (errors.EMPTY_AUDIO, errors.CORRUPT_AUDIO) and info.value.path == str(empty)


@needs_packages
def test_real_transcripts_cover_every_recording():
    report = BadInputReport()
    prompts, left_out = asterisk.parse_transcripts(
        asterisk.read_transcripts(asterisk.TRANSCRIPTS), str(asterisk.TRANSCRIPTS), report
    )
    audio = asterisk.recordings(asterisk.VOICE_DIR)
    assert len(audio) == 568 and set(audio) <= {p.name for p in prompts} | left_out
    assert len(left_out) == 15 and report.counts[asterisk.SILENCE] == 10
    assert [p.name for p in prompts if p.name not in audio] == ["pls-try-call-later"]


@needs_packages
def test_real_recordings_decode_to_the_stated_duration(tmp_path):
    voice = tmp_path / "voice"
    for name in ("activated", "digits/1", "letters/at"):
        (voice / name).parent.mkdir(parents=True, exist_ok=True)
        (voice / f"{name}.g722").symlink_to(asterisk.VOICE_DIR / f"{name}.g722")
    transcripts = tmp_path / "t.txt"
    transcripts.write_text("activated: Activated.\ndigits/1: one\nletters/at: at [@]\n")
    result = asterisk.prepare_asterisk(tmp_path / "out", voice, transcripts)
    # G.722 is 64 kbit/s: 8000 bytes per second of 16 kHz audio
    for entry, name in zip(result.entries, ("activated", "digits/1", "letters/at")):
        size = (asterisk.VOICE_DIR / f"{name}.g722").stat().st_size
        assert entry["duration"] == pytest.approx(size / 8000, abs=1e-3)
    assert result.report.total == 0 and [e["text"] for e in result.entries] == ["Activated.", "one", "at"]


@needs_ffmpeg
def test_cli_builds_the_asterisk_set_and_prints_the_report(tmp_path, fake_voice, monkeypatch, capsys):
    voice, transcripts = fake_voice
    monkeypatch.setattr(asterisk, "VOICE_DIR", voice)
    monkeypatch.setattr(asterisk, "TRANSCRIPTS", transcripts)
    with pytest.raises(SystemExit) as info:
        main(["data", "real-check", "--out", str(tmp_path / "out"), "--sets", "asterisk"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "3 clips" in out and "bad input: 4 skipped" in out and "no_transcript: 1" in out
    assert len((tmp_path / "out" / "asterisk.jsonl").read_text().splitlines()) == 3


def test_cli_refuses_unknown_sets(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["data", "real-check", "--out", str(tmp_path), "--sets", "timit"])
    assert info.value.code != 0 and "timit" in capsys.readouterr().err


def test_cli_notes_a_missing_asterisk_set_among_several(tmp_path, monkeypatch, capsys):
    from fastaed.cli import data as data_cli

    monkeypatch.setattr(asterisk, "VOICE_DIR", tmp_path / "absent")
    built = []
    monkeypatch.setattr(
        data_cli, "_pocketsphinx_set", lambda args: built.append("pocketsphinx")
    )  # no network
    with pytest.raises(SystemExit) as info:
        main(["data", "real-check", "--out", str(tmp_path / "out")])  # default: both sets
    assert info.value.code == 0 and built == ["pocketsphinx"]
    assert f"asterisk: not built, missing {tmp_path / 'absent'}" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:  # asked for alone: an error naming the packages
        main(["data", "real-check", "--out", str(tmp_path / "out"), "--sets", "asterisk"])
    assert info.value.code != 0 and "apt-get install" in capsys.readouterr().err
