"""`fastaed serve` under load: batching on vs ``--max-batch 1`` vs faster-whisper behind a one-model server.

    fastaed bench serve --json bench_results/serve.json
    fastaed bench serve --quick     # levels 1 and 4, a 1 min file, 100 robustness requests: the pipeline

Targets (``--targets``), each a server process of its own on 127.0.0.1 and a free port, waited for
(``/health``) and always stopped (SIGTERM, then SIGKILL), one after another: ``fastaed-batching`` (``fastaed
serve CKPT``, default batching), ``fastaed-max-batch-1`` (``--max-batch 1``: one request at a time) and
``faster-whisper`` (``peers/fw_server.py`` in ``.venv-whisper``: one float32 ``WhisperModel`` behind
``ThreadingHTTPServer`` and a lock; beam 1, temperature 0, no VAD). Same weights (``--model``'s CTranslate2
folder and its ``fastaed import whisper`` checkpoint), same threads (``--threads``), greedy, English.

Per target: an idle pass (each clip alone: its text is the clip's reference answer, its latency the clip's
own compute; mixed-load clips ``--idle-repeats`` times, median); load levels (``--clients`` clients, each
sending its next real short clip when its last is answered, ``--requests-per-level`` in all, none issued
after ``--level-timeout-s``): throughput = audio s answered / wall s from first send to last answer,
p50/p95/p99 latency, batch sizes from ``/metrics`` (``fastaed_batch_rows``); the mixed load: a
``--mixed-minutes`` file (``fastaed data long-file``'s builder) in flight while clips of about
``--mixed-clip-s`` go one by one every ``--mixed-interval-s``: each one's latency minus its own compute is
what the long file cost it. Robustness (``fastaed-batching`` only): ``--robust-requests`` from
``--robust-clients`` clients, ``--robust-bad-fraction`` bad uploads (text, empty, random bytes) among them:
every good one must get its idle text, every bad one a 4xx, ``/health`` ok at the end; server RSS after
``--robust-rss-after`` requests and after all. Traffic goes to the loopback address only.

Targets (issue 26, 2 cores, tiny.en): 32 clients' throughput >= 3x ``--max-batch 1`` and >= 2x the
faster-whisper server; a clip sent during the long file answered within 1.5 s of its own compute; the
robustness run all right, all 4xx, healthy, RSS growth <= 10% after the first 100.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from fastaed.bench.serve_load import (
    Answer,
    Job,
    batch_delta,
    drive,
    free_port,
    http_client,
    latency_summary,
    machine_load,
    read_metrics,
    rss_mb,
    send_one,
    serving,
)
from fastaed.util.tables import format_table, pct
from fastaed.util.threads import wait_settings

FW_SERVER = Path(__file__).resolve().parent / "peers" / "fw_server.py"
TARGETS = {
    "fastaed-batching": ("fastaed", None),
    "fastaed-max-batch-1": ("fastaed", 1),
    "faster-whisper": ("faster-whisper", None),
}  # fmt: skip  name -> (program, --max-batch)
MIXED_MAX_SENDS = 30  # clips sent while the long file is in flight, at most


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass(frozen=True)
class ServeBenchConfig:
    """Options of ``fastaed bench serve``."""

    model: str = field(default="tiny.en", metadata=_help("Whisper release"))
    targets: tuple[str, ...] = field(default=tuple(TARGETS), metadata=_help(f"of {', '.join(TARGETS)}"))
    threads: int = field(default=2, metadata=_help("CPU threads of every server"))
    clients: tuple[int, ...] = field(default=(1, 8, 32), metadata=_help("concurrent clients per level"))
    requests_per_level: int = field(default=64, metadata=_help("requests per level (at least clients)"))
    level_timeout_s: float = field(
        default=600.0, metadata=_help("a level (and the robustness run) stops issuing after this")
    )
    manifest: Path = field(default=Path("data/real/asterisk.jsonl"), metadata=_help("real clips"))
    clips: int = field(default=32, metadata=_help("distinct clips the load levels cycle through"))
    min_clip_s: float = field(default=1.5, metadata=_help("shortest clip used (seconds)"))
    max_clip_s: float = field(default=10.0, metadata=_help("longest clip used (seconds)"))
    idle_repeats: int = field(default=3, metadata=_help("idle runs of each mixed-load clip (median)"))
    mixed_minutes: float = field(default=10.0, metadata=_help("the long file in flight (minutes)"))
    mixed_clip_s: float = field(default=3.0, metadata=_help("mixed load: clips nearest this length"))
    mixed_clips: int = field(default=5, metadata=_help("distinct mixed-load clips"))
    mixed_interval_s: float = field(default=3.0, metadata=_help("a clip every this many seconds"))
    mixed_lead_s: float = field(default=2.0, metadata=_help("first clip this long after the file"))
    mixed_timeout_s: float = field(default=1800.0, metadata=_help("most the long file may take"))
    robust_requests: int = field(default=1000, metadata=_help("robustness run: requests (0: none)"))
    robust_bad_fraction: float = field(default=0.05, metadata=_help("robustness run: bad uploads"))
    robust_clients: int = field(default=8, metadata=_help("robustness run: concurrent clients"))
    robust_rss_after: int = field(default=100, metadata=_help("first RSS reading after this many"))
    seed: int = field(default=0, metadata=_help("clip choice, long file, bad-upload positions"))
    data_dir: Path = field(default=Path("data/longform"), metadata=_help("where the long file is built"))
    work_dir: Path = field(default=Path("runs/bench-serve"), metadata=_help("the fastaed checkpoint"))
    quick: bool = field(default=False, metadata=_help("tiny numbers (for fields left at their defaults)"))
    json: Path | None = field(default=None, metadata=_help("write the results here"))

    def __post_init__(self) -> None:
        if unknown := [t for t in self.targets if t not in TARGETS]:
            raise ValueError(f"--targets: unknown {', '.join(unknown)}; known: {', '.join(TARGETS)}")
        counts = (*self.clients, self.threads, self.clips, self.requests_per_level, self.mixed_clips,
                  self.idle_repeats, self.robust_clients)  # fmt: skip
        if not self.clients or min(counts) < 1 or self.robust_requests < 0 or self.mixed_minutes <= 0:
            raise ValueError("--clients, --threads, --clips, --requests-per-level, --mixed-clips, "
                             "--idle-repeats, --robust-clients >= 1; --robust-requests >= 0; "
                             "--mixed-minutes > 0")  # fmt: skip
        if not 0 <= self.robust_bad_fraction < 1:
            raise ValueError(f"--robust-bad-fraction {self.robust_bad_fraction:g}: expected [0, 1)")


QUICK = {"clients": (1, 4), "requests_per_level": 8, "clips": 4, "idle_repeats": 2, "mixed_minutes": 1.0,
         "mixed_clips": 2, "mixed_interval_s": 1.0, "mixed_lead_s": 0.5, "robust_requests": 100,
         "robust_rss_after": 10}  # fmt: skip


def effective(config: ServeBenchConfig) -> ServeBenchConfig:
    """``--quick``'s numbers for every field still at its default (an explicit flag wins)."""
    if not config.quick:
        return config
    default = ServeBenchConfig()
    return replace(config, **{k: v for k, v in QUICK.items() if getattr(config, k) == getattr(default, k)})


# ---- server processes -----------------------------------------------------------------------------------


def summarise(answers: list[Answer], jobs: list[Job], expected: dict[str, str]) -> dict[str, Any]:
    """Counts, throughput and latency of a load level; ``expected``: each clip's idle text."""
    ok = [a for a in answers if a.status == 200]
    wall = max(a.end for a in answers) - min(a.start for a in answers) if answers else 0.0
    audio = sum(jobs[a.index].seconds for a in ok)
    return {"requests": len(answers), "answered": len(ok), "failed": len(answers) - len(ok),
            "wrong_text": sum(a.text != expected.get(a.key) for a in ok), "audio_s": audio, "wall_s": wall,
            "throughput": audio / wall if wall else None,
            "latency": latency_summary([a.latency_s for a in ok]),
            "errors": sorted({a.error for a in answers if a.error})[:3]}  # fmt: skip


# ---- one target --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    """What every target is sent: clips, mixed-load clips, the long file, bad uploads."""

    clips: list[Job]
    mixed: list[Job]
    long: Job
    bad: list[Job]


def mixed_load(url: str, program: str, work: Workload, own: dict[str, float], config: ServeBenchConfig,
               expected: dict[str, str]) -> dict[str, Any]:  # fmt: skip
    """The long file in flight and clips one by one beside it: each clip's wait beyond its own compute."""

    async def main() -> tuple[Answer, list[Answer]]:
        async with http_client(3, config.mixed_timeout_s) as http:
            long = asyncio.create_task(send_one(http, url, program, work.long, -1, config.mixed_timeout_s))
            start, sent = time.monotonic(), []
            while not long.done() and len(sent) < MIXED_MAX_SENDS:
                wake = start + config.mixed_lead_s + len(sent) * config.mixed_interval_s
                await asyncio.sleep(max(0.0, wake - time.monotonic()))
                if long.done():
                    break
                job = work.mixed[len(sent) % len(work.mixed)]
                sent.append(await send_one(http, url, program, job, len(sent), config.mixed_timeout_s))
            return await long, sent

    long, sent = asyncio.run(main())
    ok = [a for a in sent if a.status == 200]
    return {"long_file": {"status": long.status, "seconds": long.latency_s, "audio_s": work.long.seconds,
                          "error": long.error}, "clips_sent": len(sent), "clips_answered": len(ok),
            "wrong_text": sum(a.text != expected.get(a.key) for a in ok),
            "own_s": {k: own[k] for k in sorted({a.key for a in sent})},
            "latency": latency_summary([a.latency_s for a in ok]),
            "extra": latency_summary([a.latency_s - own[a.key] for a in ok])}  # fmt: skip


def robustness(url: str, pid: int, work: Workload, config: ServeBenchConfig,
               expected: dict[str, str]) -> dict[str, Any]:  # fmt: skip
    """Good and bad uploads mixed: right texts, 4xx for the bad ones, health, memory growth."""
    import httpx
    import numpy as np

    n = config.robust_requests
    order = np.random.default_rng([config.seed, 26]).permutation(n).tolist()
    bad_at = set(order[: round(n * config.robust_bad_fraction)])  # seeded positions of the bad uploads
    jobs, bad_n = [], 0
    for i in range(n):
        jobs.append(
            work.bad[bad_n % len(work.bad)] if i in bad_at else work.clips[(i - bad_n) % len(work.clips)]
        )
        bad_n += i in bad_at
    rss: dict[str, float | None] = {"start": rss_mb(pid), f"after_{config.robust_rss_after}": None}

    def on_answer(_answer: Answer, answered: int) -> None:
        if answered == config.robust_rss_after:
            rss[f"after_{config.robust_rss_after}"] = rss_mb(pid)

    limit, before = config.level_timeout_s, read_metrics(url)
    answers = drive(url, "fastaed", jobs, config.robust_clients, limit, limit, on_answer)
    rss["end"], batches = rss_mb(pid), batch_delta(before, read_metrics(url))
    good = [a for a in answers if jobs[a.index].good]
    bad = [a for a in answers if not jobs[a.index].good]
    failures = [a for a in good if a.status != 200 or a.text != expected.get(a.key)]
    failures += [a for a in bad if not 400 <= a.status < 500]
    try:
        health = httpx.get(url + "/health", timeout=10, trust_env=False).json().get("status")
    except (httpx.HTTPError, ValueError) as e:
        health = f"{type(e).__name__}: {e}"
    first = rss[f"after_{config.robust_rss_after}"]
    return {"requests": len(answers), "good": len(good), "bad": len(bad),
            "good_correct": sum(a.status == 200 and a.text == expected.get(a.key) for a in good),
            "bad_4xx": sum(400 <= a.status < 500 for a in bad), "health": health,
            "statuses": dict(Counter(str(a.status) for a in answers)), "rss_mb": rss,
            "rss_growth": (rss["end"] - first) / first if first and rss["end"] else None,
            "batches": batches, "failures": [asdict(a) for a in failures[:5]]}  # fmt: skip


def server_command(name: str, weights, port: int, threads: int) -> tuple[list[str], dict[str, str]]:
    """The target's server command line and environment (``weights``: a longform ``Weights``). Every
    server gets the OpenMP wait setting of `fastaed serve` (``util/threads.py``: a short spin, then sleep;
    unless the user chose a policy), whatever started the benchmark: the same for fastaed and CTranslate2."""
    from fastaed.util.threads import set_thread_wait_policy

    program, max_batch = TARGETS[name]
    env = dict(os.environ)
    set_thread_wait_policy(env, argv=["serve"])
    if program == "fastaed":
        cmd = [sys.executable, "-m", "fastaed", "serve", str(weights.checkpoint), "--host", "127.0.0.1",
               "--port", str(port), "--device", "cpu", "--dtype", "fp32", "--drain-s", "5",
               "--model-id", f"whisper-{weights.name}"]  # fmt: skip
        cmd += ["--max-batch", str(max_batch)] if max_batch else []
        return cmd, env | {"OMP_NUM_THREADS": str(threads)}  # torch's intra-op threads
    from fastaed.bench.peers.whisper import whisper_peer_python

    cmd = [str(whisper_peer_python()), str(FW_SERVER), "--model", str(weights.ctranslate2),
           "--port", str(port), "--threads", str(threads)]  # fmt: skip
    env.update(HF_HUB_OFFLINE="1", PYTHONNOUSERSITE="1")
    env.pop("PYTHONPATH", None)  # the peer must not see fastaed's packages
    return cmd, env


def run_target(name: str, weights, work: Workload, config: ServeBenchConfig, log_dir: Path) -> dict[str, Any]:
    """Start the target's server, put every load on it, stop it: its row of the results."""
    program, port = TARGETS[name][0], free_port()
    url, limit = f"http://127.0.0.1:{port}", config.level_timeout_s
    command, env = server_command(name, weights, port, config.threads)
    threads = {"OMP_NUM_THREADS": env.get("OMP_NUM_THREADS")}
    row: dict[str, Any] = {"target": name, "program": program, "command": shlex.join(command),
                           "environment": wait_settings(env) | threads,
                           "load_before": machine_load()}  # fmt: skip
    print(f"{name}: starting", file=sys.stderr, flush=True)
    with serving(command, url, log_dir / f"{name}.log", env) as proc:
        row["pid"], row["rss_mb_started"] = proc.pid, rss_mb(proc.pid)
        drive(url, program, work.clips[:1], 1, limit, limit)  # warm-up
        keys = {j.key for j in work.clips}
        idle_jobs = work.clips + [j for j in work.mixed if j.key not in keys]
        idle_jobs += [j for _ in range(config.idle_repeats - 1) for j in work.mixed]
        idle = drive(url, program, idle_jobs, 1, limit, limit)
        expected: dict[str, str] = {}  # each clip's first idle answer: its reference text
        for a in idle:
            if a.status == 200:
                expected.setdefault(a.key, a.text)
        own = {j.key: statistics.median([a.latency_s for a in idle if a.key == j.key and a.status == 200]
                                        or [float("nan")]) for j in work.mixed}  # fmt: skip
        row["idle"] = summarise(idle, idle_jobs, expected) | {"texts": expected}
        row["levels"] = []
        for clients in config.clients:
            jobs = [work.clips[i % len(work.clips)] for i in range(max(config.requests_per_level, clients))]
            before = read_metrics(url) if program == "fastaed" else None
            level = {
                "clients": clients,
                **summarise(drive(url, program, jobs, clients, limit, limit), jobs, expected),
            }
            if before is not None:
                level["batches"] = batch_delta(before, read_metrics(url))
            row["levels"].append(level)
            print(f"{name}: {clients} clients: {level['throughput'] or 0:.2f} audio s/s", file=sys.stderr)
        row["mixed"] = mixed_load(url, program, work, own, config, expected)
        if name == "fastaed-batching" and config.robust_requests:
            row["robustness"] = robustness(url, proc.pid, work, config, expected)
    row["exit_code"], row["load_after"] = proc.returncode, machine_load()
    return row


# ---- the benchmark -------------------------------------------------------------------------------------


def workload(config: ServeBenchConfig) -> Workload:
    """Real clips of the manifest (a seeded choice), the mixed-load clips, the long file, bad uploads."""
    import numpy as np

    from fastaed.bench.longform import LongformBenchConfig
    from fastaed.bench.longform_data import load_source_clips, long_file

    manifest = config.manifest
    if not manifest.is_file() and manifest.name == "asterisk.jsonl":
        from fastaed.data.asterisk import prepare_asterisk

        prepare_asterisk(manifest.parent)  # from the Debian packages (make apt); says what is missing
    # the long-form benchmark's clip list, so its long file of the same length and seed is reused as is
    source = load_source_clips(manifest, LongformBenchConfig().max_clip_s)
    usable = sorted((c for c in source if config.min_clip_s <= c.seconds <= config.max_clip_s),
                    key=lambda c: c.utt_id)  # fmt: skip
    if not usable:
        raise ValueError(f"{manifest}: no clip of {config.min_clip_s:g}-{config.max_clip_s:g} s")
    rng = np.random.default_rng(config.seed)
    chosen = sorted(rng.permutation(len(usable))[: config.clips])
    near = sorted(usable, key=lambda c: (abs(c.seconds - config.mixed_clip_s), c.utt_id))[
        : config.mixed_clips
    ]
    audio, truth = long_file(source, config.mixed_minutes, config.seed, config.data_dir, source=str(manifest))
    noise = np.random.default_rng([config.seed, 1]).integers(0, 256, 4096, dtype=np.uint8).tobytes()

    def job(c) -> Job:
        return Job(c.utt_id, Path(c.audio).name, Path(c.audio).read_bytes(), c.seconds)

    return Workload([job(usable[i]) for i in chosen], [job(c) for c in near],
                    Job("long-file", audio.name, audio.read_bytes(), float(truth["minutes"]) * 60),
                    [Job("bad-text", "notes.txt", b"a text file, not audio\n" * 20, 0.0, False),
                     Job("bad-empty", "empty.wav", b"", 0.0, False),
                     Job("bad-noise", "noise.wav", noise, 0.0, False)])  # fmt: skip


def run(config: ServeBenchConfig) -> dict[str, Any]:
    from fastaed.bench.longform import prepare_weights
    from fastaed.bench.peers.whisper import whisper_peer_python

    config, load_before, notes = effective(config), machine_load(), []
    names = list(config.targets)
    if "faster-whisper" in names and whisper_peer_python() is None:
        notes.append("faster-whisper not run: no faster-whisper peer venv .venv-whisper (make whisper-venv)")
        names.remove("faster-whisper")
    work = workload(config)
    config.work_dir.mkdir(parents=True, exist_ok=True)
    weights = prepare_weights(config.model, config.work_dir, need_openai=False)
    rows = []
    with tempfile.TemporaryDirectory(prefix="fastaed-bench-serve-") as logs:
        for name in names:
            try:
                rows.append(run_target(name, weights, work, config, Path(logs)))
            except Exception as err:  # one target's failure must not cost the others their rows
                print(f"{name} failed: {str(err).splitlines()[0]}", file=sys.stderr)
                rows.append({"target": name, "program": TARGETS[name][0], "error": str(err)})
    protocol = (f"each target a server process of its own on 127.0.0.1, {config.threads} CPU threads, "
                "float32, greedy, English; throughput = audio s answered / wall s (first send to last "
                "answer); latency at the client; mixed load: a clip's latency minus its median idle "
                "latency")  # fmt: skip
    return {"protocol": protocol, "model": config.model,
            "clips": [{"key": j.key, "seconds": j.seconds} for j in work.clips],
            "mixed_clips": [{"key": j.key, "seconds": j.seconds} for j in work.mixed],
            "long_file": {"seconds": work.long.seconds, "minutes": config.mixed_minutes}, "rows": rows,
            "targets": targets(rows), "versions": _versions(names), "load_before": load_before,
            "load_after": machine_load(), "command": command_line(config), "notes": notes,
            "config": {k: str(v) if isinstance(v, Path) else v
                       for k, v in asdict(config).items()}}  # fmt: skip


def targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue 26's targets that these rows can judge (a failed or missing row judges none)."""
    by = {r["target"]: r for r in rows if "error" not in r}
    if (batching := by.get("fastaed-batching")) is None:
        return []
    top, checks = batching["levels"][-1], []
    for other, times in (("fastaed-max-batch-1", 3.0), ("faster-whisper", 2.0)):
        level = next(
            (lv for lv in by.get(other, {}).get("levels", []) if lv["clients"] == top["clients"]), {}
        )
        if level.get("throughput") and top["throughput"]:
            checks.append((f"throughput / {other}'s", f"{top['clients']} clients",
                           top["throughput"] / level["throughput"], times, ">="))  # fmt: skip
    checks.append(("mixed: a clip's wait beyond its own compute, max (s)", "long file in flight",
                   batching["mixed"]["extra"]["max"], 1.5, "<="))  # fmt: skip
    if (r := batching.get("robustness")) is not None:
        checks += [("robustness: good requests answered right", f"{r['good']} good",
                    r["good_correct"] / max(r["good"], 1), 1.0, ">="),
                   ("robustness: bad uploads answered 4xx", f"{r['bad']} bad",
                    r["bad_4xx"] / max(r["bad"], 1), 1.0, ">="),
                   ("robustness: /health ok at the end", "after", float(r["health"] == "ok"), 1.0, ">="),
                   ("robustness: RSS growth after the first reading", f"{r['requests']} requests",
                    r["rss_growth"], 0.10, "<=")]  # fmt: skip
    return [{"target": t, "where": w, "value": v, "threshold": x, "met": v >= x if op == ">=" else v <= x}
            for t, w, v, x, op in checks if v is not None]  # fmt: skip


def command_line(config: ServeBenchConfig) -> str:
    """The ``fastaed bench serve`` command of this config (fields at their defaults left out)."""
    words, default = ["fastaed", "bench", "serve"], ServeBenchConfig()
    for name, value in asdict(config).items():
        flag = "--" + name.replace("_", "-")
        if value == getattr(default, name):
            continue
        if isinstance(value, bool):
            words.append(flag if value else "--no-" + name.replace("_", "-"))
        else:
            values = value if isinstance(value, tuple) else (value,)
            words += [flag, *(f"{v:g}" if isinstance(v, float) else str(v) for v in values)]
    return shlex.join(words)


def _versions(names: list[str]) -> dict[str, Any]:
    import httpx
    import starlette
    import torch
    import uvicorn

    import fastaed
    from fastaed.bench.peers.whisper import run_whisper_peer

    out = {"fastaed": fastaed.__version__, "torch": torch.__version__, "uvicorn": uvicorn.__version__,
           "starlette": starlette.__version__, "httpx": httpx.__version__}  # fmt: skip
    if "faster-whisper" in names:
        out["faster_whisper_peer"] = run_whisper_peer("versions")
    return out


# ---- the report ----------------------------------------------------------------------------------------


def _ms(x: float | None) -> str:
    return "-" if x is None or x != x else f"{x * 1000:.0f}"


def print_report(result: dict[str, Any]) -> None:
    rows, mixed = [], []
    for r in result["rows"]:
        if "error" in r:
            rows.append([r["target"], "failed", *["-"] * 9])
            continue
        for lv in r["levels"]:
            b, lat = lv.get("batches") or {}, lv["latency"]
            mean = "-" if b.get("mean_rows") is None else f"{b['mean_rows']:.1f}"
            rows.append([r["target"], lv["clients"], lv["requests"], lv["answered"], lv["wrong_text"],
                         f"{lv['throughput'] or 0:.2f}", _ms(lat["p50"]), _ms(lat["p95"]), _ms(lat["p99"]),
                         b.get("batches", "-"), mean])  # fmt: skip
        m = r["mixed"]
        own = statistics.median(m["own_s"].values()) if m["own_s"] else None
        mixed.append([r["target"], f"{m['long_file']['seconds']:.1f}",
                      f"{m['clips_answered']}/{m['clips_sent']}", _ms(own), _ms(m["latency"]["max"]),
                      _ms(m["extra"]["p50"]), _ms(m["extra"]["max"])])  # fmt: skip
    print(format_table(["target", "clients", "requests", "ok", "wrong text", "audio s/s", "p50 ms", "p95 ms",
                        "p99 ms", "batches", "mean rows"], rows))  # fmt: skip
    print(f"\nmixed load: clips one by one while a {result['long_file']['minutes']:g} min file is in flight")
    print(format_table(["target", "long file s", "clips ok/sent", "own ms", "max ms", "extra p50 ms",
                        "extra max ms"], mixed))  # fmt: skip
    for r in result["rows"]:
        if (rb := r.get("robustness")) is not None:
            rss = " -> ".join(f"{k} {v:.0f}" for k, v in rb["rss_mb"].items() if v is not None)
            print(f"\nrobustness ({r['target']}): {rb['requests']} requests; "
                  f"{rb['good_correct']}/{rb['good']} "
                  f"good answered right, {rb['bad_4xx']}/{rb['bad']} bad got 4xx; health {rb['health']}; "
                  f"RSS MB {rss} (growth {pct(rb['rss_growth'], 1)}); statuses {rb['statuses']}")  # fmt: skip
    for t in result["targets"]:
        mark = "met" if t["met"] else "MISSED"
        print(f"target {t['target']} [{t['where']}]: {t['value']:.3g} (threshold {t['threshold']:g}) {mark}")
    for note in result["notes"]:
        print(f"note: {note}")
    print(f"load before: {result['load_before']['uptime']}\nload after:  {result['load_after']['uptime']}")
    print(f"({result['protocol']})")
