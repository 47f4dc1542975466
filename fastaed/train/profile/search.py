"""OOMptimizer: the largest batch size whose synthetic worst-case training step fits, bucket by bucket.

The algorithm is NeMo's ``scripts/speech_recognition/oomptimizer.py`` (PR #9763), written against an oracle
``fits(batch_size) -> bool`` so it is pure Python and testable without a device:

- start at ``start`` (32); while no trial has failed, double; while no trial has succeeded, halve;
- once both a success and a failure are known, try the midpoint ``round((max_ok + min_fail) / 2)``;
- stop when ``(min_fail - max_ok) / min_fail <= threshold`` (5%) or ``min_fail - max_ok <= 1``; the answer
  is ``max_ok``;
- buckets run longest first and each next bucket starts at ``2 x`` the previous answer (a shorter bucket
  holds at least as many utterances, so the first trial usually succeeds and the search only bisects).

Differences from NeMo, each because the original can loop or crash: a bucket whose batch of one already
fails raises :class:`NoBatchFitsError` naming it (NeMo halves to 0 and retries forever); doubling stops at
``max_batch_size`` (a tiny model on a big device would otherwise double for a long time).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

START_BATCH_SIZE = 32  # NeMo's default first trial
THRESHOLD = 0.05  # stop when the bracket (min_fail - max_ok) is within 5% of min_fail
MAX_BATCH_SIZE = 1 << 16  # doubling stops here

K = TypeVar("K", bound=Hashable)


class NoBatchFitsError(RuntimeError):
    """Even a batch of one does not fit."""


@dataclass
class SearchResult:
    """Outcome of one bucket's search."""

    batch_size: int  # the largest batch size that fit (max_ok)
    min_fail: int | None  # the smallest batch size that failed; None when doubling hit max_batch_size
    trials: list[tuple[int, bool]] = field(default_factory=list)  # (batch size, fits) in trial order

    @property
    def capped(self) -> bool:
        """True when nothing failed up to ``max_batch_size`` (the answer is the cap, not a memory limit)."""
        return self.min_fail is None


def converged(max_ok: int, min_fail: int, threshold: float = THRESHOLD) -> bool:
    """NeMo's stop rule: the gap is within ``threshold`` of ``min_fail``, or at most one."""
    return (min_fail - max_ok) / min_fail <= threshold or min_fail - max_ok <= 1


def search_batch_size(
    fits: Callable[[int], bool],
    start: int = START_BATCH_SIZE,
    threshold: float = THRESHOLD,
    max_batch_size: int = MAX_BATCH_SIZE,
    what: str = "this bucket",
) -> SearchResult:
    """The largest batch size for which ``fits`` holds, by doubling / halving, then bisection.

    ``fits`` is assumed monotone (if B fits, every smaller batch fits); each call is one trial.
    """
    if start < 1 or max_batch_size < 1:
        raise ValueError(f"start and max_batch_size must be >= 1, got {start}, {max_batch_size}")
    current = min(start, max_batch_size)
    max_ok: int | None = None
    min_fail: int | None = None
    trials: list[tuple[int, bool]] = []
    while True:
        ok = bool(fits(current))
        trials.append((current, ok))
        if ok:
            max_ok = current if max_ok is None else max(max_ok, current)
        else:
            min_fail = current if min_fail is None else min(min_fail, current)
        if max_ok is not None and min_fail is not None:
            if converged(max_ok, min_fail, threshold):
                return SearchResult(max_ok, min_fail, trials)
            current = round((max_ok + min_fail) / 2)  # strictly inside the bracket: the gap is >= 2
        elif min_fail is None:  # nothing failed yet: double
            assert max_ok is not None
            if max_ok >= max_batch_size:
                return SearchResult(max_ok, None, trials)
            current = min(2 * current, max_batch_size)
        else:  # nothing fit yet: halve
            if current == 1:
                raise NoBatchFitsError(f"a batch of one does not fit for {what}")
            current = max(1, current // 2)


def search_buckets(
    fits_for: Callable[[K], Callable[[int], bool]],
    buckets_longest_first: Sequence[K],
    start: int = START_BATCH_SIZE,
    threshold: float = THRESHOLD,
    max_batch_size: int = MAX_BATCH_SIZE,
    on_result: Callable[[K, SearchResult], None] | None = None,
) -> dict[K, SearchResult]:
    """Search every bucket in the given order (longest first); each starts at twice the previous answer.

    fits_for(bucket) returns that bucket's oracle; buckets are any hashable keys (ids, shapes). Returns
    {bucket: result}; ``on_result`` sees each as it lands (progress, logging).
    """
    results: dict[K, SearchResult] = {}
    for bucket in buckets_longest_first:
        result = search_batch_size(
            fits_for(bucket), start, threshold, max_batch_size, what=f"bucket {bucket}"
        )
        results[bucket] = result
        start = 2 * result.batch_size
        if on_result is not None:
            on_result(bucket, result)
    return results
