"""Lhotse Shar shards, read directly (``gzip`` + ``json`` + ``tarfile``; the ``lhotse`` extra is not needed).

A Shar directory holds ``cuts.NNNNNN.jsonl.gz`` (one cut per line) and ``recording.NNNNNN.tar`` (per cut, a
member ``<cut id>.<flac|wav|...>`` holding *the cut's own audio*, already trimmed to it, followed by
``<cut id>.json``, its recording manifest). Shard N's cuts pair with shard N's recordings. A cut becomes one
utterance: its supervisions' texts joined, the first supervision's language (``custom`` may give
``target_lang`` and ``pnc``, as ``lhotse_io`` reads them), audio = the member named after the cut id, read
from its start for the cut's duration.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterator
from pathlib import Path

from fastaed.data import errors as E
from fastaed.data.errors import BadInputError, BadInputReport, OnBadInput
from fastaed.data.manifest import Utterance, parse_entry
from fastaed.data.shards import TarMember, TarShard
from fastaed.data.tokenizer import Tokenizer

_CUTS = re.compile(r"cuts\.(\d+)\.jsonl(\.gz)?")


def cut_utterance(cut: object, path: str, line: int) -> Utterance:
    """One Shar cut as an utterance; a cut without text, duration or id is a ``BadInputError`` naming it."""
    if not isinstance(cut, dict):
        raise BadInputError(
            E.MALFORMED_JSON, f"expected a cut object, got {type(cut).__name__}", path=path, line=line
        )
    cut_id = cut.get("id")
    if not isinstance(cut_id, str) or not cut_id:
        raise BadInputError(E.MISSING_FIELD, "a cut needs an id", path=path, line=line, field="id")
    sups = cut.get("supervisions") or []
    if not isinstance(sups, list) or not all(isinstance(s, dict) for s in sups):
        raise BadInputError(
            E.BAD_FIELD, "expected a list of objects", path=path, line=line, field="supervisions"
        )
    text = " ".join(str(s.get("text") or "").strip() for s in sups).strip()
    lang = (sups[0].get("language") or "en") if sups else "en"
    custom = (sups[0].get("custom") or {}) if sups else {}
    entry = {
        "audio_filepath": cut_id,  # resolved to the member "<id>.<ext>" by the dataset
        "duration": cut.get("duration"),
        "text": text,
        "source_lang": lang,
        "target_lang": custom.get("target_lang", lang),
        "pnc": custom.get("pnc", "yes"),
        **({"answer": custom["answer"]} if "answer" in custom else {}),
    }
    try:
        return parse_entry(entry, path=path, line=line, base_dir="")
    except BadInputError as err:
        if err.field == "text":  # the text came from the supervisions
            raise BadInputError(
                err.reason, f"cut {cut_id!r}: {err.detail}", path=path, line=line, field="supervisions"
            ) from None
        raise


def shar_records(cuts_path: str):
    """Records of a Shar cuts file (``.jsonl.gz`` or ``.jsonl``); members are located by the dataset."""

    def records() -> Iterator[tuple[Utterance | BadInputError, TarMember | None]]:
        opener = gzip.open if cuts_path.endswith(".gz") else open
        with opener(cuts_path, "rt", encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    cut = json.loads(line)
                except json.JSONDecodeError as exc:
                    yield (
                        BadInputError(
                            E.MALFORMED_JSON, f"not valid JSON ({exc})", path=cuts_path, line=number
                        ),
                        None,
                    )
                    continue
                try:
                    yield cut_utterance(cut, cuts_path, number), None
                except BadInputError as err:
                    yield err, None

    return records


def count_cuts(cuts_path: str) -> int:
    opener = gzip.open if cuts_path.endswith(".gz") else open
    with opener(cuts_path, "rt", encoding="utf-8") as f:
        return sum(1 for line in f if line.strip())


def open_shar_shards(
    root: str | Path,
    tokenizer: Tokenizer,
    *,
    on_bad_input: OnBadInput = "error",
    report: BadInputReport | None = None,
) -> list[TarShard]:
    """The shards of a Shar directory, in shard order. A cuts file without its ``recording.N.tar`` raises
    (``error``) or is left out and counted as ``missing_shard``."""
    root = Path(root)
    shards = []
    for number, cuts in sorted((m.group(1), p) for p in root.iterdir() if (m := _CUTS.fullmatch(p.name))):
        tar = root / f"recording.{number}.tar"
        if not tar.is_file():
            err = BadInputError(E.MISSING_SHARD, f"shard tar {tar} does not exist", path=str(cuts))
            E.handle(err, on_bad_input, report)
            continue
        shards.append(
            TarShard(
                name=str(tar), manifest=str(cuts), tar=str(tar), records=shar_records(str(cuts)),
                out_length=lambda u: len(tokenizer.sequence(u)), num_items=count_cuts(str(cuts)),
                on_bad_input=on_bad_input,
            )
        )  # fmt: skip
    if not shards:
        raise FileNotFoundError(f"{root}: no Shar shard (cuts.NNNNNN.jsonl.gz + recording.NNNNNN.tar)")
    return shards
