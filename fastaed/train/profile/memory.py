"""Memory of one synthetic worst-case training step, measured on CUDA or CPU, and a fitted memory model
that predicts it for any bucket.

**The step** (:class:`SyntheticStep`) is the trainer's own, from ``train/step.py``: ``piece_forward`` (the
run's front end: fastaed's log-mel, or a fine-tuned checkpoint's such as Whisper's, padded to 30 s or not;
SpecAugment, the trainer's precision, label-smoothed CE + CTC when the model has a CTC head), backward,
gradient clipping, ``build_optimizer``'s AdamW step (fused on CUDA), gradients freed. The batch is a
bucket's worst case: B utterances of the bucket's max duration (random noise audio, every row full length)
and its max output length U (random token ids, the tokenizer's prompt length, no padding). A warm-up step at
B = 1 creates the optimizer state first, so every trial measures the steady state (NeMo's OOMptimizer leaves
that to its first trial, which then measures something else).

**Measuring** (:class:`CudaMeter`, ``cpu_meter.CpuMeter``) returns the peak bytes of one step:

- CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``; an out-of-memory error (or
  cuFFT's "internal error", which is how the STFT of a huge batch fails) is a failed trial. The cache is not
  emptied between trials (as in NeMo: the search then sees a fragmented allocator, as training does).
- CPU (``cpu_meter.py``): nothing runs out of memory, so the peak is measured: the maximum of the live bytes
  during the step (the CPU allocator's events under the torch profiler) plus what was resident when it began.
  Deterministic to the byte; trials above B = 3 come from the event-by-event line through the steps at
  B = 2 and 3 (exact, tested against real steps), which keeps a CPU search cheap at any batch size.

**The memory model** (:class:`MemoryModel`): peak(B, T, U) = static + B · (a·T + b·T² + c·U + d·U² + e·T·U),
T in seconds of features (the encoder's input: the audio's duration, or 30 s for every utterance on
Whisper's padded input, :attr:`Shape.t`), U in tokens: activations grow linearly in both lengths
(convolutions, feed-forwards, logits), quadratically in T (encoder self-attention), in U (decoder
self-attention) and in T·U (cross-attention). With T the same for every bucket (padded input) the T terms
are one constant per utterance: the least-squares fit is then rank-deficient and takes the minimum-norm
solution, which predicts that constant exactly. Fitted by least squares on relative error from a few probes
(:func:`probe_shapes`), it predicts every bucket's largest batch size without a trial per candidate.
"""

from __future__ import annotations

import dataclasses
import gc
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from fastaed.constants import SAMPLE_RATE
from fastaed.data.dataset import Batch
from fastaed.data.features import FeatureConfig, SpecAugment, SpecAugmentConfig
from fastaed.data.frontend import build_frontend
from fastaed.data.tokenizer import PROMPT_LENGTH
from fastaed.data.whisper_features import WhisperFeatureConfig
from fastaed.model import EncoderDecoderModel
from fastaed.train.config import DebugConfig, LossConfig
from fastaed.train.faults import FaultInjector, is_oom
from fastaed.train.metrics import batch_stats
from fastaed.train.profile.search import NoBatchFitsError
from fastaed.train.step import Precision, build_optimizer, piece_forward

GiB = 1 << 30


@dataclass(frozen=True, order=True)
class Shape:
    """The worst case of a bucket: every utterance ``duration`` seconds long with ``out_len`` tokens."""

    duration: float  # seconds of audio
    out_len: int  # U: prompt + text + EOS
    # Seconds of features the encoder sees when the front end pads (Whisper's padded input: 30 s whatever the
    # audio); None: the audio's. Set by SyntheticStep.shape, the same for every shape of one step.
    feature_seconds: float | None = field(default=None, compare=False)

    @property
    def num_samples(self) -> int:
        return max(1, round(self.duration * SAMPLE_RATE))

    @property
    def t(self) -> float:
        """T of the memory model: seconds of features."""
        return self.duration if self.feature_seconds is None else self.feature_seconds


@dataclass(frozen=True)
class Measurement:
    """One trial: a full training step of ``batch_size`` utterances of ``shape``."""

    batch_size: int
    shape: Shape
    peak_bytes: int | None  # peak allocated bytes (CUDA, CPU); None after an out-of-memory error
    reserved_bytes: int | None = None  # CUDA: peak reserved by the caching allocator
    oom: bool = False
    seconds: float = 0.0  # wall time of the trial
    extrapolated: bool = False  # CPU: from the traces of B = 2 and 3 (see cpu_meter.py)

    def fits(self, target_bytes: float) -> bool:
        return not self.oom and self.peak_bytes is not None and self.peak_bytes <= target_bytes

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["shape"] = [self.shape.duration, self.shape.out_len]
        if self.shape.feature_seconds is not None:
            d["feature_seconds"] = self.shape.feature_seconds
        return d


# ---- the step ------------------------------------------------------------------------------------------


class OncePerLength(nn.Module):
    """A front end that runs utterance by utterance (Whisper's), run once per distinct length of a batch and
    its rows copied: the same features, (B, T, F) in one allocation as the real one returns them.

    Why: the real front end allocates per utterance, so its number of allocations grows with B and the CPU
    meter's traces at B = 2 and 3 would not line up (every trial a real step, minutes each). What stays alive
    through the step, and so sets its peak, is the (B, T, F) output alone; the per-utterance pieces are freed
    before the forward begins."""

    def __init__(self, frontend: nn.Module):
        super().__init__()
        self.inner = frontend

    @torch.no_grad()
    def forward(
        self, waves: torch.Tensor, wave_lens: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """waves (B, N), wave_lens (B,) -> feats (B, T, F), feat_lens (B,) as the wrapped front end's."""
        distinct, rows = torch.unique(wave_lens, return_inverse=True)  # rows: each utterance's length
        lens = wave_lens.tolist()
        firsts = [lens.index(n) for n in distinct.tolist()]  # a row of each distinct length
        feats, feat_lens = self.inner(waves[firsts], wave_lens[firsts], generator=generator)
        return feats[rows], feat_lens[rows]


class SyntheticStep:
    """The trainer's training step on synthetic worst-case batches (see the module docstring).

    model: built as the trainer builds it (``build_model``), moved to ``device`` here.
    precision: the trainer's (default: its rule for ``device``, ``Precision.resolve``).
    frontend: the run's front end (default: fastaed's log-mel; a fine-tuned checkpoint's, e.g. Whisper's).
    prompt_length: the tokenizer's (fastaed's and Canary's 5; Whisper's 2 or 4): the least U is that + EOS.
    """

    def __init__(
        self,
        model: EncoderDecoderModel,
        device: torch.device | str,
        *,
        precision: Precision | None = None,
        loss_cfg: LossConfig | None = None,
        specaugment: bool = True,
        seed: int = 0,
        frontend: FeatureConfig | WhisperFeatureConfig | None = None,
        prompt_length: int = PROMPT_LENGTH,
    ):
        self.device = torch.device(device)
        self.precision = precision or Precision.resolve(self.device)
        self.model = model.to(self.device).train()
        self.loss_cfg = loss_cfg or LossConfig()
        self.vocab_size = model.config.vocab_size
        self.prompt_length = int(prompt_length)
        # lr 1e-7 (as NeMo's OOMptimizer) so random batches barely move the weights; memory is the trainer's.
        self.optimizer, self.params = build_optimizer(self.model, self.device, lr=1e-7, weight_decay=1e-3)
        self.frontend_config = frontend if frontend is not None else FeatureConfig()
        module = build_frontend(self.frontend_config)
        if isinstance(self.frontend_config, WhisperFeatureConfig):
            module = OncePerLength(module)
        self.frontend = module.to(self.device).train()
        self.specaug = SpecAugment(SpecAugmentConfig()).train() if specaugment else None
        self.injector = FaultInjector(DebugConfig())
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.steps = 0

    @property
    def min_out_len(self) -> int:
        """The least U: the prompt + EOS."""
        return self.prompt_length + 1

    def shape(self, duration: float, out_len: int) -> Shape:
        """The worst case of a bucket (U at least the prompt + EOS) with the seconds of features the front
        end gives it: Whisper's padded input is ``chunk_frames`` (30 s) for any audio."""
        fe = self.frontend_config
        seconds = None
        if isinstance(fe, WhisperFeatureConfig) and fe.input == "padded":
            seconds = fe.chunk_frames * fe.hop_length / fe.sample_rate
        return Shape(float(duration), max(int(out_len), self.min_out_len), seconds)

    def unfit_reason(self, shape: Shape) -> str | None:
        """Why no batch of ``shape`` can train at all (None when one can): Whisper's padded input holds one
        30 s window, a Whisper encoder ``max_positions`` frames, a learned-position decoder ``max_len``."""
        fe, enc, dec = self.frontend_config, self.model.config.encoder, self.model.config.decoder
        if isinstance(fe, WhisperFeatureConfig) and fe.input == "padded":
            if shape.num_samples > fe.chunk_samples:
                window = fe.chunk_samples / fe.sample_rate
                return f"{shape.duration:g} s is longer than Whisper's {window:g} s padded input"
        elif enc.kind == "whisper":  # unpadded: N // hop frames, halved by the conv stem
            positions = math.ceil(shape.num_samples // fe.hop_length / enc.subsampling_factor)
            if positions > enc.max_positions:
                have = enc.max_positions
                return f"{shape.duration:g} s needs {positions} encoder positions, the model has {have}"
        if dec.positions == "learned" and shape.out_len > dec.max_len:
            return f"U = {shape.out_len} is more than the decoder's {dec.max_len} positions"
        return None

    def batch(self, batch_size: int, shape: Shape) -> Batch:
        """B utterances of exactly ``shape`` (no padding anywhere), on the device."""
        return self.batch_for([shape.duration] * batch_size, [shape.out_len] * batch_size)

    def batch_for(self, durations: Sequence[float], out_lens: Sequence[int]) -> Batch:
        """A right-padded batch of random audio and token ids with these durations (s) and lengths U."""
        if min(out_lens) < self.min_out_len:
            raise ValueError(f"output length {min(out_lens)} is shorter than the prompt + EOS")
        dev = self.device
        audio_lens = torch.tensor([max(1, round(d * SAMPLE_RATE)) for d in durations], device=dev)
        token_lens = torch.tensor([int(u) for u in out_lens], device=dev)
        b, n, u = len(durations), int(audio_lens.max()), int(token_lens.max())
        audio = 0.1 * torch.randn(b, n, device=dev, generator=self.generator)
        tokens = torch.randint(1, self.vocab_size, (b, u), device=dev, generator=self.generator)
        tokens.masked_fill_(torch.arange(u, device=dev)[None, :] >= token_lens[:, None], 0)
        return Batch(
            indices=list(range(b)),
            audio=audio,
            audio_lens=audio_lens,
            tokens=tokens,
            token_lens=token_lens,
            prompt_lens=torch.full((b,), self.prompt_length, dtype=torch.int64, device=dev),
            pad_id=0,
        )

    def norm(self, batch: Batch) -> torch.Tensor:
        """(2,) the CE and CTC token counts that normalise the loss of ``batch`` (and of its pieces)."""
        norm = batch_stats(batch, self.loss_cfg.mask_prompt)[:2].clamp(min=1)
        return norm.to(device=self.device, dtype=torch.float32)

    def forward(self, batch: Batch, norm: torch.Tensor | None = None) -> torch.Tensor:
        """Features and forward of ``batch`` as the trainer runs a piece; returns the loss to differentiate.

        norm: the whole step's token counts when ``batch`` is a piece of it (default: its own)."""
        norm = self.norm(batch) if norm is None else norm
        loss, _ = piece_forward(
            batch, model=self.model, frontend=self.frontend, specaug=self.specaug, generator=self.generator,
            norm=norm, loss_cfg=self.loss_cfg,
            ctc_weight=self.model.config.ctc_weight, injector=self.injector, step=self.steps + 1,
            autocast=self.precision.autocast,
        )  # fmt: skip
        return loss

    def update(self) -> None:
        """Clip, AdamW step, free the gradients (the trainer's ``zero_grad(set_to_none=True)``)."""
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.steps += 1

    def __call__(self, batch: Batch) -> None:
        self.forward(batch).backward()
        self.update()

    def warm_up(self, shape: Shape) -> None:
        """One step at B = 1: creates the optimizer state, so later trials measure the steady state."""
        self(self.batch(1, shape))
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


# ---- meters --------------------------------------------------------------------------------------------


class Meter:
    """Measures a step of B utterances of a shape; ``extra_bytes`` is resident on top (DDP buffers)."""

    device_name: str

    def __init__(self, step: SyntheticStep, extra_bytes: int = 0):
        self.step = step
        self.extra_bytes = int(extra_bytes)
        self.trials = 0

    def measure(self, batch_size: int, shape: Shape) -> Measurement:
        raise NotImplementedError


class CudaMeter(Meter):
    """Real trials on a CUDA device: peak allocated bytes, or an out-of-memory failure."""

    def __init__(self, step: SyntheticStep, extra_bytes: int = 0):
        super().__init__(step, extra_bytes)
        self.device = step.device
        self.device_name = torch.cuda.get_device_name(self.device)
        # A resident stand-in for the data-parallel buffers (NeMo keeps a second model copy for this).
        self._extra = (
            torch.empty(self.extra_bytes, dtype=torch.uint8, device=self.device) if extra_bytes else None
        )

    def measure(self, batch_size: int, shape: Shape) -> Measurement:
        self.trials += 1
        step = self.step
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        t0 = time.perf_counter()
        oom = False
        try:
            step(step.batch(batch_size, shape))
            torch.cuda.synchronize(self.device)
        except Exception as err:  # noqa: BLE001 (only out-of-memory errors are swallowed)
            if not is_oom(err):
                raise
            oom = True
        seconds = time.perf_counter() - t0
        if oom:
            # Outside the except block, so the traceback's frames (and their activations) are gone. No
            # empty_cache(): like NeMo, keep the allocator as fragmented as a long training run makes it.
            step.optimizer.zero_grad(set_to_none=True)
            gc.collect()
        peak = None if oom else torch.cuda.max_memory_allocated(self.device)
        reserved = torch.cuda.max_memory_reserved(self.device)
        return Measurement(batch_size, shape, peak, reserved, oom=oom, seconds=seconds)


# ---- the memory model ----------------------------------------------------------------------------------

TERMS = ("T", "T^2", "U", "U^2", "T*U")  # per-utterance terms, T in seconds and U in tokens


def _terms(duration: np.ndarray | float, out_len: np.ndarray | float) -> np.ndarray:
    t, u = np.asarray(duration, dtype=np.float64), np.asarray(out_len, dtype=np.float64)
    return np.stack(np.broadcast_arrays(t, t * t, u, u * u, t * u), axis=-1)


@dataclass(frozen=True)
class MemoryModel:
    """peak(B, T, U) = static + B · (a·T + b·T² + c·U + d·U² + e·T·U) bytes."""

    static: float  # bytes independent of B: weights, gradients, optimizer state, workspaces
    coef: tuple[float, float, float, float, float]  # a, b, c, d, e: bytes per utterance per term of TERMS
    rms_rel_error: float = 0.0  # root-mean-square relative error of the fit on its probes

    def per_utterance(self, duration: float, out_len: float) -> float:
        return float(_terms(duration, out_len) @ np.asarray(self.coef))

    def predict(self, batch_size: float, duration: float, out_len: float) -> float:
        return self.static + batch_size * self.per_utterance(duration, out_len)

    def max_batch_size(self, duration: float, out_len: float, target_bytes: float) -> int:
        """The largest B with predicted peak <= ``target_bytes`` (0 when not even one fits)."""
        per = self.per_utterance(duration, out_len)
        if per <= 0:
            raise ValueError(
                f"the memory model predicts {per:.0f} bytes per utterance at T={duration} s, U={out_len}: "
                "the probes do not cover this shape"
            )
        return max(0, math.floor((target_bytes - self.static) / per))

    @classmethod
    def fit(cls, probes: Iterable[Measurement]) -> MemoryModel:
        """Least squares on relative error over successful probes (needs >= 6 of them, varied in T and U)."""
        ok = [m for m in probes if not m.oom and m.peak_bytes is not None]
        if len(ok) < 1 + len(TERMS):
            raise ValueError(f"the memory model needs >= {1 + len(TERMS)} successful probes, got {len(ok)}")
        b = np.array([m.batch_size for m in ok], dtype=np.float64)
        y = np.array([m.peak_bytes for m in ok], dtype=np.float64)
        x = _terms([m.shape.t for m in ok], [m.shape.out_len for m in ok]) * b[:, None]
        a = np.concatenate([np.ones((len(ok), 1)), x], axis=1)
        scale = np.abs(a).max(axis=0)  # columns to unit range: T² and U² would otherwise dwarf T and U
        scale[scale == 0] = 1.0
        w = 1.0 / y  # relative error: a 1 GiB probe and a 60 GiB probe count alike
        sol, *_ = np.linalg.lstsq(a / scale * w[:, None], y * w, rcond=None)
        sol = sol / scale
        rel = (a @ sol - y) / y
        coef = tuple(float(c) for c in sol[1:])
        return cls(float(sol[0]), coef, float(np.sqrt(np.mean(rel**2))))  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        return {
            "static": self.static,
            "coef": dict(zip(TERMS, self.coef)),
            "rms_rel_error": self.rms_rel_error,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MemoryModel:
        coef = tuple(float(d["coef"][k]) for k in TERMS)
        return cls(float(d["static"]), coef, float(d.get("rms_rel_error", 0.0)))  # type: ignore[arg-type]


def probe_shapes(shapes: Sequence[Shape], rows: int = 4, min_out_len: int = PROMPT_LENGTH + 1) -> list[Shape]:
    """Probe shapes spanning the buckets: at ``rows`` durations (quantiles of the distinct bucket durations,
    longest included) the smallest and the largest U of that duration (half the largest when the row has a
    single U, so U varies independently of T); at least 1 + len(TERMS) distinct shapes in all. U stays at
    least ``min_out_len`` (the prompt + EOS)."""
    durations = sorted({s.duration for s in shapes})
    picks = sorted({durations[round(q * (len(durations) - 1))] for q in np.linspace(0, 1, rows)})
    out: list[Shape] = []
    for d in picks:
        row = sorted(s for s in shapes if s.duration == d)  # by U; they share the feature seconds
        lo, hi = row[0].out_len, row[-1].out_len
        if lo == hi:
            lo = max(min_out_len, hi // 2)
        out += [dataclasses.replace(row[0], out_len=lo), row[-1]]
    out = sorted(set(out))
    # Few distinct durations (e.g. 1-2 rows): add intermediate U values so the fit stays determined.
    longest = max(out)
    k = 2
    while len(out) < 1 + len(TERMS):
        for d in picks:
            top = max((s for s in out if s.duration == d), key=lambda s: s.out_len)
            extra = dataclasses.replace(top, out_len=max(min_out_len, top.out_len * (k - 1) // k))
            if extra not in out:
                out.append(extra)
        k += 1
        if k > 64:
            break
    return sorted(set(out) | {longest})


def fit_memory_model(
    meter: Meter,
    shapes: Sequence[Shape],
    target_bytes: float,
    fill: float = 0.5,
    on_probe: Callable[[Measurement], None] | None = None,
    max_batch_size: int = 1 << 16,
    min_out_len: int = PROMPT_LENGTH + 1,
) -> tuple[MemoryModel, list[Measurement]]:
    """Probe ``meter`` and fit the memory model; returns (model, probes).

    Round 1: the longest probe shape at B = 1 and 2 gives the static memory and the worst per-utterance
    cost; every probe shape then runs at the B that fills ``fill`` of the target by that worst cost (safe:
    every other shape costs less per utterance). Round 2 reruns each shape at the B that the round-1 fit
    says fills ``fill`` of the target, so every probe measures a batch of the size the profile will use.
    ``min_out_len``: the least U a probe may have (the prompt + EOS).
    """
    probes: list[Measurement] = []

    def run(b: int, shape: Shape) -> Measurement:
        m = meter.measure(b, shape)
        probes.append(m)
        if on_probe is not None:
            on_probe(m)
        return m

    plan = probe_shapes(shapes, min_out_len=min_out_len)
    longest = max(plan)
    m1, m2 = run(1, longest), run(2, longest)
    if not (m1.fits(target_bytes) and m2.fits(target_bytes)):
        raise NoBatchFitsError(f"two utterances of the longest bucket {longest} do not fit")
    assert m1.peak_bytes is not None and m2.peak_bytes is not None
    per = max(m2.peak_bytes - m1.peak_bytes, 1)
    static = m1.peak_bytes - per
    b1 = min(max_batch_size, max(2, math.floor(fill * (target_bytes - static) / per)))
    for shape in plan:
        run(b1, shape)
    # B = 1 may take other kernels (and on CPU is off the line of B >= 2): planning only, not fitted.
    first = MemoryModel.fit(p for p in probes if p.batch_size >= 2)
    for shape in plan:
        b2 = first.max_batch_size(shape.t, shape.out_len, static + fill * (target_bytes - static))
        b2 = min(max_batch_size, max(2, b2))
        if b2 != b1:
            run(b2, shape)
    return MemoryModel.fit(p for p in probes if p.batch_size >= 2), probes
