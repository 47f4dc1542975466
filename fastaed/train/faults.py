"""Faults a long run must survive: out-of-memory batches, non-finite losses, and injected faults for tests.

**OOM split.** A CUDA out-of-memory error in a piece's forward or backward frees what it can, splits that
piece into two halves and carries on, recursively, down to single utterances (an OOM on one utterance is
re-raised with a message naming it). Nothing is dropped and the effective batch is unchanged: the caller
normalises every piece's summed loss by the token count of the *whole* batch, so the gradients of the pieces
add up to the full batch's per-token gradient. Where the OOM happened decides what is redone:

- in forward, no gradient has been touched: only the failing piece is split and retried;
- in backward, some gradients of the failing piece may already be accumulated: the gradients are zeroed and
  every piece of the step is run again (rare, and the only exact option without a gradient copy).

cuFFT raises "internal error" instead of an OOM when the STFT of a large batch cannot get its workspace, so
that counts as an OOM too. Batch norm in training mode normalises with per-piece statistics, so a split
batch's gradient differs slightly from the unsplit one, as with any gradient accumulation; with the model in
eval mode the two agree to float tolerance (tested). Under data parallelism each rank recovers on its own:
gradients are summed over ranks only once every piece of the step has succeeded (see ``distributed.py``).

**Bad input.** The dataset runs with ``on_bad_input="skip"`` inside the DataLoader workers and
:class:`CollateWithFirstError` hands the first error of each batch to the main process, which applies the
configured policy: under ``error`` it raises that very :class:`BadInputError` (file, line, field), not a
worker traceback wrapped in a RuntimeError; under ``skip`` the batch's counted skips are summed.

**Non-finite loss.** The step is skipped (gradients zeroed, no update) and counted; after ``max_nonfinite``
consecutive skips training stops with :class:`NonFiniteLossError`.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch

from fastaed.constants import SAMPLE_RATE
from fastaed.data.dataset import AEDDataset, Batch, Example, Skipped
from fastaed.data.errors import BadInputError
from fastaed.train.config import DebugConfig

R = TypeVar("R")
OOM_MARKERS = ("out of memory", "CUFFT_INTERNAL_ERROR", "cuFFT error: CUFFT_ALLOC_FAILED")


class UtteranceOOMError(RuntimeError):
    """Out of memory on a single utterance: splitting cannot help."""


class NonFiniteLossError(RuntimeError):
    """Too many consecutive steps with a non-finite loss or gradient."""


def is_oom(err: BaseException) -> bool:
    """True for a CUDA out-of-memory error (or cuFFT's way of saying the same)."""
    if isinstance(err, torch.OutOfMemoryError):
        return True
    return isinstance(err, RuntimeError) and any(m in str(err) for m in OOM_MARKERS)


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def split_batch(batch: Batch) -> tuple[Batch, Batch]:
    """Two halves of a batch (first half the larger), each trimmed to its own longest audio/feats/tokens."""
    if len(batch) < 2:
        raise ValueError("cannot split a batch of fewer than 2 utterances")
    half = (len(batch) + 1) // 2
    return _rows(batch, slice(0, half), keep_report=True), _rows(batch, slice(half, len(batch)), False)


def _rows(batch: Batch, rows: slice, keep_report: bool) -> Batch:
    audio_lens, token_lens = batch.audio_lens[rows], batch.token_lens[rows]
    part = Batch(
        indices=batch.indices[rows],
        audio=batch.audio[rows, : int(audio_lens.max())],
        audio_lens=audio_lens,
        tokens=batch.tokens[rows, : int(token_lens.max())],
        token_lens=token_lens,
        prompt_lens=batch.prompt_lens[rows],
        pad_id=batch.pad_id,
    )
    if batch.feats is not None and batch.feat_lens is not None:
        # Padded frames are zero and the model is padding-invariant, so trimming changes nothing.
        part.feat_lens = batch.feat_lens[rows]
        part.feats = batch.feats[rows, : int(part.feat_lens.max())]
    if keep_report:  # skips were counted once for the batch; do not count them per half
        part.bad_input = batch.bad_input
    return part


def describe_batch(batch: Batch) -> str:
    """ "#index (seconds, U=...)" for every utterance of a batch (for error messages)."""
    seconds = batch.audio_lens.double().div(SAMPLE_RATE).tolist()
    items = ", ".join(
        f"#{i} ({s:.2f} s, U={int(u)})" for i, s, u in zip(batch.indices, seconds, batch.token_lens)
    )
    return items or "(empty batch)"


def accumulate_with_oom_split(
    pieces: Sequence[Batch],
    forward: Callable[[Batch], tuple[torch.Tensor, R]],
    *,
    zero_grad: Callable[[], None],
    backward: Callable[[torch.Tensor, Batch], None] | None = None,
) -> tuple[list[R], int]:
    """Run ``forward`` then backward over every piece, splitting pieces that run out of memory.

    forward(piece) -> (loss to differentiate, anything to keep, e.g. detached loss parts);
    backward(loss, piece) defaults to ``loss.backward()``.
    Returns (what forward kept for each final piece, number of splits).
    """
    run_backward = backward or (lambda loss, _piece: loss.backward())
    pending = list(pieces)
    kept: list[R] = []
    splits = 0
    i = 0
    while i < len(pending):
        piece = pending[i]
        phase, message = "forward", ""
        try:
            loss, result = forward(piece)
            phase = "backward"
            run_backward(loss, piece)
            phase = "done"
        except Exception as err:
            if not is_oom(err):
                raise
            message = str(err).splitlines()[0] if str(err) else type(err).__name__
        if phase == "done":
            kept.append(result)
            i += 1
            continue
        # Outside the except block: the traceback (and the activations its frames hold) is gone by now.
        loss = result = None  # noqa: F841 (drop the last references before freeing)
        free_memory()
        if len(piece) <= 1:
            raise UtteranceOOMError(
                f"out of memory on a single utterance, {describe_batch(piece)}, in {phase}: {message}. "
                "Lower sampler.max_duration / the profile's batch sizes, or drop utterances this long."
            )
        pending[i : i + 1] = split_batch(piece)
        splits += 1
        if phase == "backward":
            zero_grad()
            kept.clear()
            i = 0
    return kept, splits


class CollateWithFirstError:
    """Collate for a skip-mode dataset: ``(batch, first BadInputError or None)`` (picklable for workers)."""

    def __init__(self, dataset: AEDDataset):
        if dataset.on_bad_input != "skip":
            raise ValueError("CollateWithFirstError needs a dataset built with on_bad_input='skip'")
        self.dataset = dataset

    def __call__(self, items: list[Example | Skipped]) -> tuple[Batch, BadInputError | None]:
        first = next((item.error for item in items if isinstance(item, Skipped)), None)
        return self.dataset.collate(items), first


def apply_bad_input_policy(policy: str, error: BadInputError | None) -> None:
    """Raise ``error`` under the ``error`` policy; under ``skip`` the batch's report already counted it."""
    if error is not None and policy == "error":
        raise error


class NonFiniteGuard:
    """Counts skipped non-finite steps; raises after ``max_consecutive`` in a row."""

    def __init__(self, max_consecutive: int):
        self.max_consecutive = max_consecutive
        self.consecutive = 0
        self.skipped = 0

    def check(self, finite: bool, step: int, detail: str = "") -> bool:
        """True if step ``step`` may update the weights; counts (and maybe raises) when it may not."""
        if finite:
            self.consecutive = 0
            return True
        self.consecutive += 1
        self.skipped += 1
        if self.consecutive >= self.max_consecutive:
            first = step - self.consecutive + 1
            raise NonFiniteLossError(
                f"{self.consecutive} consecutive steps with a non-finite loss or gradient "
                f"(steps {first}..{step}{'; ' + detail if detail else ''}). These steps did not update the "
                "weights. Lower optim.lr or raise optim.warmup_steps, check the batches (metrics.jsonl has "
                "their index hashes), or raise runtime.max_nonfinite."
            )
        return False

    def state_dict(self) -> dict[str, int]:
        return {"consecutive": self.consecutive, "skipped": self.skipped}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.consecutive, self.skipped = int(state["consecutive"]), int(state["skipped"])


class FaultInjector:
    """Debug-config hooks that fake a CUDA OOM or a NaN loss, so the recovery paths run on CPU."""

    def __init__(self, cfg: DebugConfig):
        self.cfg = cfg
        self.nan_steps = frozenset(cfg.nan_loss_steps)

    def _too_big(self, piece: Batch, phase: str) -> bool:
        k = self.cfg.oom_above_batch_size
        return k is not None and self.cfg.oom_phase == phase and len(piece) > k

    def before_forward(self, piece: Batch) -> None:
        if self._too_big(piece, "forward"):
            raise torch.OutOfMemoryError(f"CUDA out of memory (injected: batch of {len(piece)} in forward)")

    def backward(self, loss: torch.Tensor, piece: Batch) -> None:
        loss.backward()
        if self._too_big(piece, "backward"):  # after the gradients landed: the worst case for recovery
            raise torch.OutOfMemoryError(f"CUDA out of memory (injected: batch of {len(piece)} in backward)")

    def poison(self, loss: torch.Tensor, step: int) -> torch.Tensor:
        return loss * math.nan if step in self.nan_steps else loss
