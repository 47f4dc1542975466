"""`fastaed` entry point: each subcommand lives in its own small module with `register(subparsers)`."""

from __future__ import annotations

import argparse
import importlib
import sys

# Subcommand modules, in pipeline order. Each defines register(subparsers) and sets `func` on its parser.
SUBCOMMAND_MODULES = (
    "fastaed.cli.synth",
    "fastaed.cli.data",
    "fastaed.cli.tokenizer",
    "fastaed.cli.sampling",
    "fastaed.cli.model",
    "fastaed.cli.batch_sizes",
    "fastaed.cli.train",
    "fastaed.cli.decode",
    "fastaed.cli.bench",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastaed", description=__doc__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> None:
    from fastaed.data.errors import BadInputError

    args = build_parser().parse_args(argv)
    try:
        rc = args.func(args)
    except (BadInputError, FileNotFoundError) as err:
        # Expected user-facing failures: the message already names file, line and field; no traceback.
        hint = (
            " (or pass --on-bad-input skip to leave it out and count it)"
            if isinstance(err, BadInputError)
            else ""
        )
        print(f"fastaed {args.command}: error: {err}{hint}", file=sys.stderr)
        rc = 2
    sys.exit(rc or 0)
