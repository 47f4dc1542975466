"""Length limits: what makes one utterance untrainable whatever the bins, checked before bins are estimated
and before utterances are assigned, so a single bad line is rejected with a reason instead of stopping a job.

Reasons, in the order they are checked (the first that applies wins):

- ``invalid``: duration not positive or not finite, or U < 0;
- ``too_short``: the encoder would get fewer than ``min_encoder_frames`` frames (a lone 1-frame utterance
  crashes the conformer's BatchNorm, and exact resume would replay the crash);
- ``too_long``: longer than the encoder can take (``max_input_s``: Whisper's 1,500 positions hold 30 s);
- ``tokens_exceed_frames``: more transcript tokens (U minus the prompt and EOS) than
  ``max_tokens_per_frame`` × the clip's encoder frames: an absolute guard against a mislabelled line, which
  the per-bin TPS z-score misses in a small bin;
- ``over_budget``: a batch of one would exceed the per-batch budget (``max_duration`` with the quadratic term,
  or ``max_tokens``), e.g. a 61 s clip under a 60 s budget or a duration mistyped as 1e9.

The limits are plain numbers, so the sampler stays model-agnostic: the trainer derives
``encoder_frame_samples`` from the hop and the model's subsampling. A clip of n samples gives
``n // encoder_frame_samples + 1`` encoder frames: features have ``n // hop + 1`` frames (centred STFT) and
each stride-2 stage of kernel 3, padding 1 maps L to ceil(L / 2), so f = 2^s stages give
``(n // hop) // f + 1``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fastaed.constants import SAMPLE_RATE

LIMIT_REASONS = ("invalid", "too_short", "too_long", "tokens_exceed_frames", "over_budget")


def duration_cost(durations: np.ndarray, quadratic_duration: float | None) -> np.ndarray:
    """(N,) float64 seconds one example costs in a ``max_duration`` budget: d, or NeMo's d + d²/q."""
    d = np.asarray(durations, dtype=np.float64)
    return d + d**2 / quadratic_duration if quadratic_duration else d


@dataclass(frozen=True)
class LengthLimits:
    """Per-utterance limits; the defaults check only ``invalid`` (every other limit is off).

    encoder_frame_samples: audio samples per encoder frame (hop × subsampling, 1280 at 10 ms × 8); None turns
        off ``too_short`` and ``tokens_exceed_frames``.
    min_encoder_frames: fewest encoder frames an utterance may give.
    non_text_tokens: tokens of U that are not transcript (prompt + EOS).
    max_tokens_per_frame: transcript tokens allowed per encoder frame (1.0: CTC's own feasibility bound).
    max_duration / quadratic_duration / max_tokens: the per-batch budget (see ``budget.py``); None: no cap.
    sample_rate: Hz, to turn durations into samples.
    """

    encoder_frame_samples: int | None = None
    min_encoder_frames: int = 2
    non_text_tokens: int = 0
    max_tokens_per_frame: float = 1.0
    max_duration: float | None = None
    quadratic_duration: float | None = None
    max_tokens: int | None = None
    sample_rate: int = SAMPLE_RATE
    max_input_s: float | None = None  # the encoder's longest input (s); None: no limit

    def __post_init__(self) -> None:
        if self.encoder_frame_samples is not None and self.encoder_frame_samples < 1:
            raise ValueError(f"encoder_frame_samples must be >= 1, got {self.encoder_frame_samples}")
        if self.min_encoder_frames < 1 or self.non_text_tokens < 0 or not self.max_tokens_per_frame > 0:
            raise ValueError(
                f"need min_encoder_frames >= 1, non_text_tokens >= 0, max_tokens_per_frame > 0: {self}"
            )

    @property
    def min_duration(self) -> float:
        """Shortest duration (s) giving ``min_encoder_frames`` frames (0.0 when frames are not checked)."""
        if self.encoder_frame_samples is None:
            return 0.0
        return (self.min_encoder_frames - 1) * self.encoder_frame_samples / self.sample_rate

    def encoder_frames(self, durations: np.ndarray) -> np.ndarray:
        """(N,) int64 encoder frames of clips of the given durations (s); needs ``encoder_frame_samples``."""
        if self.encoder_frame_samples is None:
            raise ValueError("encoder_frames needs encoder_frame_samples")
        samples = np.rint(np.asarray(durations, dtype=np.float64) * self.sample_rate).astype(np.int64)
        return samples // self.encoder_frame_samples + 1

    def violations(self, durations: np.ndarray, out_lengths: np.ndarray) -> dict[str, np.ndarray]:
        """Disjoint (N,) bool masks, one per reason of ``LIMIT_REASONS`` (the first that applies wins).

        durations: (N,) seconds, compared as float32 (as the bins compare them); out_lengths: (N,) int U.
        """
        d = np.asarray(durations, dtype=np.float32).reshape(-1)
        u = np.asarray(out_lengths).reshape(-1).astype(np.int64)
        n = len(d)
        left = np.isfinite(d) & (d > 0) & (u >= 0)  # not yet rejected
        masks = {"invalid": ~left}
        if self.encoder_frame_samples is not None:
            frames = np.where(left, self.encoder_frames(np.where(left, d, 0)), 0)
            masks["too_short"] = left & (frames < self.min_encoder_frames)
            left &= ~masks["too_short"]
        if self.max_input_s is not None:
            masks["too_long"] = left & (d > self.max_input_s)
            left &= ~masks["too_long"]
        if self.encoder_frame_samples is not None:
            text = u - self.non_text_tokens
            masks["tokens_exceed_frames"] = left & (text > self.max_tokens_per_frame * frames)
            left &= ~masks["tokens_exceed_frames"]
        over = np.zeros(n, dtype=bool)
        if self.max_duration is not None:
            # Same float64 cost as batch_sizes_from_budget, which gives B >= 1 exactly when cost <= budget.
            over |= duration_cost(np.where(left, d, 0), self.quadratic_duration) > self.max_duration
        if self.max_tokens is not None:
            over |= u > self.max_tokens
        masks["over_budget"] = left & over
        return {r: masks.get(r, np.zeros(n, dtype=bool)) for r in LIMIT_REASONS}

    def admissible(self, durations: np.ndarray, out_lengths: np.ndarray) -> np.ndarray:
        """(N,) bool: the utterances no limit rejects."""
        masks = self.violations(durations, out_lengths)
        return ~np.logical_or.reduce(list(masks.values()))
