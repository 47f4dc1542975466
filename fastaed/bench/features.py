"""Feature-extraction speed: is the log-mel front end far from being an input bottleneck?

Writes real 16-bit WAV files of synthetic speech-like audio to a temporary folder, then times, after a
warm-up and with ``torch.set_num_threads(threads)``:

* ``features``: :class:`~fastaed.data.features.LogMelFeatures` on waveforms already in memory;
* ``read+features``: :func:`~fastaed.data.audio.load_audio` of each file, padding into a batch, features;
* ``resample``: 22.05 kHz -> 16 kHz resampling of in-memory waveforms.

Each for batch sizes 1 and 16 (resampling: 1), as RTFx = audio seconds / wall seconds, and per core
(RTFx / threads). All utterances have the same length, so batches hold no padding. The target is
500x real time per core for feature extraction (a 2-core data loader then feeds ~1,000 s of audio per second).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from fastaed.constants import SAMPLE_RATE
from fastaed.data.audio import load_audio, resample
from fastaed.data.features import FeatureConfig, LogMelFeatures
from fastaed.util.devices import synchronize
from fastaed.util.tables import format_table

TARGET_XRT_PER_CORE = 500
BATCH_SIZES = (1, 16)
RESAMPLE_FROM = 22_050


def synth_speech(seconds: float, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Speech-like audio: a jittered glottal pulse train plus breath noise, shaped by three random formants
    that change every ~150 ms, under a syllable-rate amplitude envelope.

    Returns:
        (round(seconds · sample_rate),) float32 in [-1, 1].
    """
    n = round(seconds * sample_rate)
    seg = int(0.15 * sample_rate)  # one "phone"; overlap-added with 50% Hann cross-fades
    hop = seg // 2
    num_segs = max(1, -(-n // hop) + 1)
    t = np.arange(seg) / sample_rate
    f0 = rng.uniform(90, 250, size=(num_segs, 1)) * (1 + 0.05 * np.sin(2 * np.pi * 3 * t[None, :]))
    phase = 2 * np.pi * np.cumsum(f0, axis=1) / sample_rate
    source = np.maximum(np.sin(phase), 0) ** 8 + 0.05 * rng.standard_normal((num_segs, seg))
    spec = np.fft.rfft(source * np.hanning(seg)[None, :], axis=1)
    freqs = np.fft.rfftfreq(seg, 1 / sample_rate)[None, :]
    envelope = np.zeros_like(freqs)
    for lo, hi, bw in ((300, 900, 80), (900, 2500, 120), (2000, 3500, 200)):  # F1, F2, F3
        fc = rng.uniform(lo, hi, size=(num_segs, 1))
        envelope = envelope + np.exp(-0.5 * ((freqs - fc) / bw) ** 2)
    shaped = np.fft.irfft(spec * envelope, n=seg, axis=1)
    out = np.zeros(num_segs * hop + seg)
    for i in range(num_segs):  # overlap-add; a loop over ~7 segments per second is cheap
        out[i * hop : i * hop + seg] += shaped[i]
    out = out[:n]
    syllables = 0.55 + 0.45 * np.sin(2 * np.pi * 4 * np.arange(n) / sample_rate + rng.uniform(0, 2 * np.pi))
    out *= syllables
    return (0.5 * out / (np.abs(out).max() + 1e-9)).astype(np.float32)


def _time(fn: Callable[[], None], device: torch.device, warmup: int = 1) -> float:
    """Wall seconds of ``fn()`` after ``warmup`` untimed calls, with the device synchronised."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    t0 = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - t0


def _pad(waves: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """List of (N_i,) -> (B, max N) zero-padded, (B,) lengths."""
    lens = torch.tensor([w.numel() for w in waves], dtype=torch.int64)
    out = torch.zeros(len(waves), int(lens.max()))
    for i, w in enumerate(waves):
        out[i, : w.numel()] = w
    return out, lens


@dataclass(frozen=True)
class FeaturesBenchConfig:
    """Options of ``fastaed bench features``."""

    num_utts: int = field(default=200, metadata={"help": "number of synthetic utterances"})
    seconds: float = field(default=10.0, metadata={"help": "length of each utterance (s)"})
    threads: int = field(default=1, metadata={"help": "torch CPU threads (xRT is per thread)"})
    device: str = field(default="cpu", metadata={"help": "device for feature extraction (cpu, cuda, cuda:1)"})
    json: Path | None = field(default=None, metadata={"help": "write the results as JSON here"})
    seed: int = field(default=0, metadata={"help": "seed of the synthetic audio"})
    check: bool = field(
        default=False, metadata={"help": "exit with status 1 when features-only xRT/core is under target"}
    )


def run(config: FeaturesBenchConfig) -> dict:
    """Run the benchmark; returns the JSON-able result.

    Keys: ``rows`` (one per stage and batch size with ``audio_seconds``, ``wall_seconds``, ``xrt``,
    ``xrt_per_core``), ``xrt_per_core`` (flat ``{"features_b1": ..., "features_b16": ...,
    "read_features_b1": ..., "read_features_b16": ..., "resample_22050_16000_b1": ...}``),
    ``target_xrt_per_core`` and ``pass`` (every features-only row reaches the target).
    """
    num_utts, seconds, threads = config.num_utts, config.seconds, config.threads
    if num_utts < 1 or seconds <= 0 or threads < 1:
        raise ValueError(f"need num_utts, seconds, threads > 0; got {num_utts}, {seconds}, {threads}")
    dev = torch.device(config.device)
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    rng = np.random.default_rng(config.seed)
    extractor = LogMelFeatures(FeatureConfig()).to(dev).eval()
    rows: list[dict] = []

    def add(stage: str, batch: int, audio_s: float, wall_s: float) -> None:
        xrt = audio_s / wall_s
        rows.append(
            {
                "stage": stage,
                "batch_size": batch,
                "audio_seconds": round(audio_s, 3),
                "wall_seconds": round(wall_s, 6),
                "xrt": round(xrt, 1),
                "xrt_per_core": round(xrt / threads, 1),
            }
        )

    try:
        with tempfile.TemporaryDirectory(prefix="fastaed-bench-features-") as tmp:
            paths = []
            waves = []
            for i in range(num_utts):
                audio = synth_speech(seconds, SAMPLE_RATE, rng)
                path = Path(tmp) / f"utt{i:05d}.wav"
                sf.write(path, audio, SAMPLE_RATE, subtype="PCM_16")
                paths.append(path)
                waves.append(torch.from_numpy(audio))
            total_s = sum(w.numel() for w in waves) / SAMPLE_RATE

            with torch.inference_mode():
                for bs in BATCH_SIZES:
                    batches = [_pad(waves[i : i + bs]) for i in range(0, num_utts, bs)]
                    batches = [(w.to(dev), n.to(dev)) for w, n in batches]

                    def features(batches=batches) -> None:
                        for w, n in batches:
                            extractor(w, n)

                    add("features", bs, total_s, _time(features, dev))

                    def read_features(bs=bs) -> None:
                        for i in range(0, num_utts, bs):
                            w, n = _pad([load_audio(p) for p in paths[i : i + bs]])
                            extractor(w.to(dev, non_blocking=True), n.to(dev, non_blocking=True))

                    add("read+features", bs, total_s, _time(read_features, dev))

                # Resampling: at most 20 utterances (it is not the target, just a sanity number).
                num_rs = min(num_utts, 20)
                src = [
                    torch.from_numpy(synth_speech(seconds, RESAMPLE_FROM, rng)).to(dev) for _ in range(num_rs)
                ]

                def resample_all() -> None:
                    for w in src:
                        resample(w, RESAMPLE_FROM, SAMPLE_RATE)

                add(f"resample {RESAMPLE_FROM}->{SAMPLE_RATE}", 1, num_rs * seconds, _time(resample_all, dev))
    finally:
        torch.set_num_threads(prev_threads)

    flat = {}
    for r in rows:
        key = {"features": "features", "read+features": "read_features"}.get(
            r["stage"], f"resample_{RESAMPLE_FROM}_{SAMPLE_RATE}"
        )
        flat[f"{key}_b{r['batch_size']}"] = r["xrt_per_core"]
    features_ok = all(r["xrt_per_core"] >= TARGET_XRT_PER_CORE for r in rows if r["stage"] == "features")
    return {
        "benchmark": "features",
        "device": str(dev),
        "threads": threads,
        "num_utts": num_utts,
        "seconds_per_utt": seconds,
        "torch": torch.__version__,
        "config": asdict(FeatureConfig()),
        "rows": rows,
        "xrt_per_core": flat,
        "target_xrt_per_core": TARGET_XRT_PER_CORE,
        "pass": features_ok,
    }


def print_report(result: dict) -> None:
    """Plain-text table of the rows plus the verdict."""
    header = ("stage", "batch", "audio s", "wall s", "xRT", "xRT/core")
    body = [
        (
            r["stage"],
            str(r["batch_size"]),
            f"{r['audio_seconds']:.1f}",
            f"{r['wall_seconds']:.3f}",
            f"{r['xrt']:.0f}",
            f"{r['xrt_per_core']:.0f}",
        )
        for r in result["rows"]
    ]
    verdict = "PASS" if result["pass"] else "FAIL"
    print(f"features benchmark: {result['num_utts']} x {result['seconds_per_utt']} s, "
          f"device {result['device']}, {result['threads']} thread(s)")  # fmt: skip
    print(format_table(header, body))
    print(f"target: features >= {result['target_xrt_per_core']} xRT per core -> {verdict}")


def exit_status(result: dict, config: FeaturesBenchConfig) -> int:
    """1 under ``--check`` when the features-only target is missed (a CI gate), else 0."""
    return 1 if config.check and not result["pass"] else 0
