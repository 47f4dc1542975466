"""Training losses: label-smoothed cross-entropy for the decoder, CTC for an optional encoder head.

Dimensions: B batch, U decoder positions, T' encoder frames, S CTC target tokens, V vocabulary.

Both return ``(loss, num_tokens)``: the loss is normalised per target token over the whole batch (a long
transcript weighs more than a short one, as in NeMo's ``SmoothedCrossEntropyLoss``), and the count lets a
caller combine micro-batches or data-parallel ranks exactly (use ``reduction="sum"`` and divide by the total).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from fastaed.model.attention import lengths_to_mask

PAD_ID = 0  # the fastaed tokenizer puts <pad> first; copied here because model/ imports no tokenizer

Reduction = Literal["mean", "sum"]


def cross_entropy_loss(
    logits: Tensor,
    targets: Tensor,
    *,
    target_lens: Tensor | None = None,
    prompt_lens: Tensor | None = None,
    label_smoothing: float = 0.0,
    pad_id: int = PAD_ID,
    reduction: Reduction = "mean",
) -> tuple[Tensor, Tensor]:
    """Label-smoothed cross-entropy over the real target tokens.

    logits: (B, U, V) decoder outputs (any float dtype; computed in float32).
    targets: (B, U) next-token ids (the sequence shifted left by one).
    target_lens: (B,) valid targets per row; if None, targets equal to ``pad_id`` are ignored instead.
    prompt_lens: (B,) prompt lengths; if given, the first ``prompt_len - 1`` targets of each row (the prompt
        tokens the model would otherwise learn to predict) are excluded.
    label_smoothing: ε, the probability mass given to the V - 1 wrong classes, as NeMo defines it (the target
        keeps 1 - ε). ``F.cross_entropy`` spreads its ε over all V classes, so it gets V·ε/(V-1).
    reduction: "mean" divides by the number of counted tokens, "sum" does not.

    Returns (loss, num_tokens): a scalar and an int64 scalar. With no token to count the loss is 0.
    """
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    if logits.shape[:2] != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} disagree")
    b, u, v = logits.shape
    mask = counted_targets(targets, target_lens, prompt_lens, pad_id)

    smoothing = label_smoothing * v / (v - 1)
    safe_targets = targets.masked_fill(~mask, 0)  # ignored rows may hold any id, e.g. pad beyond V
    per_token = F.cross_entropy(
        logits.float().reshape(b * u, v),  # (B·U, V)
        safe_targets.reshape(b * u),
        reduction="none",
        label_smoothing=smoothing,
    ).view(b, u)
    return _reduce(per_token, mask, reduction)


def counted_targets(
    targets: Tensor, target_lens: Tensor | None, prompt_lens: Tensor | None, pad_id: int = PAD_ID
) -> Tensor:
    """(B, U) bool: the target positions a decoder loss counts (see :func:`cross_entropy_loss`)."""
    u = targets.shape[1]
    mask = targets != pad_id if target_lens is None else lengths_to_mask(target_lens, u)
    if prompt_lens is not None:
        # targets[i] predicts token i + 1, so targets 0 .. prompt_len - 2 are prompt tokens.
        positions = torch.arange(u, device=targets.device)
        mask = mask & (positions[None, :] >= (prompt_lens[:, None] - 1))
    return mask


def distillation_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    student_states: Tensor,
    teacher_states: Tensor,
    *,
    temperature: float = 1.0,
) -> tuple[Tensor, Tensor]:
    """Distillation terms summed over N target positions: (kl_sum, l2_sum).

    student_logits, teacher_logits: (N, V) at the positions a loss counts (select them first, e.g. with
    :func:`counted_targets`: the (B, U, V) tensors need not exist twice); student_states, teacher_states:
    (N, D) final decoder states (``TransformerDecoder.features``).

    kl: KL(teacher || student) of the token distributions softened by ``temperature``, times τ² so its
    gradients keep their size as τ changes (Hinton et al.); l2: the mean over D of the squared state
    difference (FUTO's whisper-acft matches decoder states this way). Both are sums over positions, to be
    divided by the step's token count like the cross-entropy.
    """
    if student_logits.shape != teacher_logits.shape or student_states.shape != teacher_states.shape:
        raise ValueError(
            f"student and teacher disagree: logits {tuple(student_logits.shape)} vs "
            f"{tuple(teacher_logits.shape)}, states {tuple(student_states.shape)} vs "
            f"{tuple(teacher_states.shape)}"
        )
    tau = float(temperature)
    log_p_student = F.log_softmax(student_logits.float() / tau, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits.float() / tau, dim=-1)
    kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(-1) * tau * tau  # (N,)
    l2 = (student_states.float() - teacher_states.float()).pow(2).mean(-1)  # (N,)
    return kl.sum(), l2.sum()


def ctc_loss(
    log_probs: Tensor,
    log_prob_lens: Tensor,
    targets: Tensor,
    target_lens: Tensor,
    *,
    blank_id: int = PAD_ID,
    reduction: Reduction = "mean",
) -> tuple[Tensor, Tensor]:
    """CTC loss of an encoder head, normalised per target token.

    log_probs: (B, T', V) log-softmax outputs (from ``EncoderDecoderModel.ctc_log_probs``).
    log_prob_lens: (B,) valid encoder frames. targets: (B, S) token ids (transcript only, no prompt);
    target_lens: (B,) valid targets. blank_id: the blank class; the pad id never occurs in a target.

    Impossible alignments (target longer than the input allows) contribute zero instead of infinity.
    Returns (loss, num_tokens).
    """
    per_utt = F.ctc_loss(
        log_probs.float().transpose(0, 1),  # (T', B, V): the layout F.ctc_loss expects
        targets,
        log_prob_lens,
        target_lens,
        blank=blank_id,
        reduction="none",
        zero_infinity=True,
    )  # (B,)
    return _reduce(per_utt, torch.ones_like(per_utt, dtype=torch.bool), reduction, counts=target_lens)


def _reduce(
    values: Tensor, mask: Tensor, reduction: Reduction, counts: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    total = torch.where(mask, values, 0.0).sum()  # where, not *: 0 · inf would be NaN
    num_tokens = mask.sum() if counts is None else counts.sum()
    if reduction == "sum":
        return total, num_tokens
    if reduction != "mean":
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    return total / num_tokens.clamp(min=1), num_tokens
