"""`fastaed adapt CKPT --out DIR`: self-distil a padded Whisper checkpoint into an unpadded one.

    fastaed adapt runs/whisper-tiny.en --out runs/adapted-tiny.en --time-budget-s 1500
    fastaed adapt runs/whisper-base --out runs/adapted-base --audio my_clips.jsonl   # transcripts optional

See ``fastaed.train.adapt`` for the stages; a killed run resumes when started again with the same arguments.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fastaed.cli.config_args import add_config_arguments, config_from_args


def register(sub: argparse._SubParsersAction) -> None:
    from fastaed.train.adapt import AdaptConfig

    p = sub.add_parser(
        "adapt",
        help="adapt a Whisper checkpoint to unpadded input by self-distillation",
        description="The checkpoint on its 30 s padded input is the frozen teacher; a copy that sees only "
        "the real frames learns its token distributions and decoder states. Transcripts are optional (the "
        "teacher labels clips without one). The result is an ordinary checkpoint with an unpadded front end, "
        "plus adapt_summary.json.",
    )
    p.add_argument("checkpoint", type=Path, help="Whisper checkpoint (fastaed import whisper ...)")
    add_config_arguments(p, AdaptConfig, exclude=("checkpoint",))
    p.set_defaults(func=adapt_cmd)


def adapt_cmd(args: argparse.Namespace) -> int:
    from fastaed.train.adapt import SUMMARY_FILE, AdaptConfig, adapt

    summary = adapt(config_from_args(AdaptConfig, args, checkpoint=args.checkpoint))
    shown = {k: summary[k] for k in ("wall_s", "pseudo_label_s", "teacher_s", "train_s", "steps", "clips",
                                     "audio_s", "dev_wer_unpadded")}  # fmt: skip
    print(json.dumps(shown, indent=1))
    print(f"adapted checkpoint: {summary['out']} (details in {summary['out']}/{SUMMARY_FILE})")
    return 0
