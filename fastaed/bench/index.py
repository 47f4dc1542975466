"""`fastaed bench index`: build and reload the metadata index of a large manifest.

Targets (issue: foundation): 1,000,000 lines indexed in <= 30 s and reloaded from cache in <= 1 s on 2
cores. The manifest is generated locally (log-normal durations like the SPEC's padding set, sentences
drawn from a small word list, NeMo-style fields), so the benchmark needs no corpus.
"""

from __future__ import annotations

import json
import platform
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fastaed.util.tables import format_table

TARGET_BUILD_S = 30.0
TARGET_RELOAD_S = 1.0

_WORDS = (
    "the of and to in a is that for it as was with be by on not he this are or his from at which but have an "
    "they you were her she there been one all we their has would when what if will more no out so said who "
    "them some could time into only then new like these two may first any my now such people over years way "
    "water light house river morning heart letter garden window evening mountain question answer silence"
).split()


def write_synthetic_manifest(path: Path, num_lines: int, seed: int = 0) -> None:
    """NeMo JSONL with log-normal durations (median 6 s, sigma 0.75, clipped 0.5-40 s) and ~3 words/s."""
    rng = np.random.default_rng(seed)
    durations = np.clip(rng.lognormal(np.log(6.0), 0.75, num_lines), 0.5, 40.0)
    n_words = np.maximum(1, (durations * rng.uniform(2.0, 3.5, num_lines)).astype(int))
    word_ids = rng.integers(0, len(_WORDS), int(n_words.sum()))
    pnc = rng.random(num_lines) < 0.5
    pos = 0
    with open(path, "w") as f:
        for i in range(num_lines):
            words = [_WORDS[w] for w in word_ids[pos : pos + n_words[i]]]
            pos += n_words[i]
            text = " ".join(words).capitalize() + "."
            entry = {
                "audio_filepath": f"audio/{i:07d}.flac",
                "duration": round(float(durations[i]), 3),
                "text": text,
                "source_lang": "en",
                "target_lang": "en",
                "task": "transcribe",
                "pnc": "yes" if pnc[i] else "no",
            }
            f.write(json.dumps(entry) + "\n")


@dataclass(frozen=True)
class IndexBenchConfig:
    """Options of ``fastaed bench index``."""

    lines: int = field(default=1_000_000, metadata={"help": "manifest lines to generate and index"})
    workers: int | None = field(default=None, metadata={"help": "index worker processes (default: cores)"})
    json: Path | None = field(default=None, metadata={"help": "write the result JSON here"})


def run(config: IndexBenchConfig) -> dict:
    """Generate the manifest, build its index, reload it from the cache; the result as a JSON-able dict."""
    from fastaed.data.index import build_index
    from fastaed.data.tokenizer import TokenizerConfig, train_tokenizer

    num_lines = config.lines
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        manifest = tmp / "manifest.jsonl"
        t0 = time.perf_counter()
        write_synthetic_manifest(manifest, num_lines)
        gen_s = time.perf_counter() - t0
        sample = [json.loads(line)["text"] for _, line in zip(range(20_000), open(manifest))]
        tok = train_tokenizer(sample, tmp / "tok", TokenizerConfig(vocab_size=512))

        t0 = time.perf_counter()
        index = build_index(
            [manifest], tok, cache_dir=tmp / "cache", num_workers=config.workers, progress=True
        )
        build_s = time.perf_counter() - t0
        reloads = []
        for _ in range(3):
            t0 = time.perf_counter()
            again = build_index([manifest], tok, cache_dir=tmp / "cache")
            reloads.append(time.perf_counter() - t0)
        assert again.from_cache and np.array_equal(again.out_lengths, index.out_lengths)
        reload_s = float(np.median(reloads))
        size_mb = manifest.stat().st_size / 1e6

    return {
        "benchmark": "index",
        "lines": num_lines,
        "manifest_mb": round(size_mb, 1),
        "workers": config.workers,
        "generate_s": round(gen_s, 2),
        "build_s": round(build_s, 2),
        "lines_per_s": round(num_lines / build_s),
        "reload_s": round(reload_s, 3),
        "target_build_s": TARGET_BUILD_S * num_lines / 1_000_000,
        "target_reload_s": TARGET_RELOAD_S,
        "build_ok": build_s <= TARGET_BUILD_S * num_lines / 1_000_000,
        "reload_ok": reload_s <= TARGET_RELOAD_S,
        "machine": f"{platform.processor() or platform.machine()}, {_cpu_count()} cores",
    }


def print_report(result: dict) -> None:
    """The metric table, then the result as one JSON line (machine-readable stdout)."""
    r = result  # rounded in the result to the digits shown here, so the table reads the same numbers
    rows = [
        ("lines", f"{r['lines']:,}", ""),
        ("manifest size", f"{r['manifest_mb']:.0f} MB", ""),
        ("build (parse+validate+tokenize)", f"{r['build_s']:.2f} s", f"<= {r['target_build_s']:.0f} s"),
        ("build rate", f"{r['lines_per_s']:,.0f} lines/s", ""),
        (
            "reload from cache (incl. content hash)",
            f"{r['reload_s']:.3f} s",
            f"target <= {TARGET_RELOAD_S} s",
        ),
    ]
    print(format_table(("metric", "value", "anchor"), rows))
    print(json.dumps(result))


def _cpu_count() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
