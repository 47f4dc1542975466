"""`fastaed bins` and `fastaed padding`: estimate bucket bins, and report the padding of batching strategies.

Both read lengths from the metadata index of NeMo manifests (U with the given tokenizer, cached), or from
``--synthetic N`` log-normal lengths (the SPEC's anchor distribution) when there is no data at hand.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from fastaed.data.errors import ON_BAD_INPUT_CHOICES
from fastaed.sampling.bins import BINS_FORMAT
from fastaed.util.outputs import check_output_files, json_kind, plot_kind, replacing_file

DEFAULT_MAX_DURATION = 600.0
# What each output file is (fastaed.util.outputs): an existing file is replaced only when it is the same kind.
BINS_JSON = json_kind("bins JSON", format=BINS_FORMAT)
BINS_PLOT = plot_kind("bins plot")
PADDING_JSON = json_kind("padding report", "utterances", "hours", "budget", "strategies")
PADDING_PLOT = plot_kind("padding plot")


def register(sub: argparse._SubParsersAction) -> None:
    b = sub.add_parser("bins", help="estimate 2D bucket bins (duration x U) and save them as JSON")
    _add_data_arguments(b)
    b.add_argument("--num-buckets", type=int, default=30, help="duration bins")
    b.add_argument(
        "--num-subbuckets",
        type=_subbuckets,
        default="auto",
        help="U sub-buckets per duration bin (1: 1D; auto: per bin, until its padding meets 5%%)",
    )
    b.add_argument("--method", choices=("equal_mass", "min_padding"), default="min_padding")
    b.add_argument("--tps-z", type=float, default=4.0, help="TPS outlier z-score per bin (<= 0: keep all)")
    b.add_argument(
        "--out", type=Path, required=True, help="bins JSON to write (replaces only a bins JSON fastaed wrote)"
    )
    b.add_argument("--png", type=Path, default=None, help="also plot the bins over the length histogram")
    b.set_defaults(func=bins_cmd)

    p = sub.add_parser(
        "padding",
        help="padding of random / 1D / 2D batching over one epoch",
        description="Input padding in feature frames, output padding in U, aggregated over one epoch "
        "(1 - sum real / sum padded). random: shuffle + greedy padded budget (Lhotse SimpleCutSampler "
        "semantics); 1d: 30 equal-mass duration buckets; 2d: min-padding 30x4 bins, or --bins / --profile.",
    )
    _add_data_arguments(p)
    p.add_argument("--strategy", default="random,1d,2d", help="comma list of random, 1d, 2d")
    p.add_argument("--bins", type=Path, default=None, help="bins JSON for the 2d strategy")
    p.add_argument(
        "--profile",
        type=Path,
        default=None,
        help='JSON with "batch_sizes" (one per flattened bucket) and optionally "bins" for the 2d strategy',
    )
    p.add_argument(
        "--max-duration",
        type=float,
        default=None,
        help=f"padded-seconds budget (default {DEFAULT_MAX_DURATION:.0f}; with --profile it caps the profile "
        "only when given)",
    )
    p.add_argument("--max-tokens", type=int, default=None, help="padded-U budget")
    p.add_argument("--quadratic-duration", type=float, default=None, help="charge d + d^2/q seconds")
    p.add_argument("--num-buckets", type=int, default=30, help="duration bins of the estimated 1d/2d bins")
    p.add_argument("--num-subbuckets", type=int, default=4, help="U sub-buckets of the estimated 2d bins")
    p.add_argument("--method", choices=("equal_mass", "min_padding"), default="min_padding", help="2d bins")
    p.add_argument("--tps-z", type=float, default=4.0, help="TPS outlier z-score per bin (<= 0: keep all)")
    p.add_argument("--json", type=Path, default=None, help="write the report JSON here")
    p.add_argument("--png", type=Path, default=None, help="padding bars and batch-size histograms")
    p.set_defaults(func=padding_cmd)


def _subbuckets(text: str) -> int | str:
    """``auto`` or an integer count of U sub-buckets."""
    return "auto" if text == "auto" else int(text)


def _add_data_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("manifests", nargs="*", help="NeMo JSONL manifests (PATH or PATH:WEIGHT)")
    p.add_argument("--tokenizer", type=Path, default=None, help="tokenizer directory (defines U)")
    p.add_argument("--synthetic", type=int, default=None, metavar="N", help="N log-normal lengths, no data")
    p.add_argument("--seed", type=int, default=0, help="synthetic data and shuffling seed")
    p.add_argument("--on-bad-input", choices=ON_BAD_INPUT_CHOICES, default="error")


def load_lengths(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, str]:
    """(durations, U, description) from ``--synthetic`` or the (cached) metadata index of the manifests."""
    if args.synthetic is not None:
        if args.manifests:
            raise SystemExit("give either manifests or --synthetic N, not both")
        from fastaed.sampling.stats import synthetic_lengths

        d, u = synthetic_lengths(args.synthetic, seed=args.seed)
        return d, u, f"synthetic log-normal, {args.synthetic:,} utterances"
    if not args.manifests or args.tokenizer is None:
        raise SystemExit("give manifests and --tokenizer DIR (or --synthetic N)")
    from fastaed.data.index import build_index
    from fastaed.data.manifest import ManifestSpec
    from fastaed.data.tokenizer import load_tokenizer

    tok = load_tokenizer(args.tokenizer)  # fastaed's, or a checkpoint's (Whisper, Canary) for fine-tuning
    specs = [ManifestSpec.parse(m) for m in args.manifests]
    index = build_index(specs, tok, on_bad_input=args.on_bad_input, progress=True)
    if index.report.total:  # lines skipped under --on-bad-input skip: say so, never silently
        print(index.report.summary())
    return index.durations, index.out_lengths, f"{len(index):,} utterances from {len(specs)} manifest(s)"


def _tps_z(value: float) -> float | None:
    return value if value > 0 else None


def bins_cmd(args: argparse.Namespace) -> int:
    from fastaed.sampling.bins import estimate_bins, plot_bins
    from fastaed.sampling.padding import bins_table

    check_output_files((args.out, BINS_JSON, "--out"), (args.png, BINS_PLOT, "--png"))
    d, u, what = load_lengths(args)
    bins = estimate_bins(
        d, u, args.num_buckets, args.num_subbuckets, tps_outlier_z=_tps_z(args.tps_z), method=args.method
    )
    table, summary = bins_table(bins, d, u)
    print(f"{what}: {bins.num_duration_bins} x {bins.num_subbuckets} {args.method} bins")
    print(table)
    reasons = ", ".join(f"{k} {v}" for k, v in summary["rejected_by_reason"].items())
    print(f"rejected {summary['rejected']} ({100 * summary['rejected_fraction']:.3f}%): {reasons}")
    with replacing_file(args.out, BINS_JSON) as tmp:
        bins.save(tmp)
    print(f"wrote {args.out}")
    if args.png:
        with replacing_file(args.png, BINS_PLOT, flag="--png") as tmp:
            plot_bins(bins, d, u, tmp)
        print(f"wrote {args.png}")
    return 0


def padding_cmd(args: argparse.Namespace) -> int:
    from fastaed.sampling.bins import Bins
    from fastaed.sampling.budget import load_profile
    from fastaed.sampling.padding import STRATEGIES, Budget, padding_report

    strategies = [s.strip() for s in args.strategy.split(",") if s.strip()]
    bad = [s for s in strategies if s not in STRATEGIES]
    if bad or not strategies:
        raise SystemExit(f"--strategy: unknown {bad}; choose from {', '.join(STRATEGIES)}")
    check_output_files((args.json, PADDING_JSON, "--json"), (args.png, PADDING_PLOT, "--png"))
    bins = Bins.load(args.bins) if args.bins else None
    batch_sizes = None
    if args.profile:
        batch_sizes, profile_bins = load_profile(args.profile)  # a broken file: fastaed.cli.main says so
        bins = profile_bins if profile_bins is not None else bins
        if bins is None:
            raise SystemExit("a profile needs bins: put them in the profile or pass --bins")
    explicit_budget = args.max_duration is not None or args.max_tokens is not None
    max_duration = args.max_duration
    if max_duration is None and args.max_tokens is None:
        max_duration = DEFAULT_MAX_DURATION
    budget = Budget(max_duration, args.max_tokens, args.quadratic_duration)

    d, u, what = load_lengths(args)
    report = padding_report(
        d,
        u,
        strategies,
        budget=budget,
        seed=args.seed,
        bins=bins,
        batch_sizes=batch_sizes,
        cap_profile=explicit_budget,
        num_buckets=args.num_buckets,
        num_subbuckets=args.num_subbuckets,
        method=args.method,
        tps_z=_tps_z(args.tps_z),
    )
    print(f"{what}, {report.hours:.1f} h; budget {budget.to_dict()}")
    print(report.table())
    for name, r in report.results.items():
        print(f"  {name}: {r.description}")
    if args.json:
        with replacing_file(args.json, PADDING_JSON, flag="--json") as tmp:
            report.save_json(tmp)
        print(f"wrote {args.json}")
    if args.png:
        with replacing_file(args.png, PADDING_PLOT, flag="--png") as tmp:
            report.plot(tmp)
        print(f"wrote {args.png}")
    return 0
