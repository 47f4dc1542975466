"""Fast inference: a K/V-cached decoder, batched greedy and beam search, transcription and evaluation.

Dependencies: model (the network), data (audio, features, tokenizer, manifests). Nothing here imports
``fastaed.train``.
"""

from fastaed.decode.incremental import DecoderCache
from fastaed.decode.search import Hypothesis, beam_search, greedy_search, length_penalty

__all__ = ["DecoderCache", "Hypothesis", "beam_search", "greedy_search", "length_penalty"]
