"""A fixed held-out half of the real speech sets, so clips a model is scored on are never trained on.

Which half a clip belongs to depends on its ``utt_id`` alone (:func:`is_heldout`: the first byte of the
utt_id's SHA-1), not on the machine, the order of the manifest or which other clips the set holds: a clip
added to or dropped from a set never moves another one across, and every copy of the project agrees.

``data real-check`` writes, beside each Asterisk manifest ``X.jsonl``, its two halves ``X.heldout.jsonl``
(scored on) and ``X.adapt.jsonl`` (free for adaptation), the same entry lines in the same order; their
relative audio paths still resolve because the halves sit in the same folder. The pocketsphinx clips
(``real_check.jsonl``) are held out as a whole: a dozen clips are too few to spare any.

Adaptation code takes its data from :func:`adaptation_manifests` and scoring code its sets from
:func:`heldout_manifests`; neither ever returns a file the other does.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from fastaed.data import errors
from fastaed.data.errors import BadInputError
from fastaed.util.outputs import FileKind, replacing_file

HELDOUT_SUFFIX = ".heldout"  # X.jsonl -> X.heldout.jsonl
ADAPT_SUFFIX = ".adapt"  # X.jsonl -> X.adapt.jsonl

# Manifest stems of the sets split in two (fastaed.data.asterisk.LANGUAGES writes them) -> language.
SPLIT_SETS = {"asterisk": "en", "asterisk_es": "es", "asterisk_fr": "fr"}
# Sets held out whole: name -> (manifest file, language). real_check.jsonl: fastaed.data.realcheck.
WHOLE_SETS = {"pocketsphinx": ("real_check.jsonl", "en")}

HELDOUT_SETS: dict[str, str] = {name: manifest for name, (manifest, _) in WHOLE_SETS.items()} | {
    stem: f"{stem}{HELDOUT_SUFFIX}.jsonl" for stem in SPLIT_SETS
}
"""Set name -> the file name of its held-out manifest in a real-check folder."""

SET_LANGUAGES: dict[str, str] = {name: lang for name, (_, lang) in WHOLE_SETS.items()} | SPLIT_SETS
"""Set name -> the language its clips are spoken in."""


def is_heldout(utt_id: str) -> bool:
    """Whether the clip ``utt_id`` is in the held-out half (about half of all ids are)."""
    return hashlib.sha1(utt_id.encode("utf-8")).digest()[0] < 128


def half_paths(path: Path) -> tuple[Path, Path]:
    """``X.jsonl`` -> (``X.heldout.jsonl``, ``X.adapt.jsonl``) beside it."""
    return (
        path.with_name(f"{path.stem}{HELDOUT_SUFFIX}{path.suffix}"),
        path.with_name(f"{path.stem}{ADAPT_SUFFIX}{path.suffix}"),
    )


def _half_kind(heldout: bool) -> FileKind:
    """A half fastaed wrote is recognised by its content: every entry has an utt_id on that side."""

    def recognise(path: Path) -> bool:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
            docs = [json.loads(line) for line in lines if line.strip()]
        except (OSError, ValueError):
            return False
        return all(
            isinstance(d, dict) and isinstance(d.get("utt_id"), str) and is_heldout(d["utt_id"]) == heldout
            for d in docs
        )

    return FileKind("held-out half manifest" if heldout else "adaptation half manifest", recognise)


def _utt_ids(path: Path, lines: list[str]) -> list[str | None]:
    """Each line's utt_id (None for a blank line); a line without one is an error naming it."""
    ids: list[str | None] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            ids.append(None)
            continue
        try:
            doc = json.loads(line)
        except ValueError as e:
            raise BadInputError(errors.MALFORMED_JSON, str(e), path=str(path), line=number) from None
        utt_id = doc.get("utt_id") if isinstance(doc, dict) else None
        if not isinstance(utt_id, str) or not utt_id:
            raise BadInputError(
                errors.MISSING_FIELD, "no utt_id to split on", path=str(path), line=number, field="utt_id"
            )
        ids.append(utt_id)
    if len(set(ids) - {None}) != sum(i is not None for i in ids):
        raise BadInputError(errors.BAD_FIELD, "an utt_id appears twice", path=str(path), field="utt_id")
    return ids


def split_manifest(path: Path) -> tuple[Path, Path]:
    """Write ``path``'s two halves beside it (:func:`half_paths`): its entry lines, unchanged and in order,
    by :func:`is_heldout` of their utt_id. Returns (held-out, adaptation). An existing half is replaced only
    when fastaed wrote it (see fastaed.util.outputs)."""
    path = Path(path)
    if path.stem.endswith((HELDOUT_SUFFIX, ADAPT_SUFFIX)):
        raise ValueError(f"{path}: already one half of a manifest; split the whole one")
    lines = path.read_text(encoding="utf-8").splitlines()
    ids = _utt_ids(path, lines)
    heldout_path, adapt_path = half_paths(path)
    for target, side in ((heldout_path, True), (adapt_path, False)):
        with replacing_file(target, _half_kind(side), flag="output") as tmp:
            kept = [line for line, i in zip(lines, ids) if i is not None and is_heldout(i) == side]
            tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    return heldout_path, adapt_path


def _wanted(name: str, languages: set[str] | None) -> bool:
    return languages is None or SET_LANGUAGES[name] in languages


def heldout_manifests(data_dir: Path, languages: set[str] | None = None) -> dict[str, Path]:
    """Set name -> held-out manifest, for the sets ``data_dir`` (a real-check folder) holds, in the order of
    :data:`HELDOUT_SETS`; ``languages``: only sets spoken in these (``{"en"}``), None: all."""
    found = {name: Path(data_dir) / file for name, file in HELDOUT_SETS.items() if _wanted(name, languages)}
    return {name: path for name, path in found.items() if path.is_file()}


def adaptation_manifests(data_dir: Path, languages: set[str] | None = None) -> list[Path]:
    """The adaptation halves (``*.adapt.jsonl``) ``data_dir`` holds, for sets spoken in ``languages``
    (None: all); never a clip of :func:`heldout_manifests`."""
    paths = [
        half_paths(Path(data_dir) / f"{stem}.jsonl")[1] for stem in SPLIT_SETS if _wanted(stem, languages)
    ]
    return [p for p in paths if p.is_file()]
