"""Metadata index: the compact per-utterance table that the sampler works on.

For N utterances it holds five flat arrays (about 22 bytes per utterance)::

    durations    (N,) float32  seconds, from the manifest
    out_lengths  (N,) int32    U = prompt + target pieces + EOS (the SPEC's single definition)
    source       (N,) int16    which manifest of the mix
    byte_offsets (N,) int64    where the line starts, so a worker reads one line without rescanning
    lines        (N,) int32    1-based manifest line (for error messages)

Building it parses and validates every line and tokenizes every target once; it is cached on disk under a
key made of the manifests' *content* hashes, their weights, the tokenizer identity and the bad-input policy,
so editing a manifest or swapping the tokenizer can never serve a stale table. Lines are parsed in
parallel over byte ranges of the file (line numbers stay exact: each chunk counts the newlines before it).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fastaed.data import errors as E
from fastaed.data.errors import BadInputError, BadInputReport, OnBadInput
from fastaed.data.manifest import ManifestSpec, parse_line, read_line_at
from fastaed.data.text import target_form
from fastaed.data.tokenizer import PROMPT_LENGTH, Tokenizer

INDEX_FORMAT_VERSION = 1
CHUNK_BYTES = 2 << 20  # ~8k lines per task: amortises IPC, and even a 20k-line manifest uses both cores
ARRAY_DTYPES = {
    "durations": np.float32,
    "out_lengths": np.int32,
    "source": np.int16,
    "byte_offsets": np.int64,
    "lines": np.int32,
}
ARRAYS = tuple(ARRAY_DTYPES)


def default_cache_dir() -> Path:
    return Path(os.environ.get("FASTAED_CACHE_DIR", Path.home() / ".cache" / "fastaed")) / "index"


def file_digest(path: str | Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class MetadataIndex:
    durations: np.ndarray
    out_lengths: np.ndarray
    source: np.ndarray
    byte_offsets: np.ndarray
    lines: np.ndarray
    manifests: list[str]
    weights: list[float]
    tokenizer_identity: str
    key: str
    report: BadInputReport = field(default_factory=BadInputReport)  # lines skipped while building
    from_cache: bool = False

    def __len__(self) -> int:
        return len(self.durations)

    def utterance(self, i: int):
        """Parse line ``i`` again from its manifest (random access via the stored byte offset)."""
        i = int(i)
        return read_line_at(self.manifests[self.source[i]], int(self.byte_offsets[i]), int(self.lines[i]))

    def location(self, i: int) -> str:
        """``manifest:line`` of utterance ``i``, for messages that must name the line to fix."""
        i = int(i)
        return f"{self.manifests[self.source[i]]}:{self.lines[i]}"

    def summary(self) -> dict:
        d, u = self.durations.astype(np.float64), self.out_lengths.astype(np.float64)
        out = {"utterances": len(self), "hours": float(d.sum() / 3600), "manifests": self.manifests}
        if len(self):
            tps = u / d
            for name, arr in (("duration_s", d), ("out_length", u), ("tokens_per_s", tps)):
                out[name] = {
                    "min": float(arr.min()),
                    "mean": float(arr.mean()),
                    "p50": float(np.median(arr)),
                    "max": float(arr.max()),
                }
        out["bad_input"] = self.report.to_dict()
        return out

    # ---- persistence -------------------------------------------------------------------------------
    def save(self, stem: Path) -> None:
        stem.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "format_version": INDEX_FORMAT_VERSION,
            "manifests": self.manifests,
            "weights": self.weights,
            "tokenizer_identity": self.tokenizer_identity,
            "key": self.key,
            "report": {"counts": dict(self.report.counts), "examples": self.report.examples},
        }
        # Write to temp names then rename: a killed build never leaves a half-written cache entry.
        tmp_npz, tmp_json = stem.with_suffix(".npz.tmp"), stem.with_suffix(".json.tmp")
        with open(tmp_npz, "wb") as f:
            np.savez(f, **{name: getattr(self, name) for name in ARRAYS})
        tmp_json.write_text(json.dumps(meta))
        os.replace(tmp_npz, stem.with_suffix(".npz"))
        os.replace(tmp_json, stem.with_suffix(".json"))

    @classmethod
    def load(cls, stem: Path) -> MetadataIndex:
        meta = json.loads(stem.with_suffix(".json").read_text())
        if meta.get("format_version") != INDEX_FORMAT_VERSION:
            raise ValueError(f"{stem}: index format {meta.get('format_version')} != {INDEX_FORMAT_VERSION}")
        with np.load(stem.with_suffix(".npz")) as z:
            arrays = {name: z[name] for name in ARRAYS}
        report = BadInputReport()
        report.counts.update(meta["report"]["counts"])
        report.examples = meta["report"]["examples"]
        return cls(
            **arrays,
            manifests=meta["manifests"],
            weights=meta["weights"],
            tokenizer_identity=meta["tokenizer_identity"],
            key=meta["key"],
            report=report,
            from_cache=True,
        )


def index_key(specs: Sequence[ManifestSpec], tokenizer: Tokenizer, on_bad_input: str) -> str:
    parts = [f"v{INDEX_FORMAT_VERSION}", tokenizer.identity, on_bad_input]
    # The resolved path is part of the key too: the index stores paths, so a moved copy needs its own entry.
    parts += [f"{Path(s.path).resolve()}:{file_digest(s.path)}:{s.weight!r}" for s in specs]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:24]


# ---- parallel build -----------------------------------------------------------------------------------
_WORKER_TOKENIZER: Tokenizer | None = None


def _init_worker(tokenizer: Tokenizer) -> None:
    global _WORKER_TOKENIZER
    _WORKER_TOKENIZER = tokenizer


def _chunks(path: str, chunk_bytes: int) -> list[tuple[int, int]]:
    """Split a file into (start, end) byte ranges that begin at line starts."""
    size = os.path.getsize(path)
    bounds = [0]
    with open(path, "rb") as f:
        while bounds[-1] < size:
            f.seek(min(bounds[-1] + chunk_bytes, size))
            f.readline()  # advance to the next line start
            bounds.append(min(f.tell(), size))
    return list(zip(bounds[:-1], bounds[1:]))


def _index_chunk(task: tuple[int, str, int, int, int, str]):
    """Parse, validate and measure the lines of one byte range. Returns arrays + skip report."""
    source, path, start, end, first_line, policy = task
    tok = _WORKER_TOKENIZER
    base_dir = os.path.dirname(os.path.abspath(path))
    report = BadInputReport()
    durs, offs, lines, targets = [], [], [], []
    # fastaed's SentencePiece tokenizer encodes the chunk's transcripts in one call; other tokenizers
    # (Whisper's byte-level BPE, Canary's aggregate) give U as the length of their own sequence.
    fast = isinstance(tok, Tokenizer)
    lengths: list[int] = []
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read(end - start)
    pos, number = 0, first_line
    for raw in data.splitlines(keepends=True):
        if raw.strip():
            try:
                utt = parse_line(raw, path=path, line=number, base_dir=base_dir)
                tok.utterance_prompt(utt)  # validates both language codes against the tokenizer
                if fast:
                    targets.append(target_form(utt.target_text, utt.pnc))
                else:
                    lengths.append(len(tok.sequence(utt)))
                durs.append(utt.duration)
                offs.append(start + pos)
                lines.append(number)
            except BadInputError as err:
                E.handle(err, policy, report)
        pos += len(raw)
        number += 1
    if fast:
        pieces = tok.sp.encode(targets) if targets else []
        lengths = [PROMPT_LENGTH + len(p) + 1 for p in pieces]
    out_lengths = np.asarray(lengths, dtype=np.int32)
    return (
        np.asarray(durs, dtype=np.float32),
        out_lengths,
        np.full(len(durs), source, dtype=np.int16),
        np.asarray(offs, dtype=np.int64),
        np.asarray(lines, dtype=np.int32),
        report,
    )


def build_index(
    specs: Sequence[ManifestSpec | str | Path],
    tokenizer: Tokenizer,
    *,
    on_bad_input: OnBadInput = "error",
    cache_dir: Path | None = None,
    use_cache: bool = True,
    num_workers: int | None = None,
    progress: bool = False,
) -> MetadataIndex:
    """Index (or reload from cache) the utterances of ``specs`` for ``tokenizer``.

    Under ``on_bad_input="skip"`` bad lines are left out and counted in ``index.report`` (also after a
    reload from cache). Under ``"error"`` the first bad line raises :class:`BadInputError`.
    """
    specs = [s if isinstance(s, ManifestSpec) else ManifestSpec(Path(s)) for s in specs]
    for s in specs:
        if not Path(s.path).is_file():
            raise FileNotFoundError(f"manifest not found: {s.path}")
    if len(specs) > np.iinfo(np.int16).max:
        raise ValueError(f"at most {np.iinfo(np.int16).max} manifests per index")
    key = index_key(specs, tokenizer, on_bad_input)
    stem = (cache_dir or default_cache_dir()) / key
    if use_cache and stem.with_suffix(".json").is_file() and stem.with_suffix(".npz").is_file():
        return MetadataIndex.load(stem)

    tasks = []
    for source, s in enumerate(specs):
        path = str(s.path)
        with open(path, "rb") as f:
            line_at = 1
            last = 0
            for start, end in _chunks(path, CHUNK_BYTES):
                f.seek(last)
                line_at += f.read(start - last).count(b"\n")
                last = start
                tasks.append((source, path, start, end, line_at, on_bad_input))

    num_workers = min(num_workers or os.cpu_count() or 1, len(tasks))
    results = []
    t0 = time.perf_counter()
    bar = _progress(len(tasks), progress)
    if num_workers <= 1:
        _init_worker(tokenizer)
        for task in tasks:
            results.append(_index_chunk(task))
            bar.update()
    else:
        # fork keeps start-up cheap on Linux; the tokenizer is sent once per worker, not per chunk.
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        with ctx.Pool(num_workers, initializer=_init_worker, initargs=(tokenizer,)) as pool:
            for res in pool.imap(_index_chunk, tasks):
                results.append(res)
                bar.update()
    bar.close()

    report = BadInputReport()
    for res in results:
        report.merge(res[5])
    arrays = {
        name: np.concatenate([r[k] for r in results]).astype(dtype, copy=False)
        if results
        else np.zeros(0, dtype)
        for k, (name, dtype) in enumerate(ARRAY_DTYPES.items())
    }
    index = MetadataIndex(
        **arrays,
        manifests=[str(Path(s.path).resolve()) for s in specs],
        weights=[s.weight for s in specs],
        tokenizer_identity=tokenizer.identity,
        key=key,
        report=report,
    )
    if progress:
        print(f"indexed {len(index):,} utterances in {time.perf_counter() - t0:.1f} s")
    if use_cache:
        index.save(stem)
    return index


def _progress(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="index", unit="chunk", disable=not enabled)
