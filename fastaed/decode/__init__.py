"""Fast inference: batched greedy and beam search, transcription and scoring.

The decoder cache these searches drive belongs to the model (``fastaed.model.cache``); this package holds
search strategies and what surrounds them. Dependencies: model (the network), data (audio, features,
tokenizer, manifests). Nothing here imports ``fastaed.train``.
"""

from fastaed.decode.search import Hypothesis, beam_search, greedy_search, length_penalty

__all__ = ["Hypothesis", "beam_search", "greedy_search", "length_penalty"]
