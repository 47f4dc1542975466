"""`fastaed synth`: the offline synthetic speech corpus (Debian TTS voices, restricted vocabulary, card)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    from fastaed.synth.corpus import PRESETS

    p = sub.add_parser(
        "synth",
        help="generate the offline synthetic speech corpus",
        description="Synthesize train/dev/test (+ unseen-voice and multilingual) manifests, 16 kHz wavs and "
        "a corpus card with flite, espeak-ng and festival.",
    )
    p.add_argument("--preset", choices=sorted(PRESETS), default="default", help="corpus size and recipe")
    p.add_argument(
        "--out", type=Path, required=True, help="output folder: new or empty, or an earlier corpus (replaced)"
    )
    p.add_argument("--workers", type=int, default=None, help="synthesis processes (default: all CPU cores)")
    p.add_argument("--seed", type=int, default=0, help="seed of sentence splits and per-utterance choices")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=synth_cmd)


def synth_cmd(args: argparse.Namespace) -> int:
    from fastaed.synth.corpus import generate_corpus

    t0 = time.perf_counter()
    # A missing engine or source, or an existing corpus, is printed by fastaed.cli.main as an expected error.
    result = generate_corpus(
        args.out, args.preset, workers=args.workers, seed=args.seed, progress=not args.no_progress
    )
    card = result.card
    print(f"wrote {args.out} in {time.perf_counter() - t0:.1f} s ({card['generation']['workers']} workers)")
    for name, m in card["manifests"].items():
        print(
            f"  {name + '.jsonl':26s} {m['utterances']:6d} utts {m['hours']:7.3f} h "
            f"{m['sentences']:6d} sentences"
        )
    totals, top_n = card["totals"], card["vocabulary"]["top_n"]
    print(f"  total {totals['utterances']} utts, {totals['hours']} h; vocabulary: top {top_n} words")
    for lang, why in card["text_pool"]["skipped_languages"].items():
        print(f"  skipped language {lang}: {why}")
    report = result.report
    print(f"  skipped (synthesis failed, timed out or silent): {report.total}")
    for reason, n in report.counts.most_common():
        print(f"    {reason}: {n}; e.g. {report.examples[reason][0]}")
    print(f"  card: {args.out / 'card.md'}")
    return 0
