"""Transcript files: jsonl, json (OpenAI ``verbose_json``), txt, srt, vtt and tsv.

txt, srt, vtt and tsv are byte for byte what openai-whisper (20250625)'s writers produce for the same segments
and words, quirks included, so subtitle tools and scripts made for openai-whisper read ours unchanged:

- timestamps round to whole milliseconds with Python's ``round`` (half to even on the binary value), srt
  always writes hours (``HH:MM:SS,mmm``), vtt only from one hour on (``MM:SS.mmm``);
- without words, one cue per segment, its text stripped and ``-->`` written ``->`` (a cue's text may not hold
  the arrow); a segment with empty text still gets its (empty) cue;
- with words (the first segment has a word list), cues are built from the words: see :class:`SubtitleOptions`
  for how lines and cues break. Word text is written as the model wrote it (openai does not escape ``-->``
  there either).

Outputs never replace what a user owns (``fastaed.util.outputs``): several input files go into a marked output
folder, one file per input; a single file is replaced only when fastaed wrote it: a json/jsonl transcript is
recognised by its keys, a plain-text one (txt, srt, vtt, tsv: their content cannot say who made them) by a
hidden stamp beside it, ``.NAME.fastaed-output.json``, holding the digest of what was written (so a file the
user has since edited is theirs again).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from fastaed.decode.segments import FileTranscript, Segment
from fastaed.util.outputs import (
    MARKER_FORMAT,
    FileKind,
    OutputExistsError,
    building_dir,
    check_output_dir,
    check_output_file,
    replacing_file,
)

FORMATS = ("jsonl", "json", "txt", "srt", "vtt", "tsv")
FOLDER_KIND = "transcripts folder"  # several input files: one transcript file each, in a marked folder
STAMP_SUFFIX = ".fastaed-output.json"  # beside a single txt/srt/vtt/tsv output: ".NAME" + this
_STAMPED = ("txt", "srt", "vtt", "tsv")
_UNBOUNDED = 1000  # openai's stand-in for "no limit" on line width and words per line (a real bound, kept)
_TAB = "\t"  # a tab in text would be read as another column of tsv
_LONG_PAUSE_S = 3.0  # with line width and count set, a word this long after the previous one starts a new cue
_LEADING_SPACE_AND_REST = re.compile(r"^(\s*)(.*)$")  # a word's leading whitespace stays outside <u>...</u>


def format_for(path: Path, explicit: str | None) -> str:
    """The output format: ``explicit`` (``--format``) if given, else the extension of ``path`` (``--out``)."""
    if explicit is not None:
        if explicit not in FORMATS:
            raise ValueError(f"--format {explicit}: not a transcript format (one of {', '.join(FORMATS)})")
        return explicit
    suffix = Path(path).suffix.lower()
    if suffix[1:] in FORMATS:
        return suffix[1:]
    said = f"its extension {suffix!r} is not one" if suffix else "it has no extension"
    raise ValueError(
        f"--out {path}: cannot tell the transcript format ({said} of "
        f"{', '.join('.' + f for f in FORMATS)}); name such a file or give --format"
    )


@dataclass(frozen=True)
class SubtitleOptions:
    """How srt and vtt cues are cut from word timestamps (openai-whisper's ``--max_line_width`` ... flags).

    They act only when the segments carry words. Unset (None), each segment is one cue, its words on one line.

    - ``max_line_width`` (characters): a word that would make its line longer starts a new line.
    - ``max_line_count``: with ``max_line_width`` also set, segments are no longer kept apart: words flow into
      cues of at most this many lines, and a pause over 3 s before a word starts a new cue. Without
      ``max_line_width`` lines only break past 1000 characters, so it has next to no effect.
    - ``max_words_per_line``: while segments are kept apart (width and count not both set), a new cue starts
      every this many words of a segment; it has no effect once width and count are both set.
    - ``highlight_words``: one cue per word, the whole cue text with that word in ``<u>...</u>`` (plus a
      cue of the plain text to fill any gap between words).
    """

    max_line_width: int | None = None
    max_line_count: int | None = None
    max_words_per_line: int | None = None
    highlight_words: bool = False

    def __post_init__(self) -> None:
        for name in ("max_line_width", "max_line_count", "max_words_per_line"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                flag = "--" + name.replace("_", "-")
                raise ValueError(f"{flag} {value}: must be a whole number of at least 1")

    @property
    def uses_words(self) -> bool:
        """Whether any option needs word timestamps (openai refuses them without ``--word_timestamps``)."""
        limits = (self.max_line_width, self.max_line_count, self.max_words_per_line)
        return self.highlight_words or any(limit is not None for limit in limits)

    def ineffective(self) -> list[str]:
        """Warnings for options that change nothing in this combination (as openai's command line warns)."""
        notes = []
        if self.max_line_count and not self.max_line_width:
            notes.append("--max-line-count has no effect without --max-line-width")
        if self.max_words_per_line and self.max_line_width:
            notes.append("--max-words-per-line has no effect with --max-line-width")
        return notes


# ---- rendering ---------------------------------------------------------------------------------------------


def format_timestamp(seconds: float, *, always_hours: bool, decimal_marker: str) -> str:
    """``[HH:]MM:SS<marker>mmm``, rounded to the nearest millisecond (hours when asked or when non-zero)."""
    millis = round(float(seconds) * 1000.0)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1_000)
    hours_part = f"{hours:02d}:" if always_hours or hours > 0 else ""
    return f"{hours_part}{minutes:02d}:{secs:02d}{decimal_marker}{millis:03d}"


def _check_times(transcript: FileTranscript) -> None:
    """Subtitle times must be finite non-negative seconds (openai asserts it): a bad one is named here."""
    for seg in transcript.segments:
        named = [("start", seg.start), ("end", seg.end)]
        for w in seg.words or []:
            named += [(f"word {w.word.strip()!r} start", w.start), (f"word {w.word.strip()!r} end", w.end)]
        for what, value in named:
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(
                    f"{transcript.audio_filepath}: segment {seg.id} {what} is {value!r}; "
                    "subtitle times must be finite and non-negative seconds"
                )


# A word on its way into a cue: text (stripped at a line start, "\n" before it at a line break), start, end
_Piece = tuple[str, float, float]


def _word_groups(segments: list[Segment], options: SubtitleOptions) -> Iterator[list[_Piece]]:
    """The words of each cue, in order, with their line breaks (openai's ``iterate_subtitles``)."""
    width_and_count = options.max_line_width is not None and options.max_line_count is not None
    keep_segments = not width_and_count
    width = options.max_line_width or _UNBOUNDED
    words_per_chunk = options.max_words_per_line or _UNBOUNDED
    first_word = next((w for s in segments for w in s.words or []), None)
    last_start = first_word.start if first_word is not None else segments[0].start
    line_len, line_count, group = 0, 1, []
    for seg in segments:
        for index, word in enumerate(seg.words or []):
            text = word.word
            long_pause = not keep_segments and word.start - last_start > _LONG_PAUSE_S
            fits = line_len + len(text) <= width
            # a new segment, or the next max_words_per_line words of one, starts a new cue
            new_chunk = index % words_per_chunk == 0 and bool(group) and keep_segments
            if line_len > 0 and fits and not long_pause and not new_chunk:
                line_len += len(text)  # same line
            else:
                text = text.strip()
                max_lines = options.max_line_count
                full = max_lines is not None and (long_pause or line_count >= max_lines)
                if (group and full) or new_chunk:
                    yield group
                    group, line_count = [], 1
                elif line_len > 0:
                    line_count += 1
                    text = "\n" + text
                line_len = len(text.strip())
            group.append((text, word.start, word.end))
            last_start = word.start
    if group:
        yield group


def _cues(transcript: FileTranscript, options: SubtitleOptions, *, always_hours: bool, marker: str):
    """(start, end, text) of each subtitle cue, times already formatted."""

    def stamp(seconds: float) -> str:
        return format_timestamp(seconds, always_hours=always_hours, decimal_marker=marker)

    segments = transcript.segments
    if not segments or segments[0].words is None:  # no words: a cue per segment
        for seg in segments:
            yield stamp(seg.start), stamp(seg.end), seg.text.strip().replace("-->", "->")
        return
    for group in _word_groups(segments, options):
        texts = [text for text, _, _ in group]
        whole = "".join(texts)
        if not options.highlight_words:
            yield stamp(group[0][1]), stamp(group[-1][2]), whole
            continue
        shown_until = stamp(group[0][1])
        for i, (_, start, end) in enumerate(group):
            start_s, end_s = stamp(start), stamp(end)
            if shown_until != start_s:  # a gap before this word: the plain text fills it
                yield shown_until, start_s, whole
            underlined = _LEADING_SPACE_AND_REST.sub(r"\1<u>\2</u>", texts[i])
            yield start_s, end_s, "".join(texts[:i] + [underlined] + texts[i + 1 :])
            shown_until = end_s


def render(transcript: FileTranscript, fmt: str, options: SubtitleOptions | None = None) -> str:
    """One file's transcript in ``fmt``; jsonl gives its one line (newline included)."""
    options = options or SubtitleOptions()
    if fmt == "jsonl":
        return json.dumps(transcript.to_verbose_json(), ensure_ascii=False) + "\n"
    if fmt == "json":
        return json.dumps(transcript.to_verbose_json(), ensure_ascii=False, indent=2) + "\n"
    if fmt == "txt":
        return "".join(seg.text.strip() + "\n" for seg in transcript.segments)
    _check_times(transcript)
    if fmt == "tsv":  # integer milliseconds: no locale can turn the decimal point into a comma
        rows = ["start\tend\ttext"]
        for seg in transcript.segments:
            millis = f"{round(1000 * float(seg.start))}\t{round(1000 * float(seg.end))}"
            rows.append(f"{millis}\t{seg.text.strip().replace(_TAB, ' ')}")
        return "".join(row + "\n" for row in rows)
    if fmt == "srt":
        cues = _cues(transcript, options, always_hours=True, marker=",")
        return "".join(f"{n}\n{start} --> {end}\n{text}\n\n" for n, (start, end, text) in enumerate(cues, 1))
    if fmt == "vtt":
        cues = _cues(transcript, options, always_hours=False, marker=".")
        return "WEBVTT\n\n" + "".join(f"{start} --> {end}\n{text}\n\n" for start, end, text in cues)
    raise ValueError(f"--format {fmt}: not a transcript format (one of {', '.join(FORMATS)})")


# ---- files -------------------------------------------------------------------------------------------------


def _stamp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}{STAMP_SUFFIX}")


def _read_stamp(path: Path) -> dict | None:
    """The stamp fastaed left beside a plain-text output, or None (none, or not one fastaed wrote)."""
    try:
        doc = json.loads(_stamp_path(path).read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and doc.get("format") == MARKER_FORMAT else None


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _stamped_and_unchanged(path: Path) -> bool:
    stamp = _read_stamp(path)
    try:
        return stamp is not None and stamp.get("sha256") == _digest(path.read_bytes())
    except OSError:
        return False


def _is_transcript_doc(doc: object) -> bool:
    # audio_filepath is fastaed's own key: OpenAI's verbose_json has none; today's jsonl lines have it too
    return isinstance(doc, dict) and "audio_filepath" in doc and "text" in doc


def _is_transcript_json(path: Path) -> bool:
    try:
        return _is_transcript_doc(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return False


def _is_transcript_jsonl(path: Path) -> bool:
    try:
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        return all(_is_transcript_doc(json.loads(line)) for line in lines)
    except (OSError, ValueError):
        return False


def file_kind(fmt: str) -> FileKind:
    """What a single ``fmt`` transcript file is, and how one fastaed wrote earlier is recognised."""
    if fmt == "json":
        return FileKind("json transcript", _is_transcript_json)
    if fmt == "jsonl":
        return FileKind("jsonl transcript", _is_transcript_jsonl)
    return FileKind(f"{fmt} transcript", _stamped_and_unchanged)


def check_output(out: Path, fmt: str, *, as_folder: bool, flag: str = "--out") -> None:
    """Refuse, before any decoding, an ``out`` :func:`write_outputs` could not use (OutputExistsError)."""
    if as_folder and fmt != "jsonl":
        check_output_dir(out, FOLDER_KIND, flag=flag)
        return
    check_output_file(out, file_kind(fmt), flag=flag)
    if fmt in _STAMPED:
        stamp = _stamp_path(Path(out))
        if (stamp.exists() or stamp.is_symlink()) and (stamp.is_symlink() or _read_stamp(Path(out)) is None):
            raise OutputExistsError(
                f"{flag} {out}: {stamp} (where fastaed notes the file it wrote) exists and is not fastaed's; "
                "nothing was changed: choose another path or remove it yourself"
            )


def _write_stamp(path: Path, data: bytes, fmt: str, command: str) -> None:
    doc = {"format": MARKER_FORMAT, "kind": f"{fmt} transcript", "command": command, "sha256": _digest(data)}
    doc["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    stamp = _stamp_path(path)
    tmp = stamp.with_name(f"{stamp.name}.{secrets.token_hex(4)}.tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    os.replace(tmp, stamp)


def _write_file(path: Path, data: bytes, fmt: str, command: str, flag: str) -> None:
    check_output(path, fmt, as_folder=False, flag=flag)
    with replacing_file(path, file_kind(fmt), flag=flag) as tmp:
        tmp.write_bytes(data)
    if fmt in _STAMPED:
        _write_stamp(path, data, fmt, command)


def unique_stems(transcripts: list[FileTranscript]) -> list[str]:
    """A file name stem per transcript: its audio file's, with ``-2``, ``-3`` ... after a repeated one (case
    folded, as some file systems compare names), never clashing with another input's stem."""
    stems = [Path(t.audio_filepath).stem or "transcript" for t in transcripts]
    taken = {s.casefold() for s in stems}
    seen: set[str] = set()
    names = []
    for stem in stems:
        name, n = stem, 1
        while name.casefold() in seen or (n > 1 and name.casefold() in taken):
            n += 1
            name = f"{stem}-{n}"
        seen.add(name.casefold())
        names.append(name)
    return names


def wants_folder(out: Path, fmt: str, inputs: int) -> bool:
    """Whether ``out`` is a folder of transcripts: several inputs, or an existing folder (never for jsonl)."""
    return fmt != "jsonl" and (inputs > 1 or Path(out).is_dir())


def write_outputs(
    transcripts: list[FileTranscript],
    out: Path,
    fmt: str,
    options: SubtitleOptions | None = None,
    *,
    as_folder: bool | None = None,
    command: str = "transcribe",
    flag: str = "--out",
) -> list[Path]:
    """Write the transcripts in ``fmt``; returns the files written.

    jsonl: every file's line into the one file ``out``. Otherwise, with ``as_folder`` false, ``out`` is the
    one file's transcript; with ``as_folder`` true, ``out`` is a folder (built aside, swapped in) holding
    ``STEM.fmt`` per input file (:func:`unique_stems`). ``as_folder`` defaults to :func:`wants_folder` of the
    transcripts; pass it for the inputs given, so a skipped input does not turn a folder into a file.
    Everything is rendered before anything is written, and nothing a user owns is replaced (module doc).
    """
    out = Path(out)
    as_folder = wants_folder(out, fmt, len(transcripts)) if as_folder is None else as_folder
    texts = [render(t, fmt, options) for t in transcripts]
    if fmt == "jsonl" or not as_folder:
        if len(texts) > 1 and fmt != "jsonl":
            raise ValueError(f"{flag} {out}: {len(texts)} transcripts need a folder (or the jsonl format)")
        if not texts and fmt != "jsonl":
            return []
        _write_file(out, "".join(texts).encode("utf-8"), fmt, command, flag)
        return [out]
    names = [f"{stem}.{fmt}" for stem in unique_stems(transcripts)]
    with building_dir(out, FOLDER_KIND, command, flag=flag) as tmp:
        for name, text in zip(names, texts):
            (tmp / name).write_bytes(text.encode("utf-8"))
    return [out / name for name in names]
