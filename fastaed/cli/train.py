"""`fastaed train --config FILE [KEY=VALUE ...]`: train a model (single process or under torchrun).

    fastaed train --config configs/train_tiny_flash.yaml optim.lr=2e-3 runtime.out_dir=runs/a
    torchrun --nproc-per-node 2 -m fastaed train --config configs/train_test.yaml

The module also runs on its own (``python -m fastaed.cli.train --config ...``), which is what torchrun needs
when the ``train`` subcommand is not registered in ``fastaed.cli.main``; it parses and reports errors the
same way.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train an AED model from a YAML config",
        description="Train an attention encoder-decoder model. KEY=VALUE arguments, anywhere on the line, "
        "override config keys (e.g. optim.lr=1e-3 runtime.out_dir=runs/x). Under torchrun every rank runs "
        "this command.",
    )
    p.add_argument("--config", type=Path, required=True, help="YAML training config (see configs/)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, type-checked")
    p.add_argument(
        "--resume",
        default=None,
        help="auto: continue from out_dir's newest intact checkpoint if any (an error when all are damaged); "
        "none: start fresh (an earlier run's records there move to previous-N/); or a checkpoint directory "
        "(default: runtime.resume, auto)",
    )
    # argparse gives the positional only the first run of KEY=VALUE words; fastaed.cli.main.parse appends
    # the runs after other flags (`--config c.yaml a=1 --resume none b=2`) and refuses unknown --flags.
    p.set_defaults(func=train_cmd, overrides_anywhere=True)


def train_cmd(args: argparse.Namespace) -> int:
    from fastaed.train.config import TrainConfig
    from fastaed.train.loop import train

    # Errors (config, bad input, checkpoint, non-finite loss, OOM) are reported by fastaed.cli.main.
    cfg = TrainConfig.from_yaml(args.config, overrides=args.overrides)
    train(cfg, resume=args.resume or cfg.runtime.resume)
    return 0


def main(argv: list[str] | None = None) -> None:
    from fastaed.cli.main import parse, run_command, set_thread_wait_policy

    set_thread_wait_policy(argv=["train"])  # as `fastaed train` does: torchrun starts ranks here
    parser = argparse.ArgumentParser(prog="fastaed")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    register(sub)
    args = parse(parser, ["train", *(sys.argv[1:] if argv is None else argv)])
    sys.exit(run_command(args))


if __name__ == "__main__":
    main()
