"""`fastaed batch-sizes` end to end on CPU with the `test` preset, tiny bins and a small budget: every bucket
filled to >= 85% of the target and never over it, the search agrees with the memory model, the files are
written, errors are one line with exit status 2."""

import json

import pytest

from fastaed.cli.main import main
from fastaed.sampling.bins import Bins
from fastaed.train.profile import BatchSizeProfile

BUDGET_GIB = "0.05"  # ~51 MiB: batches of ~15-60 utterances of the test model


@pytest.fixture()
def bins_file(tmp_path):
    bins = Bins(duration_edges=[1.0, 2.0, 3.5], max_u=[[10, 16], [14, 24], [20, 40]], max_tps=None)
    path = tmp_path / "bins.json"
    path.write_text(bins.to_json())
    return path


def run(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    out = capsys.readouterr()
    return info.value.code, out.out, out.err


def make(tmp_path, bins_file, capsys, *extra, name="profile.json"):
    out = tmp_path / name
    argv = ["batch-sizes", "--model", "test", "--bins", str(bins_file), "--memory-budget", BUDGET_GIB]
    code, stdout, stderr = run([*argv, "--out", str(out), "--no-progress", *extra], capsys)
    assert code == 0, stderr
    return BatchSizeProfile.load(out), json.loads(stdout.strip().splitlines()[-1]), stdout


def test_cpu_end_to_end_fills_every_bucket(tmp_path, bins_file, capsys):
    extra = ["--compare-search", "3", "--json", str(tmp_path / "s.json")]
    profile, summary, stdout = make(tmp_path, bins_file, capsys, *extra)
    assert (tmp_path / "profile.png").stat().st_size > 0
    assert profile.identity.model_name == "test" and profile.identity.device == "cpu"
    assert profile.identity.dtype == "fp32" and profile.method == "model"
    assert profile.target_bytes == int(0.05 * 2**30 * 0.85)
    for b in profile.buckets:
        assert b.measured_bytes <= profile.target_bytes  # never over
        assert b.fill >= 0.85, b  # and filled
        assert b.predicted_bytes == pytest.approx(b.measured_bytes, rel=0.05)
        if b.search_batch_size is not None:  # the OOMptimizer agrees within its 5% stop rule
            assert abs(b.search_batch_size - b.batch_size) <= max(1, 0.05 * b.batch_size)
    assert sum(b.search_batch_size is not None for b in profile.buckets) >= 2
    sizes = profile.batch_sizes
    assert sizes[0] > sizes[-1] >= 1  # short buckets hold more than long ones
    assert summary["min_fill"] >= 0.85 and summary["buckets"] == 6
    assert "heuristic fill" in stdout and json.loads((tmp_path / "s.json").read_text()) == summary
    assert profile.memory_model is not None and len(profile.probes) >= 7


def test_search_method_gives_the_same_sizes(tmp_path, bins_file, capsys):
    model, _, _ = make(tmp_path, bins_file, capsys, name="model.json")
    search, _, _ = make(tmp_path, bins_file, capsys, "--method", "search", name="search.json")
    assert search.method == "search"
    for a, b in zip(model.batch_sizes, search.batch_sizes):
        assert abs(a - b) <= max(1, 0.05 * a)
    assert all(b.fill >= 0.85 for b in search.buckets)


def test_ddp_overhead_and_margin_shrink_the_batches(tmp_path, bins_file, capsys):
    plain, _, _ = make(tmp_path, bins_file, capsys, name="plain.json")
    ddp, _, _ = make(tmp_path, bins_file, capsys, "--ddp-overhead", "0.01", name="ddp.json")
    careful, _, _ = make(tmp_path, bins_file, capsys, "--safety-margin", "0.5", name="careful.json")
    assert ddp.ddp_overhead_bytes == int(0.01 * 2**30)
    assert all(d < p for d, p in zip(ddp.batch_sizes, plain.batch_sizes))
    assert all(c < p for c, p in zip(careful.batch_sizes, plain.batch_sizes))


def test_budget_too_small_is_a_clear_error(tmp_path, bins_file, capsys):
    argv = ["batch-sizes", "--model", "test", "--bins", str(bins_file), "--memory-budget", "0.0001"]
    code, _, err = run([*argv, "--out", str(tmp_path / "p.json"), "--no-progress"], capsys)
    assert code == 2 and "error" in err and "GiB" in err
    assert not (tmp_path / "p.json").exists()


def test_cpu_needs_an_explicit_budget(tmp_path, bins_file, capsys):
    argv = ["batch-sizes", "--model", "test", "--bins", str(bins_file), "--device", "cpu"]
    code, _, err = run([*argv, "--out", str(tmp_path / "p.json")], capsys)
    assert code == 2 and "--memory-budget" in err


@pytest.mark.parametrize("command", [["batch-sizes"], ["bench", "batch-sizes"]])
def test_help(command, capsys):
    code, out, _ = run([*command, "--help"], capsys)
    assert code == 0 and "usage: fastaed" in out


def test_a_checkpoint_brings_its_config_and_tokenizer(tmp_path, bins_file, capsys):
    from fastaed.formats import save_model
    from fastaed.model import build_model
    from fastaed.train.profile import model_config_hash

    model = build_model("test", vocab_size=50)
    save_model(model, tmp_path / "ckpt", tokenizer_identity="tok-abc")
    argv = ["batch-sizes", "--model", str(tmp_path / "ckpt"), "--bins", str(bins_file), "--no-progress"]
    code, _, err = run([*argv, "--memory-budget", BUDGET_GIB, "--out", str(tmp_path / "p.json")], capsys)
    assert code == 0, err
    identity = BatchSizeProfile.load(tmp_path / "p.json").identity
    assert identity.tokenizer == "tok-abc" and identity.model_config_hash == model_config_hash(model.config)
