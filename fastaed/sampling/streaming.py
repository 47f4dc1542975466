"""``StreamingBucketingSampler``: synchronized 2D bucketing of sharded data without random access.

Per epoch and rank (all randomness from blake2b ``epoch_seed(seed, epoch)``, identical on every rank):

- **Shards and equal steps.** Each rank reads its share of the shuffled shards (balanced by item counts
  when shards know their ``num_items``) and all ranks run the same S steps, so DDP never hangs: S is
  ``steps_per_epoch``, or on several ranks estimated from the item counts (``stream_plan.py``); one rank
  without it reads until its shards end. Several ranks with neither, or fewer shards than ranks: an error.
  A rank whose shards run dry flushes its buffers (every item of the pass is yielded), then reads them again
  from its first one (a *pass*; items of passes ≥ 1 count as ``repeated``) until step S. A rank with more
  data stops at S (its ``buffered`` and ``unread`` items are counted).
- **Buffers.** Items (buckets assigned by ``assign_buckets``; rejections counted by reason) go into
  per-bucket buffers. Before each step the buffers are filled to ``buffer_size`` items. If no bucket then
  holds a full batch, reading goes on until one does: by pigeonhole that takes at most Σ_b (B_b − 1) + 1
  buffered items, so memory is max(buffer_size, that) items (``report()["max_buffered"]``).
- **Synchronized bucket.** Step k's bucket is a pure function of (epoch seed, k): the same on every rank,
  without communication. Ranks cannot see each other's buffers, so the draw follows the *expected* steps per
  bucket, ``bucket_weights[b] / B_b`` (pass ``bucket_weights`` = per-bucket example counts of the sample the
  bins were estimated on, i.e. ``assign_buckets(d, u, bins).counts()``). Without them: uniform over the
  non-degenerate buckets, which is close for equal-mass bins under a duration budget (each row holds equal
  audio and B_b · max_d_b is ~constant, so rows yield similar step counts). The draws are stratified
  (``stream_plan.draw_block``): every bucket is drawn at its expected rate, without random-walk drift.
- **Nearest-ready fallback.** If the drawn bucket has fewer than B_b items *on this rank*, the nearest bucket
  holding a full batch is used (flattened order, distance 1, 2, ...; ties toward the shorter bucket). This
  is local, so ranks may use different buckets at that step (as in Lhotse); counted as ``fallbacks``. At the
  end of a pass the buffers are flushed as partial batches (nearest non-empty bucket; ``flushed``).
  Nothing is dropped. Every batch comes from one bucket with B_b items at most, so budgets are never exceeded.
- **Within a bucket** the B_b items are picked at random (RNG seeded by (epoch seed, rank, k)).

**Determinism and background filling.** ``background=True`` reads and assigns in a thread that only feeds a
bounded queue of chunks in stream order (see ``streaming_filler.py``); the consumer does all buffer mutation
and pulls exactly the items the policy above needs. The batches are therefore identical with and without
the thread, for any thread timing, chunk size or queue depth.

**Exact resume in O(buffer).** ``state_dict()`` (per rank) holds the epoch, the steps done, the stream
position (index in the rank's shard order, counting on through later passes, and items consumed in that
shard; a position on a pass boundary means the pass is flushing), the buffered items themselves and
the report counters. ``load_state_dict()`` restores the buffers and resumes the stream: earlier shards are not
opened; the current shard is re-read up to the position (O(shard), a generic iterator cannot seek).
``StreamItem`` buffers survive ``torch.load(weights_only=True)``; other item types need
``weights_only=False``.

**DataLoader caveat.** The sampler runs ahead of training (``num_workers × prefetch_factor`` batches in
flight). It keeps the states after each of the last ``history`` steps: checkpoint with
``state_dict(steps_done=trained_steps)``; asking for an older step raises. Use as
``DataLoader(ds, batch_sampler=sampler, collate_fn=...)`` where ``ds[item]`` loads one item.
"""

from __future__ import annotations

import hashlib
import weakref
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch.utils.data import Sampler

from fastaed.sampling import stream_plan as P
from fastaed.sampling.assign import REJECT_REASONS, assign_buckets
from fastaed.sampling.bins import Bins
from fastaed.sampling.budget import resolve_batch_sizes
from fastaed.sampling.limits import LengthLimits
from fastaed.sampling.sampler import _resolve_dist, epoch_seed
from fastaed.sampling.streaming_filler import (
    BackgroundFiller,
    CallableShard,
    JsonlShard,
    LengthsFn,
    Shard,
    ShardError,
    StreamingConfig,
    StreamItem,
    StreamReader,
    decode_item,
    default_lengths,
    encode_item,
    iter_chunks,
    shard_items,
)

__all__ = [
    "CallableShard",
    "JsonlShard",
    "Shard",
    "ShardError",
    "StreamItem",
    "StreamingBucketingSampler",
    "StreamingConfig",
]

STATE_FORMAT = "fastaed.streaming_sampler"
STATE_VERSION = 1
_PICK_STREAM = 0x5EED_91C4  # the within-bucket picks' RNG stream (the bucket draws use another)


@dataclass
class _Counters:
    items_read: int = 0  # items taken from the stream, rejected ones included
    items_yielded: int = 0
    batches: int = 0
    fallbacks: int = 0  # full batches from a bucket other than the drawn one
    flushed: int = 0  # partial batches at the end of a pass
    repeated: int = 0  # items read again: passes after the first over the rank's shards
    max_buffered: int = 0
    rejected: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REJECT_REASONS, 0))

    def copy(self) -> _Counters:
        return _Counters(**{**self.__dict__, "rejected": dict(self.rejected)})


@dataclass(frozen=True)
class _Snapshot:
    """The state just after ``steps`` steps of ``epoch``: what ``state_dict`` serialises."""

    epoch: int
    steps: int
    position: tuple[int, int]
    buffers: tuple[tuple[Any, ...], ...]
    counters: _Counters


class StreamingBucketingSampler(Sampler[list[Any]]):
    """Yields batches (lists of shard items) of one bucket each, from this rank's shards; see the module doc.

    Batch sizes come from ``batch_sizes`` (a profile), the budgets ``max_duration`` / ``max_tokens`` /
    ``quadratic_duration``, or both (``budget.resolve_batch_sizes``). ``bucket_weights``: expected examples
    per bucket (sets the synchronized draw). ``get_lengths(item) -> (duration, U)`` reads other item types.
    ``limits``: per-utterance ``LengthLimits`` (too short, over budget, ...) rejected and counted by reason.
    Either ``config=StreamingConfig(...)`` or its fields as keywords (``buffer_size``, ``seed``, ``strict``,
    ``background``, ``chunk_size``, ``prefetch_chunks``, ``history``, ``join_timeout_s``).
    """

    def __init__(
        self,
        shards: Sequence[Shard],
        *,
        bins: Bins,
        batch_sizes: Sequence[int] | np.ndarray | None = None,
        max_duration: float | None = None,
        max_tokens: int | None = None,
        quadratic_duration: float | None = None,
        bucket_weights: Sequence[float] | np.ndarray | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        get_lengths: LengthsFn = default_lengths,
        limits: LengthLimits | None = None,
        config: StreamingConfig | None = None,
        **config_kwargs: Any,
    ) -> None:
        if config is not None and config_kwargs:
            raise ValueError("give either config= or its fields as keywords, not both")
        self.config = config or StreamingConfig(**config_kwargs)
        self.shards = list(shards)
        names = [s.name for s in self.shards]
        if len(set(names)) != len(names):
            raise ValueError("shard names must be unique (they identify shards in errors and checkpoints)")
        self.rank, self.world_size = _resolve_dist(rank, world_size)
        if len(self.shards) < self.world_size:
            raise ValueError(
                f"{len(self.shards)} shards cannot feed {self.world_size} ranks: a rank without data would "
                "hang DDP and re-using shards would repeat data; split the data into >= world_size shards"
            )
        self.bins = bins
        self.get_lengths = get_lengths
        self.limits = limits  # checked before the bins (assign.py); None: only ``invalid``
        sizes = resolve_batch_sizes(bins, batch_sizes, max_duration, max_tokens, quadratic_duration)
        self.batch_sizes = sizes
        self._sizes = self.batch_sizes.tolist()
        self.step_weights = P.step_weights(bins, self.batch_sizes, bucket_weights)
        self._cum_weights = np.cumsum(self.step_weights)
        counts = [shard_items(s) for s in self.shards]
        self.shard_items = None if None in counts else counts
        if self.world_size > 1 and self.config.steps_per_epoch is None and self.shard_items is None:
            raise ValueError(
                f"{self.world_size} ranks must run equal steps (DDP): give steps_per_epoch, or shards that "
                "know their num_items (JsonlShard counts its lines; CallableShard(num_items=...))"
            )
        self._assignments: dict[int, tuple[list[int], int | None]] = {}  # epoch -> (own shards, steps)
        self.fingerprint = self._fingerprint(names)
        self.epoch = 0
        self._resume = self._initial(0)  # where the next iteration starts
        self._history: deque[_Snapshot] = deque([self._resume], maxlen=self.config.history + 1)
        self._draw_cache: tuple[tuple[int, int], list[int]] = ((-1, -1), [])
        self._active: weakref.ref[Iterator[list[Any]]] | None = None

    # ---- public API ---------------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Select the epoch. Keeps a restored position only if ``epoch`` is the restored epoch."""
        epoch = int(epoch)
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        if epoch != self.epoch:
            self.close()  # an iteration still alive belongs to the old epoch
            self.epoch = epoch
            self._resume = self._initial(epoch)
            self._history = deque([self._resume], maxlen=self.config.history + 1)

    def rank_shards(self, epoch: int | None = None) -> list[Shard]:
        """This rank's shards of ``epoch`` (default: the current one), in reading order."""
        return [self.shards[i] for i in self._assignment(self.epoch if epoch is None else epoch)[0]]

    def num_steps(self, epoch: int | None = None) -> int | None:
        """Steps of ``epoch`` on every rank (module doc); None: a single rank reading until its shards end."""
        return self._assignment(self.epoch if epoch is None else epoch)[1]

    def drawn_bucket(self, step: int, epoch: int | None = None) -> int:
        """The synchronized bucket draw of ``step`` (the same on every rank); O(1) amortised."""
        epoch = self.epoch if epoch is None else int(epoch)
        block = int(step) // P.DRAW_BLOCK
        if self._draw_cache[0] != (epoch, block):
            self._draw_cache = (
                (epoch, block),
                P.draw_block(self.config.seed, epoch, block, self._cum_weights),
            )
        return self._draw_cache[1][int(step) % P.DRAW_BLOCK]

    def __iter__(self) -> Iterator[list[Any]]:
        self.close()  # one live iteration per sampler: a new one stops the previous one's filler thread
        gen = self._iterate()
        self._active = weakref.ref(gen)  # weak: an abandoned loop must still free (and close) its generator
        return gen

    def close(self) -> None:
        """Stop the current iteration (and its filler thread), if any."""
        gen = self._active() if self._active is not None else None
        self._active = None
        if gen is not None:
            gen.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: nothing useful left to do
            pass

    def state_dict(self, steps_done: int | None = None) -> dict[str, Any]:
        """Resume state after ``steps_done`` steps of the current epoch (default: the latest step yielded)."""
        snap = self._history[-1]
        if steps_done is not None and steps_done != snap.steps:
            kept = {s.steps: s for s in self._history}
            if int(steps_done) not in kept:
                raise ValueError(
                    f"the state after step {steps_done} is not kept (have steps {min(kept)}..{max(kept)}); "
                    "raise history to cover the DataLoader's batches in flight"
                )
            snap = kept[int(steps_done)]
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "seed": int(self.config.seed),
            "epoch": snap.epoch,
            "rank": self.rank,
            "world_size": self.world_size,
            "fingerprint": self.fingerprint,
            "steps_done": snap.steps,
            "position": list(snap.position),
            "buffers": [[encode_item(x) for x in b] for b in snap.buffers],
            "counters": {**snap.counters.__dict__, "rejected": dict(snap.counters.rejected)},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore this rank's state; refuse one of another rank, world size, seed, shard set or bins."""
        if state.get("format") != STATE_FORMAT or state.get("version") != STATE_VERSION:
            raise ValueError(f"not a {STATE_FORMAT} v{STATE_VERSION} state: {state.get('format')!r}")
        for key, mine, why in (
            ("rank", self.rank, "each rank reads its own shards; load that rank's state"),
            ("world_size", self.world_size, "the shard split depends on the number of ranks"),
            ("seed", int(self.config.seed), "a different seed gives a different order"),
            ("fingerprint", self.fingerprint, "shards, bins, sizes, weights, buffer or strict differ"),
        ):
            if state[key] != mine:
                raise ValueError(
                    f"cannot resume: saved {key}={state[key]!r}, this sampler has {mine!r}: {why}"
                )
        buffers = state["buffers"]
        if len(buffers) != len(self._sizes):
            raise ValueError(f"saved state has {len(buffers)} buckets, the bins have {len(self._sizes)}")
        epoch = int(state["epoch"])
        position = (int(state["position"][0]), int(state["position"][1]))
        last = len(self.rank_shards(epoch)) if self.num_steps(epoch) is None else float("inf")  # passes
        if not 0 <= position[0] <= last or position[1] < 0:
            raise ValueError(f"saved stream position {position} is outside this rank's shards")
        counters = _Counters(**{**state["counters"], "rejected": dict(state["counters"]["rejected"])})
        buffered = tuple(tuple(decode_item(e) for e in b) for b in buffers)
        self.close()
        self.epoch = epoch
        self._resume = _Snapshot(epoch, int(state["steps_done"]), position, buffered, counters)
        self._history = deque([self._resume], maxlen=self.config.history + 1)

    def report(self) -> dict[str, Any]:
        """Counts of this rank's epoch so far (after the latest step yielded or restored)."""
        snap = self._history[-1]
        return {
            "epoch": snap.epoch,
            "rank": self.rank,
            "world_size": self.world_size,
            "steps": snap.steps,
            **{k: v for k, v in snap.counters.__dict__.items() if k != "rejected"},
            "rejected": dict(snap.counters.rejected),
            "buffered": sum(len(b) for b in snap.buffers),
            "num_steps": self.num_steps(snap.epoch),
            "unread": self._unread(snap),
        }

    # ---- internals ----------------------------------------------------------------------------------
    def _assignment(self, epoch: int) -> tuple[list[int], int | None]:
        """(this rank's shard ids in reading order, the common step count) of ``epoch`` (``stream_plan``)."""
        if epoch not in self._assignments:
            cfg, w, counts = self.config, self.world_size, self.shard_items
            if counts is None:
                mine, most = P.round_robin(cfg.seed, epoch, len(self.shards), w, self.rank), 0
            else:
                mine, most = P.split_shards(cfg.seed, epoch, counts, w, self.rank)
            steps = cfg.steps_per_epoch
            if steps is None and w > 1:
                steps = P.common_steps(most, self.step_weights, self.batch_sizes)
            self._assignments = {epoch: (mine, steps)}  # the current epoch is all an iteration needs
        return self._assignments[epoch]

    def _unread(self, snap: _Snapshot) -> int | None:
        """Items of this rank's shards its first pass has not read (None: item counts unknown)."""
        if self.shard_items is None:
            return None
        mine = self._assignment(snap.epoch)[0]
        pos, offset = snap.position
        return sum(self.shard_items[i] for i in mine[pos:]) - (offset if pos < len(mine) else 0)

    def _initial(self, epoch: int) -> _Snapshot:
        return _Snapshot(epoch, 0, (0, 0), tuple(() for _ in self._sizes), _Counters())

    def _fingerprint(self, names: list[str]) -> str:
        h = hashlib.blake2b(digest_size=16)
        h.update(self.bins.to_json().encode())
        h.update(self.batch_sizes.astype(np.int64).tobytes())
        h.update(self.step_weights.tobytes())
        h.update("\0".join(names).encode())
        h.update(f"{self.config.buffer_size}|{self.config.strict}|{self.limits}".encode())
        if self.world_size > 1 or self.config.steps_per_epoch is not None:  # one rank until the end: as ever
            h.update(f"{self.config.steps_per_epoch}|{self.shard_items}".encode())
        return h.hexdigest()

    def _classify(self, items: list[Any]) -> tuple[np.ndarray, dict[int, str]]:
        """Bucket per item (-1 rejected) and the rejection reason of each rejected item."""
        if not items:
            return np.empty(0, dtype=np.int32), {}
        lengths = [self.get_lengths(x) for x in items]
        d = np.array([x[0] for x in lengths], dtype=np.float64)
        u = np.array([x[1] for x in lengths])
        buckets = assign_buckets(d, u, self.bins, strict=self.config.strict, limits=self.limits).bucket
        reasons = {}
        for i in np.flatnonzero(buckets < 0).tolist():  # rare: one small call each gives its reason
            one = assign_buckets(
                d[i : i + 1], u[i : i + 1], self.bins, strict=self.config.strict, limits=self.limits
            )
            rej = one.rejected
            reasons[i] = next(r for r, n in rej.items() if n)
        return buckets, reasons

    def _open(self, epoch: int, position: tuple[int, int], stop: int) -> StreamReader:
        cfg = self.config
        chunks = iter_chunks(self.rank_shards(epoch), position, self._classify, cfg.chunk_size, stop)
        if cfg.background:
            return StreamReader(BackgroundFiller(chunks, cfg.prefetch_chunks, cfg.join_timeout_s), position)
        return StreamReader(chunks, position)

    def _nearest(self, buffers: list[list[Any]], drawn: int, full: bool) -> int | None:
        """Nearest bucket to ``drawn`` holding a full batch (``full``) or anything; ties toward shorter."""
        sizes, nb = self._sizes, len(buffers)
        for dist in range(nb):
            for b in (drawn - dist, drawn + dist) if dist else (drawn,):
                if 0 <= b < nb and len(buffers[b]) >= (sizes[b] if full else 1):
                    return b
        return None

    def _iterate(self) -> Iterator[list[Any]]:
        # Generator body: runs at the first next(), so DataLoader's double iter() starts nothing twice.
        start = self._resume
        self._resume = self._initial(start.epoch)  # a later iteration replays the epoch from its start
        self._history = deque([start], maxlen=self.config.history + 1)
        es = epoch_seed(self.config.seed, start.epoch)
        buffers = [list(b) for b in start.buffers]
        c = start.counters.copy()
        cap, sizes = self.config.buffer_size, self._sizes
        buffered = sum(len(b) for b in buffers)
        dirty: set[int] = set()  # buckets changed since the last snapshot; the others share its tuples
        num_shards, total = len(self.rank_shards(start.epoch)), self.num_steps(start.epoch)
        reader = self._open(start.epoch, start.position, P.pass_stop(start.position, num_shards))
        fresh, kept = False, 0  # a pass opened at its start, and the items it has kept so far

        def read_one() -> int | None:
            """Move one stream item into its buffer; its bucket (-1: rejected), None when the pass ends."""
            nonlocal kept
            got = reader.read()
            if got is None:
                return None
            item, bucket, why, shard_pos = got
            c.items_read += 1
            c.repeated += shard_pos >= num_shards
            if bucket < 0:
                c.rejected[why] += 1  # type: ignore[index]  # a rejected item always has a reason
            else:
                buffers[bucket].append(item)
                dirty.add(bucket)
                kept += 1
            return bucket

        try:
            step = start.steps
            while total is None or step < total:
                while buffered < cap and (got := read_one()) is not None:
                    buffered += got >= 0
                drawn = self.drawn_bucket(step, start.epoch)
                b = self._nearest(buffers, drawn, full=True)
                while b is None and (got := read_one()) is not None:  # over the cap: no full batch yet
                    buffered += got >= 0
                    if got >= 0 and len(buffers[got]) >= sizes[got]:
                        b = self._nearest(buffers, drawn, full=True)
                c.max_buffered = max(c.max_buffered, buffered)
                if b is None:  # pass exhausted and no full batch anywhere: flush a partial one
                    b = self._nearest(buffers, drawn, full=False)
                    if b is None and total is None:
                        break
                    if b is None:  # every item of the pass yielded, steps left: read the shards again
                        if fresh and not kept:
                            raise RuntimeError(
                                f"rank {self.rank}: a whole pass over its shards kept no item, so it cannot "
                                "run the common number of steps (all rejected, or empty shards?)"
                            )
                        reader.close()
                        reader = self._open(start.epoch, reader.position, reader.position[0] + num_shards)
                        fresh, kept = True, 0
                        continue
                    c.flushed += 1
                elif b != drawn:
                    c.fallbacks += 1
                rng = np.random.default_rng([_PICK_STREAM, es, self.rank, step])
                batch = self._take(buffers[b], sizes[b], rng)
                dirty.add(b)
                buffered -= len(batch)
                step += 1
                c.batches += 1
                c.items_yielded += len(batch)
                prev = self._history[-1].buffers
                frozen = tuple(tuple(x) if i in dirty else prev[i] for i, x in enumerate(buffers))
                dirty.clear()
                self._history.append(_Snapshot(start.epoch, step, reader.position, frozen, c.copy()))
                yield batch
            last = self._history[-1]  # record the rejections read after the last batch
            self._history[-1] = _Snapshot(last.epoch, step, reader.position, last.buffers, c.copy())
        finally:
            reader.close()

    @staticmethod
    def _take(buf: list[Any], size: int, rng: np.random.Generator) -> list[Any]:
        """Remove and return min(size, len) random items of ``buf`` (swap-remove: O(size), not O(len))."""
        n = len(buf)
        picks = rng.permutation(n) if size >= n else rng.choice(n, size=size, replace=False)
        batch = [buf[i] for i in picks.tolist()]
        # Descending order: every index above the current one is already removed, so buf[-1] is unpicked.
        for i in sorted(picks.tolist(), reverse=True):
            buf[i] = buf[-1]
            buf.pop()
        return batch
