"""Offline synthetic speech corpus from Debian TTS engines (``fastaed synth``).

``text`` picks and cleans sentences, ``engines`` drives flite/espeak-ng/festival/sox, ``corpus`` plans and
generates the manifests, ``card`` writes the corpus card.
"""

from fastaed.synth.corpus import PRESETS, CorpusResult, SynthPreset, generate_corpus

__all__ = ["PRESETS", "CorpusResult", "SynthPreset", "generate_corpus"]
