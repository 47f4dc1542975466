"""Whisper's log-mel front end, in torch, with the two padding conventions of its engines.

Per utterance: Hann window of 400 samples (periodic), hop 160, centred STFT with reflect padding, the last
frame dropped, power spectrum, Slaney mel filterbank (80 bins; 128 for large-v3), ``log10(max(x, 1e-10))``,
values clamped to at most 8 below the maximum (dynamic range 80 dB), then ``(x + 4) / 4``.

Input modes (:attr:`WhisperFeatureConfig.input`):

* ``padded`` — what Whisper was trained on: every utterance becomes exactly 3000 frames (30 s).
  ``padding="openai"`` (openai-whisper, Hugging Face): the *audio* is padded with 30 s of zeros before the
  STFT and the first 3000 frames are kept. ``padding="faster-whisper"``: the audio is padded by one hop
  (160 samples), and the log-mel frames are zero-padded to 3000 afterwards. The two differ near the end of
  the speech and in the value of the padded frames; transcripts can differ slightly.
* ``unpadded`` — the real frames alone (faster-whisper's frames before its zero padding, ``N // 160``); the
  encoder then slices its position table. The paper's padding argument applied to inference.

Utterances are computed one at a time (reflect padding reads a clip's own samples, so a batched STFT over
zero-padded rows would differ at the clip's end); the STFT is a small part of Whisper's cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from fastaed.data.features import FeatureConfig, mel_filterbank

CHUNK_FRAMES = 3000  # 30 s at 100 frames/s: Whisper's training window
WhisperInput = Literal["padded", "unpadded"]
WhisperPadding = Literal["openai", "faster-whisper"]


@dataclass(frozen=True)
class WhisperFeatureConfig:
    """Whisper's front end; the checkpoint stores it (``{"kind": "whisper", ...}``)."""

    n_mels: int = 80
    sample_rate: int = 16000
    n_fft: int = 400
    hop_length: int = 160
    chunk_frames: int = CHUNK_FRAMES
    input: WhisperInput = "padded"
    padding: WhisperPadding = "openai"

    def __post_init__(self) -> None:
        if self.input not in ("padded", "unpadded"):
            raise ValueError(f"whisper input must be 'padded' or 'unpadded', got {self.input!r}")
        if self.padding not in ("openai", "faster-whisper"):
            raise ValueError(f"whisper padding must be 'openai' or 'faster-whisper', got {self.padding!r}")
        if min(self.n_mels, self.sample_rate, self.n_fft, self.hop_length, self.chunk_frames) <= 0:
            raise ValueError(f"WhisperFeatureConfig fields must be positive: {self}")

    @property
    def chunk_samples(self) -> int:
        return self.chunk_frames * self.hop_length


class WhisperLogMel(nn.Module):
    """waves (B, N), wave_lens (B,) -> feats (B, T, n_mels) float32, feat_lens (B,) int64.

    Padded input: T = 3000 and every length is 3000. Unpadded: ``feat_lens = max(wave_lens // 160, 1)``, rows
    right-padded with zeros. Audio longer than 30 s is an error in padded mode (one window per utterance).
    """

    def __init__(self, config: WhisperFeatureConfig | None = None):
        super().__init__()
        self.config = config or WhisperFeatureConfig()
        cfg = self.config
        self.register_buffer("window", torch.hann_window(cfg.n_fft), persistent=False)
        fb = mel_filterbank(
            FeatureConfig(
                sample_rate=cfg.sample_rate, n_fft=cfg.n_fft, win_length=cfg.n_fft, n_mels=cfg.n_mels
            )
        )
        self.register_buffer("mel_fb", fb, persistent=False)  # (n_mels, n_fft/2+1)

    def log_mel(self, wave: torch.Tensor) -> torch.Tensor:
        """(N,) float waveform -> (n_mels, N // hop) log-mel before the dynamic-range clamp."""
        cfg = self.config
        spec = torch.stft(
            wave,
            cfg.n_fft,
            cfg.hop_length,
            window=self.window,
            center=True,
            pad_mode="reflect",
            return_complex=True,
        )
        power = spec[:, :-1].abs() ** 2  # (n_fft/2+1, frames): the last frame dropped, as Whisper does
        return torch.clamp(self.mel_fb @ power, min=1e-10).log10()

    def long_log_mel(self, wave: torch.Tensor, block_frames: int = 6000) -> torch.Tensor:
        """(N,) waveform of any length -> (n_mels, N // hop + chunk_frames) normalised features of the
        whole file followed by 30 s of silence, which openai-whisper's long-form ``transcribe`` slices its
        windows from.

        The STFT runs over blocks of ``block_frames`` frames (each block reads its own samples plus half a
        window either side), so no (frames, n_fft/2+1) spectrum of the whole file is ever held: the result
        and the audio are the only things that grow with the file. The dynamic-range clamp uses the maximum
        of the whole file, as there."""
        cfg = self.config
        wave = wave.float()
        half = cfg.n_fft // 2
        padded_len = wave.shape[0] + cfg.chunk_samples  # the audio, then 30 s of zeros
        n_frames = padded_len // cfg.hop_length  # centred frames, the last one dropped
        out = torch.empty(cfg.n_mels, n_frames)

        def samples(lo: int, hi: int) -> torch.Tensor:
            """Padded-signal samples [lo, hi) with reflect padding outside [0, padded_len)."""
            idx = torch.arange(lo, hi)
            idx = torch.where(idx < 0, -idx, idx)
            idx = torch.where(idx >= padded_len, 2 * (padded_len - 1) - idx, idx)
            real = idx < wave.shape[0]
            return torch.where(real, wave[idx.clamp(max=wave.shape[0] - 1)], 0.0)

        for a in range(0, n_frames, block_frames):
            b = min(a + block_frames, n_frames)
            x = samples(a * cfg.hop_length - half, (b - 1) * cfg.hop_length + half)
            spec = torch.stft(x, cfg.n_fft, cfg.hop_length, window=self.window, center=False,
                              return_complex=True)  # fmt: skip
            out[:, a:b] = torch.clamp(self.mel_fb @ (spec.abs() ** 2), min=1e-10).log10()
        top = out.max()
        return out.clamp_(min=top - 8.0).add_(4.0).div_(4.0)

    def one(self, wave: torch.Tensor) -> torch.Tensor:
        """(N,) waveform -> (T, n_mels) features of one utterance in the configured mode."""
        cfg = self.config
        wave = wave.float()
        if cfg.input == "padded" and cfg.padding == "openai":
            if wave.shape[0] > cfg.chunk_samples:
                raise ValueError(self._too_long(wave.shape[0]))
            mel = self.log_mel(torch.nn.functional.pad(wave, (0, cfg.chunk_samples)))[:, : cfg.chunk_frames]
        else:
            mel = self.log_mel(torch.nn.functional.pad(wave, (0, cfg.hop_length)))
        mel = (torch.maximum(mel, mel.max() - 8.0) + 4.0) / 4.0
        if cfg.input == "unpadded" or cfg.padding == "faster-whisper":
            # faster-whisper keeps ``frames - 1`` of these (N // 160, at least one): the last frame, mostly
            # padding, goes; the clamp above still saw it, as there.
            mel = mel[:, : max(mel.shape[1] - 1, 1)]
        if cfg.input == "padded" and cfg.padding == "faster-whisper":
            if mel.shape[1] > cfg.chunk_frames:
                raise ValueError(self._too_long(wave.shape[0]))
            mel = torch.nn.functional.pad(mel, (0, cfg.chunk_frames - mel.shape[1]))
        return mel.T

    def _too_long(self, samples: int) -> str:
        seconds = samples / self.config.sample_rate
        return f"{seconds:.2f} s of audio: Whisper's padded input holds one 30 s window (split longer audio)"

    @torch.no_grad()
    def forward(
        self, waves: torch.Tensor, wave_lens: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # ``generator``: accepted for the trainer's front-end call; Whisper's front end has no dither.
        feats = [self.one(waves[i, : int(n)]) for i, n in enumerate(wave_lens.tolist())]
        lens = torch.tensor([f.shape[0] for f in feats], dtype=torch.long, device=waves.device)
        out = waves.new_zeros(len(feats), int(lens.max()), self.config.n_mels, dtype=torch.float32)
        for i, f in enumerate(feats):
            out[i, : f.shape[0]] = f
        return out, lens
