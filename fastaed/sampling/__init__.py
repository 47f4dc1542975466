"""Which utterances go together: 2D bucket bins, bucket assignment, batch sizes and the bucketing sampler."""

from fastaed.sampling.assign import REJECT_REASONS, Assignment, assign_buckets
from fastaed.sampling.bins import Bins, estimate_bins, plot_bins
from fastaed.sampling.budget import batch_sizes_from_budget, load_profile, resolve_batch_sizes
from fastaed.sampling.limits import LengthLimits
from fastaed.sampling.sampler import BucketingSampler, epoch_seed
from fastaed.sampling.stats import padding_stats, synthetic_lengths
from fastaed.sampling.streaming import (
    CallableShard,
    JsonlShard,
    ShardError,
    StreamingBucketingSampler,
    StreamingConfig,
    StreamItem,
)

__all__ = [
    "REJECT_REASONS",
    "Assignment",
    "Bins",
    "BucketingSampler",
    "CallableShard",
    "JsonlShard",
    "LengthLimits",
    "ShardError",
    "StreamItem",
    "StreamingBucketingSampler",
    "StreamingConfig",
    "assign_buckets",
    "batch_sizes_from_budget",
    "epoch_seed",
    "estimate_bins",
    "load_profile",
    "padding_stats",
    "plot_bins",
    "resolve_batch_sizes",
    "synthetic_lengths",
]
