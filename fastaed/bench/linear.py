"""One float32 linear layer on CPU: PyTorch's default (the BLAS) against oneDNN, per shape and row count.

The evidence behind ``fastaed.model.onednn``: which kernel a decoding step should call, and from what weight
size oneDNN pays. Shapes: the decoder matrices of Whisper tiny.en / base and canary-180m-flash (in x out), the
output layers, and small ones below the switch-over.

Protocol: for each shape enough distinct weight matrices to fill ``pool_mb`` are multiplied in turn, so
every call reads its weight from memory as a decoding step does (one matrix reused would sit in the cache);
each call is timed over ``calls`` products after a warm-up, the median of ``repeats`` runs. GB/s = weight
bytes / time per call. ``read_gb_s`` is the machine's streaming read rate (a ``sum`` over ``pool_mb``), the
ceiling of a one-row product.
"""

from __future__ import annotations

import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from fastaed.util.tables import format_table

# (in, out): tiny.en 384-wide, base 512-wide, canary-180m-flash 1,024-wide decoder matrices, two output
# layers, and small matrices (a 192-wide test model) that stay under the switch-over.
SHAPES = (
    (192, 192), (192, 768), (384, 384), (384, 1152), (1536, 384), (512, 512), (512, 1536), (2048, 512),
    (1024, 3072), (4096, 1024), (384, 51864), (512, 51864),
)  # fmt: skip


@dataclass(frozen=True)
class LinearBenchConfig:
    """Options of ``fastaed bench linear``."""

    rows: tuple[int, ...] = field(default=(1, 16), metadata={"help": "input rows per product"})
    pool_mb: int = field(default=256, metadata={"help": "MB of distinct weights cycled through per shape"})
    calls: int = field(default=200, metadata={"help": "timed products per run"})
    repeats: int = field(default=3, metadata={"help": "runs per cell (the median is reported)"})
    threads: int = field(default=2, metadata={"help": "CPU threads"})
    json: Path | None = field(default=None, metadata={"help": "write the results here"})

    def __post_init__(self) -> None:
        if not self.rows or min(self.rows) < 1 or self.calls < 1 or self.repeats < 1 or self.pool_mb < 1:
            raise ValueError("rows >= 1 each, calls, repeats and pool_mb >= 1")


def _seconds_per_call(fn: Any, weights: list[torch.Tensor], biases: list[torch.Tensor], x: torch.Tensor,
                      calls: int) -> float:  # fmt: skip
    n = len(weights)
    for i in range(min(n, 20)):  # warm-up: kernels chosen, primitives cached
        fn(x, weights[i], biases[i])
    start = time.perf_counter()
    for i in range(calls):
        fn(x, weights[i % n], biases[i % n])
    return (time.perf_counter() - start) / calls


def _onednn(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], "")


def read_gb_s(pool_mb: int, repeats: int = 5) -> float:
    """Streaming read rate: GB/s of a ``sum`` over ``pool_mb`` MB, the best of ``repeats``."""
    data = torch.ones(pool_mb * 2**20 // 4)
    data.sum()
    best = min(_clock(data.sum) for _ in range(repeats))
    return data.numel() * 4 / best / 1e9


def _clock(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run(config: LinearBenchConfig) -> dict[str, Any]:
    from fastaed.bench.whisper import _cpu_name
    from fastaed.model.onednn import MIN_WEIGHT_ELEMENTS, onednn_available

    if not onednn_available():
        raise RuntimeError(f"this PyTorch build ({torch.__version__}) has no oneDNN linear kernel")
    torch.set_num_threads(config.threads)
    torch.manual_seed(0)
    cells = []
    with torch.inference_mode():
        for k, n in SHAPES:
            count = max(2, config.pool_mb * 2**20 // (4 * k * n))
            weights = [torch.randn(n, k) for _ in range(count)]
            biases = [torch.randn(n) for _ in range(count)]
            for m in config.rows:
                x = torch.randn(m, k)
                timed = {
                    name: statistics.median(
                        _seconds_per_call(fn, weights, biases, x, config.calls) for _ in range(config.repeats)
                    )
                    for name, fn in (("default", F.linear), ("onednn", _onednn))
                }
                mb = 4 * k * n / 1e6
                cells.append({
                    "in": k, "out": n, "rows": m, "weight_mb": mb, "weights_cycled": count,
                    "onednn_in_fastaed": k * n >= MIN_WEIGHT_ELEMENTS,
                    "default_us": 1e6 * timed["default"], "onednn_us": 1e6 * timed["onednn"],
                    "default_gb_s": mb / 1e3 / timed["default"], "onednn_gb_s": mb / 1e3 / timed["onednn"],
                    "speedup": timed["default"] / timed["onednn"],
                })  # fmt: skip
                c = cells[-1]
                print(f"{k} x {n}, {m} rows: default {c['default_us']:.0f} us, oneDNN "
                      f"{c['onednn_us']:.0f} us ({c['speedup']:.2f}x)", flush=True)  # fmt: skip
            del weights, biases
    return {
        "benchmark": "linear",
        "protocol": " ".join(__doc__.split("\n\n")[2].split()) if __doc__ else "",
        "threads": torch.get_num_threads(),
        "cpu": _cpu_name(),
        "machine": platform.machine(),
        "torch": torch.__version__,
        "blas": "MKL" if torch.backends.mkl.is_available() else "other",
        "read_gb_s": read_gb_s(config.pool_mb),
        "min_weight_elements": MIN_WEIGHT_ELEMENTS,
        "cells": cells,
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
    }


def print_report(result: dict[str, Any]) -> None:
    header = ["in x out", "MB", "rows", "default us", "oneDNN us", "default GB/s", "oneDNN GB/s", "speed-up",
              "fastaed uses"]  # fmt: skip
    rows = [
        [f"{c['in']} x {c['out']}", f"{c['weight_mb']:.2f}", str(c["rows"]), f"{c['default_us']:.0f}",
         f"{c['onednn_us']:.0f}", f"{c['default_gb_s']:.1f}", f"{c['onednn_gb_s']:.1f}",
         f"{c['speedup']:.2f}x", "oneDNN" if c["onednn_in_fastaed"] else "default"]
        for c in result["cells"]
    ]  # fmt: skip
    print(f"float32 linear layer, weights from memory ({result['threads']} threads, {result['cpu']}, torch "
          f"{result['torch']}; streaming read {result['read_gb_s']:.1f} GB/s)")  # fmt: skip
    print(format_table(header, rows))
