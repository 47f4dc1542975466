"""Flags derived from a config dataclass: defaults, types, choices, booleans and sequences round-trip."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from fastaed.cli.config_args import add_config_arguments, config_from_args


@dataclass(frozen=True)
class Example:
    batch_size: int = 32
    scale: float = 0.5
    dtype: Literal["auto", "bf16", "fp32"] = "auto"
    out: Path | None = field(default=None, metadata={"help": "where"})
    sizes: tuple[int, ...] = (1, 16)
    progress: bool = True
    hidden: int = field(default=7, metadata={"cli": False})


def parse(argv, **kw):
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, Example, **kw)
    return config_from_args(Example, parser.parse_args(argv))


def test_defaults_come_from_the_dataclass():
    assert parse([]) == Example()


def test_every_kind_of_flag_parses_to_its_field_type():
    cfg = parse(["--batch-size", "4", "--scale", "2", "--dtype", "bf16", "--out", "x.json",
                 "--sizes", "2", "8", "--no-progress"])  # fmt: skip
    assert cfg == Example(4, 2.0, "bf16", Path("x.json"), (2, 8), False)


def test_choices_are_enforced_and_hidden_fields_have_no_flag():
    with pytest.raises(SystemExit):
        parse(["--dtype", "fp16"])
    with pytest.raises(SystemExit):
        parse(["--hidden", "3"])


def test_per_parser_defaults_override_the_field_default():
    assert parse([], defaults={"batch_size": 2}).batch_size == 2
