"""Exact resume: a run killed with SIGKILL mid-run and resumed from its last checkpoint trains on the same
batches with the same losses (CPU, float tolerance) as a run that was never interrupted. Real subprocesses."""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import time

import pytest

from fastaed.formats import CheckpointError
from fastaed.train.checkpoint import find_latest, list_checkpoints, load_trainer_state
from tests.train import subprocess_env, tiny_data, train_command, train_records

# Dropout, dither and SpecAugment all on, a DataLoader worker prefetching ahead, steps slowed so the kill
# lands mid-run; three epochs of 5 steps, so the run resumes inside an epoch and crosses epoch boundaries.
RUN = [
    "optim.max_steps=14",
    "runtime.ckpt_every=4",
    "runtime.num_workers=1",
    "model.dropout=0.1",
    "specaugment.start_step=2",
    "debug.sleep_per_step_s=0.25",
]
TIMEOUT_S = 120


def _steps_logged(metrics) -> int:
    if not metrics.is_file():
        return 0
    lines = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip().endswith("}")]
    return max((r["step"] for r in lines if r["type"] == "train"), default=0)


def test_kill9_and_resume_repeats_the_uninterrupted_run(tmp_path):
    manifest, tok_dir = tiny_data(tmp_path)
    env = subprocess_env()
    ref_dir, run_dir = tmp_path / "uninterrupted", tmp_path / "killed"
    log = open(tmp_path / "log.txt", "w")  # noqa: SIM115
    reference = subprocess.Popen(
        train_command(manifest, tok_dir, ref_dir, *RUN), env=env, stdout=log, stderr=log
    )
    victim = subprocess.Popen(
        train_command(manifest, tok_dir, run_dir, *RUN), env=env, stdout=log, stderr=log
    )

    # Kill -9 a random 1..3 steps after the first checkpoint has appeared.
    extra = random.randint(1, 3)
    deadline = time.monotonic() + TIMEOUT_S
    target = None
    while time.monotonic() < deadline and victim.poll() is None:
        latest = find_latest(run_dir)
        if latest is not None and target is None:
            target = load_trainer_state(latest)["position"]["step"] + extra
        if target is not None and _steps_logged(run_dir / "metrics.jsonl") >= target:
            break
        time.sleep(0.02)
    assert victim.poll() is None, f"the run ended before it could be killed (see {tmp_path / 'log.txt'})"
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    killed_at = _steps_logged(run_dir / "metrics.jsonl")
    resume_step = int(find_latest(run_dir).name.split("-")[1])
    assert resume_step < killed_at < 14, (resume_step, killed_at)

    resumed = subprocess.run(
        train_command(manifest, tok_dir, run_dir, *RUN),
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from {run_dir / f'ckpt-{resume_step}'}" in resumed.stdout
    assert reference.wait(timeout=TIMEOUT_S) == 0, (tmp_path / "log.txt").read_text()[-3000:]

    ref, got = train_records(ref_dir / "metrics.jsonl"), train_records(run_dir / "metrics.jsonl")
    assert sorted(got) == sorted(ref) == list(range(1, 15))
    for step in ref:
        a, b = ref[step], got[step]
        assert (b["epoch"], b["bucket"], b["batch_sha1"]) == (a["epoch"], a["bucket"], a["batch_sha1"]), step
        assert math.isclose(b["loss"], a["loss"], rel_tol=1e-5, abs_tol=1e-6), (step, a["loss"], b["loss"])
        assert math.isclose(b["grad_norm"], a["grad_norm"], rel_tol=1e-4, abs_tol=1e-6), step
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["resumed_from"].endswith(f"ckpt-{resume_step}") and summary["steps"] == 14
    assert [s for s, _ in list_checkpoints(run_dir)] == [12, 14]  # keep_checkpoints=2


@pytest.mark.parametrize("resume", ["none", "missing"])
def test_resume_none_starts_fresh_and_a_bad_path_is_an_error(tmp_path, resume):
    manifest, tok_dir = tiny_data(tmp_path)
    from fastaed.train.loop import train
    from tests.train import make_config

    cfg = make_config(manifest, tok_dir, tmp_path / "run", "optim.max_steps=2", "runtime.ckpt_every=1")
    train(cfg, resume="auto")
    if resume == "none":
        summary = train(cfg, resume="none")
        assert summary["resumed_from"] is None and summary["steps"] == 2
    else:
        with pytest.raises(CheckpointError, match="cannot resume from .*nope: no such checkpoint"):
            train(cfg, resume=tmp_path / "nope")
