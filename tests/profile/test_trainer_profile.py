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
    manifest, tok_dir = tiny_data(root)
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


def test_trainer_uses_a_matching_profile(setup, tmp_path):
    matching = setup[2]
    summary = train(run_config(setup, tmp_path / "run", f"sampler.profile={matching}"), resume="none")
    assert summary["steps"] == 2
    sizes = json.loads(open(matching).read())["batch_sizes"]
    records = train_records(tmp_path / "run" / "metrics.jsonl")
    assert all(r["batch_size"] <= sizes[r["bucket"]] for r in records.values())


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
