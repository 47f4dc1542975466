"""Errors a command raises about its own flags, and checks done before any work starts.

``fastaed.cli.main`` prints every expected error as ``fastaed CMD: error: ...`` and exits 2; this module only
defines the command line's own kind and the early output check.
"""

from __future__ import annotations

import os
from pathlib import Path


class UsageError(Exception):
    """A flag's value (or a combination of flags) that cannot work; the message names the flag."""


def check_output_path(path: Path | None, flag: str) -> None:
    """Refuse, before any decoding, an output file that could not be written at the end.

    The file's folder may be missing (the writers create it), but the nearest existing ancestor must be a
    writable folder; an existing directory, or a read-only file, is refused too.
    """
    if path is None:
        return
    if path.is_dir():
        raise UsageError(f"{flag} {path}: is a directory; give a file name")
    if path.exists() and not os.access(path, os.W_OK):
        raise UsageError(f"{flag} {path}: the file is not writable")
    folder = path.absolute().parent
    while not folder.exists():  # the writers create missing folders: check the one they would start from
        folder = folder.parent
    if not folder.is_dir():
        raise UsageError(f"{flag} {path}: {folder} is not a directory")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {path}: cannot create files in {folder} (not writable)")
