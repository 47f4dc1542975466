"""Shared helpers for tests and smoke runs: tiny audio files, manifests and tokenizers made on the spot."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf

from fastaed.bench.fixtures import SENTENCES, small_tokenizer
from fastaed.constants import SAMPLE_RATE


def write_tone(
    path: Path,
    seconds: float,
    *,
    sample_rate: int = SAMPLE_RATE,
    freq: float = 440.0,
    channels: int = 1,
    seed: int = 0,
) -> Path:
    """A tone plus a little noise (so per-feature normalisation has variance), as 16-bit audio."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    wave = 0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(len(t))
    if channels > 1:
        wave = np.stack([wave] * channels, axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wave.astype(np.float32), sample_rate, subtype="PCM_16")
    return path


def write_tiny_corpus(root: Path, num: int = 8, *, name: str = "train.jsonl", **overrides) -> Path:
    """``num`` short tone files and a NeMo manifest (relative paths) with the sentences above."""
    root.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(num):
        seconds = 0.5 + 0.25 * i
        write_tone(root / "audio" / f"u{i}.wav", seconds, freq=200 + 50 * i, seed=i)
        entry = {
            "audio_filepath": f"audio/u{i}.wav",
            "duration": seconds,
            "text": SENTENCES[i % len(SENTENCES)],
            "source_lang": "en",
            "target_lang": "en",
            "task": "transcribe",
            "pnc": "yes" if i % 2 == 0 else "no",
        }
        entry.update(overrides)
        lines.append(json.dumps(entry))
    manifest = root / name
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def train_tiny_tokenizer(out_dir: Path, vocab_size: int = 64):
    return small_tokenizer(out_dir, vocab_size)
