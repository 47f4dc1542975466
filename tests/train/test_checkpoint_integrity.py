"""Resume checkpoints prove themselves: every file is listed with its sha256, a corrupted latest checkpoint
is passed over (and set aside) for the newest intact one, a corrupted checkpoint named explicitly is an
error, checkpoints from before checksums still resume, and files get ordinary permissions."""

from __future__ import annotations

import json
import os

import pytest
import torch

from fastaed.formats import CHECKSUMS_FILE, WEIGHTS_FILE, CheckpointError, UnverifiedCheckpointWarning
from fastaed.model import build_model, preset_config
from fastaed.testing import train_tiny_tokenizer
from fastaed.train.checkpoint import (
    STATE_FILE,
    find_intact,
    list_checkpoints,
    resolve_resume,
    save_checkpoint,
    verify_checkpoint,
)
from fastaed.train.loop import train
from tests.train import make_config, tiny_data


def _flip_middle_bytes(path, count=16):
    """Corrupt a file in place, keeping its size: what a bad disk or transfer does."""
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + count] = bytes(b ^ 0x5A for b in data[mid : mid + count])
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    """A run folder with resume checkpoints at steps 2 and 4 of a small model (no training: fast)."""
    root = tmp_path_factory.mktemp("ckpts")
    tokenizer = train_tiny_tokenizer(root / "tokenizer")
    model = build_model(preset_config("test"))
    return root, model, tokenizer


def _save(out, model, tokenizer, steps, keep=3):
    for step in steps:
        state = {"position": {"step": step}, "optimizer": {}, "rng": []}
        save_checkpoint(out, step, model, state, tokenizer_identity=tokenizer.identity, keep=keep,
                        tokenizer=tokenizer)  # fmt: skip


def test_resume_checkpoint_lists_every_file_it_holds(saved_run, tmp_path):
    _, model, tokenizer = saved_run
    _save(tmp_path, model, tokenizer, [2])
    ckpt = tmp_path / "ckpt-2"
    listed = json.loads((ckpt / CHECKSUMS_FILE).read_text())["files"]
    on_disk = {p.relative_to(ckpt).as_posix() for p in ckpt.rglob("*") if p.is_file()} - {CHECKSUMS_FILE}
    assert set(listed) == on_disk
    assert {STATE_FILE, WEIGHTS_FILE, "tokenizer/tokenizer.model"} <= on_disk
    verify_checkpoint(ckpt)


@pytest.mark.parametrize("damage", ["flip_weights", "flip_state", "lose_tokenizer_file"])
def test_auto_resume_passes_over_a_damaged_latest_checkpoint(saved_run, tmp_path, damage):
    _, model, tokenizer = saved_run
    _save(tmp_path, model, tokenizer, [2, 4])
    latest = tmp_path / "ckpt-4"
    if damage == "lose_tokenizer_file":
        (latest / "tokenizer" / "tokenizer.json").unlink()
    else:
        _flip_middle_bytes(latest / (WEIGHTS_FILE if damage == "flip_weights" else STATE_FILE))
    said: list[str] = []
    assert resolve_resume("auto", tmp_path, report=said.append) == tmp_path / "ckpt-2"
    assert len(said) == 1 and "skipped checkpoint" in said[0] and str(latest) in said[0]
    assert ("missing" if damage == "lose_tokenizer_file" else "sha256 differs") in said[0]
    # Set aside, not deleted, and no longer a checkpoint that pruning counts.
    assert not latest.exists() and (tmp_path / "ckpt-4.corrupt").is_dir()
    assert [s for s, _ in list_checkpoints(tmp_path)] == [2]


def test_a_damaged_checkpoint_named_explicitly_is_an_error(saved_run, tmp_path):
    _, model, tokenizer = saved_run
    _save(tmp_path, model, tokenizer, [2, 4])
    _flip_middle_bytes(tmp_path / "ckpt-4" / WEIGHTS_FILE)
    with pytest.raises(CheckpointError, match=rf"cannot resume from .*ckpt-4.*{WEIGHTS_FILE}: sha256"):
        resolve_resume(tmp_path / "ckpt-4", tmp_path)
    assert (tmp_path / "ckpt-4").is_dir()  # nothing moved: the user asked for this one


def test_checkpoints_without_checksums_still_resume_with_a_warning(saved_run, tmp_path):
    _, model, tokenizer = saved_run
    _save(tmp_path, model, tokenizer, [2])
    ckpt = tmp_path / "ckpt-2"
    (ckpt / CHECKSUMS_FILE).unlink()  # as written before checksums: config.json does not mention them
    meta = json.loads((ckpt / "config.json").read_text())
    del meta["checksums_file"]
    (ckpt / "config.json").write_text(json.dumps(meta))
    with pytest.warns(UnverifiedCheckpointWarning, match=str(ckpt)):
        assert find_intact(tmp_path) == ckpt


def test_checkpoint_files_and_folders_get_ordinary_permissions(saved_run, tmp_path):
    _, model, tokenizer = saved_run
    old = os.umask(0o022)
    try:
        _save(tmp_path / "run", model, tokenizer, [2])
    finally:
        os.umask(old)
    ckpt = tmp_path / "run" / "ckpt-2"
    for p in [ckpt, *ckpt.rglob("*"), tmp_path / "run" / "latest"]:
        want = 0o755 if p.is_dir() else 0o644
        assert p.stat().st_mode & 0o777 == want, (p, oct(p.stat().st_mode))


def test_training_resumes_from_the_newest_intact_checkpoint(tmp_path, capsys):
    """Checkpoints at 2, 4 and the end (5), two kept; step 5's weights go bad on disk. The resumed run starts
    from 4, says why, and finishes; pruning never trades the intact 4 for the corrupt 5."""
    manifest, tok_dir = tiny_data(tmp_path)
    run = tmp_path / "run"
    common = ["runtime.ckpt_every=2", "runtime.keep_checkpoints=2"]
    train(make_config(manifest, tok_dir, run, "optim.max_steps=5", *common))
    assert [s for s, _ in list_checkpoints(run)] == [4, 5]
    _flip_middle_bytes(run / "ckpt-5" / WEIGHTS_FILE)
    capsys.readouterr()

    summary = train(make_config(manifest, tok_dir, run, "optim.max_steps=6", *common))
    out = capsys.readouterr().out
    assert f"skipped checkpoint {run / 'ckpt-5'}: {run / 'ckpt-5' / WEIGHTS_FILE}: sha256 differs" in out
    assert f"resumed from {run / 'ckpt-4'}" in out
    assert summary["resumed_from"] == str(run / "ckpt-4") and summary["steps"] == 6
    assert [s for s, _ in list_checkpoints(run)] == [4, 6]  # the corrupt 5 would have displaced 4
    for _, ckpt in list_checkpoints(run):
        verify_checkpoint(ckpt)
    assert (run / "ckpt-5.corrupt").is_dir()
    assert torch.isfinite(torch.tensor(summary["final_train_loss"]))
