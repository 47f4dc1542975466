"""Smoke test of the feature benchmark (no timing assertions: CI machines vary)."""

from __future__ import annotations

import argparse
import json

import numpy as np

from fastaed.bench.features import add_arguments, bench_features, main, synth_speech


def test_bench_features_returns_xrt_for_every_stage_and_writes_json(tmp_path):
    out = tmp_path / "features.json"
    result = bench_features(num_utts=4, seconds=1.0, json_out=out)
    assert set(result["xrt_per_core"]) == {
        "features_b1",
        "features_b16",
        "read_features_b1",
        "read_features_b16",
        "resample_22050_16000_b1",
    }
    assert all(v > 0 for v in result["xrt_per_core"].values())
    assert result["target_xrt_per_core"] == 500
    assert isinstance(result["pass"], bool)
    assert json.loads(out.read_text()) == result


def test_bench_main_parses_cli_arguments(tmp_path):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--num-utts", "2", "--seconds", "0.5", "--json-out", str(tmp_path / "r.json")])
    assert main(args) == 0
    assert (tmp_path / "r.json").exists()


def test_synthetic_speech_has_requested_length_and_range():
    audio = synth_speech(1.5, 16000, np.random.default_rng(0))
    assert audio.shape == (24000,) and audio.dtype == np.float32
    assert 0 < np.abs(audio).max() <= 0.5 + 1e-6
