"""Smoke test of the sampler benchmark in quick mode: the result keys, not the timings (CI machines vary)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fastaed.bench.sampler import SamplerBenchConfig, print_report, run
from fastaed.bench.sampler_inputs import DISTRIBUTIONS, EXTRA_TOKENS
from fastaed.cli.main import main

STRATEGY_KEYS = {"input_padding", "output_padding", "num_batches", "mean_batch_size", "rejected", "label"}


def test_quick_bench_returns_every_distribution_strategy_and_target(tmp_path, capsys):
    out = tmp_path / "sampler.json"
    result = run(SamplerBenchConfig(utterances=600, quick=True, json=out))
    assert out.with_suffix(".png").stat().st_size > 0  # the PNG beside the JSON (the CLI writes the JSON)
    assert result["quick"] and result["one_million"] is None and isinstance(result["pass"], bool)
    assert set(result["distributions"]) == set(DISTRIBUTIONS)
    assert {"librispeech", "common_voice", "multitask", "conversational"} <= set(result["distributions"])
    expected = {"random", "ours_1d", "ours_2d", "ours_2d_defaults"}
    if result["lhotse_version"]:
        expected |= {"lhotse_simple", "lhotse_1d"}
    for name, dist in result["distributions"].items():
        assert set(dist["strategies"]) == expected, name
        assert all(STRATEGY_KEYS <= set(s) for s in dist["strategies"].values())
        assert {"index_s", "bins_s", "plan_s", "cold_s", "epoch_s", "epoch_batches_per_s"} <= set(
            dist["speed"]["ours"]
        )
        if result["lhotse_version"]:
            assert {"speedup_epoch", "speedup_cold", "speedup_warm"} <= set(dist["speed"])
            assert dist["lhotse_restore"]["identical_next_batch"]
        assert {"input_padding", "output_padding", "rejected"} <= set(result["targets"][name])
        assert {"defaults_output_padding", "rank_balance"} <= set(result["targets"][name])
        assert 0 <= dist["speed"]["ours"]["rank_balance"]["within_share"] <= 1
    print_report(result)
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last)["benchmark"] == "sampler"


def test_distributions_have_the_requested_size_and_valid_lengths():
    for make, _ in DISTRIBUTIONS.values():
        d, u = make(500, 0)
        assert d.shape == u.shape == (500,) and d.dtype == np.float32
        assert d.min() >= 0.5 and d.max() <= 60.0 and u.min() >= EXTRA_TOKENS + 1


def test_cli_arguments_run_ours_only(tmp_path):
    with pytest.raises(SystemExit) as info:
        main(
            [
                "bench",
                "sampler",
                "--quick",
                "--utterances",
                "300",
                "--no-lhotse",
                "--json",
                str(tmp_path / "r.json"),
            ]
        )
    assert info.value.code == 0
    doc = json.loads((tmp_path / "r.json").read_text())
    assert (
        doc["lhotse_version"] is None and "lhotse_1d" not in doc["distributions"]["lognormal"]["strategies"]
    )
