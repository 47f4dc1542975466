"""`fastaed bench all`: every benchmark runs (quick sizes) into one folder, and the document's generated block
is replaced while the prose around it stays."""

from __future__ import annotations

from fastaed.bench.all import BEGIN, END, update_document
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
