"""What a benchmark makes on the spot when the user gives it nothing: a small tokenizer.

The sentences are ordinary English with punctuation, casing and quotes, so the tokenizer has the usual
special tokens and a realistic piece inventory; the test helpers (``fastaed.testing``) reuse them.
"""

from __future__ import annotations

from pathlib import Path

from fastaed.data.tokenizer import Tokenizer, TokenizerConfig, train_tokenizer

SENTENCES = (
    "The cat sat on the mat.",
    "A quick brown fox jumps over the lazy dog!",
    "Where is the river, and where is the house?",
    'She said: "Don\'t go there."',
    "Light falls on the garden in the morning.",
    "We will answer every question.",
    "Water runs under the old stone bridge.",
    "They walked home in silence.",
)


def small_tokenizer(out_dir: str | Path, vocab_size: int = 64) -> Tokenizer:
    """A SentencePiece tokenizer trained on :data:`SENTENCES` (seconds), written to ``out_dir``."""
    return train_tokenizer(list(SENTENCES) * 4, Path(out_dir), TokenizerConfig(vocab_size=vocab_size))
