"""Debian TTS engines (flite, espeak-ng, festival) behind one job interface, with sox for resampling.

Every engine call runs in a subprocess with a timeout. A missing binary raises :class:`EngineMissingError`
naming the Debian package; a failed, timed-out or silent synthesis raises :class:`SynthesisError` with a
reason code, so the corpus builder can count it (never drop it silently).

Rate and pitch are relative factors (1.0 = the voice's default). Where an engine has no working pitch
control (flite rms ignores ``int_f0_target_mean``; festival's HTS module ignores the hts_engine ``-fm``
half-tone option), sox shifts the pitch in the same call that resamples to 16 kHz.
"""

from __future__ import annotations

import hashlib
import math
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from fastaed.constants import SAMPLE_RATE
from fastaed.data import errors

# Reason codes for counted synthesis failures (stable strings: they appear in the card).
SYNTHESIS_FAILED = "synthesis_failed"
SYNTHESIS_TIMEOUT = "synthesis_timeout"
EMPTY_AUDIO = errors.EMPTY_AUDIO

# Debian package that provides each binary (for the "not found" message).
ENGINE_PACKAGES = {
    "flite": "flite",
    "espeak-ng": "espeak-ng",
    "festival": "festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts",
    "sox": "sox",
}

MIN_SECONDS = 0.2  # shorter output is a failed synthesis, not an utterance
MIN_PEAK = 300  # int16 peak below this (-40 dBFS) is near-silent output


@dataclass(frozen=True)
class Voice:
    """One TTS voice. ``name`` is what manifests record, e.g. ``flite/rms``."""

    name: str
    engine: str  # "flite" | "espeak-ng" | "festival"
    engine_voice: str  # flite -voice name, espeak-ng -v voice, or festival voice name
    lang: str = "en"
    # f0 (Hz) the engine is asked for at pitch 1.0; None: the engine cannot change pitch, sox does it.
    base_f0: float | None = None
    base_f0_std: float | None = None  # festival diphone voices: target_f0_std at pitch 1.0
    base_stretch: float = 1.0  # festival diphone voices ship with Duration_Stretch 1.1
    cpu_per_audio_s: float = 0.01  # measured cost (1 / xRT), only used to schedule the slow chunks first


# Base f0 values: flite kal16's default int_f0_target_mean is 95 (same output as not setting it); slt and
# awb are the median f0 of their default output (autocorrelation), so pitch 1.0 stays near their natural
# pitch. Festival's diphone values are the voices' own int_lr_params.
VOICES: dict[str, Voice] = {
    v.name: v
    for v in (
        Voice("flite/kal16", "flite", "kal16", base_f0=95.0, cpu_per_audio_s=0.004),
        Voice("flite/rms", "flite", "rms", cpu_per_audio_s=0.018),
        Voice("flite/slt", "flite", "slt", base_f0=167.0, cpu_per_audio_s=0.018),
        Voice("flite/awb", "flite", "awb", base_f0=128.0, cpu_per_audio_s=0.018),
        Voice(
            "festival/kal_diphone",
            "festival",
            "kal_diphone",
            base_f0=105.0,
            base_f0_std=14.0,
            base_stretch=1.1,
            cpu_per_audio_s=0.005,
        ),
        Voice(
            "festival/ked_diphone",
            "festival",
            "ked_diphone",
            base_f0=105.0,
            base_f0_std=15.0,
            base_stretch=1.1,
            cpu_per_audio_s=0.005,
        ),
        Voice("festival/cmu_us_slt_arctic_hts", "festival", "cmu_us_slt_arctic_hts", cpu_per_audio_s=0.03),
        *(
            Voice(f"espeak-ng/{accent}", "espeak-ng", accent, base_f0=50.0, cpu_per_audio_s=0.006)
            for accent in (
                "en-us",
                "en-gb",
                "en-gb-scotland",
                "en-gb-x-rp",
                "en-gb-x-gbclan",
                "en-gb-x-gbcwmd",
                "en-029",
                "en-us-nyc",
            )
        ),
        Voice("espeak-ng/de", "espeak-ng", "de", lang="de", base_f0=50.0, cpu_per_audio_s=0.006),
        Voice("espeak-ng/es", "espeak-ng", "es", lang="es", base_f0=50.0, cpu_per_audio_s=0.006),
        Voice("espeak-ng/fr-fr", "espeak-ng", "fr-fr", lang="fr", base_f0=50.0, cpu_per_audio_s=0.006),
    )
}
# espeak-ng voice variants (the +m1 in en-us+m1): male, female and klatt formant settings. The novelty ones
# (whisper, croak, robosoft...) are left out: nothing like them appears in real speech.
ESPEAK_VARIANTS = (
    tuple(f"m{i}" for i in range(1, 8)) + tuple(f"f{i}" for i in range(1, 6)) + ("klatt", "klatt2")
)
ESPEAK_DEFAULT_WPM = 175


@dataclass(frozen=True)
class SynthJob:
    """One utterance to synthesize into ``wav_path`` (16 kHz mono int16)."""

    utt_id: str
    text: str
    voice: str  # key of VOICES
    rate: float = 1.0
    pitch: float = 1.0
    variant: str | None = None  # espeak-ng only
    wav_path: str = ""

    def est_cpu_s(self) -> float:
        # ~14 characters per second of speech at rate 1.0 (measured on flite/festival), for scheduling only.
        return VOICES[self.voice].cpu_per_audio_s * len(self.text) / 14.0 / self.rate


@dataclass(frozen=True)
class SynthOutcome:
    """What happened to one job: ``num_samples``/``sha1`` on success, else ``reason``/``detail``."""

    utt_id: str
    num_samples: int = 0
    sha1: str = ""
    reason: str = ""
    detail: str = ""

    @property
    def ok(self) -> bool:
        return not self.reason


class EngineMissingError(RuntimeError):
    """An engine binary or voice is not installed: the whole run stops (it is not a per-utterance skip)."""


class SynthesisError(RuntimeError):
    """One synthesis failed; ``reason`` is a reason code, the message names the engine and the command."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason

    def __reduce__(self):  # picklable across worker processes
        return (SynthesisError, (self.reason, str(self)))


def _missing(binary: str) -> EngineMissingError:
    pkg = ENGINE_PACKAGES.get(binary, binary)
    return EngineMissingError(
        f"{binary} not found: install the Debian package {pkg} (make demo/test installs it)"
    )


# Festival voices are data packages; without one, every utterance of that voice would fail the same way.
FESTIVAL_VOICE_DIRS = {
    "kal_diphone": ("/usr/share/festival/voices/english/kal_diphone", "festvox-kallpc16k"),
    "ked_diphone": ("/usr/share/festival/voices/english/ked_diphone", "festvox-kdlpc16k"),
    "cmu_us_slt_arctic_hts": ("/usr/share/festival/voices/us/cmu_us_slt_arctic_hts", "festvox-us-slt-hts"),
}


def require_engines(voices: Iterable[str]) -> None:
    """Fail fast, before any worker starts, if an engine, sox or a festival voice is not installed."""
    voices = set(voices)
    for binary in sorted({VOICES[v].engine for v in voices} | {"sox"}):
        if shutil.which(binary) is None:
            raise _missing(binary)
    for v in sorted(voices):
        voice = VOICES[v]
        if voice.engine == "festival" and voice.engine_voice in FESTIVAL_VOICE_DIRS:
            path, pkg = FESTIVAL_VOICE_DIRS[voice.engine_voice]
            if not Path(path).is_dir():
                raise EngineMissingError(
                    f"festival voice {voice.engine_voice} not found at {path}: install the Debian package "
                    f"{pkg} (make demo/test installs it)"
                )


def run_tool(cmd: Sequence[str], engine: str, timeout: float, cwd: str | None = None) -> str:
    """Run one engine command; return its stdout. Failures raise with the engine and the command."""
    try:
        proc = subprocess.run(list(cmd), capture_output=True, timeout=timeout, cwd=cwd)
    except FileNotFoundError as e:
        raise _missing(cmd[0]) from e
    except subprocess.TimeoutExpired as e:
        raise SynthesisError(
            SYNTHESIS_TIMEOUT, f"{engine}: timed out after {timeout:g} s: {shlex.join(cmd)}"
        ) from e
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip()[-400:]
        raise SynthesisError(
            SYNTHESIS_FAILED, f"{engine}: exit status {proc.returncode}: {shlex.join(cmd)}: {err}"
        )
    return proc.stdout.decode("utf-8", "replace")


def _timeout(text: str) -> float:
    # Generous: the slowest voice runs ~30x real time; a 14-word sentence is ~6 s of audio.
    return 20.0 + 0.5 * len(text)


def _to_16k(src: Path, dst: Path, pitch: float, engine: str) -> None:
    """Resample to 16 kHz mono int16 and, if asked, shift pitch (cents) with sox; no dither: repeatable."""
    cmd = ["sox", "-R", "-D", str(src), "-b", "16", "-c", "1", str(dst)]
    if pitch != 1.0:
        cmd += ["pitch", f"{1200.0 * math.log2(pitch):.1f}"]
    cmd += ["rate", str(SAMPLE_RATE)]
    run_tool(cmd, f"{engine} (sox)", timeout=30.0)


def read_checked(path: Path, engine: str) -> np.ndarray:
    """Read an engine's 16 kHz mono output and reject empty or near-silent audio."""
    try:
        data, sr = sf.read(str(path), dtype="int16", always_2d=True)
    except (RuntimeError, sf.LibsndfileError) as e:
        raise SynthesisError(SYNTHESIS_FAILED, f"{engine}: unreadable output {path}: {e}") from e
    if sr != SAMPLE_RATE or data.shape[1] != 1:
        raise SynthesisError(SYNTHESIS_FAILED, f"{engine}: output is {sr} Hz x {data.shape[1]} channels")
    samples = data[:, 0]
    if len(samples) < MIN_SECONDS * SAMPLE_RATE:
        raise SynthesisError(EMPTY_AUDIO, f"{engine}: only {len(samples)} samples of audio")
    peak = int(np.abs(samples.astype(np.int32)).max())
    if peak < MIN_PEAK:
        raise SynthesisError(EMPTY_AUDIO, f"{engine}: near-silent output (peak {peak} of 32767)")
    return samples


def synth_flite(job: SynthJob, workdir: Path) -> np.ndarray:
    """flite: native 16 kHz voices; rate through duration_stretch, pitch through int_f0_target_mean."""
    voice = VOICES[job.voice]
    txt, raw = workdir / f"{job.utt_id}.txt", workdir / f"{job.utt_id}.flite.wav"
    txt.write_text(job.text, encoding="utf-8")  # a file, not -t: text starting with "-" is not an option
    cmd = ["flite", "-voice", voice.engine_voice, "--setf", f"duration_stretch={1.0 / job.rate:.4f}"]
    if voice.base_f0 is not None:
        cmd += ["--setf", f"int_f0_target_mean={voice.base_f0 * job.pitch:.2f}"]
    cmd += ["-f", str(txt), "-o", str(raw)]
    run_tool(cmd, "flite", _timeout(job.text))
    if voice.base_f0 is None and job.pitch != 1.0:
        shifted = workdir / f"{job.utt_id}.16k.wav"
        _to_16k(raw, shifted, job.pitch, "flite")
        raw = shifted
    return read_checked(raw, "flite")


def synth_espeak(job: SynthJob, workdir: Path) -> np.ndarray:
    """espeak-ng: 22.05 kHz output resampled by sox; rate in words per minute, pitch on its 0-99 scale."""
    voice = VOICES[job.voice]
    txt, raw, out = (workdir / f"{job.utt_id}{ext}" for ext in (".txt", ".espeak.wav", ".16k.wav"))
    txt.write_text(job.text, encoding="utf-8")
    name = voice.engine_voice + (f"+{job.variant}" if job.variant else "")
    assert voice.base_f0 is not None
    pitch = min(99, max(0, round(voice.base_f0 * job.pitch)))
    cmd = ["espeak-ng", "-v", name, "-s", str(round(ESPEAK_DEFAULT_WPM * job.rate)), "-p", str(pitch)]
    cmd += ["-f", str(txt), "-w", str(raw)]
    run_tool(cmd, "espeak-ng", _timeout(job.text))
    _to_16k(raw, out, 1.0, "espeak-ng")
    return read_checked(out, "espeak-ng")


def _scheme_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def festival_script(jobs: Sequence[SynthJob], raw_paths: Sequence[Path]) -> str:
    """One festival script for many utterances: the process start and voice load are paid once.

    Every parameter is set before every utterance, so an utterance sounds the same whatever came before it
    (per-utterance determinism). ``unwind-protect`` lets the batch go on after one failed utterance.
    """
    lines = []
    current = None
    for job, raw in zip(jobs, raw_paths):
        voice = VOICES[job.voice]
        if voice.engine_voice != current:
            lines.append(f"(voice_{voice.engine_voice})")
            current = voice.engine_voice
        if voice.base_f0 is not None:  # diphone voices
            assert voice.base_f0_std is not None
            lines.append(f"(Parameter.set 'Duration_Stretch {voice.base_stretch / job.rate:.4f})")
            lines.append(
                f"(set! int_lr_params (list (list 'target_f0_mean {voice.base_f0 * job.pitch:.2f}) "
                f"(list 'target_f0_std {voice.base_f0_std * job.pitch:.2f}) "
                "'(model_f0_mean 170) '(model_f0_std 34)))"
            )
        else:  # HTS: hts_engine's -r is the speaking rate
            lines.append(
                f"(set! hts_engine_params (append {voice.engine_voice}::hts_engine_params "
                f'(list (list "-r" {job.rate:.4f}))))'
            )
        lines.append(
            f"(unwind-protect (utt.save.wave (utt.synth (Utterance Text {_scheme_string(job.text)})) "
            f'{_scheme_string(str(raw))} \'riff) (format t "FAILED %s\\n" {_scheme_string(job.utt_id)}))'
        )
    return "\n".join(lines) + "\n"


def synth_festival_batch(jobs: Sequence[SynthJob], workdir: Path) -> dict[str, np.ndarray | SynthesisError]:
    """Synthesize festival jobs in one ``festival -b`` process; returns audio or the error per utt_id."""
    raws = [workdir / f"{j.utt_id}.festival.wav" for j in jobs]
    script = workdir / "batch.scm"
    script.write_text(festival_script(jobs, raws), encoding="utf-8")
    batch_error: SynthesisError | None = None
    try:
        run_tool(["festival", "-b", str(script)], "festival", 30.0 + sum(_timeout(j.text) for j in jobs) / 4)
    except SynthesisError as e:  # a crash or timeout: the utterances written so far are still good
        batch_error = e
    out: dict[str, np.ndarray | SynthesisError] = {}
    for job, raw in zip(jobs, raws):
        try:
            if not raw.exists():
                if batch_error is not None:
                    raise SynthesisError(batch_error.reason, str(batch_error))
                raise SynthesisError(SYNTHESIS_FAILED, f"festival wrote no audio for {job.text!r} ({script})")
            pitch = 1.0 if VOICES[job.voice].base_f0 is not None else job.pitch
            needs_sox = pitch != 1.0 or sf.info(str(raw)).samplerate != SAMPLE_RATE
            if needs_sox:  # slt-hts is 32 kHz
                resampled = raw.with_suffix(".16k.wav")
                _to_16k(raw, resampled, pitch, "festival")
                raw = resampled
            out[job.utt_id] = read_checked(raw, "festival")
        except SynthesisError as e:
            out[job.utt_id] = e
    return out


def samples_sha1(samples: np.ndarray) -> str:
    """sha1 of the int16 little-endian samples (not of the file: headers may differ between writers)."""
    return hashlib.sha1(np.ascontiguousarray(samples, dtype="<i2").tobytes()).hexdigest()


def write_wav(path: Path, samples: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), samples, SAMPLE_RATE, subtype="PCM_16")


def synthesize_jobs(
    jobs: Sequence[SynthJob], on_done: Callable[[int], None] | None = None
) -> list[SynthOutcome]:
    """Synthesize jobs (festival ones batched into one process) and write their wavs; one outcome per job.

    Only :class:`EngineMissingError` propagates; every other failure becomes a counted outcome.
    """
    outcomes: dict[str, SynthOutcome] = {}

    def finish(job: SynthJob, audio: np.ndarray | Exception) -> None:
        if isinstance(audio, SynthesisError):
            outcomes[job.utt_id] = SynthOutcome(job.utt_id, reason=audio.reason, detail=str(audio))
        elif isinstance(audio, Exception):  # an engine wrapper bug or a monkeypatched failure: still counted
            outcomes[job.utt_id] = SynthOutcome(
                job.utt_id, reason=SYNTHESIS_FAILED, detail=f"{job.voice}: {type(audio).__name__}: {audio}"
            )
        else:
            write_wav(Path(job.wav_path), audio)
            outcomes[job.utt_id] = SynthOutcome(job.utt_id, num_samples=len(audio), sha1=samples_sha1(audio))
        if on_done is not None:
            on_done(1)

    with tempfile.TemporaryDirectory(prefix="fastaed-synth-") as tmp:
        workdir = Path(tmp)
        festival_jobs = [j for j in jobs if VOICES[j.voice].engine == "festival"]
        if festival_jobs:
            festival_jobs.sort(key=lambda j: (j.voice, j.utt_id))  # one voice load per voice
            try:
                results = synth_festival_batch(festival_jobs, workdir)
            except EngineMissingError:
                raise
            except Exception as e:  # counted per utterance below
                results = {j.utt_id: e for j in festival_jobs}
            for job in festival_jobs:
                finish(job, results[job.utt_id])
        for job in jobs:
            engine = VOICES[job.voice].engine
            if engine == "festival":
                continue
            try:
                audio = synth_flite(job, workdir) if engine == "flite" else synth_espeak(job, workdir)
            except EngineMissingError:
                raise
            except Exception as e:  # counted, with the engine message
                audio = e
            finish(job, audio)
    return [outcomes[j.utt_id] for j in jobs]


def tool_versions() -> dict[str, str]:
    """Versions of the engines and sox (first line of their version output), for the card."""
    probes = {
        "flite": ["flite", "--version"],
        "espeak-ng": ["espeak-ng", "--version"],
        "festival": ["festival", "--version"],
        "sox": ["sox", "--version"],
    }
    out = {}
    for name, cmd in probes.items():
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            text = (proc.stdout + proc.stderr).strip().splitlines()
            line = next(
                (ln for ln in text if "version" in ln.lower() or name in ln.lower()), text[0] if text else ""
            )
            out[name] = line.strip()
        except (OSError, subprocess.TimeoutExpired) as e:
            out[name] = f"unavailable ({e})"
    return out


def package_versions(packages: Iterable[str]) -> dict[str, str]:
    """Installed Debian package versions (dpkg-query), or 'not installed'."""
    out = {}
    for pkg in sorted(set(packages)):
        try:
            proc = subprocess.run(
                ["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True, text=True, timeout=10
            )
            out[pkg] = (
                proc.stdout.strip() if proc.returncode == 0 and proc.stdout.strip() else "not installed"
            )
        except (OSError, subprocess.TimeoutExpired):
            out[pkg] = "unknown (no dpkg-query)"
    return out
