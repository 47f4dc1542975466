"""StreamingBucketingSampler invariants: coverage over ranks, determinism, background == foreground under
perturbed timing, filler shutdown, shard errors, exact resume (also via the step-state ring and a DataLoader),
budgets, synchronized bucket choice, rejection counts, and JSONL shards.
Synthetic log-normal lengths (``stats.synthetic_lengths``).
Run: ``pytest tests/sampling/test_streaming.py``."""

from __future__ import annotations

import io
import json
import random
import threading
import time
from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from fastaed.sampling import Bins, assign_buckets, estimate_bins
from fastaed.sampling.stats import synthetic_lengths
from fastaed.sampling.streaming import StreamingBucketingSampler, StreamingConfig
from fastaed.sampling.streaming_filler import (
    FILLER_THREAD_NAME,
    CallableShard,
    JsonlShard,
    ShardError,
    StreamItem,
)

N, NUM_SHARDS, BUDGET = 3000, 8, 120.0


@pytest.fixture(scope="module")
def data() -> tuple[list[StreamItem], Bins]:
    d, u = synthetic_lengths(N, seed=3)
    bins = estimate_bins(d, u, num_buckets=8, num_subbuckets=2, method="equal_mass")
    items = [StreamItem(f"u{i}", float(d[i]), int(u[i])) for i in range(N)]
    return items, bins


def shards_of(items: list[StreamItem], num: int = NUM_SHARDS, jitter: bool = False) -> list[CallableShard]:
    def make(part: list[StreamItem]):
        def gen():
            for x in part:
                if jitter and random.random() < 0.05:  # unseeded: perturbs the filler's timing run to run
                    time.sleep(random.random() * 2e-4)
                yield x

        return gen

    return [CallableShard(f"shard{s}", make(items[s::num]), len(items[s::num])) for s in range(num)]


def make(data, *, jitter: bool = False, num_shards: int = NUM_SHARDS, **kw) -> StreamingBucketingSampler:
    items, bins = data
    kw.setdefault("max_duration", BUDGET)
    kw.setdefault("buffer_size", 600)
    kw.setdefault("background", False)
    return StreamingBucketingSampler(shards_of(items, num_shards, jitter), bins=bins, **kw)


def keys(batches) -> list[list[str]]:
    return [[x.key for x in b] for b in batches]


def no_filler_thread() -> bool:
    return not any(t.name == FILLER_THREAD_NAME and t.is_alive() for t in threading.enumerate())


def kept_keys(data) -> Counter:
    items, bins = data
    d = np.array([x.duration for x in items])
    u = np.array([x.out_length for x in items])
    kept = assign_buckets(d, u, bins).bucket >= 0
    return Counter(x.key for x, k in zip(items, kept) if k)


def test_every_kept_item_exactly_once_on_one_rank(data):
    s = make(data)
    assert Counter(x.key for b in s for x in b) == kept_keys(data)
    r = s.report()
    assert r["items_read"] == N and r["items_yielded"] == sum(kept_keys(data).values())
    assert r["buffered"] == r["repeated"] == r["unread"] == 0 and r["num_steps"] is None


@pytest.mark.parametrize("world_size", [2, 3, 4])
def test_several_ranks_run_equal_steps_and_cover_every_kept_item(data, world_size):
    samplers = [make(data, rank=r, world_size=world_size) for r in range(world_size)]
    runs = [list(s) for s in samplers]
    assert {len(run) for run in runs} == {samplers[0].num_steps()}  # no DDP hang
    seen = Counter(x.key for run in runs for b in run for x in b)
    kept = kept_keys(data)
    assert set(seen) == set(kept)  # the estimated step count lets even the largest rank read all its items
    reports = [s.report() for s in samplers]
    assert sum(r["items_read"] - r["repeated"] for r in reports) == N  # one first pass over every shard
    assert all(r["unread"] == 0 for r in reports)
    assert sum(seen.values()) - len(kept) <= sum(r["repeated"] for r in reports)


def test_fewer_shards_than_ranks_is_an_error(data):
    with pytest.raises(ValueError, match="cannot feed"):
        make(data, num_shards=3, rank=0, world_size=4)


def test_deterministic_per_epoch(data):
    a, b = make(data), make(data)
    first = keys(a)
    assert first == keys(b)
    a.set_epoch(1)
    assert keys(a) != first
    assert keys(make(data, seed=7)) != first


def test_background_equals_foreground_under_jitter(data):
    ref = keys(make(data, world_size=2, rank=1))
    for chunk_size, depth in [(1, 1), (7, 2), (64, 32)]:
        s = make(
            data,
            world_size=2,
            rank=1,
            background=True,
            jitter=True,
            chunk_size=chunk_size,
            prefetch_chunks=depth,
        )
        assert keys(s) == ref
    assert no_filler_thread()


def test_filler_stops_on_early_break_and_close(data):
    s = make(data, background=True, prefetch_chunks=2, chunk_size=4)
    for i, _ in enumerate(s):
        if i == 2:
            break
    assert no_filler_thread()
    it = iter(s)
    next(it)
    assert not no_filler_thread()
    s.close()
    assert no_filler_thread()


@pytest.mark.parametrize("background", [False, True])
def test_shard_exception_propagates_with_shard_name(data, background):
    items, bins = data

    def bad():
        yield from items[:50]
        raise OSError("truncated tar member")

    shards = [*shards_of(items[50:], 2), CallableShard("broken-shard-007", bad)]
    s = StreamingBucketingSampler(
        shards, bins=bins, max_duration=BUDGET, buffer_size=600, background=background
    )
    with pytest.raises(ShardError, match="broken-shard-007.*truncated tar member") as err:
        list(s)
    assert err.value.offset == 50  # the item the shard failed on (HEAD: 0, the start of its chunk)
    assert no_filler_thread()


def roundtrip(state: dict) -> dict:
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)  # StreamItem buffers are stored as plain tuples


def test_resume_equals_uninterrupted(data):
    kw = dict(world_size=2, rank=0, background=True, seed=5)
    s = make(data, **kw)
    s.set_epoch(2)
    full = keys(s)
    for k in [0, 1, 9, len(full) // 2, len(full) - 1, len(full)]:
        a = make(data, **kw)
        a.set_epoch(2)
        it = iter(a)
        head = [next(it) for _ in range(k)]
        state = roundtrip(a.state_dict())
        a.close()
        b = make(data, **kw)
        b.load_state_dict(state)
        b.set_epoch(2)  # the restored epoch: keeps the position
        assert keys(head) + keys(b) == full, k
        assert b.report()["items_read"] == s.report()["items_read"]


def test_state_ring_for_prefetching_loaders(data):
    s = make(data, history=4)
    full = keys(make(data))
    it = iter(s)
    for _ in range(10):
        next(it)  # the loader ran 3 batches ahead of the 7 trained
    state = roundtrip(s.state_dict(steps_done=7))
    with pytest.raises(ValueError, match="not kept"):
        s.state_dict(steps_done=2)
    b = make(data)
    b.load_state_dict(state)
    assert keys(b) == full[7:]


class ItemDataset(Dataset):
    """Map-style dataset keyed by the streamed item itself (a real one would load the audio here)."""

    def __getitem__(self, item: StreamItem) -> StreamItem:
        return item

    def __len__(self) -> int:
        return N


def test_dataloader_with_worker_and_ring_resume(data):
    s = make(data, background=True)
    loader = DataLoader(ItemDataset(), batch_sampler=s, num_workers=1, prefetch_factor=2, collate_fn=list)
    full = keys(make(data))
    got = []
    for batch in loader:
        got.append(batch)
        if len(got) == 5:
            # The sampler is ahead by the batches in flight; checkpoint the state of the trained step.
            assert s.report()["steps"] > 5
            state = s.state_dict(steps_done=5)
            break
    b = make(data)
    b.load_state_dict(roundtrip(state))
    assert keys(got) + keys(b) == full
    del loader
    assert no_filler_thread()


def test_budget_never_exceeded(data):
    s = make(data, max_tokens=900, quadratic_duration=20.0, world_size=2, rank=1)
    for batch in s:
        d = max(x.duration for x in batch)
        assert len(batch) * (d + d * d / 20.0) <= BUDGET + 1e-6
        assert len(batch) * max(x.out_length for x in batch) <= 900


def test_synchronized_buckets_except_counted_fallbacks(data):
    items, bins = data
    d = np.array([x.duration for x in items])
    u = np.array([x.out_length for x in items])
    counts = assign_buckets(d, u, bins).counts()
    w = 2
    samplers = [make(data, rank=r, world_size=w, buffer_size=1200, bucket_weights=counts) for r in range(w)]
    runs = [list(s) for s in samplers]
    used = []
    for s, run in zip(samplers, runs):
        bk = [assign_buckets([x.duration for x in b], [x.out_length for x in b], bins).bucket for b in run]
        assert all(len(set(b.tolist())) == 1 for b in bk)  # one bucket per batch
        ub = [int(b[0]) for b in bk]
        full = [len(b) == s.batch_sizes[k] for b, k in zip(run, ub)]
        off = sum(1 for k, (b, f) in enumerate(zip(ub, full)) if f and b != s.drawn_bucket(k))
        assert off == s.report()["fallbacks"]
        assert s.report()["flushed"] == sum(not f for f in full)
        used.append(ub)
    common = min(map(len, used))
    synced = sum(all(u_[k] == samplers[0].drawn_bucket(k) for u_ in used) for k in range(common))
    assert synced >= 0.75 * common, (synced, common)


def test_bucket_draws_track_their_weights(data):
    w = np.arange(1.0, 17.0)
    s = make(data, bucket_weights=w * make(data).batch_sizes)  # expected steps ∝ 1..16
    draws = np.bincount([s.drawn_bucket(k) for k in range(4096)], minlength=16)
    expected = 4096 * w / w.sum()
    assert np.abs(draws - expected).max() <= 4  # stratified (measured ≤ 2.3); independent draws: σ ≈ 20
    assert [s.drawn_bucket(k, epoch=1) for k in range(64)] != [s.drawn_bucket(k) for k in range(64)]


def test_state_of_another_rank_or_world_is_refused(data):
    a = make(data, rank=0, world_size=2)
    with pytest.raises(ValueError, match="rank"):
        make(data, rank=1, world_size=2).load_state_dict(a.state_dict())
    with pytest.raises(ValueError, match="world_size"):
        make(data, rank=0, world_size=4).load_state_dict(a.state_dict())
    with pytest.raises(ValueError, match="fingerprint"):
        make(data, rank=0, world_size=2, buffer_size=601).load_state_dict(a.state_dict())


def test_rejections_counted_by_reason(data):
    items, bins = data
    odd = [StreamItem("long", 500.0, 10), StreamItem("bad", -1.0, 3), StreamItem("chatty", 1.0, 400)]
    shards = [*shards_of(items, 3), CallableShard("odd", lambda: iter(odd))]
    s = StreamingBucketingSampler(shards, bins=bins, max_duration=BUDGET, buffer_size=500, background=True)
    out = {x.key for b in s for x in b}
    rej = s.report()["rejected"]
    assert rej["too_long"] >= 1 and rej["invalid"] == 1 and rej["tps_outlier"] + rej["too_many_tokens"] >= 1
    assert not out & {"long", "bad", "chatty"}
    assert s.report()["items_read"] == N + 3 == len(out) + sum(rej.values())


def test_jsonl_shards(tmp_path, data):
    items, bins = data
    paths = []
    for s in range(3):
        p = tmp_path / f"manifest_{s}.jsonl"
        rows = [
            {"audio_filepath": x.key, "duration": x.duration, "text": "a b", "n": x.out_length}
            for x in items[s::3]
        ]
        p.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
        paths.append(p)
    shards = [JsonlShard(p, out_length_fn=lambda r: r["n"]) for p in paths]
    s = StreamingBucketingSampler(shards, bins=bins, max_duration=BUDGET, buffer_size=600, background=True)
    got = [x for b in s for x in b]
    assert len({x.key for x in got}) == len(got) == s.report()["items_yielded"]
    assert all(x.payload["audio_filepath"] == x.key for x in got)


def test_config_validation(data):
    with pytest.raises(ValueError, match="buffer_size"):
        StreamingConfig(buffer_size=0)
    with pytest.raises(ValueError, match="seed"):
        StreamingConfig(seed=-1)
    with pytest.raises(ValueError, match="bucket_weights"):
        make(data, bucket_weights=[1.0])


UNEVEN = [1500, 100, 300, 700, 50, 350]  # shard sizes; also uneven counts per rank for 2 and 3 ranks


def uneven_shards(items: list[StreamItem], known: bool = True) -> list[CallableShard]:
    bounds = np.cumsum([0, *UNEVEN]).tolist()
    parts = [items[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    return [
        CallableShard(f"uneven{k}", (lambda p=p: iter(p)), len(p) if known else None)
        for k, p in enumerate(parts)
    ]


def make_uneven(data, *, known: bool = True, **kw) -> StreamingBucketingSampler:
    items, bins = data
    kw.setdefault("max_duration", BUDGET)
    kw.setdefault("buffer_size", 300)
    kw.setdefault("background", False)
    return StreamingBucketingSampler(uneven_shards(items, known), bins=bins, **kw)


@pytest.mark.parametrize("world_size", [2, 3])
def test_uneven_shards_give_equal_steps_per_rank(data, world_size):
    samplers = [make_uneven(data, rank=r, world_size=world_size) for r in range(world_size)]
    for epoch in (0, 1):
        for s in samplers:
            s.set_epoch(epoch)
        steps = [len(list(s)) for s in samplers]
        assert len(set(steps)) == 1, steps  # HEAD: round-robin shards, e.g. 43 / 140 / 90 steps
        reports = [s.report() for s in samplers]
        assert sum(r["items_read"] - r["repeated"] for r in reports) == N
        assert all(r["unread"] == 0 for r in reports)
        assert sum(r["repeated"] for r in reports) > 0  # the ranks with less data read theirs again


def test_shards_go_to_ranks_by_item_count(data):
    samplers = [make_uneven(data, rank=r, world_size=2) for r in range(2)]
    loads = [sum(len(list(s_)) for s_ in s.rank_shards()) for s in samplers]
    assert loads == [1500, 1500]  # largest first to the lighter rank: 1500 | 700 + 350 + 300 + 100 + 50


def test_steps_per_epoch_when_shard_sizes_are_unknown(data):
    with pytest.raises(ValueError, match="steps_per_epoch"):
        make_uneven(data, known=False, rank=0, world_size=2)
    samplers = [make_uneven(data, known=False, rank=r, world_size=3, steps_per_epoch=150) for r in range(3)]
    assert [len(list(s)) for s in samplers] == [150, 150, 150]
    # A rank stops at the common count even with data left: its unread items are unknown (no sizes).
    assert all(s.report()["unread"] is None for s in samplers)


def test_a_rank_with_more_data_than_the_steps_counts_what_it_left(data):
    s = make_uneven(data, rank=0, world_size=2, steps_per_epoch=10)
    assert len(list(s)) == 10
    r = s.report()
    own = sum(len(list(x)) for x in s.rank_shards())
    assert r["repeated"] == 0 and r["unread"] == own - r["items_read"] > 0 and r["buffered"] > 0


@pytest.mark.parametrize("background", [False, True])
def test_resume_through_repeated_passes_equals_uninterrupted(data, background):
    kw = dict(rank=1, world_size=3, seed=2, background=background, history=1000)
    s = make_uneven(data, **kw)
    s.set_epoch(1)
    full = list(s)
    assert s.report()["repeated"] > 0  # this rank runs through at least one more pass
    num_shards = len(s.rank_shards())
    states = [s.state_dict(steps_done=k) for k in range(len(full) + 1)]
    # Resume at the steps that flush a pass (position on a pass boundary) and the one after, and a stride.
    flushing = {k for k, st in enumerate(states) if st["position"][0] % num_shards == st["position"][1] == 0}
    assert flushing - {0}
    ks = sorted(flushing | {k + 1 for k in flushing} | set(range(0, len(full) + 1, 10)) | {len(full)})
    for k in [k for k in ks if k <= len(full)]:
        b = make_uneven(data, **kw)
        b.load_state_dict(roundtrip(states[k]))
        assert keys(full[:k]) + keys(b) == keys(full), k
        assert b.report() == s.report()


@pytest.mark.parametrize("background", [False, True])
def test_shard_error_names_the_failing_item(data, background):
    items, bins = data

    def bad_second():  # the second item has no lengths: classifying it fails
        yield items[0]
        yield {"key": "no-lengths"}
        yield from items[1:10]

    shards = [CallableShard("good", lambda: iter(items[10:])), CallableShard("bad-item", bad_second)]
    s = StreamingBucketingSampler(
        shards, bins=bins, max_duration=BUDGET, buffer_size=600, background=background
    )
    with pytest.raises(ShardError, match="bad-item.*item 1") as err:
        list(s)
    assert err.value.offset == 1  # HEAD: 0, the start of the chunk
