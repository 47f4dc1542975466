"""Command-line flags derived from a config dataclass, so a default or a help text is written once.

A field ``batch_size: int = 32`` becomes ``--batch-size`` (type int, default 32); the help text comes from
``field(metadata={"help": ...})``. Supported field types: ``int``, ``float``, ``str``, ``Path``, ``bool``
(``--flag`` / ``--no-flag``), ``Literal[...]`` (choices), ``X | None`` of those, and ``tuple[X, ...]`` /
``list[X]`` (``nargs``). A field can opt out with ``metadata={"cli": False}`` (the caller sets it itself).

    add_config_arguments(parser, DecodeConfig)
    config = config_from_args(DecodeConfig, args)
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin, get_type_hints

T = TypeVar("T")
_SCALARS = (int, float, str, Path)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    if get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(get_args(tp)) == 2:
            return args[0], True
    return tp, False


def cli_fields(cls: type) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if f.metadata.get("cli", True) and f.init]


def add_config_arguments(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    *,
    exclude: tuple[str, ...] = (),
    defaults: dict[str, Any] | None = None,
) -> None:
    """One flag per field of the dataclass ``cls`` (minus ``exclude``); ``defaults`` overrides field
    defaults for this parser only (e.g. a benchmark's ``--quick`` variant)."""
    hints = get_type_hints(cls)
    defaults = defaults or {}
    for f in cli_fields(cls):
        if f.name in exclude:
            continue
        tp, optional = _strip_optional(hints[f.name])
        if f.name in defaults:
            default = defaults[f.name]
        elif f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = None
        help_text = f.metadata.get("help", "")
        if default is not None and tp is not bool:
            shown = " ".join(map(str, default)) if isinstance(default, tuple | list) else default
            help_text = f"{help_text} (default: {shown})".strip()
        kwargs: dict[str, Any] = {"dest": f.name, "default": default, "help": help_text}
        required = default is None and not optional and f.default is dataclasses.MISSING
        if tp is bool:
            parser.add_argument(_flag(f.name), action=argparse.BooleanOptionalAction, **kwargs)
        elif get_origin(tp) is Literal:
            parser.add_argument(_flag(f.name), choices=list(get_args(tp)), required=required, **kwargs)
        elif get_origin(tp) in (tuple, list):
            item = get_args(tp)[0]
            item, _ = _strip_optional(item)
            if item not in _SCALARS:
                raise TypeError(f"{cls.__name__}.{f.name}: unsupported item type {item}")
            parser.add_argument(_flag(f.name), type=item, nargs="+", required=required, **kwargs)
        elif tp in _SCALARS:
            parser.add_argument(_flag(f.name), type=tp, required=required, **kwargs)
        else:
            raise TypeError(f"{cls.__name__}.{f.name}: unsupported type {tp}")


def config_from_args(cls: type[T], args: argparse.Namespace, **overrides: Any) -> T:
    """The dataclass built from the parsed flags (fields without a flag keep their default, or take
    ``overrides``); sequences become tuples when the field is a tuple."""
    hints = get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in cli_fields(cls):
        if not hasattr(args, f.name):
            continue
        value = getattr(args, f.name)
        tp, _ = _strip_optional(hints[f.name])
        if value is not None and get_origin(tp) is tuple:
            value = tuple(value)
        values[f.name] = value
    values.update(overrides)
    return cls(**values)
