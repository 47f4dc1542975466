"""`fastaed bench NAME`: benchmarks that print a table, write JSON and compare with their anchors."""

from __future__ import annotations

import argparse
import importlib

# name -> module providing add_arguments(parser) and main(args)
BENCHMARKS = {
    "index": ("fastaed.bench.index", "metadata index: build 1M manifest lines, reload from cache"),
    "features": ("fastaed.bench.features", "log-mel feature extraction and audio reading speed (xRT)"),
    "sampler": ("fastaed.bench.sampler", "sampler padding, speed, plan and resume vs Lhotse 1.33"),
    "rtfx": ("fastaed.bench.rtfx", "inference RTFx: flash vs balanced, K/V-cached vs NeMo-style decoder"),
    "convergence": ("fastaed.bench.convergence", "two training runs: dev WER / loss against steps (+ PNG)"),
    "all": ("fastaed.bench.all", "every benchmark: JSON + PNG, and BENCHMARKS.md's generated section"),
    "batch-sizes": ("fastaed.bench.batch_sizes", "batch-size profile vs NeMo heuristic: fill, batch, speed"),
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="run a benchmark")
    bsub = p.add_subparsers(dest="bench_name", metavar="BENCHMARK")
    bsub.required = True
    for name, (module, help_text) in BENCHMARKS.items():
        mod = importlib.import_module(module)
        b = bsub.add_parser(
            name,
            help=help_text,
            description=mod.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        mod.add_arguments(b)
        b.set_defaults(func=mod.main)
