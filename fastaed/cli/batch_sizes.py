"""`fastaed batch-sizes`: a per-bucket batch-size profile for a model, device and memory budget.

    fastaed batch-sizes --model canary-1b-flash --bins bins.json --out profile.json        # GPU, bf16
    fastaed batch-sizes --config configs/train_tiny_flash.yaml --bins data/bins.json \\
        --memory-budget 2 --out runs/profile.json                                      # CPU, measured peak
    fastaed batch-sizes --config configs/finetune_whisper_tiny.yaml model.frontend_input=padded \\
        --bins bins.json --memory-budget 4 --out runs/profile-padded.json                # fine-tuning

With ``--config``, the run's own model: a preset sized for ``data.tokenizer``, or the ``model.init_from``
checkpoint's config, tokenizer prompt and front end (``model.frontend_input`` applied; KEY=VALUE words
override the config as for ``fastaed train``). ``--model DIR`` takes a checkpoint's config, ``tokenizer/``
and front end as stored (``--frontend-input`` changes a Whisper front end's input).

Then train with ``sampler.profile=profile.json`` (the trainer checks the profile's model, device, dtype,
tokenizer and front end against the run). See ``fastaed.train.profile`` for the method and the safety margin.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fastaed.util.outputs import check_output_files, json_kind, plot_kind, replacing_file

# What each output file is (fastaed.util.outputs): an existing file is replaced only when it is the same kind.
PROFILE_JSON = json_kind("batch-size profile", format="fastaed.batch_size_profile")  # profile.PROFILE_FORMAT
PROFILE_PLOT = plot_kind("batch-size profile plot")
SUMMARY_JSON = json_kind("batch-sizes summary", "model", "buckets", "budget_gib", "ratio_per_bucket_mean")


def register(sub: argparse._SubParsersAction) -> None:
    from fastaed.train.profile.run import DDP_OVERHEAD_BYTES, SAFETY_MARGIN
    from fastaed.train.profile.search import MAX_BATCH_SIZE, START_BATCH_SIZE, THRESHOLD

    p = sub.add_parser(
        "batch-sizes",
        help="per-bucket batch sizes that fill memory (memory model + OOM search) as a profile file",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--model", help="preset name (fastaed model list) or checkpoint directory")
    what.add_argument("--config", type=Path, help="training YAML: its model, tokenizer, loss, device, dtype")
    p.add_argument("--tokenizer", type=Path, default=None, help="size for it (--config: data.tokenizer)")
    p.add_argument("--ctc-weight", type=float, default=None, help="with a preset: as model.ctc_weight")
    p.add_argument(
        "--frontend-input",
        choices=("padded", "unpadded"),
        default=None,
        help="a Whisper checkpoint's input, as model.frontend_input (default: the config's / checkpoint's)",
    )
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="with --config: config overrides")
    p.add_argument("--bins", type=Path, default=None, help="bins JSON (default: the SPEC's 30x4 bins)")
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        help="profile JSON to write, a PNG beside it (each replaces only a file of its kind fastaed wrote)",
    )
    p.add_argument("--png", type=Path, default=None, help="batch size and memory fill per bucket")
    p.add_argument("--memory-budget", default="auto", help="GiB the run may use; auto: the GPU's memory")
    p.add_argument("--dtype", choices=("auto", "bf16", "fp32"), default="auto", help="auto: bf16 on CUDA")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument(
        "--ddp-overhead",
        nargs="?",
        type=float,
        const=DDP_OVERHEAD_BYTES / 2**30,
        default=0.0,
        metavar="GIB",
        help="keep this much resident for data-parallel buffers (flag alone: "
        f"{DDP_OVERHEAD_BYTES / 2**30:.2f} GiB = a 64 MiB all-reduce bucket + 512 MiB for NCCL)",
    )
    p.add_argument(
        "--safety-margin",
        type=float,
        default=SAFETY_MARGIN,
        help=f"share of the budget kept free for fragmentation and extras (default {SAFETY_MARGIN})",
    )
    p.add_argument("--method", choices=("model", "search"), default="model", help="model: fit + verify")
    p.add_argument("--compare-search", type=int, default=0, metavar="K", help="also search K buckets")
    p.add_argument("--start-batch-size", type=int, default=START_BATCH_SIZE)
    p.add_argument("--threshold", type=float, default=THRESHOLD, help="search stop: gap / min_fail")
    p.add_argument("--max-batch-size", type=int, default=MAX_BATCH_SIZE)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="also write the summary JSON here")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=batch_sizes_cmd, overrides_anywhere=True)


def batch_sizes_cmd(args: argparse.Namespace) -> int:
    from fastaed.sampling.bins import Bins
    from fastaed.train.config import LossConfig, TrainConfig
    from fastaed.train.profile import NoBatchFitsError, plot_profile
    from fastaed.train.profile.run import ProfileSettings, default_bins, open_profiler, resolve_run

    png_path = args.png or args.out.with_suffix(".png")
    check_output_files(  # refused before any profiling
        (args.out, PROFILE_JSON, "--out"),
        (png_path, PROFILE_PLOT, "--png"),
        (args.json, SUMMARY_JSON, "--json"),
    )
    loss_cfg, specaugment, bins_path = LossConfig(), True, args.bins
    device, dtype = args.device, args.dtype
    try:
        if args.config is not None:
            cfg = TrainConfig.from_yaml(args.config, overrides=args.overrides)
            tok_dir = str(args.tokenizer) if args.tokenizer else cfg.data.tokenizer  # as data.tokenizer=...
            run = resolve_run(cfg.model, tok_dir, frontend_input=args.frontend_input)
            loss_cfg, specaugment = cfg.loss, cfg.specaugment.enabled
            device = cfg.runtime.device if args.device == "auto" else args.device
            dtype = cfg.runtime.dtype if args.dtype == "auto" else args.dtype
            bins_path = bins_path or (Path(cfg.sampler.bins) if cfg.sampler.bins else None)
        else:
            if args.overrides:
                raise ValueError(f"config overrides ({' '.join(args.overrides)}) need --config")
            tok = str(args.tokenizer) if args.tokenizer else None
            run = resolve_run(args.model, tok, args.ctc_weight, args.frontend_input)
        profiler = open_profiler(
            run, device=device, dtype=dtype, budget=args.memory_budget, loss_cfg=loss_cfg,
            specaugment=specaugment, seed=args.seed, extra_bytes=int(args.ddp_overhead * 2**30),
        )  # fmt: skip
        assert profiler.budget_bytes is not None
        budget = profiler.budget_bytes
        settings = ProfileSettings(
            budget_bytes=budget, safety_margin=args.safety_margin, method=args.method,
            compare_search=args.compare_search, start_batch_size=args.start_batch_size,
            threshold=args.threshold, max_batch_size=args.max_batch_size,
            ddp_overhead_bytes=int(args.ddp_overhead * 2**30),
        )  # fmt: skip
    except ValueError as err:  # a ConfigError, or a budget or device this machine cannot give
        print(f"fastaed batch-sizes: error: {err}", file=sys.stderr)
        return 2
    bins = Bins.load(bins_path) if bins_path else default_bins(args.seed)
    identity = profiler.identity
    print(
        f"fastaed batch-sizes: {run.model.name} on {identity.device}, {identity.dtype}, prompt "
        f"{identity.prompt}, front end {identity.frontend or 'log-mel'}, {bins.num_buckets} buckets, budget "
        f"{budget / 2**30:.2f} GiB, margin {settings.safety_margin:.0%} -> target "
        f"{settings.target_bytes / 2**30:.2f} GiB, method {settings.method}",
        file=sys.stderr,
    )
    try:
        profile = profiler.profile(bins, settings, progress=not args.no_progress)
    except NoBatchFitsError as err:
        print(f"fastaed batch-sizes: error: {err} within {budget / 2**30:.2f} GiB", file=sys.stderr)
        return 2
    profile.meta["command"] = " ".join(["fastaed", *sys.argv[1:]]) if sys.argv else None
    with replacing_file(args.out, PROFILE_JSON) as tmp:
        profile.save(tmp)
    try:
        with replacing_file(png_path, PROFILE_PLOT, flag="--png") as tmp:
            plot_profile(profile, tmp)
        png = str(png_path)
    except ImportError:  # matplotlib is optional on a bare GPU box
        png = "none (matplotlib is not installed)"
    summary = summarize(profile)
    print(profile_table(profile))
    if unfit := [b for b in profile.buckets if b.note]:
        print(
            f"note: {len(unfit)} buckets hold no utterance (batch size 0; the trainer rejects theirs as "
            f"over_budget), e.g. bucket {unfit[0].bucket}: {unfit[0].note}"
        )
    print(f"profile: {args.out}  plot: {png}")
    if args.json:
        with replacing_file(args.json, SUMMARY_JSON, flag="--json") as tmp:
            tmp.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary))
    return 0


def summarize(profile) -> dict:
    """Totals of a profile: fills, batch sizes vs the heuristic, trials and time."""
    import numpy as np

    b = np.array(profile.batch_sizes, dtype=np.float64)
    fills = [x.fill for x in profile.buckets if x.fill is not None]
    h = np.array([x.heuristic_batch_size or 0 for x in profile.buckets], dtype=np.float64)
    hfill = [x.heuristic_fill for x in profile.buckets if x.heuristic_fill is not None]
    ident = profile.identity
    return {
        "model": ident.model_name, "device": ident.device, "dtype": ident.dtype, "buckets": len(b),
        "budget_gib": profile.budget_bytes / 2**30, "target_gib": profile.target_bytes / 2**30,
        "safety_margin": profile.safety_margin, "method": profile.method,
        "min_fill": min(fills) if fills else None, "mean_fill": float(np.mean(fills)) if fills else None,
        "heuristic_min_fill": min(hfill) if hfill else None,
        "heuristic_max_fill": max(hfill) if hfill else None,
        "mean_batch_size_per_bucket": float(b.mean()),
        "heuristic_mean_batch_size_per_bucket": float(h.mean()),
        "ratio_per_bucket_mean": float(np.mean(b / np.maximum(h, 1))),
        "memory_model_rms_rel_error": (profile.memory_model or {}).get("rms_rel_error"),
        "trials": profile.meta.get("trials"), "seconds": profile.meta.get("seconds"),
    }  # fmt: skip


def profile_table(profile) -> str:
    from fastaed.util.tables import format_table, pct

    def gib(x: float | None) -> str:
        return "-" if x is None else f"{x / 2**30:.3f}"

    rows = []
    for b in profile.buckets:
        rows.append([b.bucket, f"{b.max_duration:g}", b.max_u, b.batch_size, b.heuristic_batch_size])
        rows[-1] += [gib(b.predicted_bytes), gib(b.measured_bytes), pct(b.fill), pct(b.heuristic_fill)]
        rows[-1] += [b.trials, b.search_batch_size or "-"]
    header = "bucket|max d (s)|max U|B|heuristic B|predicted GiB|measured GiB|fill|heuristic fill|trials"
    return format_table([*header.split("|"), "search B"], rows)
