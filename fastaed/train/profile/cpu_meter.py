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
B = 8 for tiny-flash at 4 s). Tested against real steps.

**Traces that do not align.** Some kernels allocate differently at another B: a oneDNN convolution backward
in tiny-flash's step (the demo's recipe and shapes) takes a 10 KiB scratch buffer at B = 2 and none at B =
3; a per-utterance loop allocates B times. Until 2026-12 such a shape made every trial a real step under the
profiler, at B = 361 for the demo's short buckets: 35+ minutes and 12 GB resident for a stage meant to take
minutes. Now the two traces are aligned by what each event is (:func:`align`: the op begun last before it,
and the sign; common prefix and suffix first, ``difflib`` on the rest). A pair counts only where it can be
one allocation at two batch sizes (same sign, ``|lo| ≤ |hi| ≤ |lo|·hi/lo``: ``s + B·p`` bytes with
``s, p ≥ 0``), and the matched events' own running sum is ``s_i + B·p_i`` as above. What only one trace has
(a scratch buffer, a loop's extra iteration) is charged on the safe side: bytes that only B = 2 holds as if
every B held them, bytes that only B = 3 holds as if they grew with B (``(B − 2)·x``, a loop's growth, exact
for it); both for the unmatched bytes still alive at each matched event and for how far the unmatched events
between two matched ones rise above the first. Two traces count as aligned (the exact case above) only where
every event has the same key and such a pair of sizes: equal lengths and signs alone can pair a scratch
buffer with another allocation. So a scratch buffer counts at its size, and no trial above B = 3 runs a real
step, whatever the traces: a profile costs two small steps per shape. ``CpuMeter.unmatched`` records how
many events each shape could not match (0 where the traces align event for event).

Checked independently by ``tests/profile`` against the growth of the process's resident memory
(``rss.py``).
"""

from __future__ import annotations

import difflib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

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


@dataclass
class Trace:
    """One profiled step: the running sum of its CPU allocator events (:func:`allocation_trace`) and what
    each event is (``keys``: the op begun last before it, and the sign), for :func:`align`."""

    sums: np.ndarray  # (events,) int64 bytes allocated by the step and still alive after each event
    keys: list[str]


def _traced(fn: Callable[[], object]) -> Trace:
    prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True)
    with _quiet_stderr():
        prof.start()
    try:
        fn()
    finally:
        with _quiet_stderr():
            prof.stop()
    assert prof.profiler is not None
    events = prof.profiler.kineto_results.events()
    prof.profiler = None  # the profiler's own reference cycles held ~60 MB per step until a full collection
    names = [e.name() for e in events]
    starts = np.fromiter((e.start_ns() for e in events), dtype=np.int64, count=len(events))
    is_memory = np.array([n == "[memory]" for n in names], dtype=bool)
    memory, ops = np.flatnonzero(is_memory), np.flatnonzero(~is_memory)
    memory = memory[np.argsort(starts[memory], kind="stable")]  # events of one time keep their order
    ops = ops[np.argsort(starts[ops], kind="stable")]
    sizes = np.fromiter((events[i].nbytes() for i in memory), dtype=np.int64, count=len(memory))
    # What an event is: the op begun last before it (the allocating op, or one it calls), and its sign.
    last = np.searchsorted(starts[ops], starts[memory], side="right") - 1
    op_names = [names[ops[k]] if k >= 0 else "" for k in last.tolist()]
    keys = [f"{n}{'+' if b > 0 else '-'}" for n, b in zip(op_names, sizes.tolist())]
    return Trace(np.cumsum(sizes), keys)


def allocation_trace(fn: Callable[[], object]) -> np.ndarray:
    """Run ``fn`` under the memory profiler; (events,) int64: bytes allocated by ``fn`` and still alive
    after each CPU allocator event. Frees of memory allocated before ``fn`` are not reported by the
    allocator (it did not see their allocation), so the sum starts at 0 and counts only ``fn``'s memory."""
    return _traced(fn).sums


def _matches(lo: Sequence[str], hi: Sequence[str]) -> list[tuple[int, int]]:
    """Index pairs of events with equal keys, in order: the common prefix and suffix, ``difflib`` between."""
    n = min(len(lo), len(hi))
    head = 0
    while head < n and lo[head] == hi[head]:
        head += 1
    tail = 0
    while tail < n - head and lo[len(lo) - 1 - tail] == hi[len(hi) - 1 - tail]:
        tail += 1
    pairs = [(i, i) for i in range(head)]
    mid = difflib.SequenceMatcher(None, lo[head : len(lo) - tail], hi[head : len(hi) - tail], autojunk=False)
    for a, b, size in mid.get_matching_blocks():
        pairs += [(head + a + k, head + b + k) for k in range(size)]
    pairs += [(len(lo) - tail + k, len(hi) - tail + k) for k in range(tail)]
    return pairs


def _charge(x_lo: np.ndarray, x_hi: np.ndarray, lo: int, hi: int, batch_size: int) -> np.ndarray:
    """Bytes seen in one trace only, charged at ``batch_size`` >= hi: what only B = lo holds as if every
    B held it, what only B = hi holds as if it grew with B (one more per utterance, a loop's); both >= 0."""
    return np.maximum(x_lo, 0) + np.maximum(x_hi, 0) * (batch_size - lo) // (hi - lo)


@dataclass(frozen=True)
class Line:
    """The running sum of a step at any B (see the module docstring). At the matched events: ``s + B·p``
    from the matched events' own bytes, plus the unmatched bytes still alive there (``u_lo`` at B = lo,
    ``u_hi`` at B = hi, :func:`_charge`); after matched event ``rise_at`` (-1: the step's start) the
    unmatched events rise ``x_lo`` and ``x_hi`` above it. Traces that align event for event: ``s + B·p``."""

    s: np.ndarray
    p: np.ndarray
    lo: int
    hi: int
    u_lo: np.ndarray | None = None
    u_hi: np.ndarray | None = None
    rise_at: np.ndarray | None = None
    x_lo: np.ndarray | None = None
    x_hi: np.ndarray | None = None
    unmatched: int = 0  # events of either trace left out of the pairs

    def peak(self, batch_size: int) -> int:
        """The maximum running sum at ``batch_size`` (0 when the step allocates nothing)."""
        sums = self.s + batch_size * self.p
        if self.u_lo is None:
            return int(sums.max(initial=0))
        assert self.u_hi is not None and self.rise_at is not None
        assert self.x_lo is not None and self.x_hi is not None
        sums = sums + _charge(self.u_lo, self.u_hi, self.lo, self.hi, batch_size)
        base = np.where(self.rise_at >= 0, sums[np.maximum(self.rise_at, 0)], 0) if len(sums) else 0
        rises = base + _charge(self.x_lo, self.x_hi, self.lo, self.hi, batch_size)
        return max(int(sums.max(initial=0)), int(rises.max(initial=0)))


def align(lo: Trace, hi: Trace, b_lo: int, b_hi: int) -> Line:
    """The line through two traces of one shape at batch sizes ``b_lo`` < ``b_hi`` (module docstring)."""
    d_lo, d_hi = np.diff(lo.sums, prepend=0), np.diff(hi.sums, prepend=0)

    def plausible(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Events ``a`` at B = lo and ``b`` at B = hi can be one allocation (or free) ``s + B·p``,
        s, p >= 0: same sign, |a| <= |b| <= |a|·hi/lo."""
        return (np.sign(a) == np.sign(b)) & (np.abs(a) <= np.abs(b)) & (np.abs(b) * b_lo <= np.abs(a) * b_hi)

    if lo.keys == hi.keys and len(lo.sums) == len(hi.sums) and plausible(d_lo, d_hi).all():
        per = (hi.sums - lo.sums) // (b_hi - b_lo)
        if np.array_equal(lo.sums + (b_hi - b_lo) * per, hi.sums):  # integral slopes: affine in B
            return Line(lo.sums - b_lo * per, per, b_lo, b_hi)
    pairs = np.array(_matches(lo.keys, hi.keys), dtype=np.int64).reshape(-1, 2)
    pairs = pairs[plausible(d_lo[pairs[:, 0]], d_hi[pairs[:, 1]])]
    i_m, j_m = pairs[:, 0], pairs[:, 1]

    def split(sums: np.ndarray, deltas: np.ndarray, matched: np.ndarray) -> tuple[np.ndarray, ...]:
        """At the matched events: the matched events' running sum, the unmatched bytes alive; per gap
        (before the first match, between matches, after the last) the unmatched rise above the match
        before (0 where they do not rise)."""
        own = np.zeros_like(deltas)
        own[matched] = deltas[matched]
        mine = np.cumsum(own)[matched]
        rise = np.zeros(len(matched) + 1, dtype=np.int64)
        bounds = np.concatenate([[-1], matched, [len(sums)]])
        for g in range(len(bounds) - 1):
            start, stop = bounds[g] + 1, bounds[g + 1]
            if stop > start:
                base = sums[bounds[g]] if bounds[g] >= 0 else 0
                rise[g] = max(0, int(sums[start:stop].max()) - int(base))
        return mine, sums[matched] - mine, rise

    m_lo, u_lo, x_lo = split(lo.sums, d_lo, i_m)
    m_hi, u_hi, x_hi = split(hi.sums, d_hi, j_m)
    per = (m_hi - m_lo) // (b_hi - b_lo)
    keep = np.flatnonzero((x_lo > 0) | (x_hi > 0))
    unmatched = len(lo.sums) + len(hi.sums) - 2 * len(pairs)
    return Line(m_lo - b_lo * per, per, b_lo, b_hi, u_lo, u_hi, keep - 1, x_lo[keep], x_hi[keep], unmatched)


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
        self._lines: dict[Shape, Line] = {}

    @property
    def unmatched(self) -> dict[Shape, int]:
        """Per shape traced so far: the events its two traces could not match (0: aligned event for event)."""
        return {shape: line.unmatched for shape, line in self._lines.items()}

    def trace(self, batch_size: int, shape: Shape) -> Trace:
        """The trace (:func:`allocation_trace`, with each event's key) of one real step, batch included."""
        self.trials += 1
        step = self.step
        return _traced(lambda: step(step.batch(batch_size, shape)))

    def peak(self, batch_size: int, shape: Shape) -> int:
        """Peak bytes of one real step: resident + the maximum of its trace (+ ``extra_bytes``)."""
        trace = self.trace(batch_size, shape).sums
        return self._total(int(trace.max(initial=0)))

    def _total(self, transient: int) -> int:
        return resident_bytes(self.step) + max(0, transient) + self.extra_bytes

    def _line(self, shape: Shape) -> Line:
        """The line through this shape's traces at B = 2 and 3 (:func:`align`)."""
        if shape not in self._lines:
            lo, hi = CPU_LINE_POINTS
            self._lines[shape] = align(self.trace(lo, shape), self.trace(hi, shape), lo, hi)
        return self._lines[shape]

    def measure(self, batch_size: int, shape: Shape) -> Measurement:
        t0 = time.perf_counter()
        if batch_size > CPU_LINE_POINTS[1]:  # never a real step at a large B: from the two small traces
            peak, extrapolated = self._total(self._line(shape).peak(batch_size)), True
        else:
            peak, extrapolated = self.peak(batch_size, shape), False
        return Measurement(
            batch_size, shape, peak, seconds=time.perf_counter() - t0, extrapolated=extrapolated
        )
