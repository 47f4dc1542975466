"""The CPU meter against an independent measurement, the growth of the resident memory of a fresh process
during the same step (``rss.py``: the kernel's page count, not the allocator's events), and a profile made
with the meter checked bucket by bucket with it: no bucket's batch may exceed the target.

Tolerance: the resident size counts whole 4 KiB pages, glibc's small-block heap and what is not a tensor
(the autograd graph's nodes), so it differs from the allocator's bytes by ~±250 KiB; on steps of 10 MB and
more that is within ±3% (measured: −1.5% to +1.8% for the test preset, +0.1% for tiny-flash)."""

import sys

import pytest
import torch

from fastaed.model import build_model, preset_config
from fastaed.sampling.bins import Bins
from fastaed.train.profile import ProfileSettings, open_profiler
from fastaed.train.profile.cpu_meter import CpuMeter
from fastaed.train.profile.memory import Shape, SyntheticStep
from fastaed.train.profile.rss import rss_peaks

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self")
TOLERANCE = 0.03


def test_meter_agrees_with_resident_memory_growth():
    torch.manual_seed(0)
    model = build_model("test", vocab_size=64)
    config = model.config
    step = SyntheticStep(model, "cpu")
    step.warm_up(Shape(0.5, 8))
    meter = CpuMeter(step)
    trials = [(4, 2.0, 24), (12, 2.0, 24), (8, 3.0, 40)]
    rss = rss_peaks(config, trials)
    for (b, d, u), independent in zip(trials, rss):
        measured = meter.measure(b, Shape(d, u)).peak_bytes
        assert independent == pytest.approx(measured, rel=TOLERANCE), (b, d, u)


def test_a_cpu_profile_stays_within_its_target_by_resident_memory():
    config = preset_config("test", vocab_size=64)
    bins = Bins(duration_edges=[1.0, 2.0, 3.0], max_u=[[16], [28], [40]], max_tps=None)
    profiler = open_profiler(config, None, device="cpu", budget=0.06)
    settings = ProfileSettings(budget_bytes=profiler.budget_bytes)
    profile = profiler.profile(bins, settings, progress=False)
    trials = [(b.batch_size, b.max_duration, max(b.max_u, 6)) for b in profile.buckets]
    assert all(b >= 8 for b, _, _ in trials)  # big enough steps for the page-granular measurement
    rss = rss_peaks(config, trials)
    for bucket, independent in zip(profile.buckets, rss):
        assert bucket.measured_bytes <= profile.target_bytes
        assert independent <= profile.target_bytes, (bucket.bucket, independent / profile.target_bytes)
        assert bucket.fill >= 0.9  # and not by leaving the budget unused
