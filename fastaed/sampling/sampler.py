"""``BucketingSampler``: synchronized 2D bucketing over an in-memory metadata index, with O(1) exact resume.

Plan of one epoch (vectorised numpy; for 1M utterances ~0.05 s per epoch plan, ~0.2 s to construct):

- The epoch's RNG is seeded from blake2b(seed, epoch), so (seed s, epoch e+1) is unrelated to (s+1, e).
- Every bucket's utterances are permuted (one global permutation, then a stable sort by bucket).
- A *global step* takes ``world_size × B_b`` utterances of ONE bucket b; rank r gets the r-th slice of B_b.
  Every rank uses the same bucket at the same step (synchronized buckets: no rank waits on a slower shape)
  and ranks never share an utterance.
- Bucket order: the next step's bucket drawn with probability ∝ the steps a bucket still holds is exactly a
  uniform shuffle of the multiset of step labels (b repeated steps_b times), so all buckets run out together.
- Step k → (bucket b, j-th step of b) → index slice is arithmetic, so restoring step k costs one plan.

Tail of a bucket (fewer than ``world_size × B_b`` left), ``drop_last=False``:

- ≥ 2 × world_size left: one last step, the remainder split as evenly as possible over the ranks;
- fewer than 2 × world_size left but a full step before it (and B_b ≥ 2): the last full step and the
  remainder are balanced over two steps, every rank getting ⌊·⌋ or ⌈·⌉ of (W·B_b + rem) / 2W ≤ B_b;
- with shuffling, a tail's utterances are dealt longest first, round-robin, smaller batches picking first,
  and ranks left with 1 beside ranks with 2 take one repeat each, so the ranks' padded seconds at one step
  stay within 1.5x of each other (repeats counted in ``epoch_report()``);
- otherwise (a bucket with fewer utterances than ranks, or B_b = 1): ranks that would get nothing get one
  *repeat* of an utterance of the same bucket (at most world_size − 1 per bucket, counted in
  ``epoch_report()``). This keeps every rank at the same step count, so DDP never hangs.

With ``drop_last=True`` each bucket's incomplete final step is dropped: at most one partial batch per rank per
bucket (< world_size × B_b utterances per bucket, counted as ``dropped``).

``shuffle=False``: buckets in ascending flattened order, utterances in index order within a bucket.

Manifest weights (``sources`` + ``weights``, see ``weights.py``): an epoch draws ``round(n_m · w_m / min w)``
utterances of manifest m (whole copies, then a rotating subset for the fractional rest) instead of every
utterance once; the steps are then laid out over that multiset exactly as above (``epoch_report()``'s
``per_source`` counts the draws). Equal weights give the unweighted plan, batch for batch.

Epochs and resume: call ``set_epoch(e)`` before each epoch (PyTorch convention); iterating again without it
replays the same epoch. ``state_dict()`` is a few integers plus a fingerprint of the data, bins and batch
sizes; ``load_state_dict`` rebuilds the plan and the next iteration starts at ``steps_done`` — no replay.
The state is the same on every rank (synchronized steps), so rank 0's state restores every rank.
A DataLoader draws batches ahead of training (``prefetch_factor × num_workers``), so the sampler's own count
runs ahead of what was trained: pass the trained step count, ``state_dict(steps_done=k)``.
"""

from __future__ import annotations

import hashlib
import struct
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch.distributed as dist
from torch.utils.data import Sampler

from fastaed.sampling.assign import assign_buckets
from fastaed.sampling.bins import Bins, as_lengths
from fastaed.sampling.budget import resolve_batch_sizes
from fastaed.sampling.limits import LengthLimits
from fastaed.sampling.weights import SourceMix

STATE_FORMAT = "fastaed.sampler"
STATE_VERSION = 1


def epoch_seed(seed: int, epoch: int) -> int:
    """64-bit RNG seed for (seed, epoch): a hash, so nearby (seed, epoch) pairs give unrelated streams."""
    h = hashlib.blake2b(struct.pack("<QQ", seed, epoch), digest_size=8, person=b"fastaed-sampler")
    return int.from_bytes(h.digest(), "little")


def _resolve_dist(rank: int | None, world_size: int | None) -> tuple[int, int]:
    if (rank is None or world_size is None) and dist.is_available() and dist.is_initialized():
        rank = dist.get_rank() if rank is None else rank
        world_size = dist.get_world_size() if world_size is None else world_size
    rank, world_size = (0 if rank is None else int(rank)), (1 if world_size is None else int(world_size))
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need world_size >= 1 and 0 <= rank < world_size, got rank={rank}, {world_size=}")
    return rank, world_size


@dataclass(frozen=True)
class _Layout:
    """Epoch-invariant step layout per bucket, (num_buckets,) int64 arrays.

    steps: global steps of the bucket; full: the leading steps of exactly W·B utterances;
    pool: utterances of the trailing (steps - full) balanced steps; slots = (steps - full) · W rank batches;
    repeats / dropped: repeated and dropped utterances of the bucket per epoch.
    """

    counts: np.ndarray
    steps: np.ndarray
    full: np.ndarray
    pool: np.ndarray
    slots: np.ndarray
    repeats: np.ndarray
    dropped: np.ndarray

    @classmethod
    def build(cls, counts: np.ndarray, sizes: np.ndarray, world_size: int, drop_last: bool) -> _Layout:
        w = world_size
        g = w * sizes
        full, rem = counts // g, counts % g
        zero = np.zeros_like(counts)
        if drop_last:
            return cls(counts, full, full, zero, zero, zero, rem)
        tail = rem > 0
        steps = full + tail
        # Two balanced steps when the remainder alone would leave a rank empty or with a batch of one beside
        # batches of two (a 2:1 spread of padded seconds at one step) but can borrow a full step.
        two = tail & (rem < 2 * w) & (full >= 1) & (sizes >= 2)
        balanced = np.where(two, 2, tail.astype(np.int64))
        full_steps = steps - balanced
        pool = counts - full_steps * g
        slots = balanced * w
        q, e = pool // np.maximum(slots, 1), pool % np.maximum(slots, 1)
        # Fewer utterances than slots: one repeat per empty slot. Batches of 1 and 2 at one step: the ranks
        # of 1 take a neighbour's utterance too (only the step that mixes them: < w repeats).
        pairs = np.where((q == 1) & (e % w > 0), w - e % w, 0)
        repeats = np.where(pool < slots, slots - pool, pairs)
        return cls(counts, steps, full_steps, pool, slots, repeats, zero)


@dataclass(frozen=True)
class _EpochPlan:
    """One epoch for this rank: step k yields ``order[starts[k] : starts[k] + sizes[k]]``."""

    epoch: int
    order: np.ndarray  # (kept,) int64 utterance ids grouped by bucket
    starts: np.ndarray  # (steps,) int64
    sizes: np.ndarray  # (steps,) int64
    step_bucket: np.ndarray  # (steps,) int64, identical on every rank


class BucketingSampler(Sampler[list[int]]):
    """Batch sampler over (N,) ``durations`` (s) and (N,) ``out_lengths`` (U); yields lists of indices.

    Batch sizes come from ``batch_sizes`` (one per flattened bucket), from the budgets ``max_duration`` /
    ``max_tokens`` / ``quadratic_duration`` (see ``budget.py``), or from both (elementwise minimum).
    ``rank`` / ``world_size`` default to torch.distributed's when it is initialised, else 0 / 1.
    ``strict`` selects the bucket assignment rule (see ``assign.py``); rejected utterances are never yielded
    and are counted in ``epoch_report()``. Use as ``DataLoader(dataset, batch_sampler=sampler)``.
    ``limits``: per-utterance length limits (``limits.py``; their budget fields are replaced by this sampler's
    budget). An utterance a batch of one cannot hold, and every utterance of a bucket the budget cannot hold
    one example of (given bins wider than the budget), is rejected as ``over_budget`` (that bucket's batch
    size is 0) instead of failing the construction.
    ``sources`` (N,) manifest index of each utterance and ``weights`` (one per manifest) set each manifest's
    draws per epoch (module doc); both or neither.
    """

    def __init__(
        self,
        durations: np.ndarray,
        out_lengths: np.ndarray,
        *,
        bins: Bins,
        batch_sizes: Sequence[int] | np.ndarray | None = None,
        max_duration: float | None = None,
        max_tokens: int | None = None,
        quadratic_duration: float | None = None,
        shuffle: bool = True,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        drop_last: bool = False,
        strict: bool = True,
        limits: LengthLimits | None = None,
        sources: np.ndarray | None = None,
        weights: Sequence[float] | None = None,
    ) -> None:
        if not isinstance(seed, int | np.integer) or not 0 <= seed < 2**63:
            raise ValueError(f"seed must be an int in [0, 2**63), got {seed!r}")
        d, u = as_lengths(durations, out_lengths)
        self.bins = bins
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.strict = bool(strict)
        self.rank, self.world_size = _resolve_dist(rank, world_size)
        self.num_examples = len(d)
        self._durations = d
        self.limits = replace(
            limits or LengthLimits(),
            max_duration=max_duration,
            max_tokens=max_tokens,
            quadratic_duration=quadratic_duration,
        )
        self.batch_sizes = resolve_batch_sizes(
            bins, batch_sizes, max_duration, max_tokens, quadratic_duration, allow_empty=True
        )
        self.assignment = assign_buckets(d, u, bins, strict=strict, limits=self.limits).reject_buckets(
            np.flatnonzero(self.batch_sizes == 0), "over_budget"
        )
        if (sources is None) != (weights is None):
            raise ValueError("give both sources and weights (manifest weights), or neither")
        bucket = self.assignment.bucket
        self.mix = (
            None
            if sources is None
            else SourceMix.build(sources, weights, bucket, bins.num_buckets, self.seed, self.shuffle)
        )
        counts = self.assignment.counts() if self.mix is None else self.mix.bucket_counts
        # A bucket of size 0 holds no utterance; size 1 keeps the layout arithmetic free of divisions by 0.
        self._layout = _Layout.build(counts, np.maximum(self.batch_sizes, 1), self.world_size, drop_last)
        dropped, kept_total = int(self._layout.dropped.sum()), int(self._layout.counts.sum())
        if dropped > 0.1 * kept_total:
            # Small data over many buckets and ranks: most buckets never fill world_size × B_b.
            warnings.warn(
                f"drop_last drops {dropped} of {kept_total} utterances every epoch "
                f"({self.bins.num_buckets} buckets, world_size={self.world_size}); consider drop_last=False",
                stacklevel=2,
            )
        kept = np.flatnonzero(bucket >= 0)
        self._kept = kept
        # int16 bucket keys let numpy's stable sort use radix sort (the per-epoch grouping of 1M ids).
        self._key_dtype = np.int16 if bins.num_buckets < 2**15 else np.int32
        self._kept_bucket = bucket[kept].astype(self._key_dtype)
        self._bucket_base = np.concatenate([[0], np.cumsum(self._layout.counts)[:-1]]).astype(np.int64)
        self.fingerprint = self._fingerprint(d, u)
        self.epoch = 0
        self._resume_step = 0  # where the next __iter__ starts (set by load_state_dict)
        self._steps_done = 0  # steps of this epoch handed out (or restored)
        self._plan: _EpochPlan | None = None

    # ---- public API ---------------------------------------------------------------------------------
    @property
    def num_steps(self) -> int:
        """Global steps of one full epoch (the same on every rank)."""
        return int(self._layout.steps.sum())

    def __len__(self) -> int:
        """Batches the next iteration yields: the epoch's steps minus those skipped by a restored state."""
        return self.num_steps - self._resume_step

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch to plan. Keeps a restored position only if ``epoch`` is the restored epoch."""
        epoch = int(epoch)
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        if epoch != self.epoch:
            self.epoch, self._resume_step, self._steps_done = epoch, 0, 0

    def __iter__(self) -> Iterator[list[int]]:
        # A generator: the restored position is taken at the first next(), not at iter(). DataLoader calls
        # iter() on its batch sampler twice (iterator __init__ and _reset) and drives only the second one.
        plan = self._get_plan()
        start, self._resume_step = self._resume_step, 0  # the iteration after this one replays from step 0
        self._steps_done = start
        order, starts, sizes = plan.order, plan.starts.tolist(), plan.sizes.tolist()
        for k in range(start, len(starts)):
            self._steps_done = k + 1
            a = starts[k]
            yield order[a : a + sizes[k]].tolist()

    def state_dict(self, steps_done: int | None = None) -> dict[str, Any]:
        """Resume state; ``steps_done`` overrides the sampler's count with the steps actually trained."""
        steps = self._steps_done if steps_done is None else int(steps_done)
        if not 0 <= steps <= self.num_steps:
            raise ValueError(f"steps_done={steps} outside [0, {self.num_steps}] for epoch {self.epoch}")
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "seed": self.seed,
            "epoch": self.epoch,
            "steps_done": steps,
            "world_size": self.world_size,
            "num_examples": self.num_examples,
            "fingerprint": self.fingerprint,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore epoch and position; refuse a state of other data, bins, sizes, seed or world size."""
        if state.get("format") != STATE_FORMAT or state.get("version") != STATE_VERSION:
            raise ValueError(f"not a {STATE_FORMAT} v{STATE_VERSION} state: {state.get('format')!r}")
        mine = self.state_dict(steps_done=0)
        for key, why in (
            ("world_size", "the step layout depends on the number of ranks"),
            ("num_examples", "the data differs"),
            ("fingerprint", "data, bins, batch sizes or shuffle/drop_last/strict differ"),
            ("seed", "a different seed gives a different order"),
        ):
            if state[key] != mine[key]:
                saved, have = state[key], mine[key]
                raise ValueError(f"cannot resume: saved {key}={saved!r}, this sampler has {have!r} ({why})")
        steps = int(state["steps_done"])
        if not 0 <= steps <= self.num_steps:
            raise ValueError(f"saved steps_done={steps} outside [0, {self.num_steps}]")
        self.epoch = int(state["epoch"])
        self._resume_step = self._steps_done = steps

    def step_buckets(self) -> np.ndarray:
        """(num_steps,) bucket id of every step of the current epoch (the same on every rank)."""
        return self._get_plan().step_bucket.copy()

    def epoch_report(self) -> dict[str, Any]:
        """Counts for one epoch over all ranks: steps, examples, repeats, dropped, rejections, per bucket."""
        lay, bins = self._layout, self.bins
        bounds = bins.flat()
        per_bucket = [
            {
                "bucket": b,
                "max_duration": bounds[b][0],
                "max_u": bounds[b][1],
                "batch_size": int(self.batch_sizes[b]),
                "examples": int(lay.counts[b] - lay.dropped[b]),
                "steps": int(lay.steps[b]),
                "repeats": int(lay.repeats[b]),
                "dropped": int(lay.dropped[b]),
            }
            for b in range(bins.num_buckets)
        ]
        examples = int((lay.counts - lay.dropped).sum())
        repeats = int(lay.repeats.sum())
        steps = self.num_steps
        report = {
            "epoch": self.epoch,
            "world_size": self.world_size,
            "steps": steps,
            "examples": examples,
            "repeats": repeats,
            "dropped": int(lay.dropped.sum()),
            "rejected": dict(self.assignment.rejected),
            "mean_batch_size": (examples + repeats) / (steps * self.world_size) if steps else 0.0,
            "per_bucket": per_bucket,
        }
        if self.mix is not None:
            report["per_source"] = self.mix.report()
        return report

    # ---- planning -----------------------------------------------------------------------------------
    def _fingerprint(self, d: np.ndarray, u: np.ndarray) -> str:
        h = hashlib.blake2b(digest_size=16)
        # The ids rejected (by the length limits, which bins and sizes alone do not determine); none rejected
        # adds nothing, so the fingerprint of clean data does not depend on the limits.
        rejected = np.flatnonzero(self.assignment.bucket < 0).astype(np.int64)
        for part in (d, u, self.batch_sizes.astype(np.int64), rejected):
            h.update(np.ascontiguousarray(part).tobytes())
        h.update(self.bins.to_json().encode())
        h.update(bytes([self.shuffle, self.drop_last, self.strict]))
        if self.mix is not None and not self.mix.trivial:  # equal weights keep the unweighted fingerprint
            h.update(self.mix.digest)
        return h.hexdigest()

    def _get_plan(self) -> _EpochPlan:
        if self._plan is None or self._plan.epoch != self.epoch:
            self._plan = self._make_plan(self.epoch)
        return self._plan

    def _deal_tails(self, order: np.ndarray) -> None:
        """Rearrange each bucket's tail pool in place so the ranks' batches of a tail step pad alike.

        The pool is sorted by duration, longest first, and dealt round-robin over the slots, then laid out
        contiguously as the plan slices it: every rank's
        batch at a tail step starts with one of the step's longest utterances, so padded seconds (size × max
        duration) differ by the spread of the top ``world_size`` durations instead of the pool's. A
        permutation within the pool: coverage, synchronized buckets and resume are untouched.
        """
        lay, w = self._layout, self.world_size
        size = np.maximum(self.batch_sizes, 1)
        for b in np.flatnonzero((lay.slots > 0) & (lay.pool > 1)).tolist():
            a, pool, slots = (
                int(self._bucket_base[b] + lay.full[b] * w * size[b]),
                int(lay.pool[b]),
                int(lay.slots[b]),
            )
            seg = order[a : a + pool]
            longest_first = seg[np.argsort(-self._durations[seg], kind="stable")]
            i = np.arange(pool)
            q, e = divmod(pool, slots)
            # Full rounds pick smaller batches first: their longest utterance is longer, so a batch of q + 1
            # pads at most (q + 1) / q of one of q. The partial last round (the shortest) goes to the first e.
            slot = np.where(i < q * slots, (i + e) % slots, i - q * slots)
            order[a + slot * q + np.minimum(slot, e) + np.minimum(i // slots, q)] = longest_first

    def _make_plan(self, epoch: int) -> _EpochPlan:
        lay, w, r = self._layout, self.world_size, self.rank
        nb = len(lay.counts)
        labels = np.repeat(np.arange(nb), lay.steps)
        ids, keys = self._kept, self._kept_bucket
        if self.mix is not None and not self.mix.trivial:  # this epoch's weighted multiset of ids
            ids = self.mix.epoch_ids(epoch)
            keys = self.assignment.bucket[ids].astype(self._key_dtype)
        if self.shuffle:
            rng = np.random.default_rng(epoch_seed(self.seed, epoch))
            perm = rng.permutation(len(ids))
            order = ids[perm][np.argsort(keys[perm], kind="stable")]
            labels = rng.permutation(labels)
            self._deal_tails(order)
        else:  # index order within a bucket, as documented (tails keep equal sizes, not dealt durations)
            order = ids[np.argsort(keys, kind="stable")]
        # j = how many earlier steps used the same bucket (the occurrence index of each label).
        by_label = np.argsort(labels, kind="stable")
        first_step = np.concatenate([[0], np.cumsum(lay.steps)[:-1]])
        j = np.empty(len(labels), dtype=np.int64)
        j[by_label] = np.arange(len(labels)) - first_step[labels[by_label]]

        b = labels
        size_b = self.batch_sizes[b]
        full = lay.full[b]
        base = self._bucket_base[b]
        starts = base + j * w * size_b + r * size_b  # a full step: rank r takes the r-th slice of B_b
        sizes = size_b.copy()
        tail = j >= full
        if tail.any():
            bt, pool = b[tail], lay.pool[b[tail]]
            slots = np.maximum(lay.slots[bt], 1)
            q, e = pool // slots, pool % slots
            s = (j[tail] - full[tail]) * w + r  # this rank's slot among the balanced steps
            pool_start = base[tail] + full[tail] * w * size_b[tail]
            t_size = q + (s < e)
            t_start = pool_start + s * q + np.minimum(s, e)
            empty = t_size == 0  # more slots than utterances: repeat one of the bucket's pool
            t_start[empty] = pool_start[empty] + s[empty] % np.maximum(pool[empty], 1)
            t_size[empty] = 1
            # Batches of one at a step whose other ranks get two (the layout's pairs): start one earlier, so
            # the batch repeats its neighbour's utterance and every rank's batch holds two.
            pad = (q == 1) & (s >= e) & (s // w == e // w) & (e % w > 0)
            t_start[pad] -= 1
            t_size[pad] = 2
            starts[tail], sizes[tail] = t_start, t_size
        return _EpochPlan(epoch=epoch, order=order, starts=starts, sizes=sizes, step_bucket=labels)
