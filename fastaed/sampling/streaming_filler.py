"""Sources of ``StreamingBucketingSampler``: shards, the deterministic chunk stream, the background filler.

A *shard* is any re-iterable source of examples with a ``name`` (a JSONL manifest file, a tar shard reader, a
callable returning an iterator). ``iter_chunks`` turns the rank's ordered shards into a stream of ``Chunk``s:
consecutive items of one shard with their bucket already assigned (rejected items carry their reason). The
chunk stream is a pure function of (shards, start position, bins); where it runs is the only choice left:

- foreground: the consumer calls ``next()`` on the generator itself;
- background: ``BackgroundFiller`` runs the same generator in a thread that only moves chunks into a bounded
  queue. The thread never touches the bucket buffers, so there is nothing to race on (the queue is the only
  shared object), and the consumer (``StreamReader``) pulls exactly the items its deterministic policy asks
  for, so timing decides *when* an item is available, never *which* item comes next.

Shard errors are re-raised as ``ShardError`` naming the shard, in the consumer thread in both modes.
Also here: ``StreamItem`` (and its checkpoint encoding) and ``StreamingConfig``, the sampler's
data-independent knobs.
"""

from __future__ import annotations

import gzip
import itertools
import json
import queue
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

FILLER_THREAD_NAME = "fastaed-stream-filler"


@dataclass(frozen=True)
class StreamItem:
    """One example of a stream: a unique ``key``, ``duration`` in seconds, ``out_length`` U (prompt + text +
    EOS), and an optional ``payload`` (e.g. the manifest record) that travels with it into the batch."""

    key: str
    duration: float
    out_length: int
    payload: Any = None


LengthsFn = Callable[[Any], tuple[float, int]]


def default_lengths(item: Any) -> tuple[float, int]:
    """(duration, U) of a ``StreamItem``, a mapping (``duration``, ``out_length``) or a (key, d, U) tuple."""
    if isinstance(item, StreamItem):
        return item.duration, item.out_length
    if isinstance(item, Mapping):
        return item["duration"], item["out_length"]
    if isinstance(item, tuple) and len(item) == 3:
        return item[1], item[2]
    raise TypeError(f"cannot read (duration, out_length) of a {type(item).__name__}; pass get_lengths=")


def encode_item(item: Any) -> tuple:
    """A checkpointable form of a buffered item: plain tuples keep ``StreamItem`` buffers loadable by
    ``torch.load(weights_only=True)``; other items are stored as they are."""
    if isinstance(item, StreamItem):
        return ("StreamItem", item.key, item.duration, item.out_length, item.payload)
    return ("item", item)


def decode_item(enc: Sequence[Any]) -> Any:
    return StreamItem(*enc[1:]) if enc[0] == "StreamItem" else enc[1]


@dataclass(frozen=True)
class StreamingConfig:
    """Knobs of ``StreamingBucketingSampler`` that do not depend on the data.

    buffer_size: items held across all bucket buffers before each step (a soft cap, see ``streaming.py``).
    seed: run seed, in [0, 2**63). strict: bucket assignment rule (``assign.py``).
    background: read shards in a thread. chunk_size: items per queue entry; prefetch_chunks: queue depth.
    history: past step states kept for ``state_dict(steps_done=k)`` (≥ the DataLoader's batches in flight).
    join_timeout_s: how long ``close()`` waits for the filler thread.
    steps_per_epoch: the common step count of every rank (None: estimated from the shards' ``num_items``,
    or, on a single rank, until its shards run out; see ``streaming.py``).
    """

    buffer_size: int = 10_000
    seed: int = 0
    strict: bool = True
    background: bool = True
    chunk_size: int = 64
    prefetch_chunks: int = 32
    history: int = 16
    join_timeout_s: float = 10.0
    steps_per_epoch: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.seed, int | np.integer) or not 0 <= self.seed < 2**63:
            raise ValueError(f"seed must be an int in [0, 2**63), got {self.seed!r}")
        for name in ("buffer_size", "chunk_size", "prefetch_chunks"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.history < 0:
            raise ValueError(f"history must be >= 0, got {self.history}")
        if not self.join_timeout_s > 0:
            raise ValueError(f"join_timeout_s must be > 0, got {self.join_timeout_s}")
        if self.steps_per_epoch is not None and int(self.steps_per_epoch) < 1:
            raise ValueError(f"steps_per_epoch must be >= 1 or None, got {self.steps_per_epoch}")


@runtime_checkable
class Shard(Protocol):
    """A named source of examples that can be iterated from the start any number of times.

    A shard may also tell its item count as ``num_items`` (an int; None or absent: unknown), which lets
    several ranks balance shards and agree on a step count (``shard_items``).
    """

    name: str

    def __iter__(self) -> Iterator[Any]: ...


def shard_items(shard: Shard) -> int | None:
    """The shard's ``num_items``, None when it does not know."""
    n = getattr(shard, "num_items", None)
    return None if n is None else int(n)


@dataclass(frozen=True)
class CallableShard:
    """A shard whose items come from calling ``fn()`` (a fresh iterable on every call); ``num_items``: how
    many it yields, when known."""

    name: str
    fn: Callable[[], Iterable[Any]]
    num_items: int | None = None

    def __iter__(self) -> Iterator[Any]:
        return iter(self.fn())


def _default_out_length(record: Mapping[str, Any]) -> int:
    if "out_length" not in record:
        raise KeyError(
            "record has no 'out_length'; give JsonlShard an out_length_fn (e.g. prompt + tokens + EOS)"
        )
    return int(record["out_length"])


@dataclass(frozen=True)
class JsonlShard:
    """One JSONL manifest file (NeMo style, optionally ``.gz``) yielding ``StreamItem``s with the record as
    payload. The key is ``record[key_field]`` when present, else ``"<path>:<line number>"`` (unique, and
    stable while the file does not change). Blank lines are skipped (they do not count as items)."""

    path: str | Path
    duration_key: str = "duration"
    out_length_fn: Callable[[Mapping[str, Any]], int] = _default_out_length
    key_field: str = "audio_filepath"

    def __post_init__(self) -> None:
        if not Path(self.path).is_file():
            raise FileNotFoundError(f"JSONL shard not found: {self.path}")

    @property
    def name(self) -> str:
        return str(self.path)

    def _open(self):
        return (gzip.open if str(self.path).endswith(".gz") else open)(self.path, "rt", encoding="utf-8")

    @cached_property
    def num_items(self) -> int:
        """Non-blank lines (one pass over the file, once)."""
        with self._open() as f:
            return sum(1 for line in f if line.strip())

    def __iter__(self) -> Iterator[StreamItem]:
        with self._open() as f:
            for line_no, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                record = json.loads(line)
                key = str(record.get(self.key_field, f"{self.path}:{line_no}"))
                yield StreamItem(key, float(record[self.duration_key]), self.out_length_fn(record), record)


class ShardError(RuntimeError):
    """A shard failed (or changed since a checkpoint); ``shard`` names it, ``offset``: the 0-based index in
    the shard of the item that failed (or of the first item that was missing)."""

    def __init__(self, shard: str, offset: int, why: str) -> None:
        super().__init__(f"shard {shard!r} failed at item {offset} (0-based): {why}")
        self.shard, self.offset = shard, offset


@dataclass(frozen=True)
class Chunk:
    """Items ``start .. start + len(items) - 1`` of the ``shard_pos``-th shard of the rank's epoch order.

    buckets: (len(items),) int32 flattened bucket id, -1 for a rejected item; reasons: chunk index → reason.
    end_of_shard: no item follows in this shard (the chunk may be empty: a shard ending on a chunk boundary).
    """

    shard_pos: int
    start: int
    items: list[Any]
    buckets: np.ndarray
    reasons: dict[int, str] = field(default_factory=dict)
    end_of_shard: bool = False


Classify = Callable[[list[Any]], tuple[np.ndarray, dict[int, str]]]


def _first_bad(items: list[Any], classify: Classify) -> int:
    """Index of the first item ``classify`` fails on alone (the chunk failed, so one does; 0 if none)."""
    for i, x in enumerate(items):
        try:
            classify([x])
        except Exception:
            return i
    return 0


def iter_chunks(
    shards: list[Shard],
    position: tuple[int, int],
    classify: Classify,
    chunk_size: int,
    stop: int | None = None,
) -> Iterator[Chunk]:
    """Chunks of ``shards`` from ``position`` = (shard index, items already consumed in that shard) up to
    shard index ``stop`` (exclusive; default ``len(shards)``). Indices go on past the last shard, cyclically:
    index ``p · len(shards) + i`` is shard i read in pass p (a rank that repeats its shards).

    Shards before the position are not opened; within the current one the consumed items are read and
    discarded (O(shard): a generic iterator cannot seek). Errors of a shard, including its items failing
    ``classify`` (bad lengths), become a ``ShardError`` naming it and the failing item.
    """
    first, skip = position
    for pos in range(first, len(shards) if stop is None else stop):
        shard, offset = shards[pos % len(shards)], (skip if pos == first else 0)
        skipped = 0
        try:
            it = iter(shard)
            for _ in itertools.islice(it, offset):
                skipped += 1
        except Exception as exc:
            raise ShardError(shard.name, skipped, f"{type(exc).__name__}: {exc}") from exc
        if skipped < offset:
            raise ShardError(
                shard.name, skipped, f"only {skipped} items, resume position is {offset}; changed?"
            )
        while True:
            items: list[Any] = []
            try:  # one item at a time: the item that fails is offset + len(items)
                for x in itertools.islice(it, chunk_size):
                    items.append(x)
            except Exception as exc:
                raise ShardError(shard.name, offset + len(items), f"{type(exc).__name__}: {exc}") from exc
            try:
                buckets, reasons = classify(items)
            except Exception as exc:
                bad = offset + _first_bad(items, classify)
                raise ShardError(shard.name, bad, f"{type(exc).__name__}: {exc}") from exc
            end = len(items) < chunk_size  # a short read means the shard is done
            yield Chunk(pos, offset, items, buckets, reasons, end)
            offset += len(items)
            if end:
                break


@dataclass(frozen=True)
class _End:
    """Queue sentinel: the stream is exhausted (``error`` None) or failed with ``error``."""

    error: BaseException | None = None


class BackgroundFiller:
    """Runs a chunk iterator in a daemon thread, handing chunks over through a bounded queue.

    The thread stops when the stream ends, when it fails (the exception is forwarded to ``get``), or when
    ``close()`` is called: it polls a stop event while waiting for queue space, so it never blocks forever on
    a consumer that went away. ``close()`` joins it (bounded by ``join_timeout_s``: a shard blocked in I/O
    cannot be interrupted; the thread is a daemon, so it never keeps the interpreter alive).
    """

    def __init__(self, chunks: Iterator[Chunk], max_chunks: int, join_timeout_s: float = 10.0) -> None:
        self._queue: queue.Queue[Chunk | _End] = queue.Queue(maxsize=max_chunks)
        self._stop = threading.Event()
        self._join_timeout_s = join_timeout_s
        # The thread must not reference the consumer's generator, or an abandoned `for` loop would keep it
        # (and this thread) alive; it only holds this object and the chunk iterator.
        self._thread = threading.Thread(
            target=self._run, args=(chunks,), name=FILLER_THREAD_NAME, daemon=True
        )
        self._thread.start()

    def _put(self, obj: Chunk | _End) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(obj, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, chunks: Iterator[Chunk]) -> None:
        try:
            for chunk in chunks:
                if not self._put(chunk):
                    return
            self._put(_End())
        except BaseException as exc:  # forwarded: the consumer re-raises it in its own thread
            self._put(_End(exc))
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()  # the generator runs in this thread, so it is closed (files released) here

    def get(self) -> Chunk | None:
        """The next chunk, None at the end of the stream; re-raises the producer's exception."""
        while True:
            try:
                obj = self._queue.get(timeout=0.1)
                break
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    raise RuntimeError("stream filler thread stopped without a result") from None
        if isinstance(obj, _End):
            if obj.error is not None:
                raise obj.error
            return None
        return obj

    def close(self) -> None:
        self._stop.set()
        while True:  # free queue space so a producer blocked in put() sees the stop event promptly
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        if self._thread is not threading.current_thread():
            self._thread.join(self._join_timeout_s)
            if self._thread.is_alive():
                warnings.warn(
                    f"stream filler did not stop within {self._join_timeout_s} s (a shard blocked in I/O?)",
                    stacklevel=2,
                )


class StreamReader:
    """Consumer-side cursor over the chunk stream: one item at a time, tracking the resume position.

    ``position`` = (shard index, items consumed in it) just after the last item handed out; a finished shard
    moves it to (next shard, 0) so a resume never re-opens it.
    """

    def __init__(self, source: Iterator[Chunk] | BackgroundFiller, position: tuple[int, int]) -> None:
        self._source = source
        self.position = position
        self.exhausted = False
        self._chunk: Chunk | None = None
        self._i = 0

    def _fetch(self) -> Chunk | None:
        if isinstance(self._source, BackgroundFiller):
            return self._source.get()
        return next(self._source, None)

    def read(self) -> tuple[Any, int, str | None, int] | None:
        """(item, bucket or -1, rejection reason or None, its shard index), or None once the stream is
        exhausted."""
        chunk = self._chunk
        while chunk is None or self._i >= len(chunk.items):
            if self.exhausted:
                return None
            chunk = self._chunk = self._fetch()
            self._i = 0
            if chunk is None:
                self.exhausted = True
                return None
            if not chunk.items and chunk.end_of_shard:
                self.position = (chunk.shard_pos + 1, 0)
        i = self._i
        self._i += 1
        if chunk.end_of_shard and self._i == len(chunk.items):
            self.position = (chunk.shard_pos + 1, 0)
        else:
            self.position = (chunk.shard_pos, chunk.start + self._i)
        return chunk.items[i], int(chunk.buckets[i]), chunk.reasons.get(i), chunk.shard_pos

    def close(self) -> None:
        if isinstance(self._source, BackgroundFiller):
            self._source.close()
        else:
            close = getattr(self._source, "close", None)
            if close is not None:
                close()
