"""NeMo-style JSONL manifests: one utterance per line, read lazily, validated with precise locations.

A line looks like::

    {"audio_filepath": "audio/a.wav", "duration": 3.21, "text": "Hello there.",
     "offset": 0.0, "source_lang": "en", "target_lang": "en", "task": "transcribe", "pnc": "yes"}

* ``audio_filepath`` relative paths resolve against the manifest's folder (so a corpus can be moved).
* ``task`` (or NeMo's ``taskname``): ``transcribe`` (aliases ``asr``) or ``translate`` (aliases ``ast``,
  ``s2t_translation``). Missing: ``translate`` if the languages differ, else ``transcribe``.
* ``answer``: the decoder's target text when it is not ``text`` (e.g. the translation).
* ``pnc``: ``yes``/``no`` (or booleans): keep punctuation and casing in the target, or strip them.

Every problem is a :class:`~fastaed.data.errors.BadInputError` naming file, line and field.
"""

from __future__ import annotations

import json
import math
import os
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from fastaed.data import errors as E
from fastaed.data.errors import BadInputError, BadInputReport, OnBadInput

TASK_ALIASES = {
    "transcribe": "transcribe",
    "asr": "transcribe",
    "translate": "translate",
    "ast": "translate",
    "s2t_translation": "translate",
}
PNC_VALUES = {"yes": True, "true": True, "1": True, "no": False, "false": False, "0": False}


@dataclass(frozen=True)
class Utterance:
    """One manifest entry, validated. Times are in seconds."""

    audio_filepath: str  # resolved against the manifest folder
    duration: float  # seconds of audio used (from ``offset``)
    text: str  # transcript, with original casing and punctuation
    offset: float = 0.0  # start inside the audio file
    source_lang: str = "en"  # language spoken
    target_lang: str = "en"  # language of the decoder output
    task: str = "transcribe"  # "transcribe" | "translate"
    pnc: bool = True  # keep punctuation and casing in the target
    answer: str | None = None  # target text when it differs from ``text``
    manifest: str = ""  # where it came from (for error messages)
    line: int = 0  # 1-based line in ``manifest``

    @property
    def target_text(self) -> str:
        return self.answer if self.answer is not None else self.text


@dataclass(frozen=True)
class ManifestSpec:
    """A manifest and its sampling weight relative to the other manifests of a mix."""

    path: Path
    weight: float = 1.0

    @staticmethod
    def parse(arg: str) -> ManifestSpec:
        """``PATH`` or ``PATH:WEIGHT`` (the suffix counts as a weight only if PATH itself does not exist)."""
        if not os.path.exists(arg) and ":" in arg:
            path, _, weight = arg.rpartition(":")
            try:
                value = float(weight)
            except ValueError:
                value = None
            if value is not None:
                return ManifestSpec(Path(path), value)
        return ManifestSpec(Path(arg))

    def __post_init__(self):
        if not (self.weight > 0 and math.isfinite(self.weight)):
            raise ValueError(f"manifest weight must be a positive number, got {self.weight} for {self.path}")


def _number(obj: dict, key: str, path: str, line: int, *, default=None, minimum=None, strict_min=False):
    value = obj.get(key, default)
    if value is None:
        raise BadInputError(E.MISSING_FIELD, "required field is missing", path=path, line=line, field=key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BadInputError(
            E.BAD_FIELD, f"expected a finite number, got {value!r}", path=path, line=line, field=key
        )
    if minimum is not None and (value <= minimum if strict_min else value < minimum):
        cmp = ">" if strict_min else ">="
        raise BadInputError(
            E.BAD_FIELD, f"expected a number {cmp} {minimum}, got {value!r}", path=path, line=line, field=key
        )
    return float(value)


def _string(obj: dict, key: str, path: str, line: int, *, default=None, required=True) -> str | None:
    value = obj.get(key, default)
    if value is None:
        if required:
            raise BadInputError(E.MISSING_FIELD, "required field is missing", path=path, line=line, field=key)
        return None
    if not isinstance(value, str):
        raise BadInputError(E.BAD_FIELD, f"expected a string, got {value!r}", path=path, line=line, field=key)
    return value


def parse_entry(obj: object, *, path: str, line: int, base_dir: str) -> Utterance:
    """Validate one decoded JSON object; raise BadInputError naming the field on any problem."""
    if not isinstance(obj, dict):
        detail = f"expected a JSON object, got {type(obj).__name__}"
        raise BadInputError(E.MALFORMED_JSON, detail, path=path, line=line)
    audio = _string(obj, "audio_filepath", path, line)
    if not audio.strip():
        raise BadInputError(E.BAD_FIELD, "empty audio path", path=path, line=line, field="audio_filepath")
    duration = _number(obj, "duration", path, line, minimum=0.0, strict_min=True)
    offset = _number(obj, "offset", path, line, default=0.0, minimum=0.0)
    text = _string(obj, "text", path, line)
    answer = _string(obj, "answer", path, line, required=False)
    src = _string(obj, "source_lang", path, line, default="en")
    tgt = _string(obj, "target_lang", path, line, default=src)
    for key, lang in (("source_lang", src), ("target_lang", tgt)):
        if not lang.strip():
            raise BadInputError(E.UNKNOWN_LANGUAGE, "empty language code", path=path, line=line, field=key)

    task_key = "task" if "task" in obj else "taskname"
    raw_task = _string(obj, task_key, path, line, required=False)
    if raw_task is None:
        task = "translate" if src != tgt else "transcribe"
    elif raw_task.lower() in TASK_ALIASES:
        task = TASK_ALIASES[raw_task.lower()]
    else:
        detail = f"unknown task {raw_task!r}; expected one of {sorted(TASK_ALIASES)}"
        raise BadInputError(E.BAD_FIELD, detail, path=path, line=line, field=task_key)

    raw_pnc = obj.get("pnc", "yes")
    pnc = PNC_VALUES.get(str(raw_pnc).lower()) if not isinstance(raw_pnc, bool) else raw_pnc
    if pnc is None:
        raise BadInputError(
            E.BAD_FIELD, f"expected yes/no, got {raw_pnc!r}", path=path, line=line, field="pnc"
        )

    target_field = "answer" if answer is not None else "text"
    if not (answer if answer is not None else text).strip():
        detail = "empty target text: nothing to learn from"
        raise BadInputError(E.EMPTY_TEXT, detail, path=path, line=line, field=target_field)
    if not os.path.isabs(audio):
        audio = os.path.join(base_dir, audio)
    return Utterance(audio, duration, text, offset, src, tgt, task, pnc, answer, path, line)


def parse_line(raw: bytes | str, *, path: str, line: int, base_dir: str) -> Utterance:
    try:
        obj = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadInputError(E.MALFORMED_JSON, f"not valid JSON ({exc})", path=path, line=line) from None
    return parse_entry(obj, path=path, line=line, base_dir=base_dir)


def iter_lines(path: str | Path) -> Iterator[tuple[int, int, bytes]]:
    """Yield (1-based line number, byte offset, raw line) for every non-blank line, lazily."""
    offset = 0
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if raw.strip():
                yield number, offset, raw
            offset += len(raw)


def read_manifest(
    path: str | Path,
    *,
    on_bad_input: OnBadInput = "error",
    report: BadInputReport | None = None,
) -> Iterator[Utterance]:
    """Lazily yield the utterances of one JSONL manifest (bad lines raise or are counted in ``report``)."""
    path = str(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"manifest not found: {path}")
    base_dir = os.path.dirname(os.path.abspath(path))
    for number, _, raw in iter_lines(path):
        try:
            yield parse_line(raw, path=path, line=number, base_dir=base_dir)
        except BadInputError as err:
            E.handle(err, on_bad_input, report)


def read_line_at(path: str, byte_offset: int, line: int) -> Utterance:
    """Random access to one line (the metadata index stores byte offsets so workers never rescan)."""
    with open(path, "rb") as f:
        f.seek(byte_offset)
        raw = f.readline()
    return parse_line(raw, path=path, line=line, base_dir=os.path.dirname(os.path.abspath(path)))


def iter_weighted(
    specs: Iterable[ManifestSpec],
    *,
    seed: int = 0,
    on_bad_input: OnBadInput = "error",
    report: BadInputReport | None = None,
) -> Iterator[Utterance]:
    """Lazily interleave several manifests, drawing the next source with probability proportional to its
    weight among the sources not yet exhausted. Every utterance of every manifest is yielded exactly once;
    weights shape the *order* (how sources mix over time), which is what a streaming reader needs.
    Deterministic for a given seed."""
    specs = list(specs)
    rng = random.Random(seed)
    iters = [read_manifest(s.path, on_bad_input=on_bad_input, report=report) for s in specs]
    weights = [s.weight for s in specs]
    live = list(range(len(specs)))
    while live:
        k = rng.choices(live, weights=[weights[i] for i in live])[0]
        try:
            yield next(iters[k])
        except StopIteration:
            live.remove(k)


def write_manifest(path: str | Path, entries: Iterable[dict]) -> int:
    """Write dicts as JSONL (UTF-8, one object per line); returns the number of lines."""
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        for entry in entries:
            f.write(json.dumps(entry, ensure_ascii=False) + "\n")
            n += 1
    return n
