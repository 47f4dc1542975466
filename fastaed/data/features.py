"""Log-mel features (the NeMo ``AudioToMelSpectrogramPreprocessor`` recipe) and SpecAugment, in torch.

Pipeline per utterance: dither (training only) → pre-emphasis → centred STFT (Hann window of
``win_length`` zero-padded to ``n_fft``) → power spectrum → Slaney mel filterbank → ``log(x + guard)`` →
per-feature normalisation over the valid frames.

Padding invariance is exact by construction: samples at or after an utterance's length are forced to zero
after every step that could leak into them (dither, pre-emphasis), and the STFT centring pads with zeros
("constant"), so the frames an utterance owns see exactly what they would see if it were alone. Statistics
for normalisation use only valid frames, and padded frames come out as 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from fastaed.constants import HOP_LENGTH, N_FFT, N_MELS, SAMPLE_RATE, WIN_LENGTH

NORMALIZE_CHOICES = ("per_feature", "none")
STD_EPS = 1e-5  # added to the per-feature std (NeMo's constant), so silent bins do not blow up


@dataclass(frozen=True)
class FeatureConfig:
    """Log-mel front end. Defaults are Canary's: 128 mels, 25 ms window, 10 ms hop, n_fft 512."""

    sample_rate: int = SAMPLE_RATE
    n_fft: int = N_FFT
    win_length: int = WIN_LENGTH
    hop_length: int = HOP_LENGTH
    n_mels: int = N_MELS
    preemphasis: float = 0.97  # 0 disables
    dither: float = 1e-5  # std of Gaussian noise added to valid samples, training mode only
    log_guard: float = 2**-24  # log(x + guard): finite log of silent bins
    normalize: Literal["per_feature", "none"] = "per_feature"
    f_min: float = 0.0
    f_max: float | None = None  # None -> sample_rate / 2
    # "centred": every frame of the centred STFT is valid (N // hop + 1). "nemo": NeMo's count,
    # (N + 2·(n_fft // 2) − n_fft) // hop (one fewer for an even n_fft); the last frame is then zeroed and
    # left out of the normalisation statistics, as NeMo's AudioToMelSpectrogramPreprocessor does.
    valid_frames: Literal["centred", "nemo"] = "centred"
    # Explicit analysis window (win_length values) and mel filterbank (n_mels rows of n_fft // 2 + 1), for a
    # checkpoint whose stored ones differ from the symmetric Hann and Slaney filters computed here (NeMo keeps
    # both in its state dict). None: computed.
    window: tuple[float, ...] | None = None
    filterbank: tuple[tuple[float, ...], ...] | None = None

    def __post_init__(self) -> None:
        for name in ("sample_rate", "n_fft", "win_length", "hop_length", "n_mels"):
            if getattr(self, name) <= 0:
                raise ValueError(f"FeatureConfig.{name} must be > 0, got {getattr(self, name)}")
        if self.win_length > self.n_fft:
            raise ValueError(f"win_length ({self.win_length}) must be <= n_fft ({self.n_fft})")
        if not 0.0 <= self.preemphasis < 1.0:
            raise ValueError(f"preemphasis must be in [0, 1), got {self.preemphasis}")
        if self.dither < 0:
            raise ValueError(f"dither must be >= 0, got {self.dither}")
        if self.log_guard <= 0:
            raise ValueError(f"log_guard must be > 0, got {self.log_guard}")
        if self.normalize not in NORMALIZE_CHOICES:
            raise ValueError(f"normalize must be one of {NORMALIZE_CHOICES}, got {self.normalize!r}")
        if not 0.0 <= self.f_min < self.fmax <= self.sample_rate / 2:
            raise ValueError(
                f"need 0 <= f_min < f_max <= sample_rate/2, got f_min={self.f_min}, f_max={self.fmax}"
            )
        if self.valid_frames not in ("centred", "nemo"):
            raise ValueError(f"valid_frames must be 'centred' or 'nemo', got {self.valid_frames!r}")
        # Lists (from JSON) become tuples, so the config stays hashable and frozen in spirit.
        if self.window is not None:
            object.__setattr__(self, "window", tuple(float(v) for v in self.window))
            if len(self.window) != self.win_length:
                raise ValueError(f"window has {len(self.window)} values, win_length is {self.win_length}")
        if self.filterbank is not None:
            object.__setattr__(self, "filterbank", tuple(tuple(float(v) for v in r) for r in self.filterbank))
            shape = (len(self.filterbank), len(self.filterbank[0]) if self.filterbank else 0)
            if shape != (self.n_mels, self.n_fft // 2 + 1):
                raise ValueError(f"filterbank is {shape}, expected ({self.n_mels}, {self.n_fft // 2 + 1})")

    @property
    def fmax(self) -> float:
        """Upper edge of the filterbank in Hz (``f_max`` resolved)."""
        return self.sample_rate / 2 if self.f_max is None else float(self.f_max)

    def num_frames(self, num_samples: int) -> int:
        """Frames of a centred STFT over ``num_samples`` samples: ``num_samples // hop + 1``."""
        return num_samples // self.hop_length + 1

    def num_valid_frames(self, num_samples: int | torch.Tensor) -> int | torch.Tensor:
        """Frames that count as the utterance's (see ``valid_frames``); at least 1."""
        if self.valid_frames == "centred":
            return num_samples // self.hop_length + 1
        n = (num_samples + 2 * (self.n_fft // 2) - self.n_fft) // self.hop_length
        return n.clamp(min=1) if isinstance(n, torch.Tensor) else max(n, 1)


# --------------------------------------------------------------------------------------------------------
# Mel filterbank (Slaney mel scale: linear below 1 kHz, logarithmic above; area-normalised triangles)

_SLANEY_F_SP = 200.0 / 3  # Hz per mel in the linear part
_SLANEY_MIN_LOG_HZ = 1000.0
_SLANEY_MIN_LOG_MEL = _SLANEY_MIN_LOG_HZ / _SLANEY_F_SP  # 15 mel
_SLANEY_LOGSTEP = math.log(6.4) / 27.0  # log-spacing above 1 kHz


def hz_to_mel(hz: torch.Tensor) -> torch.Tensor:
    """Slaney mel scale (the Auditory Toolbox's, librosa's default with ``htk=False``)."""
    lin = hz / _SLANEY_F_SP
    log = _SLANEY_MIN_LOG_MEL + torch.log(torch.clamp(hz, min=1e-10) / _SLANEY_MIN_LOG_HZ) / _SLANEY_LOGSTEP
    return torch.where(hz >= _SLANEY_MIN_LOG_HZ, log, lin)


def mel_to_hz(mel: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`hz_to_mel`."""
    lin = mel * _SLANEY_F_SP
    log = _SLANEY_MIN_LOG_HZ * torch.exp(_SLANEY_LOGSTEP * (mel - _SLANEY_MIN_LOG_MEL))
    return torch.where(mel >= _SLANEY_MIN_LOG_MEL, log, lin)


def mel_band_edges(cfg: FeatureConfig) -> torch.Tensor:
    """(n_mels + 2,) float64 Hz: band m rises from edge m, peaks at edge m+1, falls to zero at edge m+2."""
    lo, hi = hz_to_mel(torch.tensor([cfg.f_min, cfg.fmax], dtype=torch.float64))
    return mel_to_hz(torch.linspace(float(lo), float(hi), cfg.n_mels + 2, dtype=torch.float64))


def mel_center_frequencies(cfg: FeatureConfig) -> torch.Tensor:
    """(n_mels,) centre (peak) frequency of each mel band in Hz."""
    return mel_band_edges(cfg)[1:-1]


def mel_filterbank(cfg: FeatureConfig) -> torch.Tensor:
    """(n_mels, n_fft // 2 + 1) float32 triangular filters, each scaled by 2 / bandwidth (Slaney norm).

    Area normalisation keeps a white spectrum roughly flat across mel bins, although high bands are wider.
    """
    edges = mel_band_edges(cfg)  # (n_mels + 2,)
    freqs = torch.linspace(0, cfg.sample_rate / 2, cfg.n_fft // 2 + 1, dtype=torch.float64)  # rfft bins
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs[None, :] - lower) / (centre - lower)
    falling = (upper - freqs[None, :]) / (upper - centre)
    tri = torch.clamp(torch.minimum(rising, falling), min=0.0)
    return (tri * (2.0 / (upper - lower))).float()


# --------------------------------------------------------------------------------------------------------
# Feature extractor


def _length_mask(lens: torch.Tensor, size: int) -> torch.Tensor:
    """(B,) lengths -> (B, size) bool, True at valid positions."""
    return torch.arange(size, device=lens.device)[None, :] < lens[:, None]


class LogMelFeatures(nn.Module):
    """Batched, padding-invariant log-mel features.

    forward: waves (B, N) float, wave_lens (B,) int -> feats (B, T, n_mels) float32, feat_lens (B,) int64,
    with ``T = N // hop + 1`` and ``feat_lens = config.num_valid_frames(wave_lens)`` (``wave_lens // hop + 1``
    by default); ``wave_lens`` must be in [1, N].
    A fixed front end: in-place ops make it non-differentiable with respect to ``waves``.
    """

    def __init__(self, config: FeatureConfig | None = None):
        super().__init__()
        self.config = config or FeatureConfig()
        cfg = self.config
        # Symmetric Hann (NeMo uses periodic=False); torch.stft centres it inside n_fft.
        window = torch.hann_window(cfg.win_length, periodic=False)
        if cfg.window is not None:
            window = torch.tensor(cfg.window, dtype=torch.float32)
        self.register_buffer("window", window, persistent=False)
        # Stored transposed, (n_fft/2+1, n_mels), so the power spectrum (B, T, F) multiplies it directly.
        fb = mel_filterbank(cfg)
        if cfg.filterbank is not None:
            fb = torch.tensor(cfg.filterbank, dtype=torch.float32)
        self.register_buffer("mel_fb_t", fb.T.contiguous(), persistent=False)

    def num_frames(self, num_samples: int | torch.Tensor) -> int | torch.Tensor:
        """Frames produced for ``num_samples`` samples (int or tensor): ``num_samples // hop + 1``."""
        return num_samples // self.config.hop_length + 1

    def forward(
        self,
        waves: torch.Tensor,
        wave_lens: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Args:
            waves: (B, N) float waveforms, padded arbitrarily beyond each length.
            wave_lens: (B,) valid sample counts.
            generator: optional RNG for the training-mode dither (deterministic features).
        Returns:
            feats (B, T, n_mels) float32, padded frames 0; feat_lens (B,) int64.
        """
        if waves.dim() != 2:
            raise ValueError(f"waves must be (B, N), got shape {tuple(waves.shape)}")
        cfg = self.config
        # Features are always computed in fp32: fp16/bf16 power spectra lose the quiet bins entirely.
        with torch.autocast(device_type=waves.device.type, enabled=False):
            x = waves.float()
            lens = wave_lens.to(device=x.device, dtype=torch.int64)
            padding = ~_length_mask(lens, x.shape[1])  # (B, N), True beyond each length
            if self.training and cfg.dither > 0:
                x = x + cfg.dither * _randn(x.shape, x.device, generator)
            if cfg.preemphasis > 0:
                # y[0] = x[0]; y[n] = x[n] − a·x[n−1]. Valid outputs read only valid inputs, so one mask
                # after this step zeroes both the collator's padding and the −a·x[len−1] leaking into y[len].
                y = torch.empty_like(x)
                y[:, :1] = x[:, :1]
                torch.sub(x[:, 1:], x[:, :-1], alpha=cfg.preemphasis, out=y[:, 1:])
                x = y.masked_fill_(padding, 0.0)
            else:
                x = x.masked_fill(padding, 0.0)
            spec = torch.stft(
                x,
                n_fft=cfg.n_fft,
                hop_length=cfg.hop_length,
                win_length=cfg.win_length,
                window=self.window,
                center=True,
                pad_mode="constant",  # zero centring padding == the masked zeros of a padded batch: exact
                return_complex=True,
            ).transpose(1, 2)  # (B, T, F); torch.stft computes it in this layout, so this is free
            power = spec.real.square().add_(spec.imag.square())  # |X|², cheaper than abs() (no hypot)
            feats = torch.matmul(power, self.mel_fb_t).add_(cfg.log_guard).log_()  # (B, T, n_mels)
            feat_lens = cfg.num_valid_frames(lens)
            frame_padding = ~_length_mask(feat_lens, feats.shape[1]).unsqueeze(-1)  # (B, T, 1)
            feats.masked_fill_(frame_padding, 0.0)
            if cfg.normalize == "per_feature":
                _normalize_per_feature_(feats, feat_lens, frame_padding)
        return feats, feat_lens


def _randn(shape: torch.Size, device: torch.device, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal noise; drawn on the generator's device (if any) so a CPU generator works with CUDA."""
    if generator is None:
        return torch.randn(shape, device=device)
    return torch.randn(shape, device=generator.device, generator=generator).to(device)


def _normalize_per_feature_(
    feats: torch.Tensor, feat_lens: torch.Tensor, frame_padding: torch.Tensor
) -> torch.Tensor:
    """In place: (B, T, F) with zeroed padded frames -> zero mean, unit (unbiased) std per utterance and
    bin over the valid frames; padded frames stay 0."""
    n = feat_lens.to(feats.dtype)[:, None, None]  # (B, 1, 1)
    mean = feats.sum(1, keepdim=True).div_(n)  # (B, 1, F)
    feats.sub_(mean).masked_fill_(frame_padding, 0.0)
    std = torch.linalg.vector_norm(feats, dim=1, keepdim=True).div_(torch.clamp(n - 1, min=1.0).sqrt_())
    return feats.div_(std.add_(STD_EPS))


# --------------------------------------------------------------------------------------------------------
# SpecAugment


@dataclass(frozen=True)
class SpecAugmentConfig:
    """Canary's SpecAugment: 2 frequency masks of up to 27 bins, 10 time masks of up to 5% of the length.

    ``time_width`` is a fraction of each utterance's valid length when it is a float, a number of frames
    when it is an int.
    """

    freq_masks: int = 2
    freq_width: int = 27
    time_masks: int = 10
    time_width: float | int = 0.05

    def __post_init__(self) -> None:
        if self.freq_masks < 0 or self.time_masks < 0:
            raise ValueError(f"mask counts must be >= 0, got {self.freq_masks}, {self.time_masks}")
        if self.freq_width < 0:
            raise ValueError(f"freq_width must be >= 0, got {self.freq_width}")
        if isinstance(self.time_width, bool) or not isinstance(self.time_width, int | float):
            raise TypeError(
                f"time_width must be a float fraction or int frame count, got {self.time_width!r}"
            )
        if isinstance(self.time_width, float) and not 0.0 <= self.time_width <= 1.0:
            raise ValueError(f"a fractional time_width must be in [0, 1], got {self.time_width}")
        if isinstance(self.time_width, int) and self.time_width < 0:
            raise ValueError(f"time_width must be >= 0, got {self.time_width}")


class SpecAugment(nn.Module):
    """Frequency and time masking (filled with 0, the mean of normalised features); identity in eval mode.

    All masks of a kind are drawn at once, (B, masks), and combined by broadcasting: no Python loops.
    A mask of width w starts uniformly in [0, limit − w], so it never leaves the utterance's valid frames
    (time) or the mel axis (frequency).
    """

    def __init__(self, config: SpecAugmentConfig | None = None):
        super().__init__()
        self.config = config or SpecAugmentConfig()

    def forward(
        self, feats: torch.Tensor, feat_lens: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """feats (B, T, F), feat_lens (B,) -> masked feats (B, T, F): a new tensor, the input is untouched."""
        cfg = self.config
        if not self.training or (cfg.freq_masks == 0 and cfg.time_masks == 0):
            return feats
        B, T, F = feats.shape
        device = feats.device
        lens = feat_lens.to(device=device, dtype=torch.int64)
        mask = torch.zeros(B, T, F, dtype=torch.bool, device=device)
        if cfg.freq_masks and cfg.freq_width:
            max_w = torch.full((B, 1), min(cfg.freq_width, F), dtype=torch.int64, device=device)
            start, width = _draw_masks(max_w, torch.full_like(max_w, F), cfg.freq_masks, generator)
            f = torch.arange(F, device=device)[None, None, :]  # (1, 1, F)
            hit = (f >= start[..., None]) & (f < (start + width)[..., None])  # (B, masks, F)
            mask |= hit.any(1)[:, None, :]
        if cfg.time_masks:
            if isinstance(cfg.time_width, float):
                max_w = (lens.to(torch.float64) * cfg.time_width).floor().to(torch.int64)
            else:
                max_w = torch.clamp(lens, max=cfg.time_width)
            start, width = _draw_masks(max_w[:, None], lens[:, None], cfg.time_masks, generator)
            t = torch.arange(T, device=device)[None, None, :]  # (1, 1, T)
            hit = (t >= start[..., None]) & (t < (start + width)[..., None])  # (B, masks, T)
            mask |= hit.any(1)[:, :, None]
        mask &= _length_mask(lens, T)[:, :, None]  # never touch padding (keeps padded frames as they were)
        return feats.masked_fill(mask, 0.0)


def _draw_masks(
    max_width: torch.Tensor, limit: torch.Tensor, count: int, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, ``count`` masks: width ~ U{0..max_width}, start ~ U{0..limit − width}.

    Args:
        max_width, limit: (B, 1) int64, with 0 <= max_width <= limit.
    Returns:
        start, width: (B, count) int64.
    """
    shape = (max_width.shape[0], 2 * count)
    gen_device = generator.device if generator is not None else max_width.device
    u = torch.rand(shape, generator=generator, device=gen_device, dtype=torch.float64).to(max_width.device)
    u_width, u_start = u[:, :count], u[:, count:]
    # floor(u · (k + 1)) is uniform on {0..k}; the clamp guards the u → 1 rounding edge.
    width = torch.minimum((u_width * (max_width + 1)).floor().to(torch.int64), max_width)
    room = limit - width
    start = torch.minimum((u_start * (room + 1)).floor().to(torch.int64), room)
    return start, width
