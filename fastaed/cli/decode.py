"""`fastaed transcribe` and `fastaed eval`: run a checkpoint on audio files or a manifest.

fastaed transcribe runs/tiny-flash/latest_ckpt a.wav b.flac --lang en --pnc yes --out hyps.jsonl
fastaed transcribe CKPT --manifest data/default/test.jsonl --beam-size 4 --out hyps.jsonl
fastaed eval CKPT --manifest data/default/test.jsonl --json eval.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _decode_args(p: argparse.ArgumentParser, exclude: tuple[str, ...] = ()) -> None:
    """The flags transcribe and eval share; the decoding ones derived from ``DecodeConfig``'s fields."""
    from fastaed.cli.config_args import add_config_arguments
    from fastaed.data.errors import ON_BAD_INPUT_CHOICES
    from fastaed.decode.transcribe import DecodeConfig

    p.add_argument("checkpoint", type=Path, help="checkpoint folder (or a run folder: its latest checkpoint)")
    p.add_argument("--tokenizer", type=Path, default=None, help="tokenizer folder (default: found from CKPT)")
    add_config_arguments(p, DecodeConfig, exclude=exclude)
    p.add_argument("--on-bad-input", choices=ON_BAD_INPUT_CHOICES, default="error")


def register(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("transcribe", help="transcribe (or translate) audio files or a manifest")
    _decode_args(t)
    t.add_argument("audio", nargs="*", type=Path, help="audio files (or use --manifest)")
    t.add_argument("--manifest", type=Path, default=None, help="NeMo JSONL: each entry's own prompt is used")
    t.add_argument("--lang", default="en", help="source language of the audio files")
    t.add_argument("--target-lang", default=None, help="output language (default: --lang)")
    t.add_argument("--task", choices=["transcribe", "translate"], default="transcribe")
    t.add_argument("--pnc", choices=["yes", "no"], default="yes", help="punctuation and casing in the output")
    t.add_argument("--out", type=Path, required=True, help="JSONL of hypotheses, one line per input")
    t.set_defaults(func=transcribe_cmd)

    e = sub.add_parser("eval", help="WER/CER (transcribe), BLEU (translate) and RTFx on a manifest")
    _decode_args(e, exclude=("nbest",))  # scores read the best hypothesis only
    e.add_argument("--manifest", type=Path, required=True, action="append", help="repeat for several sets")
    e.add_argument("--hyps", type=Path, default=None, help="also write the hypotheses (JSONL; one set only)")
    e.add_argument("--json", type=Path, default=None, help="write the results as JSON")
    e.add_argument(
        "--normalizer", choices=["basic", "whisper", "none"], default="basic",
        help="text normaliser before WER/CER, on both sides: basic = lower case, punctuation removed; "
        "whisper = Whisper's English normaliser (also numbers as digits, US spelling); none = as written",
    )  # fmt: skip
    e.set_defaults(func=eval_cmd)


def _checkpoint(path: Path) -> Path:
    """A run folder stands for its latest complete checkpoint (as the trainer resumes from it)."""
    from fastaed.train.checkpoint import find_latest

    return find_latest(path) or path


def _transcriber(args: argparse.Namespace):
    from fastaed.cli.config_args import config_from_args
    from fastaed.decode.transcribe import DecodeConfig, Transcriber

    config = config_from_args(DecodeConfig, args)  # eval has no --nbest: the field's default, 1
    return Transcriber(_checkpoint(args.checkpoint), config, args.tokenizer)


def _report_skips(report, where: str) -> None:
    if report.total:
        print(f"{where}: {report.summary()}", file=sys.stderr)


def transcribe_cmd(args: argparse.Namespace) -> int:
    from fastaed.cli.errors import UsageError, check_output_path
    from fastaed.data.errors import BadInputReport
    from fastaed.decode.transcribe import utterances_from_audio, utterances_from_manifest, write_jsonl

    if bool(args.audio) == bool(args.manifest):
        raise UsageError("give audio files or --manifest (not both)")
    check_output_path(args.out, "--out")  # now, not after the whole decode
    report = BadInputReport()
    if args.manifest:
        utts = utterances_from_manifest(args.manifest, args.on_bad_input, report)
    else:
        utts = utterances_from_audio(
            args.audio, source_lang=args.lang, target_lang=args.target_lang or args.lang, task=args.task,
            pnc=args.pnc == "yes", on_bad_input=args.on_bad_input, report=report,
        )  # fmt: skip
    transcriber = _transcriber(args)
    result = transcriber.run(utts, on_bad_input=args.on_bad_input)
    write_jsonl(result.transcripts, args.out)
    _report_skips(report, str(args.manifest or "audio files"))
    _report_skips(result.skipped, "decoding")
    print(
        f"wrote {len(result.transcripts)} transcripts to {args.out}: {result.audio_seconds:.1f} s of audio "
        f"in {result.wall_seconds:.2f} s (RTFx {result.rtfx:.1f}, batch {args.batch_size}, "
        f"{transcriber.device.type} {str(transcriber.dtype).removeprefix('torch.')}, beam {args.beam_size})"
    )
    return 0


def eval_cmd(args: argparse.Namespace) -> int:
    from fastaed.cli.errors import UsageError, check_output_path
    from fastaed.data.errors import BadInputReport
    from fastaed.decode.scoring import NORMALIZER_DESCRIPTIONS, score
    from fastaed.decode.transcribe import utterances_from_manifest, write_jsonl
    from fastaed.util.tables import format_table, pct

    if args.hyps is not None and len(args.manifest) > 1:
        raise UsageError("--hyps needs a single --manifest")
    check_output_path(args.hyps, "--hyps")  # now, not after the whole decode
    check_output_path(args.json, "--json")
    transcriber = _transcriber(args)
    rows, results = [], {}
    for manifest in args.manifest:
        report = BadInputReport()
        utts = utterances_from_manifest(manifest, args.on_bad_input, report)
        result = transcriber.run(utts, on_bad_input=args.on_bad_input)
        _report_skips(report, str(manifest))
        _report_skips(result.skipped, f"decoding {manifest}")
        if args.hyps is not None:
            write_jsonl(result.transcripts, args.hyps)
        scores = score(result.transcripts, args.normalizer)
        report.merge(result.skipped)
        results[str(manifest)] = {
            **scores, "rtfx": result.rtfx, "audio_seconds": result.audio_seconds,
            "wall_seconds": result.wall_seconds, "bad_input": report.to_dict(),
        }  # fmt: skip
        for name, g in scores["groups"].items():
            rows.append([
                manifest.name, name, g["utterances"],
                pct(g["wer"], 2), pct(g["cer"], 2), "-" if g["bleu"] is None else f"{g['bleu']:.1f}",
                f"{result.rtfx:.1f}",
            ])  # fmt: skip
    doc = {
        "checkpoint": str(_checkpoint(args.checkpoint)),
        "device": transcriber.device.type,
        "dtype": str(transcriber.dtype).removeprefix("torch."),
        "batch_size": args.batch_size,
        "beam_size": args.beam_size,
        "length_penalty": args.length_penalty if args.beam_size > 1 else None,
        "rtfx_timer": "audio reading + features + encoder + decoder, warm-up batch excluded",
        "normalizer": args.normalizer,
        "normaliser": NORMALIZER_DESCRIPTIONS[args.normalizer],
        "sets": results,
    }
    print(format_table(["manifest", "task/lang", "utts", "WER", "CER", "BLEU", "RTFx"], rows))
    print(f"({doc['device']} {doc['dtype']}, batch {args.batch_size}, beam {args.beam_size}; WER/CER after "
          f"{doc['normaliser']}; RTFx includes audio reading and features)")  # fmt: skip
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0
