"""The load side of ``fastaed bench serve``: server processes (started, waited for, always stopped) and
the load generator (async httpx on the loopback address only), with what it reads back (latency
percentiles, batch sizes from ``/metrics``)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastaed.bench.longform_data import percentile

STARTUP_TIMEOUT_S = 180.0  # loading the model included


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(proc: subprocess.Popen, grace_s: float = 15.0) -> int:
    """SIGTERM (a fastaed server drains its requests, then exits), SIGKILL after ``grace_s``; its status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


@contextlib.contextmanager
def serving(command: list[str], url: str, log: Path, env: dict[str, str] | None = None,
            startup_timeout_s: float = STARTUP_TIMEOUT_S) -> Iterator[subprocess.Popen]:  # fmt: skip
    """Start ``command`` (the server of ``url``; its output into ``log``), wait until ``url/health``
    answers 200, yield the process; it is stopped on leaving, whatever happened inside."""
    import httpx

    with open(log, "wb") as out:  # a session of its own: a Ctrl-C meant for the benchmark reaches it via us
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + startup_timeout_s
        while True:
            if proc.poll() is not None:
                tail = "\n".join(log.read_text(errors="replace").strip().splitlines()[-10:])
                raise RuntimeError(f"the server exited ({proc.returncode}) before answering /health:\n{tail}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/health", timeout=2.0, trust_env=False).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not answer {url}/health within {startup_timeout_s:g} s")
            time.sleep(0.2)
        yield proc
    finally:
        stop_process(proc)


def rss_mb(pid: int) -> float | None:
    """Resident memory of a live process (Linux /proc), or None."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return None


def machine_load() -> dict[str, Any]:
    """``uptime``'s line and the load averages now."""
    try:
        line = subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        line = ""
    return {"uptime": line, "loadavg": list(os.getloadavg()), "time": time.time()}


# ---- the load generator --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One request's upload."""

    key: str  # the clip's id (bad uploads: "bad-KIND")
    filename: str
    data: bytes
    seconds: float
    good: bool = True


@dataclass
class Answer:
    index: int  # the job's
    key: str
    status: int  # 0: no HTTP answer (timeout, connection error)
    text: str | None
    latency_s: float
    start: float
    end: float
    error: str | None = None


async def send_one(http, url: str, program: str, job: Job, index: int, timeout_s: float) -> Answer:
    import httpx

    start = time.monotonic()
    text, error = None, None
    try:
        if program == "fastaed":
            r = await http.post(url + "/v1/audio/transcriptions", files={"file": (job.filename, job.data)},
                                data={"model": "whisper"}, timeout=timeout_s)  # fmt: skip
        else:
            r = await http.post(url + "/transcribe", content=job.data, timeout=timeout_s)
        status = r.status_code
        if status == 200:
            text = r.json()["text"]
        else:
            error = r.text[:300]
    except (httpx.HTTPError, ValueError, KeyError) as e:
        status, error = 0, f"{type(e).__name__}: {e}"
    end = time.monotonic()
    return Answer(index, job.key, status, text, end - start, start, end, error)


def http_client(connections: int, timeout_s: float):
    import httpx

    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(limits=limits, timeout=timeout_s, trust_env=False)  # loopback: no proxies


def drive(url: str, program: str, jobs: list[Job], clients: int, issue_s: float, timeout_s: float,
          on_answer: Callable[[Answer, int], None] | None = None) -> list[Answer]:  # fmt: skip
    """Send ``jobs`` from ``clients`` concurrent clients (each sends the next job when its last is
    answered), none after ``issue_s``; ``on_answer(answer, answered so far)`` as each arrives. Returns the
    answers in job order (jobs never sent left out)."""

    async def main() -> list[Answer]:
        answers: list[Answer | None] = [None] * len(jobs)
        order, stop_at, done = iter(range(len(jobs))), time.monotonic() + issue_s, 0
        async with http_client(clients + 1, timeout_s) as http:

            async def client() -> None:
                nonlocal done
                for i in order:  # shared: each client takes the next job
                    if time.monotonic() > stop_at:
                        return
                    answers[i] = answer = await send_one(http, url, program, jobs[i], i, timeout_s)
                    done += 1
                    if on_answer is not None:
                        on_answer(answer, done)

            await asyncio.gather(*(client() for _ in range(clients)))
        return [a for a in answers if a is not None]

    return asyncio.run(main())


def latency_summary(latencies: list[float]) -> dict[str, float | None]:
    """p50/p95/p99 (linear between order statistics), mean and max, in seconds (None when empty)."""
    return {"n": len(latencies), "p50": percentile(latencies, 50), "p95": percentile(latencies, 95),
            "p99": percentile(latencies, 99), "mean": statistics.fmean(latencies) if latencies else None,
            "max": max(latencies, default=None)}  # fmt: skip


def batch_histogram(metrics_text: str) -> dict[str, Any]:
    """``fastaed_batch_rows`` of a /metrics page: cumulative bucket counts, sum and count."""
    out: dict[str, Any] = {"buckets": {}, "sum": 0.0, "count": 0.0}
    for line in metrics_text.splitlines():
        name, _, value = line.rpartition(" ")
        if name.startswith("fastaed_batch_rows_bucket"):
            out["buckets"][name.split('le="', 1)[1].split('"', 1)[0]] = float(value)
        elif name in ("fastaed_batch_rows_sum", "fastaed_batch_rows_count"):
            out[name.rsplit("_", 1)[1]] = float(value)
    return out


def batch_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Batches decoded between two :func:`batch_histogram` readings: how many, their mean rows, and per
    bucket bound ``le`` how many had at most ``le`` rows and more than the bound below."""
    count, histogram, below = int(after["count"] - before["count"]), {}, 0
    for le, cumulative in after["buckets"].items():
        here = int(cumulative - before["buckets"].get(le, 0))
        if here > below:
            histogram[le] = here - below
        below = here
    mean = (after["sum"] - before["sum"]) / count if count else None
    return {"batches": count, "mean_rows": mean, "rows_histogram": histogram}


def read_metrics(url: str) -> dict[str, Any]:
    import httpx

    return batch_histogram(httpx.get(url + "/metrics", timeout=10, trust_env=False).text)
