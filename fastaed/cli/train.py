"""`fastaed train --config FILE [KEY=VALUE ...]`: train a model (single process or under torchrun).

    fastaed train --config configs/train_tiny_flash.yaml optim.lr=2e-3 runtime.out_dir=runs/a
    torchrun --nproc-per-node 2 -m fastaed train --config configs/train_test.yaml

The module also runs on its own (``python -m fastaed.cli.train --config ...``), which is what torchrun needs
when the ``train`` subcommand is not registered in ``fastaed.cli.main``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train an AED model from a YAML config",
        description="Train an attention encoder-decoder model. KEY=VALUE arguments override config keys "
        "(e.g. optim.lr=1e-3 runtime.out_dir=runs/x). Under torchrun every rank runs this command.",
    )
    p.add_argument("--config", type=Path, required=True, help="YAML training config (see configs/)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, type-checked")
    p.add_argument(
        "--resume",
        default="auto",
        help="auto: continue from out_dir's latest checkpoint if any (default); none: start fresh; "
        "or a checkpoint directory",
    )
    p.set_defaults(func=train_cmd)


def train_cmd(args: argparse.Namespace) -> int:
    from fastaed.train.config import ConfigError, TrainConfig
    from fastaed.train.faults import NonFiniteLossError, UtteranceOOMError
    from fastaed.train.loop import train

    try:
        cfg = TrainConfig.from_yaml(args.config, overrides=args.overrides)
        train(cfg, resume=args.resume)
    except (ConfigError, NonFiniteLossError, UtteranceOOMError) as err:
        # Expected failures with a message that says what to change; a traceback would only bury it.
        print(f"fastaed train: error: {err}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> None:
    from fastaed.data.errors import BadInputError

    parser = argparse.ArgumentParser(prog="fastaed")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    register(sub)
    args = parser.parse_args(["train", *(sys.argv[1:] if argv is None else argv)])
    try:
        rc = args.func(args)
    except (BadInputError, FileNotFoundError) as err:
        print(f"fastaed train: error: {err}", file=sys.stderr)
        rc = 2
    sys.exit(rc)


if __name__ == "__main__":
    main()
