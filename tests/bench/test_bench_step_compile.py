"""`fastaed bench step-compile`: the replay feeds a clip's pre-fill and tokens and returns one row of logits
per step; the report renders a result (the compile itself takes ~40 s per model: outside the default run)."""

from __future__ import annotations

import torch

from fastaed.bench import step_compile as sc
from fastaed.model import build_model


def test_replay_returns_the_prefill_and_every_step_and_is_repeatable():
    torch.manual_seed(0)
    model = build_model("tiny-flash", vocab_size=50).eval()
    enc = torch.randn(1, 7, model.config.decoder.d_model)
    clip = sc._Clip(
        enc, torch.tensor([7]), torch.tensor([[1, 2, 3]]), [torch.tensor([[4]]), torch.tensor([[5]])]
    )
    with torch.inference_mode():
        seconds, logits = sc._replay(model.decoder.step, model, clip)
        _, again = sc._replay(model.decoder.step, model, clip)
    assert logits.shape == (3, 50) and seconds > 0
    assert torch.equal(logits, again)  # a fresh cache per replay: eager and compiled see the same inputs


def test_report_names_speed_compile_time_and_identity(capsys):
    row = {
        "model": "tiny.en", "steps": 40, "eager_ms_per_step": 10.0, "compiled_ms_per_step": 12.5,
        "speedup": 0.8, "compile_seconds": 41.0, "identical_logits": False, "max_abs_logit_diff": 9e-5,
        "same_token_share": 1.0,
    }  # fmt: skip
    sc.print_report({"clips": {"count": 6}, "threads": 2, "torch": "2.13.0", "models": [row]})
    out = capsys.readouterr().out
    assert "0.80x" in out and "41" in out and "no" in out and "100.0%" in out
