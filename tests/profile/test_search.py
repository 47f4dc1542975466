"""The OOMptimizer search against a fake oracle "fits iff B <= N": doubling, halving, bisection, the stop
rule (gap <= 5% of min_fail or <= 1), warm starts at twice the previous answer, longest bucket first."""

import math

import pytest

from fastaed.train.profile.search import (
    NoBatchFitsError,
    converged,
    search_batch_size,
    search_buckets,
)


def oracle(limit: int, log: list[int] | None = None):
    def fits(b: int) -> bool:
        if log is not None:
            log.append(b)
        return b <= limit

    return fits


def test_doubling_until_the_first_failure_then_bisection():
    result = search_batch_size(oracle(100), start=32)
    assert [b for b, _ in result.trials[:3]] == [32, 64, 128]  # double, double, fail
    assert [ok for _, ok in result.trials[:3]] == [True, True, False]
    assert result.trials[3] == (96, True)  # midpoint of the bracket (64, 128)
    assert result.batch_size <= 100 < result.min_fail
    assert converged(result.batch_size, result.min_fail)


def test_halving_when_the_first_trial_fails():
    result = search_batch_size(oracle(10), start=32)
    assert [b for b, _ in result.trials[:3]] == [32, 16, 8]
    assert [ok for _, ok in result.trials[:3]] == [False, False, True]
    assert result.batch_size == 10 and result.min_fail == 11  # small N: the gap <= 1 rule gives it exactly


@pytest.mark.parametrize("limit", [1, 2, 3, 7, 31, 32, 33, 63, 100, 257, 1000, 4095, 20_000])
@pytest.mark.parametrize("start", [1, 32, 500])
def test_answer_fits_and_the_bracket_meets_the_stop_rule(limit, start):
    result = search_batch_size(oracle(limit), start=start)
    assert 1 <= result.batch_size <= limit
    assert result.min_fail is not None and result.min_fail > limit
    gap = result.min_fail - result.batch_size
    assert gap <= 1 or gap / result.min_fail <= 0.05
    assert limit - result.batch_size <= max(1, 0.05 * result.min_fail)  # within 5% of the true limit
    # Logarithmic: doubling/halving to the bracket, then bisection of a bracket at most as wide as it.
    assert len(result.trials) <= 2 * math.ceil(math.log2(max(limit, start) + 1)) + 3


def test_stop_rule_stops_at_five_percent_not_at_one():
    result = search_batch_size(oracle(1000), start=32)
    # 32..1024 doubling, then bisection only until the gap is within 5% of min_fail (not down to 1)
    assert result.min_fail - result.batch_size > 1
    assert (result.min_fail - result.batch_size) / result.min_fail <= 0.05
    assert converged(950, 1000) and not converged(949, 1000) and converged(9, 10)


def test_a_threshold_of_zero_bisects_to_the_exact_limit():
    assert search_batch_size(oracle(1000), start=32, threshold=0.0).batch_size == 1000


def test_warm_start_at_twice_the_previous_answer_longest_first():
    limits = {"long": 10, "mid": 40, "short": 200}  # what fits in each bucket
    logs: dict[str, list[int]] = {k: [] for k in limits}
    results = search_buckets(lambda k: oracle(limits[k], logs[k]), ["long", "mid", "short"], start=32)
    assert list(results) == ["long", "mid", "short"]  # the order given: longest first
    assert logs["long"][0] == 32
    assert logs["mid"][0] == 2 * results["long"].batch_size
    assert logs["short"][0] == 2 * results["mid"].batch_size
    for k, limit in limits.items():
        assert results[k].batch_size <= limit < results[k].min_fail
        assert converged(results[k].batch_size, results[k].min_fail)
    # The warm start pays off: the shorter buckets' first trial already brackets or fits their limit.
    assert len(results["mid"].trials) < len(search_batch_size(oracle(40), start=32).trials) + 2


def test_nothing_fits_raises_naming_the_bucket():
    with pytest.raises(NoBatchFitsError, match="bucket 3"):
        search_buckets(lambda k: oracle(0), [3])


def test_doubling_stops_at_the_cap():
    result = search_batch_size(lambda b: True, start=32, max_batch_size=100)
    assert result.batch_size == 100 and result.capped
    assert [b for b, _ in result.trials] == [32, 64, 100]
