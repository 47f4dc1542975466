"""Training on tar shards (``data.train_shards``): the streaming sampler, its batches and its checkpoints.

Each rank builds the same ``StreamingBucketingSampler`` over every shard of every source (the shards' item
counts come from the shard index or one pass over the manifests); from (seed, epoch, shard item counts,
world size) alone every rank computes the same shard split (no shard is read by two ranks in an epoch), the
same common step count (equal steps by construction: a rank that runs dry re-reads its own shards, a rank
with more data stops at the common count) and the same synchronized bucket draw of each step. A rank reads
only its own shards' manifests, in a background filler thread; its DataLoader workers read the members of
the batches they are handed (a seek and a read each), so every batch's audio comes from the rank's shards.

Bins: ``sampler.bins`` / a profile's bins, or estimated (with the run's length limits) from the manifests of a
seeded sample of shards holding ``data.shard_bins_items`` items, whose bucket counts also weigh the bucket
draw. Identical on every rank (a pure function of the config and the data), so nothing is broadcast.

Checkpoints hold every rank's sampler state (``all_gather``): its epoch, steps, stream position (shard and
line) and its buffered items. Resuming restores the buffers and re-opens the rank's current shard only,
skipping the lines already consumed (a manifest read, no audio); earlier shards are not touched, so a resume
costs O(buffer + one shard), never a replay of the epoch.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fastaed.data.errors import BadInputReport
from fastaed.data.shard_sources import open_shard_source
from fastaed.data.shards import ShardDataset, TarShard, shard_lengths
from fastaed.data.tokenizer import Tokenizer
from fastaed.sampling import Bins, LengthLimits, assign_buckets, estimate_bins, load_profile
from fastaed.sampling.streaming import StreamingBucketingSampler, StreamingConfig
from fastaed.train import checkpoint as ckpt
from fastaed.train import distributed as D
from fastaed.train.batches import StreamItem, length_limits
from fastaed.train.config import TrainConfig
from fastaed.train.faults import CollateWithFirstError
from fastaed.train.metrics import format_counts
from fastaed.train.profile.profile import ProfileIdentity, check_profile

_BINS_SAMPLE_STREAM = 0x5A_B1_25  # the shard sample for bin estimation (its own RNG stream)


@dataclass
class ShardData:
    """The shards of the run, what opening them left out, and the dataset its workers load items with."""

    shards: list[TarShard]
    report: BadInputReport  # missing shards (skip policy)
    dataset: ShardDataset

    @property
    def num_items(self) -> int:
        return sum(s.num_items or 0 for s in self.shards)


def open_train_shards(cfg: TrainConfig, tokenizer: Tokenizer) -> ShardData:
    """Every shard of ``data.train_shards``, in the order given (names must be unique across sources)."""
    report = BadInputReport()
    shards = [
        s
        for spec in cfg.data.train_shards
        for s in open_shard_source(spec, tokenizer, on_bad_input=cfg.data.on_bad_input, report=report)
    ]
    if not shards:
        raise FileNotFoundError(f"data.train_shards: no readable shard in {cfg.data.train_shards}")
    return ShardData(shards, report, ShardDataset(tokenizer, on_bad_input="skip"))


def _bins_sample(cfg: TrainConfig, shards: list[TarShard]) -> list[TarShard]:
    """A seeded sample of shards holding at least ``data.shard_bins_items`` items (all of them if fewer)."""
    order = np.random.default_rng([_BINS_SAMPLE_STREAM, cfg.sampler.seed]).permutation(len(shards))
    picked, total = [], 0
    for i in order.tolist():
        if total >= cfg.data.shard_bins_items:
            break
        picked.append(shards[i])
        total += shards[i].num_items or 0
    return picked


def make_stream_sampler(
    cfg: TrainConfig,
    data: ShardData,
    info: D.DistInfo,
    identity: ProfileIdentity | None = None,
    limits: LengthLimits | None = None,
) -> StreamingBucketingSampler:
    """The run's streaming sampler (see the module doc); ``limits`` default to :func:`length_limits`."""
    s = cfg.sampler
    batch_sizes, bins = None, Bins.load(s.bins) if s.bins else None
    if s.profile:
        if identity is not None and (diffs := check_profile(s.profile, identity, force=s.force_profile)):
            D.print0(f"note: using batch-size profile {s.profile} despite: {'; '.join(diffs)}")
        batch_sizes, profile_bins = load_profile(s.profile)
        bins = profile_bins if profile_bins is not None else bins
    limits = limits or length_limits(cfg)
    sample = _bins_sample(cfg, data.shards)
    d, u, _ = shard_lengths(sample)
    if len(d) == 0:
        raise ValueError(
            f"no readable item in the {len(sample)} shards sampled for bins (first: {sample[0].name})"
        )
    if bins is None:
        bins = estimate_bins(d, u, s.num_buckets, s.num_subbuckets, method=s.method, limits=limits)
    weights = assign_buckets(d, u, bins, limits=limits).counts().astype(np.float64)
    workers = cfg.runtime.num_workers
    config = StreamingConfig(
        buffer_size=cfg.data.shard_buffer_size,
        seed=s.seed,
        background=True,
        # The DataLoader runs ahead of training by up to num_workers × prefetch_factor (2) batches.
        history=max(16, 2 * workers + 4),
    )
    return StreamingBucketingSampler(
        data.shards,
        bins=bins,
        batch_sizes=batch_sizes,
        max_duration=s.max_duration,
        max_tokens=s.max_tokens,
        quadratic_duration=s.quadratic_duration,
        bucket_weights=weights if weights.sum() > 0 else None,
        rank=info.rank,
        world_size=info.world_size,
        limits=limits,
        config=config,
    )


class _BucketOf:
    """The sampler as the DataLoader's batch sampler, noting each batch's bucket (in the main process, in
    order) so the trainer can log it with the collated batch that arrives later."""

    def __init__(self, sampler: StreamingBucketingSampler) -> None:
        self.sampler = sampler
        self.buckets: list[int] = []

    def __iter__(self) -> Iterator[list[dict]]:
        s = self.sampler
        for batch in s:
            d, u = zip(*(s.get_lengths(x) for x in batch), strict=True)
            self.buckets.append(
                int(assign_buckets(np.asarray(d), np.asarray(u), s.bins, limits=s.limits).bucket[0])
            )
            yield batch


def shard_stream(
    cfg: TrainConfig,
    data: ShardData,
    sampler: StreamingBucketingSampler,
    start_epoch: int,
    sampler_state: dict[str, Any] | list[dict[str, Any]] | None,
    pin_memory: bool = False,
) -> Iterator[StreamItem]:
    """Endless batches over epochs from the rank's shards, resuming inside the first one when a state is
    given (a checkpoint holds one state per rank)."""
    info, epoch = D.info(), start_epoch
    while True:
        sampler.set_epoch(epoch)
        first = 0
        if sampler_state is not None:
            state = sampler_state[info.rank] if isinstance(sampler_state, list) else sampler_state
            sampler.load_state_dict(state)
            first, sampler_state = int(state["steps_done"]), None
        if first == 0:
            steps = sampler.num_steps(epoch)
            length = "until the shards end" if steps is None else f"{steps} steps on every rank"
            D.print0(
                f"epoch {epoch}: {length}; "
                f"rank {info.rank} reads {len(sampler.rank_shards(epoch))} of {len(sampler.shards)} shards"
            )
        noted = _BucketOf(sampler)
        loader = torch.utils.data.DataLoader(
            data.dataset,
            batch_sampler=noted,
            collate_fn=CollateWithFirstError(data.dataset),
            num_workers=cfg.runtime.num_workers,
            generator=torch.Generator().manual_seed(ckpt.derive_seed(cfg.sampler.seed, epoch)),
            pin_memory=pin_memory,
        )
        for k, (batch, error) in enumerate(loader, start=first):
            yield StreamItem(epoch, k, noted.buckets[k - first], sampler, batch, error)
        rep = sampler.report()
        D.print0(
            f"epoch {epoch} (rank {info.rank}): {rep['batches']} batches, {rep['fallbacks']} fallbacks, "
            f"{rep['repeated']} repeated, rejected {format_counts(rep['rejected'])}"
        )
        epoch += 1


def stream_rejections(sampler: StreamingBucketingSampler) -> dict[str, int]:
    """Items the samplers of all ranks rejected so far in this epoch, by reason (a collective call)."""
    total: dict[str, int] = {}
    for rejected in D.all_gather_objects(sampler.report()["rejected"]):
        for reason, n in rejected.items():
            total[reason] = total.get(reason, 0) + n
    return total


def stream_states(sampler: StreamingBucketingSampler, steps_done: int) -> list[dict[str, Any]]:
    """Every rank's sampler state after ``steps_done`` trained batches (a collective call)."""
    return D.all_gather_objects(sampler.state_dict(steps_done=steps_done))
