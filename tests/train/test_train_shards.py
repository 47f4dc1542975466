"""``fastaed train`` on tar shards (NeMo tarred and Lhotse Shar), one process: it trains, and a run stopped
mid-epoch and resumed from its checkpoint repeats the uninterrupted run batch for batch, to the same final
weights, from the saved buffers and stream position (no replay of the epoch)."""

from __future__ import annotations

import pytest
import torch

from fastaed.data.shards import write_shards
from fastaed.formats import load_model
from fastaed.testing import train_tiny_tokenizer, write_tiny_corpus
from fastaed.train.checkpoint import load_trainer_state
from fastaed.train.config import ConfigError, TrainConfig
from fastaed.train.loop import train
from tests.data.test_shards_shar import write_shar
from tests.train import TEST_CONFIG, train_records


def shard_config(shards, tok_dir, out_dir, *overrides):
    base = ["data.train_manifests=[]", f"data.train_shards=[{shards}]", f"data.tokenizer={tok_dir}"]
    return TrainConfig.from_yaml(TEST_CONFIG, [*base, f"runtime.out_dir={out_dir}", *overrides])


@pytest.fixture(scope="module", params=["nemo", "shar"])
def shard_set(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    tok_dir = root / "tok"
    train_tiny_tokenizer(tok_dir)
    if request.param == "nemo":
        manifest = write_tiny_corpus(root / "data", num=12)
        write_shards([manifest], root / "shards", seconds_per_shard=3.5)  # uneven shard sizes
        return root / "shards", tok_dir
    return write_shar(root / "shar", 3, [0.5 + 0.25 * (i % 6) for i in range(11)]), tok_dir


def test_stopped_and_resumed_run_repeats_the_uninterrupted_one(shard_set, tmp_path):
    shards, tok_dir = shard_set
    run = ["optim.max_steps=7", "runtime.ckpt_every=3", "model.dropout=0.1"]
    ref = train(shard_config(shards, tok_dir, tmp_path / "ref", *run), resume="none")
    assert ref["steps"] == 7
    cut = shard_config(shards, tok_dir, tmp_path / "cut", "optim.max_steps=3", *run[1:])
    train(cut, resume="none")
    state = load_trainer_state(tmp_path / "cut" / "ckpt-3")["sampler"]
    assert isinstance(state, list) and len(state) == 1  # one state per rank
    assert state[0]["steps_done"] == 3 and sum(map(len, state[0]["buffers"])) > 0  # buffers saved, mid-epoch
    train(shard_config(shards, tok_dir, tmp_path / "cut", *run), resume=str(tmp_path / "cut" / "ckpt-3"))
    a, b = (
        train_records(tmp_path / "ref" / "metrics.jsonl"),
        train_records(tmp_path / "cut" / "metrics.jsonl"),
    )
    assert sorted(a) == sorted(b) == list(range(1, 8))
    for step in a:
        assert (a[step]["bucket"], a[step]["batch_sha1"]) == (b[step]["bucket"], b[step]["batch_sha1"]), step
    wa, wb = load_model(tmp_path / "ref" / "ckpt-7"), load_model(tmp_path / "cut" / "ckpt-7")
    for (name, x), y in zip(wa.state_dict().items(), wb.state_dict().values(), strict=True):
        assert torch.equal(x, y), name


def test_manifests_and_shards_are_exclusive(tmp_path):
    with pytest.raises(ConfigError, match="exactly one"):
        TrainConfig.from_yaml(TEST_CONFIG, [f"data.train_shards=[{tmp_path}]"])
