"""Attention encoder-decoder models: FastConformer (Canary) or Whisper encoder + Transformer decoder.

Imports only torch; checkpoint files are ``fastaed.formats``. Typical use::

    from fastaed.model import build_model, cross_entropy_loss

    model = build_model("tiny-flash", vocab_size=tokenizer.vocab_size)
    logits = model(feats, feat_lens, dec_inputs, dec_lens)  # (B, U, V)
    loss, num_tokens = cross_entropy_loss(logits, targets, target_lens=dec_lens)

    enc, enc_lens = model.encode(feats, feat_lens)  # decoding: the same decoder, one step at a time
    cache = model.start_decoding(enc, enc_lens, capacity=prompt_len + max_new_tokens)
    logits = model.decoder.step(prompts, cache)  # (B, V) after the prompt; then one token per call
"""

from fastaed.model.aed import AEDOutput, EncoderDecoderModel, build_model, preset_info
from fastaed.model.cache import CacheKind, DecoderCache, HiddenStateCache, KVCache
from fastaed.model.config import (
    DEFAULT_VOCAB_SIZE,
    PRESETS,
    TINY_VOCAB_SIZE,
    DecoderConfig,
    EncoderConfig,
    ModelConfig,
    preset_config,
    whisper_config,
)
from fastaed.model.conformer import ConformerBlock, ConformerEncoder, ConvModule, FeedForward
from fastaed.model.decoder import DecoderBlock, TransformerDecoder
from fastaed.model.loss import counted_targets, cross_entropy_loss, ctc_loss, distillation_loss
from fastaed.model.subsampling import DwStridingSubsampling, subsampled_lengths
from fastaed.model.whisper import WhisperEncoder, whisper_sinusoids

__all__ = [
    "AEDOutput",
    "CacheKind",
    "ConformerBlock",
    "ConformerEncoder",
    "ConvModule",
    "DEFAULT_VOCAB_SIZE",
    "DecoderBlock",
    "DecoderCache",
    "DecoderConfig",
    "DwStridingSubsampling",
    "EncoderConfig",
    "EncoderDecoderModel",
    "FeedForward",
    "HiddenStateCache",
    "KVCache",
    "ModelConfig",
    "PRESETS",
    "TINY_VOCAB_SIZE",
    "TransformerDecoder",
    "build_model",
    "counted_targets",
    "cross_entropy_loss",
    "ctc_loss",
    "distillation_loss",
    "preset_config",
    "preset_info",
    "subsampled_lengths",
    "whisper_config",
    "whisper_sinusoids",
    "WhisperEncoder",
]
