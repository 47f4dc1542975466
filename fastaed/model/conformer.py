"""FastConformer encoder: dw-striding subsampling, then macaron Conformer blocks (Gulati et al. 2020).

Dimensions: B batch, T feature frames, T' encoder frames, F mel bins, D model width, H heads.
Masks: True = valid frame (see ``fastaed.model.attention``).

Block (every sub-module pre-LN, dropout on every residual branch)::

    x = x + 0.5 · FFN(x)
    x = x + RelPosMHSA(x)
    x = x + Conv(x)
    x = x + 0.5 · FFN(x)
    x = LayerNorm(x)

No input scaling by sqrt(D) unless ``EncoderConfig.xscaling`` (NeMo's option of that name; Canary
checkpoints differ). Relative positions are encoded once per forward
pass and shared by all blocks; each block projects them with its own linear layer.

Padding invariance (an utterance's valid frames do not depend on the padding after it): attention masks
padded keys, the convolution module zeroes padded frames before its depthwise convolution, and the other
operations are per-frame. Batch norm, in training mode, normalises with statistics that include padded
frames, as the reference does; in eval mode it is a per-channel affine map and the invariance is exact.
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from fastaed.model.attention import (
    RelPositionMultiHeadAttention,
    lengths_to_mask,
    relative_positions,
    sinusoidal_encoding,
)
from fastaed.model.config import EncoderConfig
from fastaed.model.subsampling import DwStridingSubsampling


class FeedForward(nn.Module):
    """Pre-LN Linear(D -> e·D), SiLU (swish), dropout, Linear(e·D -> D)."""

    def __init__(self, d_model: int, expansion: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.inner = nn.Linear(d_model, expansion * d_model)
        self.act = nn.SiLU()
        self.dropout = nn.Dropout(dropout)
        self.outer = nn.Linear(expansion * d_model, d_model)

    def forward(self, x: Tensor) -> Tensor:
        """(B, T, D) -> (B, T, D)."""
        return self.outer(self.dropout(self.act(self.inner(self.norm(x)))))


class ConvModule(nn.Module):
    """Pre-LN pointwise D -> 2D, GLU, depthwise conv (kernel k), BatchNorm, SiLU, pointwise D -> D.

    The pointwise convolutions are written as ``nn.Linear`` on (B, T, D): the same parameters as a kernel-1
    Conv1d without two extra transposes.
    """

    def __init__(self, d_model: int, kernel_size: int):
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.pointwise_in = nn.Linear(d_model, 2 * d_model)
        self.depthwise = nn.Conv1d(
            d_model, d_model, kernel_size, padding=(kernel_size - 1) // 2, groups=d_model
        )
        self.batch_norm = nn.BatchNorm1d(d_model)
        self.act = nn.SiLU()
        self.pointwise_out = nn.Linear(d_model, d_model)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x: (B, T, D); mask: (B, T) True = valid. Returns (B, T, D)."""
        x = nn.functional.glu(self.pointwise_in(self.norm(x)), dim=-1)  # (B, T, 2D) -> (B, T, D)
        # Zero padded frames: the depthwise kernel reaches 4 frames past an utterance's end.
        x = x.masked_fill(~mask[:, :, None], 0.0)
        x = x.transpose(1, 2)  # (B, D, T): channels first for Conv1d / BatchNorm1d
        x = self.act(self.batch_norm(self.depthwise(x)))
        return self.pointwise_out(x.transpose(1, 2))  # (B, T, D)


class ConformerBlock(nn.Module):
    """One macaron Conformer block (see the module docstring)."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        d = cfg.d_model
        self.ff1 = FeedForward(d, cfg.ff_expansion, cfg.dropout)
        self.attn_norm = nn.LayerNorm(d)
        self.attn = RelPositionMultiHeadAttention(d, cfg.n_heads, cfg.dropout_att)
        self.conv = ConvModule(d, cfg.conv_kernel)
        self.ff2 = FeedForward(d, cfg.ff_expansion, cfg.dropout)
        self.out_norm = nn.LayerNorm(d)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, pos_emb: Tensor, mask: Tensor) -> Tensor:
        """x: (B, T, D); pos_emb: (2T-1, D); mask: (B, T) True = valid. Returns (B, T, D)."""
        x = x + 0.5 * self.dropout(self.ff1(x))
        x = x + self.dropout(self.attn(self.attn_norm(x), pos_emb, mask))
        x = x + self.dropout(self.conv(x, mask))
        x = x + 0.5 * self.dropout(self.ff2(x))
        return self.out_norm(x)


class ConformerEncoder(nn.Module):
    """(B, T, F) log-mel features -> (B, T', D) encoder states, T' = subsampled length."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.cfg = cfg
        self.subsampling = DwStridingSubsampling(
            cfg.n_mels, cfg.d_model, cfg.subsampling_channels, cfg.subsampling_stages
        )
        self.layers = nn.ModuleList(ConformerBlock(cfg) for _ in range(cfg.n_layers))

    def forward(self, feats: Tensor, feat_lens: Tensor) -> tuple[Tensor, Tensor]:
        """feats: (B, T, F); feat_lens: (B,) int64, each >= 1.

        Returns encoder states (B, T', D), zero on padded frames, and their lengths (B,) int64.
        """
        x, lens = self.subsampling(feats, feat_lens)  # (B, T', D), (B,)
        if self.cfg.xscaling:  # NeMo's ``xscaling``: Canary configs differ, so it is the checkpoint's choice
            x = x * math.sqrt(self.cfg.d_model)
        mask = lengths_to_mask(lens, x.shape[1])  # (B, T')
        pos_emb = sinusoidal_encoding(relative_positions(x.shape[1], x.device), self.cfg.d_model)
        pos_emb = pos_emb.to(x.dtype)  # (2T'-1, D)
        for layer in self.layers:
            x = layer(x, pos_emb, mask)
        # Zero padded frames so consumers (projection, CTC, pooling) never see arbitrary values there.
        return x.masked_fill(~mask[:, :, None], 0.0), lens
