"""The attention encoder-decoder model: FastConformer encoder, optional projection, Transformer decoder.

Dimensions: B batch, T feature frames, T' encoder frames, F mel bins, U decoder tokens, De encoder width,
Dd decoder width, V vocabulary. Lengths are (B,) int64; sequences are right-padded.

The model takes and returns tensors only (never a data ``Batch``), so ``fastaed.model`` depends on nothing
but torch. An optional CTC head (a linear layer over the encoder states, over the same vocabulary, blank =
the pad id 0) supports hybrid AED + CTC training; the Canary presets have none.
"""

from __future__ import annotations

import dataclasses
from typing import Literal, NamedTuple, overload

import torch
from torch import Tensor, nn

from fastaed.model.cache import CacheKind, DecoderCache
from fastaed.model.config import ModelConfig, preset_config
from fastaed.model.conformer import ConformerEncoder
from fastaed.model.decoder import TransformerDecoder
from fastaed.model.whisper import WhisperEncoder


class AEDOutput(NamedTuple):
    """What :meth:`EncoderDecoderModel.forward` returns with ``return_ctc=True``."""

    logits: Tensor  # (B, U, V) decoder logits
    enc_lens: Tensor  # (B,) valid encoder frames
    ctc_log_probs: Tensor  # (B, T', V) log-softmax of the CTC head


class EncoderDecoderModel(nn.Module):
    """An AED model built from a :class:`ModelConfig`: Canary-style (FastConformer) or Whisper."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        enc, dec = config.encoder, config.decoder
        self.encoder = ConformerEncoder(enc) if enc.kind == "fastconformer" else WhisperEncoder(enc)
        # Canary-180M-Flash joins a 512-wide encoder to a 1024-wide decoder.
        self.projection: nn.Module = (
            nn.Linear(enc.d_model, dec.d_model) if enc.d_model != dec.d_model else nn.Identity()
        )
        self.decoder = TransformerDecoder(dec, config.vocab_size)
        self.ctc_head = nn.Linear(enc.d_model, config.vocab_size) if config.ctc_weight is not None else None

    def encode(self, feats: Tensor, feat_lens: Tensor) -> tuple[Tensor, Tensor]:
        """feats: (B, T, F) log-mel; feat_lens: (B,) int64, each >= 1.

        Returns encoder states (B, T', De), zero on padded frames, and their lengths (B,).
        """
        return self.encoder(feats, feat_lens)

    def decode(self, enc: Tensor, enc_lens: Tensor, dec_inputs: Tensor) -> Tensor:
        """enc: (B, T', De) from :meth:`encode`; enc_lens: (B,); dec_inputs: (B, U). Returns (B, U, V)."""
        return self.decoder(dec_inputs, self.projection(enc), enc_lens)

    def decode_features(self, enc: Tensor, enc_lens: Tensor, dec_inputs: Tensor) -> Tensor:
        """:meth:`decode` stopped before the output matrix: (B, U, Dd) final decoder states, which
        ``self.decoder.classify`` turns into the same logits."""
        return self.decoder.features(dec_inputs, self.projection(enc), enc_lens)

    def start_decoding(
        self, enc: Tensor, enc_lens: Tensor, capacity: int, kind: CacheKind = "kv"
    ) -> DecoderCache:
        """An empty decoder cache for ``enc`` (B, T', De) from :meth:`encode` with ``enc_lens`` (B,) frames.

        ``capacity``: the most tokens a row will hold (prompt + generated). The encoder states are projected
        to the decoder width here, once; feed tokens with ``model.decoder.step(tokens, cache)``.
        """
        return self.decoder.start(self.projection(enc), enc_lens, capacity, kind)

    def ctc_log_probs(self, enc: Tensor) -> Tensor:
        """enc: (B, T', De) -> (B, T', V) CTC log-probabilities (float32). Needs ``ctc_weight`` set."""
        if self.ctc_head is None:
            raise RuntimeError("this model has no CTC head (ModelConfig.ctc_weight is None)")
        return torch.log_softmax(self.ctc_head(enc).float(), dim=-1)

    @overload
    def forward(
        self,
        feats: Tensor,
        feat_lens: Tensor,
        dec_inputs: Tensor,
        dec_lens: Tensor,
        *,
        return_ctc: Literal[False] = ...,
    ) -> Tensor: ...

    @overload
    def forward(
        self,
        feats: Tensor,
        feat_lens: Tensor,
        dec_inputs: Tensor,
        dec_lens: Tensor,
        *,
        return_ctc: Literal[True],
    ) -> AEDOutput: ...

    def forward(
        self,
        feats: Tensor,
        feat_lens: Tensor,
        dec_inputs: Tensor,
        dec_lens: Tensor,
        *,
        return_ctc: bool = False,
    ) -> Tensor | AEDOutput:
        """Teacher-forced training/scoring pass.

        feats: (B, T, F); feat_lens: (B,) int64 valid frames, each >= 1; dec_inputs: (B, U) token ids
        (prompt + transcript, without the last token); dec_lens: (B,) valid decoder tokens.

        Returns (B, U, V) logits; positions at or past ``dec_lens`` are meaningless. ``dec_lens`` is not
        needed to compute them (right padding + causal attention already keep padding out of every valid
        position); it is part of the signature so callers pass the same tensors to the model and the loss.
        With ``return_ctc=True`` (CTC head required) returns :class:`AEDOutput`, sharing one encoder pass.
        """
        if dec_inputs.shape[0] != feats.shape[0] or dec_lens.shape[0] != feats.shape[0]:
            raise ValueError(f"batch sizes differ: feats {feats.shape[0]}, dec_inputs {dec_inputs.shape[0]}")
        enc, enc_lens = self.encode(feats, feat_lens)
        logits = self.decode(enc, enc_lens, dec_inputs)
        if not return_ctc:
            return logits
        return AEDOutput(logits, enc_lens, self.ctc_log_probs(enc))

    def num_params(self) -> dict[str, int]:
        """Parameter counts: ``encoder``, ``decoder``, ``other`` (projection, CTC head) and ``total``."""
        encoder = _count(self.encoder)
        decoder = _count(self.decoder)
        total = _count(self)
        return {"encoder": encoder, "decoder": decoder, "other": total - encoder - decoder, "total": total}


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def build_model(config: ModelConfig | str, vocab_size: int | None = None) -> EncoderDecoderModel:
    """A model from a config or a preset name (see ``fastaed.model.PRESETS``).

    ``vocab_size`` overrides the config's vocabulary (use the tokenizer's ``vocab_size``). Build under
    ``with torch.device("meta"):`` to size a model without allocating it.
    """
    if isinstance(config, str):
        config = preset_config(config, vocab_size)
    elif vocab_size is not None and vocab_size != config.vocab_size:
        config = dataclasses.replace(config, vocab_size=vocab_size)
    return EncoderDecoderModel(config)


def preset_info(name: str | ModelConfig, vocab_size: int | None = None) -> dict[str, int | str]:
    """Size summary of a preset (or a config), computed on the ``meta`` device (exact, allocates nothing).

    Keys: ``name``, ``params``, ``encoder_params``, ``decoder_params``, ``other_params``, ``encoder_layers``,
    ``decoder_layers``, ``d_model`` (encoder width), ``decoder_d_model``, ``vocab_size``.
    """
    with torch.device("meta"):
        model = build_model(name, vocab_size)
    cfg = model.config
    counts = model.num_params()
    return {
        "name": cfg.name,
        "params": counts["total"],
        "encoder_params": counts["encoder"],
        "decoder_params": counts["decoder"],
        "other_params": counts["other"],
        "encoder_layers": cfg.encoder.n_layers,
        "decoder_layers": cfg.decoder.n_layers,
        "d_model": cfg.encoder.d_model,
        "decoder_d_model": cfg.decoder.d_model,
        "vocab_size": cfg.vocab_size,
    }
