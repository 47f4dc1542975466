"""The baseline: batch sizes that NeMo's original Canary-1B recipe implies.

NeMo trained Canary-1B with Lhotse dynamic bucketing: **1D** buckets (duration only, 20 of them, equal total
audio each), a batch budget ``batch_duration = 360`` s and ``quadratic_duration = 15`` s. Each utterance is
charged ``d + d²/15`` seconds, and a batch of a bucket closes before its padded charge exceeds 360 s, so a
bucket whose longest utterance lasts ``d`` gets

    B(d) = floor(360 / (d + d² / 15))        e.g. 1 s: 337, 5 s: 54, 10 s: 21, 20 s: 7, 40 s: 2

One rule for every model and every GPU: the quadratic term is a guess at the cost of attention, tuned so that
the worst bucket does not run out of memory; every other bucket then leaves memory unused.

**Mapping onto the 2D grid** (to compare with a profile bucket by bucket): the rule ignores U, so every
sub-bucket of duration row k gets ``B(d_k)`` from that row's upper edge ``d_k``. Under NeMo's own 20 buckets
an utterance of duration ``d_k`` sits in a 1D bucket whose edge is >= ``d_k``, so it would get B(edge) <=
B(d_k): the grid mapping is never smaller than what the heuristic really gives the same utterances, which
makes the comparison conservative (it favours the heuristic). For a training run the heuristic runs as it
really is: :func:`heuristic_bins` (20 equal-total-duration 1D buckets of the same data) with the strict
budget of ``fastaed.sampling.budget`` (a cap on the bucket's bound; Lhotse caps on the batch's actual
longest utterance, so its batches can be a little larger than these).
"""

from __future__ import annotations

import numpy as np

from fastaed.sampling.bins import Bins, estimate_bins
from fastaed.sampling.budget import batch_sizes_from_budget

BATCH_DURATION = 360.0  # s, NeMo Canary-1B train_ds.batch_duration
QUADRATIC_DURATION = 15.0  # s, NeMo Canary-1B train_ds.quadratic_duration
NUM_BUCKETS = 20  # NeMo Canary-1B train_ds.num_buckets (1D)


def heuristic_batch_sizes(
    bins: Bins, batch_duration: float = BATCH_DURATION, quadratic_duration: float = QUADRATIC_DURATION
) -> np.ndarray:
    """(num_buckets,) int64: ``floor(batch_duration / (d + d²/q))`` for each bucket's duration bound d."""
    return batch_sizes_from_budget(bins, max_duration=batch_duration, quadratic_duration=quadratic_duration)


def heuristic_bins(durations: np.ndarray, out_lengths: np.ndarray, num_buckets: int = NUM_BUCKETS) -> Bins:
    """NeMo's 1D bins of the same data: ``num_buckets`` duration bins of equal total audio, U bound = the
    bin's max U (after the same TPS outlier filter as the 2D bins), used for the worst-case memory."""
    return estimate_bins(
        durations, out_lengths, num_buckets=num_buckets, num_subbuckets=1, method="equal_mass"
    )
