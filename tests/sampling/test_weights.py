"""Manifest weights (``PATH:WEIGHT``) in ``BucketingSampler``: per-source draws per epoch, rotation of the
fractional rest, exact resume, disjoint ranks over one synchronized plan, and the trainer's wiring.
Run: ``pytest tests/sampling/test_weights.py``."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest

from fastaed.sampling import Bins, BucketingSampler, estimate_bins
from fastaed.sampling.stats import synthetic_lengths

N = 200  # two manifests of 100 utterances each


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray, Bins]:
    d, u = synthetic_lengths(N, seed=4)
    sources = np.repeat(np.arange(2), N // 2).astype(np.int16)
    est = estimate_bins(d, u, num_buckets=4, num_subbuckets=2)
    # No TPS filter: every utterance is kept, so the expected counts below are exact.
    bins = Bins(duration_edges=est.duration_edges, max_u=est.max_u, max_tps=np.full(4, np.inf))
    return d, u, sources, bins


def make(data, weights=(1.0, 3.0), **kw) -> BucketingSampler:
    d, u, sources, bins = data
    kw.setdefault("max_duration", 200.0)
    return BucketingSampler(d, u, bins=bins, sources=sources, weights=list(weights), **kw)


def drawn(batches, sources) -> Counter:
    return Counter(int(sources[i]) for b in batches for i in b)


def test_weights_change_the_draws_per_source(data):
    sources = data[2]
    s = make(data)
    assert s.assignment.num_rejected == 0
    got = drawn(list(s), sources)
    assert got == {0: 100, 1: 300}
    rep = s.epoch_report()["per_source"]
    assert [(r["utterances"], r["drawn"], r["whole_copies"]) for r in rep] == [(100, 100, 1), (100, 300, 3)]
    assert list(make(data, weights=(1, 1))) != list(s)  # HEAD: identical batches for (1, 1) and (1, 3)


def test_weights_are_relative(data):
    assert list(make(data, weights=(2, 6))) == list(make(data, weights=(1, 3)))


def test_equal_weights_give_the_unweighted_plan(data):
    d, u, _, bins = data
    plain = BucketingSampler(d, u, bins=bins, max_duration=200.0)
    weighted = make(data, weights=(5, 5))
    assert list(weighted) == list(plain)
    assert weighted.fingerprint == plain.fingerprint  # checkpoints of unweighted runs still resume


@pytest.mark.parametrize("shuffle", [True, False])
def test_fractional_weight_rotates_so_every_utterance_gets_its_extra_draw(data, shuffle):
    sources = data[2]
    s = make(data, weights=(1.0, 1.25), shuffle=shuffle)  # source 1: 125 draws, 25 of them extras
    extra_seen: set[int] = set()
    for epoch in range(8):
        s.set_epoch(epoch)
        counts = Counter(i for b in s for i in b)
        assert drawn([list(counts.elements())], sources) == {0: 100, 1: 125}
        assert all(counts[i] == 1 for i in range(100))  # weight 1 (the reference): exactly once
        extras = {i for i in range(100, 200) if counts[i] == 2}
        assert len(extras) == 25 and all(counts[i] >= 1 for i in range(100, 200))
        extra_seen |= extras
        if epoch == 3:
            # A rotating window per (source, bucket): 4 epochs of 25 extras nearly tile the 100 (random
            # subsets would reach ~68); the rounding of each bucket's share leaves a few for epoch 4.
            assert len(extra_seen) >= 90
    assert extra_seen == set(range(100, 200))


def test_resume_mid_epoch_gives_the_same_batches(data):
    full = make(data, seed=3)
    full.set_epoch(2)
    batches = list(full)
    for k in (1, len(batches) // 2, len(batches) - 1):
        a = make(data, seed=3)
        a.set_epoch(2)
        it = iter(a)
        head = [next(it) for _ in range(k)]
        b = make(data, seed=3)
        b.load_state_dict(a.state_dict())
        assert head + list(b) == batches


def test_resume_refuses_other_weights(data):
    with pytest.raises(ValueError, match="fingerprint"):
        make(data, weights=(1, 2)).load_state_dict(make(data).state_dict())


@pytest.mark.parametrize("world_size", [2, 3])
def test_ranks_draw_disjoint_rows_of_one_synchronized_plan(data, world_size):
    d, u, sources, bins = data
    samplers = [make(data, rank=r, world_size=world_size) for r in range(world_size)]
    runs = [list(s) for s in samplers]
    steps = samplers[0].step_buckets()
    assert all(np.array_equal(s.step_buckets(), steps) for s in samplers)
    assert all(len(run) == len(steps) for run in runs)
    bucket = samplers[0].assignment.bucket
    for k, b in enumerate(steps):
        assert all(set(bucket[run[k]]) == {b} for run in runs)
    # The ranks' rows partition the weighted epoch (plus the few tail repeats the report counts).
    total = drawn([b for run in runs for b in run], sources)
    repeats = samplers[0].epoch_report()["repeats"]
    assert total[0] + total[1] - repeats == 400
    assert abs(total[1] - 300) <= repeats and abs(total[0] - 100) <= repeats


def test_bad_weights_are_refused(data):
    with pytest.raises(ValueError, match="positive"):
        make(data, weights=(1, 0))
    with pytest.raises(ValueError, match="sources"):
        make(data, weights=(1,))
    d, u, sources, bins = data
    with pytest.raises(ValueError, match="both"):
        BucketingSampler(d, u, bins=bins, max_duration=200.0, sources=sources)


def test_trainer_passes_the_index_weights(data):
    from fastaed.train import distributed as D
    from fastaed.train.batches import make_sampler_factory
    from fastaed.train.config import TrainConfig

    d, u, sources, bins = data
    index = SimpleNamespace(durations=d, out_lengths=u, source=sources, weights=[1.0, 3.0])
    sampler = {"num_buckets": 4, "num_subbuckets": 2, "max_duration": 200.0}
    cfg = TrainConfig.from_dict(
        {"data": {"train_manifests": ["a.jsonl:1", "b.jsonl:3"], "tokenizer": "t"}, "sampler": sampler}
    )
    info = D.DistInfo(rank=0, world_size=1)
    s = make_sampler_factory(cfg, index, info)(shuffle=True)
    got = drawn(list(s), sources)
    assert got[1] > 2.5 * got[0]  # HEAD ignored the weights: 1:1
