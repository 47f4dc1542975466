"""Bucket assignment: map every utterance to one flattened bucket of a ``Bins``, or reject it with a reason.

Strict (the default): the smallest duration bin whose edge is ≥ d, then the smallest sub-bucket of that row
whose max U is ≥ U. Lenient: the first bucket in flattened (duration-major, U-minor) order whose bounds both
cover the example; this may promote an utterance with many tokens into a longer duration bin.

Rejections are counted by reason, checked in this order (the first that applies wins):

- ``invalid``, ``too_short``, ``tokens_exceed_frames``, ``over_budget``: the utterance breaks a
  bin-independent ``LengthLimits`` (see ``limits.py``; by default only ``invalid`` is checked: duration not
  positive or not finite, or U < 0);
- ``too_long``: d is above the last duration edge;
- ``tps_outlier``: U / d is above the max TPS of the bin *the duration falls in*. Lenient mode applies the
  same rule rather than the TPS bound of the bin it would be promoted to: an outlier is an outlier relative to
  utterances of its own length, and promotion must not become a back door for the examples the estimator
  dropped (they are exactly the ones that OOM);
- ``too_many_tokens``: no sub-bucket of its row (strict) or of any admissible row (lenient) holds its U.

Vectorised numpy: about 0.1 s for 1M utterances and 30 × 4 buckets.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fastaed.sampling.bins import Bins, as_lengths
from fastaed.sampling.limits import LIMIT_REASONS, LengthLimits

REJECT_REASONS = (*LIMIT_REASONS, "too_long", "tps_outlier", "too_many_tokens")


@dataclass(frozen=True, eq=False)
class Assignment:
    """Result of ``assign_buckets``.

    bucket: (N,) int32 flattened bucket id, -1 for a rejected utterance.
    rejected: count per reason in ``REJECT_REASONS`` (every reason present, zeros included).
    num_buckets: the flattened bucket count of the bins used.
    """

    bucket: np.ndarray
    rejected: dict[str, int] = field(default_factory=dict)
    num_buckets: int = 0

    def __post_init__(self) -> None:
        if self.bucket.ndim != 1 or self.bucket.dtype != np.int32:
            raise ValueError("bucket must be a 1-D int32 array")
        if set(self.rejected) != set(REJECT_REASONS):
            raise ValueError(f"rejected must count exactly {REJECT_REASONS}")

    @property
    def num_rejected(self) -> int:
        return int(sum(self.rejected.values()))

    def counts(self) -> np.ndarray:
        """(num_buckets,) int64: utterances per bucket."""
        kept = self.bucket[self.bucket >= 0]
        return np.bincount(kept, minlength=self.num_buckets).astype(np.int64)

    def reject_buckets(self, buckets: np.ndarray, reason: str) -> Assignment:
        """A copy with every utterance of the flattened ``buckets`` rejected as ``reason``."""
        hit = np.isin(self.bucket, np.asarray(buckets, dtype=np.int64))  # -1 is never a bucket id
        rejected = {**self.rejected, reason: self.rejected[reason] + int(hit.sum())}
        bucket = np.where(hit, -1, self.bucket).astype(np.int32)
        return Assignment(bucket=bucket, rejected=rejected, num_buckets=self.num_buckets)


def assign_buckets(
    durations: np.ndarray,
    out_lengths: np.ndarray,
    bins: Bins,
    strict: bool = True,
    limits: LengthLimits | None = None,
) -> Assignment:
    """Assign (N,) durations (s, compared as float32) and (N,) output lengths U to the buckets of ``bins``.

    limits: per-utterance limits checked before the bins (default: only ``invalid``)."""
    d, u = as_lengths(durations, out_lengths)
    s = bins.num_subbuckets
    n = len(d)
    bucket = np.full(n, -1, dtype=np.int32)

    violations = (limits or LengthLimits()).violations(d, u)
    broken = np.logical_or.reduce(list(violations.values()))
    row = bins.duration_bin(d)
    too_long = ~broken & (row >= bins.num_duration_bins)
    ok = ~broken & ~too_long
    row_ok = row[ok]
    # Same float64 expression as the estimator, so a kept estimation example never fails its own bound.
    tps = u[ok] / d[ok].astype(np.float64)
    outlier = np.zeros(n, dtype=bool)
    outlier[ok] = tps > bins.max_tps[row_ok]
    ok &= ~outlier

    idx = np.flatnonzero(ok)
    r, uu = row[idx], u[idx]
    # Rows are non-decreasing, so the count of bounds below U is the first sub-bucket that holds U.
    sub = (bins.max_u[r] < uu[:, None]).sum(axis=1)
    fits = sub < s
    bucket[idx[fits]] = (r[fits] * s + sub[fits]).astype(np.int32)
    if not strict:
        # Promotion: scan the longer rows in order; each row resolves whatever it can still hold.
        pending = np.flatnonzero(~fits)
        pr, pu = r[pending], uu[pending]
        for k in range(bins.num_duration_bins):
            sel = (pr < k) & (bins.max_u[k, -1] >= pu)
            if not sel.any():
                continue
            j = (bins.max_u[k] < pu[sel, None]).sum(axis=1)
            bucket[idx[pending[sel]]] = (k * s + j).astype(np.int32)
            pr = np.where(sel, bins.num_duration_bins, pr)  # resolved: never matches again
        fits = bucket[idx] >= 0
    rejected = {
        **{reason: int(mask.sum()) for reason, mask in violations.items()},
        "too_long": int(too_long.sum()),
        "tps_outlier": int(outlier.sum()),
        "too_many_tokens": int((~fits).sum()),
    }
    return Assignment(bucket=bucket, rejected=rejected, num_buckets=bins.num_buckets)
