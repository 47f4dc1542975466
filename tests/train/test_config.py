"""Training config: every shipped config loads through the real CLI parser, overrides are type-checked and
name the bad key, YAML round-trips, and the learning-rate schedules have the documented shape."""

from __future__ import annotations

import argparse
import math

import pytest

from fastaed.cli.train import register
from fastaed.train.config import ConfigError, OptimConfig, TrainConfig
from fastaed.train.schedule import lr_at
from tests.train import REPO, TEST_CONFIG

CONFIGS = sorted((REPO / "configs").glob("train_*.yaml"))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastaed")
    register(parser.add_subparsers(dest="command"))
    return parser


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads_through_the_cli(path):
    args = _parser().parse_args(["train", "--config", str(path), "optim.lr=2e-3", "--resume", "none"])
    cfg = TrainConfig.from_yaml(args.config, overrides=args.overrides)
    assert cfg.optim.lr == 2e-3 and args.resume == "none" and args.func.__name__ == "train_cmd"


def test_shipped_configs_include_the_cpu_demo_recipes():
    names = {p.name for p in CONFIGS}
    assert {"train_test.yaml", "train_tiny_flash.yaml", "train_tiny_balanced.yaml"} <= names
    flash = TrainConfig.from_yaml(REPO / "configs" / "train_tiny_flash.yaml")
    balanced = TrainConfig.from_yaml(REPO / "configs" / "train_tiny_balanced.yaml")
    assert flash.model.preset == "tiny-flash" and balanced.model.preset == "tiny-balanced"
    # The two recipes differ only in the model (and where they write), so the comparison is fair.
    a, b = flash.to_dict(), balanced.to_dict()
    for d in (a, b):
        del d["model"]["preset"], d["runtime"]["out_dir"]
    assert a == b


def test_overrides_are_typed():
    cfg = TrainConfig.from_yaml(
        TEST_CONFIG,
        [
            "optim.lr=1e-3",  # YAML 1.1 reads this as a string; the float field takes it
            "optim.max_steps=1e4",
            "optim.betas=[0.8, 0.9]",
            "data.train_manifests=[a.jsonl, b.jsonl:2]",
            "data.tokenizer=007",  # string fields keep the text as written
            "runtime.time_budget_s=60",
            "sampler.max_duration=null",
            "sampler.max_tokens=500",
            "runtime.progress=false",
            "debug.nan_loss_steps=3,5",
        ],
    )
    assert cfg.optim.lr == 1e-3 and cfg.optim.max_steps == 10_000 and cfg.optim.betas == (0.8, 0.9)
    assert cfg.data.train_manifests == ["a.jsonl", "b.jsonl:2"] and cfg.data.tokenizer == "007"
    assert cfg.runtime.time_budget_s == 60.0 and isinstance(cfg.runtime.time_budget_s, float)
    assert cfg.sampler.max_duration is None and cfg.sampler.max_tokens == 500
    assert cfg.runtime.progress is False and cfg.debug.nan_loss_steps == [3, 5]


@pytest.mark.parametrize(
    "override, message",
    [
        ("optim.lrr=1", r"unknown key 'optim.lrr'.*known: lr, betas"),
        ("optimizer.lr=1", r"unknown key 'optimizer'"),
        ("optim.max_steps=abc", r"optim.max_steps: expected int, got 'abc'"),
        ("optim.max_steps=1.5", r"optim.max_steps: expected int"),
        ("runtime.progress=maybe", r"runtime.progress: expected bool"),
        ("optim.betas=[0.9]", r"optim.betas: expected 2 values"),
        ("optim.schedule=linear", r"optim.schedule: one of"),
        ("runtime.device=tpu", r"runtime.device: one of"),
        ("data.on_bad_input=ignore", r"data.on_bad_input"),
        ("optim", r"expected KEY=VALUE"),
        ("optim=1", r"'optim' is a section"),
        ("model.preset=huge", r"model.preset: unknown 'huge'"),
    ],
)
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig.from_yaml(TEST_CONFIG, [override])


def test_unknown_and_missing_keys_in_a_file_are_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: {train_manifests: [a], tokenizer: t}\nruntime: {out_dirr: x}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown key 'runtime.out_dirr'"):
        TrainConfig.from_yaml(bad)
    bad.write_text("data: {train_manifests: [a]}\n")
    with pytest.raises(ConfigError, match=r"missing required key 'data.tokenizer'"):
        TrainConfig.from_yaml(bad)
    with pytest.raises(FileNotFoundError):
        TrainConfig.from_yaml(tmp_path / "nope.yaml")


def test_yaml_round_trip(tmp_path):
    cfg = TrainConfig.from_yaml(TEST_CONFIG, ["optim.lr=3e-4", "data.train_manifests=[x.jsonl:0.5]"])
    again = TrainConfig.from_yaml(cfg.to_yaml(tmp_path / "config.yaml"))
    assert again == cfg


@pytest.mark.parametrize("schedule", ["inverse_sqrt", "cosine", "constant"])
def test_lr_schedules(schedule):
    cfg = OptimConfig(lr=1e-3, min_lr=1e-5, warmup_steps=10, max_steps=100, schedule=schedule)
    lrs = [lr_at(s, cfg) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)  # linear warmup to the peak
    assert all(a < b for a, b in zip(lrs[:9], lrs[1:10]))
    after = lrs[10:]
    if schedule == "constant":
        assert all(x == pytest.approx(1e-3) for x in after)
    else:
        assert all(a >= b for a, b in zip(after, after[1:])) and after[-1] < 1e-3
    if schedule == "inverse_sqrt":
        assert lrs[39] == pytest.approx(1e-3 * math.sqrt(10 / 40))
    if schedule == "cosine":
        assert lr_at(99, cfg) == pytest.approx(1e-5)  # reaches min_lr on the last step
