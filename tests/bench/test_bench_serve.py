"""`fastaed bench serve`: the load generator's numbers, server processes that are always stopped, and a
--quick run end to end against real `fastaed serve` processes (and the faster-whisper peer server when its
venv is here) on the real Whisper tiny.en and the real pocketsphinx clips.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
import time

import pytest

from fastaed.bench import serve as sb
from fastaed.bench import serve_load as sl
from fastaed.bench.peers.whisper import whisper_peer_python
from fastaed.cli.bench import config_of
from fastaed.cli.main import build_parser
from fastaed.serve.metrics import BATCH_BUCKETS
from tests import whisper_fixtures as wf

# A stand-in server: answers /health (or never, or exits at once), and may ignore SIGTERM.
STUB = textwrap.dedent("""
    import signal, sys
    from http.server import BaseHTTPRequestHandler, HTTPServer
    mode = sys.argv[2]
    if mode == "exit":
        sys.exit(3)
    if mode == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    class H(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if mode != "sick" else 503)
            self.end_headers()
        def log_message(self, *a):
            pass
    HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
""")


def stub(port: int, mode: str = "ok") -> list[str]:
    return [sys.executable, "-c", STUB, str(port), mode]


# ---- numbers -------------------------------------------------------------------------------------------


def test_latency_percentiles_interpolate_between_order_statistics():
    s = sl.latency_summary([0.4, 0.1, 0.3, 0.2, 0.5])
    assert (s["n"], s["p50"], s["max"]) == (5, 0.3, 0.5)
    assert s["p95"] == pytest.approx(0.48) and s["p99"] == pytest.approx(0.496)
    assert s["mean"] == pytest.approx(0.3)
    assert sl.latency_summary([])["p99"] is None


def metrics_page(cumulative: list[int], total_rows: float) -> str:
    bounds = [*map(str, BATCH_BUCKETS), "+Inf"]
    lines = [f'fastaed_batch_rows_bucket{{le="{b}"}} {c}' for b, c in zip(bounds, cumulative)]
    return "\n".join(["# TYPE fastaed_batch_rows histogram", *lines, f"fastaed_batch_rows_sum {total_rows}",
                      f"fastaed_batch_rows_count {cumulative[-1]}", "fastaed_queue_depth 0"])  # fmt: skip


def test_batch_sizes_are_the_difference_of_two_metrics_readings():
    # before: 2 batches of 1 row; after: also one of 3 rows and two of 8 (buckets 1 2 4 8 16 32 64 +Inf)
    before = sl.batch_histogram(metrics_page([2, 2, 2, 2, 2, 2, 2, 2], 2.0))
    after = sl.batch_histogram(metrics_page([2, 2, 3, 5, 5, 5, 5, 5], 21.0))
    delta = sl.batch_delta(before, after)
    assert delta == {"batches": 3, "mean_rows": pytest.approx(19 / 3), "rows_histogram": {"4": 1, "8": 2}}
    assert sl.batch_delta(after, after)["mean_rows"] is None


# ---- server processes ------------------------------------------------------------------------------------


def gone(proc: subprocess.Popen) -> bool:
    return proc.poll() is not None and sl.rss_mb(proc.pid) is None


def test_a_server_is_stopped_when_the_benchmark_fails_inside(tmp_path):
    port = sl.free_port()
    with pytest.raises(KeyError, match="a failure inside"):
        with sl.serving(stub(port), f"http://127.0.0.1:{port}", tmp_path / "log") as proc:
            assert proc.poll() is None and sl.rss_mb(proc.pid) > 0
            raise KeyError("a failure inside")
    assert gone(proc)


def test_a_server_that_never_gets_healthy_is_stopped_and_named(tmp_path):
    port = sl.free_port()
    with pytest.raises(RuntimeError, match="exited \\(3\\) before answering /health"):
        with sl.serving(stub(port, "exit"), f"http://127.0.0.1:{port}", tmp_path / "log"):
            pass
    with pytest.raises(RuntimeError, match="did not answer"):
        with sl.serving(stub(port, "sick"), f"http://127.0.0.1:{port}", tmp_path / "log",
                        startup_timeout_s=1.0):  # fmt: skip
            pass
    with socket.socket() as s:  # the sick server was stopped: nothing listens on its port
        assert s.connect_ex(("127.0.0.1", port)) != 0


def test_a_server_that_ignores_sigterm_is_killed(tmp_path):
    port = sl.free_port()
    with open(tmp_path / "log", "wb") as log:
        proc = subprocess.Popen(stub(port, "stubborn"), stdout=log, stderr=log, start_new_session=True)
    try:
        time.sleep(1.0)  # the stub installs its handler
        assert sl.stop_process(proc, grace_s=0.5) == -9
    finally:
        if proc.poll() is None:
            proc.kill()
    assert gone(proc)


def test_the_command_line_builds_the_config_and_quick_keeps_explicit_flags():
    args = build_parser().parse_args(["bench", "serve", "--quick", "--clients", "1", "2", "--targets",
                                      "fastaed-batching"])  # fmt: skip
    config = sb.effective(config_of(args))
    assert (config.clients, config.targets, config.robust_requests, config.mixed_minutes) == (
        (1, 2), ("fastaed-batching",), 100, 1.0)  # fmt: skip
    assert sb.command_line(config).startswith("fastaed bench serve --targets fastaed-batching --clients 1 2")
    with pytest.raises(ValueError, match="unknown vllm"):
        sb.ServeBenchConfig(targets=("vllm",))


# ---- a --quick run on real speech ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """One --quick run on the pocketsphinx clips with every target whose venv is here, smaller still than
    --quick's numbers (explicit fields win) so that the three servers take well under a minute."""
    root = tmp_path_factory.mktemp("serve")
    config = sb.ServeBenchConfig(quick=True, manifest=wf.real_check_manifest(), data_dir=root / "files",
                                 work_dir=root / "work", clips=2, requests_per_level=4, idle_repeats=1,
                                 mixed_minutes=0.75, mixed_clips=1, robust_requests=20,
                                 robust_rss_after=5)  # fmt: skip
    return sb.run(config)


def row_of(result: dict, target: str) -> dict:
    (row,) = [r for r in result["rows"] if r["target"] == target]
    assert "error" not in row, row.get("error")
    return row


def test_quick_run_answers_every_level_with_the_idle_texts(quick):
    for target in ("fastaed-batching", "fastaed-max-batch-1"):
        row = row_of(quick, target)
        assert [lv["clients"] for lv in row["levels"]] == [1, 4]
        for lv in row["levels"]:
            assert lv["answered"] == lv["requests"] == 4 and lv["wrong_text"] == 0, lv
            lat = lv["latency"]
            assert lv["throughput"] > 0 and lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
        assert all(row["idle"]["texts"].values()) and row["idle"]["failed"] == 0
        assert "-m fastaed serve" in row["command"]
        assert ("--max-batch 1" in row["command"]) == (target == "fastaed-max-batch-1")
    assert row_of(quick, "fastaed-max-batch-1")["levels"][1]["batches"]["mean_rows"] == 1.0
    assert row_of(quick, "fastaed-batching")["levels"][1]["batches"]["batches"] >= 1


def test_quick_run_has_the_mixed_load_and_the_robustness_run(quick):
    batching = row_of(quick, "fastaed-batching")
    mixed = batching["mixed"]
    assert mixed["long_file"]["status"] == 200 and mixed["long_file"]["audio_s"] == 45.0
    assert mixed["clips_answered"] == mixed["clips_sent"] and mixed["wrong_text"] == 0
    r = batching["robustness"]
    assert r["requests"] == 20 and r["bad"] == 1 and r["good"] == 19
    assert (r["good_correct"], r["bad_4xx"], r["health"]) == (19, 1, "ok"), r["failures"]
    assert r["rss_mb"]["after_5"] > 100 and r["rss_growth"] is not None
    assert {t["target"] for t in quick["targets"]} >= {"robustness: bad uploads answered 4xx"}


def test_quick_run_leaves_no_server_running(quick):
    for row in quick["rows"]:
        assert row["exit_code"] is not None and sl.rss_mb(row["pid"]) is None


def test_quick_run_reports_a_table(quick, capsys):
    sb.print_report(quick)
    out = capsys.readouterr().out
    assert "fastaed-max-batch-1" in out and "p99 ms" in out and "extra max ms" in out and "robustness" in out
    assert quick["load_before"]["uptime"] and quick["versions"]["uvicorn"]


def test_quick_run_has_the_faster_whisper_server_beside_fastaed(quick):
    if whisper_peer_python() is None:
        pytest.skip("no faster-whisper peer venv .venv-whisper (make whisper-venv)")
    row = row_of(quick, "faster-whisper")
    assert all(lv["answered"] == lv["requests"] and lv["wrong_text"] == 0 for lv in row["levels"])
    assert "fw_server.py" in row["command"] and row["mixed"]["long_file"]["status"] == 200
    assert quick["versions"]["faster_whisper_peer"]["faster_whisper"] == "1.2.1"
