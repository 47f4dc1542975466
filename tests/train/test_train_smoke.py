"""End to end on a tiny corpus: the CLI trains, evaluates and leaves a complete run directory (metrics with
every promised field, summary, learning curve, a self-describing checkpoint); the first epoch runs short
utterances first; a time budget stops cleanly; gradient accumulation runs."""

from __future__ import annotations

import json

import pytest
import torch

from fastaed.cli.train import main
from fastaed.formats import load_model
from fastaed.sampling import REJECT_REASONS
from fastaed.train.evaluate import duration_batches
from fastaed.train.loop import train
from tests.train import TEST_CONFIG, data_overrides, make_config, tiny_data, train_records

STEP_FIELDS = {
    "step", "epoch", "loss", "ce_loss", "ctc_loss", "lr", "grad_norm", "batch_size", "input_padding",
    "output_padding", "audio_s_per_s", "tokens_per_s", "peak_mem_mb", "bucket", "batch_sha1",
    "bad_input_skipped", "oom_splits", "step_time_s", "data_time_s", "skipped_step",
}  # fmt: skip
EVAL_FIELDS = {"step", "dev_loss", "wer", "cer", "wer_utts", "examples"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return tiny_data(tmp_path_factory.mktemp("smoke"))


def test_cli_run_leaves_a_complete_run_directory(data, tmp_path, capsys):
    manifest, tok_dir = data
    out = tmp_path / "run"
    argv = ["--config", str(TEST_CONFIG), *data_overrides(manifest, tok_dir, out, dev=True)]
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "runtime.eval_every=6", "runtime.ckpt_every=0", "optim.max_steps=8"])
    assert exit_info.value.code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert "dev WER / CER" in capsys.readouterr().out  # the human summary ends the run's output
    assert summary["steps"] == 8 and summary["stopped_by"] == "max_steps"
    assert 0 <= summary["input_padding"] < 1 and 0 <= summary["output_padding"] < 1
    assert summary["wer"] is not None and summary["cer"] is not None and summary["wer_utts"] == 4
    assert summary["rejected"]["total"] == 0 and set(summary["rejected"]["by_reason"]) == set(REJECT_REASONS)
    assert summary["bad_input"]["skipped"] == 0 and summary["bad_input"]["by_reason"] == {}

    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["type"] == "train"]
    evals = [r for r in records if r["type"] == "eval"]
    assert [r["step"] for r in steps] == list(range(1, 9))
    assert all(STEP_FIELDS <= r.keys() for r in steps)
    assert [r["step"] for r in evals] == [6, 8] and all(EVAL_FIELDS <= r.keys() for r in evals)
    assert summary["dev_loss"] == evals[-1]["dev_loss"]

    for name in ("summary.json", "summary.txt", "config.yaml", "learning_curve.png", "latest"):
        assert (out / name).is_file(), name
    assert (out / "latest").read_text().strip() == "ckpt-8"
    model = load_model(out / "ckpt-8")  # self-describing: no flags, and the tokenizer travels with it
    assert (out / "ckpt-8" / "tokenizer" / "tokenizer.model").is_file()
    assert model.config.name == "test" and model.config.ctc_weight == 0.3


def test_first_epoch_runs_short_utterances_first(data, tmp_path):
    manifest, tok_dir = data
    cfg = make_config(manifest, tok_dir, tmp_path / "run", "optim.max_steps=10", "runtime.ckpt_every=0")
    train(cfg, resume="none")
    records = train_records(tmp_path / "run" / "metrics.jsonl")
    epoch0 = [r["bucket"] for r in records.values() if r["epoch"] == 0]
    epoch1 = [r["bucket"] for r in records.values() if r["epoch"] == 1]
    assert epoch0 == sorted(epoch0) and len(set(epoch0)) > 1  # ascending buckets: a curriculum
    assert epoch1 and sorted(epoch1) == sorted(epoch0)  # later epochs cover the same buckets, shuffled


def test_time_budget_stops_cleanly_with_a_checkpoint(data, tmp_path):
    manifest, tok_dir = data
    cfg = make_config(
        manifest, tok_dir, tmp_path / "run", "runtime.time_budget_s=0.001", "optim.max_steps=50"
    )
    summary = train(cfg, resume="none")
    assert summary["stopped_by"] == "time_budget" and summary["steps"] == 1
    assert (tmp_path / "run" / "ckpt-1").is_dir() and (tmp_path / "run" / "summary.json").is_file()


def test_time_budget_covers_the_whole_run_across_resumes(data, tmp_path):
    manifest, tok_dir = data
    first = train(make_config(manifest, tok_dir, tmp_path / "run", "optim.max_steps=3"), resume="none")
    spent = first["wall_time_s"]
    state = torch.load(tmp_path / "run" / "ckpt-3" / "trainer_state.pt", weights_only=False)
    assert 0 < state["position"]["elapsed_s"] <= spent
    # Resumed with a budget the first run already used up: one step, then it stops.
    overrides = (f"runtime.time_budget_s={spent}", "optim.max_steps=50")
    second = train(make_config(manifest, tok_dir, tmp_path / "run", *overrides), resume="auto")
    assert second["stopped_by"] == "time_budget" and second["steps"] == 4
    assert second["wall_time_s"] > state["position"]["elapsed_s"]


def test_gradient_accumulation_counts_all_batches(data, tmp_path):
    manifest, tok_dir = data
    cfg = make_config(manifest, tok_dir, tmp_path / "run", "optim.accumulation=2", "optim.max_steps=3")
    summary = train(cfg, resume="none")
    records = train_records(tmp_path / "run" / "metrics.jsonl")
    assert summary["steps"] == 3 and [r["batch_in_epoch"] for r in records.values()] == [2, 4, 1]
    assert summary["utterances_seen"] == sum(r["batch_size"] for r in records.values())


def test_eval_batches_respect_the_padded_budget():
    import numpy as np

    durations = np.array([1.0, 3.0, 2.0, 1.5, 0.5])
    batches = duration_batches(durations, max_padded_seconds=4.0)
    assert sorted(i for b in batches for i in b) == list(range(5))
    assert all(len(b) * max(durations[b]) <= 4.0 for b in batches)
