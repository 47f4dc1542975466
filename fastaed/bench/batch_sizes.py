"""`fastaed bench batch-sizes`: a batch-size profile against NeMo's Canary-1B heuristic, same model and data.

Both sides, in the same run, on the same model, device, dtype and lengths:

- **heuristic**: NeMo's original setting, 1D dynamic bucketing with 20 equal-total-duration buckets,
  ``batch_duration = 360`` s, ``quadratic_duration = 15`` (``fastaed.train.profile.heuristic``);
- **profile**: ``fastaed batch-sizes`` on 2D bins (30 × 4, min-padding, estimated from the lengths, or
  ``--bins``): the memory model verified by a real trial per bucket.

Reported: per bucket, memory fill = worst-case peak / target (target = budget minus the safety margin), for
the profile's buckets and for the heuristic's own 20 buckets (their worst case: B(d) utterances of the
bucket's longest duration and largest U); the mean batch size over one epoch of each sampler; and a short
training run with each (same steps; synthetic batches of the samplers' real lengths, the trainer's step, see
``fastaed.train.profile.throughput``) giving real audio seconds per second and their ratio.

**Lengths.** With ``--manifest`` (default: ``data/default/train.jsonl`` with ``data/tokenizer`` when they
exist) the (duration, U) pairs of that training set, resampled with replacement to ``--utterances`` so each
of the 120 buckets holds many full batches (a 10k-utterance set would cap the profile's short-bucket batches
by the bucket's population, not by memory); the model is sized for that tokenizer. Otherwise the SPEC's
log-normal lengths (0.5-40 s).

**Budget.** On CUDA the device memory (``auto``). On CPU nothing runs out of memory, so the default
``heuristic`` budget is the smallest one under which every heuristic batch fits the target: the heuristic
exactly fills its worst bucket, as NeMo's setting was tuned not to OOM on its worst bucket. A number (GiB)
works everywhere.

Targets (GPU, ``canary-1b-flash``, bf16, 80 GB): every profile bucket filled >= 85% of the target; mean
batch size >= 4x the heuristic (paper: 5x); training throughput >= 1.8x (paper: ~1.8x); no OOM in the
profile's run. On CPU the same numbers are reported with the tiny presets and judged the same way.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from fastaed.sampling.bins import Bins, estimate_bins
from fastaed.sampling.sampler import BucketingSampler
from fastaed.util.tables import format_table, pct

TARGETS = {"min_fill": 0.85, "mean_batch_ratio": 4.0, "throughput_ratio": 1.8}
DEFAULT_MANIFEST, DEFAULT_TOKENIZER = Path("data/default/train.jsonl"), Path("data/tokenizer")


@dataclass(frozen=True)
class BatchSizesBenchConfig:
    """Options of ``fastaed bench batch-sizes``."""

    model: str = field(default="tiny-flash", metadata={"help": "preset or checkpoint (GPU: canary-1b-flash)"})
    ctc_weight: float | None = field(default=None, metadata={"help": "as model.ctc_weight"})
    device: Literal["auto", "cpu", "cuda"] = field(default="auto", metadata={"help": "auto: CUDA if any"})
    dtype: Literal["auto", "bf16", "fp32"] = field(default="auto", metadata={"help": "bf16 on CUDA"})
    memory_budget: str | None = field(
        default=None, metadata={"help": "GiB, 'auto' (CUDA memory) or 'heuristic' (CPU default)"}
    )
    safety_margin: float | None = field(default=None, metadata={"help": "default: the profile's 0.15"})
    bins: Path | None = field(default=None, metadata={"help": "bins JSON (default: 30x4 from the lengths)"})
    manifest: Path | None = field(default=None, metadata={"help": "lengths of this training manifest"})
    tokenizer: Path | None = field(default=None, metadata={"help": "tokenizer of --manifest"})
    synthetic: bool = field(default=False, metadata={"help": "SPEC log-normal lengths even if data/ exists"})
    utterances: int | None = field(default=None, metadata={"help": "lengths to sample (100k)"})
    profile: Path | None = field(default=None, metadata={"help": "use this profile instead of making one"})
    compare_search: int = field(default=0, metadata={"help": "also run the search on K buckets"})
    steps: int = field(default=20, metadata={"help": "timed training steps per strategy (0: none)"})
    warmup: int = field(default=2, metadata={"help": "untimed steps first"})
    seed: int = field(default=0, metadata={"help": "seed of the lengths, the model and the samplers"})
    json: Path | None = field(default=None, metadata={"help": "result JSON (+ _profile.json and a PNG)"})
    png: Path | None = field(default=None, metadata={"help": "profile plot (default: next to --json)"})
    progress: bool = field(default=True, metadata={"help": "progress bars"})


def _with_defaults(config: BatchSizesBenchConfig) -> BatchSizesBenchConfig:
    """The defaults that depend on the machine: the profile's margin; the budget rule (CUDA: its memory)."""
    from fastaed.train.profile.run import SAFETY_MARGIN

    margin = SAFETY_MARGIN if config.safety_margin is None else config.safety_margin
    budget = config.memory_budget
    if budget is None:
        budget = "auto" if torch.cuda.is_available() and config.device != "cpu" else "heuristic"
    return replace(config, safety_margin=margin, memory_budget=budget)


def load_lengths(args: BatchSizesBenchConfig) -> tuple[np.ndarray, np.ndarray, str, str | None]:
    """(durations, U, description, tokenizer dir or None); see the module docstring."""
    from fastaed.sampling.stats import synthetic_lengths

    manifest, tokenizer = args.manifest, args.tokenizer
    if manifest is None and not args.synthetic and DEFAULT_MANIFEST.is_file() and DEFAULT_TOKENIZER.is_dir():
        manifest, tokenizer = DEFAULT_MANIFEST, DEFAULT_TOKENIZER
    if manifest is None:
        n = args.utterances or 100_000
        d, u = synthetic_lengths(n, seed=args.seed)
        return d, u, f"SPEC log-normal lengths (median 6 s, 0.5-40 s), {n:,} utterances", None
    if tokenizer is None:
        raise SystemExit("--manifest needs --tokenizer (it defines U)")
    from fastaed.data.index import build_index
    from fastaed.data.tokenizer import Tokenizer

    index = build_index([str(manifest)], Tokenizer.load(tokenizer))
    d, u = index.durations, index.out_lengths
    n = args.utterances or 100_000
    pick = np.random.default_rng(args.seed).integers(0, len(d), n)
    text = (
        f"{manifest}: {len(d):,} utterances ({d.astype(np.float64).sum() / 3600:.1f} h), resampled to {n:,}"
    )
    return d[pick], u[pick], text, str(tokenizer)


def heuristic_worst_cases(meter, bins: Bins, sizes: np.ndarray) -> list[dict[str, Any]]:
    """The heuristic's own buckets at their worst case (B utterances of the bucket bounds), one trial each."""
    from fastaed.train.profile.run import bucket_shapes

    out = []
    for k, (shape, b) in enumerate(zip(bucket_shapes(bins), sizes.tolist())):
        m = meter.measure(int(b), shape)
        out.append(
            {"bucket": k, "max_duration": shape.duration, "max_u": shape.out_len, "batch_size": int(b)}
        )
        out[-1] |= {"peak_bytes": m.peak_bytes, "oom": m.oom, "reserved_bytes": m.reserved_bytes}
    return out


def run(args: BatchSizesBenchConfig) -> dict[str, Any]:
    """Profile vs heuristic on one model, device and set of lengths; writes the profile and its PNG beside
    ``json`` (or ``png``). Returns the JSON-able result."""
    from fastaed.train.profile import (
        BatchSizeProfile,
        check_profile,
        heuristic_batch_sizes,
        heuristic_bins,
        plot_profile,
    )
    from fastaed.train.profile.heuristic import BATCH_DURATION, QUADRATIC_DURATION
    from fastaed.train.profile.run import ProfileSettings, bucket_shapes, open_profiler, resolve_run
    from fastaed.train.profile.throughput import synthetic_training_run

    t_start = time.perf_counter()
    args = _with_defaults(args)
    d, u, lengths_text, tokenizer = load_lengths(args)
    profiled = resolve_run(args.model, tokenizer, args.ctc_weight)
    bins = Bins.load(args.bins) if args.bins else estimate_bins(d, u, 30, 4, method="min_padding")
    h_bins = heuristic_bins(d, u)
    h_sizes = heuristic_batch_sizes(h_bins)
    # The heuristic budget rule measures the heuristic's batches first, so the allocator stays uncapped.
    by_heuristic = str(args.memory_budget) == "heuristic"
    profiler = open_profiler(
        profiled, device=args.device, dtype=args.dtype,
        budget=None if by_heuristic else args.memory_budget, seed=args.seed,
    )  # fmt: skip
    step, meter, device, identity = profiler.step, profiler.meter, profiler.device, profiler.identity
    print(f"lengths: {lengths_text}; model {profiled.model.name}; {device}, {identity.dtype}")

    step.warm_up(min(bucket_shapes(bins)))
    margin = args.safety_margin
    heuristic = heuristic_worst_cases(meter, h_bins, h_sizes)
    if profiler.budget_bytes is None:
        budget = int(max(h["peak_bytes"] for h in heuristic) / (1 - margin)) + 1
    else:
        budget = profiler.budget_bytes
    settings = ProfileSettings(budget_bytes=budget, safety_margin=margin, compare_search=args.compare_search)
    target = settings.target_bytes
    for h in heuristic:
        h["fill"] = h["peak_bytes"] / target if h["peak_bytes"] is not None else None
    print(f"budget {budget / 2**30:.3f} GiB ({args.memory_budget}), target {target / 2**30:.3f} GiB")

    if args.profile:
        profile = BatchSizeProfile.load(args.profile)
        if diffs := check_profile(args.profile, identity, force=True):
            print(f"warning: {args.profile} was made for another run: {'; '.join(diffs)}")
    else:
        profile = profiler.profile(bins, settings, progress=args.progress)
    t_profile = profile.meta.get("seconds")

    kw = {"shuffle": True, "seed": args.seed}
    samplers = {
        "heuristic": BucketingSampler(
            d, u, bins=h_bins, max_duration=BATCH_DURATION, quadratic_duration=QUADRATIC_DURATION, **kw
        ),
        "profile": BucketingSampler(d, u, bins=profile.bins, batch_sizes=profile.batch_sizes, **kw),
    }
    runs: dict[str, Any] = {}
    for name, sampler in samplers.items():
        report = sampler.epoch_report()
        runs[name] = {"epoch_mean_batch_size": report["mean_batch_size"], "epoch_steps": report["steps"]}
        runs[name]["rejected"] = report["rejected"]
        if args.steps > 0:
            runs[name] |= synthetic_training_run(
                step, sampler, d, u, args.steps, args.warmup, progress=args.progress, desc=name
            )
    fills = [b.fill for b in profile.buckets]
    h_fills = [h["fill"] for h in heuristic if h["fill"] is not None]
    result: dict[str, Any] = {
        "benchmark": "batch_sizes", "model": profiled.model.name, "device": str(device),
        "device_name": profile.identity.device, "dtype": profile.identity.dtype, "lengths": lengths_text,
        "budget_gib": budget / 2**30, "budget_rule": str(args.memory_budget), "safety_margin": margin,
        "target_gib": target / 2**30, "buckets": bins.num_buckets, "profile_seconds": t_profile,
        "profile_min_fill": min(fills), "profile_mean_fill": float(np.mean(fills)),
        "heuristic_min_fill": min(h_fills), "heuristic_mean_fill": float(np.mean(h_fills)),
        "heuristic_max_fill": max(h_fills), "heuristic_buckets": heuristic, "runs": runs,
        "profile_buckets": [b.__dict__ for b in profile.buckets],
        "memory_model": profile.memory_model, "steps": args.steps, "warmup": args.warmup,
    }  # fmt: skip
    h_run, p_run = runs["heuristic"], runs["profile"]
    result["mean_batch_ratio"] = p_run["epoch_mean_batch_size"] / h_run["epoch_mean_batch_size"]
    if args.steps > 0 and h_run["audio_s_per_s"] > 0:
        result["throughput_ratio"] = p_run["audio_s_per_s"] / h_run["audio_s_per_s"]
        result["step_time_ratio"] = p_run["step_time_s"] / h_run["step_time_s"]
    checks = {"min_fill": (result["profile_min_fill"], result["profile_min_fill"] >= TARGETS["min_fill"])}
    ratio = result["mean_batch_ratio"]
    checks["mean_batch_ratio"] = (ratio, ratio >= TARGETS["mean_batch_ratio"])
    if "throughput_ratio" in result:
        ratio = result["throughput_ratio"]
        checks["throughput_ratio"] = (ratio, ratio >= TARGETS["throughput_ratio"])
        no_oom = p_run["oom_splits"] == 0 and p_run["failed"] is None
        checks["profile_run_no_oom"] = (p_run["oom_splits"], no_oom)
    result["targets"] = {k: {"value": v, "pass": bool(ok)} for k, (v, ok) in checks.items()}
    result["machine"] = _machine(device)
    result["wall_s"] = time.perf_counter() - t_start

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        profile.save(args.json.with_name(args.json.stem + "_profile.json"))
    png = args.png or (args.json.with_suffix(".png") if args.json else None)
    if png is not None:
        try:
            plot_profile(profile, png)
        except ImportError:  # matplotlib is optional on a bare GPU box
            print("matplotlib is not installed: no PNG")
    return result


def print_report(result: dict[str, Any]) -> None:
    """The tables, then the result without its per-bucket lists as one JSON line (machine-readable)."""
    print(tables(result))
    print(json.dumps({k: v for k, v in result.items() if not k.endswith("_buckets")}, default=float))


def tables(r: dict[str, Any]) -> str:
    h_rows = [
        [h["bucket"], f"{h['max_duration']:g}", h["max_u"], h["batch_size"], pct(h["fill"]), h["oom"]]
        for h in r["heuristic_buckets"]
    ]
    out = ["== heuristic (NeMo 1D, 20 buckets, 360 s, q=15): worst case of each bucket vs the target"]
    out.append(format_table(["bucket", "max d (s)", "max U", "B", "fill", "OOM"], h_rows))
    p = r["profile_buckets"]
    p_rows = [
        [b["bucket"], f"{b['max_duration']:g}", b["max_u"], b["batch_size"], b["heuristic_batch_size"]]
        + [pct(b["fill"]), pct(b["heuristic_fill"]), b["trials"]]
        for b in p
    ]
    out.append(f"== profile ({len(p)} buckets): fill = measured peak / target; heuristic on the same grid")
    out.append(
        format_table(["bucket", "max d (s)", "max U", "B", "heur. B", "fill", "heur. fill", "trials"], p_rows)
    )
    spans = {
        "heuristic": (r["heuristic_min_fill"], r["heuristic_mean_fill"], r["heuristic_max_fill"]),
        "profile": (r["profile_min_fill"], r["profile_mean_fill"], max(b["fill"] for b in p)),
    }
    rows = []
    for name, run in r["runs"].items():
        rows.append([name, f"{run['epoch_mean_batch_size']:.1f}", " / ".join(pct(x) for x in spans[name])])
        if "audio_s_per_s" in run:
            rows[-1] += [f"{run['audio_s_per_s']:.1f}", f"{run['step_time_s']:.3f}"]
            rows[-1] += [f"{run['mean_batch_size']:.1f}", run["oom_splits"]]
    header = [
        "strategy",
        "epoch mean B",
        "fill min/mean/max",
        "audio s/s",
        "step s",
        "run mean B",
        "OOM splits",
    ]
    out.append(
        f"== {r['model']} on {r['device_name']}, {r['dtype']}; budget {r['budget_gib']:.3f} GiB "
        f"({r['budget_rule']}), target {r['target_gib']:.3f} GiB; {r['steps']} timed steps each"
    )
    out.append(format_table(header[: len(rows[0])], rows))
    marks = {k: f"{v['value']:.3g} {'PASS' if v['pass'] else 'FAIL'}" for k, v in r["targets"].items()}
    out.append("targets: " + ", ".join(f"{k} {m}" for k, m in marks.items()))
    return "\n".join(out)


def _machine(device: torch.device) -> str:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "no GPU"
    return f"{platform.machine()}, {cores} cores, {name}, torch {torch.__version__}"
