"""Read Lhotse cut manifests (needs the optional extra: ``pip install fastaed[lhotse]``).

Cuts are turned into :class:`~fastaed.data.manifest.Utterance` objects lazily. The metadata index and the
dataset work on NeMo JSONL (random access by byte offset), so ``fastaed data from-lhotse`` converts a cut
manifest into one; the conversion keeps the cut id and refuses what it cannot express faithfully
(cuts backed by in-memory or URL audio, multi-source recordings) with a message naming the cut.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from fastaed.data import errors as E
from fastaed.data.errors import BadInputError, BadInputReport, OnBadInput
from fastaed.data.manifest import Utterance, write_manifest


def _require_lhotse():
    try:
        import lhotse
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("reading Lhotse manifests needs the extra: pip install 'fastaed[lhotse]'") from exc
    return lhotse


def read_lhotse_cuts(
    path: str | Path, *, on_bad_input: OnBadInput = "error", report: BadInputReport | None = None
) -> Iterator[Utterance]:
    """Lazily yield one utterance per cut of a Lhotse ``CutSet`` manifest (``.jsonl`` or ``.jsonl.gz``)."""
    lhotse = _require_lhotse()
    path = str(path)
    for line, cut in enumerate(lhotse.CutSet.from_jsonl_lazy(path), start=1):
        try:
            yield _cut_to_utterance(cut, path, line)
        except BadInputError as err:
            E.handle(err, on_bad_input, report)


def _cut_to_utterance(cut, path: str, line: int) -> Utterance:
    rec = getattr(cut, "recording", None)
    if rec is None or len(rec.sources) != 1 or rec.sources[0].type != "file":
        detail = f"cut {cut.id!r} is not backed by a single audio file (sources must be one 'file')"
        raise BadInputError(E.BAD_FIELD, detail, path=path, line=line, field="recording")
    audio = rec.sources[0].source
    if not os.path.isabs(audio):
        audio = os.path.join(os.path.dirname(os.path.abspath(path)), audio)
    sups = list(cut.supervisions)
    text = " ".join((s.text or "").strip() for s in sups).strip()
    if not text:
        raise BadInputError(
            E.EMPTY_TEXT,
            f"cut {cut.id!r} has no supervision text",
            path=path,
            line=line,
            field="supervisions",
        )
    lang = (sups[0].language or "en") if sups else "en"
    custom = (sups[0].custom or {}) if sups else {}
    target_lang = custom.get("target_lang", lang)
    pnc = str(custom.get("pnc", "yes")).lower() in ("yes", "true", "1")
    task = "translate" if target_lang != lang else "transcribe"
    return Utterance(
        audio_filepath=audio,
        duration=float(cut.duration),
        text=text,
        offset=float(cut.start),
        source_lang=lang,
        target_lang=target_lang,
        task=task,
        pnc=pnc,
        answer=custom.get("answer"),
        manifest=path,
        line=line,
    )


def lhotse_to_nemo(
    cuts_path: str | Path,
    out_path: str | Path,
    *,
    on_bad_input: OnBadInput = "error",
    report: BadInputReport | None = None,
) -> int:
    """Convert a Lhotse cut manifest into a NeMo JSONL manifest with absolute audio paths."""
    entries = (
        {
            "audio_filepath": u.audio_filepath,
            "duration": round(u.duration, 6),
            "offset": round(u.offset, 6),
            "text": u.text,
            "source_lang": u.source_lang,
            "target_lang": u.target_lang,
            "task": u.task,
            "pnc": "yes" if u.pnc else "no",
            **({"answer": u.answer} if u.answer is not None else {}),
        }
        for u in read_lhotse_cuts(cuts_path, on_bad_input=on_bad_input, report=report)
    )
    return write_manifest(out_path, entries)
