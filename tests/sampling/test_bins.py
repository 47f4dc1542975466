"""Bin estimation: equal-mass duration cuts, duplicate merging, TPS outliers, sub-buckets, 1D mode,
min-padding cuts (checked against brute force) and persistence.
Run: ``pytest tests/sampling/test_bins.py``."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from fastaed.sampling import (
    Bins,
    BucketingSampler,
    LengthLimits,
    assign_buckets,
    batch_sizes_from_budget,
    estimate_bins,
    padding_stats,
    plot_bins,
)
from fastaed.sampling.bins import _min_padding_cuts
from fastaed.sampling.stats import synthetic_lengths


@pytest.fixture(scope="module")
def corpus() -> tuple[np.ndarray, np.ndarray]:
    return synthetic_lengths(20_000, seed=0)


def test_duration_bins_hold_equal_total_audio(corpus):
    d, u = corpus
    bins = estimate_bins(d, u, num_buckets=30, num_subbuckets=1, method="equal_mass")
    assert bins.num_duration_bins == 30
    assert bins.duration_edges[-1] == pytest.approx(float(d.max()))
    row = bins.duration_bin(d)
    totals = np.bincount(row, weights=d, minlength=30)
    target = d.sum(dtype=np.float64) / 30
    # Each cut lands on the first utterance that reaches the target, so a bin is off by < one utterance.
    assert np.all(np.abs(totals - target) <= d.max() + 1e-3)


def test_identical_durations_merge_into_one_bin():
    d = np.full(500, 5.0, dtype=np.float32)
    u = np.arange(500, dtype=np.int32) % 20 + 30
    bins = estimate_bins(d, u, num_buckets=30, num_subbuckets=2, method="equal_mass")
    assert bins.duration_edges.tolist() == [5.0]
    assert bins.num_buckets == 2


def test_skewed_durations_give_fewer_bins_and_none_empty(corpus):
    d, u = corpus
    d = d.copy()
    d[: int(0.9 * len(d))] = 5.0  # 90 % of the corpus at one duration
    bins = estimate_bins(d, u, num_buckets=30, num_subbuckets=1, method="equal_mass")
    assert 1 < bins.num_duration_bins < 30
    assert np.all(np.diff(bins.duration_edges) > 0)
    counts = assign_buckets(d, u, bins).counts()
    assert np.all(counts > 0)


def test_high_tps_outliers_are_dropped_and_rejected():
    rng = np.random.default_rng(0)
    d = np.full(1001, 10.0, dtype=np.float32)
    u = (60 + rng.integers(-3, 4, size=1001)).astype(np.int32)
    u[-1] = 600  # 60 tokens/s: z-score far above 4
    bins = estimate_bins(d, u, num_buckets=1, num_subbuckets=2, method="equal_mass")
    assert bins.max_tps[0] == pytest.approx(u[:-1].max() / 10.0)
    assert bins.max_u[0, -1] == u[:-1].max()
    assignment = assign_buckets(d, u, bins)
    assert assignment.bucket[-1] == -1 and assignment.rejected["tps_outlier"] == 1
    assert assignment.num_rejected == 1


def test_outlier_filter_is_one_sided_and_off_when_disabled():
    d = np.full(1001, 10.0, dtype=np.float32)
    u = np.full(1001, 60, dtype=np.int32)
    u[0], u[-1] = 1, 600  # one low and one high TPS example
    bins = estimate_bins(d, u, num_buckets=1, num_subbuckets=1, method="equal_mass")
    assert assign_buckets(d, u, bins).rejected["tps_outlier"] == 1  # only the high one
    unfiltered = estimate_bins(d, u, num_buckets=1, num_subbuckets=1, tps_outlier_z=None, method="equal_mass")
    assert assign_buckets(d, u, unfiltered).num_rejected == 0


def test_zero_tps_spread_keeps_every_example():
    d = np.array([2.0, 4.0, 6.0, 8.0] * 50, dtype=np.float32)
    u = (3 * d).astype(np.int32)  # every example at exactly 3 tokens/s
    bins = estimate_bins(d, u, num_buckets=1, num_subbuckets=2, method="equal_mass")
    assert bins.max_tps[0] == 3.0
    assert assign_buckets(d, u, bins).num_rejected == 0
    # 0.1 s steps: U/d equals 10 tokens/s only up to float rounding; the last bits are no outliers either.
    d = (np.arange(1, 301) / 10).astype(np.float32)
    u = np.arange(1, 301).astype(np.int32)
    assert (
        assign_buckets(
            d, u, estimate_bins(d, u, num_buckets=1, num_subbuckets=1, method="equal_mass")
        ).num_rejected
        == 0
    )


def test_subbuckets_split_tokens_evenly_and_end_at_row_max(corpus):
    d, u = corpus
    bins = estimate_bins(d, u, num_buckets=10, num_subbuckets=2, tps_outlier_z=None, method="equal_mass")
    assert bins.max_u.shape == (10, 2)
    assert np.all(np.diff(bins.max_u, axis=1) > 0)
    row = bins.duration_bin(d)
    for k in range(10):
        uk, bound = u[row == k], bins.max_u[k, 0]
        assert bins.max_u[k, -1] == uk.max()
        # The split is the first U value at which the running token sum reaches half (ties stay below).
        assert uk[uk < bound].sum() < uk.sum() / 2 <= uk[uk <= bound].sum()


def test_one_dimensional_mode_bounds_each_bin_by_its_max_u(corpus):
    d, u = corpus
    bins = estimate_bins(d, u, num_buckets=30, num_subbuckets=1, tps_outlier_z=None, method="equal_mass")
    assert bins.max_u.shape == (30, 1) and bins.num_buckets == 30
    row = bins.duration_bin(d)
    assert bins.max_u[:, 0].tolist() == [int(u[row == k].max()) for k in range(30)]
    assert estimate_bins(d, u, num_buckets=30, num_subbuckets=0, method="equal_mass") == estimate_bins(
        d, u, 30, 1, method="equal_mass"
    )


def test_few_distinct_tokens_leave_empty_trailing_subbuckets():
    d = np.linspace(1, 10, 300).astype(np.float32)
    u = np.full(300, 7, dtype=np.int32)
    bins = estimate_bins(d, u, num_buckets=2, num_subbuckets=3, tps_outlier_z=None, method="equal_mass")
    assert bins.max_u.tolist() == [[7, 7, 7], [7, 7, 7]]
    counts = assign_buckets(d, u, bins).counts().reshape(2, 3)
    assert np.all(counts[:, 1:] == 0) and counts[:, 0].sum() == 300


def _padded(sorted_vals: np.ndarray, bounds: np.ndarray) -> float:
    counts = np.diff(np.concatenate([[0], np.searchsorted(sorted_vals, bounds, side="right")]))
    return float((counts * bounds).sum())


@pytest.mark.parametrize("seed", range(5))
def test_min_padding_cuts_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    vals = np.sort(rng.integers(1, 40, size=rng.integers(5, 60)))
    distinct = np.unique(vals)
    for parts in (1, 2, 3, 4):
        got = _min_padding_cuts(vals, parts)
        assert got[-1] == vals[-1] and len(got) == min(parts, len(distinct))
        best = min(
            _padded(vals, np.append(np.array(c, dtype=vals.dtype), vals[-1]))
            for c in itertools.combinations(distinct[:-1], min(parts, len(distinct)) - 1)
        )
        assert _padded(vals, got) == best


def test_min_padding_pads_less_than_equal_mass(corpus):
    """The measured gain (printed in the bins module docstring): less input and output padding per epoch."""
    d, u = corpus
    stats = {}
    for method in ("equal_mass", "min_padding"):
        bins = estimate_bins(d, u, num_buckets=30, num_subbuckets=4, method=method)
        stats[method] = padding_stats(BucketingSampler(d, u, bins=bins, max_duration=600), d, u)
    assert stats["min_padding"]["input_padding"] < stats["equal_mass"]["input_padding"]
    assert stats["min_padding"]["output_padding"] < stats["equal_mass"]["output_padding"]
    assert stats["min_padding"]["input_padding"] <= 0.05 and stats["min_padding"]["output_padding"] <= 0.08


def test_json_round_trip_is_exact(corpus, tmp_path):
    d, u = corpus
    bins = estimate_bins(d, u, num_buckets=12, num_subbuckets=3, method="equal_mass")
    assert Bins.from_json(bins.to_json()) == bins
    assert Bins.load(bins.save(tmp_path / "bins.json")) == bins
    no_filter = Bins(duration_edges=[5.0, 10.0], max_u=[[10, 20], [15, 30]], max_tps=None)
    assert Bins.from_json(no_filter.to_json()) == no_filter and np.isinf(no_filter.max_tps).all()
    with pytest.raises(ValueError, match="version"):
        Bins.from_json(bins.to_json().replace('"version": 1', '"version": 99'))


def test_flat_lists_buckets_duration_major():
    bins = Bins(duration_edges=[5.0, 10.0], max_u=[[10, 20], [15, 30]], max_tps=None)
    assert bins.flat() == [(5.0, 10), (5.0, 20), (10.0, 15), (10.0, 30)]
    assert bins.num_buckets == 4


@pytest.mark.parametrize(
    "kwargs",
    [
        {"duration_edges": [10.0, 5.0], "max_u": [[1], [2]]},
        {"duration_edges": [5.0, 10.0], "max_u": [[20, 10], [15, 30]]},
        {"duration_edges": [5.0], "max_u": [[1], [2]]},
        {"duration_edges": [5.0], "max_u": [[1]], "max_tps": [-1.0]},
    ],
)
def test_invalid_bins_are_refused(kwargs):
    kwargs.setdefault("max_tps", None)
    with pytest.raises(ValueError):
        Bins(**kwargs)


def test_plot_bins_writes_a_png(corpus, tmp_path):
    d, u = corpus
    bins = estimate_bins(d, u, num_buckets=8, num_subbuckets=2, method="equal_mass")
    path = plot_bins(bins, d, u, tmp_path / "bins.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("quadratic", [None, 30.0])
def test_estimation_leaves_out_what_no_batch_can_hold(corpus, quadratic):
    # One 61 s clip, a duration mistyped as 1e9, a 0.04 s clip and a 10,000-character line on 1.4 s: without
    # limits the 61 s clip sits inside the last bin and the budget cannot hold that bucket (the trainer died).
    d, u = corpus
    d = np.concatenate([d, [61.0, 1e9, 0.04, 1.4]]).astype(np.float32)
    u = np.concatenate([u, [20, 20, 8, 7 + 3000]])
    budget = dict(max_duration=60.0, quadratic_duration=quadratic)
    limits = LengthLimits(encoder_frame_samples=1280, non_text_tokens=7, **budget)
    bins = estimate_bins(d, u, num_buckets=30, num_subbuckets=4, method="min_padding", limits=limits)
    assert np.all(batch_sizes_from_budget(bins, **budget) >= 1)  # every bucket holds one example
    sampler = BucketingSampler(d, u, bins=bins, limits=limits, **budget)
    rejected = sampler.epoch_report()["rejected"]
    assert (
        rejected["over_budget"] >= 2 and rejected["too_short"] == 1 and rejected["tokens_exceed_frames"] == 1
    )
    kept = sorted(i for batch in sampler for i in batch)
    assert len(kept) + sum(rejected.values()) == len(d) and not set(kept) & {len(d) - k for k in (1, 2, 3, 4)}
    with pytest.raises(ValueError, match="cannot hold even one example"):
        batch_sizes_from_budget(estimate_bins(d[:-2], u[:-2], 30, 4, method="min_padding"), **budget)


def test_estimation_refuses_when_the_limits_leave_nothing():
    with pytest.raises(ValueError, match="all 2 utterances break the length limits"):
        estimate_bins([61.0, 70.0], [10, 10], limits=LengthLimits(max_duration=60.0))


# ---- auto sub-buckets (the default) ------------------------------------------------------------------
@pytest.mark.parametrize("name", ["lognormal", "librispeech", "common_voice", "multitask", "conversational"])
def test_auto_subbuckets_meet_the_padding_targets(name):
    from fastaed.bench.sampler_inputs import DISTRIBUTIONS
    from fastaed.sampling.padding import Budget, bucketing_batches, epoch_padding

    d, u = DISTRIBUTIONS[name][0](20_000, 0)
    bins = estimate_bins(d, u)  # no tuning at all
    batches, rejected, _ = bucketing_batches(d, u, bins, Budget(600.0))
    stats = epoch_padding(batches, d, u)
    assert stats["input_padding"] <= 0.05 and stats["output_padding"] <= 0.08, stats
    assert sum(rejected.values()) <= 0.006 * len(d)  # common_voice: its 1 % label noise is half rejected


def test_auto_subbuckets_respect_the_minimum_population():
    from fastaed.sampling.bins import AutoSubBuckets

    d, u = synthetic_lengths(5000, seed=3)
    auto = AutoSubBuckets(min_batches=2.0, budget_s=100.0)
    bins = estimate_bins(d, u, num_buckets=10, auto=auto)
    counts = assign_buckets(d, u, bins).counts().reshape(bins.num_duration_bins, -1)
    for edge, row in zip(bins.duration_edges, counts):
        filled = row[row > 0]
        if len(filled) > 1:  # a bin too small for two sub-buckets keeps one, whatever its size
            assert filled.min() >= np.ceil(2.0 * (100.0 // edge))
    # Ragged rows share one (K, S_max) grid: the narrower ones end in repeated (empty) bounds.
    assert bins.num_subbuckets > 1 and Bins.from_json(bins.to_json()) == bins


def test_old_fixed_grid_json_still_loads():
    doc = (
        '{"format": "fastaed.bins", "version": 1, "duration_edges": [2.5, 9.0], "max_u": [[10, 20], [40, 70]]'
    )
    bins = Bins.from_json(doc + ', "max_tps": [null, 8.5]}')
    assert bins.num_subbuckets == 2 and bins.flat() == [(2.5, 10), (2.5, 20), (9.0, 40), (9.0, 70)]


def test_explicit_integer_subbuckets_keep_the_fixed_grid():
    d, u = synthetic_lengths(3000, seed=4)
    assert estimate_bins(d, u, 10, 4).max_u.shape == (10, 4)
    assert estimate_bins(d, u, 10, 1, method="equal_mass").num_subbuckets == 1
    with pytest.raises(ValueError, match="auto"):
        estimate_bins(d, u, 10, "many")
