"""A frozen encoder stays bit-identical under data parallelism too (issue 29, item 3): the gradient all-reduce
keeps a parameter without a gradient on every rank gradient-less (a zero gradient would let AdamW's weight
decay and step count touch it), and while frozen the encoder's batch norms keep their running statistics.

Two checks on 2 gloo ranks: the all-reduce + AdamW directly (both ranks, one of them with an empty batch),
and ``fastaed train`` under torchrun from an ``init_from`` checkpoint (the run's checkpoint, weights,
buffers and optimizer state)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from fastaed.data.tokenizer import Tokenizer
from fastaed.formats import load_model
from fastaed.model import build_model, preset_config
from fastaed.train import distributed as D
from fastaed.train.checkpoint import STATE_FILE, save_checkpoint
from fastaed.train.step import build_optimizer
from tests.train import TEST_CONFIG, subprocess_env, tiny_data

TORCHRUN = Path(sys.executable).parent / "torchrun"
TIMEOUT_S = 120


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Linear(4, 4)
        self.decoder = nn.Linear(4, 3)
        self.unused = nn.Linear(3, 3)  # no gradient on any rank: stays untouched too


def _rank(rank: int, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2")
    dist.init_process_group("gloo", rank=rank, world_size=2)
    D.setup("cpu")
    finished = False
    try:
        torch.manual_seed(0)
        model = Toy()
        optimizer, params = build_optimizer(model, torch.device("cpu"), lr=0.1, weight_decay=0.5)
        frozen = {k: v.clone() for k, v in model.encoder.state_dict().items()}
        model.encoder.requires_grad_(False)
        for step in range(3):
            if not (rank == 1 and step == 0):  # rank 1's first batch is empty: no backward at all
                x = torch.randn(5, 4, generator=torch.Generator().manual_seed(10 * step + rank))
                model.decoder(model.encoder(x)).square().sum().backward()
            D.all_reduce_gradients_(params)
            assert model.encoder.weight.grad is None and model.unused.weight.grad is None
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        for k, v in model.encoder.state_dict().items():
            assert torch.equal(v, frozen[k]), f"rank {rank}: encoder {k} moved"
        untouched = [*model.encoder.parameters(), *model.unused.parameters()]
        assert not any(p in optimizer.state for p in untouched), (
            f"rank {rank}: AdamW state for frozen weights"
        )
        assert all(int(optimizer.state[p]["step"]) == 3 for p in model.decoder.parameters())
        weights = D.all_gather_objects(model.decoder.weight.detach().clone())
        assert torch.equal(weights[0], weights[1]), "ranks disagree on the decoder"
        finished = True
    finally:
        D.cleanup()
        D.leave_group(finished)


def test_gradient_all_reduce_leaves_gradientless_parameters_alone_on_every_rank():
    mp.spawn(_rank, args=(_free_port(),), nprocs=2, join=True)


def _optimizer_names(model: nn.Module) -> list[str]:
    """Parameter names in the order of the optimizer's state indices (``build_optimizer``'s two groups)."""
    named = [(n, p) for n, p in model.named_parameters()]
    return [n for n, p in named if p.ndim >= 2] + [n for n, p in named if p.ndim < 2]


@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun is not installed next to the interpreter")
def test_frozen_encoder_is_bit_identical_after_training_on_two_gloo_ranks(tmp_path):
    manifest, tok_dir = tiny_data(tmp_path, num=7)
    tokenizer = Tokenizer.load(tok_dir)
    torch.manual_seed(3)
    start = build_model(preset_config("test", tokenizer.vocab_size))
    init = save_checkpoint(tmp_path / "init", 0, start, {}, tokenizer_identity=tokenizer.identity,
                           tokenizer=tokenizer)  # fmt: skip
    run = tmp_path / "run"
    args = [
        "--config", str(TEST_CONFIG), f"data.train_manifests=[{manifest}]", "data.tokenizer=null",
        f"model.init_from={init}", "model.ctc_weight=null", f"runtime.out_dir={run}", "optim.max_steps=3",
        "optim.freeze_encoder_steps=3", "optim.warmup_steps=1", "optim.weight_decay=0.1",
        "runtime.ckpt_every=3", "specaugment.enabled=false",
    ]  # fmt: skip
    cmd = [str(TORCHRUN), "--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port"]
    cmd += [str(_free_port()), "-m", "fastaed.cli.train", *args]
    out = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=TIMEOUT_S)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]

    trained = load_model(run / "ckpt-3")
    before = start.encoder.state_dict()
    for k, v in trained.encoder.state_dict().items():  # weights and batch-norm statistics
        assert torch.equal(v, before[k]), f"encoder {k} moved while frozen"
    assert any(
        not torch.equal(v, start.decoder.state_dict()[k]) for k, v in trained.decoder.state_dict().items()
    )
    state = torch.load(run / "ckpt-3" / STATE_FILE, map_location="cpu", weights_only=True)["optimizer"]
    names = _optimizer_names(start)
    stepped = {names[i] for i in state["state"]}
    assert stepped and not any(n.startswith("encoder.") for n in stepped), (
        "AdamW state for the frozen encoder"
    )
    assert any(n.startswith("decoder.") for n in stepped)
