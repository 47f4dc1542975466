"""Per-bucket batch sizes: from a profile (one size per flattened bucket) or from strict budgets.

Budget rule for bucket b with bounds (max_d_b, max_u_b), in seconds and tokens:

    B_b = the largest B with  B · (max_d_b + max_d_b² / quadratic_duration) <= max_duration
                         and  B · max_u_b <= max_tokens            (each only when given)

Every example of bucket b has d <= max_d_b and U <= max_u_b, so with a fixed B_b per bucket the padded size
of *any* batch (B · its longest d, B · its largest U) stays within the budget: the budget is a cap, never a
target that a lucky batch overshoots (Lhotse's greedy batcher can exceed it, issue #1590).

A bucket whose single worst-case example already exceeds the budget is an error, raised with the bucket's
bounds, unless ``allow_empty`` (the sampler's choice: it then rejects that bucket's utterances as
``over_budget`` and counts them, so given bins that are too wide cost their widest buckets, not the job).
Fixed sizes per bucket are also what makes resume O(1): step k maps to an index slice by arithmetic alone
(see ``sampler.py``); greedy packing by the batch's actual max would not.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fastaed.sampling.bins import Bins
from fastaed.sampling.limits import duration_cost
from fastaed.util.files import FileFormatError, read_json

# Batch size of a bucket no budget binds (only empty targets under a token-only budget); small enough that
# world_size × B never overflows int64 in the sampler's step arithmetic.
UNBOUNDED = 2**31 - 1


def batch_sizes_from_budget(
    bins: Bins,
    max_duration: float | None = None,
    max_tokens: int | None = None,
    quadratic_duration: float | None = None,
    allow_empty: bool = False,
) -> np.ndarray:
    """(num_buckets,) int64 batch sizes, the largest that keep every batch within the given budgets.

    max_duration: cap on padded seconds B · max_d (with the quadratic term if ``quadratic_duration`` is set,
        NeMo's d + d²/q that charges attention's quadratic cost to long utterances).
    max_tokens: cap on padded output tokens B · max_u.
    allow_empty: size 0 for a bucket that cannot hold even one example, instead of raising.
    """
    if max_duration is None and max_tokens is None:
        raise ValueError("give max_duration and/or max_tokens")
    if max_duration is not None and not max_duration > 0:
        raise ValueError(f"max_duration must be > 0, got {max_duration}")
    if max_tokens is not None and not max_tokens > 0:
        raise ValueError(f"max_tokens must be > 0, got {max_tokens}")
    if quadratic_duration is not None and not quadratic_duration > 0:
        raise ValueError(f"quadratic_duration must be > 0, got {quadratic_duration}")
    if quadratic_duration is not None and max_duration is None:
        raise ValueError("quadratic_duration only modifies max_duration; give max_duration too")

    max_d = bins.bucket_max_duration()
    max_u = bins.max_u.reshape(-1).astype(np.float64)
    sizes = np.full(bins.num_buckets, UNBOUNDED, dtype=np.int64)
    if max_duration is not None:
        cost = duration_cost(max_d, quadratic_duration)
        b = np.floor(max_duration / cost).astype(np.int64)
        b -= b * cost > max_duration  # guard the float division rounding up across an integer
        sizes = np.minimum(sizes, b)
    if max_tokens is not None:
        # max_u == 0 (only empty targets) costs no tokens: the token cap does not bind.
        b = np.where(max_u > 0, np.floor(max_tokens / np.maximum(max_u, 1)), UNBOUNDED)
        sizes = np.minimum(sizes, b.astype(np.int64))
    too_big = np.flatnonzero(sizes < 1)
    if allow_empty:
        return np.maximum(sizes, 0)
    if len(too_big):
        k = int(too_big[0])
        raise ValueError(
            f"{len(too_big)} bucket(s) cannot hold even one example within the budget "
            f"({max_duration=}, {max_tokens=}, {quadratic_duration=}); "
            f"first: bucket {k} with max_duration={max_d[k]:.3f} s, max_u={int(max_u[k])}. "
            "Raise the budget or estimate bins whose bounds fit it."
        )
    return sizes


def resolve_batch_sizes(
    bins: Bins,
    batch_sizes: Sequence[int] | np.ndarray | None = None,
    max_duration: float | None = None,
    max_tokens: int | None = None,
    quadratic_duration: float | None = None,
    allow_empty: bool = False,
) -> np.ndarray:
    """(num_buckets,) int64 batch sizes from a profile, budgets, or both (then the elementwise minimum).

    A profile with budgets on top is a common safety net: the OOM search's sizes, capped so no batch exceeds
    a padded-seconds limit the user also wants (e.g. to bound the step time).
    allow_empty: as in :func:`batch_sizes_from_budget` (0 for a bucket the budget cannot hold one example of).
    """
    budget = None
    if max_duration is not None or max_tokens is not None:
        budget = batch_sizes_from_budget(bins, max_duration, max_tokens, quadratic_duration, allow_empty)
    elif quadratic_duration is not None:
        raise ValueError("quadratic_duration only modifies max_duration; give max_duration too")
    if batch_sizes is None:
        if budget is None:
            raise ValueError("give batch_sizes (a profile) or a budget (max_duration / max_tokens)")
        return budget
    profile = np.asarray(batch_sizes)
    if profile.shape != (bins.num_buckets,):
        raise ValueError(f"batch_sizes needs one size per bucket ({bins.num_buckets}), got {profile.shape}")
    if profile.dtype.kind not in "iu" or np.any(profile < 1):
        raise ValueError("batch_sizes must be integers >= 1")
    profile = profile.astype(np.int64)
    return profile if budget is None else np.minimum(profile, budget)


def load_profile(path: str | Path) -> tuple[np.ndarray, Bins | None]:
    """Per-bucket batch sizes (and the bins they were made for, if stored) from a profile JSON file.

    The file holds ``"batch_sizes"``: one size per flattened bucket, and optionally ``"bins"`` (a Bins JSON
    document or its string form). Raises :class:`FileFormatError` (a ``ValueError``) naming the file, and
    the line of a JSON syntax error, when the file cannot be used.
    """
    profile = read_json(path)
    if not isinstance(profile, dict) or "batch_sizes" not in profile:
        raise FileFormatError(f"{path}: no 'batch_sizes' in the profile")
    try:
        batch_sizes = np.asarray(profile["batch_sizes"], dtype=np.int64)
    except (TypeError, ValueError) as err:
        raise FileFormatError(f"{path}: 'batch_sizes' must be a list of integers ({err})") from None
    doc = profile.get("bins")  # a document, or its string form
    if doc is None:
        return batch_sizes, None
    where = f"{path}: bins"
    return batch_sizes, Bins.from_json(doc, where) if isinstance(doc, str) else Bins.from_doc(doc, where)
