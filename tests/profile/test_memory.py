"""Memory model fit and prediction on synthetic measurements; the CPU meter's peak of live bytes of the
trainer's step (positive, deterministic, growing with B, T and U, extrapolated exactly from B = 2 and 3,
including where the peak is not linear in B); the probe plan. Its agreement with an independent
measurement (resident memory) is in ``test_cpu_meter_rss.py``."""

import numpy as np
import pytest
import torch

from fastaed.model import build_model
from fastaed.train.profile.cpu_meter import CpuMeter, resident_bytes
from fastaed.train.profile.memory import (
    Measurement,
    MemoryModel,
    Shape,
    SyntheticStep,
    fit_memory_model,
    probe_shapes,
)

TRUE_STATIC = 3.0e9
TRUE_COEF = (2.0e7, 3.0e5, 4.0e5, 150.0, 2.0e3)  # a T, b T², c U, d U², e T·U (bytes)


def true_bytes(b, t, u):
    a, bb, c, d, e = TRUE_COEF
    return TRUE_STATIC + b * (a * t + bb * t * t + c * u + d * u * u + e * t * u)


def synthetic_probes(noise: float = 0.0, seed: int = 0) -> list[Measurement]:
    rng = np.random.default_rng(seed)
    probes = []
    shapes = [(1.0, 10), (1.0, 30), (5.0, 40), (5.0, 90), (12.0, 100), (20.0, 150), (40.0, 200), (40.0, 480)]
    for t, u in shapes:
        for b in (2, 16):
            value = true_bytes(b, t, u) * (1 + noise * rng.standard_normal())
            probes.append(Measurement(b, Shape(t, u), int(value)))
    return probes


def test_fit_recovers_the_coefficients_of_exact_measurements():
    model = MemoryModel.fit(synthetic_probes())
    assert model.static == pytest.approx(TRUE_STATIC, rel=1e-6)
    assert model.coef == pytest.approx(TRUE_COEF, rel=1e-4)
    assert model.rms_rel_error < 1e-8


def test_prediction_and_largest_batch_on_unseen_shapes():
    model = MemoryModel.fit(synthetic_probes(noise=0.01))
    target = 70e9
    for t, u in [(3.0, 25), (17.5, 130), (33.0, 400)]:
        assert model.predict(8, t, u) == pytest.approx(true_bytes(8, t, u), rel=0.05)
        b = model.max_batch_size(t, u, target)
        exact = int((target - TRUE_STATIC) // (true_bytes(1, t, u) - TRUE_STATIC))
        assert abs(b - exact) <= max(1, 0.05 * exact)
    exact_model = MemoryModel.fit(synthetic_probes())
    b = exact_model.max_batch_size(40.0, 480, target)
    assert true_bytes(b, 40.0, 480) <= target < true_bytes(b + 1, 40.0, 480)


def test_fit_needs_enough_successful_probes():
    probes = synthetic_probes()[:5] + [Measurement(4, Shape(1.0, 10), None, oom=True)] * 3
    with pytest.raises(ValueError, match="probes"):
        MemoryModel.fit(probes)


def test_model_round_trips_through_a_dict():
    model = MemoryModel.fit(synthetic_probes())
    assert MemoryModel.from_dict(model.to_dict()) == model


def test_probe_plan_varies_t_and_u_even_for_one_row():
    plan = probe_shapes([Shape(4.0, 30)])
    assert len(plan) >= 6 and len({s.out_len for s in plan}) >= 6
    grid = [Shape(d, u) for d in (1.0, 2.0, 5.0, 10.0, 20.0) for u in (10 * d, 20 * d)]
    plan = probe_shapes(grid)
    assert max(plan) == Shape(20.0, 400) and min(s.duration for s in plan) == 1.0
    assert len({s.duration for s in plan}) >= 3 and len(plan) >= 6


@pytest.fixture(scope="module")
def meter():
    torch.manual_seed(0)
    step = SyntheticStep(build_model("test", vocab_size=64), "cpu")
    step.warm_up(Shape(0.5, 8))
    return CpuMeter(step)


def test_cpu_peak_is_positive_deterministic_and_grows(meter):
    shape = Shape(1.5, 20)
    first, again = meter.peak(2, shape), meter.peak(2, shape)
    assert first == again > 0
    assert meter.peak(3, shape) > first  # more utterances
    assert meter.peak(2, Shape(3.0, 20)) > first  # longer audio
    assert meter.peak(2, Shape(1.5, 60)) > first  # longer transcripts
    params = sum(p.numel() * p.element_size() for p in meter.step.params)
    assert resident_bytes(meter.step) >= 3 * params  # weights + two AdamW moments between steps
    # The peak adds the step's own memory (gradients, activations) on top of what is resident.
    assert first > resident_bytes(meter.step) + params


def test_cpu_peak_frees_memory_unlike_a_sum_of_everything_saved(meter):
    """The peak is below the sum of all bytes the step ever allocates (a meter that never frees)."""
    from fastaed.train.profile.cpu_meter import allocation_trace

    step = meter.step
    trace = allocation_trace(lambda: step(step.batch(4, Shape(2.0, 24))))
    allocated = np.diff(trace, prepend=0).clip(min=0).sum()
    assert trace[-1] == 0  # everything the step allocates is freed by its end (no leak between trials)
    assert trace.max() < 0.5 * allocated


@pytest.mark.parametrize(
    ("preset", "shape", "sizes"),
    [("test", Shape(2.0, 24), (4, 7, 12)), ("tiny-flash", Shape(4.0, 40), (5,))],
)
def test_cpu_extrapolation_equals_real_steps(preset, shape, sizes):
    """For tiny-flash at 4 s the peak moves from the gradients (small B) to the activations: peak(B) is
    convex, a line through peak(2) and peak(3) is ~10% short at B = 5; the event-by-event line is not."""
    torch.manual_seed(0)
    step = SyntheticStep(build_model(preset, vocab_size=64), "cpu")
    step.warm_up(Shape(0.5, 8))
    meter = CpuMeter(step)
    p2, p3 = meter.peak(2, shape), meter.peak(3, shape)
    for b in sizes:
        extrapolated = meter.measure(b, shape)
        assert extrapolated.extrapolated and extrapolated.peak_bytes == meter.peak(b, shape)
    if preset == "tiny-flash":
        assert meter.peak(5, shape) > 1.05 * (p2 + 3 * (p3 - p2))  # the naive line is far off here
    assert not meter.measure(3, shape).extrapolated


def test_extra_resident_bytes_are_added(meter):
    shape = Shape(1.0, 12)
    plain = meter.peak(2, shape)
    with_ddp = CpuMeter(meter.step, extra_bytes=1 << 20)
    assert with_ddp.peak(2, shape) == plain + (1 << 20)


def test_fit_on_real_cpu_peaks_predicts_unseen_buckets(meter):
    shapes = [Shape(d, u) for d in (0.5, 1.0, 2.0, 3.0) for u in (8, 20, 40)]
    target = 64 << 20
    model, probes = fit_memory_model(meter, shapes, target)
    assert len(probes) >= 7 and model.rms_rel_error < 0.02
    for shape in (Shape(1.5, 30), Shape(2.5, 12)):
        b = model.max_batch_size(shape.duration, shape.out_len, target)
        measured = meter.measure(b, shape).peak_bytes
        assert measured == pytest.approx(model.predict(b, shape.duration, shape.out_len), rel=0.03)


@pytest.mark.gpu
def test_cuda_meter_measures_and_fails_cleanly_when_out_of_memory():
    from fastaed.train.profile.memory import CudaMeter

    step = SyntheticStep(build_model("test", vocab_size=64), "cuda")
    step.warm_up(Shape(0.5, 8))
    meter = CudaMeter(step)
    ok = meter.measure(4, Shape(2.0, 24))
    assert not ok.oom and ok.peak_bytes > 0 and ok.reserved_bytes >= ok.peak_bytes
    huge = meter.measure(1 << 20, Shape(40.0, 480))
    assert huge.oom and huge.peak_bytes is None
    assert not meter.measure(4, Shape(2.0, 24)).oom  # usable again after the OOM


def test_a_trace_leaves_no_profiler_results_alive(meter):
    """Each trace's profiler results (~60 MB for tiny-flash) are freed when it returns, not at the next full
    garbage collection: the demo's profile reached 9.8 GB in two minutes before."""
    import gc

    gc.collect()
    gc.disable()
    try:
        meter.trace(2, Shape(1.0, 12))
        alive = [o for o in gc.get_objects() if isinstance(o, torch.autograd.profiler.profile)]
    finally:
        gc.enable()
    assert not alive
