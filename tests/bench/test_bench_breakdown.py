"""`fastaed bench breakdown`: the stage timer adds up, a decoding step's operators are counted, the report
prints every model, and unknown models are refused."""

from __future__ import annotations

import pytest
import torch

from fastaed.bench import breakdown as bd
from fastaed.model import build_model


def test_a_decoding_step_dispatches_a_counted_number_of_operators():
    torch.manual_seed(0)
    model = build_model("test", vocab_size=40).eval()
    enc, lens = torch.randn(1, 9, 32), torch.tensor([9])
    prompt = torch.tensor([[2, 10, 3]])
    ops = bd.ops_per_step(model, enc, lens, prompt)
    assert 20 < ops < 2000  # one layer: embedding, norms, projections, two attentions, feed-forward, head
    assert bd.dispatch_seconds(200) > 0


def test_stages_of_one_clip_add_up_to_the_search(tmp_path):
    """The replayed pieces (set-up, steps) of a forced-length search on a tiny model never exceed the search,
    and blocks + head = steps by construction."""
    from fastaed.bench.fixtures import small_tokenizer
    from fastaed.data.manifest import Utterance
    from fastaed.decode.transcribe import DecodeConfig, Transcriber
    from fastaed.testing import write_tone

    torch.manual_seed(0)
    tok = small_tokenizer(tmp_path / "tok", vocab_size=64)
    model = build_model("test", vocab_size=tok.vocab_size).eval()
    tr = Transcriber.from_model(model, tok, DecodeConfig(batch_size=1, decode_text=False, progress=False))
    wav = write_tone(tmp_path / "a.wav", 1.0)
    utt = Utterance(str(wav), 1.0, "", source_lang="en", target_lang="en", pnc=True)
    out = bd._one_clip(tr, utt, torch.tensor([7]), torch.randn(1, model.config.decoder.d_model))
    t = out["seconds"]
    assert out["tokens"] == 8  # 7 forced tokens and the EOS
    assert t["blocks"] + t["head"] == pytest.approx(t["steps"])
    assert all(t[k] > 0 for k in ("read", "features", "encoder", "setup", "steps", "head", "search"))


def test_unknown_models_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown model"):
        bd.model_transcriber("whisper-huge-v9", "fp32", tmp_path)


def test_report_prints_each_model(capsys):
    stages = {k: 1.0 for k in (*bd.STAGES, "search")}
    row = {
        "model": "tiny.en", "dtype": "int8", "rtfx": 7.5, "ms_per_clip": stages, "tokens_per_clip": 9.0,
        "ms_per_token": {"blocks": 1.0, "head": 0.5, "search_overhead": 0.1}, "ops_per_step": 500,
        "dispatch_ms_per_token": 0.7,
    }  # fmt: skip
    result = {"models": [row], "clips": {"count": 2}, "threads": 2, "cpu": "cpu", "config": {"repeats": 3}}
    bd.print_report(result)
    out = capsys.readouterr().out
    assert "tiny.en" in out and "int8" in out and "7.50" in out and "1.00/0.50/0.10" in out


def test_linear_backends_are_checked_where_they_are_given():
    assert bd.BreakdownBenchConfig(cpu_linears=("default", "onednn")).cpu_linears == ("default", "onednn")
    with pytest.raises(ValueError, match="cpu_linears"):
        bd.BreakdownBenchConfig(cpu_linears=("mkl",))
