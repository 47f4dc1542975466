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

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fastaed.sampling.bins import Bins, estimate_bins
from fastaed.sampling.sampler import BucketingSampler
from fastaed.util.tables import format_table

TARGETS = {"min_fill": 0.85, "mean_batch_ratio": 4.0, "throughput_ratio": 1.8}
DEFAULT_MANIFEST, DEFAULT_TOKENIZER = Path("data/default/train.jsonl"), Path("data/tokenizer")


def load_lengths(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, str, str | None]:
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


def bench_batch_sizes(args: argparse.Namespace) -> dict[str, Any]:
    from fastaed.train.distributed import enable_expandable_segments
    from fastaed.train.profile import (
        BatchSizeProfile,
        ProfileIdentity,
        check_profile,
        heuristic_batch_sizes,
        heuristic_bins,
        make_meter,
        make_profile,
        plot_profile,
    )
    from fastaed.train.profile.heuristic import BATCH_DURATION, QUADRATIC_DURATION
    from fastaed.train.profile.run import (
        ProfileSettings,
        bucket_shapes,
        build_step,
        cap_allocator,
        resolve_budget,
        resolve_model,
    )
    from fastaed.train.profile.throughput import synthetic_training_run
    from fastaed.util.devices import resolve_device

    t_start = time.perf_counter()
    if torch.cuda.is_available():
        enable_expandable_segments()
    device = resolve_device(args.device)
    use_bf16 = device.type == "cuda" and args.dtype in ("auto", "bf16")
    d, u, lengths_text, tokenizer = load_lengths(args)
    config, tokenizer_id = resolve_model(args.model, tokenizer, args.ctc_weight)
    bins = Bins.load(args.bins) if args.bins else estimate_bins(d, u, 30, 4, method="min_padding")
    h_bins = heuristic_bins(d, u)
    h_sizes = heuristic_batch_sizes(h_bins)
    print(f"lengths: {lengths_text}; model {config.name}; {device}, {'bf16' if use_bf16 else 'fp32'}")

    step = build_step(config, device, use_bf16, seed=args.seed)
    meter = make_meter(step)
    step.warm_up(min(bucket_shapes(bins)))
    margin = args.safety_margin
    if str(args.memory_budget) == "heuristic":
        heuristic = heuristic_worst_cases(meter, h_bins, h_sizes)
        budget = int(max(h["peak_bytes"] for h in heuristic) / (1 - margin)) + 1
    else:
        budget = resolve_budget(args.memory_budget, device)
        cap_allocator(device, budget)
        heuristic = heuristic_worst_cases(meter, h_bins, h_sizes)
    settings = ProfileSettings(budget_bytes=budget, safety_margin=margin, compare_search=args.compare_search)
    target = settings.target_bytes
    for h in heuristic:
        h["fill"] = h["peak_bytes"] / target if h["peak_bytes"] is not None else None
    print(f"budget {budget / 2**30:.3f} GiB ({args.memory_budget}), target {target / 2**30:.3f} GiB")

    identity = ProfileIdentity.for_run(config, device, "bf16" if use_bf16 else "fp32", tokenizer_id)
    if args.profile:
        profile = BatchSizeProfile.load(args.profile)
        if diffs := check_profile(args.profile, identity, force=True):
            print(f"warning: {args.profile} was made for another run: {'; '.join(diffs)}")
    else:
        profile = make_profile(meter, bins, identity, settings, progress=not args.no_progress)
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
                step, sampler, d, u, args.steps, args.warmup, progress=not args.no_progress, desc=name
            )
    fills = [b.fill for b in profile.buckets]
    h_fills = [h["fill"] for h in heuristic if h["fill"] is not None]
    result: dict[str, Any] = {
        "benchmark": "batch_sizes", "model": config.name, "device": str(device),
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

    print(tables(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1, default=float) + "\n")
        profile.save(args.json.with_name(args.json.stem + "_profile.json"))
    png = args.png or (args.json.with_suffix(".png") if args.json else None)
    if png is not None:
        try:
            plot_profile(profile, png)
        except ImportError:  # matplotlib is optional on a bare GPU box
            print("matplotlib is not installed: no PNG")
    print(json.dumps({k: v for k, v in result.items() if not k.endswith("_buckets")}, default=float))
    return result


def tables(r: dict[str, Any]) -> str:
    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.1f}%"

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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="tiny-flash", help="preset or checkpoint (GPU: canary-1b-flash)")
    parser.add_argument("--ctc-weight", type=float, default=None, help="as model.ctc_weight")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--dtype", choices=("auto", "bf16", "fp32"), default="auto", help="bf16 on CUDA")
    parser.add_argument(
        "--memory-budget", default=None, help="GiB, 'auto' (CUDA memory) or 'heuristic' (CPU default)"
    )
    parser.add_argument("--safety-margin", type=float, default=None, help="default: the profile's 0.15")
    parser.add_argument("--bins", type=Path, default=None, help="bins JSON (default: 30x4 from the lengths)")
    parser.add_argument("--manifest", type=Path, default=None, help="lengths of this training manifest")
    parser.add_argument("--tokenizer", type=Path, default=None, help="tokenizer of --manifest")
    parser.add_argument(
        "--synthetic", action="store_true", help="SPEC log-normal lengths even if data/ exists"
    )
    parser.add_argument("--utterances", type=int, default=None, help="lengths to sample (100k)")
    parser.add_argument("--profile", type=Path, default=None, help="use this profile instead of making one")
    parser.add_argument("--compare-search", type=int, default=0, help="also run the search on K buckets")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per strategy (0: none)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="result JSON (+ _profile.json and a PNG)")
    parser.add_argument("--png", type=Path, default=None)
    parser.add_argument("--no-progress", action="store_true")


def main(args: argparse.Namespace) -> int:
    from fastaed.train.profile.run import SAFETY_MARGIN

    if args.safety_margin is None:
        args.safety_margin = SAFETY_MARGIN
    if args.memory_budget is None:
        args.memory_budget = "auto" if torch.cuda.is_available() and args.device != "cpu" else "heuristic"
    bench_batch_sizes(args)
    return 0
