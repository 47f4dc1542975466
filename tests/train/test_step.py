"""The step's shared pieces: one precision rule, the trainer's optimizer groups (also the profile's), and the
config sections that reuse the front end's and SpecAugment's own configs."""

from __future__ import annotations

import pytest
import torch

from fastaed.data.features import FeatureConfig, SpecAugmentConfig
from fastaed.model import build_model
from fastaed.train.config import ConfigError, TrainConfig
from fastaed.train.profile.memory import SyntheticStep
from fastaed.train.step import Precision, build_optimizer
from tests.train import TEST_CONFIG


@pytest.mark.parametrize(
    "device, choice, name",
    [("cpu", "auto", "fp32"), ("cpu", "bf16", "fp32"), ("cpu", "fp32", "fp32")]
    + [("cuda", "auto", "bf16"), ("cuda", "bf16", "bf16"), ("cuda", "fp32", "fp32")],
)
def test_precision_rule(device, choice, name):
    precision = Precision.resolve(torch.device(device), choice)  # a device object needs no GPU
    assert precision.name == name and precision.bf16 == (name == "bf16")


def test_cpu_autocast_is_a_no_op():
    with Precision.resolve(torch.device("cpu")).autocast():
        y = torch.ones(2, 2) @ torch.ones(2, 2)
    assert y.dtype == torch.float32


def test_optimizer_decays_matrices_only_and_keeps_model_order():
    model = build_model("test", vocab_size=32)
    optimizer, params = build_optimizer(model, torch.device("cpu"), lr=1e-3, weight_decay=0.1)
    assert params == [p for p in model.parameters() if p.requires_grad]
    decay, rest = optimizer.param_groups
    assert decay["weight_decay"] == 0.1 and all(p.ndim >= 2 for p in decay["params"])
    assert rest["weight_decay"] == 0.0 and all(p.ndim < 2 for p in rest["params"])
    assert len(decay["params"]) + len(rest["params"]) == len(params)


def test_synthetic_step_uses_the_trainer_rules():
    step = SyntheticStep(build_model("test", vocab_size=32), "cpu")
    assert step.precision == Precision.resolve(torch.device("cpu"))
    assert [g["weight_decay"] for g in step.optimizer.param_groups] == [1e-3, 0.0]


def test_sections_are_the_component_configs():
    cfg = TrainConfig.from_yaml(TEST_CONFIG, ["specaugment.time_width=0.1", "features.dither=0"])
    assert isinstance(cfg.specaugment, SpecAugmentConfig) and cfg.specaugment.time_width == 0.1
    assert cfg.features.feature_config() == FeatureConfig(dither=0.0)
    assert set(cfg.to_dict()["specaugment"]) == {f for f in vars(SpecAugmentConfig())} | {
        "enabled",
        "start_step",
    }
    with pytest.raises(ConfigError, match="specaugment: .*time_width"):
        TrainConfig.from_yaml(TEST_CONFIG, ["specaugment.time_width=5"])
    with pytest.raises(ConfigError, match="features: dither must be >= 0"):
        TrainConfig.from_yaml(TEST_CONFIG, ["features.dither=-1"])
