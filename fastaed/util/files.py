"""Reading the small JSON files a user hands to a command (bins, batch-size profiles), with errors that say
which file and which line is at fault, so the command line can print them instead of a traceback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class FileFormatError(ValueError):
    """A file that exists but cannot be used (not valid JSON, or not the document expected); the message
    names the file and, for a syntax error, the line and column."""


def parse_json(text: str, source: str) -> Any:
    """``json.loads`` whose syntax error names ``source`` (a path, or a description) and the line."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise FileFormatError(f"{source}:{err.lineno}:{err.colno}: not valid JSON ({err.msg})") from None


def read_json(path: str | Path) -> Any:
    """The JSON document in ``path``; FileNotFoundError if there is none, FileFormatError if it is broken."""
    path = Path(path)
    try:
        text = path.read_text()
    except UnicodeDecodeError as err:
        raise FileFormatError(f"{path}: not UTF-8 text (byte {err.start}); expected JSON") from None
    return parse_json(text, str(path))


def one_line(err: BaseException, limit: int = 240) -> str:
    """A third-party parser's exception as one short line for a message that names the file: its type and
    its text with whitespace collapsed (torch, PyYAML and tarfile write several lines), cut at ``limit``."""
    text = str(err)
    if "WeightsUnpickler error:" in text:  # torch.load(weights_only=True): the cause sits inside boilerplate
        text = text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation", 1)[0]
    text = " ".join(text.split()) or "no detail"
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{type(err).__name__}: {text}"
