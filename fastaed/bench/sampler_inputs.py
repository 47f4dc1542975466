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


def _lognormal_durations(rng: np.random.Generator, n: int, median: float, sigma: float, lo: float, hi: float):
    """n log-normal durations truncated to [lo, hi] by rejection."""
    d = np.empty(0)
    while len(d) < n:
        draw = rng.lognormal(np.log(median), sigma, 2 * n + 16)
        d = np.concatenate([d, draw[(draw >= lo) & (draw <= hi)]])
    return d[:n]


def _words_to_u(d: np.ndarray, words_per_s: np.ndarray, rng: np.random.Generator, pieces_per_word: float):
    """Round d to 1 ms (float32); U = prompt + EOS + text pieces ~ words · pieces/word + N(0, 1.5), >= 1."""
    d = np.round(d, 3)
    text = np.maximum(1, np.round(words_per_s * d * pieces_per_word + rng.normal(0.0, 1.5, len(d))))
    return d.astype(np.float32), (text + EXTRA_TOKENS).astype(np.int32)


def librispeech_like(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Read audiobooks: log-normal durations, median ~15 s, 1-35 s; ~2.7 words/s (speaker rate ~ N(2.7,
    0.35)), ~1.4 BPE pieces per word."""
    rng = np.random.default_rng(seed)
    d = _lognormal_durations(rng, n, 14.5, 0.45, 1.0, 35.0)
    return _words_to_u(d, np.clip(rng.normal(2.7, 0.35, n), 1.2, 4.5), rng, 1.4)


def common_voice_like(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Read prompts: 1-10 s clips, median ~4 s, ~2.3 words/s; 1 % label noise, a transcript 3-10x too long
    (a merged prompt) or too short (a truncated one)."""
    rng = np.random.default_rng(seed)
    d = _lognormal_durations(rng, n, 4.0, 0.35, 1.0, 10.0)
    rate = np.clip(rng.normal(2.3, 0.5, n), 0.8, 4.5)
    noisy = rng.random(n) < 0.01
    factor = rng.uniform(3.0, 10.0, n)
    rate = np.where(noisy, np.where(rng.random(n) < 0.5, rate * factor, rate / factor), rate)
    return _words_to_u(d, rate, rng, 1.4)


def bimodal_multitask(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """60 % short commands (1-3 s, ASR at ~3 pieces/s) + 40 % long dictation (15-30 s) split between two
    tasks whose output rates differ: ASR (~4 pieces/s) and speech translation into a wordier target
    (~6.5 pieces/s)."""
    rng = np.random.default_rng(seed)
    long = rng.random(n) < 0.4
    d = np.where(long, rng.uniform(15.0, 30.0, n), rng.uniform(1.0, 3.0, n))
    translate = long & (rng.random(n) < 0.5)
    rate = np.where(translate, 6.5, np.where(long, 4.0, 3.0)) * np.clip(rng.normal(1.0, 0.12, n), 0.6, 1.4)
    return _words_to_u(d, rate, rng, 1.0)


def conversational(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Ours: segmented conversations (call-centre / meetings): gamma durations 0.5-20 s (mode ~2 s, many
    backchannels), very variable speaking rate (~N(3, 1) words/s, incl. pauses), 1.3 pieces per word."""
    rng = np.random.default_rng(seed)
    d = np.empty(0)
    while len(d) < n:
        draw = 0.5 + rng.gamma(1.6, 2.5, 2 * n + 16)
        d = np.concatenate([d, draw[draw <= 20.0]])
    return _words_to_u(d[:n], np.clip(rng.normal(3.0, 1.0, n), 0.5, 6.0), rng, 1.3)


DISTRIBUTIONS: dict[str, tuple[Callable[[int, int], tuple[np.ndarray, np.ndarray]], str]] = {
    "lognormal": (lognormal, "log-normal median 6 s, sigma 0.75, 0.5-40 s (SPEC)"),
    "bimodal": (bimodal, "60% 1-3 s commands + 40% 15-30 s segments"),
    "long_tail": (long_tail, "Lomax(1.5) x 3 s + 0.5 s, up to 60 s"),
    "librispeech": (librispeech_like, "LibriSpeech-like: log-normal 1-35 s, median ~15 s, ~2.7 words/s"),
    "common_voice": (common_voice_like, "Common-Voice-like: 1-10 s, median ~4 s, 1% transcripts 3-10x off"),
    "multitask": (bimodal_multitask, "1-3 s commands + 15-30 s dictation, ASR and AST token rates"),
    "conversational": (conversational, "ours: segmented conversation, gamma 0.5-20 s, variable rate"),
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
