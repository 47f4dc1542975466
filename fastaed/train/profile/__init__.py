"""Per-bucket batch sizes that fill memory without running out: search, memory model, profile file.

- ``search.py``: NeMo's OOMptimizer search against any ``fits(batch_size)`` oracle (pure Python);
- ``memory.py``: the trainer's step on synthetic worst-case batches (the run's front end and prompt: fastaed's
  log-mel, or a fine-tuned checkpoint's, e.g. Whisper's padded or unpadded input), its CUDA meter, and the
  fitted memory model static + B·(aT + bT² + cU + dU² + eTU);
- ``cpu_meter.py``: the CPU meter, the peak of live bytes from the CPU allocator's events;
- ``rss.py``: an independent CPU check, the peak growth of the process's resident memory in a subprocess;
- ``run.py``: ``make_profile`` (model + verification, or the search on every bucket), the safety margin,
  ``resolve_run`` (the run a profile is for: a preset, a training config, ``model.init_from`` or a
  checkpoint, as the trainer resolves it) and ``open_profiler``, the one set-up (model, device, precision,
  budget, step, meter) of both commands below;
- ``profile.py``: the profile file with its run identity (the trainer refuses a mismatch), and its PNG;
- ``heuristic.py``: the NeMo Canary-1B baseline (1D, 20 buckets, 360 s, quadratic 15);
- ``throughput.py``: a short synthetic training run for audio seconds per second.

``fastaed batch-sizes`` (``cli/batch_sizes.py``) makes a profile; ``sampler.profile`` in a training config
uses it; ``fastaed bench batch-sizes`` compares it with the heuristic.
"""

from fastaed.train.profile.cpu_meter import CpuMeter
from fastaed.train.profile.heuristic import heuristic_batch_sizes, heuristic_bins
from fastaed.train.profile.memory import (
    CudaMeter,
    Measurement,
    MemoryModel,
    Shape,
    SyntheticStep,
    fit_memory_model,
)
from fastaed.train.profile.profile import (
    BatchSizeProfile,
    BucketResult,
    ProfileIdentity,
    ProfileMismatchError,
    check_profile,
    model_config_hash,
    plot_profile,
)
from fastaed.train.profile.run import (
    SAFETY_MARGIN,
    ProfiledRun,
    Profiler,
    ProfileSettings,
    make_meter,
    make_profile,
    open_profiler,
    resolve_run,
)
from fastaed.train.profile.search import NoBatchFitsError, SearchResult, search_batch_size, search_buckets

__all__ = [
    "SAFETY_MARGIN",
    "BatchSizeProfile",
    "BucketResult",
    "CpuMeter",
    "CudaMeter",
    "Measurement",
    "MemoryModel",
    "NoBatchFitsError",
    "ProfileIdentity",
    "ProfileMismatchError",
    "ProfileSettings",
    "ProfiledRun",
    "Profiler",
    "SearchResult",
    "Shape",
    "SyntheticStep",
    "check_profile",
    "fit_memory_model",
    "heuristic_batch_sizes",
    "heuristic_bins",
    "make_meter",
    "make_profile",
    "model_config_hash",
    "open_profiler",
    "plot_profile",
    "resolve_run",
    "search_batch_size",
    "search_buckets",
]
