"""Asterisk prompts as real speech: parsing a fake transcript file; G.722 decoding and the manifest on real
files (skipped without the Debian packages and ffmpeg)."""

from __future__ import annotations

import gzip
import shutil
import subprocess
from dataclasses import replace
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


def _missing(lang: str) -> pytest.MarkDecorator:
    source = asterisk.LANGUAGES[lang]
    return pytest.mark.skipif(
        bool(asterisk.missing_sources(lang=lang)), reason=f"needs {', '.join(source.packages)} (make apt)"
    )


# Per language: recordings, transcripts left out, names corrected, recordings without a transcript (beyond
# silence/ and the letters/asciiNN punctuation the Spanish and French files never transcribe).
REAL_COUNTS = {
    "en": (568, 17, 0, set()),
    "es": (527, 8, 5, {"confbridge-leave", "digits/at_s", "dir-first"}),
    "fr": (561, 9, 1, {"beep", "confbridge-leave", "digits/at", "digits/dollars", "digits/et", "dir-first",
                       "letters/asterisk", "letters/zed"}),
}  # fmt: skip


@pytest.mark.parametrize("lang", [pytest.param(code, marks=_missing(code)) for code in REAL_COUNTS])
def test_real_transcripts_account_for_every_recording(lang):
    source = asterisk.LANGUAGES[lang]
    report, corrected = BadInputReport(), []
    text = asterisk.read_transcripts(source.transcripts)
    prompts, left_out = asterisk.parse_transcripts(text, str(source.transcripts), report, source, corrected)
    audio = asterisk.recordings(source.voice_dir)
    prompts = asterisk.match_case(prompts, audio, left_out, str(source.transcripts), corrected)
    recorded, left, renamed, untranscribed = REAL_COUNTS[lang]
    assert len(audio) == recorded and len(left_out) == left and len(corrected) == renamed
    named = {p.name for p in prompts} | left_out
    unnamed = {n for n in audio if n not in named and not n.startswith(("silence/", "letters/ascii"))}
    assert unnamed == untranscribed
    if lang == "en":  # every English recording is transcribed; one transcript has no recording
        assert report.counts[asterisk.SILENCE] == 10 and set(audio) <= named
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
    _use_source(monkeypatch, "en", voice, transcripts)
    with pytest.raises(SystemExit) as info:
        main(["data", "real-check", "--out", str(tmp_path / "out"), "--sets", "asterisk"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "3 clips" in out and "bad input: 4 skipped" in out and "no_transcript: 1" in out
    lines = (tmp_path / "out" / "asterisk.jsonl").read_text().splitlines()
    heldout = (tmp_path / "out" / "asterisk.heldout.jsonl").read_text().splitlines()
    adapt = (tmp_path / "out" / "asterisk.adapt.jsonl").read_text().splitlines()
    assert len(lines) == 3 and sorted(heldout + adapt) == sorted(lines)  # the halves, written beside it
    assert f"asterisk.heldout.jsonl: {len(heldout)} clips" in out


@pytest.mark.parametrize("sets", ["timit", "asterisk,asterisk-de", ","])
def test_cli_refuses_unknown_sets_naming_the_known_ones(tmp_path, capsys, sets):
    with pytest.raises(SystemExit) as info:
        main(["data", "real-check", "--out", str(tmp_path / "out"), "--sets", sets])
    err = capsys.readouterr().err
    assert info.value.code != 0 and "pocketsphinx, asterisk, asterisk-es, asterisk-fr" in err
    assert ("asterisk-de" in err) if "de" in sets else ("timit" in err or "empty" in err)
    assert not (tmp_path / "out").exists()  # refused before anything is written


def _use_source(monkeypatch, lang: str, voice: Path, transcripts: Path) -> None:
    source = replace(asterisk.LANGUAGES[lang], voice_dir=voice, transcripts=transcripts)
    monkeypatch.setitem(asterisk.LANGUAGES, lang, source)


def test_cli_notes_missing_asterisk_sets_among_several(tmp_path, monkeypatch, capsys):
    from fastaed.cli import data as data_cli

    for lang in asterisk.LANGUAGES:
        _use_source(monkeypatch, lang, tmp_path / f"absent-{lang}", tmp_path / f"absent-{lang}.txt.gz")
    built = []
    monkeypatch.setattr(
        data_cli, "_pocketsphinx_set", lambda args: built.append("pocketsphinx")
    )  # no network
    with pytest.raises(SystemExit) as info:
        main(["data", "real-check", "--out", str(tmp_path / "out")])  # default: every set
    assert info.value.code == 0 and built == ["pocketsphinx"]
    out = capsys.readouterr().out
    for name, lang in (("asterisk", "en"), ("asterisk-es", "es"), ("asterisk-fr", "fr")):
        assert f"{name}: not built, missing {tmp_path / f'absent-{lang}.txt.gz'}" in out
    with pytest.raises(SystemExit) as info:  # asked for by name: an error naming the packages
        main(["data", "real-check", "--out", str(tmp_path / "out"), "--sets", "pocketsphinx,asterisk-fr"])
    err = capsys.readouterr().err
    assert (
        info.value.code != 0 and "apt-get install asterisk-core-sounds-fr asterisk-core-sounds-fr-g722" in err
    )


# ---- Spanish and French: the files' own conventions -------------------------------------------------------

FAKE_ES = """; Core Asterisk Sounds in Spanish

digits/0: cero
digits/0: diez
digits/1f: una
confbridge-join: (beep)
vm-tempgreetactive: Sus saludos [temporales] estan actualmente en uso
dir-welcome:
"""

FAKE_FR = """; Core Asterisk Sounds in French
for: Pour (emphase)
priv-callee-options: au menu poli (ne m'appelez plus, jamais), appuyez sur 4.
beeperr: (ahooga)
conf-enteringno: Vous entrez dans la conférence:
"""


def test_spanish_names_given_twice_or_misnamed_are_corrected_and_listed():
    report, corrected = BadInputReport(), []
    source = asterisk.LANGUAGES["es"]
    prompts, left_out = asterisk.parse_transcripts(FAKE_ES, "es.txt", report, source, corrected)
    assert [(p.name, p.text) for p in prompts] == [
        ("digits/0", "cero"),
        ("digits/10", "diez"),  # the file's second "digits/0" line
        ("digits/1f", "una"),
        ("vm-tempgreetactive", "Sus saludos estan actualmente en uso"),  # Whisper hears no "temporales"
    ]
    assert corrected == ["es.txt:4: digits/0 -> digits/10 ('diez')"]
    assert left_out == {"confbridge-join", "dir-welcome"}
    assert dict(report.counts) == {asterisk.NON_SPEECH: 1, errors.EMPTY_TEXT: 1}  # "(beep)" is no silence
    audio = {name: Path(f"{name}.g722") for name in ("digits/0", "digits/10", "digits/1F", "digits/1M")}
    matched = asterisk.match_case(prompts, audio, left_out, "es.txt", corrected)
    assert [p.name for p in matched] == ["digits/0", "digits/10", "digits/1F", "vm-tempgreetactive"]
    assert corrected[-1] == "es.txt:5: digits/1f -> digits/1F (the recording's case)"


def test_a_name_given_twice_without_a_rename_is_still_an_error():
    with pytest.raises(BadInputError, match="given twice") as info:  # English has no digits/0 rename
        asterisk.parse_transcripts(FAKE_ES, "es.txt", BadInputReport(), asterisk.LANGUAGES["en"])
    assert info.value.line == 4


def test_french_closing_notes_are_dropped_and_parenthesised_speech_kept():
    report = BadInputReport()
    prompts, left_out = asterisk.parse_transcripts(FAKE_FR, "fr.txt", report, asterisk.LANGUAGES["fr"])
    assert {p.name: p.text for p in prompts} == {
        "for": "Pour",
        "priv-callee-options": "au menu poli (ne m'appelez plus, jamais), appuyez sur 4.",
        "conf-enteringno": "Vous entrez dans la conférence:",
    }
    assert left_out == {"beeperr"} and dict(report.counts) == {asterisk.NON_SPEECH: 1}


def test_english_sound_and_note_annotations_are_not_reference_text():
    text = 'confbridge-join: <beep ascending>\nspy-iax2: IAX (note: does not say "2")\n'
    text += "silence/1: (1 second of silence)\n"
    report = BadInputReport()
    prompts, left_out = asterisk.parse_transcripts(text, "en.txt", report)
    assert [(p.name, p.text) for p in prompts] == [("spy-iax2", "IAX")]
    assert dict(report.counts) == {asterisk.NON_SPEECH: 1, asterisk.SILENCE: 1}


@pytest.mark.parametrize(
    "data, encoding",
    [
        (FAKE_FR.encode("utf-8"), "utf-8"),
        (b"\xef\xbb\xbf" + FAKE_FR.encode("utf-8"), "utf-8"),  # a byte-order mark is not part of the comment
        (FAKE_FR.encode("latin-1"), "cp1252"),  # how older Asterisk releases wrote French
        (FAKE_FR.replace("conférence", "conf\x81érence").encode("latin-1"), "latin-1"),  # not cp1252 either
    ],
)
def test_transcripts_are_read_as_utf8_or_else_as_latin1(tmp_path, data, encoding):
    path = tmp_path / "core-sounds-fr.txt.gz"
    path.write_bytes(gzip.compress(data))
    text, found = asterisk.decode_transcripts(gzip.decompress(path.read_bytes()))
    assert found == encoding and asterisk.read_transcripts(path) == text
    prompts, _ = asterisk.parse_transcripts(text, str(path), BadInputReport(), asterisk.LANGUAGES["fr"])
    assert "conférence" in prompts[0].text or "conf\x81érence" in prompts[0].text


def test_a_transcript_file_that_is_not_gzip_is_named(tmp_path):
    path = tmp_path / "core-sounds-es.txt.gz"
    path.write_text("digits/1: uno\n")
    with pytest.raises(BadInputError, match="not a gzip file") as info:
        asterisk.read_transcripts(path)
    assert info.value.path == str(path)


def test_unknown_language_is_a_clear_error():
    with pytest.raises(ValueError, match="no Asterisk prompts in 'de'; expected one of en, es, fr"):
        asterisk.missing_sources(lang="de")


@needs_ffmpeg
def test_spanish_set_is_written_under_its_own_names_with_its_halves(tmp_path):
    voice = tmp_path / "voice"
    for name in ("digits/0", "digits/10", "digits/1F", "confbridge-join", "silence/1", "vm-tempgreetactive"):
        _encode_g722(voice / f"{name}.g722", 0.3, 220)
    transcripts = tmp_path / "core-sounds-es.txt.gz"
    transcripts.write_bytes(gzip.compress(FAKE_ES.encode()))
    result = asterisk.prepare_asterisk(tmp_path / "out", voice, transcripts, lang="es")
    assert result.manifest == tmp_path / "out" / "asterisk_es.jsonl" and len(result.corrected) == 2
    assert [e["utt_id"] for e in result.entries] == [
        "asterisk-es-digits-0", "asterisk-es-digits-10", "asterisk-es-digits-1F",
        "asterisk-es-vm-tempgreetactive",
    ]  # fmt: skip
    assert {(e["source_lang"], e["target_lang"], e["corpus"]) for e in result.entries} == {
        ("es", "es", "asterisk-es")
    }
    assert all(e["audio_filepath"].startswith("asterisk_es_audio/") for e in result.entries)
    # every recording accounted for: silence/1 has no transcript and counts as silence
    assert dict(result.report.counts) == {
        asterisk.NON_SPEECH: 1, errors.EMPTY_TEXT: 1, asterisk.SILENCE: 1,
    }  # fmt: skip
    assert (result.heldout.name, result.adapt.name) == (
        "asterisk_es.heldout.jsonl",
        "asterisk_es.adapt.jsonl",
    )
    halves = result.heldout.read_text().splitlines() + result.adapt.read_text().splitlines()
    assert sorted(halves) == sorted(result.manifest.read_text().splitlines())
    assert len(list(read_manifest(result.adapt))) + len(list(read_manifest(result.heldout))) == 4  # readable
