"""README's results table is rendered from bench_results/: the committed table matches the records, drift is
caught, and every placeholder resolves to the value at its path (or says which file or key is missing)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from fastaed.bench.results_table import (
    BEGIN,
    END,
    ROWS,
    Pending,
    ReadmeTableConfig,
    RecordError,
    Records,
    Row,
    exit_status,
    fill,
    render,
    run,
)

REPO = Path(__file__).resolve().parents[2]


def test_readme_results_table_is_the_one_the_records_give():
    """Fails when README.md's table and bench_results/ disagree: re-render with `fastaed bench readme`."""
    config = ReadmeTableConfig(readme=REPO / "README.md", results=REPO / "bench_results", check=True)
    result = run(config)
    assert not result["drift"], "README results table drifted from bench_results/:\n" + result["diff"]
    assert exit_status(result, config) == 0


def test_every_number_in_the_fastaed_column_comes_from_a_placeholder():
    """Digits in a row's measured cell are in placeholders, apart from step labels and configuration named in
    the row's own words (a check that hand-typed measurements do not creep back)."""
    # bucket grid, the demo run's last step (a record key), names and the padded recipe's window
    allowed = {"30 × 4", "3,377", "2D", "30 s", "Seq2Seq"}
    for row in ROWS:
        cell = row.fastaed.template if isinstance(row.fastaed, Pending) else row.fastaed
        text = cell
        for placeholder in re.findall(r"\{[^{}]+\}", cell):
            text = text.replace(placeholder, "")
        for word in allowed:
            text = text.replace(word, "")
        assert not any(ch.isdigit() for ch in text), (row.what, text)


def _records(tmp_path: Path) -> Records:
    (tmp_path / "all").mkdir()
    (tmp_path / "a.json").write_text(
        json.dumps({
            "x": 0.0466, "ratio": 1180.4, "n": 1000000, "lib": "1.33.0",
            "runs": [{"name": "a", "set": "in", "wer": 0.146}, {"name": "b", "set": "in", "wer": 0.156}],
            "per": {"p": {"s": 2.0}, "q": {"s": 1.5}},
        })
    )  # fmt: skip
    (tmp_path / "all" / "a.json").write_text(json.dumps({"ratio": 1689.1}))
    return Records(tmp_path)


def test_placeholders_read_paths_wildcards_selectors_ranges_and_ratios(tmp_path):
    r = _records(tmp_path)
    assert (
        fill("{a.json:x|pct} of {a.json:n|int}, Lhotse {a.json:lib}", r)
        == "4.66% of 1,000,000, Lhotse 1.33.0"
    )
    assert fill("{a.json,all/a.json:ratio|x0}", r) == "1,180–1,689x"  # two records: a range
    assert fill("{a.json:per.*.s|x1}", r) == "1.5–2.0x"
    assert fill("{a.json:runs[name=b,set=in].wer|pct1}", r) == "15.6%"
    assert fill("{a.json:runs[name=a].wer / a.json:runs[name=b].wer|rel}", r) == "-6.4%"
    assert fill("{a.json:runs.1.name}", r) == "b"


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{b.json:x|pct}", r"b\.json: no such record"),
        ("{a.json:y|pct}", r"a\.json: y: no key 'y'"),
        ("{a.json:runs[name=c].wer|pct}", r"no item matches \[name=c\]"),
        ("{a.json:x|furlongs}", r"unknown format 'furlongs'"),
        ("{a.json:lib|pct}", r"not a number"),
        ("{a.json:per.*.s}", r"2 values need a FORMAT"),
    ],
)
def test_a_missing_record_key_or_format_is_an_error_naming_it(tmp_path, template, message):
    with pytest.raises(RecordError, match=message):
        fill(template, _records(tmp_path))


def test_a_pending_cell_says_so_until_its_record_exists(tmp_path):
    records = _records(tmp_path)
    rows = (Row("fill", Pending("{new.json:fill|pct}", "new.json", "pending re-measurement"), "", "≥ 85%"),)
    assert "| fill | pending re-measurement |  | ≥ 85% |" in render(records, rows)
    (tmp_path / "new.json").write_text(json.dumps({"fill": 0.9}))
    assert "| fill | 90.0% |  | ≥ 85% |" in render(Records(tmp_path), rows)


def test_check_reports_drift_and_writing_fixes_it(tmp_path):
    shutil.copytree(REPO / "bench_results", tmp_path / "results", ignore=shutil.ignore_patterns("*.png"))
    readme = tmp_path / "README.md"
    table = render(Records(tmp_path / "results"))
    readme.write_text(f"# x\n\n## Results\n\n{table}\n\nafter\n")
    shutil.copy(REPO / "BENCHMARKS.md", tmp_path / "BENCHMARKS.md")  # its generated sections, as rendered
    check = ReadmeTableConfig(readme=readme, results=tmp_path / "results", check=True)
    assert not run(check)["drift"]
    record = tmp_path / "results" / "index.json"
    index = json.loads(record.read_text())
    record.write_text(json.dumps({**index, "build_s": 99.0}))  # a re-run changes a number
    result = run(check)
    assert result["drift"] and exit_status(result, check) == 1 and "99.0 s" in result["diff"]
    assert "99.0 s" not in readme.read_text()  # --check writes nothing
    result = run(ReadmeTableConfig(readme=readme, results=tmp_path / "results"))
    text = readme.read_text()
    assert "99.0 s" in text and text.startswith("# x\n") and text.endswith("\nafter\n")
    assert text.count(BEGIN) == 1 and text.count(END) == 1 and not run(check)["drift"]


def test_a_readme_without_markers_is_an_error(tmp_path):
    (tmp_path / "README.md").write_text("# no table\n")
    with pytest.raises(RecordError, match="no results block"):
        run(ReadmeTableConfig(readme=tmp_path / "README.md", results=REPO / "bench_results", check=True))


def test_the_command_names_a_missing_record_in_one_line_and_exits_2(tmp_path, capsys):
    from fastaed.cli.main import main

    readme = tmp_path / "README.md"
    readme.write_text(render(Records(REPO / "bench_results")) + "\n")
    with pytest.raises(SystemExit) as stop:
        main(["bench", "readme", "--readme", str(readme), "--results", str(tmp_path), "--check"])
    assert stop.value.code == 2
    assert "error:" in (err := capsys.readouterr().err) and "no such record" in err and "Traceback" not in err
    repo_args = ["--readme", str(REPO / "README.md"), "--results", str(REPO / "bench_results")]
    with pytest.raises(SystemExit) as stop:  # the repository's own table and records agree
        main(["bench", "readme", *repo_args, "--check"])
    assert stop.value.code == 0
