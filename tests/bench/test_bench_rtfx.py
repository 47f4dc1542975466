"""The RTFx benchmark: its NeMo-style baseline decodes exactly what ours does, and a tiny run writes every
promised JSON field."""

from __future__ import annotations

import json

import torch

from fastaed.bench.rtfx import time_decoders
from fastaed.cli.main import build_parser
from fastaed.decode import greedy_search
from fastaed.model import build_model


def test_nemo_style_baseline_decodes_the_same_tokens():
    torch.manual_seed(0)
    model = build_model("test", vocab_size=40).eval()
    enc, enc_lens = torch.randn(3, 9, 32), torch.tensor([9, 9, 9])
    prompts = torch.tensor([[2, 10, 3, 10, 5]] * 3)
    lengths = torch.tensor([4, 6, 6])  # rows end apart: the baseline keeps the done one in the batch
    ours = [h.tokens for h in greedy_search(model, enc, enc_lens, prompts, 1, force_lengths=lengths)]
    nemo = greedy_search(
        model, enc, enc_lens, prompts, 1, force_lengths=lengths, cache_kind="hidden", compact=False
    )
    assert [h.tokens for h in nemo] == ours
    assert [len(t) for t in ours] == [4, 6, 6]
    timed = time_decoders(model, eos_id=1, batch_size=2, frames=9, num_tokens=5, repeats=1)
    assert timed["identical_tokens"] and timed["speedup"] > 0


def test_tiny_rtfx_run_writes_every_field(tmp_path):
    out = tmp_path / "rtfx.json"
    argv = ["bench", "rtfx", "--flash", "test", "--balanced", "test", "--num-utts", "3", "--min-seconds", "1",
            "--max-seconds", "2", "--batch-sizes", "1", "2", "--decoder-batch-sizes", "1", "2",
            "--decoder-frames", "12", "--decoder-tokens", "5", "--threads", "1",
            "--json", str(out)]  # fmt: skip
    args = build_parser().parse_args(argv)
    assert args.func(args) == 0
    doc = json.loads(out.read_text())
    assert {"flash_vs_balanced", "kv_cache_vs_nemo_style", "configs", "decoders", "protocol"} <= doc.keys()
    assert set(doc["kv_cache_vs_nemo_style"]) == {"batch_1", "batch_2"}
    assert set(doc["flash_vs_balanced"]) == {"batch_1", "batch_2"} and len(doc["configs"]) == 4
    for c in doc["configs"]:
        assert {"rtfx", "batch_size", "dtype", "device"} <= c.keys() and c["rtfx"] > 0
    assert all(d["identical_tokens"] for d in doc["decoders"])
