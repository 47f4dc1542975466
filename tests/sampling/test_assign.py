"""Bucket assignment (strict, lenient, max TPS; checked against a brute-force loop) and per-bucket batch sizes
from budgets and profiles. Run: ``pytest tests/sampling/test_assign.py``."""

from __future__ import annotations

import numpy as np
import pytest

from fastaed.sampling import Bins, assign_buckets, batch_sizes_from_budget, resolve_batch_sizes

# Buckets (5 s, 10), (5 s, 20), (10 s, 15), (10 s, 30).
TABLE_BINS = Bins(duration_edges=[5.0, 10.0], max_u=[[10, 20], [15, 30]], max_tps=[1e9, 1e9])


@pytest.mark.parametrize(
    ("duration", "u", "strict_bucket", "lenient_bucket", "reason"),
    [
        (2.0, 0, 0, 0, None),
        (2.0, 11, 1, 1, None),
        (2.0, 21, -1, 3, "too_many_tokens"),
        (8.0, 16, 3, 3, None),
        (8.0, 31, -1, -1, "too_many_tokens"),
        (20.0, 1, -1, -1, "too_long"),
        (20.0, 100, -1, -1, "too_long"),
        (5.0, 10, 0, 0, None),  # bounds are inclusive
    ],
)
def test_assignment_table(duration, u, strict_bucket, lenient_bucket, reason):
    for strict, expected in ((True, strict_bucket), (False, lenient_bucket)):
        a = assign_buckets(np.array([duration]), np.array([u]), TABLE_BINS, strict=strict)
        assert a.bucket.tolist() == [expected]
        if expected == -1:
            assert a.rejected[reason] == 1 and a.num_rejected == 1
        else:
            assert a.num_rejected == 0


def test_max_tps_rejects_outliers_by_the_bin_the_duration_falls_in():
    bins = Bins(duration_edges=[5.0, 10.0], max_u=[[10, 20], [15, 30]], max_tps=[2.0, 30.0])
    d = np.array([2.0, 2.0, 8.0, 8.0])
    u = np.array([4, 5, 16, 31])  # TPS 2.0 (at the bound), 2.5 (> 2), 2.0, 3.9 (too many tokens)
    for strict in (True, False):
        a = assign_buckets(d, u, bins, strict=strict)
        # Lenient would fit (2 s, 5) into bin 0 anyway; the TPS rule of bin 0 applies, never bin 1's.
        assert a.bucket.tolist() == [0, -1, 3, -1]
        assert a.rejected == {"invalid": 0, "too_long": 0, "tps_outlier": 1, "too_many_tokens": 1}
    # A promotion candidate that is also a TPS outlier of its own bin stays rejected in lenient mode.
    a = assign_buckets(np.array([2.0]), np.array([21]), bins, strict=False)
    assert a.bucket.tolist() == [-1] and a.rejected["tps_outlier"] == 1


def test_invalid_lengths_are_counted_not_assigned():
    a = assign_buckets(np.array([0.0, -1.0, np.nan, 2.0]), np.array([1, 1, 1, -1]), TABLE_BINS)
    assert a.bucket.tolist() == [-1] * 4 and a.rejected["invalid"] == 4


def _brute_force(d: float, u: int, bins: Bins, strict: bool) -> int:
    s = bins.num_subbuckets
    rows = [k for k, e in enumerate(bins.duration_edges) if np.float32(d) <= np.float32(e)]
    if not rows or u / np.float64(np.float32(d)) > bins.max_tps[rows[0]]:
        return -1
    for k in rows if not strict else rows[:1]:
        for j, bound in enumerate(bins.max_u[k]):
            if u <= bound:
                return k * s + j
    return -1


def test_vectorised_assignment_matches_brute_force():
    rng = np.random.default_rng(0)
    edges = np.sort(rng.choice(np.arange(1, 30), size=6, replace=False)).astype(float)
    max_u = np.sort(rng.integers(1, 200, size=(6, 3)), axis=1)
    bins = Bins(duration_edges=edges, max_u=max_u, max_tps=rng.uniform(3, 15, size=6))
    d = rng.uniform(0.2, 32, size=800).astype(np.float32)
    u = rng.integers(0, 220, size=800)
    for strict in (True, False):
        got = assign_buckets(d, u, bins, strict=strict).bucket
        want = [_brute_force(float(x), int(y), bins, strict) for x, y in zip(d, u)]
        assert got.tolist() == want
        kept = got >= 0  # the chosen bucket always covers the example in both dimensions
        assert np.all(d[kept] <= bins.bucket_max_duration()[got[kept]])
        assert np.all(u[kept] <= bins.max_u.reshape(-1)[got[kept]])


def test_budget_batch_sizes():
    assert batch_sizes_from_budget(TABLE_BINS, max_duration=60).tolist() == [12, 12, 6, 6]
    assert batch_sizes_from_budget(TABLE_BINS, max_duration=60, max_tokens=100).tolist() == [10, 5, 6, 3]
    # Quadratic term d + d²/q: 5 + 2.5 = 7.5 s and 10 + 10 = 20 s per example.
    assert batch_sizes_from_budget(TABLE_BINS, 60, quadratic_duration=10).tolist() == [8, 8, 3, 3]
    assert batch_sizes_from_budget(TABLE_BINS, max_tokens=30).tolist() == [3, 1, 2, 1]


def test_budget_that_cannot_hold_one_example_names_the_bucket():
    with pytest.raises(ValueError, match="bucket 2 with max_duration=10.000"):
        batch_sizes_from_budget(TABLE_BINS, max_duration=8)
    with pytest.raises(ValueError, match="max_duration and/or max_tokens"):
        batch_sizes_from_budget(TABLE_BINS)


def test_profile_sizes_are_validated_and_capped_by_budgets():
    assert resolve_batch_sizes(TABLE_BINS, [3, 4, 5, 6]).tolist() == [3, 4, 5, 6]
    assert resolve_batch_sizes(TABLE_BINS, [30, 4, 50, 6], max_duration=60).tolist() == [12, 4, 6, 6]
    with pytest.raises(ValueError, match="one size per bucket"):
        resolve_batch_sizes(TABLE_BINS, [3, 4])
    with pytest.raises(ValueError, match=">= 1"):
        resolve_batch_sizes(TABLE_BINS, [3, 0, 1, 1])
    with pytest.raises(ValueError, match="profile"):
        resolve_batch_sizes(TABLE_BINS)
