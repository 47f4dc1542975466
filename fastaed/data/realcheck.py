"""Real recorded speech for an honest check: the transcribed clips in the PyPI ``pocketsphinx`` sdist.

The source archive (not the wheel) of pocketsphinx 5.1.1 ships test recordings under ``test/data``. Only clips
whose transcript is stated by a file in the archive are used:

* ``librivox/*.wav``: 5 LibriVox "Sense and Sensibility" sentences, transcripts in ``<fileid>.txt``;
* ``cards/*.wav``: 5 card-game commands, transcripts in ``cards/cards.transcription``;
* ``goforward.raw``: "go forward ten meters", the decoder result asserted by ``cython/test/decoder_test.py``;
* ``forever/input_2_16k.wav``: "feels like these days go on forever", the alignment text in
  ``cython/test/alignment_test.py``.

Left out for lack of a stated transcript: ``numbers.raw``, ``something.raw``, ``forever/input_4_16k.wav``,
the VAD clips, and ``tidigits/dhd.2934z.raw`` (its words follow only from the TIDIGITS naming convention).
The ``.raw`` files are headerless 16 kHz 16-bit mono PCM (the archive's tests decode them at 16000 Hz); the
byte order is checked, as a raw file cannot say it.

Transcripts are lower case without punctuation, so the manifest says ``pnc: no``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tarfile
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from fastaed.constants import SAMPLE_RATE
from fastaed.data import errors
from fastaed.data.errors import BadInputError, BadInputReport

PACKAGE = "pocketsphinx"
VERSION = "5.1.1"
ARCHIVE_NAME = f"{PACKAGE}-{VERSION}.tar.gz"
ARCHIVE_SHA256 = "675778b309a22dfc9b7d37f7621976bba491d2a5f8c59696bd77fd6d07271355"
DEFAULT_INDEX_URL = "https://pypi.org/simple"
MANIFEST_NAME = "real_check.jsonl"
# Archive members needed: the recordings with their transcripts, and the test scripts that state the others.
_MEMBER_PATTERN = re.compile(
    r"[^/]+/(test/data/(librivox|cards|forever)/[^/]+|test/data/goforward\.raw|cython/test/[^/]+\.py)"
)


@dataclass(frozen=True)
class KnownClip:
    """A clip whose transcript is stated in another archive file (``evidence``)."""

    audio: str  # path under test/data
    text: str
    corpus: str
    evidence: str  # path under the package root that contains ``text`` verbatim


KNOWN_CLIPS = (
    KnownClip("goforward.raw", "go forward ten meters", "goforward", "cython/test/decoder_test.py"),
    KnownClip(
        "forever/input_2_16k.wav",
        "feels like these days go on forever",
        "forever",
        "cython/test/alignment_test.py",
    ),
)


@dataclass(frozen=True)
class RealClip:
    utt_id: str
    audio: Path
    text: str
    corpus: str
    transcript_from: str  # archive file that states the transcript
    source: str = ""  # the recording's path inside the archive (under the package root)


class DownloadError(RuntimeError):
    """The sdist could not be fetched; the message says how to supply it by hand."""


# ----------------------------------------------------------------------------------------------- download


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def find_archive_url(index_url: str = DEFAULT_INDEX_URL, timeout: float = 30.0) -> str:
    """The sdist's URL from a PEP 503/691 simple index (the same index pip uses)."""
    page_url = f"{index_url.rstrip('/')}/{PACKAGE}/"
    req = urllib.request.Request(
        page_url, headers={"Accept": "application/vnd.pypi.simple.v1+json, text/html;q=0.1"}
    )
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        body = resp.read().decode("utf-8", "replace")
        content_type = resp.headers.get("Content-Type", "")
    if "json" in content_type:
        for f in json.loads(body).get("files", []):
            if f.get("filename") == ARCHIVE_NAME:
                return urllib.request.urljoin(page_url, f["url"])
    else:
        for href in re.findall(r'href="([^"]+)"', body):
            if href.split("#")[0].endswith("/" + ARCHIVE_NAME) or href.split("#")[0] == ARCHIVE_NAME:
                return urllib.request.urljoin(page_url, href.split("#")[0])
    raise DownloadError(f"{ARCHIVE_NAME} is not listed on {page_url}")


def fetch_archive(cache_dir: Path, index_url: str | None = None, timeout: float = 60.0) -> Path:
    """The cached sdist, downloading it once; its sha256 is checked against the pinned value."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / ARCHIVE_NAME
    if path.exists() and _sha256(path) == ARCHIVE_SHA256:
        return path
    index_url = index_url or os.environ.get("PIP_INDEX_URL") or DEFAULT_INDEX_URL
    part = path.with_suffix(".part")
    try:
        url = find_archive_url(index_url, timeout=timeout)
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(part, "wb") as out:
            while block := resp.read(1 << 20):
                out.write(block)
    except (OSError, ValueError) as e:  # URLError, timeouts and HTTP errors are OSErrors
        part.unlink(missing_ok=True)
        raise DownloadError(
            f"could not download {ARCHIVE_NAME} from {index_url}: {e}. Fetch it by hand with "
            f"`pip download --no-binary :all: --no-deps {PACKAGE}=={VERSION} -d {cache_dir}` "
            "(or pass --archive PATH)"
        ) from e
    digest = _sha256(part)
    if digest != ARCHIVE_SHA256:
        part.unlink(missing_ok=True)
        raise DownloadError(f"{url}: sha256 {digest} is not the pinned {ARCHIVE_SHA256}")
    part.replace(path)
    return path


def extract_needed(archive: Path, dest: Path) -> Path:
    """Extract only the recordings, transcripts and test scripts; returns the package root folder."""
    with tarfile.open(archive, "r:gz") as tar:
        members = [m for m in tar.getmembers() if m.isfile() and _MEMBER_PATTERN.fullmatch(m.name)]
        if not members:
            raise BadInputError(
                errors.MISSING_AUDIO, "no test/data recordings in the archive", path=str(archive)
            )
        roots = {m.name.split("/", 1)[0] for m in members}
        try:
            tar.extractall(dest, members=members, filter="data")  # refuses absolute or ../ paths
        except TypeError:  # Python without extraction filters: the pattern above already refuses those
            tar.extractall(dest, members=members)
    return dest / sorted(roots)[0]


# -------------------------------------------------------------------------------------------- parsing


def normalize_transcript(text: str) -> str:
    return " ".join(text.split())


def parse_sphinx_transcription(text: str) -> dict[str, str]:
    """``<s> words </s> (uttid)`` lines (Sphinx .transcription files) to {uttid: words}."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        m = re.match(r"\s*(.*?)\s*\(([^()]+)\)\s*$", line)
        if not m:
            continue
        words = re.sub(r"</?s>", " ", m.group(1))
        out[m.group(2).strip()] = normalize_transcript(words)
    return out


def looks_little_endian(data: bytes) -> bool:
    """Speech is smooth: read in the right byte order, consecutive samples differ far less than the signal
    itself; in the wrong order the low byte becomes the high byte and the signal looks like noise."""
    le = np.frombuffer(data, dtype="<i2").astype(np.float64)
    be = np.frombuffer(data, dtype=">i2").astype(np.float64)

    def roughness(x: np.ndarray) -> float:
        return float(np.mean(np.abs(np.diff(x))) / (np.mean(np.abs(x)) + 1e-9))

    return roughness(le) <= roughness(be)


def read_raw_pcm(path: Path) -> np.ndarray:
    """Headerless 16-bit mono little-endian PCM, checked for an even size and the byte order."""
    data = path.read_bytes()
    if not data:
        raise BadInputError(errors.EMPTY_AUDIO, "empty raw file", path=str(path))
    if len(data) % 2:
        raise BadInputError(errors.CORRUPT_AUDIO, f"{len(data)} bytes: not 16-bit samples", path=str(path))
    if not looks_little_endian(data):
        raise BadInputError(errors.CORRUPT_AUDIO, "samples look big-endian; expected s16le", path=str(path))
    return np.frombuffer(data, dtype="<i2").copy()


def read_clip_audio(path: Path) -> np.ndarray:
    """int16 samples at 16 kHz mono from a .raw or a sound file."""
    if not path.exists():
        raise BadInputError(errors.MISSING_AUDIO, "file not found", path=str(path))
    if path.suffix == ".raw":
        samples = read_raw_pcm(path)
    else:
        try:
            data, sr = sf.read(str(path), dtype="int16", always_2d=True)
        except (RuntimeError, sf.LibsndfileError) as e:
            raise BadInputError(errors.CORRUPT_AUDIO, f"unreadable: {e}", path=str(path)) from e
        if sr != SAMPLE_RATE or data.shape[1] != 1:
            raise BadInputError(
                errors.BAD_FIELD,
                f"{sr} Hz x {data.shape[1]} channels; expected 16000 Hz mono",
                path=str(path),
            )
        samples = data[:, 0]
    if len(samples) == 0 or not np.any(samples):
        raise BadInputError(errors.EMPTY_AUDIO, "no signal", path=str(path))
    return samples


def _add(report: BadInputReport, err: BadInputError) -> None:
    errors.handle(err, "skip", report)


def collect_clips(package_root: Path, report: BadInputReport) -> list[RealClip]:
    """The clips with a transcript stated in the archive; problems are counted in ``report``."""
    data = package_root / "test" / "data"
    clips: list[RealClip] = []

    def add(utt_id: str, audio: Path, text: str, corpus: str, transcript_from: str) -> None:
        source = audio.relative_to(package_root).as_posix()
        clips.append(RealClip(utt_id, audio, text, corpus, transcript_from, source))

    libri = data / "librivox"
    fileids = libri / "fileids"
    if fileids.exists():
        for fileid in fileids.read_text(encoding="utf-8").split():
            txt = libri / f"{fileid}.txt"
            text = normalize_transcript(txt.read_text(encoding="utf-8")) if txt.exists() else ""
            if not text:
                _add(report, BadInputError(errors.EMPTY_TEXT, "no transcript", path=str(txt)))
                continue
            add(
                f"librivox-{fileid}",
                libri / f"{fileid}.wav",
                text,
                "librivox",
                f"test/data/librivox/{txt.name}",
            )
    else:
        _add(report, BadInputError(errors.MISSING_AUDIO, "LibriVox file list not found", path=str(fileids)))

    cards = data / "cards"
    trans_path = cards / "cards.transcription"
    if trans_path.exists():
        for utt, text in sorted(parse_sphinx_transcription(trans_path.read_text(encoding="utf-8")).items()):
            if not text:
                _add(report, BadInputError(errors.EMPTY_TEXT, f"no words for {utt}", path=str(trans_path)))
                continue
            add(f"cards-{utt}", cards / f"{utt}.wav", text, "cards", "test/data/cards/cards.transcription")
    else:
        _add(
            report, BadInputError(errors.MISSING_AUDIO, "cards transcription not found", path=str(trans_path))
        )

    for known in KNOWN_CLIPS:
        evidence = package_root / known.evidence
        stated = evidence.exists() and known.text in evidence.read_text(encoding="utf-8", errors="replace")
        if not stated:  # never guess a transcript
            _add(
                report,
                BadInputError(
                    errors.BAD_FIELD,
                    f"transcript {known.text!r} not stated in {known.evidence}",
                    path=known.audio,
                ),
            )
            continue
        stem = Path(known.audio).stem
        utt_id = known.corpus if stem == known.corpus else f"{known.corpus}-{stem}"
        add(utt_id, data / known.audio, known.text, known.corpus, known.evidence)
    return clips


# ------------------------------------------------------------------------------------------------- main


@dataclass
class RealCheckResult:
    manifest: Path
    entries: list[dict]
    report: BadInputReport
    archive: Path

    @property
    def seconds(self) -> float:
        return sum(e["duration"] for e in self.entries)


def write_real_check(clips: Iterable[RealClip], out_dir: Path, report: BadInputReport) -> list[dict]:
    """Write 16 kHz wavs and ``real_check.jsonl``; unusable clips are counted in ``report``."""
    entries = []
    (out_dir / "audio").mkdir(parents=True, exist_ok=True)
    for clip in clips:
        try:
            samples = read_clip_audio(clip.audio)
        except BadInputError as e:
            _add(report, e)
            continue
        rel = f"audio/{clip.utt_id}.wav"
        sf.write(str(out_dir / rel), samples, SAMPLE_RATE, subtype="PCM_16")
        entries.append(
            {
                "audio_filepath": rel,
                "duration": round(len(samples) / SAMPLE_RATE, 3),
                "text": clip.text,
                "source_lang": "en",
                "target_lang": "en",
                "task": "transcribe",
                "pnc": "no",
                "utt_id": clip.utt_id,
                "corpus": clip.corpus,
                "source": f"{ARCHIVE_NAME}:{clip.source}",
                "transcript_from": clip.transcript_from,
                "sha1": hashlib.sha1(samples.astype("<i2").tobytes()).hexdigest(),
            }
        )
    manifest = out_dir / MANIFEST_NAME
    with open(manifest, "w", encoding="utf-8") as f:
        for e in entries:
            f.write(json.dumps(e) + "\n")
    return entries


def prepare_real_check(
    out_dir: str | Path,
    archive: str | Path | None = None,
    index_url: str | None = None,
    timeout: float = 60.0,
) -> RealCheckResult:
    """Fetch (once; cached in ``out_dir/cache``) and unpack the sdist, then write the real-speech manifest."""
    out_dir = Path(out_dir)
    cache = out_dir / "cache"
    archive = Path(archive) if archive else fetch_archive(cache, index_url, timeout)
    root = extract_needed(archive, cache / "extracted")
    report = BadInputReport()
    entries = write_real_check(collect_clips(root, report), out_dir, report)
    return RealCheckResult(out_dir / MANIFEST_NAME, entries, report, archive)
