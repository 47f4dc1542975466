"""``fastaed bench finetune`` on a tiny random Whisper: both recipes train from the same checkpoint, the
padded one with its fixed batch size and 30 s inputs, and the report carries every measured quantity."""

from __future__ import annotations

from dataclasses import asdict

import torch

from fastaed.bench.finetune import FinetuneBenchConfig, print_report, run
from fastaed.formats.whisper import fastaed_to_canonical
from fastaed.formats.whisper_import import import_whisper
from fastaed.testing import write_tiny_corpus
from tests import whisper_fixtures as wf
from tests.train import REPO


def test_bucketed_and_padded_recipes_run_on_the_same_checkpoint(tmp_path, capsys):
    tok_path, vocab = wf.tokenizer_json(tmp_path)
    model = wf.random_model(vocab, n_mels=16, d_model=32, heads=2, layers=1, audio_positions=1500)
    dims, canonical = fastaed_to_canonical(model)
    torch.save({"dims": asdict(dims), "model_state_dict": canonical}, tmp_path / "w.pt")
    ckpt = import_whisper(tmp_path / "w.pt", tmp_path / "ckpt", tokenizer_json=tok_path)
    manifest = write_tiny_corpus(tmp_path / "data", num=8)
    config = FinetuneBenchConfig(
        config=REPO / "configs" / "finetune_whisper_tiny.yaml", checkpoint=ckpt, train_manifest=manifest,
        dev_manifest=manifest, time_budget_s=60.0, max_steps=2, threads=1, max_duration=4.0,
        padded_batch_size=3, eval_max_utts=2, out_dir=tmp_path / "runs",
    )  # fmt: skip
    result = run(config)
    by = {r["recipe"]: r for r in result["runs"]}
    assert set(by) == {"bucketed", "padded"} and all(r["steps"] == 2 for r in by.values())
    assert by["padded"]["mean_batch_size"] == 3.0  # the fixed batch size
    # 8 utterances of 0.5..2.25 s in 30 s windows: most of what the padded encoder computes is padding
    assert by["padded"]["input_padding"] > 0.9 > by["bucketed"]["input_padding"]
    assert all(r["dev_wer"] is not None and r["peak_mem_mb"] > 0 for r in by.values())
    print_report(result)
    assert "bucketed / padded" in capsys.readouterr().out
