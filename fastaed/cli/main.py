"""`fastaed` entry point: each subcommand lives in its own small module with `register(subparsers)`.

Expected failures (bad input, a broken config, bins, profile or checkpoint file, an unusable flag) are printed
here, once for every command, as ``fastaed CMD: error: MESSAGE`` with exit status 2 and no traceback: their
messages already name the file, the line and what to change. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from fastaed.util.threads import OMP_WAIT_ENV, set_thread_wait_policy  # noqa: F401  (re-exported)

# Subcommand modules, in pipeline order. Each defines register(subparsers) and sets `func` on its parser.
SUBCOMMAND_MODULES = (
    "fastaed.cli.synth",
    "fastaed.cli.data",
    "fastaed.cli.tokenizer",
    "fastaed.cli.sampling",
    "fastaed.cli.model",
    "fastaed.cli.batch_sizes",
    "fastaed.cli.train",
    "fastaed.cli.adapt",
    "fastaed.cli.decode",
    "fastaed.cli.serve",
    "fastaed.cli.interop",
    "fastaed.cli.bench",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastaed", description=__doc__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def expected_errors() -> tuple[type[BaseException], ...]:
    """The failures a user can fix from the message alone (imported on use: `fastaed --help` stays cheap)."""
    from fastaed.cli.errors import UsageError
    from fastaed.data.errors import BadInputError
    from fastaed.data.realcheck import DownloadError
    from fastaed.formats import CheckpointError
    from fastaed.formats.ctranslate2 import CTranslate2FormatError
    from fastaed.formats.fetch import FetchError
    from fastaed.formats.whisper import WhisperImportError
    from fastaed.synth.engines import EngineMissingError
    from fastaed.synth.text import SourceMissingError
    from fastaed.train.config import ConfigError
    from fastaed.train.faults import NonFiniteLossError, UtteranceOOMError
    from fastaed.util.files import FileFormatError

    return (
        BadInputError, CheckpointError, ConfigError, FileFormatError, UsageError,  # a file or flag to fix
        CTranslate2FormatError, WhisperImportError,  # another toolkit's model file fastaed cannot read
        NonFiniteLossError, UtteranceOOMError,  # training stopped, with what to change
        DownloadError, EngineMissingError, FetchError, SourceMissingError,  # something to install or fetch
        FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError,
    )  # fmt: skip


def parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse ``argv``; a command that sets ``overrides_anywhere`` takes its ``KEY=VALUE`` words anywhere
    (argparse alone only takes one run of them), any other leftover word is an error."""
    args, extra = parser.parse_known_args(argv)
    if not getattr(args, "overrides_anywhere", False):
        if extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        return args
    flags = [x for x in extra if x.startswith("-")]
    if flags:
        print(
            f"fastaed {command_name(args)}: error: unknown option {' '.join(flags)}; config keys are set as "
            "KEY=VALUE (e.g. optim.lr=1e-3)",
            file=sys.stderr,
        )
        sys.exit(2)
    args.overrides = [*args.overrides, *extra]  # in command-line order: a repeated key's last value wins
    return args


def _skip_hint(args: argparse.Namespace) -> str:
    """How this command would leave a bad item out instead of stopping."""
    if hasattr(args, "on_bad_input"):
        return " (or pass --on-bad-input skip to leave it out and count it)"
    if args.command == "train":
        return " (or set data.on_bad_input=skip to leave it out and count it)"
    return ""


def command_name(args: argparse.Namespace) -> str:
    """``train``, ``bench convergence``, ``tokenizer train``: the words that chose the command."""
    actions = ("bench_name", "tokenizer_command", "data_command", "model_command")
    words = [args.command, *(getattr(args, k, None) for k in actions)]
    return " ".join(w for w in words if isinstance(w, str))


def run_command(args: argparse.Namespace) -> int:
    """Run the parsed command; an expected error becomes its message on stderr and status 2."""
    from fastaed.data.errors import BadInputError

    try:
        return args.func(args) or 0
    except expected_errors() as err:
        hint = _skip_hint(args) if isinstance(err, BadInputError) else ""
        print(f"fastaed {command_name(args)}: error: {err}{hint}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> None:
    set_thread_wait_policy(argv=sys.argv[1:] if argv is None else argv)  # before the imports of torch
    sys.exit(run_command(parse(build_parser(), argv)))
