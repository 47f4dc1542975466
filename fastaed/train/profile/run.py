"""``make_profile``: per-bucket batch sizes for a model, device and memory budget, from the memory model
verified by real trials, or from the OOMptimizer search on every bucket.

**Budget, margin, target.** ``budget`` is the memory the run may use (a CUDA device's total memory by
default); the allocator is capped there during trials, so a trial that needs more fails with a real OOM. The
``safety_margin`` keeps a share of the budget free for what one synthetic step does not show (see
:data:`SAFETY_MARGIN`); every bucket's peak must stay under ``target = budget · (1 − margin)``. A trial
*fits* when it did not run out of memory and its peak (allocated bytes, on CUDA and on CPU) is
within the target. The peak, unlike "did it OOM", does not depend on how fragmented the allocator happens to
be at that moment, so the answer is reproducible.

**method="model"** (default): fit the memory model from a few probes, predict every bucket's largest batch,
then verify each prediction with one real trial at that size (longest bucket first). A prediction that does
not fit falls back to the search starting there (it halves, then bisects); one that fits with more than 5%
of the target to spare gets one corrected trial at the size the measured peak implies. Typically 1-2 trials
per bucket instead of the search's 5-10.

**method="search"**: NeMo's OOMptimizer (``search.py``) on every bucket, longest first, each starting at
twice the previous answer; the memory model is then fitted from its trials (for the heuristic comparison).

``compare_search=K`` additionally runs the search on K buckets spread over the grid (NeMo's start at 32 and
warm starts), so the model's answers can be checked against the search's on the same device.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from fastaed.data.features import FeatureConfig
from fastaed.data.frontend import frontend_config
from fastaed.data.tokenizer import PROMPT_LENGTH, Tokenizer, is_tokenizer_dir
from fastaed.data.whisper_features import WhisperFeatureConfig
from fastaed.formats import read_checkpoint_meta
from fastaed.model import PRESETS, ModelConfig, build_model
from fastaed.sampling.bins import Bins, estimate_bins
from fastaed.sampling.stats import synthetic_lengths
from fastaed.train.config import ConfigError, LossConfig, ModelSection
from fastaed.train.distributed import enable_expandable_segments
from fastaed.train.pretrained import AnyTokenizer, load_pretrained
from fastaed.train.profile.cpu_meter import CpuMeter
from fastaed.train.profile.heuristic import (
    BATCH_DURATION,
    NUM_BUCKETS,
    QUADRATIC_DURATION,
    heuristic_batch_sizes,
)
from fastaed.train.profile.memory import (
    CudaMeter,
    GiB,
    Measurement,
    MemoryModel,
    Meter,
    Shape,
    SyntheticStep,
    fit_memory_model,
)
from fastaed.train.profile.profile import (
    PROMPT_FORMAT,
    BatchSizeProfile,
    BucketResult,
    ProfileIdentity,
    frontend_name,
    prompt_format,
)
from fastaed.train.profile.search import (
    MAX_BATCH_SIZE,
    START_BATCH_SIZE,
    THRESHOLD,
    NoBatchFitsError,
    SearchResult,
    search_batch_size,
    search_buckets,
)
from fastaed.train.step import Precision
from fastaed.util.devices import resolve_device

# Share of the budget left free. A synthetic step measures one shape on a warm allocator; hours of training
# mix every bucket's shapes, so the caching allocator fragments, and evaluation, checkpointing and NCCL
# allocate outside the measured step. NeMo's search stops at the first OOM at memory fraction 0.9, with the
# allocator's slack inside those 90%, and its users still OOM hours in (NVIDIA-NeMo/Speech#15847; the
# maintainer scales answers by ~0.6). Ours targets *allocated* bytes, which fragmentation does not change,
# and the search and the trainer both use expandable segments (distributed.enable_expandable_segments),
# which remove most fragmentation between segments; the margin covers the rest and the extras. 15% is a
# judgement: `scripts/gpu_check.sh` runs a mixed-bucket training run with the profile and reports peak
# reserved memory, allocator retries and OOMs, so it is checked on each card (see README).
SAFETY_MARGIN = 0.15
DDP_OVERHEAD_BYTES = (64 + 512) << 20  # one 64 MiB flat all-reduce bucket (distributed.py) + NCCL buffers


def make_meter(step: SyntheticStep, extra_bytes: int = 0) -> Meter:
    """The meter of ``step``'s device: the allocator's peak on CUDA, the measured live-bytes peak on CPU."""
    if step.device.type == "cuda":
        return CudaMeter(step, extra_bytes)
    return CpuMeter(step, extra_bytes)


@dataclass(frozen=True)
class ProfileSettings:
    budget_bytes: int  # memory the run may use
    safety_margin: float = SAFETY_MARGIN
    method: str = "model"  # "model" | "search"
    compare_search: int = 0  # with method="model": also search this many buckets
    start_batch_size: int = START_BATCH_SIZE
    threshold: float = THRESHOLD
    max_batch_size: int = MAX_BATCH_SIZE
    ddp_overhead_bytes: int = 0

    def __post_init__(self) -> None:
        if self.budget_bytes <= 0:
            raise ValueError(f"budget must be > 0 bytes, got {self.budget_bytes}")
        if not 0.0 <= self.safety_margin < 1.0:
            raise ValueError(f"safety_margin must be in [0, 1), got {self.safety_margin}")
        if self.method not in ("model", "search"):
            raise ValueError(f"method must be 'model' or 'search', got {self.method!r}")
        if self.compare_search < 0:
            raise ValueError("compare_search must be >= 0")

    @property
    def target_bytes(self) -> int:
        return int(self.budget_bytes * (1.0 - self.safety_margin))


def bucket_shapes(bins: Bins, step: SyntheticStep | None = None) -> list[Shape]:
    """The worst-case shape of every flattened bucket (U at least the prompt + EOS): ``step.shape``'s (its
    prompt length and front end), or with fastaed's 5-token prompt and log-mel front end."""
    if step is not None:
        return [step.shape(float(d), int(u)) for d, u in bins.flat()]
    return [Shape(float(d), max(int(u), PROMPT_LENGTH + 1)) for d, u in bins.flat()]


class Trials:
    """Memoised trials of one meter against one target: (B, shape) is measured at most once."""

    def __init__(self, meter: Meter, target_bytes: int, max_batch_size: int):
        self.meter, self.target, self.max_batch_size = meter, target_bytes, max_batch_size
        self.done: dict[tuple[Shape, int], Measurement] = {}

    def measure(self, batch_size: int, shape: Shape) -> Measurement:
        key = (shape, batch_size)
        if key not in self.done:
            self.done[key] = self.meter.measure(batch_size, shape)
        return self.done[key]

    def fits(self, shape: Shape) -> Callable[[int], bool]:
        return lambda b: self.measure(b, shape).fits(self.target)

    def count(self, shape: Shape) -> int:
        return sum(1 for s, _ in self.done if s == shape)


def make_profile(
    meter: Meter,
    bins: Bins,
    identity: ProfileIdentity,
    settings: ProfileSettings,
    progress: bool = True,
) -> BatchSizeProfile:
    """Batch sizes for every bucket of ``bins`` (see the module docstring); the meter's step is warmed up."""
    t_start = time.perf_counter()
    target = settings.target_bytes
    step = meter.step if isinstance(meter.step, SyntheticStep) else None  # else fastaed's shapes (a fake)
    shapes = bucket_shapes(bins, step)
    # Buckets the model cannot take at all (longer than Whisper's 30 s, say) get batch size 0: the trainer
    # rejects their utterances as over_budget and says so.
    unfit = {s: why for s in set(shapes) if step and (why := step.unfit_reason(s)) is not None}
    unique = sorted(set(shapes) - set(unfit), reverse=True)  # longest first (as NeMo: closer to training)
    if not unique:
        first = next(iter(unfit.items()))
        raise NoBatchFitsError(f"no bucket fits the model: e.g. {first[0]}: {first[1]}")
    meter.step.warm_up(min(unique))
    trials = Trials(meter, target, settings.max_batch_size)
    cap = settings.max_batch_size
    answer: dict[Shape, int] = dict.fromkeys(unfit, 0)
    searched: dict[Shape, int] = {}
    model: MemoryModel | None = None
    probes: list[Measurement] = []
    bar = tqdm(total=len(unique), desc=f"batch sizes ({settings.method})", disable=not progress, leave=False)

    method = settings.method
    if method == "model":
        try:
            min_u = step.min_out_len if step else PROMPT_LENGTH + 1
            model, probes = fit_memory_model(meter, unique, target, max_batch_size=cap, min_out_len=min_u)
        except NoBatchFitsError:  # the longest bucket holds a single utterance: nothing to fit, search
            method = "search"
    if method == "model":
        assert model is not None
        for shape in unique:
            answer[shape] = _verify(trials, model, shape, cap, settings)
            bar.update(1)
            bar.set_postfix(T=shape.duration, U=shape.out_len, B=answer[shape])
        if settings.compare_search:
            spread = np.linspace(0, len(unique) - 1, settings.compare_search).round().astype(int)
            picks = [unique[i] for i in np.unique(spread)]
            searched = _search(trials, picks, settings)
    else:
        searched = _search(trials, unique, settings, bar)
        answer |= searched
        ok = [m for m in trials.done.values() if m.fits(target) and m.batch_size >= 2]
        if len({m.shape for m in ok}) >= 3 and len(ok) >= 6:
            model = MemoryModel.fit(ok)
    bar.close()

    heuristic = heuristic_batch_sizes(bins)
    exact_heuristic = isinstance(meter, CpuMeter)  # cheap on CPU (from two traces); predicted on a GPU
    results = []
    for k, shape in enumerate(shapes):
        b, hb = answer[shape], int(heuristic[k])
        if shape in unfit:
            results.append(
                BucketResult(k, shape.duration, int(bins.flat()[k][1]), 0, heuristic_batch_size=hb,
                             note=unfit[shape])
            )  # fmt: skip
            continue
        m = trials.measure(b, shape)
        predicted = model.predict(b, shape.t, shape.out_len) if model is not None else None
        if exact_heuristic:
            h_bytes: float | None = trials.measure(hb, shape).peak_bytes
        else:
            h_bytes = model.predict(hb, shape.t, shape.out_len) if model is not None else None
        results.append(
            BucketResult(
                bucket=k, max_duration=shape.duration, max_u=int(bins.flat()[k][1]), batch_size=b,
                predicted_bytes=predicted, measured_bytes=m.peak_bytes, reserved_bytes=m.reserved_bytes,
                fill=(m.peak_bytes / target) if m.peak_bytes is not None else None,
                trials=trials.count(shape), search_batch_size=searched.get(shape), heuristic_batch_size=hb,
                heuristic_bytes=h_bytes, heuristic_fill=(h_bytes / target) if h_bytes is not None else None,
            )
        )  # fmt: skip
    return BatchSizeProfile(
        bins=bins,
        batch_sizes=[r.batch_size for r in results],
        identity=identity,
        budget_bytes=settings.budget_bytes,
        safety_margin=settings.safety_margin,
        target_bytes=target,
        method=method,
        buckets=results,
        ddp_overhead_bytes=settings.ddp_overhead_bytes,
        memory_model=model.to_dict() if model is not None else None,
        probes=[p.to_dict() for p in probes],
        heuristic={
            "batch_duration": BATCH_DURATION,
            "quadratic_duration": QUADRATIC_DURATION,
            "num_buckets_1d": NUM_BUCKETS,
            "mapping": "each 2D bucket gets floor(batch_duration / (d + d^2/q)) of its duration row's edge d",
            "bytes": "measured" if exact_heuristic else ("predicted" if model is not None else None),
        },
        meta={
            "seconds": time.perf_counter() - t_start,
            "trials": meter.trials,
            # CPU: shapes whose traces at B = 2 and 3 did not align event for event (cpu_meter.py)
            **(
                {"cpu_misaligned_shapes": sum(1 for n in meter.unmatched.values() if n)}
                if isinstance(meter, CpuMeter)
                else {}
            ),
            "torch": torch.__version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
    )


def _verify(trials: Trials, model: MemoryModel, shape: Shape, cap: int, settings: ProfileSettings) -> int:
    """One trial at the model's answer. A miss with a measured peak gets one trial at the size that peak
    implies, else (an OOM, or still a miss) the search from there; a fit with more than 5% of the target to
    spare gets one trial at the size its peak implies (see the module docstring)."""
    target, fits = trials.target, trials.fits(shape)
    b = min(model.max_batch_size(shape.t, shape.out_len, target), cap)
    start = 1
    if b >= 1:
        peak = trials.measure(b, shape).peak_bytes
        # The size this trial's own per-utterance cost implies (the model's static part kept).
        per = (peak - model.static) / b if peak is not None else 0.0
        implied = min(cap, math.floor((target - model.static) / per)) if per > 0 else 0
        if fits(b):
            assert peak is not None
            if peak < 0.95 * target and implied > b and fits(implied):
                return implied
            return b
        if 1 <= implied < b and fits(implied):
            return implied
        start = max(1, implied if 1 <= implied < b else b)
    return search_batch_size(fits, start, settings.threshold, cap, what=str(shape)).batch_size


def _search(
    trials: Trials, shapes: list[Shape], settings: ProfileSettings, bar: tqdm | None = None
) -> dict[Shape, int]:
    """The OOMptimizer over ``shapes`` (longest first), each starting at twice the previous answer."""

    def done(shape: Shape, result: SearchResult) -> None:
        if bar is not None:
            bar.update(1)
            bar.set_postfix(T=shape.duration, U=shape.out_len, B=result.batch_size)

    results = search_buckets(
        trials.fits, shapes, settings.start_batch_size, settings.threshold, settings.max_batch_size, done
    )
    return {shape: r.batch_size for shape, r in results.items()}


# ---- set-up shared by the CLI and the benchmark ----------------------------------------------------------


@dataclass
class Profiler:
    """A model's synthetic training step on one device and precision, its meter, and the identity of the run
    its profiles are for: what ``fastaed batch-sizes`` and ``fastaed bench batch-sizes`` both measure with."""

    step: SyntheticStep
    meter: Meter
    identity: ProfileIdentity
    budget_bytes: int | None  # the resolved budget the CUDA allocator is capped at; None: not capped

    @property
    def device(self) -> torch.device:
        return self.step.device

    def profile(self, bins: Bins, settings: ProfileSettings, progress: bool = True) -> BatchSizeProfile:
        return make_profile(self.meter, bins, self.identity, settings, progress)


@dataclass(frozen=True)
class ProfiledRun:
    """What a profile is measured for besides device and precision: the model, the tokenizer (identity and
    decoder prompt) and the front end, as the training run has them."""

    model: ModelConfig
    tokenizer: str | None = None  # tokenizer identity; None: made without a tokenizer
    prompt_length: int = PROMPT_LENGTH  # the least U is this + EOS
    prompt: str = PROMPT_FORMAT  # profile.prompt_format()
    frontend: FeatureConfig | WhisperFeatureConfig | None = None  # None: fastaed's log-mel (from scratch)

    @classmethod
    def of(
        cls,
        model: ModelConfig,
        tokenizer: AnyTokenizer | None,
        frontend: FeatureConfig | WhisperFeatureConfig | None = None,
    ) -> ProfiledRun:
        if tokenizer is None:
            return cls(model, None, frontend=frontend)
        return cls(model, tokenizer.identity, tokenizer.prompt_length, prompt_format(tokenizer), frontend)

    def identity(self, device: torch.device, dtype: str) -> ProfileIdentity:
        """The identity the trainer computes for this run (``ProfileIdentity.for_training``)."""
        frontend = frontend_name(self.frontend)
        return ProfileIdentity.for_run(
            self.model, device, dtype, self.tokenizer, prompt=self.prompt, frontend=frontend
        )


def open_profiler(
    model: ModelConfig | ProfiledRun,
    tokenizer: str | None = None,
    *,
    device: str = "auto",
    dtype: str = "auto",
    budget: str | float | None = "auto",
    loss_cfg: LossConfig | None = None,
    specaugment: bool = True,
    seed: int = 0,
    extra_bytes: int = 0,
) -> Profiler:
    """Set up a profile run, in the order it must happen: the trainer's allocator settings (before the first
    CUDA allocation), device and precision (the trainer's rule, ``Precision``), the budget (the CUDA
    allocator capped there before the model takes memory), then the freshly initialised model's step.

    model: a model config (fastaed's prompt and log-mel front end), or a :class:`ProfiledRun` (from
        :func:`resolve_run`: a fine-tuned checkpoint's tokenizer prompt and front end too).
    tokenizer: with a model config, the tokenizer identity the profile is for (None: made without one).
    budget: ``auto``, GiB or None (resolved later by the caller, allocator not capped).
    extra_bytes: resident on top of every trial (data-parallel buffers, ``DDP_OVERHEAD_BYTES``).
    """
    run = model if isinstance(model, ProfiledRun) else ProfiledRun(model, tokenizer)
    if torch.cuda.is_available():
        enable_expandable_segments()
    dev = resolve_device(device)
    precision = Precision.resolve(dev, dtype)
    if dtype == "bf16" and not precision.bf16:
        raise ValueError("bf16 is the CUDA precision; CPU trains in fp32 (use --dtype fp32 or a GPU)")
    budget_bytes = None
    if budget is not None:
        budget_bytes = resolve_budget(budget, dev)
        cap_allocator(dev, budget_bytes)
    torch.manual_seed(seed)
    with torch.device(dev):  # no CPU init + copy for a 1B model (the weights do not change memory)
        net = build_model(run.model)
    step = SyntheticStep(
        net, dev, precision=precision, loss_cfg=loss_cfg, specaugment=specaugment, seed=seed,
        frontend=run.frontend, prompt_length=run.prompt_length,
    )  # fmt: skip
    return Profiler(step, make_meter(step, extra_bytes), run.identity(dev, precision.name), budget_bytes)


def default_bins(seed: int = 0) -> Bins:
    """The SPEC's 2D bins: min-padding 30 x 4 over 20k log-normal lengths (median 6 s, 0.5-40 s, ~6 tok/s)."""
    d, u = synthetic_lengths(20_000, seed=seed)
    return estimate_bins(d, u, num_buckets=30, num_subbuckets=4, method="min_padding")


def resolve_run(
    spec: str | ModelSection,
    tokenizer_dir: str | None = None,
    ctc_weight: float | None = None,
    frontend_input: str | None = None,
) -> ProfiledRun:
    """The run a profile is for, from a training config's model section, a preset name or a checkpoint.

    A preset is sized for the tokenizer's vocabulary when one is given; ``ctc_weight`` acts as the training
    config's ``model.ctc_weight`` (0 removes the head). A model section with ``init_from`` is resolved as the
    trainer does (``load_pretrained``): the checkpoint's config with the section's overrides, its tokenizer
    and front end, ``model.frontend_input`` applied. A checkpoint directory brings its own config, tokenizer
    (``tokenizer/``, else only the identity it recorded) and front end. ``frontend_input`` (``padded`` or
    ``unpadded``) replaces a Whisper front end's input (a model section's ``frontend_input``; a checkpoint's
    stored one).
    """
    if isinstance(spec, str) and spec in PRESETS:
        spec = ModelSection(spec, ctc_weight=ctc_weight)
    if isinstance(spec, ModelSection):
        if frontend_input is not None:
            spec = dataclasses.replace(spec, frontend_input=frontend_input)
        pretrained = load_pretrained(spec)
        if pretrained is not None:
            if tokenizer_dir is not None:
                raise ConfigError(
                    f"--tokenizer {tokenizer_dir}: model.init_from {spec.init_from} brings its own tokenizer"
                )
            config = spec.model_config(None, base=pretrained.model_config)  # as setup.run_model_config
            return ProfiledRun.of(config, pretrained.tokenizer, pretrained.frontend)
        tok = Tokenizer.load(tokenizer_dir) if tokenizer_dir is not None else None
        return ProfiledRun.of(spec.model_config(tok.vocab_size if tok else None), tok)
    if not Path(spec).is_dir():
        raise FileNotFoundError(
            f"--model {spec!r} is neither a preset ({', '.join(PRESETS)}) nor a checkpoint"
        )
    if is_tokenizer_dir(Path(spec) / "tokenizer"):  # frontend_input None keeps the checkpoint's
        pretrained = load_pretrained(ModelSection(init_from=str(spec), frontend_input=frontend_input))
        assert pretrained is not None
        return ProfiledRun.of(pretrained.model_config, pretrained.tokenizer, pretrained.frontend)
    meta = read_checkpoint_meta(spec)
    frontend = frontend_config(meta.get("frontend"))
    if isinstance(frontend, WhisperFeatureConfig) and frontend_input is not None:
        frontend = dataclasses.replace(frontend, input=frontend_input)
    config = ModelConfig.from_dict(meta["model_config"])
    return ProfiledRun(config, meta.get("tokenizer_identity"), frontend=frontend)


def resolve_budget(budget: str | float | None, device: torch.device) -> int:
    """Bytes from ``auto`` (a CUDA device's total memory) or a number of GiB; CPU needs a number."""
    if budget is None or str(budget) == "auto":
        if device.type != "cuda":
            raise ValueError("on CPU nothing runs out of memory: give --memory-budget N (GiB)")
        return int(torch.cuda.get_device_properties(device).total_memory)
    value = float(budget)
    if not value > 0:
        raise ValueError(f"--memory-budget must be > 0 GiB, got {budget}")
    return int(value * GiB)


def cap_allocator(device: torch.device, budget_bytes: int) -> None:
    """CUDA: make the caching allocator fail at the budget (real OOMs where the budget ends)."""
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, budget_bytes / total), device)
