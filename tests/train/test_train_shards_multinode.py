"""Two "nodes" of two gloo ranks each (``torchrun --nnodes 2 --nproc-per-node 2``, c10d rendezvous on
localhost) train on uneven NeMo-tarred shards: equal steps on every rank, no shard read by two ranks; a run
SIGKILLed after a checkpoint and resumed (every rank from its own saved buffers) repeats the uninterrupted
run on all four ranks, to the same final weights."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fastaed.data.shards import write_shards
from fastaed.formats import load_model
from fastaed.testing import train_tiny_tokenizer, write_tiny_corpus
from fastaed.train.checkpoint import find_latest
from tests.train import TEST_CONFIG, subprocess_env, train_records
from tests.train.test_ddp import _free_port

TORCHRUN = Path(sys.executable).parent / "torchrun"
RUN = ["optim.max_steps=6", "runtime.ckpt_every=3", "debug.log_all_ranks=true", "model.dropout=0.1"]
TIMEOUT_S = 120


def _launch(shards, tok_dir, out_dir, port, log, *extra) -> list[subprocess.Popen]:
    """Both nodes of one job; each torchrun in its own process group (so a kill takes its ranks too)."""
    args = ["-m", "fastaed.cli.train", "--config", str(TEST_CONFIG), "data.train_manifests=[]"]
    args += [f"data.train_shards=[{shards}]", f"data.tokenizer={tok_dir}", f"runtime.out_dir={out_dir}"]
    node = [str(TORCHRUN), "--nnodes", "2", "--nproc-per-node", "2", "--rdzv-backend", "c10d"]
    node += ["--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", f"job{port}"]
    env = subprocess_env()
    return [
        subprocess.Popen(
            [*node, *args, *RUN, *extra], env=env, stdout=log, stderr=log, start_new_session=True
        )
        for _ in range(2)
    ]


def _wait(procs, log_path):
    try:
        for p in procs:
            assert p.wait(timeout=TIMEOUT_S) == 0, log_path.read_text()[-4000:]
    finally:  # a node left waiting for its partner must not outlive the test
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def _steps(path: Path) -> int:
    if not path.is_file():
        return 0
    lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip().endswith("}")]
    return max((r["step"] for r in lines if r["type"] == "train"), default=0)


@pytest.mark.slow
@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun is not installed next to the interpreter")
def test_two_nodes_of_two_ranks_resume_a_killed_run_exactly(tmp_path):
    manifest = write_tiny_corpus(tmp_path / "data", num=12)
    write_shards([manifest], tmp_path / "shards", seconds_per_shard=3.5)  # 8 shards of 1-2 utterances
    tok_dir = tmp_path / "tok"
    train_tiny_tokenizer(tok_dir)
    ref, run = tmp_path / "ref", tmp_path / "run"
    log_path = tmp_path / "log.txt"
    log = open(log_path, "w")  # noqa: SIM115
    # Two jobs run at once: their rendezvous ports (and ids) must differ, or four agents meet in one job.
    # A port is only free until torchrun binds it, so ask until the two answers differ.
    ref_port = _free_port()
    run_port = _free_port()
    while run_port == ref_port:
        run_port = _free_port()
    reference = _launch(tmp_path / "shards", tok_dir, ref, ref_port, log)
    victim = _launch(tmp_path / "shards", tok_dir, run, run_port, log, "debug.sleep_per_step_s=1.0")
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline and (find_latest(run) is None or _steps(run / "metrics.jsonl") < 4):
        assert all(p.poll() is None for p in victim), log_path.read_text()[-4000:]
        time.sleep(0.05)
    for p in victim:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    killed_at = _steps(run / "metrics.jsonl")
    assert find_latest(run).name == "ckpt-3" and 3 < killed_at < 6, killed_at
    _wait(reference, log_path)
    resumed = _launch(tmp_path / "shards", tok_dir, run, _free_port(), log)
    _wait(resumed, log_path)

    files = ["metrics.jsonl", *(f"metrics.rank{r}.jsonl" for r in (1, 2, 3))]
    first = [train_records(ref / f) for f in files]
    again = [train_records(run / f) for f in files]
    for rank, (a, b) in enumerate(zip(first, again)):
        assert sorted(a) == sorted(b) == list(range(1, 7)), rank  # equal steps on every rank
        for step in a:
            assert (a[step]["bucket"], a[step]["batch_sha1"]) == (b[step]["bucket"], b[step]["batch_sha1"])
    for step in range(1, 7):  # four ranks, four different batches at every step
        assert len({r[step]["batch_sha1"] for r in first}) == 4, step
    wa, wb = load_model(ref / "ckpt-6"), load_model(run / "ckpt-6")
    for (name, x), y in zip(wa.state_dict().items(), wb.state_dict().values(), strict=True):
        assert torch.equal(x, y), name
    assert "resumed from" in log_path.read_text()
