"""One training step's pieces, shared by the trainer (``loop.py``) and the batch-size profile's synthetic step
(``profile/memory.py``), so the profile measures exactly what training runs:

- :class:`Precision`: the one precision rule (bf16 autocast on CUDA, fp32 on CPU);
- :func:`build_optimizer`: AdamW with the trainer's parameter groups (fused on CUDA);
- :func:`compute_loss` and :func:`piece_forward`: features, forward and the per-token loss of one piece.

Dimensions: B batch, N audio samples, T feature frames, F mel bins, U decoder tokens, S transcript tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from fastaed.data.dataset import Batch
from fastaed.data.features import SpecAugment
from fastaed.model import EncoderDecoderModel, cross_entropy_loss, ctc_loss
from fastaed.train.config import LossConfig
from fastaed.train.faults import FaultInjector
from fastaed.util.devices import default_dtype


@dataclass(frozen=True)
class Precision:
    """How a step computes: bf16 autocast or fp32, on a device type.

    The rule (:meth:`resolve`) is ``util.devices.default_dtype``: bf16 autocast on CUDA, fp32 on CPU (CPU
    bf16 is slow, so even an explicit ``bf16`` trains in fp32 there); ``fp32`` turns autocast off on CUDA.
    """

    device_type: str  # "cuda" | "cpu"
    dtype: torch.dtype  # torch.bfloat16 (autocast) | torch.float32

    @classmethod
    def resolve(cls, device: torch.device, choice: str = "auto") -> Precision:
        """``choice``: ``auto`` | ``bf16`` | ``fp32`` (``runtime.dtype``, ``--dtype``)."""
        return cls(device.type, torch.float32 if choice == "fp32" else default_dtype(device))

    @property
    def bf16(self) -> bool:
        return self.dtype == torch.bfloat16

    @property
    def name(self) -> str:
        """``bf16`` | ``fp32``: what summaries and profile identities record."""
        return "bf16" if self.bf16 else "fp32"

    def autocast(self) -> AbstractContextManager[Any]:
        """The context the model's forward (and the loss) runs in; a no-op in fp32."""
        return torch.autocast(device_type=self.device_type, dtype=torch.bfloat16, enabled=self.bf16)


def build_optimizer(
    model: nn.Module,
    device: torch.device,
    *,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float] = (0.9, 0.999),
) -> tuple[torch.optim.AdamW, list[nn.Parameter]]:
    """AdamW over ``model``'s trainable parameters, fused on CUDA; returns (optimizer, parameters).

    Only matrices are decayed (biases and norm scales are not). The parameters come back in model order:
    the order gradients are all-reduced and clipped in (a float sum, so the order is part of the result).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    fused = True if device.type == "cuda" else None
    return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=fused), params


def compute_loss(
    model: EncoderDecoderModel,
    piece: Batch,
    norm: torch.Tensor,
    loss_cfg: LossConfig,
    ctc_weight: float | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss to differentiate, detached (ce, ctc) parts); norm: (2,) the step's CE and CTC token counts."""
    with_ctc = ctc_weight is not None
    out = model(piece.feats, piece.feat_lens, piece.dec_inputs, piece.dec_lens, return_ctc=with_ctc)
    ce_sum, _ = cross_entropy_loss(
        out.logits if with_ctc else out,
        piece.dec_targets,
        target_lens=piece.dec_lens,
        prompt_lens=piece.prompt_lens if loss_cfg.mask_prompt else None,
        label_smoothing=loss_cfg.label_smoothing,
        reduction="sum",
    )
    ce = ce_sum / norm[0]
    if not with_ctc:
        return ce, torch.stack([ce.detach(), torch.zeros_like(ce)])
    lens = piece.token_lens - piece.prompt_lens - 1  # (B,) transcript tokens: no prompt, no EOS
    pos = piece.prompt_lens[:, None] + torch.arange(int(lens.max()), device=lens.device)[None, :]
    targets = piece.tokens.gather(1, pos.clamp(max=piece.tokens.shape[1] - 1))  # (B, S)
    ctc_sum, _ = ctc_loss(out.ctc_log_probs, out.enc_lens, targets, lens, reduction="sum")
    ctc = ctc_sum / norm[1]
    return (1 - ctc_weight) * ce + ctc_weight * ctc, torch.stack([ce.detach(), ctc.detach()])


def piece_forward(
    piece: Batch,
    *,
    model: EncoderDecoderModel,
    frontend: nn.Module,  # waves (B, N), lens (B,) -> feats (B, T, F), feat_lens (B,)
    specaug: SpecAugment | None,
    generator: torch.Generator,
    norm: torch.Tensor,
    loss_cfg: LossConfig,
    ctc_weight: float | None,
    injector: FaultInjector,
    step: int,
    autocast: Callable[[], AbstractContextManager[Any]],
) -> tuple[torch.Tensor, torch.Tensor]:
    """What ``accumulate_with_oom_split`` runs for every piece: features (once per piece; the halves of a
    split inherit their rows), then model and loss. Dither and SpecAugment draw from ``generator``.

    piece: audio (B, N) on the device; its feats (B, T, F) are filled in here. Returns what
    :func:`compute_loss` does, the loss poisoned where ``injector`` says so (tests)."""
    injector.before_forward(piece)
    if piece.feats is None:
        with torch.no_grad():
            feats, feat_lens = frontend(piece.audio, piece.audio_lens, generator=generator)
            if specaug is not None:
                feats = specaug(feats, feat_lens, generator=generator)
        piece.feats, piece.feat_lens = feats, feat_lens
    with autocast():
        loss, parts = compute_loss(model, piece, norm, loss_cfg, ctc_weight)
    return injector.poison(loss, step), parts
