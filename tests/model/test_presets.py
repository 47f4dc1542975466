"""Presets: Canary sizes match their model cards, the CPU pair is size-matched, configs validate."""

import dataclasses

import pytest
import torch

from fastaed.model import (
    PRESETS,
    DecoderConfig,
    EncoderConfig,
    ModelConfig,
    build_model,
    preset_config,
    preset_info,
)

PUBLISHED = {"canary-1b": 1.0e9, "canary-1b-flash": 883e6, "canary-180m-flash": 182e6}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_canary_presets_are_within_3_percent_of_published_counts(name):
    info = preset_info(name)
    assert abs(info["params"] / PUBLISHED[name] - 1) < 0.03, info


def test_canary_layouts():
    layouts = {n: (preset_info(n)["encoder_layers"], preset_info(n)["decoder_layers"]) for n in PUBLISHED}
    assert layouts == {"canary-1b": (24, 24), "canary-1b-flash": (32, 4), "canary-180m-flash": (17, 4)}
    small = preset_info("canary-180m-flash")
    assert (small["d_model"], small["decoder_d_model"]) == (512, 1024)
    assert small["other_params"] == 512 * 1024 + 1024, "only the encoder -> decoder projection"


def test_tiny_presets_are_size_matched_and_cpu_sized():
    balanced, flash = preset_info("tiny-balanced"), preset_info("tiny-flash")
    for info in (balanced, flash):
        assert 5e6 <= info["params"] <= 10e6, info
    assert abs(balanced["params"] / flash["params"] - 1) < 0.05
    assert flash["decoder_layers"] == 2
    assert flash["encoder_layers"] > balanced["encoder_layers"]
    assert balanced["decoder_layers"] > flash["decoder_layers"]


def test_preset_info_keys_and_parts_add_up():
    info = preset_info("test")
    assert {
        "params",
        "encoder_params",
        "decoder_params",
        "encoder_layers",
        "decoder_layers",
        "d_model",
    } <= set(info)
    assert info["params"] == info["encoder_params"] + info["decoder_params"] + info["other_params"]
    assert info["params"] == build_model("test").num_params()["total"], "meta count equals a real build"


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_takes_a_vocab_size(name):
    with torch.device("meta"):
        model = build_model(name, vocab_size=777)
    assert model.config.vocab_size == 777
    assert model.decoder.embedding.weight.shape[0] == 777
    assert preset_info(name, vocab_size=777)["vocab_size"] == 777


def test_build_model_overrides_vocab_of_a_config():
    model = build_model(preset_config("test"), vocab_size=50)
    assert model.config.vocab_size == 50 and model.config.name == "test"
    with pytest.raises(KeyError, match="unknown model preset"):
        build_model("canary-2b")


def test_configs_validate():
    with pytest.raises(ValueError, match="divisible"):
        EncoderConfig(d_model=100, n_heads=8)
    with pytest.raises(ValueError, match="odd"):
        EncoderConfig(conv_kernel=8)
    with pytest.raises(ValueError, match="power of two"):
        EncoderConfig(subsampling_factor=6)
    with pytest.raises(ValueError, match="dropout"):
        DecoderConfig(dropout=1.5)
    with pytest.raises(ValueError, match="ctc_weight"):
        ModelConfig(ctc_weight=0.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        preset_config("test").vocab_size = 3  # type: ignore[misc]


def test_config_dict_round_trip():
    config = dataclasses.replace(preset_config("canary-180m-flash"), ctc_weight=0.3)
    assert ModelConfig.from_dict(config.to_dict()) == config
    with pytest.raises(TypeError):
        ModelConfig.from_dict({**config.to_dict(), "unknown_field": 1})
