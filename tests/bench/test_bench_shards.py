"""``fastaed bench shards`` at a small scale: the simulated split gives every shard one rank, every measured
rank runs the common step count within the budget, the restore repeats the next batches, and the real-disk
half reports every pass (the Lhotse comparison only where lhotse is installed)."""

from __future__ import annotations

from fastaed.bench.shards import ShardsBenchConfig, print_report, run


def test_small_simulation_and_real_reads_report_everything(tmp_path, capsys):
    config = ShardsBenchConfig(
        utterances=20_000, shards=60, ranks=8, workers=2, measured_ranks=2, buffer_size=2_000,
        num_buckets=8, real_files=40, workdir=tmp_path,
    )  # fmt: skip
    result = run(config)
    sim = result["simulation"]
    assert sim["every_shard_one_rank"] and sim["shards_per_rank"]["min"] >= 1
    assert len(sim["measured"]) == 2
    for rank in sim["measured"]:
        assert rank["equal_to_common"] and rank["steps"] == sim["common_steps"]
        assert rank["over_budget_batches"] == 0
    assert sim["restore"]["same_next_batches"]
    real = result["real"]
    assert (
        real["files"] == 40
        and real["loose_files"]["files_per_s"] > 0
        and real["tar_member_seek"]["files_per_s"] > 0
    )
    assert real["ours_on_tars"]["batches"] > 0 and real["index_on_loose"]["batches"] > 0
    print_report(result)
    assert "every shard read by exactly one rank: True" in capsys.readouterr().out
