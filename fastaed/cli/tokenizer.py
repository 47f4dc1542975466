"""`fastaed tokenizer train|encode`: SentencePiece BPE with the Canary prompt tokens."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fastaed.data.errors import ON_BAD_INPUT_CHOICES, BadInputReport
from fastaed.data.manifest import ManifestSpec, Utterance, read_manifest
from fastaed.data.tokenizer import DEFAULT_LANGUAGES, Tokenizer, TokenizerConfig, train_tokenizer
from fastaed.util.outputs import building_dir, check_output_dir

TOKENIZER_KIND = "tokenizer folder"  # its output kind (fastaed.util.outputs)
TOKENIZER_FILES = {"tokenizer.model", "tokenizer.json"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tokenizer", help="train or inspect the SentencePiece tokenizer")
    tsub = p.add_subparsers(dest="tokenizer_command", metavar="ACTION")
    tsub.required = True

    t = tsub.add_parser("train", help="train a tokenizer on manifest transcripts")
    t.add_argument("manifests", nargs="+", help="NeMo JSONL manifests (PATH or PATH:WEIGHT)")
    t.add_argument(
        "--out",
        type=Path,
        required=True,
        help="tokenizer folder to write (new or empty, or an earlier tokenizer, which is replaced; anything "
        "else is refused)",
    )
    t.add_argument("--vocab-size", type=int, default=TokenizerConfig.vocab_size, help="SentencePiece pieces")
    t.add_argument("--model-type", choices=("bpe", "unigram"), default="bpe")
    t.add_argument(
        "--languages",
        default=",".join(DEFAULT_LANGUAGES),
        help="language codes that get a prompt token (codes seen in the manifests are added)",
    )
    t.add_argument("--on-bad-input", choices=ON_BAD_INPUT_CHOICES, default="error")
    t.set_defaults(func=train_cmd)

    e = tsub.add_parser("encode", help="show the decoder sequence of a text")
    e.add_argument("tokenizer", type=Path)
    e.add_argument("text")
    e.add_argument("--lang", default="en")
    e.add_argument("--pnc", choices=("yes", "no"), default="yes")
    e.set_defaults(func=encode_cmd)


def is_tokenizer_folder(path: Path) -> bool:
    """A tokenizer ``tokenizer train`` wrote before output folders carried a marker, and nothing else."""
    try:
        info = json.loads((path / "tokenizer.json").read_text())
    except (OSError, ValueError):
        return False
    names = {p.name for p in path.iterdir()}
    return isinstance(info, dict) and "identity" in info and "specials" in info and names <= TOKENIZER_FILES


def train_cmd(args: argparse.Namespace) -> int:
    check_output_dir(args.out, TOKENIZER_KIND, legacy=is_tokenizer_folder)  # before reading the manifests
    report = BadInputReport()
    utts: list[Utterance] = []
    for arg in args.manifests:
        utts.extend(
            read_manifest(ManifestSpec.parse(arg).path, on_bad_input=args.on_bad_input, report=report)
        )
    languages = [c for c in args.languages.split(",") if c]
    for u in utts:  # keep the given order, then append new codes in first-seen order
        for code in (u.source_lang, u.target_lang):
            if code not in languages:
                languages.append(code)
    config = TokenizerConfig(
        vocab_size=args.vocab_size, model_type=args.model_type, languages=tuple(languages)
    )
    # Built beside --out and renamed in: a folder of the user's is refused, never overwritten.
    with building_dir(args.out, TOKENIZER_KIND, "tokenizer train", legacy=is_tokenizer_folder) as tmp:
        tok = train_tokenizer((u.target_text for u in utts), tmp, config)
    print(
        f"trained on {len(utts):,} transcripts: {tok.sp.get_piece_size()} pieces + {tok.num_specials} "
        f"specials = {tok.vocab_size} ids; languages {list(tok.languages)}; identity {tok.identity}"
    )
    print(f"wrote {args.out}/tokenizer.model and tokenizer.json")
    print(report.summary())
    return 0


def encode_cmd(args: argparse.Namespace) -> int:
    tok = Tokenizer.load(args.tokenizer)
    utt = Utterance("-", 1.0, args.text, source_lang=args.lang, target_lang=args.lang, pnc=args.pnc == "yes")
    ids = tok.sequence(utt)
    pieces = [
        tok.specials[i] if i < tok.num_specials else tok.sp.id_to_piece(i - tok.num_specials) for i in ids
    ]
    print(
        json.dumps({"ids": ids, "pieces": pieces, "U": len(ids), "text": tok.decode(ids)}, ensure_ascii=False)
    )
    return 0
