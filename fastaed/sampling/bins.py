"""Bucket bins: where the (duration × output length) plane is cut so that batches carry little padding.

``estimate_bins`` follows the reference recipe (SPEC "Bin estimation"):

1. sort by duration and cut K duration bins of (approximately) equal total audio; ties collapse duplicate
   edges, so skewed data (many identical durations) gives fewer than K bins instead of empty ones;
2. inside each duration bin drop high tokens-per-second outliers (one-sided z-score of TPS = U / duration
   above ``tps_outlier_z``; a bin whose TPS has zero spread keeps everything) and record the bin's max TPS
   over the kept examples;
3. split the kept examples by U into S sub-buckets of equal total tokens.

``method="min_padding"`` (ours) replaces both equal-mass cuts by the bounds that minimise the padding they
imply: duration edges minimising padded seconds Σ_k n_k · edge_k, then U bounds minimising padded tokens
Σ_j n_j · max_u_j per bin; each is an exact 1-D dynamic programme over the distinct values (≤ 1024 quantile
candidates on big data), ~0.3 s for 30 bins.

Every bound is an *inclusive upper* bound: duration bin k holds ``edges[k-1] < d <= edges[k]`` and sub-bucket
j of row k holds ``max_u[k, j-1] < U <= max_u[k, j]``. Durations are compared as float32 seconds (the metadata
index dtype): an estimated edge is an actual float32 duration, stored as its shortest decimal (39.978, not
39.97800064086914), which converts back to the same float32, so files stay readable and comparisons exact.

Measured over one epoch of ``BucketingSampler`` (20k utterances from ``stats.synthetic_lengths``, U with the
6-token prompt, 30 duration bins, budget 600 s), input / output padding:

    equal_mass   30x1: 5.4 % / 27.1 %   30x2: 5.4 % / 15.8 %   30x4: 5.4 % / 8.9 %   30x6: 5.3 % / 5.9 %
    min_padding                         30x2: 4.7 % / 15.2 %   30x4: 4.7 % / 7.6 %   30x6: 4.6 % / 4.8 %
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from fastaed.sampling.limits import LengthLimits
from fastaed.util.files import FileFormatError, parse_json, read_json

BINS_FORMAT = "fastaed.bins"
BINS_FORMAT_VERSION = 1
MAX_DP_CANDIDATES = 1024  # the min-padding DP is O(S · m²) in the distinct U values m of a bin; cap m
Method = Literal["equal_mass", "min_padding"]
SubBuckets = int | Literal["auto"]


@dataclass(frozen=True)
class AutoSubBuckets:
    """How ``num_subbuckets="auto"`` chooses the U sub-buckets of each duration bin.

    target: a bin gets sub-buckets until its own output padding against the bounds, 1 - Σ U / Σ n_j · max_u_j,
        is at most this (the sampler's batches pad less: a batch's max U is at most its bucket's bound).
    max_subbuckets: the cap per bin (and the width of the (K, S) grid at most).
    min_batches: every sub-bucket holds at least this many batches of the bin's budget batch size
        ``budget_s // edge_k``, so no bucket is only a sliver of one batch (a tail that trains badly).
        A tenth: on the 10k-utterance demo corpus a quarter left room for too few sub-buckets (8.4% output
        padding, 4.7% with a tenth).
    budget_s: padded seconds per batch the population is counted in when the estimator has no ``limits``.
    """

    target: float = 0.05
    max_subbuckets: int = 16
    min_batches: float = 0.1
    budget_s: float = 600.0

    def __post_init__(self) -> None:
        if not 0 <= self.target < 1 or self.max_subbuckets < 1 or self.min_batches < 0 or self.budget_s <= 0:
            raise ValueError(f"invalid auto sub-bucket settings {self}")


@dataclass(frozen=True, eq=False)
class Bins:
    """2D bucket bins; the flattened bucket id of (row k, sub-bucket j) is ``k * S + j``.

    duration_edges: (K,) float64 seconds, inclusive upper bounds, strictly increasing as float32 (the
        precision they are compared in); the last is the longest duration seen at estimation time (longer
        examples are rejected as ``too_long``).
    max_u: (K, S) int64 output lengths, inclusive upper bounds, non-decreasing along each row; the last entry
        of a row is the max U of that bin. A value repeated within a row marks an empty sub-bucket (a bin with
        fewer distinct U values than S); assignment always picks the first of equal bounds.
    max_tps: (K,) float64 tokens per second; ``inf`` disables the outlier filter for that bin.
    """

    duration_edges: np.ndarray
    max_u: np.ndarray
    max_tps: np.ndarray

    def __post_init__(self) -> None:
        edges = np.array(self.duration_edges, dtype=np.float64).reshape(-1)
        max_u = np.array(self.max_u, dtype=np.int64)
        if max_u.ndim == 1:  # 1D bins given as one bound per duration bin
            max_u = max_u[:, None]
        tps = np.full(len(edges), np.inf) if self.max_tps is None else np.array(self.max_tps, np.float64)
        if len(edges) == 0:
            raise ValueError("Bins need at least one duration bin")
        increasing = np.all(np.diff(edges.astype(np.float32)) > 0)
        if not (np.all(np.isfinite(edges)) and edges[0] > 0 and increasing):
            raise ValueError(f"duration_edges must be positive, finite and strictly increasing: {edges}")
        if max_u.ndim != 2 or max_u.shape[0] != len(edges) or max_u.shape[1] < 1:
            raise ValueError(f"max_u must have shape (K={len(edges)}, S>=1), got {max_u.shape}")
        if np.any(max_u < 0) or np.any(np.diff(max_u, axis=1) < 0):
            raise ValueError("max_u rows must be non-negative and non-decreasing")
        if tps.shape != edges.shape or np.any(np.isnan(tps)) or np.any(tps <= 0):
            raise ValueError(f"max_tps must be (K,) positive values (inf = no filter), got {tps}")
        for name, arr in (("duration_edges", edges), ("max_u", max_u), ("max_tps", tps)):
            arr.setflags(write=False)  # frozen means frozen: callers cannot edit bins behind a sampler
            object.__setattr__(self, name, arr)

    @property
    def num_duration_bins(self) -> int:
        return int(self.max_u.shape[0])

    @property
    def num_subbuckets(self) -> int:
        return int(self.max_u.shape[1])

    @property
    def num_buckets(self) -> int:
        """Flattened bucket count K · S (K may be below the requested number after merging duplicates)."""
        return int(self.max_u.size)

    def flat(self) -> list[tuple[float, int]]:
        """(max_duration, max_u) upper bounds per flattened bucket, duration-major."""
        return [(float(e), int(u)) for e, row in zip(self.duration_edges, self.max_u) for u in row]

    def duration_bin(self, durations: np.ndarray) -> np.ndarray:
        """(N,) int64 row of each duration: the smallest k with d <= edge_k (float32), K when too long."""
        edges32 = self.duration_edges.astype(np.float32)
        return np.searchsorted(edges32, np.asarray(durations, dtype=np.float32), side="left")

    def bucket_max_duration(self) -> np.ndarray:
        """(num_buckets,) float64 duration bound of each flattened bucket, at the float32 value compared."""
        return np.repeat(self.duration_edges.astype(np.float32).astype(np.float64), self.num_subbuckets)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Bins):
            return NotImplemented
        return (
            np.array_equal(self.duration_edges, other.duration_edges)
            and np.array_equal(self.max_u, other.max_u)
            and np.array_equal(self.max_tps, other.max_tps)
        )

    __hash__ = None  # type: ignore[assignment]  # mutable-looking contents; compare with ==

    # ---- persistence -------------------------------------------------------------------------------
    def to_json(self) -> str:
        # JSON has no infinity; null stands for "no TPS filter". repr-exact floats round-trip bit for bit.
        tps = [None if not np.isfinite(t) else float(t) for t in self.max_tps]
        doc = {
            "format": BINS_FORMAT,
            "version": BINS_FORMAT_VERSION,
            "duration_edges": [float(e) for e in self.duration_edges],
            "max_u": self.max_u.tolist(),
            "max_tps": tps,
        }
        return json.dumps(doc)

    @classmethod
    def from_json(cls, text: str, source: str = "bins JSON") -> Bins:
        """Parse :meth:`to_json`'s document; :class:`FileFormatError` names ``source`` (the file) and the
        line of a syntax error, or what is wrong with the document."""
        return cls.from_doc(parse_json(text, source), source)

    @classmethod
    def from_doc(cls, doc: object, source: str = "bins JSON") -> Bins:
        """Bins from the parsed document (:meth:`from_json`; a profile embeds one)."""
        doc = doc if isinstance(doc, dict) else {}
        if doc.get("format") != BINS_FORMAT or doc.get("version") != BINS_FORMAT_VERSION:
            raise FileFormatError(
                f"{source}: not a {BINS_FORMAT} v{BINS_FORMAT_VERSION} document "
                f"(format={doc.get('format')!r}, version={doc.get('version')!r})"
            )
        try:
            tps = [np.inf if t is None else t for t in doc["max_tps"]]
            return cls(duration_edges=doc["duration_edges"], max_u=doc["max_u"], max_tps=tps)
        except (KeyError, TypeError, ValueError) as err:  # a missing key, or bounds the checks refuse
            raise FileFormatError(f"{source}: unusable bins ({type(err).__name__}: {err})") from None

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json() + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> Bins:
        return cls.from_doc(read_json(path), str(path))


def as_lengths(durations: np.ndarray, out_lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert to (N,) float32 seconds and (N,) int64 output lengths."""
    d = np.asarray(durations, dtype=np.float32).reshape(-1)
    u = np.asarray(out_lengths).reshape(-1)
    if len(d) != len(u):
        raise ValueError(f"durations ({len(d)}) and out_lengths ({len(u)}) differ in length")
    if u.dtype.kind not in "iu":
        raise ValueError(f"out_lengths must be integers, got dtype {u.dtype}")
    return d, u.astype(np.int64)


def _equal_mass_cuts(sorted_vals: np.ndarray, parts: int) -> np.ndarray:
    """Distinct inclusive upper bounds that cut ascending ``sorted_vals`` into ≤ ``parts`` ~equal-sum groups.

    Bound k is the first value at which the running sum reaches k/parts of the total, so each group's sum is
    within one value of the target; repeated bounds (ties on skewed data) merge into one group.
    """
    csum = np.cumsum(sorted_vals, dtype=np.float64)
    targets = csum[-1] * np.arange(1, parts) / parts
    idx = np.minimum(np.searchsorted(csum, targets, side="left"), len(sorted_vals) - 1)
    return np.unique(np.append(sorted_vals[idx], sorted_vals[-1]))


def _min_padding_cuts(
    sorted_u: np.ndarray, parts: int, *, target: float | None = None, min_count: int = 1
) -> np.ndarray:
    """Distinct upper bounds (≤ ``parts``) minimising Σ_j n_j · bound_j, the padded tokens of the row.

    Exact DP over candidate bounds (the distinct values, or MAX_DP_CANDIDATES quantiles of them on huge bins):
    f_t[i] = min_{k<i} f_{t-1}[k] + v_i · (C_i - C_k), with C the count of values ≤ v; O(parts · m²) numpy.
    ``min_count``: every group holds at least this many values (capped at the row's size, so one group is
    always allowed). ``target``: stop at the fewest groups whose padding 1 - Σu / f_t meets it (auto mode);
    without it, the best of up to ``parts`` groups.
    """
    vals = np.unique(sorted_u)
    if len(vals) > MAX_DP_CANDIDATES:
        vals = np.unique(np.quantile(sorted_u, np.linspace(0, 1, MAX_DP_CANDIDATES), method="higher"))
    min_count = max(1, min(int(min_count), len(sorted_u)))
    if len(vals) <= parts and min_count == 1 and target is None:
        return vals
    v = vals.astype(np.float64)
    c = np.searchsorted(sorted_u, vals, side="right").astype(np.float64)  # C_i: examples with U <= v_i
    m = len(v)
    # [k, i]: k must precede i, and the group (v_k, v_i] must hold at least min_count values.
    invalid = np.tril(np.ones((m, m), dtype=bool)) | (c[None, :] - c[:, None] < min_count)
    f = np.where(c >= min_count, v * c, np.inf)  # exactly one group, ending at i
    goal = -np.inf if target is None else float(np.sum(sorted_u, dtype=np.float64)) / (1.0 - target)
    best_t, best_cost, back = 1, f[m - 1], []
    # Without a minimum count, splitting a group never raises the cost: exactly `parts` groups is optimal.
    for t in range(2, max(parts, 1) + 1):
        if best_cost <= goal:
            break
        cand = f[:, None] - c[:, None] * v[None, :]  # [k, i] = f[k] - C_k · v_i
        cand[invalid] = np.inf
        arg = np.argmin(cand, axis=0)
        f = cand[arg, np.arange(m)] + v * c
        back.append(arg)
        if not np.isfinite(f).any():
            break  # no row can be cut into t groups of min_count: none into more either
        if f[m - 1] < best_cost or (target is None and f[m - 1] <= best_cost):
            best_t, best_cost = t, f[m - 1]
    bounds, i = [m - 1], m - 1  # the row max is always a bound
    for arg in reversed(back[: best_t - 1]):
        i = int(arg[i])
        bounds.append(i)
    return vals[np.array(sorted(bounds))]


def _equal_mass_auto(sorted_u: np.ndarray, cap: int, target: float, min_count: int) -> np.ndarray:
    """Fewest equal-mass U cuts (≤ ``cap``) whose padding meets ``target``, every group ≥ ``min_count``."""
    if sorted_u[-1] == 0:
        return sorted_u[-1:]
    real, best = float(sorted_u.sum(dtype=np.float64)), sorted_u[-1:]
    min_count = max(1, min(int(min_count), len(sorted_u)))
    for parts in range(1, cap + 1):
        row = _equal_mass_cuts(sorted_u, parts)
        n = np.diff(np.concatenate([[0], np.searchsorted(sorted_u, row, side="right")]))
        if n.min() < min_count:
            break  # finer equal-mass cuts only make smaller groups
        best = row
        if 1 - real / float((n * row).sum()) <= target:
            break
    return best


def estimate_bins(
    durations: np.ndarray,
    out_lengths: np.ndarray,
    num_buckets: int = 30,
    num_subbuckets: SubBuckets = "auto",
    tps_outlier_z: float | None = 4.0,
    method: Method = "min_padding",
    limits: LengthLimits | None = None,
    auto: AutoSubBuckets | None = None,
) -> Bins:
    """Estimate 2D (or 1D with ``num_subbuckets <= 1``) bucket bins from per-utterance lengths.

    durations: (N,) seconds (compared as float32); out_lengths: (N,) int U = prompt + text + EOS.
    num_buckets: number of duration bins K (fewer after merging duplicate edges).
    num_subbuckets: U sub-buckets S per duration bin; ≤ 1 gives 1D bins whose bound is the bin's max U.
        ``"auto"`` (default) chooses S per bin from the data (``AutoSubBuckets``: the fewest sub-buckets whose
        padding meets a target, each holding a minimum population); rows with fewer than the widest row are
        padded with empty sub-buckets (their repeated row max), so the bins stay a (K, S_max) grid.
    tps_outlier_z: one-sided z-score above which an example is a TPS outlier of its bin (None: keep all).
    method: ``"min_padding"`` (default) chooses both the duration edges and the U bounds that minimise padded
        seconds Σ_k n_k · edge_k and padded tokens Σ_j n_j · max_u_j (exact DP, ~0.3 s per 30 bins);
        ``"equal_mass"`` cuts durations into equal total audio and U into equal total tokens.
    limits: utterances they reject (too short, over the per-batch budget, ...) are left out, so no bin edge
        stretches to cover one that the sampler rejects anyway, and a budget given here can hold one example
        of every estimated bucket (an edge is a kept duration). Its ``max_duration`` is also the budget that
        the auto mode's minimum population is counted in.
    auto: the auto mode's settings (default ``AutoSubBuckets()``).
    """
    if num_buckets < 1:
        raise ValueError(f"num_buckets must be >= 1, got {num_buckets}")
    if method not in ("equal_mass", "min_padding"):
        raise ValueError(f"unknown method {method!r}; expected 'equal_mass' or 'min_padding'")
    is_auto = num_subbuckets == "auto"
    if not is_auto and not isinstance(num_subbuckets, int | np.integer):
        raise ValueError(f"num_subbuckets must be an int or 'auto', got {num_subbuckets!r}")
    auto = auto or AutoSubBuckets()
    d, u = as_lengths(durations, out_lengths)
    if limits is not None:
        keep = limits.admissible(d, u)
        if len(d) and not keep.any():
            raise ValueError(f"all {len(d)} utterances break the length limits {limits}")
        d, u = d[keep], u[keep]
    if len(d) == 0:
        raise ValueError("cannot estimate bins from zero utterances")
    if not (np.all(np.isfinite(d)) and np.all(d > 0)):
        raise ValueError("durations must be positive and finite")
    if np.any(u < 0):
        raise ValueError("out_lengths must be non-negative")
    s = auto.max_subbuckets if is_auto else max(1, int(num_subbuckets))
    budget_s = limits.max_duration if limits is not None and limits.max_duration else auto.budget_s

    order = np.argsort(d, kind="stable")
    d_sorted, u_sorted = d[order].astype(np.float64), u[order]
    cut = _min_padding_cuts if method == "min_padding" else _equal_mass_cuts
    edges = cut(d_sorted, num_buckets)
    # Row k covers positions [starts[k], ends[k]) of the sorted arrays (ties sit in the lower bin).
    ends = np.searchsorted(d_sorted, edges, side="right")
    starts = np.concatenate([[0], ends[:-1]])
    edges = np.array([float(str(np.float32(e))) for e in edges])  # shortest decimal of the same float32

    rows, max_tps = [], []
    for lo, hi, edge in zip(starts, ends, edges):
        bu, bd = u_sorted[lo:hi], d_sorted[lo:hi]
        tps = bu / bd
        keep = np.ones(len(tps), dtype=bool)
        mean, std = tps.mean(), tps.std()
        # Zero spread, up to the ~1e-7 relative rounding of float32 durations (which would otherwise turn a
        # last-bit difference into a huge z-score): nothing can be an outlier.
        if tps_outlier_z is not None and std > 1e-6 * mean:
            keep = (tps - mean) / std <= tps_outlier_z
        max_tps.append(float(tps[keep].max()))
        kept_u = np.sort(bu[keep])
        # A sub-bucket of the auto mode holds at least min_batches batches of this bin's budget batch size.
        min_count = int(np.ceil(auto.min_batches * max(1, int(budget_s // edge)))) if is_auto else 1
        if s == 1:
            row = kept_u[-1:]
        elif method == "equal_mass" and is_auto:
            row = _equal_mass_auto(kept_u, s, auto.target, min_count)
        elif method == "equal_mass":
            row = _equal_mass_cuts(kept_u, s) if kept_u[-1] > 0 else kept_u[-1:]
        else:
            row = _min_padding_cuts(kept_u, s, target=auto.target if is_auto else None, min_count=min_count)
        rows.append(row)
    # Fewer distinct bounds than S: repeat the row max, so the extra sub-buckets are empty tail slots.
    width = s if not is_auto else max(len(r) for r in rows)
    rows = [np.concatenate([r, np.full(width - len(r), r[-1])]) for r in rows]
    return Bins(duration_edges=edges, max_u=np.stack(rows), max_tps=np.array(max_tps))


def plot_bins(bins: Bins, durations: np.ndarray, out_lengths: np.ndarray, path: str | Path) -> Path:
    """Write a PNG: 2D histogram of (duration, U) with log colour, and each bucket's rectangle on top."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazy: plotting is optional
    from matplotlib.colors import LogNorm
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    d, u = as_lengths(durations, out_lengths)
    fig = Figure(figsize=(9, 6), dpi=110)
    FigureCanvasAgg(fig)  # Agg canvas without touching pyplot's global backend
    ax = fig.add_subplot()
    _, _, _, image = ax.hist2d(d, u, bins=(200, 200), norm=LogNorm(), cmap="viridis", cmin=1)
    fig.colorbar(image, ax=ax, label="utterances")
    lower_d = 0.0
    for edge, row in zip(bins.duration_edges, bins.max_u):
        lower_u = 0
        for j, bound in enumerate(row):
            if j == 0 or bound > lower_u:  # repeated bounds are empty sub-buckets: nothing to draw
                width, height = edge - lower_d, bound - lower_u
                ax.add_patch(Rectangle((lower_d, lower_u), width, height, fill=False, lw=0.6, ec="red"))
            lower_u = bound
        lower_d = edge
    ax.set_xlim(0, max(float(d.max()), bins.duration_edges[-1]) * 1.02)
    ax.set_ylim(0, max(int(u.max()), int(bins.max_u.max())) * 1.03)
    ax.set_xlabel("duration (s)")
    ax.set_ylabel("output length U (tokens)")
    ax.set_title(
        f"{bins.num_duration_bins} duration bins x {bins.num_subbuckets} sub-buckets, {len(d)} utterances"
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
