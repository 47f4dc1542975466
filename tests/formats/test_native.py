"""Checkpoints describe themselves, round-trip exactly, are written atomically, and fail loudly."""

import dataclasses
import json
import subprocess
import sys

import pytest
import torch

from fastaed.formats import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    CheckpointError,
    load_model,
    read_checkpoint_meta,
    save_model,
)
from fastaed.model import build_model, preset_config


def _trained_model(**overrides):
    """A test model after one training step, so batch-norm running statistics are not at their defaults."""
    torch.manual_seed(0)
    model = build_model(dataclasses.replace(preset_config("test"), **overrides)).train()
    feats, feat_lens = torch.randn(2, 60, 128), torch.tensor([60, 45])
    tokens, lens = torch.randint(1, 100, (2, 5)), torch.tensor([5, 3])
    model(feats, feat_lens, tokens, lens).sum().backward()
    return model.eval(), (feats, feat_lens, tokens, lens)


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"ctc_weight": 0.3},
        {"decoder": dataclasses.replace(preset_config("test").decoder, tie_embeddings=False)},
    ],
    ids=["plain", "ctc", "untied"],
)
def test_round_trip_is_exact(tmp_path, overrides):
    model, inputs = _trained_model(**overrides)
    save_model(model, tmp_path / "ckpt", tokenizer_identity="abc123", extra={"step": 7})
    loaded = load_model(tmp_path / "ckpt")
    assert loaded.config == model.config
    assert not loaded.training
    original, restored = model.state_dict(), loaded.state_dict()
    assert original.keys() == restored.keys()
    for name in original:
        assert torch.equal(original[name], restored[name]), name
    assert torch.equal(model(*inputs), loaded(*inputs))


def test_config_json_describes_the_checkpoint(tmp_path):
    model, _ = _trained_model()
    save_model(model, tmp_path, tokenizer_identity="0123456789abcdef", extra={"step": 42})
    meta = json.loads((tmp_path / CONFIG_FILE).read_text())
    assert meta["tokenizer_identity"] == "0123456789abcdef"
    assert meta["extra"] == {"step": 42}
    assert meta["num_params"]["total"] == model.num_params()["total"]
    assert meta["model_config"]["name"] == "test"
    assert meta["format_version"] == 1
    assert read_checkpoint_meta(tmp_path) == meta


def test_atomic_write_leaves_no_temporary_files(tmp_path):
    model, _ = _trained_model()
    save_model(model, tmp_path)
    save_model(model, tmp_path)  # overwriting an existing checkpoint
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([CONFIG_FILE, WEIGHTS_FILE])
    with pytest.raises(TypeError, match="JSON"):
        save_model(model, tmp_path / "bad", extra={"not json": object()})
    assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").iterdir())


def test_missing_files_give_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_model(tmp_path / "nowhere")
    model, _ = _trained_model()
    save_model(model, tmp_path)
    (tmp_path / WEIGHTS_FILE).unlink()
    with pytest.raises(CheckpointError, match=f"missing {WEIGHTS_FILE}"):
        load_model(tmp_path)
    (tmp_path / CONFIG_FILE).unlink()
    with pytest.raises(CheckpointError, match=f"missing {CONFIG_FILE}"):
        load_model(tmp_path)


def test_corrupted_files_give_clear_errors(tmp_path):
    model, _ = _trained_model()
    save_model(model, tmp_path)
    weights = tmp_path / WEIGHTS_FILE
    data = weights.read_bytes()

    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_model(tmp_path)

    weights.write_bytes(b"\xff" * 64 + data[64:])  # same size, broken header
    with pytest.raises(CheckpointError, match="unreadable"):
        load_model(tmp_path)

    weights.write_bytes(data)
    meta = json.loads((tmp_path / CONFIG_FILE).read_text())
    meta["model_config"]["encoder"]["n_layers"] = 2
    (tmp_path / CONFIG_FILE).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="do not match"):
        load_model(tmp_path)

    (tmp_path / CONFIG_FILE).write_text('{"format_version": 1, "model_con')
    with pytest.raises(CheckpointError, match="corrupted JSON"):
        load_model(tmp_path)

    meta["format_version"] = 99
    (tmp_path / CONFIG_FILE).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="format_version"):
        load_model(tmp_path)


def test_import_fastaed_model_loads_only_torch():
    code = (
        "import sys, fastaed.model\n"
        "bad = [m for m in sys.modules if m.split('.')[0] == 'safetensors'"
        " or (m.startswith('fastaed.') and not m.startswith('fastaed.model'))]\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""
