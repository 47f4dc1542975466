"""The inputs of `fastaed bench sampler`, made locally: three length distributions (durations, U) and the
manifests both samplers read (NeMo JSONL for ours, Lhotse cuts for Lhotse) with texts of exactly U tokens.

U = 5 prompt tokens + text + EOS. The texts are runs of distinct words, each a single piece of the benchmark
tokenizer, so the U our metadata index computes equals the U Lhotse is given.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fastaed.data.tokenizer import PROMPT_LENGTH, TokenizerConfig, train_tokenizer
from fastaed.sampling.stats import synthetic_lengths

EXTRA_TOKENS = PROMPT_LENGTH + 1  # prompt + EOS around the text pieces
WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliett kilo lima mike".split()


# ---- distributions -------------------------------------------------------------------------------------
def _with_tokens(d: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Round to 1 ms (float32); U like the anchor's: text at rate ~ N(6, 1) tok/s clipped to [2, 12]."""
    d = np.round(d, 3)
    rate = np.clip(rng.normal(6.0, 1.0, len(d)), 2.0, 12.0)
    text = np.maximum(1, np.round(rate * d + rng.normal(0.0, 2.0, len(d))))
    return d.astype(np.float32), (text + EXTRA_TOKENS).astype(np.int32)


def lognormal(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    return synthetic_lengths(n, seed, prompt_tokens=EXTRA_TOKENS)


def bimodal(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    long = rng.random(n) < 0.4
    d = np.where(long, rng.uniform(15.0, 30.0, n), rng.uniform(1.0, 3.0, n))
    return _with_tokens(d, rng)


def long_tail(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    d = np.empty(0)
    while len(d) < n:  # Lomax(shape 1.5, scale 3 s) + 0.5 s, truncated at 60 s by rejection
        draw = 0.5 + 3.0 * rng.pareto(1.5, 2 * n)
        d = np.concatenate([d, draw[draw <= 60.0]])
    return _with_tokens(d[:n], rng)


DISTRIBUTIONS: dict[str, tuple[Callable[[int, int], tuple[np.ndarray, np.ndarray]], str]] = {
    "lognormal": (lognormal, "log-normal median 6 s, sigma 0.75, 0.5-40 s (SPEC)"),
    "bimodal": (bimodal, "60% 1-3 s commands + 40% 15-30 s segments"),
    "long_tail": (long_tail, "Lomax(1.5) x 3 s + 0.5 s, up to 60 s"),
}


# ---- manifests -----------------------------------------------------------------------------------------
def texts_of_lengths(u: np.ndarray) -> list[str]:
    pool = WORDS * (int(u.max()) // len(WORDS) + 2)
    return [
        " ".join(pool[i % len(WORDS) : i % len(WORDS) + n]) for i, n in enumerate((u - EXTRA_TOKENS).tolist())
    ]


def word_tokenizer(folder: Path):
    sentences = [" ".join(WORDS[i:] + WORDS[:i]) for i in range(len(WORDS))] * 20
    tok = train_tokenizer(sentences, folder, TokenizerConfig(vocab_size=256))
    if any(len(tok.encode_text(w)) != 1 for w in WORDS):
        raise RuntimeError("benchmark tokenizer split a word: U of the index would not match")
    return tok


def write_nemo(path: Path, d: np.ndarray, texts: list[str]) -> None:
    with open(path, "w") as f:
        for i, (dur, text) in enumerate(zip(d.tolist(), texts)):
            entry = {"audio_filepath": f"audio/{i}.wav", "duration": round(dur, 3), "text": text}
            f.write(json.dumps(entry) + "\n")


def lhotse_cuts(d: np.ndarray, u: np.ndarray, texts: list[str]) -> list:
    """MonoCuts with a dummy recording, a supervision holding the text and U in ``custom``."""
    from lhotse import MonoCut, Recording, SupervisionSegment
    from lhotse.audio import AudioSource

    cuts = []
    for i, (dur, tokens, text) in enumerate(zip(d.tolist(), u.tolist(), texts)):
        dur = round(dur, 3)
        src = [AudioSource(type="file", channels=[0], source="/dev/null")]
        rec = Recording(f"r{i}", src, sampling_rate=16000, num_samples=round(dur * 16000), duration=dur)
        sup = SupervisionSegment(f"s{i}", f"r{i}", start=0.0, duration=dur, text=text, language="en")
        cut = MonoCut(f"c{i}", start=0.0, duration=dur, channel=0, recording=rec, supervisions=[sup])
        cut.custom = {"num_tokens": tokens}
        cuts.append(cut)
    return cuts
