"""The CPU meter where the traces of one shape at B = 2 and 3 do not align event for event (a kernel's
scratch buffer at one B only, a per-utterance loop): a trial at a large B is still extrapolated from those
two traces, never a real step under the profiler (issue 29, item 13: `make demo`'s batch-size stage ran
real profiled steps at B = 361 for 35+ minutes and 12 GB), and equals a real step at a B above 3.

The misaligned step is the real ``test``-preset step with two additions: B tensors of 16 KiB alive through
the step (a per-utterance loop), and at B = 2 only two 40 KiB scratch buffers freed before it (a kernel
that takes a workspace at one batch size)."""

import numpy as np
import pytest
import torch

from fastaed.model import build_model
from fastaed.train.profile.cpu_meter import CpuMeter, Trace, align
from fastaed.train.profile.memory import Shape, SyntheticStep

LOOP_BYTES, SCRATCH_BYTES = 16 << 10, 40 << 10


class MisalignedStep(SyntheticStep):
    """The trainer's step with allocations whose number depends on B (see the module docstring)."""

    def __call__(self, batch):
        b = batch.audio.shape[0]
        per_utterance = [torch.ones(LOOP_BYTES // 4) for _ in range(b)]
        if b == 2:
            scratch = [torch.ones(SCRATCH_BYTES // 4) for _ in range(2)]
            del scratch
        super().__call__(batch)
        del per_utterance


@pytest.fixture(scope="module")
def meter():
    torch.manual_seed(0)
    step = MisalignedStep(build_model("test", vocab_size=64), "cpu")
    step.warm_up(Shape(0.5, 8))
    return CpuMeter(step)


def test_misaligned_traces_never_run_a_real_step_at_a_large_batch(meter):
    shape = Shape(1.5, 20)
    lo, hi = meter.trace(2, shape), meter.trace(3, shape)
    assert len(lo.sums) != len(hi.sums)  # the case this test is about: the traces do not align
    before = meter.trials
    huge = meter.measure(512, shape)  # before 2026-12: a real step under the profiler
    assert huge.extrapolated and meter.trials - before == 2  # the two small traces, nothing else
    assert meter.unmatched[shape] > 0
    big = meter.measure(256, shape)
    assert big.extrapolated and meter.trials - before == 2  # the line is reused for the shape
    assert huge.peak_bytes > big.peak_bytes > meter.measure(3, shape).peak_bytes


@pytest.mark.parametrize("batch_size", [5, 8])
def test_misaligned_extrapolation_equals_a_real_step(meter, batch_size):
    """The loop's B tensors are counted exactly; the scratch (charged at its size where it happens, the
    start of the step) is not where the peak is."""
    shape = Shape(2.0, 24)
    extrapolated = meter.measure(batch_size, shape)
    assert extrapolated.extrapolated
    assert extrapolated.peak_bytes == meter.peak(batch_size, shape)


def trace(deltas, keys):
    return Trace(np.cumsum(np.array(deltas, dtype=np.int64)), keys)


@pytest.mark.parametrize("scratch", [False, True])
def test_align_counts_a_loop_exactly_and_a_scratch_buffer_at_its_size(scratch):
    """Hand-made traces: an allocation of 10 per utterance; a loop that allocates 5 per utterance, then 1,
    then frees it all; with ``scratch``, 70 bytes at B = 2 only (a kernel's workspace) before the frees."""

    def step(b):
        extra = scratch and b == 2
        deltas = [10 * b, *([5] * b), 1, *([70, -70] if extra else []), *([-5] * b), -(10 * b) - 1]
        keys = ["a+", *(["loop+"] * b), "b+", *(["s+", "s-"] if extra else []), *(["loop-"] * b), "a-"]
        return trace(deltas, keys)

    line = align(step(2), step(3), 2, 3)
    assert line.unmatched == 2 + 2 * scratch  # a loop allocation and free at B = 3, the scratch at 2
    for b in (3, 10, 100):
        assert line.peak(b) == 10 * b + 5 * b + 1 + 70 * scratch  # the scratch: never left out


def test_aligned_traces_extrapolate_exactly():
    line = align(trace([20, 6, -6, -20], list("ab-c")), trace([30, 6, -6, -30], list("ab-c")), 2, 3)
    assert line.unmatched == 0 and line.u_lo is None  # the exact case, as before
    assert [line.peak(b) for b in (4, 50)] == [46, 506]


def test_a_profile_over_misaligned_traces_costs_two_small_steps_per_shape():
    """The cost of a profile does not grow with the batch sizes it finds: every profiled step is at B <= 3,
    two per bucket shape besides the probes' (B = 1, 2), with batch sizes in the hundreds."""
    from fastaed.sampling.bins import Bins
    from fastaed.train.profile import ProfileIdentity, ProfileSettings, make_profile

    torch.manual_seed(0)
    step = MisalignedStep(build_model("test", vocab_size=64), "cpu")
    meter = CpuMeter(step)
    traced = []
    trace = meter.trace
    meter.trace = lambda b, shape: traced.append(b) or trace(b, shape)
    bins = Bins(duration_edges=[0.5, 1.0], max_u=[[8, 12], [10, 14]], max_tps=None)
    identity = ProfileIdentity.for_run(step.model.config, "cpu", "fp32", None)
    profile = make_profile(meter, bins, identity, ProfileSettings(budget_bytes=1 << 30), progress=False)
    assert min(profile.batch_sizes) >= 100 and all(b.fill >= 0.9 for b in profile.buckets)
    assert max(traced) <= 3
    assert len(traced) <= 2 * 2 * bins.num_buckets + 2  # both line points of every probe and bucket shape
    assert all(n > 0 for n in meter.unmatched.values())  # every shape took the misaligned path
    assert profile.meta["cpu_misaligned_shapes"] == len(meter.unmatched)  # recorded in the profile
