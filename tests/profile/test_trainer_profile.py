"""The trainer reads a profile made by `fastaed batch-sizes --config` for its own run, and refuses one made
for another model, device or tokenizer (naming the file and what differs) unless ``sampler.force_profile``."""

import json

import pytest

from fastaed.cli.main import main
from fastaed.sampling.bins import Bins
from fastaed.train.loop import train
from fastaed.train.profile import ProfileMismatchError
from tests.train import make_config, tiny_data, train_records

# Covers the tiny corpus (0.5-2.25 s; U up to ~40 with its 64-piece tokenizer).
BINS = Bins(duration_edges=[1.2, 2.5], max_u=[[60], [80]], max_tps=None)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("profile-train")
    manifest, tok_dir = tiny_data(root, num=16)
    bins = root / "bins.json"
    bins.write_text(BINS.to_json())
    cfg = make_config(manifest, tok_dir, root / "unused", "optim.max_steps=2", "runtime.ckpt_every=0")
    config_path = cfg.to_yaml(root / "train.yaml")

    def profile(name: str, *argv: str) -> str:
        out = root / name
        with pytest.raises(SystemExit) as info:
            main(["batch-sizes", *argv, "--bins", str(bins), "--memory-budget", "0.05", "--out", str(out)])
        assert info.value.code == 0
        return str(out)

    matching = profile("matching.json", "--config", str(config_path))
    other_model = profile("other.json", "--model", "test")  # default vocabulary, no tokenizer, no CTC head
    return manifest, tok_dir, matching, other_model


def run_config(setup, out, *overrides):
    manifest, tok_dir, *_ = setup
    return make_config(manifest, tok_dir, out, "optim.max_steps=2", "runtime.ckpt_every=0", *overrides)


@pytest.mark.parametrize("sizes", [[3, 2], [2, 3]])
def test_trainer_trains_at_the_profiles_sizes(setup, tmp_path, sizes):
    """With no budget capping batches (``max_duration: null``), every batch of a bucket has the profile's
    size for it, and the full ones exactly that size. The two orders of sizes per bucket make this fail for
    a trainer that ignores the profile: budget-derived sizes (or any fixed rule) cannot match [3, 2] and
    [2, 3] on the same data; both are far below what the 0.05 GiB profile itself chose."""
    doc = json.loads(open(setup[2]).read())
    assert min(doc["batch_sizes"]) > max(sizes)  # the edit, not the budget, sets the sizes
    doc["batch_sizes"] = sizes
    path = tmp_path / "sizes.json"
    path.write_text(json.dumps(doc))
    overrides = (f"sampler.profile={path}", "sampler.max_duration=null", "optim.max_steps=8")
    train(run_config(setup, tmp_path / "run", *overrides), resume="none")
    records = train_records(tmp_path / "run" / "metrics.jsonl").values()
    seen: dict[int, set[int]] = {}
    for r in records:
        seen.setdefault(r["bucket"], set()).add(r["batch_size"])
    assert set(seen) == {0, 1}, seen  # both buckets trained
    for bucket, batch_sizes in seen.items():
        assert max(batch_sizes) == sizes[bucket], (bucket, batch_sizes)  # full batches: the profile's size


def test_trainer_refuses_a_profile_for_another_model(setup, tmp_path):
    other = setup[3]
    with pytest.raises(ProfileMismatchError) as err:
        train(run_config(setup, tmp_path / "run", f"sampler.profile={other}"), resume="none")
    message = str(err.value)
    assert other in message and "model_config_hash" in message and "tokenizer" in message
    assert "force_profile" in message


def test_force_uses_it_anyway(setup, tmp_path, capsys):
    other = setup[3]
    cfg = run_config(setup, tmp_path / "run", f"sampler.profile={other}", "sampler.force_profile=true")
    assert train(cfg, resume="none")["steps"] == 2
    assert "despite: model_config_hash" in capsys.readouterr().out


def test_trainer_refuses_a_profile_for_another_device(setup, tmp_path):
    doc = json.loads(open(setup[2]).read())
    doc["identity"]["device"] = "NVIDIA H100 80GB HBM3"
    path = tmp_path / "gpu.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ProfileMismatchError, match=r"device: profile 'NVIDIA H100 80GB HBM3' != run 'cpu'"):
        train(run_config(setup, tmp_path / "run", f"sampler.profile={path}"), resume="none")


def test_train_cli_reports_a_mismatch_in_one_line(setup, tmp_path, capsys):
    from fastaed.cli.train import main as train_main
    from tests.train import TEST_CONFIG, data_overrides

    manifest, tok_dir, _, other = setup
    argv = ["--config", str(TEST_CONFIG), *data_overrides(manifest, tok_dir, tmp_path / "run")]
    with pytest.raises(SystemExit) as info:
        train_main([*argv, f"sampler.profile={other}", "optim.max_steps=1"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "fastaed train: error:" in err and "batch-size profile made for another run" in err
