"""Real speech from Debian's Asterisk prompts: professional voices reading telephone prompts, CC-BY-SA-3.0, in
three languages (:data:`LANGUAGES`): US English and Mexican Spanish (Allison), Canadian French (June).

Sources (Debian packages, installed by ``make apt``), for each language ``XX``:

* ``asterisk-core-sounds-XX-g722``: the recordings, ``/usr/share/asterisk/sounds/<voice>/**/*.g722`` (raw
  G.722, 16 kHz; soundfile cannot read G.722, so ffmpeg decodes them: ``-f g722`` is 16 kHz by the codec's
  definition, and ffmpeg 5's raw G.722 demuxer refuses an ``-ar`` input option);
* ``asterisk-core-sounds-XX``: the transcripts,
  ``/usr/share/doc/asterisk-core-sounds-XX/core-sounds-XX.txt.gz``, one ``name: text`` line per recording,
  ``name`` being the path under the voice folder without the extension (``digits/1: one``); ``;`` starts a
  comment. Debian's 1.6.1 files are all UTF-8 (the Spanish one mostly leaves accents out: "numero",
  "contrasena"); a file that is not UTF-8 is read as Windows-1252 or Latin-1, the encoding older Asterisk
  sound releases used (:func:`decode_transcripts`).

Every transcript and every recording is accounted for: entries are written to the language's manifest
(``asterisk.jsonl``, ``asterisk_es.jsonl``, ``asterisk_fr.jsonl``) or counted in the report under a reason: a
transcript wholly in brackets, angle brackets or parentheses is a sound, not speech (``[ascending tones]``,
``<beep ascending>``, ``(beep)``), counted as silence when it says so (``(1 second of silence)``); a
transcript without a recording, a recording without a transcript (a recording in ``silence/`` counts as
silence), a file ffmpeg cannot decode, a recording without signal. What a transcript notes rather than says is
dropped from its text: a bracketed or angle-bracketed annotation (``at [@]`` -> ``at``) and a parenthesised
note ending the line (``IAX (note: does not say "2")``, French ``Pour (emphase)``); parentheses inside a
sentence are read out (French ``au menu poli (ne m'appelez plus, jamais), appuyez sur 4``). Names are
corrected where a transcript misnames its recording: one differing only in case (Spanish ``digits/1f`` for
``digits/1F``) and the few listed per language (:class:`Rename`); each correction is listed in the result.
Otherwise transcripts are kept as written: mixed case, punctuation and numerals where the speaker says the
number; the English keypad keys ``*`` and ``#`` of three dictation prompts are written as the words the voice
says, "star" and "pound". Entries say ``pnc: no`` (models are asked for plain words); score with a normaliser
(``fastaed eval --normalizer whisper``).

Each manifest is split into a fixed held-out half and an adaptation half beside it (fastaed.data.heldout). The
output is deterministic: entries in name order, 16-bit PCM wavs written by soundfile (no encoder tags).
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
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import soundfile as sf

from fastaed.constants import SAMPLE_RATE
from fastaed.data import errors
from fastaed.data.errors import BadInputError, BadInputReport
from fastaed.data.heldout import split_manifest


@dataclass(frozen=True)
class Rename:
    """A transcript line that names the wrong recording: ``name`` (and, where the name is given twice,
    ``text``) as the file writes them -> the recording it transcribes."""

    name: str
    recording: str
    text: str | None = None  # None: whatever the line says


@dataclass(frozen=True)
class AsteriskLanguage:
    """Where one language's prompts come from and what its set is called."""

    code: str  # source_lang / target_lang of the entries
    voice_dir: Path  # the recordings (.g722)
    transcripts: Path  # core-sounds-XX.txt.gz
    packages: tuple[str, ...]  # the Debian packages (and ffmpeg) that provide them
    manifest_name: str  # in the output folder; its halves sit beside it
    audio_dir: str  # wavs, relative to the output folder
    corpus: str  # the entries' corpus; utt_ids are "<corpus>-<name with / as ->"
    keypad: tuple[tuple[str, str], ...] = ()  # "*"/"#" standing alone -> the words the voice says
    renames: tuple[Rename, ...] = ()


_SOUNDS, _DOC = Path("/usr/share/asterisk/sounds"), Path("/usr/share/doc")


def _language(code: str, voice: str, suffix: str, **extra) -> AsteriskLanguage:
    base = "asterisk" + suffix
    return AsteriskLanguage(
        code=code,
        voice_dir=_SOUNDS / voice,
        transcripts=_DOC / f"asterisk-core-sounds-{code}" / f"core-sounds-{code}.txt.gz",
        packages=(f"asterisk-core-sounds-{code}", f"asterisk-core-sounds-{code}-g722", "ffmpeg"),
        manifest_name=f"{base}.jsonl",
        audio_dir=f"{base}_audio",
        corpus=base.replace("_", "-"),
        **extra,
    )


# Each rename was checked: the recording it names has no transcript of its own, and Whisper base hears the
# text in it (digits/10 "diez" where the file gives digits/0 twice, digits/20-and "veinti").
_LOCK_OUT = Rename("confbridge-lock-out-0", "confbridge-lock-out")  # English names it confbridge-lock-out
LANGUAGES: dict[str, AsteriskLanguage] = {
    "en": _language("en", "en_US_f_Allison", "", keypad=(("*", "star"), ("#", "pound"))),
    "es": _language(
        "es",
        "es_MX_f_Allison",
        "_es",
        renames=(
            _LOCK_OUT,
            Rename("digits/0", "digits/10", text="diez"),
            Rename("digits/21-and", "digits/20-and"),
        ),
    ),  # fmt: skip
    "fr": _language("fr", "fr_CA_f_June", "_fr", renames=(_LOCK_OUT,)),
}
"""Language code -> its source; a lookup at call time, so tests may swap an entry."""

# The English set's paths and names, as before there were three languages.
VOICE_DIR = LANGUAGES["en"].voice_dir
TRANSCRIPTS = LANGUAGES["en"].transcripts
PACKAGES = LANGUAGES["en"].packages
MANIFEST_NAME = LANGUAGES["en"].manifest_name
AUDIO_DIR = LANGUAGES["en"].audio_dir
CORPUS = LANGUAGES["en"].corpus

# Reasons beyond fastaed.data.errors' codes (stable strings: they appear in JSON reports)
NON_SPEECH = "non_speech"
SILENCE = "silence"
NO_TRANSCRIPT = "no_transcript"

_LINE = re.compile(r"(?P<name>[A-Za-z0-9][\w./-]*):\s*(?P<text>.*)")
_ANNOTATION = re.compile(r"\s*(\[[^\]]*\]|<[^>]*>)")  # "[@]", "<beep ascending>": what is meant, not said
_NOTE = re.compile(r"\s*\([^()]*\)$")  # a parenthesised note ending the line: "(simple tone sound plays)"
_SILENT = re.compile(r"silen", re.IGNORECASE)  # silence, silencio, silencieux
_KEY = re.compile(r"(?<!\S)[*#](?!\S)")  # a keypad key standing alone as a word


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
    heldout: Path | None = None  # the manifest's halves (fastaed.data.heldout)
    adapt: Path | None = None
    encoding: str = "utf-8"  # of the transcript file
    corrected: list[str] = field(default_factory=list)  # transcript names changed to their recording's

    @property
    def seconds(self) -> float:
        return sum(e["duration"] for e in self.entries)


def language(code: str) -> AsteriskLanguage:
    if code not in LANGUAGES:
        raise ValueError(f"no Asterisk prompts in {code!r}; expected one of {', '.join(LANGUAGES)}")
    return LANGUAGES[code]


def missing_sources(
    voice_dir: Path | None = None, transcripts: Path | None = None, lang: str = "en"
) -> list[str]:
    """What is missing to build the set (empty when everything is installed)."""
    source = language(lang)
    voice_dir, transcripts = voice_dir or source.voice_dir, transcripts or source.transcripts
    missing = [str(p) for p in (transcripts, voice_dir) if not p.exists()]
    if shutil.which("ffmpeg") is None:
        missing.append("ffmpeg")
    return missing


# -------------------------------------------------------------------------------------------- parsing


def category(name: str) -> str:
    """The subfolder (``digits``, ``letters``, ...) or ``prompts`` for the top-level recordings."""
    return name.split("/", 1)[0] if "/" in name else "prompts"


def spoken_text(said: str, keypad: Iterable[tuple[str, str]] = ()) -> str:
    """What the voice says of a transcript: annotations and a closing note dropped, keypad keys as words
    (a key without a word in ``keypad`` stays as written)."""
    words = dict(keypad)
    text = _ANNOTATION.sub(" ", _NOTE.sub("", said))
    return " ".join(_KEY.sub(lambda k: words.get(k.group(), k.group()), text).split())


def parse_transcripts(
    text: str,
    path: str,
    report: BadInputReport,
    source: AsteriskLanguage | None = None,
    corrected: list[str] | None = None,
) -> tuple[list[Prompt], set[str]]:
    """``name: text`` lines to the prompts to transcribe (in name order) and the names left out as silence or
    non-speech (each counted in ``report``). ``source``'s keypad words and renames apply (default English);
    each rename is described in ``corrected``.

    Comment (``;``) and blank lines are skipped; any other line that does not parse, and a name given twice,
    is an error naming the line.
    """
    source = source or LANGUAGES["en"]
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
        for rename in source.renames:
            if rename.name == name and rename.text in (None, said):
                if corrected is not None:
                    corrected.append(f"{path}:{number}: {name} -> {rename.recording} ({said[:40]!r})")
                name = rename.recording
                break
        if name in prompts or name in left_out:
            raise BadInputError(errors.BAD_FIELD, f"{name!r} given twice", path=path, line=number)
        wholly_noted = said.startswith("(") and said.endswith(")")  # "(beep)", "(1 second of silence)"
        spoken = "" if wholly_noted else spoken_text(said, source.keypad)
        if spoken:
            prompts[name] = Prompt(name, spoken, number)
            continue
        reason = errors.EMPTY_TEXT if not said else SILENCE if _SILENT.search(said) else NON_SPEECH
        report.add(BadInputError(reason, f"{name}: {said or 'no text'}", path=path, line=number))
        left_out.add(name)
    return sorted(prompts.values(), key=lambda p: p.name), left_out


def decode_transcripts(data: bytes) -> tuple[str, str]:
    """(text, encoding) of a transcript file's bytes: UTF-8 (a byte-order mark dropped), else Windows-1252
    (Latin-1 with curly quotes; older Asterisk releases wrote their French and Spanish files in it), else
    Latin-1, which reads any byte."""
    for encoding in ("utf-8-sig", "cp1252", "latin-1"):
        try:
            return data.decode(encoding), "utf-8" if encoding == "utf-8-sig" else encoding
        except UnicodeDecodeError:
            continue
    raise AssertionError("latin-1 decodes every byte")


def read_transcripts(path: Path) -> str:
    return _load_transcripts(path)[0]


def _load_transcripts(path: Path) -> tuple[str, str]:
    data = path.read_bytes()
    if path.suffix == ".gz":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as e:
            raise BadInputError(errors.BAD_FIELD, f"not a gzip file: {e}", path=str(path)) from None
    return decode_transcripts(data)


def recordings(voice_dir: Path) -> dict[str, Path]:
    """``name -> .g722 file`` for every recording under the voice folder."""
    return {p.relative_to(voice_dir).with_suffix("").as_posix(): p for p in sorted(voice_dir.rglob("*.g722"))}


def match_case(
    prompts: list[Prompt], audio: dict[str, Path], left_out: set[str], path: str, corrected: list[str]
) -> list[Prompt]:
    """Prompts whose name has no recording but matches exactly one untranscribed recording's name but for
    case take that name (Spanish ``digits/1f`` is ``digits/1F.g722``); each change is added to
    ``corrected``."""
    named = {p.name for p in prompts} | left_out
    by_folded: dict[str, list[str]] = {}
    for name in audio:
        if name not in named:
            by_folded.setdefault(name.casefold(), []).append(name)
    matched = []
    for prompt in prompts:
        candidates = by_folded.get(prompt.name.casefold(), [])
        if prompt.name not in audio and len(candidates) == 1:
            corrected.append(f"{path}:{prompt.line}: {prompt.name} -> {candidates[0]} (the recording's case)")
            prompt = replace(prompt, name=candidates.pop())  # popped: no second prompt takes it
        matched.append(prompt)
    return sorted(matched, key=lambda p: p.name)


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
    source: AsteriskLanguage | None = None,
) -> list[dict]:
    """Decode each transcribed recording to ``out_dir/<source.audio_dir>/<name>.wav``; returns manifest
    entries (``source``: default English).

    Transcripts without a recording and recordings without a transcript are counted in ``report`` (one in
    ``silence/`` as silence); recordings named in ``left_out`` (silence, non-speech: counted already) are
    not counted again.
    """
    source = source or LANGUAGES["en"]
    prompts = list(prompts)
    named = {p.name for p in prompts} | set(left_out)
    for prompt in prompts:
        if prompt.name not in audio:
            report.add(
                BadInputError(errors.MISSING_AUDIO, f"no recording {prompt.name}.g722", path=transcripts_path,
                              line=prompt.line)
            )  # fmt: skip
    for name, path in audio.items():
        if name in named:
            continue
        if category(name) == "silence":  # Spanish and French transcribe none of silence/1..10
            report.add(BadInputError(SILENCE, f"{name}: silence recording, no transcript", path=str(path)))
        else:
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
        rel = f"{source.audio_dir}/{prompt.name}.wav"
        (out_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(out_dir / rel), samples, SAMPLE_RATE, subtype="PCM_16")
        entries.append(
            {
                "audio_filepath": rel,
                "duration": round(len(samples) / SAMPLE_RATE, 3),
                "text": prompt.text,
                "source_lang": source.code,
                "target_lang": source.code,
                "task": "asr",
                "pnc": "no",  # ask models for plain words; scoring normalises both sides anyway
                "utt_id": f"{source.corpus}-{prompt.name.replace('/', '-')}",
                "corpus": source.corpus,
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
    lang: str = "en",
) -> AsteriskResult:
    """Write ``out_dir/<manifest>`` of language ``lang`` (``asterisk.jsonl`` for English), its halves
    (fastaed.data.heldout) and its 16 kHz wavs; every left-out entry is counted in the report.

    ``voice_dir`` and ``transcripts`` default to the Debian packages' paths (:data:`LANGUAGES`).
    """
    source = language(lang)
    voice_dir, transcripts = voice_dir or source.voice_dir, transcripts or source.transcripts
    missing = missing_sources(voice_dir, transcripts, lang)
    if missing:
        raise AsteriskSourceError(
            f"Asterisk prompts ({lang}) unavailable: missing {', '.join(missing)} "
            f"(install the Debian packages: apt-get install {' '.join(source.packages)})"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report, corrected = BadInputReport(), []
    text, encoding = _load_transcripts(transcripts)
    prompts, left_out = parse_transcripts(text, str(transcripts), report, source, corrected)
    audio = recordings(voice_dir)
    prompts = match_case(prompts, audio, left_out, str(transcripts), corrected)
    entries = build_entries(prompts, audio, out_dir, report, str(transcripts), left_out, workers, source)
    manifest = out_dir / source.manifest_name
    tmp = manifest.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for e in entries:
            f.write(json.dumps(e) + "\n")
    tmp.replace(manifest)  # a killed run never leaves a half manifest
    heldout, adapt = split_manifest(manifest)
    return AsteriskResult(manifest, entries, report, heldout, adapt, encoding, corrected)
