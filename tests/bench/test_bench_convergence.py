"""The convergence comparison reads two runs' eval records, compares them at common steps, plots them, and
decodes both runs' checkpoints at a common step on held-out sets."""

from __future__ import annotations

import json

import pytest
import torch

from fastaed.bench.convergence import held_out_where, paired_checkpoints
from fastaed.cli.main import build_parser
from fastaed.formats import save_model
from fastaed.model import build_model
from fastaed.testing import train_tiny_tokenizer, write_tiny_corpus
from fastaed.train.checkpoint import STATE_FILE


def _run(folder, model, wers):
    folder.mkdir()
    lines = [{"type": "train", "step": 1, "loss": 5.0}]
    lines += [{"type": "eval", "step": 100 * (i + 1), "wer": w, "cer": w / 2, "dev_loss": 3 - i}
              for i, w in enumerate(wers)]  # fmt: skip
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    summary = {"model": model, "steps": 100 * len(wers), "wall_time_s": 60, "params": 1e6}
    (folder / "summary.json").write_text(json.dumps(summary))
    return folder


def test_common_steps_final_relative_wer_and_plot(tmp_path, capsys):
    a = _run(tmp_path / "a", "flash", [0.9, 0.6, 0.44])
    b = _run(tmp_path / "b", "balanced", [0.9, 0.5])  # shorter: the last common step is 200
    out = tmp_path / "conv.json"
    args = build_parser().parse_args(["bench", "convergence", str(a), str(b), "--json", str(out)])
    assert args.func(args) == 0
    doc = json.loads(out.read_text())
    assert [r["step"] for r in doc["rows"]] == [100, 200] and doc["final_step"] == 200
    assert doc["relative_wer_a_vs_b"] == pytest.approx(0.2)
    assert (tmp_path / "conv.png").stat().st_size > 0
    assert "FAIL" in capsys.readouterr().out  # +20% is outside the 10% target


def test_a_folder_without_metrics_is_a_clear_error(tmp_path):
    args = build_parser().parse_args(["bench", "convergence", str(tmp_path), str(tmp_path)])
    with pytest.raises(FileNotFoundError, match="metrics.jsonl"):
        args.func(args)


def _checkpoint(run, step, model, tokenizer):
    """A complete checkpoint folder ``run/ckpt-STEP`` holding ``model`` and the tokenizer."""
    ckpt = save_model(model, run / f"ckpt-{step}", tokenizer_identity=tokenizer.identity)
    tokenizer.save(ckpt / "tokenizer")
    torch.save({}, ckpt / STATE_FILE)  # the held-out evaluation only needs the folder to be complete
    return ckpt


def test_held_out_sets_compare_both_runs_at_their_last_common_step(tmp_path, capsys):
    tokenizer = train_tiny_tokenizer(tmp_path / "tokenizer", vocab_size=200)
    manifest = write_tiny_corpus(tmp_path / "corpus", num=3, name="test.jsonl")
    a = _run(tmp_path / "a", "flash", [0.9, 0.6])
    b = _run(tmp_path / "b", "balanced", [0.9, 0.5])
    torch.manual_seed(0)
    same, other = build_model("test", vocab_size=tokenizer.vocab_size), build_model("test", vocab_size=200)
    _checkpoint(a, 200, same, tokenizer)
    _checkpoint(b, 200, same, tokenizer)
    _checkpoint(a, 300, other, tokenizer)  # a ran longer: step 300 has no partner and must not be used
    out = tmp_path / "conv.json"
    argv = ["bench", "convergence", str(a), str(b), "--json", str(out), "--eval", f"test={manifest}"]
    args = build_parser().parse_args(argv)
    assert args.func(args) == 0
    held = json.loads(out.read_text())["held_out"]
    assert held["step"] == 200 and held["checkpoints"]["flash"].endswith("ckpt-200")
    flash, balanced = held["rows"]
    assert (flash["model"], balanced["model"]) == ("flash", "balanced") and flash["utterances"] == 3
    assert flash["wer"] == balanced["wer"] and flash["cer"] == balanced["cer"]  # the same weights
    assert "both at step 200" in capsys.readouterr().out


def test_runs_without_a_common_step_are_compared_at_their_latest_with_a_warning(tmp_path):
    tokenizer = train_tiny_tokenizer(tmp_path / "tokenizer", vocab_size=200)
    a, b = _run(tmp_path / "a", "flash", [0.9]), _run(tmp_path / "b", "balanced", [0.9])
    model = build_model("test", vocab_size=tokenizer.vocab_size)
    _checkpoint(a, 100, model, tokenizer)
    _checkpoint(b, 150, model, tokenizer)
    step, ckpt_a, ckpt_b = paired_checkpoints(a, b)
    assert step is None and (ckpt_a.name, ckpt_b.name) == ("ckpt-100", "ckpt-150")
    assert "WARNING" in held_out_where({"step": None, "checkpoints": {"flash": str(ckpt_a)}})


def test_eval_needs_name_equals_manifest(tmp_path):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench", "convergence", "a", "b", "--eval", "data/default/test.jsonl"])


def test_two_runs_of_one_model_are_told_apart_by_folder(tmp_path):
    a, b = _run(tmp_path / "lr1", "flash", [0.9, 0.5]), _run(tmp_path / "lr2", "flash", [0.9, 0.6])
    out = tmp_path / "conv.json"
    args = build_parser().parse_args(["bench", "convergence", str(a), str(b), "--json", str(out)])
    assert args.func(args) == 0
    assert json.loads(out.read_text())["names"] == ["flash (lr1)", "flash (lr2)"]
