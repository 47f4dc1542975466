"""`fastaed bench shards`: the streaming sampler at cluster scale, simulated, and fed from real tar files.

**Simulation (no model, no audio).** A shard index of ``utterances`` log-normal utterances (median 6 s,
σ 0.75, 0.5–40 s, ~6 tokens/s: the SPEC's padding corpus) in ``shards`` shards of uneven sizes (log-normal
item counts, σ 0.5) is made in memory. For ``ranks`` ranks it computes what every rank computes alone: the
shard split (checked: every shard has exactly one rank), items and shards per rank, the common step count.
The sampler itself then runs over whole epochs for ``measured_ranks`` of those ranks (the least and the
most loaded, and the ranks next to them; 512 full ranks would take hours on 2 cores, so this is the honest
subset): steps (must equal the common count), batches/s with the background filler, fallbacks (steps that
left the synchronized bucket), the shards each of the ``workers`` DataLoader workers reads members from
(batch k goes to worker k mod W), peak Python memory of one rank (``tracemalloc``), and the restore: state
size, load + first-batch time mid-epoch, and the next batches equal the uninterrupted ones.

**Real tars on this disk.** ``real_files`` short wav files are written loose and as NeMo-tarred shards
(``write_shards``); each pass first evicts the files from the page cache (``posix_fadvise DONTNEED``) so
reads hit the disk: loose files, tar members by seek (the trainer's path), tar members in one sequential
stream. Then the sampler fed from those tars through a 2-worker DataLoader (audio loaded), against the
index sampler on the loose files, and Lhotse's ``DynamicBucketingSampler`` on a Shar copy (Lhotse reads the
audio while iterating the cuts) against our sampler on that same Shar, when ``lhotse`` is installed.
"""

from __future__ import annotations

import os
import pickle
import platform
import time
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fastaed.sampling import assign_buckets, estimate_bins, resolve_batch_sizes, synthetic_lengths
from fastaed.sampling import stream_plan as P
from fastaed.sampling.streaming import CallableShard, StreamingBucketingSampler, StreamingConfig
from fastaed.util.tables import format_table


@dataclass(frozen=True)
class ShardsBenchConfig:
    """Options of ``fastaed bench shards``."""

    utterances: int = field(default=10_000_000, metadata={"help": "utterances in the simulated shard index"})
    shards: int = field(default=10_000, metadata={"help": "shards (uneven sizes)"})
    ranks: int = field(default=512, metadata={"help": "simulated data-parallel ranks"})
    workers: int = field(default=4, metadata={"help": "DataLoader workers per rank"})
    measured_ranks: int = field(default=4, metadata={"help": "ranks whose whole epoch the sampler runs"})
    max_duration: float = field(default=600.0, metadata={"help": "padded seconds per batch"})
    num_buckets: int = field(default=30, metadata={"help": "duration bins (2 sub-buckets each)"})
    buffer_size: int = field(default=10_000, metadata={"help": "items per rank's bucket buffers"})
    real_files: int = field(default=800, metadata={"help": "wav files for the real tar read test (0: skip)"})
    workdir: Path | None = field(default=None, metadata={"help": "folder for the real files (default: tmp)"})
    seed: int = field(default=0, metadata={"help": "seed of the data and the sampler"})
    json: Path | None = field(default=None, metadata={"help": "write the result JSON here"})


def shard_index(config: ShardsBenchConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(durations, U, shard start offsets) of the simulated corpus: uneven shard sizes summing to N."""
    d, u = synthetic_lengths(config.utterances, config.seed)
    rng = np.random.default_rng(config.seed + 1)
    weights = rng.lognormal(0.0, 0.5, config.shards)
    counts = np.maximum(1, np.floor(weights / weights.sum() * config.utterances)).astype(np.int64)
    counts[np.argmax(counts)] += config.utterances - counts.sum()
    return d, u, np.concatenate([[0], np.cumsum(counts)])


def _shards(d: np.ndarray, u: np.ndarray, starts: np.ndarray, ids: list[int]) -> list[CallableShard]:
    def items(i: int):
        lo, hi = int(starts[i]), int(starts[i + 1])
        return lambda: zip([f"{i}:{k}" for k in range(hi - lo)], d[lo:hi].tolist(), u[lo:hi].tolist())

    return [CallableShard(str(i), items(i), int(starts[i + 1] - starts[i])) for i in ids]


def _sampler(config, bins, weights, shards, rank, world, steps) -> StreamingBucketingSampler:
    cfg = StreamingConfig(buffer_size=config.buffer_size, seed=config.seed, steps_per_epoch=steps)
    return StreamingBucketingSampler(
        shards, bins=bins, max_duration=config.max_duration, bucket_weights=weights, rank=rank,
        world_size=world, config=cfg,
    )  # fmt: skip


def simulate(config: ShardsBenchConfig) -> dict[str, Any]:
    t0 = time.perf_counter()
    d, u, starts = shard_index(config)
    counts = np.diff(starts)
    made_s = time.perf_counter() - t0
    sample = np.random.default_rng(config.seed).choice(len(d), size=min(len(d), 200_000), replace=False)
    bins = estimate_bins(d[sample], u[sample], config.num_buckets, 2)
    weights = assign_buckets(d[sample], u[sample], bins).counts().astype(np.float64)
    sizes = resolve_batch_sizes(bins, max_duration=config.max_duration)
    t0 = time.perf_counter()
    order, owner, load = P.shard_owners(config.seed, 0, counts.tolist(), config.ranks)
    split_s = time.perf_counter() - t0
    owner_arr = np.asarray(owner)
    per_rank_shards = np.bincount(owner_arr, minlength=config.ranks)
    steps = P.common_steps(max(load), P.step_weights(bins, sizes, weights), sizes)
    load_arr = np.asarray(load)
    ranked = np.argsort(load_arr, kind="stable")
    picks = list(dict.fromkeys([int(ranked[0]), int(ranked[-1]), int(ranked[1]), int(ranked[-2])]))
    picks = picks[: config.measured_ranks]
    rank_runs = [_run_rank(config, bins, weights, d, u, starts, order, owner, r, steps) for r in picks]
    same_bucket = np.mean(
        np.all(np.array([r.pop("buckets") for r in rank_runs]) == rank_runs[0]["drawn"], axis=0)
    )
    for r in rank_runs:
        r.pop("drawn")
    biggest = int(ranked[-1])
    return {
        "utterances": int(len(d)), "hours": float(d.sum() / 3600), "shards": int(len(counts)),
        "shard_items": {"min": int(counts.min()), "max": int(counts.max())}, "ranks": config.ranks,
        "workers": config.workers, "index_made_s": made_s, "split_s": split_s,
        "every_shard_one_rank": bool(len(owner_arr) == len(counts) and owner_arr.min() >= 0),
        "shards_per_rank": {"min": int(per_rank_shards.min()), "mean": float(per_rank_shards.mean()),
                            "max": int(per_rank_shards.max())},
        "items_per_rank": {"min": int(load_arr.min()), "max": int(load_arr.max())},
        "common_steps": int(steps), "buckets": int(bins.num_buckets),
        "measured": rank_runs, "all_measured_ranks_on_drawn_bucket": float(same_bucket),
        "memory": _memory(config, bins, weights, d, u, starts, order, owner, biggest, steps),
        "restore": _restore(config, bins, weights, d, u, starts, order, owner, biggest, steps),
    }  # fmt: skip


def _rank_sampler(config, bins, weights, d, u, starts, order, owner, rank, steps):
    mine = [i for i in order if owner[i] == rank]
    shards = _shards(d, u, starts, list(range(len(starts) - 1)))
    # The sampler splits the shards itself (the same function as above): check it agrees.
    s = _sampler(config, bins, weights, shards, rank, config.ranks, steps)
    if [int(x.name) for x in s.rank_shards(0)] != mine:
        raise AssertionError(f"rank {rank}: the sampler's shards differ from the simulated split")
    return s


def _run_rank(config, bins, weights, d, u, starts, order, owner, rank, steps) -> dict[str, Any]:
    s = _rank_sampler(config, bins, weights, d, u, starts, order, owner, rank, steps)
    buckets, drawn, worker_shards = [], [], [set() for _ in range(config.workers)]
    over_budget, seen, again = 0, set(), 0
    t0 = time.perf_counter()
    for k, batch in enumerate(s):
        again += sum(x[0] in seen for x in batch)  # yielded a second time this epoch (a second pass)
        seen.update(x[0] for x in batch)
        # Padded seconds of the batch: a strict cap, never above the budget.
        over_budget += len(batch) * max(x[1] for x in batch) > config.max_duration + 1e-6
        buckets.append(
            int(assign_buckets(np.array([batch[0][1]]), np.array([batch[0][2]]), s.bins).bucket[0])
        )
        drawn.append(s.drawn_bucket(k))
        worker_shards[k % config.workers].update(
            x[0].split(":")[0] for x in batch
        )  # batch k -> worker k mod W
    wall = time.perf_counter() - t0
    rep = s.report()
    return {
        "rank": rank, "items": int(sum(x.num_items for x in s.rank_shards())), "shards": len(s.rank_shards()),
        "steps": rep["batches"], "equal_to_common": rep["batches"] == steps, "wall_s": wall,
        "batches_per_s": rep["batches"] / wall, "items_per_s": rep["items_read"] / wall,
        "fallbacks": rep["fallbacks"], "flushed": rep["flushed"], "repeated": rep["repeated"],
        "repeated_yielded": again, "unread": rep["unread"], "max_buffered": rep["max_buffered"],
        "over_budget_batches": int(over_budget),
        "worker_shards": [len(w) for w in worker_shards], "buckets": buckets, "drawn": drawn,
    }  # fmt: skip


def _memory(config, bins, weights, d, u, starts, order, owner, rank, steps) -> dict[str, Any]:
    """Peak Python allocations of one rank's sampler over 100 steps (filler thread included)."""
    tracemalloc.start()
    s = _rank_sampler(config, bins, weights, d, u, starts, order, owner, rank, steps)
    base = tracemalloc.get_traced_memory()[0]
    for k, _ in enumerate(s):
        if k == 100:
            break
    peak = tracemalloc.get_traced_memory()[1] - base
    s.close()
    tracemalloc.stop()
    return {"rank": rank, "steps": 100, "peak_mb": peak / 2**20, "buffer_items": config.buffer_size}


def _restore(config, bins, weights, d, u, starts, order, owner, rank, steps) -> dict[str, Any]:
    """State after half an epoch, restored in a fresh sampler: its size, the time to load it and to get the
    next batch, and whether the next 20 batches are those of the uninterrupted run."""
    half = steps // 2
    s = _rank_sampler(config, bins, weights, d, u, starts, order, owner, rank, steps)
    it = iter(s)
    for _ in range(half):
        next(it)
    state = s.state_dict()
    expected = [next(it) for _ in range(20)]
    s.close()
    fresh = _rank_sampler(config, bins, weights, d, u, starts, order, owner, rank, steps)
    t0 = time.perf_counter()
    fresh.load_state_dict(pickle.loads(pickle.dumps(state)))
    load_s = time.perf_counter() - t0
    it = iter(fresh)
    first = next(it)
    first_s = time.perf_counter() - t0
    got = [first, *(next(it) for _ in range(19))]
    fresh.close()
    pos = state["position"]
    return {
        "rank": rank, "at_step": half, "state_mb": len(pickle.dumps(state)) / 2**20,
        "buffered_items": sum(len(b) for b in state["buffers"]), "load_s": load_s, "first_batch_s": first_s,
        "same_next_batches": got == expected, "reopened_shard_items_skipped": int(pos[1]),
    }  # fmt: skip


def run(config: ShardsBenchConfig) -> dict[str, Any]:
    from fastaed.bench.shards_io import real_tar_reads

    t0 = time.perf_counter()
    result: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    }
    result["simulation"] = simulate(config)
    result["real"] = real_tar_reads(config) if config.real_files else None
    result["wall_s"] = time.perf_counter() - t0
    return result


def print_report(result: dict[str, Any]) -> None:
    s = result["simulation"]
    print(
        f"simulated: {s['utterances']:,} utterances ({s['hours']:,.0f} h) in {s['shards']:,} shards "
        f"({s['shard_items']['min']}..{s['shard_items']['max']} items), {s['ranks']} ranks x {s['workers']} "
        f"workers; index made in {s['index_made_s']:.1f} s, shard split in {s['split_s'] * 1e3:.0f} ms"
    )
    spr, ipr = s["shards_per_rank"], s["items_per_rank"]
    print(
        f"every shard read by exactly one rank: {s['every_shard_one_rank']}; shards per rank "
        f"{spr['min']}/{spr['mean']:.1f}/{spr['max']} (min/mean/max), items per rank "
        f"{ipr['min']:,}..{ipr['max']:,}; common steps per epoch {s['common_steps']} on every rank"
    )
    rows = [
        [m["rank"], f"{m['items']:,}", m["shards"], m["steps"], m["equal_to_common"],
         f"{m['batches_per_s']:.0f}", f"{m['items_per_s']:,.0f}", m["fallbacks"], m["flushed"],
         f"{m['repeated']:,}/{m['repeated_yielded']:,}", m["unread"],
         m["over_budget_batches"], "/".join(str(w) for w in m["worker_shards"])]
        for m in s["measured"]
    ]  # fmt: skip
    header = ["rank", "items", "shards", "steps", "=common", "batch/s", "items/s", "fallback", "flushed",
              "repeated read/yielded", "unread", "over budget", "shards per worker"]  # fmt: skip
    print(format_table(header, rows))
    on_drawn = s["all_measured_ranks_on_drawn_bucket"]
    print(f"steps where every measured rank used the drawn bucket: {on_drawn:.1%}")
    mem, r = s["memory"], s["restore"]
    print(f"peak Python memory of rank {mem['rank']}'s sampler (100 steps): {mem['peak_mb']:.1f} MB")
    print(
        f"restore at step {r['at_step']}: state {r['state_mb']:.2f} MB ({r['buffered_items']:,} buffered), "
        f"load {r['load_s'] * 1e3:.0f} ms, first batch after {r['first_batch_s'] * 1e3:.0f} ms (re-reads "
        f"{r['reopened_shard_items_skipped']} items of the current shard's manifest), next 20 batches equal: "
        f"{r['same_next_batches']}"
    )
    if result["real"] is not None:
        from fastaed.bench.shards_io import print_real

        print_real(result["real"])
    print(f"wall time {result['wall_s']:.0f} s on {result['machine']}")
