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
    args = build_parser().parse_args(argv)
    rc = args.func(args)
    sys.exit(rc or 0)
