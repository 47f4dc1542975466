"""Checkpoints describe themselves, round-trip exactly, are written atomically, and fail loudly."""

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import warnings

import pytest
import torch

from fastaed.formats import (
    CHECKSUMS_FILE,
    CONFIG_FILE,
    WEIGHTS_FILE,
    CheckpointError,
    UnverifiedCheckpointWarning,
    load_model,
    read_checkpoint_meta,
    save_model,
    verify_checksums,
    write_checksums,
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
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([CHECKSUMS_FILE, CONFIG_FILE, WEIGHTS_FILE])
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
    write_checksums(tmp_path, [CONFIG_FILE, WEIGHTS_FILE])  # as if saved that way: past the checksums
    with pytest.raises(CheckpointError, match="unreadable"):
        load_model(tmp_path)

    weights.write_bytes(data)
    meta = json.loads((tmp_path / CONFIG_FILE).read_text())
    meta["model_config"]["encoder"]["n_layers"] = 2
    (tmp_path / CONFIG_FILE).write_text(json.dumps(meta))
    write_checksums(tmp_path, [CONFIG_FILE, WEIGHTS_FILE])
    with pytest.raises(CheckpointError, match="do not match"):
        load_model(tmp_path)

    (tmp_path / CONFIG_FILE).write_text('{"format_version": 1, "model_con')
    write_checksums(tmp_path, [CONFIG_FILE, WEIGHTS_FILE])
    with pytest.raises(CheckpointError, match="corrupted JSON"):
        load_model(tmp_path)

    meta["format_version"] = 99
    (tmp_path / CONFIG_FILE).write_text(json.dumps(meta))
    write_checksums(tmp_path, [CONFIG_FILE, WEIGHTS_FILE])
    with pytest.raises(CheckpointError, match="format_version"):
        load_model(tmp_path)


def _flip_middle_bytes(path, count=16):
    """Corrupt a file in place, keeping its size: what a bad disk or transfer does."""
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + count] = bytes(b ^ 0x5A for b in data[mid : mid + count])
    path.write_bytes(bytes(data))


def test_checksums_list_size_and_sha256_of_every_file(tmp_path):
    model, _ = _trained_model()
    save_model(model, tmp_path)
    listing = json.loads((tmp_path / CHECKSUMS_FILE).read_text())
    assert listing["algorithm"] == "sha256"
    assert sorted(listing["files"]) == sorted([CONFIG_FILE, WEIGHTS_FILE])
    for name, entry in listing["files"].items():
        data = (tmp_path / name).read_bytes()
        assert entry == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert verify_checksums(tmp_path) is True


@pytest.mark.parametrize("name", [WEIGHTS_FILE, CONFIG_FILE])
def test_same_size_corruption_is_detected_naming_the_file(tmp_path, name):
    model, _ = _trained_model()
    save_model(model, tmp_path)
    target = tmp_path / name
    size = target.stat().st_size
    if name == CONFIG_FILE:  # still valid JSON with a plausible value: only the checksum can tell
        text = target.read_text()
        i = text.index('"total": ') + len('"total": ')
        target.write_text(text[:i] + str((int(text[i]) + 1) % 10) + text[i + 1 :])
    else:
        _flip_middle_bytes(target)
    assert target.stat().st_size == size
    with pytest.raises(CheckpointError, match=rf"{name}: sha256 differs"):
        load_model(tmp_path)


def test_missing_files_are_detected(tmp_path):
    model, _ = _trained_model()
    save_model(model, tmp_path)
    (tmp_path / "notes.txt").write_text("listed, then lost\n")
    write_checksums(tmp_path)  # every file in the folder
    (tmp_path / "notes.txt").unlink()
    with pytest.raises(CheckpointError, match=r"notes\.txt: missing"):
        verify_checksums(tmp_path)
    # A checkpoint whose config says checksums were written does not pass for an old one without them.
    (tmp_path / CHECKSUMS_FILE).unlink()
    with pytest.raises(CheckpointError, match=f"missing {CHECKSUMS_FILE}"):
        load_model(tmp_path)


def test_legacy_checkpoint_without_checksums_loads_with_one_warning(tmp_path):
    model, inputs = _trained_model()
    save_model(model, tmp_path)
    # What fastaed wrote before checksums: no checksums.json, and config.json does not mention it.
    (tmp_path / CHECKSUMS_FILE).unlink()
    meta = json.loads((tmp_path / CONFIG_FILE).read_text())
    del meta["checksums_file"]
    (tmp_path / CONFIG_FILE).write_text(json.dumps(meta))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first, second = load_model(tmp_path), load_model(tmp_path)
    unverified = [w for w in caught if issubclass(w.category, UnverifiedCheckpointWarning)]
    assert len(unverified) == 1 and CHECKSUMS_FILE in str(unverified[0].message)
    assert torch.equal(first(*inputs), model(*inputs)) and torch.equal(second(*inputs), model(*inputs))


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_checkpoint_files_get_ordinary_permissions(tmp_path, umask):
    model, _ = _trained_model()
    old = os.umask(umask)
    try:
        save_model(model, tmp_path / "ckpt")
        save_model(model, tmp_path / "ckpt")  # replacing files keeps ordinary permissions too
    finally:
        os.umask(old)
    assert (tmp_path / "ckpt").stat().st_mode & 0o777 == 0o777 & ~umask
    for name in (WEIGHTS_FILE, CONFIG_FILE, CHECKSUMS_FILE):
        assert (tmp_path / "ckpt" / name).stat().st_mode & 0o777 == 0o666 & ~umask, name


def test_import_fastaed_model_loads_only_torch():
    code = (
        "import sys, fastaed.model\n"
        "bad = [m for m in sys.modules if m.split('.')[0] == 'safetensors'"
        " or (m.startswith('fastaed.') and not m.startswith('fastaed.model'))]\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""
