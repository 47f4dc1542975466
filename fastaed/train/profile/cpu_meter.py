"""The CPU meter: the peak of live bytes during one real training step, from the CPU allocator's own events.

On CPU nothing runs out of memory, so a trial cannot fail; it has to be measured. The torch profiler with
``profile_memory=True`` records every allocation and free of the CPU allocator (``[memory]`` events, +bytes
and −bytes, in the order they happen). Their running sum is the bytes allocated during the step and still
alive at each moment; its maximum, plus what was resident when the step began (weights, buffers, AdamW
state: the gradients were freed by the previous step), is the step's peak: the CPU analog of CUDA's
``max_memory_allocated``. (Until 2026-12 the meter instead summed every saved tensor, gradient and optimizer
state as if nothing were ever freed, which was off by −14% to +22% against this peak.)

**Extrapolation in B.** Every allocation of the step is either independent of B or proportional to it, and
for a fixed shape the step allocates and frees in the same order at every B. So the running sum at event i
is exactly ``s_i + B·p_i``, and two real steps (B = 2 and 3, :data:`CPU_LINE_POINTS`) give the whole curve:
``peak(B) = max_i (s_i + B·p_i)``. This is *not* a line through two peaks: which moment is the peak moves
with B (at small B the static gradients dominate, at large B the activations), so peak(B) is convex and
piecewise linear, and a line through peak(2) and peak(3) would underestimate every larger B (by 20% at
B = 8 for tiny-flash at 4 s). When the two traces do not align event for event (a kernel that allocates
differently at another B), the trial is a real step instead. Tested against real steps.

Checked independently by ``tests/profile`` against the growth of the process's resident memory
(``rss.py``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch

from fastaed.train.profile.memory import Measurement, Meter, Shape, SyntheticStep

CPU_LINE_POINTS = (2, 3)  # B > 3: from the event-by-event line through the traces of these two steps


@contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2: kineto prints two log lines at every profiler start and stop, which no
    log level turns off, and a profile runs hundreds of trials."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def allocation_trace(fn: Callable[[], object]) -> np.ndarray:
    """Run ``fn`` under the memory profiler; (events,) int64: bytes allocated by ``fn`` and still alive
    after each CPU allocator event. Frees of memory allocated before ``fn`` are not reported by the
    allocator (it did not see their allocation), so the sum starts at 0 and counts only ``fn``'s memory."""
    prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True)
    with _quiet_stderr():
        prof.start()
    try:
        fn()
    finally:
        with _quiet_stderr():
            prof.stop()
    assert prof.profiler is not None
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: e.start_ns())  # stable: events of one timestamp keep their recording order
    return np.cumsum(np.array([e.nbytes() for e in events], dtype=np.int64))


def resident_bytes(step: SyntheticStep) -> int:
    """Bytes alive between steps: distinct storages of the weights, buffers and optimizer state."""
    tensors = [*step.model.parameters(), *step.model.buffers(), *step.frontend.buffers()]
    tensors += [v for s in step.optimizer.state.values() for v in s.values() if isinstance(v, torch.Tensor)]
    tensors += [p.grad for p in step.params if p.grad is not None]  # none after update(); counted if any
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return sum(storages.values())


class CpuMeter(Meter):
    """Peak live bytes of real steps on CPU (see the module docstring); B > 3 from the traces at B = 2, 3."""

    device_name = "cpu"

    def __init__(self, step: SyntheticStep, extra_bytes: int = 0):
        super().__init__(step, extra_bytes)
        self._lines: dict[Shape, tuple[np.ndarray, np.ndarray] | None] = {}

    def trace(self, batch_size: int, shape: Shape) -> np.ndarray:
        """The allocation trace (:func:`allocation_trace`) of one real step, batch creation included."""
        self.trials += 1
        step = self.step
        return allocation_trace(lambda: step(step.batch(batch_size, shape)))

    def peak(self, batch_size: int, shape: Shape) -> int:
        """Peak bytes of one real step: resident + the maximum of its trace (+ ``extra_bytes``)."""
        trace = self.trace(batch_size, shape)
        return self._total(int(trace.max(initial=0)))

    def _total(self, transient: int) -> int:
        return resident_bytes(self.step) + max(0, transient) + self.extra_bytes

    def _line(self, shape: Shape) -> tuple[np.ndarray, np.ndarray] | None:
        """(s, p) with running sum s + B·p at every event, or None when the two traces do not align."""
        if shape not in self._lines:
            lo, hi = CPU_LINE_POINTS
            t_lo, t_hi = self.trace(lo, shape), self.trace(hi, shape)
            line = None
            # Aligned: same events, and each event's size changes by the same sign or not at all.
            if len(t_lo) == len(t_hi):
                d_lo, d_hi = np.diff(t_lo, prepend=0), np.diff(t_hi, prepend=0)
                if np.array_equal(np.sign(d_lo), np.sign(d_hi)):
                    per = (t_hi - t_lo) // (hi - lo)
                    if np.array_equal(t_lo + (hi - lo) * per, t_hi):  # integral slopes: affine in B
                        line = (t_lo - lo * per, per)
            self._lines[shape] = line
        return self._lines[shape]

    def measure(self, batch_size: int, shape: Shape) -> Measurement:
        t0 = time.perf_counter()
        line = self._line(shape) if batch_size > CPU_LINE_POINTS[1] else None
        if line is None:
            peak, extrapolated = self.peak(batch_size, shape), False
        else:
            static, per = line
            peak, extrapolated = self._total(int((static + batch_size * per).max(initial=0))), True
        return Measurement(
            batch_size, shape, peak, seconds=time.perf_counter() - t0, extrapolated=extrapolated
        )
