"""`fastaed bench batch-sizes` on CPU with the `test` preset: heuristic vs profile, fills, mean batch sizes,
a short training run each; JSON, profile and PNG written; the heuristic budget rule fills its worst bucket."""

import json

import pytest

from fastaed.cli.main import main
from fastaed.sampling.bins import Bins
from fastaed.train.profile import BatchSizeProfile


def test_bench_runs_end_to_end_on_cpu(tmp_path, capsys):
    bins = tmp_path / "bins.json"
    bins.write_text(Bins(duration_edges=[6.0, 40.0], max_u=[[60, 120], [200, 500]], max_tps=None).to_json())
    out = tmp_path / "bench.json"
    argv = ["bench", "batch-sizes", "--model", "test", "--synthetic", "--utterances", "1500"]
    argv += ["--device", "cpu", "--bins", str(bins), "--steps", "2", "--warmup", "1", "--no-progress"]
    argv += ["--json", str(out)]
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 0
    stdout = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert json.loads(stdout.strip().splitlines()[-1])["mean_batch_ratio"] == result["mean_batch_ratio"]
    assert result["budget_rule"] == "heuristic"
    assert result["heuristic_max_fill"] == pytest.approx(1.0, abs=1e-6)
    assert result["profile_min_fill"] >= 0.85 and result["targets"]["min_fill"]["pass"]
    assert len(result["heuristic_buckets"]) == 20 and result["buckets"] == 4
    for name in ("heuristic", "profile"):
        run = result["runs"][name]
        assert run["steps"] == 2 and run["audio_s_per_s"] > 0 and run["epoch_mean_batch_size"] > 0
    assert result["targets"]["profile_run_no_oom"]["pass"]
    assert result["throughput_ratio"] > 0 and "heuristic (NeMo 1D" in stdout
    profile = BatchSizeProfile.load(tmp_path / "bench_profile.json")
    assert profile.batch_sizes == [b["batch_size"] for b in result["profile_buckets"]]
    assert (tmp_path / "bench.png").stat().st_size > 0
