"""``make_profile`` against a fake device whose memory is a known function (with a term the memory model does
not have, and real OOMs above the budget): every bucket ends within the target and >= 85% full, with few
trials; the search method agrees; the longest bucket is searched first and OOMs only fail trials."""

from types import SimpleNamespace

import numpy as np
import pytest

from fastaed.model import preset_config
from fastaed.sampling.bins import Bins
from fastaed.train.profile import Measurement, ProfileIdentity, ProfileSettings, make_profile
from fastaed.train.profile.memory import Meter

GB = 1e9
BINS = Bins(
    duration_edges=[2.0, 5.0, 10.0, 20.0, 40.0],
    max_u=[[20, 40], [45, 90], [80, 160], [150, 300], [250, 480]],
    max_tps=None,
)
IDENT = ProfileIdentity.for_run(preset_config("test"), "cpu", "bf16", None)


class FakeDevice(Meter):
    """Peak = 14 GB + B · (per-utterance bytes with a T³ term) rounded up to 2 MiB; OOM above the budget."""

    device_name = "fake"

    def __init__(self, budget: float, cubic: float = 0.0):
        super().__init__(SimpleNamespace(warm_up=lambda shape: None))
        self.budget, self.cubic, self.log = budget, cubic, []

    def true_bytes(self, b: int, t: float, u: int) -> float:
        per = 4e7 * t + 2e5 * t * t + 3e5 * u + 100 * u * u + 2e3 * t * u + self.cubic * t**3
        return 14 * GB + np.ceil(b * per / 2**21) * 2**21

    def measure(self, batch_size, shape):
        self.trials += 1
        self.log.append((shape, batch_size))
        peak = self.true_bytes(batch_size, shape.duration, shape.out_len)
        if peak > self.budget:
            return Measurement(batch_size, shape, None, oom=True)
        return Measurement(batch_size, shape, int(peak), reserved_bytes=int(peak * 1.05))


@pytest.mark.parametrize("cubic", [0.0, 3e4])  # 3e4 · 40³ = 1.9 GB per 40 s utterance the model cannot fit
@pytest.mark.parametrize("method", ["model", "search"])
def test_every_bucket_within_the_target_and_filled(method, cubic):
    device = FakeDevice(80 * GB, cubic)
    settings = ProfileSettings(budget_bytes=int(80 * GB), method=method, compare_search=2)
    profile = make_profile(device, BINS, IDENT, settings, progress=False)
    target = profile.target_bytes
    for bucket in profile.buckets:
        t, u, b = bucket.max_duration, bucket.max_u, bucket.batch_size
        assert device.true_bytes(b, t, u) <= target  # never over
        assert device.true_bytes(b, t, u) >= 0.85 * target or device.true_bytes(b + 1, t, u) > target
        assert bucket.fill >= 0.85 and bucket.heuristic_fill is not None
    if method == "model":
        assert device.trials <= 20 + 3 * BINS.num_buckets + 16  # probes + ~1-2 per bucket + 2 searches
        assert profile.memory_model is not None
    assert device.log[0][0].duration == 40.0  # the longest bucket first


def test_model_and_search_agree():
    runs = {}
    for method in ("model", "search"):
        device = FakeDevice(80 * GB)
        settings = ProfileSettings(budget_bytes=int(80 * GB), method=method)
        runs[method] = make_profile(device, BINS, IDENT, settings, progress=False).batch_sizes
    for a, b in zip(runs["model"], runs["search"]):
        assert abs(a - b) <= max(1, 0.05 * max(a, b))


def test_a_bucket_that_holds_one_utterance_falls_back_to_the_search():
    device = FakeDevice(80 * GB)
    one = (device.true_bytes(1, 40.0, 480) + 1e6) / 0.85  # the budget where exactly one 40 s utterance fits
    device.budget = one
    profile = make_profile(device, BINS, IDENT, ProfileSettings(budget_bytes=int(one)), progress=False)
    assert profile.method == "search" and profile.batch_sizes[-1] == 1
