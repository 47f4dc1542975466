"""A short training run on synthetic batches: real audio seconds per second for a sampler's batch sizes.

The batches are those a :class:`BucketingSampler` yields over given lengths (durations, U), filled with
random audio and token ids of exactly those lengths (right-padded as the collator pads). Each step is the
trainer's: ``piece_forward`` (features, SpecAugment, autocast, CE + CTC) → backward with the trainer's OOM
splitting (``accumulate_with_oom_split``, so an out-of-memory batch is split and *counted*, not fatal) →
clip → AdamW → gradients freed. Batch creation (what DataLoader workers do in training) is outside the
timer; the device is synchronised before each clock read; the first ``warmup`` steps are not timed.

Used by ``fastaed bench batch-sizes`` to compare the NeMo heuristic with a profile on the same model, data and
number of steps; audio files are not needed, so it runs on a GPU box with nothing but the code.
"""

from __future__ import annotations

import gc
import time
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from fastaed.sampling.sampler import BucketingSampler
from fastaed.train.faults import UtteranceOOMError, accumulate_with_oom_split
from fastaed.train.profile.memory import SyntheticStep
from fastaed.util.devices import synchronize


def synthetic_training_run(
    step: SyntheticStep,
    sampler: BucketingSampler,
    durations: np.ndarray,
    out_lengths: np.ndarray,
    steps: int,
    warmup: int = 2,
    progress: bool = True,
    desc: str = "train",
) -> dict[str, Any]:
    """Run ``warmup + steps`` optimizer steps on the sampler's batches; returns throughput and memory."""
    device = step.device
    d = np.asarray(durations, dtype=np.float64)
    u = np.asarray(out_lengths, dtype=np.int64)
    if device.type == "cuda":  # start from an empty cache, as a training process does
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    stats0 = torch.cuda.memory_stats(device) if device.type == "cuda" else {}
    epoch = 0
    sampler.set_epoch(epoch)
    batches = iter(sampler)
    sizes: list[int] = []
    audio_s = tokens = wall = 0.0
    splits, failed = 0, None
    for i in tqdm(range(warmup + steps), desc=desc, disable=not progress, leave=False):
        try:
            idx = next(batches)
        except StopIteration:
            epoch += 1
            sampler.set_epoch(epoch)
            batches = iter(sampler)
            idx = next(batches)
        batch = step.batch_for(d[idx].tolist(), u[idx].tolist())
        norm = step.norm(batch)
        synchronize(device)
        t0 = time.perf_counter()
        try:
            _, n_split = accumulate_with_oom_split(
                [batch],
                lambda piece, norm=norm: (step.forward(piece, norm), None),
                zero_grad=lambda: step.optimizer.zero_grad(set_to_none=True),
            )
        except UtteranceOOMError as err:  # a single utterance does not fit: the run cannot go on
            failed = str(err)
            break
        step.update()
        synchronize(device)
        dt = time.perf_counter() - t0
        if i >= warmup:
            wall += dt
            audio_s += float(d[idx].sum())
            tokens += float(u[idx].sum())
            sizes.append(len(idx))
            splits += n_split
    out: dict[str, Any] = {
        "steps": len(sizes),
        "warmup_steps": warmup,
        "mean_batch_size": float(np.mean(sizes)) if sizes else 0.0,
        "audio_seconds": audio_s,
        "wall_s": wall,
        "audio_s_per_s": audio_s / wall if wall > 0 else 0.0,
        "tokens_per_s": tokens / wall if wall > 0 else 0.0,
        "step_time_s": wall / len(sizes) if sizes else 0.0,
        "oom_splits": splits,
        "failed": failed,
    }
    if device.type == "cuda":
        allocated = torch.cuda.max_memory_allocated(device)
        reserved = torch.cuda.max_memory_reserved(device)
        out |= {"peak_allocated_bytes": allocated, "peak_reserved_bytes": reserved}
        out["reserved_over_allocated"] = reserved / allocated if allocated else None
        # Retries: the allocator had to free its cache to serve a request (the run is near the point where
        # fragmentation turns into an OOM); OOMs: requests it could not serve even then.
        stats = torch.cuda.memory_stats(device)
        for key, name in (("num_alloc_retries", "alloc_retries"), ("num_ooms", "cuda_ooms")):
            out[name] = int(stats.get(key, 0) - stats0.get(key, 0))
    return out
