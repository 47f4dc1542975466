"""Learning-rate schedules as a plain function of the step: nothing to checkpoint, nothing to drift on resume.

``step`` is the number of optimizer steps already taken (0 for the first update). All schedules share a
linear warmup over ``warmup_steps`` that reaches the peak ``lr`` on step ``warmup_steps - 1``; afterwards:

- ``inverse_sqrt`` (Transformer/Noam, as in NeMo's Canary recipes): lr · sqrt(warmup / (step + 1)), floored
  at ``min_lr``; it needs no run length, so a time-budgeted run can stop anywhere;
- ``cosine``: half a cosine from lr down to ``min_lr`` at ``max_steps``;
- ``constant``: lr.
"""

from __future__ import annotations

import math

from fastaed.train.config import OptimConfig


def lr_at(step: int, cfg: OptimConfig) -> float:
    """Learning rate for the update that follows ``step`` completed optimizer steps."""
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    n = step + 1  # 1-based count of the update being made
    warmup = cfg.warmup_steps
    if n <= warmup:
        return cfg.lr * n / warmup
    if cfg.schedule == "constant":
        return cfg.lr
    if cfg.schedule == "inverse_sqrt":
        return max(cfg.min_lr, cfg.lr * math.sqrt(max(warmup, 1) / n))
    if cfg.schedule == "cosine":
        span = max(cfg.max_steps - warmup, 1)
        progress = min((n - warmup) / span, 1.0)
        return cfg.min_lr + (cfg.lr - cfg.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown schedule {cfg.schedule!r}")
