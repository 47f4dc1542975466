"""`fastaed bench all`: every benchmark runs (quick sizes) into one folder, and the document's generated block
is replaced while the prose around it stays."""

from __future__ import annotations

import json

from fastaed.bench.all import BEGIN, END, plan, update_document
from fastaed.cli.bench import config_of
from fastaed.cli.main import build_parser


def test_generated_block_is_replaced_and_prose_kept(tmp_path):
    doc = tmp_path / "B.md"
    doc.write_text("# Benchmarks\n\nHand-written analysis.\n")
    update_document(doc, "first")
    update_document(doc, "second")
    text = doc.read_text()
    assert "Hand-written analysis." in text and "second" in text and "first" not in text
    assert text.count(BEGIN) == 1 and text.count(END) == 1


def test_quick_run_writes_every_json_and_section(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no demo data or runs here: the synthetic paths are taken
    doc, out = tmp_path / "BENCHMARKS.md", tmp_path / "results"
    args = build_parser().parse_args(["bench", "all", "--quick", "--out", str(out), "--doc", str(doc)])
    assert args.func(args) == 0
    text = doc.read_text()
    for name in ("index", "features", "sampler", "batch_sizes", "rtfx"):
        assert f"### {name}" in text and (out / f"{name}.json").is_file(), name
    assert "FAILED" not in text and "convergence" not in text  # no run folders: that one is left out


def test_printed_commands_reproduce_the_planned_configs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for run in ("flash", "balanced"):
        (tmp_path / run).mkdir()
        (tmp_path / run / "metrics.jsonl").write_text(json.dumps({"type": "eval", "step": 1}) + "\n")
    for name in ("test.jsonl", "test_unseen_voice.jsonl"):  # held-out sets exist: --eval NAME=MANIFEST
        (tmp_path / "data" / "default").mkdir(parents=True, exist_ok=True)
        (tmp_path / "data" / "default" / name).write_text("")
    for quick in (True, False):
        steps = plan(tmp_path / "out", quick, tmp_path / "flash", tmp_path / "balanced")
        assert [s.title for s in steps][-1] == "convergence"
        for step in steps:
            args = build_parser().parse_args(["bench", *step.argv()])
            assert config_of(args) == step.config, step.argv()
