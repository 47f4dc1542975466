"""Whisper's encoder: a two-convolution stem, fixed sinusoidal positions, pre-LN Transformer blocks.

Dimensions: B batch, T feature frames, F mel bins, T' = ceil(T / 2) encoder frames, D width, H heads.

Stem: ``Conv1d(F, D, 3, pad 1) → GELU → Conv1d(D, D, 3, stride 2, pad 1) → GELU``, then the first T' rows of
the (max_positions, D) sinusoid table (a buffer saved with the weights) are added. Block:
``x + SelfAttn(LN(x))`` then ``x + MLP(LN(x))`` with a GELU MLP of width 4D; attention has no key bias.
A final LayerNorm closes the encoder.

Whisper was trained on 30 s windows only (3000 frames, T' = 1500, nothing masked). The same module also
runs *unpadded* input, the real frames alone: the position table is sliced to T', and in a batch of
different lengths the padded frames are masked out of attention and zeroed after each convolution, so a row
sees exactly what it would see alone (padding invariance, tested).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fastaed.model.attention import SelfAttention, lengths_to_mask
from fastaed.model.config import EncoderConfig


def whisper_sinusoids(length: int, channels: int, device: torch.device | None = None) -> Tensor:
    """(length, channels) Whisper's encoder positions: [sin | cos] halves (not interleaved) with timescales
    from 1 to 10000 spread log-uniformly over ``channels / 2`` frequencies."""
    half = channels // 2
    log_increment = math.log(10000.0) / (half - 1)
    inv_timescales = torch.exp(-log_increment * torch.arange(half, device=device, dtype=torch.float32))
    angles = torch.arange(length, device=device, dtype=torch.float32)[:, None] * inv_timescales[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def stem_lengths(feat_lens: Tensor) -> Tensor:
    """(B,) feature frames -> (B,) encoder frames after the stride-2 convolution (kernel 3, padding 1)."""
    return (feat_lens - 1) // 2 + 1


class WhisperBlock(nn.Module):
    """Pre-LN self-attention and GELU MLP, each with a residual."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        d = cfg.d_model
        self.attn_norm = nn.LayerNorm(d)
        self.attn = SelfAttention(d, cfg.n_heads, cfg.dropout_att, causal=False, key_bias=False)
        self.ff_norm = nn.LayerNorm(d)
        self.ff = nn.Sequential(
            nn.Linear(d, cfg.ff_expansion * d), nn.GELU(), nn.Linear(cfg.ff_expansion * d, d)
        )
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, key_mask: Tensor | None) -> Tensor:
        """x: (B, T', D); key_mask: (B, 1, 1, T') True = valid frame, or None (nothing padded)."""
        x = x + self.dropout(self.attn(self.attn_norm(x), key_mask=key_mask))
        return x + self.dropout(self.ff(self.ff_norm(x)))


class WhisperEncoder(nn.Module):
    """(B, T, F) Whisper log-mel -> (B, T', D) encoder states; the same interface as ``ConformerEncoder``."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.conv1 = nn.Conv1d(cfg.n_mels, d, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(d, d, kernel_size=3, stride=2, padding=1)
        self.layers = nn.ModuleList(WhisperBlock(cfg) for _ in range(cfg.n_layers))
        self.final_norm = nn.LayerNorm(d)
        # A buffer, saved with the weights: imported models keep the table their file holds (CTranslate2
        # stores it in float16; adding exact sinusoids instead moves the outputs by up to 1e-1).
        self.register_buffer("positions", whisper_sinusoids(cfg.max_positions, d))

    def forward(self, feats: Tensor, feat_lens: Tensor) -> tuple[Tensor, Tensor]:
        """feats: (B, T, F); feat_lens: (B,) int64, each >= 1, T' = ceil(T / 2) <= ``max_positions``.

        Returns encoder states (B, T', D), zero on padded frames, and their lengths (B,) int64.
        """
        lens = stem_lengths(feat_lens)
        t_out = (feats.shape[1] - 1) // 2 + 1
        if t_out > self.cfg.max_positions:
            raise ValueError(
                f"{feats.shape[1]} feature frames make {t_out} encoder frames; this Whisper encoder has "
                f"{self.cfg.max_positions} positions (30 s): split longer audio"
            )
        padded = bool((feat_lens < feats.shape[1]).any())
        x = feats.transpose(1, 2)  # (B, F, T)
        if padded:  # frames past a row's length must read as the zeros of a lone row's conv padding
            x = x.masked_fill(~lengths_to_mask(feat_lens, feats.shape[1])[:, None, :], 0.0)
        x = F.gelu(self.conv1(x))  # (B, D, T)
        if padded:
            x = x.masked_fill(~lengths_to_mask(feat_lens, x.shape[2])[:, None, :], 0.0)
        x = F.gelu(self.conv2(x)).transpose(1, 2)  # (B, T', D)
        x = x + self.positions[:t_out].to(x.dtype)
        mask = lengths_to_mask(lens, t_out)  # (B, T')
        key_mask = mask[:, None, None, :] if padded else None
        for layer in self.layers:
            x = layer(x, key_mask)
        x = self.final_norm(x)
        return (x.masked_fill(~mask[:, :, None], 0.0) if padded else x), lens
