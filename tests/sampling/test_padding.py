"""Padding report: SPEC padding definitions on hand-computed batches, the random baseline's budget semantics
(Lhotse SimpleCutSampler's, checked against Lhotse itself when installed), 2D vs 1D, the JSON, and the
``fastaed bins`` / ``fastaed padding`` commands end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fastaed.cli.main import main
from fastaed.sampling import Bins, estimate_bins
from fastaed.sampling.padding import (
    Budget,
    EpochBatches,
    bins_table,
    epoch_padding,
    feature_frames,
    padding_report,
    random_batches,
)
from fastaed.sampling.stats import synthetic_lengths
from fastaed.testing import train_tiny_tokenizer, write_tiny_corpus
from tests import import_optional

JSON_KEYS = {"input_padding", "output_padding", "num_batches", "mean_batch_size", "median_batch_size"}
JSON_KEYS |= {"rejected", "rejected_by_reason", "max_padded_seconds", "max_padded_tokens"}


@pytest.fixture(scope="module")
def lengths() -> tuple[np.ndarray, np.ndarray]:
    return synthetic_lengths(3000, seed=3)


def run_cli(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    return exit_info.value.code


def test_feature_frames_use_10ms_hop_and_count_the_centre_frame():
    assert feature_frames(np.array([1.0, 0.5, 0.0101, 2.0])).tolist() == [101, 51, 2, 201]


def test_epoch_padding_matches_hand_computed_batches():
    d = np.array([1.0, 0.5, 2.0, 2.0], dtype=np.float32)
    u = np.array([10, 5, 20, 10], dtype=np.int32)
    batches = EpochBatches.from_batches([[0, 1], [2, 3]])
    s = epoch_padding(batches, d, u, Budget(max_duration=4.0, max_tokens=40))
    # frames 101, 51 | 201, 201: real 554, padded 2·101 + 2·201 = 604 (aggregated, not a mean of ratios)
    assert s["input_padding"] == pytest.approx(1 - 554 / 604)
    # U 10, 5 | 20, 10: real 45, padded 2·10 + 2·20 = 60
    assert s["output_padding"] == pytest.approx(0.25)
    assert (s["num_batches"], s["mean_batch_size"], s["median_batch_size"]) == (2, 2.0, 2.0)
    assert (s["max_padded_seconds"], s["max_padded_tokens"], s["budget_ok"]) == (4.0, 40, True)
    assert not epoch_padding(batches, d, u, Budget(max_duration=3.9))["budget_ok"]


def test_random_batches_fill_greedily_up_to_the_padded_budget(lengths):
    d, u = lengths
    budget = Budget(max_duration=100.0, max_tokens=900)
    batches, rejected = random_batches(d, u, budget, seed=1)
    assert rejected == {"over_budget": 0}
    assert sorted(batches.order.tolist()) == list(range(len(d)))  # every utterance exactly once
    dd, uu = d.astype(np.float64), u
    for k in range(len(batches)):
        idx = batches.order[batches.offsets[k] : batches.offsets[k + 1]]
        n, max_d, max_u = len(idx), dd[idx].max(), uu[idx].max()
        assert n * max_d <= 100.0 and n * max_u <= 900  # padded size, not the sum of real durations
        if k + 1 < len(batches):  # closed only because the next utterance would exceed the budget
            nxt = batches.order[batches.offsets[k + 1]]
            assert (n + 1) * max(max_d, dd[nxt]) > 100.0 or (n + 1) * max(max_u, uu[nxt]) > 900
    again, _ = random_batches(d, u, budget, seed=1)
    other, _ = random_batches(d, u, budget, seed=2)
    assert np.array_equal(again.order, batches.order) and not np.array_equal(other.order, batches.order)


def test_random_rejects_an_utterance_that_alone_exceeds_the_budget():
    d = np.array([1.0, 50.0, 2.0], dtype=np.float32)
    batches, rejected = random_batches(d, np.array([5, 9, 6]), Budget(max_duration=40.0))
    assert rejected == {"over_budget": 1} and sorted(batches.order.tolist()) == [0, 2]
    _, rejected = random_batches(d, np.array([5, 9, 6]), Budget(max_duration=5.0, quadratic_duration=1.0))
    assert rejected == {"over_budget": 2}  # cost d + d²/q: 1 + 1 = 2 s fits, 2 + 4 = 6 s does not


def test_random_matches_lhotse_simple_cut_sampler_on_the_same_order(lengths):
    import_optional("lhotse", "pip install -e .[lhotse]")
    from lhotse import CutSet
    from lhotse.dataset import SimpleCutSampler

    from fastaed.bench.sampler import lhotse_cuts

    d, u = lengths[0][:800], lengths[1][:800]
    ours, _ = random_batches(d, u, Budget(max_duration=120.0), seed=0)
    order = ours.order.tolist()
    cuts = lhotse_cuts(d[order], u[order], ["a"] * len(order))
    theirs = [[order[int(c.id[1:])] for c in b] for b in SimpleCutSampler(CutSet.from_cuts(cuts), 120.0)]
    mine = [ours.order[a:b].tolist() for a, b in zip(ours.offsets[:-1], ours.offsets[1:])]
    assert mine == theirs


def test_2d_beats_1d_on_output_padding_and_the_report_json_has_every_key(lengths, tmp_path):
    d, u = lengths
    report = padding_report(d, u, budget=Budget(300.0), seed=0)
    s = report.to_dict()["strategies"]
    assert set(s) == {"random", "1d", "2d"}
    for name in s:
        assert JSON_KEYS <= set(s[name]), name
        assert s[name]["budget_ok"] and s[name]["max_padded_seconds"] <= 300.0
    assert s["2d"]["output_padding"] < s["1d"]["output_padding"] - 0.1
    assert s["2d"]["input_padding"] < 0.1 and s["random"]["input_padding"] > 0.4
    assert json.loads(report.save_json(tmp_path / "r.json").read_text()) == json.loads(
        json.dumps(report.to_dict())
    )
    assert report.plot(tmp_path / "r.png").stat().st_size > 0
    assert "2d" in report.table() and "rejected" in report.table()


def test_profile_batch_sizes_drive_the_2d_strategy(lengths):
    d, u = lengths
    bins = estimate_bins(d, u, 8, 2)
    report = padding_report(d, u, ["2d"], bins=bins, batch_sizes=[4] * bins.num_buckets, cap_profile=False)
    r = report.results["2d"]
    assert r.stats["max_batch_size"] <= 4 and "budget_ok" not in r.stats
    with pytest.raises(ValueError, match="unknown strategies"):
        padding_report(d, u, ["3d"])


def test_bins_table_counts_every_kept_utterance(lengths):
    d, u = lengths
    bins = estimate_bins(d, u, 6, 3)
    table, summary = bins_table(bins, d, u)
    assert len(table.splitlines()) == 2 + bins.num_duration_bins
    kept = sum(int(line.split()[3]) for line in table.splitlines()[2:])
    assert kept + summary["rejected"] == len(d)


def test_cli_padding_and_bins_on_synthetic_data(tmp_path, capsys):
    out = tmp_path / "pad.json"
    assert (
        run_cli(["padding", "--synthetic", "2000", "--json", str(out), "--png", str(tmp_path / "p.png")]) == 0
    )
    doc = json.loads(out.read_text())
    assert set(doc["strategies"]) == {"random", "1d", "2d"} and doc["budget"]["max_duration"] == 600.0
    assert all(JSON_KEYS <= set(v) for v in doc["strategies"].values())
    bins_out = tmp_path / "bins.json"
    argv = ["bins", "--synthetic", "2000", "--num-subbuckets", "3", "--out", str(bins_out)]
    assert run_cli(argv + ["--png", str(tmp_path / "b.png")]) == 0
    bins = Bins.load(bins_out)
    assert bins.num_subbuckets == 3 and (tmp_path / "b.png").exists()
    assert "rejected" in capsys.readouterr().out

    profile = tmp_path / "profile.json"
    profile.write_text(
        json.dumps({"batch_sizes": [3] * bins.num_buckets, "bins": json.loads(bins.to_json())})
    )
    out2 = tmp_path / "pad2.json"
    assert (
        run_cli(
            ["padding", "--synthetic", "2000", "--strategy", "2d", "--profile", str(profile)]
            + ["--json", str(out2)]
        )
        == 0
    )
    assert json.loads(out2.read_text())["strategies"]["2d"]["max_batch_size"] <= 3
    assert run_cli(["padding", "--synthetic", "100", "--strategy", "4d"]) != 0


def test_cli_reads_manifests_through_the_index(tmp_path, capsys):
    manifest = write_tiny_corpus(tmp_path / "corpus", num=8)
    train_tiny_tokenizer(tmp_path / "tok")
    common = [str(manifest), "--tokenizer", str(tmp_path / "tok")]
    assert run_cli(["bins", *common, "--num-buckets", "2", "--out", str(tmp_path / "b.json")]) == 0
    out = tmp_path / "p.json"
    assert (
        run_cli(["padding", *common, "--num-buckets", "2", "--max-duration", "10", "--json", str(out)]) == 0
    )
    doc = json.loads(out.read_text())
    assert doc["utterances"] == 8 and doc["strategies"]["random"]["max_padded_seconds"] <= 10
