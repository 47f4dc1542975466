"""`fastaed transcribe` and `fastaed eval`: run a checkpoint on audio files or a manifest.

fastaed transcribe runs/tiny-flash/latest_ckpt a.wav b.flac --lang en --pnc yes --out hyps.jsonl
fastaed transcribe CKPT --manifest data/default/test.jsonl --beam-size 4 --out hyps.jsonl
fastaed eval CKPT --manifest data/default/test.jsonl --json eval.json
fastaed transcribe runs/whisper-tiny.en meeting.wav --out meeting.srt   # any length, timed segments
fastaed transcribe CKPT a.wav b.wav --long-form batched --word-timestamps --format vtt --out subs/
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fastaed.cli.errors import UsageError


def _decode_args(p: argparse.ArgumentParser, exclude: tuple[str, ...] = ()) -> None:
    """The flags transcribe and eval share; the decoding ones derived from ``DecodeConfig``'s fields."""
    from fastaed.cli.config_args import add_config_arguments
    from fastaed.data.errors import ON_BAD_INPUT_CHOICES
    from fastaed.decode.transcribe import DecodeConfig

    p.add_argument("checkpoint", type=Path, help="checkpoint folder (or a run folder: its latest checkpoint)")
    p.add_argument("--tokenizer", type=Path, default=None, help="tokenizer folder (default: found from CKPT)")
    from fastaed.decode.longform import LongFormConfig

    add_config_arguments(p, DecodeConfig, exclude=exclude)
    p.add_argument("--on-bad-input", choices=ON_BAD_INPUT_CHOICES, default="error")
    long_form = p.add_argument_group("long-form audio (longer than the model's window) and timestamps")
    add_config_arguments(long_form, LongFormConfig)


def register(sub: argparse._SubParsersAction) -> None:
    from fastaed.cli.config_args import add_config_arguments
    from fastaed.decode.writers import FORMATS, SubtitleOptions

    t = sub.add_parser("transcribe", help="transcribe (or translate) audio files or a manifest")
    _decode_args(t)
    t.add_argument("audio", nargs="*", type=Path, help="audio files (or use --manifest)")
    t.add_argument(
        "--manifest", type=Path, default=None,
        help="NeMo JSONL: each entry's own source_lang/target_lang/task/pnc make its prompt (the four flags "
        "below are for audio files and refused with --manifest). Whisper models have no pnc prompt: an entry "
        "with pnc: no is an error naming its line (skipped and counted under --on-bad-input skip)",
    )  # fmt: skip
    t.add_argument("--lang", default=None, help="source language of the audio files (default: en)")
    t.add_argument(
        "--target-lang", default=None,
        help="output language (default: --lang; en with --task translate). Whisper: transcribes into --lang "
        "and translates into en only; anything else is refused",
    )  # fmt: skip
    t.add_argument(
        "--task", choices=["transcribe", "translate"], default=None,
        help="default: transcribe. An English-only Whisper model (*.en) refuses translate and any --lang "
        "but en",
    )  # fmt: skip
    t.add_argument(
        "--pnc", choices=["yes", "no"], default=None,
        help="punctuation and casing in the output (default: yes). Whisper models always write cased, "
        "punctuated text and have no prompt for it: --pnc no is refused",
    )  # fmt: skip
    t.add_argument(
        "--out", type=Path, required=True,
        help="output file (several inputs and a subtitle/text format: a folder of STEM.FORMAT files)",
    )  # fmt: skip
    t.add_argument(
        "--format", choices=FORMATS, default=None,
        help="jsonl (one line per input; timed segments when long-form ran), json (OpenAI verbose_json), "
        "txt, srt, vtt, tsv (default: from the --out extension)",
    )  # fmt: skip
    subs = t.add_argument_group(
        "subtitle layout (srt/vtt; with --word-timestamps, as openai-whisper's writers)"
    )
    add_config_arguments(subs, SubtitleOptions)
    t.set_defaults(func=transcribe_cmd)

    e = sub.add_parser("eval", help="WER/CER (transcribe), BLEU (translate) and RTFx on a manifest")
    _decode_args(e, exclude=("nbest",))  # scores read the best hypothesis only
    e.add_argument("--manifest", type=Path, required=True, action="append", help="repeat for several sets")
    e.add_argument("--hyps", type=Path, default=None, help="also write the hypotheses (JSONL; one set only)")
    e.add_argument("--json", type=Path, default=None, help="write the results as JSON")
    e.add_argument(
        "--normalizer", choices=["basic", "whisper", "none"], default="basic",
        help="text normaliser before WER/CER, on both sides: basic = lower case, punctuation removed; "
        "whisper = Whisper's English normaliser (also numbers as digits, US spelling); none = as written. "
        "Whisper models have no pnc prompt: entries with pnc: no are decoded cased and punctuated, as "
        "Whisper writes, and scored after basic/whisper, which remove both (the output counts them); with "
        "none they are an error naming the line (skipped and counted under --on-bad-input skip)",
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


PROMPT_FLAGS = {"source_lang": "--lang", "target_lang": "--target-lang", "task": "--task", "pnc": "--pnc"}


def _prompt_flags(args: argparse.Namespace):
    """The one prompt that transcribe's flags ask of every audio file, as an utterance (with --manifest each
    entry has its own: the flags are refused there rather than ignored)."""
    from fastaed.data.manifest import Utterance

    given = [f for f in PROMPT_FLAGS.values() if getattr(args, f[2:].replace("-", "_")) is not None]
    if args.manifest and given:
        raise UsageError(
            f"{' '.join(given)}: not used with --manifest (each entry's own source_lang, target_lang, task "
            "and pnc fields make its prompt)"
        )
    lang, task = args.lang or "en", args.task or "transcribe"
    target = args.target_lang or ("en" if task == "translate" else lang)
    return Utterance("", 0.0, "", source_lang=lang, target_lang=target, task=task, pnc=args.pnc != "no")


def _check_prompt_flags(transcriber, prompt) -> None:
    """A flag the model cannot honour is refused once, naming the flag and the model family (not once per
    audio file, nor skipped file by file under --on-bad-input skip). Whisper only: fastaed's own and Canary
    models keep naming each audio file for a language their tokenizer lacks."""
    from fastaed.data.errors import BadInputError

    if "Whisper" not in transcriber.family:
        return
    try:
        transcriber.check_prompt(prompt, pnc="prompt")
    except BadInputError as err:
        flag = PROMPT_FLAGS.get(err.field or "", "--lang/--target-lang/--task/--pnc")
        value = getattr(prompt, err.field or "", "")
        value = ("yes" if value else "no") if isinstance(value, bool) else value
        family = "" if transcriber.family in err.detail else f" ({transcriber.family} model)"
        raise UsageError(f"{flag} {value}: {err.detail}{family}") from None


def _report_skips(report, where: str) -> None:
    if report.total:
        print(f"{where}: {report.summary()}", file=sys.stderr)


def _long_form(args: argparse.Namespace):
    from fastaed.cli.config_args import config_from_args
    from fastaed.decode.longform import LongFormConfig

    try:
        return config_from_args(LongFormConfig, args)
    except ValueError as e:
        raise UsageError(str(e)) from None


def transcribe_cmd(args: argparse.Namespace) -> int:
    from fastaed.cli.config_args import config_from_args
    from fastaed.cli.errors import check_output_path
    from fastaed.data.errors import BadInputReport
    from fastaed.decode.longform import needs_long_form, resolve_mode, transcribe_long
    from fastaed.decode.transcribe import utterances_from_audio, utterances_from_manifest, write_jsonl
    from fastaed.decode.writers import SubtitleOptions, check_output, format_for, wants_folder, write_outputs

    if bool(args.audio) == bool(args.manifest):
        raise UsageError("give audio files or --manifest (not both)")
    prompt = _prompt_flags(args)
    long_form = _long_form(args)
    try:
        fmt = format_for(args.out, args.format)
    except ValueError as e:
        raise UsageError(str(e)) from None
    inputs = len(args.audio) if args.audio else 2  # a manifest: a folder of files (unless jsonl)
    several = wants_folder(args.out, fmt, inputs)
    options = config_from_args(SubtitleOptions, args)
    if options.uses_words and not long_form.word_timestamps:
        raise UsageError("--max-line-width/--max-line-count/--max-words-per-line/--highlight-words lay out "
                         "words: add --word-timestamps")  # fmt: skip
    if not several:
        check_output_path(args.out, "--out")  # now, not after the whole decode
    if fmt != "jsonl":
        check_output(args.out, fmt, as_folder=several)
    transcriber = _transcriber(args)
    try:
        resolve_mode(transcriber, long_form)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if not args.manifest:
        _check_prompt_flags(transcriber, prompt)
    report = BadInputReport()
    if args.manifest:
        utts = utterances_from_manifest(args.manifest, args.on_bad_input, report)
    else:
        utts = utterances_from_audio(
            args.audio, source_lang=prompt.source_lang, target_lang=prompt.target_lang, task=prompt.task,
            pnc=prompt.pnc, on_bad_input=args.on_bad_input, report=report,
        )  # fmt: skip
    # The output is the product: a pnc=no entry asks for text Whisper cannot write (bad input, named).
    if fmt == "jsonl" and not needs_long_form(transcriber, utts, long_form):
        result = transcriber.run(utts, on_bad_input=args.on_bad_input, pnc="prompt")
        write_jsonl(result.transcripts, args.out)
        count, mode = len(result.transcripts), "one window per input"
        if result.loops:
            fired = ", ".join(f"{n} by {g}" for g, n in sorted(result.loops.items()))
            print(f"loop guard ended {sum(result.loops.values())} outputs ({fired})", file=sys.stderr)
    else:
        result = transcribe_long(transcriber, utts, long_form, on_bad_input=args.on_bad_input, pnc="prompt")
        written = write_outputs(result.transcripts, args.out, fmt, options, as_folder=several)
        count, mode = len(result.transcripts), f"long-form {result.mode}"
        silent = sum(not t.segments for t in result.transcripts)
        if silent:
            print(f"{silent} of {count} inputs: no speech found (empty transcript)", file=sys.stderr)
        if len(written) > 1:
            print(f"wrote {len(written)} files into {args.out}")
    _report_skips(report, str(args.manifest or "audio files"))
    _report_skips(result.skipped, "decoding")
    print(
        f"wrote {count} transcripts to {args.out} ({fmt}, {mode}): {result.audio_seconds:.1f} s of audio "
        f"in {result.wall_seconds:.2f} s (RTFx {result.rtfx:.1f}, batch {args.batch_size}, "
        f"{transcriber.device.type} {transcriber.precision}, beam {args.beam_size})"
    )
    return 0


def eval_cmd(args: argparse.Namespace) -> int:
    from fastaed.cli.errors import check_output_path
    from fastaed.data.errors import BadInputReport
    from fastaed.decode.longform import transcribe_any_length
    from fastaed.decode.scoring import NORMALIZER_DESCRIPTIONS, score
    from fastaed.decode.transcribe import utterances_from_manifest, write_jsonl
    from fastaed.util.tables import format_table, pct

    if args.hyps is not None and len(args.manifest) > 1:
        raise UsageError("--hyps needs a single --manifest")
    check_output_path(args.hyps, "--hyps")  # now, not after the whole decode
    check_output_path(args.json, "--json")
    long_form = _long_form(args)
    transcriber = _transcriber(args)
    rows, results = [], {}
    for manifest in args.manifest:
        report = BadInputReport()
        utts = utterances_from_manifest(manifest, args.on_bad_input, report)
        # pnc=no describes the reference; only "none" keeps the casing and punctuation that it is about.
        pnc = "prompt" if args.normalizer == "none" else "scored"
        result = transcribe_any_length(transcriber, utts, long_form, on_bad_input=args.on_bad_input, pnc=pnc)
        _report_skips(report, str(manifest))
        _report_skips(result.skipped, f"decoding {manifest}")
        if result.loops:
            fired = ", ".join(f"{n} by {g}" for g, n in sorted(result.loops.items()))
            print(
                f"{manifest}: loop guard ended {sum(result.loops.values())} outputs ({fired})",
                file=sys.stderr,
            )
        if result.pnc_not_prompted:
            print(
                f"{manifest}: {result.pnc_not_prompted} entries ask pnc=no; {transcriber.family} models have "
                f"no pnc prompt: written cased and punctuated, scored after the {args.normalizer} normaliser "
                "(which removes both)",
                file=sys.stderr,
            )
        if args.hyps is not None:
            write_jsonl(result.transcripts, args.hyps)
        scores = score(result.transcripts, args.normalizer)
        report.merge(result.skipped)
        results[str(manifest)] = {
            **scores, "rtfx": result.rtfx, "audio_seconds": result.audio_seconds,
            "wall_seconds": result.wall_seconds, "bad_input": report.to_dict(),
            "pnc_not_prompted": result.pnc_not_prompted, "loop_guard": result.loops,
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
        "dtype": transcriber.precision,
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
