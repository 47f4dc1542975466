"""Output folders and files that never overwrite what a user owns.

Every command that writes a folder builds it in a hidden temporary sibling and renames it into place
(:func:`building_dir`). The target may be missing, empty, or a folder fastaed made for the same kind of
output: it then carries a marker, ``.fastaed-output.json``, naming the kind, the command and the entries it
wrote (folders written before markers existed are recognised by a ``legacy`` test each kind supplies). An
earlier output is moved aside, the new one renamed in, and only then the old one deleted. Anything else (a
user's files, another kind of output, a marker folder that gained files fastaed did not write) is refused
with :class:`OutputExistsError` before any work starts, and nothing is changed.

A folder a command adds to in place (``data real-check``: a download cache and two sets) is adopted instead
(:func:`adopt_dir`): empty or marked, and holding only the names that command writes.

Single files (bins, profiles, reports, plots, ``.nemo``) are written to a temporary file beside them and
moved into place with ``os.replace`` (:func:`replacing_file`); an existing file is replaced only when it is
the same kind of fastaed output, recognised by its content (JSON keys, or a tag fastaed puts into its PNGs
and ``.nemo`` archives).

Standard library only: every stage imports it.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

MARKER = ".fastaed-output.json"
MARKER_FORMAT = "fastaed.output"
PNG_TAG = "fastaed-output"  # tEXt keyword of the kind in every PNG written through replacing_file
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class OutputExistsError(FileExistsError):
    """An output path holds something fastaed did not write there (or another kind of output); the message
    names it and says what to do. Nothing was changed."""


# ---- folders -----------------------------------------------------------------------------------------------


def _abs(path: str | os.PathLike[str]) -> Path:
    return Path(os.path.abspath(path))  # "." and ".." get a real name for the temporary sibling


def read_marker(folder: Path) -> dict | None:
    """The marker of a folder fastaed made, or None (no marker, or not one fastaed could have written)."""
    try:
        doc = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and doc.get("format") == MARKER_FORMAT else None


def _refusal(
    path: Path,
    kind: str,
    legacy: Callable[[Path], bool] | None,
    allowed: Callable[[str], bool] | None,
) -> str | None:
    """Why ``path`` may not be used as a ``kind`` output folder (None: it may)."""
    if path.is_symlink():
        return "is a symbolic link; give the folder's own path"
    if not path.exists():
        return None
    if not path.is_dir():
        return "is a file, not a folder"
    names = sorted(p.name for p in path.iterdir())
    if not names:
        return None
    marker = read_marker(path) if MARKER in names else None
    if marker is not None:
        if marker.get("kind") != kind:
            made = f"fastaed {marker.get('kind')} (from `fastaed {marker.get('command')}`)"
            return f"holds a {made}, not a {kind}"
        written = marker.get("entries")
        known = (lambda n: n in written) if isinstance(written, list) else allowed
        foreign = [n for n in names if n != MARKER and not (known and known(n))]
        if foreign:
            return f"holds files fastaed did not write there ({_few(foreign)})"
        return None
    if legacy is not None and legacy(path):
        return None
    return f"holds files fastaed did not write there ({_few(names)})"


def _few(names: list[str], n: int = 3) -> str:
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def check_output_dir(
    path: str | os.PathLike[str],
    kind: str,
    *,
    flag: str = "--out",
    legacy: Callable[[Path], bool] | None = None,
    allowed: Callable[[str], bool] | None = None,
) -> None:
    """Raise :class:`OutputExistsError` unless ``path`` is missing, empty or a ``kind`` folder fastaed made
    (``legacy``: recognises one from before markers; ``allowed``: the names an adopted folder may hold)."""
    if reason := _refusal(_abs(path), kind, legacy, allowed):
        raise OutputExistsError(
            f"{flag} {path}: {reason}; nothing was changed: choose another {flag} or remove it yourself"
        )


def write_marker(folder: Path, kind: str, command: str, entries: list[str] | None) -> None:
    doc = {"format": MARKER_FORMAT, "kind": kind, "command": command, "entries": entries}
    doc["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    tmp = folder / f"{MARKER}.{secrets.token_hex(4)}.tmp"
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    os.replace(tmp, folder / MARKER)


def _fresh_sibling(path: Path, tag: str) -> Path:
    """A hidden name beside ``path`` that nothing has yet."""
    while True:
        candidate = path.with_name(f".{path.name}.{secrets.token_hex(4)}.{tag}")
        if not candidate.exists() and not candidate.is_symlink():
            return candidate


@contextmanager
def building_dir(
    path: str | os.PathLike[str],
    kind: str,
    command: str,
    *,
    flag: str = "--out",
    legacy: Callable[[Path], bool] | None = None,
) -> Iterator[Path]:
    """Yield a fresh hidden sibling of ``path`` to build a ``kind`` output in; on success mark it and swap it
    into place (see the module doc), on failure delete it. ``path`` is checked on entry and again just before
    the swap (:func:`check_output_dir`)."""
    target = _abs(path)
    check_output_dir(path, kind, flag=flag, legacy=legacy)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _fresh_sibling(target, "building")
    os.mkdir(tmp, 0o777)
    try:
        yield tmp
        write_marker(tmp, kind, command, sorted(p.name for p in tmp.iterdir()))
        check_output_dir(path, kind, flag=flag, legacy=legacy)
        _swap_in(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # ours: made above
        raise


def _swap_in(new: Path, target: Path) -> None:
    if target.is_dir() and any(target.iterdir()):  # an earlier output of ours: aside, new in, old out
        old = _fresh_sibling(target, "old")
        os.rename(target, old)
        try:
            os.rename(new, target)
        except BaseException:
            os.rename(old, target)
            raise
        shutil.rmtree(old)
    else:
        os.rename(new, target)  # replaces an empty folder in one step


def adopt_dir(
    path: str | os.PathLike[str],
    kind: str,
    command: str,
    *,
    allowed: Callable[[str], bool],
    flag: str = "--out",
) -> Path:
    """Make or take ``path`` as a ``kind`` folder a command adds to in place: missing, empty, or marked (or,
    unmarked, holding only ``allowed`` names) and holding only ``allowed`` names; it gets the marker."""
    legacy = lambda p: all(allowed(q.name) for q in p.iterdir())  # noqa: E731
    check_output_dir(path, kind, flag=flag, legacy=legacy, allowed=allowed)
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    if read_marker(folder) is None:
        write_marker(folder, kind, command, None)
    return folder


# ---- files -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileKind:
    """A kind of single-file output: its name in messages, and how an earlier one is recognised."""

    name: str
    recognise: Callable[[Path], bool]
    tag_png: bool = False  # stamp written PNGs with the kind (plots)


def json_kind(name: str, *keys: str, **values: object) -> FileKind:
    """A JSON object holding ``keys`` (and ``values``: key -> the value it must have)."""

    def recognise(path: Path) -> bool:
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            return False
        return (
            isinstance(doc, dict)
            and all(k in doc for k in keys)
            and all(doc.get(k) == v for k, v in values.items())
        )

    return FileKind(name, recognise)


def plot_kind(name: str) -> FileKind:
    """A plot: a PNG whose ``fastaed-output`` text chunk names this kind (older or other images are not)."""
    return FileKind(name, lambda p: png_tag(p) == name, tag_png=True)


def check_output_file(path: str | os.PathLike[str], kind: FileKind, *, flag: str = "--out") -> None:
    """Raise :class:`OutputExistsError` unless ``path`` is missing or a ``kind`` file fastaed wrote."""
    p = Path(path)
    if p.is_symlink() or (p.exists() and not p.is_file()):
        what = "a symbolic link" if p.is_symlink() else "a folder"
        raise OutputExistsError(f"{flag} {path}: is {what}; give a file name")
    if p.exists() and not kind.recognise(p):
        raise OutputExistsError(
            f"{flag} {path}: exists and is not a {kind.name} fastaed wrote; nothing was changed: choose "
            "another path or remove the file yourself"
        )


def check_output_files(*outputs: tuple[str | os.PathLike[str] | None, FileKind, str]) -> None:
    """:func:`check_output_file` for each given ``(path, kind, flag)`` (None: that output is not wanted), so a
    command refuses every output path it cannot use before any work."""
    for path, kind, flag in outputs:
        if path is not None:
            check_output_file(path, kind, flag=flag)


@contextmanager
def replacing_file(path: str | os.PathLike[str], kind: FileKind, *, flag: str = "--out") -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix, so writers that go by it still do); on success
    tag it (plots), check ``path`` again and ``os.replace`` it into place; on failure delete it."""
    target = Path(path)
    check_output_file(target, kind, flag=flag)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.stem}.{secrets.token_hex(4)}.tmp{target.suffix}")
    try:
        yield tmp
        if kind.tag_png and tmp.suffix.lower() == ".png":
            tag_png(tmp, kind.name)
        check_output_file(target, kind, flag=flag)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)  # only left over when something above failed


def _chunks(data: bytes) -> Iterator[tuple[int, bytes, bytes]]:
    """(offset, type, body) of each chunk of a PNG's bytes."""
    at = len(_PNG_SIGNATURE)
    while at + 8 <= len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        kind = data[at + 4 : at + 8]
        yield at, kind, data[at + 8 : at + 8 + length]
        at += 12 + length


def tag_png(path: Path, kind: str) -> None:
    """Put a ``fastaed-output`` text chunk naming ``kind`` right after the PNG's header chunk."""
    data = path.read_bytes()
    if not data.startswith(_PNG_SIGNATURE):
        return
    body = PNG_TAG.encode() + b"\0" + kind.encode("latin-1")
    chunk = struct.pack(">I", len(body)) + b"tEXt" + body + struct.pack(">I", zlib.crc32(b"tEXt" + body))
    end_of_header = len(_PNG_SIGNATURE) + 25  # IHDR: length, type, 13 bytes, crc
    path.write_bytes(data[:end_of_header] + chunk + data[end_of_header:])


def png_tag(path: Path) -> str | None:
    """The kind a fastaed PNG was tagged with, or None."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if not data.startswith(_PNG_SIGNATURE):
        return None
    for _, kind, body in _chunks(data):
        if kind == b"IDAT":
            break
        if kind == b"tEXt" and body.startswith(PNG_TAG.encode() + b"\0"):
            return body[len(PNG_TAG) + 1 :].decode("latin-1")
    return None
