"""fastaed: efficient training and inference of attention encoder-decoder speech models."""

__version__ = "0.1.0"
