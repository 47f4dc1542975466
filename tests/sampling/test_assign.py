"""Bucket assignment (strict, lenient, max TPS; checked against a brute-force loop) and per-bucket batch sizes
from budgets and profiles. Run: ``pytest tests/sampling/test_assign.py``."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from fastaed.sampling import (
    REJECT_REASONS,
    Bins,
    BucketingSampler,
    LengthLimits,
    assign_buckets,
    batch_sizes_from_budget,
    resolve_batch_sizes,
)

# Buckets (5 s, 10), (5 s, 20), (10 s, 15), (10 s, 30).
TABLE_BINS = Bins(duration_edges=[5.0, 10.0], max_u=[[10, 20], [15, 30]], max_tps=[1e9, 1e9])
NONE_REJECTED = dict.fromkeys(REJECT_REASONS, 0)
# The trainer's limits at 16 kHz, 10 ms hop, x8 subsampling (1280 samples per encoder frame), a 7-token
# prompt + EOS, and a 60 s budget.
LIMITS = LengthLimits(encoder_frame_samples=1280, non_text_tokens=7, max_duration=60.0, max_tokens=4000)
WIDE_BINS = Bins(duration_edges=[2.0, 100.0], max_u=[[10_000], [10_000]], max_tps=[np.inf, np.inf])


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
        assert a.rejected == {**NONE_REJECTED, "tps_outlier": 1, "too_many_tokens": 1}
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


@pytest.mark.parametrize(
    ("duration", "u", "reason"),
    [
        (0.04, 8, "too_short"),  # 640 samples, 1 encoder frame: alone it crashes the conv module's BatchNorm
        (0.0799, 8, "too_short"),
        (0.08, 9, None),  # 1280 samples: exactly 2 encoder frames, 2 text tokens
        (0.08, 10, "tokens_exceed_frames"),  # 3 text tokens on 2 frames
        (1.4, 7 + 3000, "tokens_exceed_frames"),  # a 10,000-character line on a 1.4 s clip
        (1.4, 7 + 18, None),  # 22,400 samples: 18 frames, as many text tokens
        (60.0, 8, None),  # the budget is inclusive
        (61.0, 8, "over_budget"),  # one 61 s clip under a 60 s budget
        (1e9, 8, "over_budget"),  # a mistyped duration (the wide bins would call it too_long)
        (0.0, 8, "invalid"),
    ],
)
def test_length_limits_reject_an_untrainable_utterance_by_reason(duration, u, reason):
    for strict in (True, False):
        a = assign_buckets(np.array([duration]), np.array([u]), WIDE_BINS, strict=strict, limits=LIMITS)
        if reason is None:
            assert a.num_rejected == 0 and a.bucket[0] >= 0
        else:
            assert a.bucket.tolist() == [-1] and a.rejected == {**NONE_REJECTED, reason: 1}


def test_length_limits_min_duration_gives_the_encoder_two_frames():
    assert LIMITS.min_duration == pytest.approx(0.08)
    assert LIMITS.encoder_frames(np.array([0.04, 0.0799, 0.08, 0.16, 1.4])).tolist() == [1, 1, 2, 3, 18]
    assert LengthLimits(encoder_frame_samples=1280, min_encoder_frames=3).min_duration == pytest.approx(0.16)
    assert LengthLimits().min_duration == 0.0  # no frame limit: plain-array users keep every clip


def test_over_budget_counts_the_quadratic_cost_and_the_tokens_of_a_batch_of_one():
    limits = LengthLimits(max_duration=60.0, quadratic_duration=30.0, max_tokens=4000)  # d + d²/30 <= 60
    a = assign_buckets(np.array([30.0, 30.5, 1.0]), np.array([5, 5, 4001]), WIDE_BINS, limits=limits)
    assert a.bucket[0] >= 0 and a.bucket[1:].tolist() == [-1, -1]
    assert a.rejected == {**NONE_REJECTED, "over_budget": 2}
    # The same cost as the batch sizes: a bucket bounded by the longest kept clip holds exactly one.
    bins = Bins(duration_edges=[30.0], max_u=[[4000]], max_tps=[np.inf])
    assert batch_sizes_from_budget(bins, 60.0, 4000, quadratic_duration=30.0).tolist() == [1]


def test_sampler_rejects_buckets_wider_than_the_budget_instead_of_failing():
    # Bins from a file whose 10 s buckets cannot hold one example in 8 s (today: ValueError before step 1).
    d = np.array([1.0, 2.0, 4.5, 6.0, 7.5, 9.0, 20.0])
    u = np.array([5, 15, 8, 10, 20, 25, 5])
    sampler = BucketingSampler(d, u, bins=TABLE_BINS, max_duration=8.0, shuffle=False)
    assert sampler.batch_sizes.tolist() == [1, 1, 0, 0]
    report = sampler.epoch_report()
    # 6, 7.5 and 9 s fit no usable bucket (7.5 s alone fits the budget, but its bucket's bound does not);
    # 20 s is past the last edge, but over the budget on its own comes first.
    assert report["rejected"] == {**NONE_REJECTED, "over_budget": 4}
    assert sorted(i for batch in sampler for i in batch) == [0, 1, 2]
    assert [b["batch_size"] for b in report["per_bucket"]] == [1, 1, 0, 0]
    assert report["examples"] + sum(report["rejected"].values()) == len(d)


@pytest.mark.parametrize("world_size", [1, 3])
def test_sampler_counts_length_limit_rejections_and_covers_the_rest_exactly_once(world_size):
    rng = np.random.default_rng(0)
    d = rng.uniform(0.5, 20.0, size=300)
    u = (7 + d * rng.uniform(2, 6, size=300)).astype(np.int64)
    d[:4] = [0.04, 61.0, 1e9, 1.4]  # too short, over the 60 s budget twice, and a chatty 1.4 s clip
    u[3] = 7 + 3000
    bins = Bins(
        duration_edges=[5.0, 10.0, 20.0], max_u=[[60, 200], [80, 200], [160, 200]], max_tps=[np.inf] * 3
    )
    ranks = [
        BucketingSampler(d, u, bins=bins, max_duration=60.0, limits=LIMITS, rank=r, world_size=world_size)
        for r in range(world_size)
    ]
    report = ranks[0].epoch_report()
    expected = {**NONE_REJECTED, "too_short": 1, "over_budget": 2, "tokens_exceed_frames": 1}
    assert report["rejected"] == expected
    batches = [list(s) for s in ranks]
    seen = Counter(i for rank in batches for batch in rank for i in batch)
    assert set(seen) == set(range(4, 300)) and sum(seen.values()) == 296 + report["repeats"]
    buckets = ranks[0].step_buckets()  # synchronized: every rank's step k comes from the same bucket
    for rank in batches:
        for k, batch in enumerate(rank):
            assert ranks[0].assignment.bucket[batch].tolist() == [buckets[k]] * len(batch)
