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
