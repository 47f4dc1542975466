"""Real speech from Debian's Asterisk prompts: one professional US-English voice (Allison), CC-BY-SA-3.0.

Sources (Debian packages, installed by ``make apt``):

* ``asterisk-core-sounds-en-g722``: the recordings, ``/usr/share/asterisk/sounds/en_US_f_Allison/**/*.g722``
  (raw G.722, 16 kHz; soundfile cannot read G.722, so ffmpeg decodes them: ``-f g722`` is 16 kHz by the
  codec's definition, and ffmpeg 5's raw G.722 demuxer refuses an ``-ar`` input option);
* ``asterisk-core-sounds-en``: the transcripts,
  ``/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz``, one ``name: text`` line per recording,
  ``name`` being the path under the voice folder without the extension (``digits/1: one``); ``;`` starts a
  comment.

Every transcript and every recording is accounted for: entries are written to ``asterisk.jsonl`` or counted in
the report under a reason (a transcript wholly in brackets is a non-speech sound, ``[ascending tones]``; one
wholly in parentheses is silence, ``(1 second of silence)``; a transcript without a recording, a recording
without a transcript, a file ffmpeg cannot decode, a recording without signal). A bracketed annotation after
the spoken words is not spoken and is dropped from the text (``at [@]`` → ``at``). Otherwise transcripts are
kept as written: mixed case, punctuation and numerals where the speaker says the number; the keypad keys
``*`` and ``#`` of three dictation prompts are written as the words the voice says, "star" and "pound" (the
same file's other prompts spell "the pound key"). Entries say ``pnc: no`` (models are asked for plain
words); score with a normaliser (``fastaed eval --normalizer whisper``).

The output is deterministic: entries in name order, 16-bit PCM wavs written by soundfile (no encoder tags).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import shutil
import subprocess
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from fastaed.constants import SAMPLE_RATE
from fastaed.data import errors
from fastaed.data.errors import BadInputError, BadInputReport

VOICE_DIR = Path("/usr/share/asterisk/sounds/en_US_f_Allison")
TRANSCRIPTS = Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")
PACKAGES = ("asterisk-core-sounds-en", "asterisk-core-sounds-en-g722", "ffmpeg")
MANIFEST_NAME = "asterisk.jsonl"
AUDIO_DIR = "asterisk_audio"
CORPUS = "asterisk"

# Reasons beyond fastaed.data.errors' codes (stable strings: they appear in JSON reports)
NON_SPEECH = "non_speech"
SILENCE = "silence"
NO_TRANSCRIPT = "no_transcript"

_LINE = re.compile(r"(?P<name>[A-Za-z0-9][\w./-]*):\s*(?P<text>.*)")
_ANNOTATION = re.compile(r"\s*\[[^\]]*\]")  # "[@]", "[ascending tones]": what is meant, not what is said
_KEYS = {"*": "star", "#": "pound"}  # keypad keys as the voice says them ("press * to toggle pause")
_KEY = re.compile(r"(?<!\S)[*#](?!\S)")  # a key standing alone as a word


class AsteriskSourceError(RuntimeError):
    """The Debian packages (transcripts, G.722 recordings, ffmpeg) are not installed."""


@dataclass(frozen=True)
class Prompt:
    name: str  # path under the voice folder without extension, e.g. "digits/1"
    text: str  # as written in the transcript file (annotations removed, keypad keys as words)
    line: int  # 1-based line in the transcript file


@dataclass
class AsteriskResult:
    manifest: Path
    entries: list[dict]
    report: BadInputReport

    @property
    def seconds(self) -> float:
        return sum(e["duration"] for e in self.entries)


def missing_sources(voice_dir: Path | None = None, transcripts: Path | None = None) -> list[str]:
    """What is missing to build the set (empty when everything is installed)."""
    voice_dir, transcripts = voice_dir or VOICE_DIR, transcripts or TRANSCRIPTS
    missing = [str(p) for p in (transcripts, voice_dir) if not p.exists()]
    if shutil.which("ffmpeg") is None:
        missing.append("ffmpeg")
    return missing


# -------------------------------------------------------------------------------------------- parsing


def category(name: str) -> str:
    """The subfolder (``digits``, ``letters``, ...) or ``prompts`` for the top-level recordings."""
    return name.split("/", 1)[0] if "/" in name else "prompts"


def parse_transcripts(text: str, path: str, report: BadInputReport) -> tuple[list[Prompt], set[str]]:
    """``name: text`` lines to the prompts to transcribe (in name order) and the names left out as silence or
    non-speech (each counted in ``report``).

    Comment (``;``) and blank lines are skipped; any other line that does not parse, and a name given twice,
    is an error naming the line.
    """
    prompts: dict[str, Prompt] = {}
    left_out: set[str] = set()
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith(";"):
            continue
        m = _LINE.fullmatch(line)
        if m is None:
            raise BadInputError(
                errors.BAD_FIELD, f"not a 'name: text' line: {line[:60]!r}", path=path, line=number
            )
        name, said = m.group("name"), m.group("text").strip()
        if name in prompts or name in left_out:
            raise BadInputError(errors.BAD_FIELD, f"{name!r} given twice", path=path, line=number)
        spoken = " ".join(_KEY.sub(lambda k: _KEYS[k.group()], _ANNOTATION.sub(" ", said)).split())
        if said.startswith("(") and said.endswith(")"):
            report.add(BadInputError(SILENCE, f"{name}: {said}", path=path, line=number))
            left_out.add(name)
        elif not spoken:
            reason = NON_SPEECH if said else errors.EMPTY_TEXT
            report.add(BadInputError(reason, f"{name}: {said or 'no text'}", path=path, line=number))
            left_out.add(name)
        else:
            prompts[name] = Prompt(name, spoken, number)
    return sorted(prompts.values(), key=lambda p: p.name), left_out


def read_transcripts(path: Path) -> str:
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    return data.decode("utf-8")


def recordings(voice_dir: Path) -> dict[str, Path]:
    """``name -> .g722 file`` for every recording under the voice folder."""
    return {p.relative_to(voice_dir).with_suffix("").as_posix(): p for p in sorted(voice_dir.rglob("*.g722"))}


# ------------------------------------------------------------------------------------------- decoding


def decode_g722(path: Path, timeout_s: float = 60.0) -> np.ndarray:
    """int16 samples at 16 kHz of a raw G.722 file (ffmpeg)."""
    cmd = [
        "ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-f", "g722", "-i", str(path),
        "-f", "s16le", "-ac", "1", "-ar", str(SAMPLE_RATE), "-",
    ]  # fmt: skip
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise BadInputError(errors.CORRUPT_AUDIO, f"ffmpeg failed: {e}", path=str(path)) from e
    if proc.returncode != 0:
        detail = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no message"]
        raise BadInputError(
            errors.CORRUPT_AUDIO, f"ffmpeg exit {proc.returncode}: {detail[0]}", path=str(path)
        )
    samples = np.frombuffer(proc.stdout, dtype="<i2")
    if len(samples) == 0 or not np.any(samples):
        raise BadInputError(errors.EMPTY_AUDIO, "no signal after decoding", path=str(path))
    return samples


# ----------------------------------------------------------------------------------------------- main


def build_entries(
    prompts: Iterable[Prompt],
    audio: dict[str, Path],
    out_dir: Path,
    report: BadInputReport,
    transcripts_path: str,
    left_out: set[str] = frozenset(),
    workers: int = 2,
) -> list[dict]:
    """Decode each transcribed recording to ``out_dir/asterisk_audio/<name>.wav``; returns manifest entries.

    Transcripts without a recording and recordings without a transcript are counted in ``report``;
    recordings named in ``left_out`` (silence, non-speech: counted already) are not counted again.
    """
    prompts = list(prompts)
    named = {p.name for p in prompts} | set(left_out)
    for prompt in prompts:
        if prompt.name not in audio:
            report.add(
                BadInputError(errors.MISSING_AUDIO, f"no recording {prompt.name}.g722", path=transcripts_path,
                              line=prompt.line)
            )  # fmt: skip
    for name, path in audio.items():
        if name not in named:
            report.add(BadInputError(NO_TRANSCRIPT, f"{name} has no usable transcript", path=str(path)))
    todo = [p for p in prompts if p.name in audio]

    def decode(prompt: Prompt) -> np.ndarray | BadInputError:
        try:
            return decode_g722(audio[prompt.name])
        except BadInputError as e:
            return e

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:  # ffmpeg runs in its own processes
        decoded = list(pool.map(decode, todo))
    entries = []
    for prompt, samples in zip(todo, decoded):
        if isinstance(samples, BadInputError):
            report.add(samples)
            continue
        rel = f"{AUDIO_DIR}/{prompt.name}.wav"
        (out_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(out_dir / rel), samples, SAMPLE_RATE, subtype="PCM_16")
        entries.append(
            {
                "audio_filepath": rel,
                "duration": round(len(samples) / SAMPLE_RATE, 3),
                "text": prompt.text,
                "source_lang": "en",
                "target_lang": "en",
                "task": "asr",
                "pnc": "no",  # ask models for plain words; scoring normalises both sides anyway
                "utt_id": f"{CORPUS}-{prompt.name.replace('/', '-')}",
                "corpus": CORPUS,
                "category": category(prompt.name),
                "source": f"{audio[prompt.name].name} ({prompt.name})",
                "sha1": hashlib.sha1(samples.astype("<i2").tobytes()).hexdigest(),
            }
        )
    ids = [e["utt_id"] for e in entries]
    if len(set(ids)) != len(ids):
        raise BadInputError(errors.BAD_FIELD, "two recordings map to one utt_id", path=transcripts_path)
    return entries


def prepare_asterisk(
    out_dir: str | Path,
    voice_dir: Path | None = None,
    transcripts: Path | None = None,
    workers: int = 2,
) -> AsteriskResult:
    """Write ``out_dir/asterisk.jsonl`` and its 16 kHz wavs; every left-out entry is counted in the report.

    ``voice_dir`` and ``transcripts`` default to the Debian packages' paths (:data:`VOICE_DIR`,
    :data:`TRANSCRIPTS`).
    """
    voice_dir, transcripts = voice_dir or VOICE_DIR, transcripts or TRANSCRIPTS
    missing = missing_sources(voice_dir, transcripts)
    if missing:
        raise AsteriskSourceError(
            f"Asterisk prompts unavailable: missing {', '.join(missing)} "
            f"(install the Debian packages: apt-get install {' '.join(PACKAGES)})"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = BadInputReport()
    prompts, left_out = parse_transcripts(read_transcripts(transcripts), str(transcripts), report)
    entries = build_entries(
        prompts, recordings(voice_dir), out_dir, report, str(transcripts), left_out, workers
    )
    manifest = out_dir / MANIFEST_NAME
    tmp = manifest.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for e in entries:
            f.write(json.dumps(e) + "\n")
    tmp.replace(manifest)  # a killed run never leaves a half manifest
    return AsteriskResult(manifest, entries, report)
