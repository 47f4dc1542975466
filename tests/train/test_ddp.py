"""Two gloo ranks under torchrun: equal step counts, the same bucket on every rank at every step, different
utterances per rank, no hang on data that does not divide evenly, and a rank-0 checkpoint that resumes (with
the same world size) into exactly the batches and losses of the uninterrupted run."""

from __future__ import annotations

import json
import math
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from fastaed.train.loop import train
from tests.train import make_config, subprocess_env, tiny_data, train_command, train_records

TORCHRUN = Path(sys.executable).parent / "torchrun"
RUN = ["optim.max_steps=6", "runtime.ckpt_every=3", "debug.log_all_ranks=true", "model.dropout=0.1"]
TIMEOUT_S = 90  # a hang fails the test instead of blocking the suite


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(manifest, tok_dir, out_dir, *overrides: str) -> subprocess.CompletedProcess:
    python_cmd = train_command(manifest, tok_dir, out_dir, *RUN, *overrides)
    cmd = [str(TORCHRUN), "--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port"]
    cmd += [str(_free_port()), *python_cmd[1:]]  # torchrun takes "-m module args" in place of the interpreter
    out = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=TIMEOUT_S)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    return out


@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun is not installed next to the interpreter")
def test_two_gloo_ranks_stay_in_sync_and_resume_exactly(tmp_path):
    # 7 utterances over 2 ranks: odd, and the 2 buckets end in partial steps, so ranks must get repeats or
    # balanced tails to keep the same step count.
    manifest, tok_dir = tiny_data(tmp_path, num=7)
    # One file is missing (skipped and counted): the rank that draws it alone trains on an empty batch and
    # must still join every collective.
    (manifest.parent / "audio" / "u6.wav").unlink()
    first = tmp_path / "first"
    _torchrun(manifest, tok_dir, first, "data.on_bad_input=skip")

    rank0, rank1 = train_records(first / "metrics.jsonl"), train_records(first / "metrics.rank1.jsonl")
    assert sorted(rank0) == sorted(rank1) == list(range(1, 7))  # equal step counts
    for step in rank0:
        a, b = rank0[step], rank1[step]
        assert a["bucket"] == b["bucket"], f"step {step}: ranks drew from different buckets"
        assert a["batch_sha1"] != b["batch_sha1"], f"step {step}: ranks got the same utterances"
        assert a["loss"] == b["loss"] and a["batch_size"] == a["local_batch_size"] + b["local_batch_size"]
    assert any(
        r["local_batch_size"] == 0 for r in [*rank0.values(), *rank1.values()]
    )  # the empty-batch path ran
    summary = json.loads((first / "summary.json").read_text())
    skipped = sum(r["bad_input_skipped"] for r in rank0.values())
    assert summary["bad_input"]["audio_by_reason"] == {"missing_audio": skipped} and skipped >= 1
    # Rank 0 alone wrote the checkpoints (one directory per step, no temporary leftovers).
    assert sorted(p.name for p in first.iterdir() if "ckpt" in p.name) == ["ckpt-3", "ckpt-6"]

    # Resume the 2-rank checkpoint at step 3 elsewhere: steps 4..6 repeat the first run.
    second = tmp_path / "second"
    out = _torchrun(manifest, tok_dir, second, "data.on_bad_input=skip", "--resume", str(first / "ckpt-3"))
    assert "resumed from" in out.stdout
    again = train_records(second / "metrics.jsonl")
    assert sorted(again) == [4, 5, 6]
    for step, r in again.items():
        assert (r["bucket"], r["batch_sha1"]) == (rank0[step]["bucket"], rank0[step]["batch_sha1"])
        assert math.isclose(r["loss"], rank0[step]["loss"], rel_tol=1e-5, abs_tol=1e-6), step

    # The same checkpoint cannot resume with another world size.
    cfg = make_config(manifest, tok_dir, tmp_path / "single", *RUN)
    shutil.copytree(first / "ckpt-3", tmp_path / "single" / "ckpt-3")
    with pytest.raises(ValueError, match="written by 2 ranks"):
        train(cfg, resume="auto")
