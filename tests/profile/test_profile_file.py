"""The profile file: JSON round trip, read by the plain ``load_profile`` too, identity checks that name the
file and each differing field, version and format checks, the PNG."""

import dataclasses
import json

import numpy as np
import pytest

from fastaed.model import preset_config
from fastaed.sampling import load_profile
from fastaed.sampling.bins import Bins
from fastaed.train.profile import (
    BatchSizeProfile,
    BucketResult,
    ProfileIdentity,
    ProfileMismatchError,
    check_profile,
    model_config_hash,
    plot_profile,
)

BINS = Bins(duration_edges=[1.0, 2.0], max_u=[[10, 16], [14, 24]], max_tps=[20.0, np.inf])
IDENT = ProfileIdentity.for_run(preset_config("test", 64), "cpu", "fp32", "tok123")


def make(batch_sizes=(48, 46, 24, 23)) -> BatchSizeProfile:
    buckets = [
        BucketResult(
            bucket=k, max_duration=d, max_u=u, batch_size=b, predicted_bytes=1e6 + k, measured_bytes=10**6,
            fill=0.9 + 0.01 * k, trials=2, heuristic_batch_size=337, heuristic_bytes=5e6, heuristic_fill=4.5,
        )
        for k, ((d, u), b) in enumerate(zip(BINS.flat(), batch_sizes))
    ]  # fmt: skip
    return BatchSizeProfile(
        bins=BINS, batch_sizes=list(batch_sizes), identity=IDENT, budget_bytes=2 << 20, safety_margin=0.15,
        target_bytes=int((2 << 20) * 0.85), method="model", buckets=buckets,
        memory_model={"static": 1.0, "coef": {"T": 1.0}}, heuristic={"batch_duration": 360.0},
        meta={"seconds": 1.5},
    )  # fmt: skip


def test_round_trip(tmp_path):
    profile = make()
    path = profile.save(tmp_path / "p.json")
    loaded = BatchSizeProfile.load(path)
    assert loaded.to_dict() == profile.to_dict()
    assert loaded.bins == BINS and loaded.identity == IDENT and loaded.buckets[3].fill == pytest.approx(0.93)


def test_plain_load_profile_reads_sizes_and_bins(tmp_path):
    path = make().save(tmp_path / "p.json")
    sizes, bins = load_profile(path)
    assert sizes.tolist() == [48, 46, 24, 23] and bins == BINS


def test_wrong_format_or_newer_version_is_refused(tmp_path):
    doc = make().to_dict()
    with pytest.raises(ValueError, match="version 99"):
        BatchSizeProfile.from_dict({**doc, "version": 99})
    with pytest.raises(ValueError, match="not a fastaed batch-size profile"):
        BatchSizeProfile.from_dict({**doc, "format": "other"})
    with pytest.raises(ValueError, match="5 batch sizes for 4 buckets"):
        make(batch_sizes=(1, 2, 3, 4, 5))


def test_matching_identity_passes(tmp_path):
    path = make().save(tmp_path / "p.json")
    assert check_profile(path, IDENT) == []


@pytest.mark.parametrize(
    "field, value",
    [
        ("model_config_hash", "0" * 16),
        ("device", "NVIDIA H100 80GB HBM3"),
        ("dtype", "bf16"),
        ("tokenizer", "othertok"),
        ("prompt", "whisper"),
    ],
)
def test_each_identity_field_is_checked(tmp_path, field, value):
    path = make().save(tmp_path / "p.json")
    run = ProfileIdentity(**{**IDENT.__dict__, field: value})
    with pytest.raises(ProfileMismatchError) as err:
        check_profile(path, run)
    assert str(path) in str(err.value) and field in str(err.value) and "force_profile" in str(err.value)
    assert len(check_profile(path, run, force=True)) == 1  # forced: reported, not raised


def test_another_model_is_named_in_the_message(tmp_path):
    path = make().save(tmp_path / "p.json")
    run = ProfileIdentity.for_run(preset_config("tiny-flash"), "cpu", "fp32", "tok123")
    with pytest.raises(ProfileMismatchError, match=r"\(test\).*\(tiny-flash\)"):
        check_profile(path, run)


def test_plain_profile_without_identity_is_reported(tmp_path):
    path = tmp_path / "plain.json"
    path.write_text(json.dumps({"batch_sizes": [1, 2, 3, 4], "bins": json.loads(BINS.to_json())}))
    assert check_profile(path, IDENT) == ["no identity"]


def test_model_config_hash_sees_every_memory_relevant_field():
    base = preset_config("test", 64)
    assert model_config_hash(base) == IDENT.model_config_hash
    for other in (preset_config("test", 65), preset_config("tiny-flash", 64)):
        assert model_config_hash(other) != IDENT.model_config_hash
    assert model_config_hash(dataclasses.replace(base, ctc_weight=0.3)) != IDENT.model_config_hash


def test_plot_writes_a_png(tmp_path):
    path = plot_profile(make(), tmp_path / "p.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
