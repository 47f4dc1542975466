"""Manifest weights for ``BucketingSampler``: which utterances (and how many copies) one epoch draws.

Weights are relative (``PATH:WEIGHT``; (1, 3) means the same as (2, 6)). The least-weighted manifest is the
reference: with ratio ``r_m = w_m / min(w)`` manifest m contributes ``round(n_m · r_m)`` draws per epoch,
where n_m counts its utterances that the bins kept. So weight 1 against 1 is today's "every utterance exactly
once", and no utterance is ever left out of an epoch (every ratio is ≥ 1):

- ``⌊r_m⌋`` whole copies of every utterance of m;
- the fractional rest, ``round(n_m · (r_m − ⌊r_m⌋))`` extra draws without replacement, spread over the
  buckets in proportion to m's utterances there (largest remainder), so weighting never skews lengths.
  Each (manifest, bucket) group has a fixed seeded order and epoch e takes the window that starts where
  epoch e − 1 stopped (cyclically): every utterance gets its extra draw once every ⌈n / extras⌉ epochs.

The per-bucket counts are the same in every epoch, so the sampler's step layout (and O(1) resume) is
unchanged; only which utterances fill the slots rotates with the epoch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

_MIX_STREAM = 0x5EED_3147  # the seeded within-group orders: separate from the epoch's shuffle stream


@dataclass(frozen=True)
class SourceMix:
    """Epoch multisets of utterance ids under per-source weights (see the module doc).

    weights / ratios / whole / utterances / drawn: (S,) per source; group_*: (S · num_buckets,) per
    (source, bucket) group; members: kept ids ordered by group, in each group's fixed order.
    """

    weights: np.ndarray
    ratios: np.ndarray
    whole: np.ndarray
    utterances: np.ndarray
    drawn: np.ndarray
    bucket_counts: np.ndarray  # (num_buckets,) draws per bucket per epoch
    members: np.ndarray
    group_start: np.ndarray
    group_size: np.ndarray
    group_extra: np.ndarray
    kept: np.ndarray
    copies: np.ndarray  # (kept,) whole copies of each kept utterance
    digest: bytes  # what the epoch multisets depend on beyond lengths and bins (for fingerprints)
    sorted_ids: bool  # shuffle=False: hand ids out in index order

    @classmethod
    def build(
        cls,
        sources: np.ndarray,
        weights: Sequence[float],
        bucket: np.ndarray,
        num_buckets: int,
        seed: int,
        shuffle: bool,
    ) -> SourceMix:
        """sources: (N,) manifest of every utterance; bucket: (N,) its bucket, -1 for rejected ones."""
        w = np.asarray(weights, dtype=np.float64)
        if w.ndim != 1 or len(w) == 0 or not np.all(np.isfinite(w)) or np.any(w <= 0):
            raise ValueError(f"weights must be positive finite numbers, one per source, got {list(weights)}")
        src = np.asarray(sources)
        if src.shape != bucket.shape or not np.issubdtype(src.dtype, np.integer):
            raise ValueError(f"sources must be {bucket.shape} integers, got {src.shape} {src.dtype}")
        if len(src) and (src.min() < 0 or src.max() >= len(w)):
            raise ValueError(f"sources must lie in [0, {len(w)}) (one weight per source)")
        kept = np.flatnonzero(bucket >= 0)
        ns, nb = len(w), num_buckets
        group = src[kept].astype(np.int64) * nb + bucket[kept]
        n_g = np.bincount(group, minlength=ns * nb).reshape(ns, nb)
        ratios = w / w.min()
        # Round first: 1.1 / 1.0 must not become 1.0999999 whole copies' worth of float noise.
        ratios = np.round(ratios, 12)
        whole = np.floor(ratios).astype(np.int64)
        frac = ratios - whole
        utterances = n_g.sum(axis=1)
        # Largest remainder over buckets: source m's extras follow its bucket histogram.
        quota = n_g * frac[:, None]
        extra_src = np.floor(quota.sum(axis=1) + 0.5).astype(np.int64)
        base = np.floor(quota).astype(np.int64)
        left = extra_src - base.sum(axis=1)
        rank = np.argsort(np.argsort(-(quota - base), axis=1, kind="stable"), axis=1, kind="stable")
        extra = base + (rank < left[:, None])
        rng = np.random.default_rng([_MIX_STREAM, seed])
        perm = rng.permutation(len(kept)) if shuffle else np.arange(len(kept))
        members = kept[perm][np.argsort(group[perm], kind="stable")]
        size = n_g.reshape(-1)
        h = hashlib.blake2b(digest_size=16)
        h.update(np.ascontiguousarray(src, dtype=np.int64).tobytes())
        h.update(ratios.tobytes())
        return cls(
            weights=w,
            ratios=ratios,
            whole=whole,
            utterances=utterances,
            drawn=utterances * whole + extra_src,
            bucket_counts=(n_g * whole[:, None] + extra).sum(axis=0),
            members=members,
            group_start=np.concatenate([[0], np.cumsum(size)[:-1]]).astype(np.int64),
            group_size=size,
            group_extra=extra.reshape(-1),
            kept=kept,
            copies=whole[src[kept]],
            digest=h.digest(),
            sorted_ids=not shuffle,
        )

    @property
    def trivial(self) -> bool:
        """All weights equal: every utterance exactly once, the unweighted sampler's plan."""
        return bool(np.all(self.ratios == 1.0))

    def epoch_ids(self, epoch: int) -> np.ndarray:
        """The utterance ids (with repeats) that ``epoch`` draws; any order unless ``sorted_ids``."""
        ids = [np.repeat(self.kept, self.copies)]
        x = self.group_extra
        if x.any():
            g = np.repeat(np.arange(len(x)), x)
            within = np.arange(len(g)) - np.repeat(np.cumsum(x) - x, x)
            n = self.group_size[g]
            first = (int(epoch) % n) * x[g] % n  # epoch e's window starts where e - 1's ended
            ids.append(self.members[self.group_start[g] + (first + within) % n])
        out = np.concatenate(ids)
        return np.sort(out) if self.sorted_ids else out

    def report(self) -> list[dict[str, Any]]:
        """Per source: weight, kept utterances, draws per epoch (before ``drop_last``) and whole copies."""
        return [
            {
                "source": m,
                "weight": float(self.weights[m]),
                "utterances": int(self.utterances[m]),
                "drawn": int(self.drawn[m]),
                "whole_copies": int(self.whole[m]),
            }
            for m in range(len(self.weights))
        ]
