"""`fastaed bench adapt`: every cell of systems (a)-(d) x batch sizes x sets on a few real clips with real
tiny.en weights (the original doubling as the adapted model), the runaway counter, and the README row and
BENCHMARKS.md section rendered from a record (and absent without one)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from fastaed.bench import adapt
from fastaed.bench.peers import whisper as peers
from fastaed.bench.peers.whisper import whisper_peer_python
from fastaed.bench.results_table import ReadmeTableConfig, Records, exit_status, render
from fastaed.bench.results_table import run as readme_run
from fastaed.bench.whisper import Clip
from tests import whisper_fixtures as wf

SETS = {"pocketsphinx": ["cards-001", "cards-003"], "asterisk": ["goforward"]}
SUMMARY = {"wall_s": 12.5, "steps": 40, "teacher_s": 2.5, "train_s": 10.0, "audio_s": 30.0, "clips": 9,
           "source": "runs/whisper-tiny.en"}  # fmt: skip


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> tuple[Path, Path]:
    """Real tiny.en imported (the original) and a copy of it with a made-up adapt_summary.json (the
    "adapted" model until `fastaed adapt` writes one). A failed fetch fails: no skip."""
    from fastaed.formats.whisper_import import import_whisper

    root = tmp_path_factory.mktemp("adapt-models")
    original = import_whisper(wf.real_whisper("tiny.en"), root / "original")
    adapted = root / "adapted"
    shutil.copytree(original, adapted)
    (adapted / adapt.SUMMARY_FILE).write_text(json.dumps(SUMMARY | {"config": {"lr": 1e-5}, "data": {}}))
    return original, adapted


@pytest.fixture(scope="module")
def held_out(tmp_path_factory) -> dict[str, Path]:
    """Two tiny held-out sets of real pocketsphinx clips (three clips, 5.4 s in all)."""
    source = wf.real_check_manifest()
    rows = {}
    for line in source.read_text().splitlines():
        row = json.loads(line)
        row["audio_filepath"] = str((source.parent / row["audio_filepath"]).resolve())
        rows[row["utt_id"]] = row
    folder = tmp_path_factory.mktemp("held-out")
    out = {}
    for name, ids in SETS.items():
        out[name] = folder / f"{name}.jsonl"
        out[name].write_text("".join(json.dumps(rows[i]) + "\n" for i in ids))
    return out


@pytest.fixture(scope="module")
def result(models, held_out, tmp_path_factory) -> dict:
    """One run without the peer venv (its cells must say why they were skipped), batch 1 and 2: 12 fastaed
    runs, about 15 s on one free core (each padded one decodes a 30 s window)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(peers.PYTHON_ENV, str(tmp_path_factory.mktemp("no-peer") / "python"))
        mp.setattr(adapt, "held_out_sets", lambda data_dir, languages: dict(held_out))
        config = adapt.AdaptBenchConfig(original=models[0], adapted=models[1], batch_sizes=(1, 2), threads=1)
        return adapt.run(config)


@pytest.mark.slow
def test_every_system_batch_size_and_set_has_a_cell(result):
    cells = {(c["system"], c["batch_size"], c["set"]) for c in result["cells"]}
    assert cells == {(s, b, n) for s in "abcd" for b in (1, 2) for n in SETS}
    assert len(result["cells"]) == len(cells)
    for c in result["cells"]:
        if c["engine"] == "fastaed":
            assert c["rtfx"] > 0 and c["wer"] >= 0, c
            assert c["guard"] is not None and c["runaway"]["count"] == 0
            assert c["load_before"]["loadavg"] and c["load_after"]["loadavg"]
        else:
            assert ".venv-whisper" in c["skipped"] and "rtfx" not in c


@pytest.mark.slow
def test_the_adapted_model_here_is_the_original_so_wer_matches_its_unpadded_rows(result):
    at = {(c["system"], c["batch_size"], c["set"]): c for c in result["cells"]}
    for b in (1, 2):
        for n in SETS:
            assert at["c", b, n]["wer"] == at["b", b, n]["wer"]
    s = result["summary"]
    assert set(s["wer_delta_points"]) == set(SETS)
    assert s["rtfx_vs_faster_whisper"] == {} and s["met"]["rtfx"] is None  # no peer: not measured


@pytest.mark.slow
def test_adaptation_time_and_steps_come_from_its_summary(result):
    assert result["adaptation"] == SUMMARY  # its config and data listing stay in adapt_summary.json
    assert result["threads"] == 1 and "torch" in result["versions"]
    assert result["sets"]["pocketsphinx"]["clips"] == 2 and result["sets"]["asterisk"]["language"] == "en"


@pytest.mark.slow
def test_report_prints_a_table_with_every_cell(result, capsys):
    adapt.print_report(result)
    out = capsys.readouterr().out
    assert out.count("(c) adapted, unpadded") == 4 and "skipped: faster-whisper not run" in out
    assert "adaptation: 12 s wall, 40 steps" in out


@pytest.mark.slow
def test_with_the_peer_its_cells_are_measured(models, held_out, monkeypatch):
    if whisper_peer_python() is None:
        pytest.skip("no faster-whisper peer venv .venv-whisper (make whisper-venv)")
    monkeypatch.setattr(
        adapt, "held_out_sets", lambda data_dir, languages: {"asterisk": held_out["asterisk"]}
    )
    config = adapt.AdaptBenchConfig(
        original=models[0], adapted=models[1], sets=("asterisk",), batch_sizes=(1,), threads=1
    )
    result = adapt.run(config)
    (peer,) = [c for c in result["cells"] if c["system"] == "d"]
    assert peer["rtfx"] > 0 and peer["wer"] <= 0.5 and peer["guard"] is None
    assert result["summary"]["rtfx_vs_faster_whisper"]["batch_1"] > 0
    assert {"faster_whisper", "ctranslate2"} <= set(result["versions"])


# ---- runaways ----------------------------------------------------------------------------------------------


def _clip(seconds: float) -> Clip:
    return Clip("u", "/a/u.wav", "", seconds, "pocketsphinx")


def test_a_looping_transcript_is_a_runaway_and_a_normal_one_is_not(models):
    from fastaed.data.whisper_tokenizer import WhisperTokenizer

    tok = WhisperTokenizer.load(models[0] / "tokenizer")
    normal = "Eight of spades, four of clubs, seven of hearts."
    looping = "Go forward ten meters. " + "Go forward. " * 6
    counted = adapt.runaways([normal, looping, normal], [_clip(3.5), _clip(3.5), _clip(0.5)], tok)
    assert counted["count"] == 1 and counted["examples"][0]["why"] == "repetition"
    rambling = " ".join(f"word{i}" for i in range(40))  # no repeat, far more tokens than 2 s of speech holds
    assert adapt.runaway(tok.encode_text(rambling), 2.0) == "token_rate"
    assert adapt.runaway(tok.encode_text(normal), 3.5) is None
    assert adapt.runaway([], 1.0) is None


# ---- records -----------------------------------------------------------------------------------------------


def _cell(system: str, name: str, bs: int, wer: float, wall: float, guard: int | None = 0) -> dict:
    cell = {"set": name, "system": system, "label": system, "engine": "fastaed", "input": "unpadded",
            "batch_size": bs, "wer": wer, "rtfx": 10.0 / wall, "audio_seconds": 10.0, "wall_seconds": wall,
            "guard": None if guard is None else {"count": guard, "by_kind": {}},
            "runaway": {"count": 0, "by_reason": {}, "examples": []},
            "load_before": {"loadavg": [1.0, 1.0, 1.0]},
            "load_after": {"loadavg": [1.5, 1.0, 1.0]}}  # fmt: skip
    return cell


def _record() -> dict:
    wers = {"a": 0.10, "b": 0.50, "c": 0.104, "d": 0.10}
    walls = {"a": 2.0, "b": 0.5, "c": 0.5, "d": 2.5}
    cells = [
        _cell(k, n, b, wers[k], walls[k] / b, guard=None if k in "ad" else 2 * (k == "b"))
        for n in ("pocketsphinx", "asterisk") for k in "abcd" for b in (1, 16)
    ]  # fmt: skip
    return {
        "command": "fastaed bench adapt --model tiny.en", "model": "tiny.en", "original": "o", "adapted": "d",
        "adaptation": SUMMARY, "threads": 2, "machine": "x86_64, a CPU", "versions": {"torch": "2.13.0"},
        "sets": {"pocketsphinx": {"clips": 3, "language": "en", "audio_seconds": 5.4}}, "cells": cells,
        "notes": [], "protocol": "p",
        "summary": adapt.summarize(cells, ["pocketsphinx", "asterisk"], (1, 16)),
    }  # fmt: skip


def test_summary_gives_wer_change_in_points_rtfx_over_the_peer_and_loops():
    s = _record()["summary"]
    assert s["wer_delta_points"]["asterisk"] == pytest.approx(0.4)
    assert s["rtfx_vs_faster_whisper"] == {"batch_1": pytest.approx(5.0), "batch_16": pytest.approx(5.0)}
    assert s["loops"]["b"] == {"guard": 8, "runaway": 0, "total": 8} and s["adapted_loops"] == 0
    assert s["met"] == {"wer": True, "rtfx": True, "loops": True}


def _docs(tmp_path: Path) -> tuple[Path, Path, Path]:
    results = tmp_path / "results"
    results.mkdir()
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\n" + render(Records(results), rows=()) + "\n")
    benchmarks = tmp_path / "BENCHMARKS.md"
    benchmarks.write_text("# Benchmarks\n\nprose\n")
    return results, readme, benchmarks


def test_without_a_record_there_is_no_row_and_no_section(tmp_path):
    from fastaed.bench.results_table import ROWS

    results, readme, benchmarks = _docs(tmp_path)
    adapt_rows = tuple(r for r in ROWS if r.needs in adapt.RECORDS)
    assert len(adapt_rows) == 2
    assert "adapted" not in render(Records(results), rows=adapt_rows)
    assert adapt.document_with_section("# B\n", Records(results).load, Records(results).exists) is None


def test_a_record_gives_a_readme_row_and_a_benchmarks_section_that_check_then_holds(tmp_path, monkeypatch):
    from fastaed.bench import results_table

    results, readme, benchmarks = _docs(tmp_path)
    (results / "adapt_tiny_en.json").write_text(json.dumps(_record()))
    adapt_rows = tuple(r for r in results_table.ROWS if r.needs in adapt.RECORDS)
    full_render = results_table.render  # the README here has only the adaptation rows
    monkeypatch.setattr(results_table, "render", lambda records: full_render(records, rows=adapt_rows))
    table = render(Records(results), rows=adapt_rows)
    assert "Whisper tiny.en adapted" in table and "Whisper base" not in table
    assert "**+0.4 points / 5.0x / 5.0x / 0**" in table and "12 s, 40 steps" in table

    check = ReadmeTableConfig(readme=readme, results=results, check=True)
    result = readme_run(check)
    assert result["drift"] and result["benchmarks_drift"] and exit_status(result, check) == 1
    assert "prose" in benchmarks.read_text() and adapt.SECTION_BEGIN not in benchmarks.read_text()
    readme_run(ReadmeTableConfig(readme=readme, results=results))
    text = benchmarks.read_text()
    assert text.startswith("# Benchmarks\n\nprose\n") and text.count(adapt.SECTION_BEGIN) == 1
    assert "#### Whisper tiny.en: adapted to unpadded input" in text and "+0.40 points" in text
    assert not readme_run(check)["drift"]  # re-rendered: the check holds, and a second render is the same
    readme_run(ReadmeTableConfig(readme=readme, results=results))
    assert benchmarks.read_text() == text


def test_the_every_clip_record_is_rendered_after_the_sampled_ones(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    (results / "adapt_tiny_en.json").write_text(json.dumps(_record()))
    every = _record() | {"model": "base", "command": "fastaed bench adapt --model base --batch-sizes 16"}
    (results / adapt.ALL_CLIPS_RECORD).write_text(json.dumps(every))
    text = adapt.document_with_section("# B\n", Records(results).load, Records(results).exists)
    assert text is not None
    sampled = text.index("#### Whisper tiny.en: adapted to unpadded input")
    heading = text.index("#### Whisper base: every held-out clip\n\n" + adapt.ALL_CLIPS_INTRO)
    assert sampled < heading < text.index("--batch-sizes 16`") < text.index(adapt.SECTION_END)


def test_bad_options_and_a_broken_summary_are_one_line_errors(tmp_path, models):
    from fastaed.util.files import FileFormatError

    with pytest.raises(ValueError, match="English only"):
        adapt.AdaptBenchConfig(original=models[0], adapted=models[1], sets=("asterisk_es",))
    with pytest.raises(ValueError, match="unknown set 'nope'"):
        adapt.AdaptBenchConfig(original=models[0], adapted=models[1], model="base", sets=("nope",))
    (tmp_path / adapt.SUMMARY_FILE).write_text("{not json")
    with pytest.raises(FileFormatError, match="adapt_summary.json:1:2"):
        adapt.read_summary(tmp_path)
    config = adapt.AdaptBenchConfig(original=models[0], adapted=models[1], data_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="real_check.jsonl.*fastaed data real-check"):
        adapt.run(config)


def test_spanish_sets_are_scored_in_spanish_without_accents():
    from fastaed.bench.whisper import wer_by_set

    clips = [Clip("e", "/a/e.wav", "marque el numero", 1.5, "asterisk_es", "es")]
    assert wer_by_set(clips, ["Marque el número."])["asterisk_es"] == 0.0
    english = [Clip("u", "/a/u.wav", "ten of clubs", 1.5, "pocketsphinx")]
    assert wer_by_set(english, ["10 of clubs."])["pocketsphinx"] == 0.0
