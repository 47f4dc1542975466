"""Tar shards on shared storage: NeMo tarred datasets (read and write), Lhotse Shar (read, ``shar.py``), and
the one item type both stream into the sampler.

A *shard* is a manifest plus the tar holding its audio: NeMo's ``manifest_N.json`` + ``audio_N.tar`` (each
line's ``audio_filepath`` names a member of the tar; several lines may cut segments out of one member with
``offset``/``duration``), or Shar's ``cuts.NNNNNN.jsonl.gz`` + ``recording.NNNNNN.tar``. NeMo's brace paths
expand both ways: ``audio__OP_0..127_CL_.tar`` and ``audio_{0..127}.tar``.

**What is read where.** Iterating a :class:`TarShard` reads its manifest only (JSON, no audio): it yields one
plain-dict item per line with the duration and U (prompt + target tokens + EOS, from the tokenizer) that the
bucketing sampler needs, plus where the audio is. :class:`ShardDataset` (in DataLoader workers) reads one
member per item with a seek and a bounded read: the member's position comes from the manifest line
(``tar_offset``/``tar_size``, written by :func:`write_shards`) or from one scan of the tar's headers (cached
per worker; headers only, the data blocks are skipped). Items are plain dicts of str/int/float, so the
sampler's buffers go into checkpoints that load with ``torch.load(weights_only=True)``.

**Bad input** gets the loose-file treatment: a bad manifest line is a ``BadInputError`` naming the shard's
manifest, line and field (``skip``: the item is yielded with ``duration`` NaN, so the sampler rejects and
counts it as ``invalid``); a missing or corrupt member is the same ``MISSING_AUDIO`` / ``CORRUPT_AUDIO`` error
(or counted skip) as a missing or corrupt file, naming the member, its tar and the manifest line; a missing
shard is ``missing_shard`` (skip: left out and counted when the shard set is opened).

**Writing** (:func:`write_shards`, ``fastaed data shard``): utterances of NeMo manifests into NeMo-tarred
shards of N utterances or S seconds each, deterministically (a seeded shuffle, fixed tar headers: the same
input gives byte-identical shards), plus ``shard_index.json`` (per shard: files, item count, seconds) and
``shard_lengths.npz`` (every item's duration), so shard balancing, step counts and duration statistics need
neither audio nor manifest reads.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tarfile
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fastaed.data import errors as E
from fastaed.data.audio import audio_info, load_audio
from fastaed.data.dataset import AEDDataset, Example, Skipped
from fastaed.data.errors import BadInputError, BadInputReport, OnBadInput
from fastaed.data.manifest import ManifestSpec, Utterance, iter_lines, parse_line, read_manifest
from fastaed.data.tokenizer import Tokenizer
from fastaed.util.outputs import building_dir, check_output_dir

SHARD_INDEX_FILE = "shard_index.json"
SHARD_LENGTHS_FILE = "shard_lengths.npz"
SHARD_INDEX_FORMAT = "fastaed.shard_index"
SHARD_INDEX_VERSION = 1
MANIFEST_NAME, TAR_NAME = "manifest_{}.json", "audio_{}.tar"
SHARDS_KIND = "shard folder"  # its output kind (fastaed.util.outputs)
_SHARD_FILE = re.compile(
    rf"^(?:{re.escape(SHARD_INDEX_FILE)}|{re.escape(SHARD_LENGTHS_FILE)}|manifest_\d+\.json|audio_\d+\.tar)$"
)
_RANGE = re.compile(r"(?:_OP_|\{)(\d+)\.\.(\d+)(?:_CL_|\})")
_TAR_CACHE_SHARDS = 64  # tars whose member table a worker keeps (a table is ~100 bytes per member)


def expand_shard_pattern(pattern: str) -> list[str]:
    """Every path of a NeMo brace pattern (``_OP_a..b_CL_`` or ``{a..b}``, several allowed), in order; a
    bound written with leading zeros (``{000..127}``) pads every number to its width."""
    m = _RANGE.search(pattern)
    if m is None:
        return [pattern]
    lo, hi = m.group(1), m.group(2)
    width = len(lo) if lo.startswith("0") and len(lo) > 1 else 0
    if int(hi) < int(lo):
        raise ValueError(f"shard pattern {pattern!r}: range {lo}..{hi} runs backwards")
    head, tail = pattern[: m.start()], pattern[m.end() :]
    return [
        p for i in range(int(lo), int(hi) + 1) for p in expand_shard_pattern(f"{head}{i:0{width}d}{tail}")
    ]


# ---- tar members ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TarMember:
    """Where a member's bytes are in its (uncompressed) tar."""

    offset: int
    size: int


def scan_tar(path: str | Path) -> dict[str, TarMember]:
    """Member name → position, from the headers alone (``tarfile`` seeks past the data blocks)."""
    members: dict[str, TarMember] = {}
    with tarfile.open(path, "r:") as tf:
        for info in tf:
            if info.isfile():
                members[info.name] = TarMember(info.offset_data, info.size)
    return members


def read_member(tar: str, member: TarMember) -> bytes:
    """The member's bytes: one seek and one read."""
    with open(tar, "rb") as f:
        f.seek(member.offset)
        data = f.read(member.size)
    if len(data) != member.size:
        raise OSError(
            f"tar {tar} ends inside a member ({len(data)} of {member.size} bytes at {member.offset})"
        )
    return data


# ---- shards and their items ----------------------------------------------------------------------------

# A manifest's records: (utterance or its error, the member's position when the line gives it).
Records = Callable[[], Iterator[tuple[Utterance | BadInputError, TarMember | None]]]


def item_key(shard: str, line: int) -> str:
    return f"{shard}:{line}"


def key_id(key: str) -> int:
    """A stable 63-bit integer for an item key (what a batch's ``indices`` hold for shard items)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little") >> 1


def make_item(shard: str, tar: str, utt: Utterance, out_length: int, member: TarMember | None) -> dict:
    """The sampler's view of one utterance of a shard (plain types only: it may go into a checkpoint)."""
    return {
        "key": item_key(shard, utt.line),
        "duration": utt.duration,
        "out_length": out_length,
        "tar": tar,
        "member": utt.audio_filepath,
        "member_pos": None if member is None else [member.offset, member.size],
        "offset": utt.offset,
        "manifest": utt.manifest,
        "line": utt.line,
        "text": utt.text,
        "answer": utt.answer,
        "source_lang": utt.source_lang,
        "target_lang": utt.target_lang,
        "task": utt.task,
        "pnc": utt.pnc,
    }


def bad_item(shard: str, err: BadInputError) -> dict:
    """A line that could not be read: NaN duration, so the sampler rejects (and counts) it as invalid."""
    key = item_key(shard, err.line or 0)
    return {"key": key, "duration": float("nan"), "out_length": 0, "bad": err.reason, "line": err.line}


def item_utterance(item: dict) -> Utterance:
    fields = ("text", "offset", "source_lang", "target_lang", "task", "pnc", "answer", "manifest", "line")
    return Utterance(item["member"], item["duration"], **{k: item[k] for k in fields})


@dataclass(frozen=True, eq=False)
class TarShard:
    """One shard as the streaming sampler sees it: a name, its item count, and items from its manifest.

    records: yields (utterance or its BadInputError, member position or None) per manifest line (NeMo JSONL
    or Shar cuts); without a position the dataset scans the tar's headers. out_length: U of an utterance."""

    name: str
    manifest: str
    tar: str
    records: Records
    out_length: Callable[[Utterance], int]
    num_items: int | None = None
    on_bad_input: OnBadInput = "error"

    def __iter__(self) -> Iterator[dict]:
        for got, member in self.records():
            if isinstance(got, BadInputError):
                E.handle(got, self.on_bad_input, BadInputReport())  # raises under "error"
                yield bad_item(self.name, got)
                continue
            try:
                out_length = self.out_length(got)
            except BadInputError as err:  # e.g. a language the tokenizer does not know
                err = err.with_location(got.manifest, got.line)
                E.handle(err, self.on_bad_input, BadInputReport())
                yield bad_item(self.name, err)
                continue
            yield make_item(self.name, self.tar, got, out_length, member)


def nemo_records(manifest: str) -> Records:
    """Records of a NeMo tarred manifest; ``audio_filepath`` stays a member name, and a line's
    ``tar_offset`` / ``tar_size`` (written by :func:`write_shards`) locate its member."""

    def records() -> Iterator[tuple[Utterance | BadInputError, TarMember | None]]:
        for number, _, raw in iter_lines(manifest):
            try:
                utt = parse_line(raw, path=manifest, line=number, base_dir="")
            except BadInputError as err:
                yield err, None
                continue
            obj = json.loads(raw)
            at = obj.get("tar_offset"), obj.get("tar_size")
            ok = all(isinstance(v, int) and v >= 0 for v in at)
            yield utt, TarMember(*at) if ok else None

    return records


def count_lines(manifest: str) -> int:
    return sum(1 for _ in iter_lines(manifest))


def _missing(path: str, what: str) -> BadInputError:
    return BadInputError(E.MISSING_SHARD, f"{what} {path} does not exist", path=path)


def open_nemo_shards(
    manifests: str | Sequence[str],
    tars: str | Sequence[str],
    tokenizer: Tokenizer,
    *,
    on_bad_input: OnBadInput = "error",
    report: BadInputReport | None = None,
) -> list[TarShard]:
    """The shards of a NeMo tarred dataset: manifests and tars as brace patterns or lists, paired in order.

    A missing manifest or tar raises (``error``) or leaves its shard out, counted as ``missing_shard``."""
    ms = expand_shard_pattern(manifests) if isinstance(manifests, str) else list(manifests)
    ts = expand_shard_pattern(tars) if isinstance(tars, str) else list(tars)
    if len(ms) != len(ts):
        raise ValueError(f"{len(ms)} manifests but {len(ts)} tars: a NeMo tarred set pairs them one to one")
    index = read_index(Path(ms[0]).parent) if ms else None
    counts = (
        {str(Path(ms[0]).parent / s["manifest"]): s["num_items"] for s in index["shards"]} if index else {}
    )
    shards = []
    for manifest, tar in zip(ms, ts):
        absent = [
            (p, w) for p, w in ((manifest, "shard manifest"), (tar, "shard tar")) if not os.path.isfile(p)
        ]
        if absent:
            E.handle(_missing(*absent[0]), on_bad_input, report)
            continue
        shards.append(
            TarShard(
                name=str(tar), manifest=str(manifest), tar=str(tar), records=nemo_records(str(manifest)),
                out_length=lambda u: len(tokenizer.sequence(u)), on_bad_input=on_bad_input,
                num_items=counts.get(str(manifest), None) or count_lines(str(manifest)),
            )
        )  # fmt: skip
    return shards


def read_index(root: Path) -> dict | None:
    path = root / SHARD_INDEX_FILE
    if not path.is_file():
        return None
    index = json.loads(path.read_text())
    if index.get("format") != SHARD_INDEX_FORMAT or index.get("version") != SHARD_INDEX_VERSION:
        raise ValueError(f"{path}: not a {SHARD_INDEX_FORMAT} v{SHARD_INDEX_VERSION} file")
    return index


def shard_lengths(shards: Sequence[TarShard]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(durations, U, shard of each item) of every readable item of ``shards``: a manifest pass, no audio."""
    d, u, which = [], [], []
    for k, shard in enumerate(shards):
        for item in shard:
            if "bad" not in item:
                d.append(item["duration"])
                u.append(item["out_length"])
                which.append(k)
    return np.asarray(d, dtype=np.float64), np.asarray(u, dtype=np.int64), np.asarray(which, dtype=np.int64)


# ---- reading audio in DataLoader workers ---------------------------------------------------------------


class ShardDataset(torch.utils.data.Dataset):
    """``ds[item]`` loads one shard item (a dict the sampler yielded); ``collate`` pads, as ``AEDDataset``.

    Bad audio is a ``BadInputError`` naming the member, its tar and the manifest line; under ``skip`` the
    item becomes a counted ``Skipped`` (its batch's ``bad_input``)."""

    collate = AEDDataset.collate
    feature_extractor = None

    def __init__(
        self, tokenizer: Tokenizer, *, on_bad_input: OnBadInput = "skip", duration_tolerance: float = 0.1
    ):
        self.tokenizer = tokenizer
        self.on_bad_input = on_bad_input
        self.duration_tolerance = duration_tolerance
        self._members: OrderedDict[str, dict[str, TarMember]] = OrderedDict()  # per worker process
        self._fds: OrderedDict[tuple[int, str], int] = OrderedDict()  # (pid, tar) -> open descriptor

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_members": OrderedDict(), "_fds": OrderedDict()}  # nothing open travels

    def _read(self, tar: str, member: TarMember) -> bytes:
        """``pread`` on a descriptor kept open per process: no seek, no shared file offset across forks."""
        key = (os.getpid(), tar)
        fd = self._fds.get(key)
        if fd is None:
            fd = self._fds[key] = os.open(tar, os.O_RDONLY)
            if len(self._fds) > _TAR_CACHE_SHARDS:
                os.close(self._fds.popitem(last=False)[1])
        self._fds.move_to_end(key)
        data = os.pread(fd, member.size, member.offset)
        if len(data) != member.size:
            raise OSError(
                f"tar ends inside the member ({len(data)} of {member.size} bytes at {member.offset})"
            )
        return data

    def __len__(self) -> int:
        raise TypeError("a ShardDataset is indexed by the items a streaming sampler yields; it has no length")

    def __getitem__(self, item: dict) -> Example | Skipped:
        index = key_id(item["key"])
        try:
            if "bad" in item:
                raise RuntimeError(f"item {item['key']} was rejected by the sampler; it cannot be loaded")
            utt = item_utterance(item)
            data = self._member_bytes(item)
            name = f"{item['tar']}[{item['member']}]"
            audio = load_audio(
                name, data=data, offset=utt.offset, duration=utt.duration if utt.offset > 0 else None,
                expected_duration=utt.duration, duration_tolerance=self.duration_tolerance,
            )  # fmt: skip
            tokens = self.tokenizer.sequence(utt)
        except BadInputError as err:
            err = err.with_location(item["manifest"], item["line"])
            if self.on_bad_input == "error":
                raise err from None
            return Skipped(index, err)
        if len(tokens) != item["out_length"]:
            raise RuntimeError(
                f"{item['manifest']}:{item['line']}: U changed since the sampler read the line"
            )
        return Example(index, audio, tokens)

    def _member_bytes(self, item: dict) -> bytes:
        tar, name = item["tar"], item["member"]
        pos = item.get("member_pos")
        member = TarMember(*pos) if pos is not None else self._lookup(tar, name)
        try:
            return self._read(tar, member)
        except FileNotFoundError:
            why = f"shard tar {tar} does not exist"
            raise BadInputError(E.MISSING_AUDIO, why, field="audio_filepath") from None
        except OSError as exc:
            why = f"member {name} of tar {tar}: {exc}"
            raise BadInputError(E.CORRUPT_AUDIO, why, field="audio_filepath") from None

    def _lookup(self, tar: str, name: str) -> TarMember:
        members = self._members.get(tar)
        if members is None:
            if not os.path.isfile(tar):
                raise BadInputError(
                    E.MISSING_AUDIO, f"shard tar {tar} does not exist", field="audio_filepath"
                )
            try:
                members = scan_tar(tar)
            except (tarfile.TarError, OSError) as exc:
                why = f"cannot read tar {tar}: {exc}"
                raise BadInputError(E.CORRUPT_AUDIO, why, field="audio_filepath") from None
            self._members[tar] = members
            if len(self._members) > _TAR_CACHE_SHARDS:
                self._members.popitem(last=False)
        self._members.move_to_end(tar)
        if name in members:
            return members[name]
        stem = [m for m in members if m.rsplit(".", 1)[0] == name and not m.endswith(".json")]  # Shar: id.ext
        if len(stem) == 1:
            return members[stem[0]]
        raise BadInputError(E.MISSING_AUDIO, f"member {name} is not in tar {tar}", field="audio_filepath")


# ---- writing NeMo tarred shards ------------------------------------------------------------------------


@dataclass(frozen=True)
class ShardWriteResult:
    out_dir: Path
    num_shards: int
    num_items: int
    seconds: float
    report: BadInputReport


def _split(durations: Sequence[float], per_shard: int | None, seconds: float | None) -> list[range]:
    """Consecutive groups of ``per_shard`` items, or of at most ``seconds`` (a longer item is a group)."""
    if per_shard is not None:
        return [range(i, min(i + per_shard, len(durations))) for i in range(0, len(durations), per_shard)]
    groups, start, total = [], 0, 0.0
    for i, d in enumerate(durations):
        if i > start and total + d > seconds:
            groups.append(range(start, i))
            start, total = i, 0.0
        total += d
    if start < len(durations):
        groups.append(range(start, len(durations)))
    return groups


def _tar_info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o644  # fixed metadata: the same input, the same bytes
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def write_shards(
    manifests: Sequence[str | Path],
    out_dir: str | Path,
    *,
    items_per_shard: int | None = None,
    seconds_per_shard: float | None = None,
    shuffle: bool = True,
    seed: int = 0,
    on_bad_input: OnBadInput = "error",
) -> ShardWriteResult:
    """Write the utterances of NeMo ``manifests`` as NeMo-tarred shards in ``out_dir`` (see module doc).

    Each audio file is checked (exists, header parses) and copied into the tar once per shard, however many
    segments of it the manifests use. Lines keep their fields; ``audio_filepath`` becomes the member name and
    ``shard_id``, ``tar_offset`` and ``tar_size`` are added.

    The folder is built beside ``out_dir`` and renamed in: ``out_dir`` must be new, empty or earlier shards
    (``fastaed.util.outputs``), checked before any manifest is read."""
    check_output_dir(out_dir, SHARDS_KIND, legacy=is_shard_folder)
    if (items_per_shard is None) == (seconds_per_shard is None):
        raise ValueError("give exactly one of items_per_shard and seconds_per_shard")
    if (items_per_shard is not None and items_per_shard < 1) or (seconds_per_shard or 1) <= 0:
        raise ValueError("items_per_shard must be >= 1 and seconds_per_shard > 0")
    report = BadInputReport()
    utts = []
    for spec in manifests:
        for utt in read_manifest(
            ManifestSpec.parse(str(spec)).path, on_bad_input=on_bad_input, report=report
        ):
            try:
                audio_info(utt.audio_filepath)
            except BadInputError as err:
                E.handle(err.with_location(utt.manifest, utt.line), on_bad_input, report)
                continue
            utts.append(utt)
    if shuffle:
        order = np.random.default_rng(seed).permutation(len(utts)).tolist()
        utts = [utts[i] for i in order]
    with building_dir(out_dir, SHARDS_KIND, "data shard", legacy=is_shard_folder) as tmp:
        num_shards, seconds = _write_all(tmp, utts, items_per_shard, seconds_per_shard, report)
    return ShardWriteResult(Path(out_dir), num_shards, len(utts), seconds, report)


def _write_all(
    out: Path,
    utts: list[Utterance],
    items_per_shard: int | None,
    seconds_per_shard: float | None,
    report: BadInputReport,
) -> tuple[int, float]:
    """Write the shards, index and lengths of ``utts`` into the folder ``out``; (shards, seconds)."""
    groups = _split([u.duration for u in utts], items_per_shard, seconds_per_shard)
    entries, lengths, starts = [], [], [0]
    for shard_id, group in enumerate(groups):
        entries.append(_write_one(out, shard_id, [utts[i] for i in group]))
        lengths.extend(utts[i].duration for i in group)
        starts.append(len(lengths))
    seconds = float(sum(e["seconds"] for e in entries))
    last = len(groups) - 1
    index = {
        "format": SHARD_INDEX_FORMAT, "version": SHARD_INDEX_VERSION, "num_shards": len(groups),
        "num_items": len(utts), "seconds": seconds,
        "manifest_pattern": MANIFEST_NAME.format(f"_OP_0..{last}_CL_"),
        "tar_pattern": TAR_NAME.format(f"_OP_0..{last}_CL_"),
        "shards": entries, "bad_input": report.to_dict(),
    }  # fmt: skip
    (out / SHARD_INDEX_FILE).write_text(json.dumps(index, indent=1) + "\n")
    with open(out / SHARD_LENGTHS_FILE, "wb") as f:
        np.savez(f, durations=np.asarray(lengths, np.float32), shard_starts=np.asarray(starts, np.int64))
    return len(groups), seconds


def is_shard_folder(path: Path) -> bool:
    """Whether ``path`` holds shards :func:`write_shards` wrote before output folders carried a marker, and
    nothing else: a fastaed shard index, the lengths file, ``manifest_N.json`` and ``audio_N.tar``."""
    try:
        index = json.loads((path / SHARD_INDEX_FILE).read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(index, dict) or index.get("format") != SHARD_INDEX_FORMAT:
        return False
    return all(_SHARD_FILE.match(p.name) for p in path.iterdir())


def _write_one(out: Path, shard_id: int, utts: list[Utterance]) -> dict:
    tar_path, manifest_path = out / TAR_NAME.format(shard_id), out / MANIFEST_NAME.format(shard_id)
    names: dict[str, str] = {}  # audio file -> member name (one copy per shard)
    with tarfile.open(tar_path, "w", format=tarfile.GNU_FORMAT) as tf:
        for utt in utts:
            if utt.audio_filepath in names:
                continue
            base, n = os.path.basename(utt.audio_filepath), 1
            name = base
            while name in names.values():  # two files with one basename: keep both, distinctly
                stem, dot, ext = base.rpartition(".")
                name, n = (f"{stem}-{n}{dot}{ext}" if dot else f"{base}-{n}"), n + 1
            names[utt.audio_filepath] = name
            with open(utt.audio_filepath, "rb") as f:
                tf.addfile(_tar_info(name, os.fstat(f.fileno()).st_size), f)
    members = scan_tar(tar_path)
    with open(manifest_path, "w", encoding="utf-8") as f:
        for utt in utts:
            name = names[utt.audio_filepath]
            entry = {
                "audio_filepath": name, "duration": utt.duration, "text": utt.text,
                **({"offset": utt.offset} if utt.offset > 0 else {}),
                **({"answer": utt.answer} if utt.answer is not None else {}),
                "source_lang": utt.source_lang, "target_lang": utt.target_lang, "task": utt.task,
                "pnc": "yes" if utt.pnc else "no", "shard_id": shard_id,
                "tar_offset": members[name].offset, "tar_size": members[name].size,
            }  # fmt: skip
            f.write(json.dumps(entry, ensure_ascii=False) + "\n")
    seconds = float(sum(u.duration for u in utts))
    return {"manifest": manifest_path.name, "tar": tar_path.name, "num_items": len(utts), "seconds": seconds}
