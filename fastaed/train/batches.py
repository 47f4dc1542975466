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

import numpy as np
import torch

from fastaed.constants import HOP_LENGTH, SAMPLE_RATE
from fastaed.data.dataset import AEDDataset, Batch
from fastaed.data.errors import BadInputError
from fastaed.data.index import MetadataIndex
from fastaed.data.tokenizer import PROMPT_LENGTH
from fastaed.model import ModelConfig
from fastaed.sampling import Bins, BucketingSampler, LengthLimits, estimate_bins, load_profile
from fastaed.train import checkpoint as ckpt
from fastaed.train import distributed as D
from fastaed.train.config import TrainConfig
from fastaed.train.faults import CollateWithFirstError
from fastaed.train.metrics import format_counts
from fastaed.train.profile.profile import ProfileIdentity, check_profile

SamplerFactory = Callable[..., BucketingSampler]  # sampler(shuffle=...) -> the cached sampler

# Transcript tokens allowed per encoder frame before a line is rejected as ``tokens_exceed_frames``. Not 1:
# the attention decoder is not bound to a token per frame and CTC zeroes infeasible utterances, so the guard
# only has to catch transcripts that cannot belong to their audio (10,000 characters on a 1.4 s clip are
# hundreds per frame), not fast speech under a small vocabulary (the test corpus reaches 3.2).
MAX_TOKENS_PER_FRAME = 4.0


def length_limits(
    cfg: TrainConfig, model_config: ModelConfig | None = None, prompt_length: int = PROMPT_LENGTH
) -> LengthLimits:
    """The run's per-utterance limits: at least 2 encoder frames (the model's subsampling: ``model_config``,
    else the preset's), at most ``MAX_TOKENS_PER_FRAME`` transcript tokens per frame, and a batch of one
    within the sampler's budget. ``prompt_length``: the tokenizer's (Whisper's is 2 or 4 tokens)."""
    s = cfg.sampler
    encoder = (model_config or cfg.model.model_config(None)).encoder
    subsampling = encoder.subsampling_factor
    # Whisper's encoder has a fixed position table: max_positions frames of 2 hops each (30 s).
    whisper = encoder.kind == "whisper"
    longest = encoder.max_positions * subsampling * HOP_LENGTH / SAMPLE_RATE if whisper else None
    return LengthLimits(
        max_input_s=longest,
        encoder_frame_samples=HOP_LENGTH * subsampling,
        non_text_tokens=prompt_length + 1,  # U = prompt + transcript + EOS
        max_tokens_per_frame=MAX_TOKENS_PER_FRAME,
        max_duration=s.max_duration,
        quadratic_duration=s.quadratic_duration,
        max_tokens=s.max_tokens,
    )


def nothing_trainable(index: MetadataIndex, rejected: dict[str, int]) -> ValueError:
    """The error when every utterance is rejected, naming a manifest line to look at."""
    where = f"; e.g. {index.location(0)}" if len(index) else ""
    return ValueError(
        f"no trainable utterance: all {len(index)} were rejected, {format_counts(rejected)}{where}. "
        "Check the manifest's durations and transcripts, and the sampler's budget and bins."
    )


def check_sampler(sampler: BucketingSampler, index: MetadataIndex) -> None:
    """Note buckets the budget cannot hold one example of (their utterances are rejected as ``over_budget``);
    raise when nothing is left to train on."""
    unusable = np.flatnonzero(sampler.batch_sizes == 0)
    if len(unusable):
        max_d, max_u = sampler.bins.flat()[int(unusable[0])]
        D.print0(
            f"note: {len(unusable)} of {sampler.bins.num_buckets} buckets cannot hold one example within "
            f"the budget (first: bucket {unusable[0]}, {max_d:.3f} s, U <= {max_u}); their utterances are "
            "rejected as over_budget. Estimate bins on this data, or raise the budget, to train on them."
        )
    if not np.any(sampler.assignment.bucket >= 0):
        raise nothing_trainable(index, sampler.assignment.rejected)


def make_sampler_factory(
    cfg: TrainConfig,
    index: MetadataIndex,
    info: D.DistInfo,
    identity: ProfileIdentity | None = None,
    limits: LengthLimits | None = None,
) -> SamplerFactory:
    """A cached ``sampler(shuffle)``: bins from file / profile / estimation, sizes from profile and budget.

    identity: the run's; a profile made for another model, device, dtype or tokenizer is refused
    (``ProfileMismatchError``) unless ``sampler.force_profile``. limits: the run's (default
    :func:`length_limits` of ``cfg``)."""
    s = cfg.sampler
    batch_sizes = None
    bins = Bins.load(s.bins) if s.bins else None
    if s.profile:
        if identity is not None:
            if diffs := check_profile(s.profile, identity, force=s.force_profile):
                D.print0(f"note: using batch-size profile {s.profile} despite: {'; '.join(diffs)}")
        batch_sizes, profile_bins = load_profile(s.profile)
        bins = profile_bins if profile_bins is not None else bins
    limits = limits or length_limits(cfg)
    if bins is None:
        violations = limits.violations(index.durations, index.out_lengths)
        if np.logical_or.reduce(list(violations.values())).all():
            raise nothing_trainable(index, {reason: int(m.sum()) for reason, m in violations.items()})
        d, u = index.durations, index.out_lengths
        bins = estimate_bins(d, u, s.num_buckets, s.num_subbuckets, method=s.method, limits=limits)
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
                limits=limits,
                sources=index.source,  # PATH:WEIGHT: each manifest's draws per epoch (sampling/weights.py)
                weights=index.weights,
            )
            if len(cache) == 1:  # the first one: the assignment (what is rejected) is the same for both
                check_sampler(cache[shuffle], index)
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
                f"repeats {rep['repeats']}, rejected {format_counts(rep['rejected'])}"
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
