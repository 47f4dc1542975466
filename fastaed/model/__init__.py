"""Canary-style attention encoder-decoder models: FastConformer encoder + Transformer decoder.

Imports only torch (``safetensors`` is loaded lazily by the checkpoint functions). Typical use::

    from fastaed.model import build_model, cross_entropy_loss

    model = build_model("tiny-flash", vocab_size=tokenizer.vocab_size)
    logits = model(feats, feat_lens, dec_inputs, dec_lens)  # (B, U, V)
    loss, num_tokens = cross_entropy_loss(logits, targets, target_lens=dec_lens)
"""

from fastaed.model.aed import AEDOutput, EncoderDecoderModel, build_model, preset_info
from fastaed.model.checkpoint import CheckpointError, load_model, read_checkpoint_meta, save_model
from fastaed.model.config import (
    DEFAULT_VOCAB_SIZE,
    PRESETS,
    TINY_VOCAB_SIZE,
    DecoderConfig,
    EncoderConfig,
    ModelConfig,
    preset_config,
)
from fastaed.model.conformer import ConformerBlock, ConformerEncoder, ConvModule, FeedForward
from fastaed.model.decoder import DecoderBlock, TransformerDecoder
from fastaed.model.loss import cross_entropy_loss, ctc_loss
from fastaed.model.subsampling import DwStridingSubsampling, subsampled_lengths

__all__ = [
    "AEDOutput",
    "CheckpointError",
    "ConformerBlock",
    "ConformerEncoder",
    "ConvModule",
    "DEFAULT_VOCAB_SIZE",
    "DecoderBlock",
    "DecoderConfig",
    "DwStridingSubsampling",
    "EncoderConfig",
    "EncoderDecoderModel",
    "FeedForward",
    "ModelConfig",
    "PRESETS",
    "TINY_VOCAB_SIZE",
    "TransformerDecoder",
    "build_model",
    "cross_entropy_loss",
    "ctc_loss",
    "load_model",
    "preset_config",
    "preset_info",
    "read_checkpoint_meta",
    "save_model",
    "subsampled_lengths",
]
