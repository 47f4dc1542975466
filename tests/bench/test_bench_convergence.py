"""The convergence comparison reads two runs' eval records, compares them at common steps, plots them."""

from __future__ import annotations

import json

import pytest

from fastaed.cli.main import build_parser


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
