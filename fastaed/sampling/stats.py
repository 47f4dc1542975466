"""Padding metrics over an epoch of batches, and the synthetic length distribution of the SPEC's anchors.

Padding follows the SPEC definitions, aggregated over the epoch as 1 − Σ real / Σ padded (not a mean of
per-batch ratios): input padding uses seconds (∝ frames), output padding uses U.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np


def synthetic_lengths(
    n: int, seed: int = 0, *, prompt_tokens: int = 6, median_s: float = 6.0, sigma: float = 0.75
) -> tuple[np.ndarray, np.ndarray]:
    """(N,) float32 durations and (N,) int32 U like the anchor corpus of ``reference/lhotse.md``.

    Durations: log-normal (median 6 s, σ 0.75) truncated to [0.5, 40] s by rejection, rounded to 1 ms.
    Text tokens: round(rate · d + N(0, 2)), rate ~ N(6, 1) clipped to [2, 12] tokens/s, at least 1;
    U = text tokens + ``prompt_tokens`` (Canary prompt of 5 + EOS; 0 reproduces the anchor's token count).
    """
    rng = np.random.default_rng(seed)
    d = np.empty(0)
    while len(d) < n:
        draw = rng.lognormal(np.log(median_s), sigma, size=2 * n + 16)
        d = np.concatenate([d, draw[(draw >= 0.5) & (draw <= 40.0)]])
    d = np.round(d[:n], 3)
    rate = np.clip(rng.normal(6.0, 1.0, size=n), 2.0, 12.0)
    tokens = np.maximum(1, np.round(rate * d + rng.normal(0.0, 2.0, size=n)))
    return d.astype(np.float32), (tokens + prompt_tokens).astype(np.int32)


def padding_stats(
    batches: Iterable[Sequence[int]], durations: np.ndarray, out_lengths: np.ndarray
) -> dict[str, float]:
    """Epoch padding of ``batches`` (lists of indices): input/output padding fractions, mean batch size,
    and the largest padded batch in seconds (B · max d) and tokens (B · max U)."""
    d = np.asarray(durations, dtype=np.float64)
    u = np.asarray(out_lengths, dtype=np.float64)
    real_d = pad_d = real_u = pad_u = 0.0
    max_pad_d = max_pad_u = 0.0
    num, total = 0, 0
    for batch in batches:
        idx = np.asarray(batch)
        bd, bu = d[idx], u[idx]
        b = len(idx)
        real_d += bd.sum()
        real_u += bu.sum()
        pd, pu = b * bd.max(), b * bu.max()
        pad_d += pd
        pad_u += pu
        max_pad_d, max_pad_u = max(max_pad_d, pd), max(max_pad_u, pu)
        num += 1
        total += b
    return {
        "batches": num,
        "mean_batch_size": total / num if num else 0.0,
        "input_padding": 1 - real_d / pad_d if pad_d else 0.0,
        "output_padding": 1 - real_u / pad_u if pad_u else 0.0,
        "max_padded_seconds": max_pad_d,
        "max_padded_tokens": max_pad_u,
    }
