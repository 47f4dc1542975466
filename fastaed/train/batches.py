"""Which batches the trainer trains on: the sampler (bins from a file, a batch-size profile or estimated from
the data; sizes from the profile and/or budgets) and the endless, resumable stream of batches over epochs.

Resuming inside an epoch: the checkpoint stores the batches *trained* in it (``steps_done``), the sampler
restores its plan in O(1) and the stream starts at that batch; the DataLoader's workers draw their base seed
from a private generator, so a loader created mid-epoch does not shift the global RNG.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from fastaed.data.dataset import AEDDataset, Batch
from fastaed.data.errors import BadInputError
from fastaed.data.index import MetadataIndex
from fastaed.sampling import Bins, BucketingSampler, estimate_bins, load_profile
from fastaed.train import checkpoint as ckpt
from fastaed.train import distributed as D
from fastaed.train.config import TrainConfig
from fastaed.train.faults import CollateWithFirstError
from fastaed.train.profile.profile import ProfileIdentity, check_profile

SamplerFactory = Callable[..., BucketingSampler]  # sampler(shuffle=...) -> the cached sampler


def make_sampler_factory(
    cfg: TrainConfig, index: MetadataIndex, info: D.DistInfo, identity: ProfileIdentity | None = None
) -> SamplerFactory:
    """A cached ``sampler(shuffle)``: bins from file / profile / estimation, sizes from profile and budget.

    identity: the run's; a profile made for another model, device, dtype or tokenizer is refused
    (``ProfileMismatchError``) unless ``sampler.force_profile``."""
    s = cfg.sampler
    batch_sizes = None
    bins = Bins.load(s.bins) if s.bins else None
    if s.profile:
        if identity is not None:
            if diffs := check_profile(s.profile, identity, force=s.force_profile):
                D.print0(f"note: using batch-size profile {s.profile} despite: {'; '.join(diffs)}")
        batch_sizes, profile_bins = load_profile(s.profile)
        bins = profile_bins if profile_bins is not None else bins
    if bins is None:
        bins = estimate_bins(
            index.durations, index.out_lengths, s.num_buckets, s.num_subbuckets, method=s.method
        )
    cache: dict[bool, BucketingSampler] = {}

    def sampler(shuffle: bool) -> BucketingSampler:
        if shuffle not in cache:
            cache[shuffle] = BucketingSampler(
                index.durations,
                index.out_lengths,
                bins=bins,
                batch_sizes=batch_sizes,
                max_duration=s.max_duration,
                max_tokens=s.max_tokens,
                quadratic_duration=s.quadratic_duration,
                shuffle=shuffle,
                seed=s.seed,
                rank=info.rank,
                world_size=info.world_size,
                drop_last=s.drop_last,
            )
        return cache[shuffle]

    return sampler


@dataclass(frozen=True)
class StreamItem:
    """One batch of the stream, with where it stands in its epoch."""

    epoch: int
    k: int  # the batch's index in its epoch (what a checkpoint resumes after: ``k + 1`` batches trained)
    bucket: int  # the flattened bucket it was drawn from
    sampler: BucketingSampler  # the epoch's sampler (its state goes into checkpoints)
    batch: Batch  # collated on the host; bad utterances already left out
    error: BadInputError | None  # the first bad-input error of the batch, for the policy to act on


def batch_stream(
    cfg: TrainConfig,
    dataset: AEDDataset,
    sampler_for: SamplerFactory,
    start_epoch: int,
    sampler_state: dict[str, Any] | None,
    pin_memory: bool = False,
) -> Iterator[StreamItem]:
    """Endless batches over epochs, resuming inside the first one when ``sampler_state`` is given."""
    epoch = start_epoch
    while True:
        sampler = sampler_for(shuffle=not (cfg.sampler.short_first_epoch and epoch == 0))
        sampler.set_epoch(epoch)
        if sampler.num_steps == 0:
            raise RuntimeError("the sampler yields no batch: every utterance was rejected or dropped")
        first = 0
        if sampler_state is not None:  # only the epoch the run resumes in
            sampler.load_state_dict(sampler_state)
            first, sampler_state = int(sampler_state["steps_done"]), None
        if first == 0:
            rep = sampler.epoch_report()
            D.print0(
                f"epoch {epoch}: {rep['steps']} steps, mean batch {rep['mean_batch_size']:.1f}, "
                f"repeats {rep['repeats']}, rejected {sum(rep['rejected'].values())}"
            )
        buckets = sampler.step_buckets()
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_sampler=sampler,
            collate_fn=CollateWithFirstError(dataset),
            num_workers=cfg.runtime.num_workers,
            # A private generator: the workers' base seed must not come from (and shift) the global RNG.
            generator=torch.Generator().manual_seed(ckpt.derive_seed(cfg.sampler.seed, epoch)),
            pin_memory=pin_memory,  # faster, asynchronous host-to-GPU copies
        )
        for k, (batch, error) in enumerate(loader, start=first):
            yield StreamItem(epoch, k, int(buckets[k]), sampler, batch, error)
        epoch += 1
