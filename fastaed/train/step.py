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
from fastaed.model import (
    EncoderDecoderModel,
    counted_targets,
    cross_entropy_loss,
    ctc_loss,
    distillation_loss,
)
from fastaed.train.config import LossConfig
from fastaed.train.distill import Distiller
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


LOSS_PARTS = ("ce", "ctc", "kl", "state")  # what compute_loss reports, in this order


def compute_loss(
    model: EncoderDecoderModel,
    piece: Batch,
    norm: torch.Tensor,
    loss_cfg: LossConfig,
    ctc_weight: float | None,
    distiller: Distiller | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss to differentiate, detached parts (4,): ce, ctc, kl, state); norm: (2,) the step's CE and CTC
    token counts (the distillation terms count the CE's positions, so they divide by its count too)."""
    with_ctc = ctc_weight is not None
    enc, enc_lens = model.encode(piece.feats, piece.feat_lens)
    states = model.decode_features(enc, enc_lens, piece.dec_inputs)  # (B, U, D)
    logits = model.decoder.classify(states)  # (B, U, V)
    prompt_lens = piece.prompt_lens if loss_cfg.mask_prompt else None
    ce_sum, _ = cross_entropy_loss(
        logits,
        piece.dec_targets,
        target_lens=piece.dec_lens,
        prompt_lens=prompt_lens,
        label_smoothing=loss_cfg.label_smoothing,
        reduction="sum",
    )
    ce = ce_sum / norm[0]
    zero = torch.zeros_like(ce)
    loss, ctc = ce, zero
    if with_ctc:
        lens = piece.token_lens - piece.prompt_lens - 1  # (B,) transcript tokens: no prompt, no EOS
        pos = piece.prompt_lens[:, None] + torch.arange(int(lens.max()), device=lens.device)[None, :]
        targets = piece.tokens.gather(1, pos.clamp(max=piece.tokens.shape[1] - 1))  # (B, S)
        ctc_sum, _ = ctc_loss(model.ctc_log_probs(enc), enc_lens, targets, lens, reduction="sum")
        ctc = ctc_sum / norm[1]
        loss = (1 - ctc_weight) * ce + ctc_weight * ctc
    kl, state = zero, zero
    if distiller is not None:
        mask = counted_targets(piece.dec_targets, piece.dec_lens, prompt_lens)  # (B, U)
        teacher_logits, teacher_states = distiller.teacher(piece, mask)
        w = distiller.weights
        kl_sum, state_sum = distillation_loss(
            logits[mask], teacher_logits, states[mask], teacher_states, temperature=w.temperature
        )
        kl, state = kl_sum / norm[0], state_sum / norm[0]
        loss = w.ce * loss + w.kl * kl + w.state * state
    return loss, torch.stack([ce.detach(), ctc.detach(), kl.detach(), state.detach()])


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
    distiller: Distiller | None = None,
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
        loss, parts = compute_loss(model, piece, norm, loss_cfg, ctc_weight, distiller)
    return injector.poison(loss, step), parts
