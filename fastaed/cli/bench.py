"""`fastaed bench NAME`: benchmarks that print a table, write JSON and compare with their anchors.

The only adapter between the command line and the benchmarks: each benchmark module defines a frozen config
dataclass, ``run(config) -> dict`` and ``print_report(result)``; its flags are derived from the config's
fields, and ``--json PATH`` writes the result.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Benchmark:
    module: str
    config: str  # the module's config dataclass
    help: str


BENCHMARKS = {
    "index": Benchmark("fastaed.bench.index", "IndexBenchConfig",
                       "metadata index: build 1M manifest lines, reload from cache"),
    "features": Benchmark("fastaed.bench.features", "FeaturesBenchConfig",
                          "log-mel feature extraction and audio reading speed (xRT)"),
    "sampler": Benchmark("fastaed.bench.sampler", "SamplerBenchConfig",
                         "sampler padding, speed, plan and resume vs Lhotse 1.33"),
    "rtfx": Benchmark("fastaed.bench.rtfx", "RtfxBenchConfig",
                      "inference RTFx: flash vs balanced, K/V-cached vs NeMo-style decoder"),
    "convergence": Benchmark("fastaed.bench.convergence", "ConvergenceBenchConfig",
                             "two training runs: dev WER / loss against steps (+ PNG)"),
    "all": Benchmark("fastaed.bench.all", "AllBenchConfig",
                     "every benchmark: JSON + PNG, and BENCHMARKS.md's generated section"),
    "nemo": Benchmark("fastaed.bench.nemo", "NemoBenchConfig",
                      "Canary weights: NeMo transcribe() vs fastaed RTFx and decoder tokens/s"),
    "batch-sizes": Benchmark("fastaed.bench.batch_sizes", "BatchSizesBenchConfig",
                             "batch-size profile vs NeMo heuristic: fill, batch, speed"),
    "whisper": Benchmark("fastaed.bench.whisper", "WhisperBenchConfig",
                         "Whisper on real speech: fastaed vs faster-whisper, padded and unpadded input"),
    "breakdown": Benchmark("fastaed.bench.breakdown", "BreakdownBenchConfig",
                           "batch-1 time: features, encoder, decoder blocks, output layer, search"),
    "linear": Benchmark("fastaed.bench.linear", "LinearBenchConfig",
                        "one fp32 linear layer: PyTorch's default BLAS vs oneDNN, per shape and rows"),
    "step-compile": Benchmark("fastaed.bench.step_compile", "StepCompileBenchConfig",
                              "batch-1 decoding step: eager vs torch.compile, speed and bit-identity"),
    "shards": Benchmark("fastaed.bench.shards", "ShardsBenchConfig",
                        "streaming sampler: 512-rank simulation, tar vs loose reads, vs Lhotse on Shar"),
    "finetune": Benchmark("fastaed.bench.finetune", "FinetuneBenchConfig",
                          "Whisper fine-tuning: bucketed unpadded vs 30 s padded, equal wall time"),
    "longform": Benchmark("fastaed.bench.longform", "LongformBenchConfig",
                          "long real recordings: fastaed vs openai-whisper and faster-whisper, timed"),
    "serve": Benchmark("fastaed.bench.serve", "ServeBenchConfig",
                       "fastaed serve under load: batching vs --max-batch 1 vs a faster-whisper server"),
    "adapt": Benchmark("fastaed.bench.adapt", "AdaptBenchConfig",
                       "Whisper adapted to unpadded input vs the padded original and faster-whisper"),
    "adapt-ablation": Benchmark("fastaed.bench.adapt_ablation", "AdaptAblationConfig",
                                "fastaed adapt's loss: KL, state L2, both, or no teacher, on adaptation dev"),
    "readme": Benchmark("fastaed.bench.results_table", "ReadmeTableConfig",
                        "README's results table from bench_results/ (--check: exit 1 on drift)"),
}  # fmt: skip


def _named_manifest(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"--eval wants NAME=MANIFEST, got {text!r}")
    return name, Path(path)


def _convergence_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """The fields a flag cannot express: two positional run folders and repeated ``--eval NAME=MANIFEST``."""
    helps = {f.name: f.metadata.get("help") for f in dataclasses.fields(cls)}
    parser.add_argument("run_a", type=Path, help=helps["run_a"])
    parser.add_argument("run_b", type=Path, help=helps["run_b"])
    parser.add_argument(
        "--eval", dest="eval_sets", type=_named_manifest, action="append", default=[],
        metavar="NAME=MANIFEST", help=helps["eval_sets"],
    )  # fmt: skip


SPECIAL_ARGUMENTS = {"convergence": _convergence_arguments}


def register(sub: argparse._SubParsersAction) -> None:
    from fastaed.cli.config_args import add_config_arguments

    p = sub.add_parser("bench", help="run a benchmark")
    bsub = p.add_subparsers(dest="bench_name", metavar="BENCHMARK")
    bsub.required = True
    for name, bench in BENCHMARKS.items():
        module = importlib.import_module(bench.module)
        cls = getattr(module, bench.config)
        b = bsub.add_parser(
            name,
            help=bench.help,
            description=module.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        if name in SPECIAL_ARGUMENTS:
            SPECIAL_ARGUMENTS[name](b, cls)
        add_config_arguments(b, cls)
        b.set_defaults(func=main, bench_module=module, bench_config=cls)


def config_of(args: argparse.Namespace):
    """The benchmark's config from its parsed flags."""
    from fastaed.cli.config_args import config_from_args

    cls = args.bench_config
    # Fields without a derived flag (positionals, --eval) were added above under their own names.
    hidden = {
        f.name: tuple(v) if isinstance(v := getattr(args, f.name), list) else v
        for f in dataclasses.fields(cls)
        if not f.metadata.get("cli", True) and hasattr(args, f.name)
    }
    try:
        return config_from_args(cls, args, **hidden)
    except ValueError as e:  # a value the config refuses: one line, no traceback
        from fastaed.cli.errors import UsageError

        raise UsageError(str(e)) from None


def main(args: argparse.Namespace) -> int:
    """Run the benchmark with the config of the flags, print its report, write ``--json``."""
    from fastaed.bench.all import execute

    _, status = execute(args.bench_module, config_of(args))
    return status
