"""Model configuration: typed, frozen, validated dataclasses and the named presets.

A preset is a small function that only fills fields; ``PRESETS`` maps the names the CLI accepts to those
functions. Every preset takes ``vocab_size``, so a model can be sized for the tokenizer it is trained with.

Parameter counts in the preset docstrings are exact for the default vocabulary and were computed by
``fastaed.model.preset_info`` (built on the ``meta`` device, so nothing is allocated).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

# Copied from fastaed.constants on purpose: model/ depends on torch and on itself only (style rule 2).
N_MELS = 128  # log-mel bins of the input features
SUBSAMPLING = 8  # encoder frame-rate reduction: 100 feature frames/s -> 12.5 encoder frames/s (80 ms)

DEFAULT_VOCAB_SIZE = 4096 + 16  # SentencePiece pieces + special tokens (Canary-1B scale)
TINY_VOCAB_SIZE = 1024 + 16  # the CPU presets' tokenizer (fastaed tokenizer default + specials)


@dataclass(frozen=True)
class EncoderConfig:
    """The encoder. ``kind="fastconformer"``: dw-striding subsampling followed by Conformer blocks (Canary).
    ``kind="whisper"``: Whisper's conv stem (×2) + sinusoidal positions + pre-LN Transformer blocks; it uses
    ``n_mels, d_model, n_layers, n_heads, ff_expansion, max_positions`` and the dropouts, and needs
    ``subsampling_factor=2``; the Conformer-only fields are ignored."""

    kind: Literal["fastconformer", "whisper"] = "fastconformer"
    n_mels: int = N_MELS  # input feature bins (F)
    d_model: int = 1024  # width D of the Conformer blocks
    n_layers: int = 24  # number of Conformer blocks
    n_heads: int = 8  # attention heads H; D must be divisible by H
    ff_expansion: int = 4  # feed-forward inner width = ff_expansion * D
    conv_kernel: int = 9  # depthwise convolution kernel (frames, odd so padding is symmetric)
    subsampling_factor: int = SUBSAMPLING  # power of two; one stride-2 conv stage per factor of two
    subsampling_channels: int = 256  # channels C of the subsampling convolutions
    dropout: float = 0.1  # dropout on every residual branch and inside the feed-forward
    dropout_att: float = 0.1  # dropout on the attention weights
    max_positions: int = 1500  # whisper: rows of the sinusoidal position table (30 s of encoder frames)
    xscaling: bool = False  # multiply the subsampled frames by sqrt(d_model) before the blocks (NeMo option)

    def __post_init__(self) -> None:
        if self.kind not in ("fastconformer", "whisper"):
            raise ValueError(f"encoder kind must be 'fastconformer' or 'whisper', got {self.kind!r}")
        if self.kind == "whisper" and self.subsampling_factor != 2:
            raise ValueError(
                f"a whisper encoder subsamples by 2, got subsampling_factor={self.subsampling_factor}"
            )
        _check_positive(self, ("n_mels", "d_model", "n_layers", "n_heads", "ff_expansion", "max_positions"))
        _check_positive(self, ("conv_kernel", "subsampling_channels"))
        _check_heads(self.d_model, self.n_heads, "encoder")
        if self.conv_kernel % 2 == 0:
            raise ValueError(f"conv_kernel must be odd (symmetric padding), got {self.conv_kernel}")
        f = self.subsampling_factor
        if f < 2 or f & (f - 1):
            raise ValueError(f"subsampling_factor must be a power of two >= 2, got {f}")
        _check_dropout(self, ("dropout", "dropout_att"))

    @property
    def subsampling_stages(self) -> int:
        """Number of stride-2 convolution stages (3 for ×8)."""
        return self.subsampling_factor.bit_length() - 1


@dataclass(frozen=True)
class DecoderConfig:
    """Pre-LN Transformer decoder with self- and cross-attention.

    The defaults are Canary's decoder; Whisper's differs in the last five fields (learned positions, no
    embedding LayerNorm, GELU, no key bias, no output bias)."""

    d_model: int = 1024  # width Dd of the decoder
    n_layers: int = 24  # number of decoder blocks
    n_heads: int = 8  # attention heads H; Dd must be divisible by H
    ff_expansion: int = 4  # feed-forward inner width = ff_expansion * Dd (ReLU)
    max_len: int = 512  # generation cap in tokens (positions are computed on the fly, training is not capped)
    tie_embeddings: bool = True  # output projection shares the token embedding matrix (as Canary does)
    dropout: float = 0.1  # dropout on the embedding, on every residual branch
    dropout_att: float = 0.1  # dropout on the attention weights
    positions: Literal["sinusoidal", "learned"] = "sinusoidal"  # learned: a (max_len, D) table (Whisper)
    embed_norm: bool = True  # LayerNorm after token + position embedding (Canary has one, Whisper not)
    activation: Literal["relu", "gelu"] = "relu"  # feed-forward nonlinearity
    key_bias: bool = True  # bias on the attention key projections (Whisper has none)
    output_bias: bool = True  # bias on the output logits
    scaled_positions: bool = False  # sinusoidal positions divided by sqrt(D) (NeMo's FixedPositionalEncoding)

    def __post_init__(self) -> None:
        if self.positions not in ("sinusoidal", "learned"):
            raise ValueError(f"decoder positions must be 'sinusoidal' or 'learned', got {self.positions!r}")
        if self.activation not in ("relu", "gelu"):
            raise ValueError(f"decoder activation must be 'relu' or 'gelu', got {self.activation!r}")
        _check_positive(self, ("d_model", "n_layers", "n_heads", "ff_expansion", "max_len"))
        _check_heads(self.d_model, self.n_heads, "decoder")
        _check_dropout(self, ("dropout", "dropout_att"))


@dataclass(frozen=True)
class ModelConfig:
    """The whole attention encoder-decoder model."""

    encoder: EncoderConfig = dataclasses.field(default_factory=EncoderConfig)
    decoder: DecoderConfig = dataclasses.field(default_factory=DecoderConfig)
    vocab_size: int = DEFAULT_VOCAB_SIZE  # output classes V = tokenizer pieces + specials
    ctc_weight: float | None = None  # weight of an auxiliary CTC loss on the encoder; None = no CTC head
    name: str = "custom"  # preset name, recorded in checkpoints

    def __post_init__(self) -> None:
        if not isinstance(self.encoder, EncoderConfig) or not isinstance(self.decoder, DecoderConfig):
            raise TypeError("encoder and decoder must be EncoderConfig and DecoderConfig instances")
        if self.vocab_size < 2:
            raise ValueError(f"vocab_size must be >= 2, got {self.vocab_size}")
        if self.ctc_weight is not None and not 0.0 < self.ctc_weight <= 1.0:
            raise ValueError(f"ctc_weight must be None or in (0, 1], got {self.ctc_weight}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able nested dict (the form stored in checkpoints)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error, so a stale checkpoint fails loudly."""
        d = dict(d)
        encoder = EncoderConfig(**d.pop("encoder", {}))
        decoder = DecoderConfig(**d.pop("decoder", {}))
        return cls(encoder=encoder, decoder=decoder, **d)


def _check_positive(cfg: object, names: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(cfg, name)
        if not isinstance(value, int) or value <= 0:
            raise ValueError(f"{type(cfg).__name__}.{name} must be a positive int, got {value!r}")


def _check_heads(d_model: int, n_heads: int, what: str) -> None:
    if d_model % n_heads:
        raise ValueError(f"{what} d_model {d_model} is not divisible by n_heads {n_heads}")


def _check_dropout(cfg: object, names: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(cfg, name)
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{type(cfg).__name__}.{name} must be in [0, 1), got {value}")


# ---------------------------------------------------------------------------------------------- presets


def canary_1b(vocab_size: int = DEFAULT_VOCAB_SIZE) -> ModelConfig:
    """Canary-1B: 24 × 1024 encoder, 24 × 1024 decoder, 8 heads.

    1,016.7M parameters (encoder 609.3M, decoder 407.3M) with the default vocabulary; the model card says 1B.
    """
    return ModelConfig(
        encoder=EncoderConfig(d_model=1024, n_layers=24, n_heads=8),
        decoder=DecoderConfig(d_model=1024, n_layers=24, n_heads=8, max_len=512),
        vocab_size=vocab_size,
        name="canary-1b",
    )


def canary_1b_flash(vocab_size: int = DEFAULT_VOCAB_SIZE) -> ModelConfig:
    """Canary-1B-Flash: depth moved to the encoder, 32 × 1024 encoder, 4 × 1024 decoder.

    882.4M parameters (encoder 811.0M, decoder 71.4M); the model card says 883M.
    """
    return ModelConfig(
        encoder=EncoderConfig(d_model=1024, n_layers=32, n_heads=8),
        decoder=DecoderConfig(d_model=1024, n_layers=4, n_heads=8, max_len=1024),
        vocab_size=vocab_size,
        name="canary-1b-flash",
    )


def canary_180m_flash(vocab_size: int = DEFAULT_VOCAB_SIZE) -> ModelConfig:
    """Canary-180M-Flash: 17 × 512 encoder, 4 × 1024 decoder; a 512 -> 1024 projection joins them.

    181.5M parameters (encoder 109.5M, decoder 71.4M, projection 0.5M); the model card says 182M.
    """
    return ModelConfig(
        encoder=EncoderConfig(d_model=512, n_layers=17, n_heads=8),
        decoder=DecoderConfig(d_model=1024, n_layers=4, n_heads=8, max_len=1024),
        vocab_size=vocab_size,
        name="canary-180m-flash",
    )


def tiny_balanced(vocab_size: int = TINY_VOCAB_SIZE) -> ModelConfig:
    """CPU-sized model with encoder and decoder depth close (6 + 5 layers at d=192).

    8.73M parameters (encoder 5.56M, decoder 3.17M). Same size as ``tiny-flash``: one encoder layer costs
    24·D² and one decoder layer 16·D², so trading 2 encoder layers for 3 decoder layers keeps the count.
    """
    return ModelConfig(
        encoder=_tiny_encoder(n_layers=6),
        decoder=DecoderConfig(d_model=192, n_layers=5, n_heads=4, max_len=256),
        vocab_size=vocab_size,
        name="tiny-balanced",
    )


def tiny_flash(vocab_size: int = TINY_VOCAB_SIZE) -> ModelConfig:
    """CPU-sized Flash layout: deep encoder, 2 decoder layers (8 + 2 layers at d=192).

    8.74M parameters (encoder 7.35M, decoder 1.39M).
    """
    return ModelConfig(
        encoder=_tiny_encoder(n_layers=8),
        decoder=DecoderConfig(d_model=192, n_layers=2, n_heads=4, max_len=256),
        vocab_size=vocab_size,
        name="tiny-flash",
    )


def _tiny_encoder(n_layers: int) -> EncoderConfig:
    # 64 subsampling channels: the first full-resolution convolutions dominate CPU time at 256.
    # No dropout: CPU runs see each utterance only a few times, dropout slowed the CTC probe's escape from
    # its unigram plateau, and its mask sampling was 15% of the CPU step time.
    return EncoderConfig(
        d_model=192, n_layers=n_layers, n_heads=4, subsampling_channels=64, dropout=0.0, dropout_att=0.0
    )


def unit_test(vocab_size: int = TINY_VOCAB_SIZE) -> ModelConfig:
    """Unit-test model: d=32, 2 heads, 1 + 1 layers, 16 subsampling channels, no dropout (deterministic).

    86.6K parameters (encoder 35.1K, decoder 51.4K).
    """
    return ModelConfig(
        encoder=EncoderConfig(
            d_model=32, n_layers=1, n_heads=2, subsampling_channels=16, dropout=0.0, dropout_att=0.0
        ),
        decoder=DecoderConfig(d_model=32, n_layers=1, n_heads=2, max_len=128, dropout=0.0, dropout_att=0.0),
        vocab_size=vocab_size,
        name="test",
    )


def whisper_config(
    *,
    n_mels: int = 80,
    d_model: int = 384,
    n_heads: int = 6,
    encoder_layers: int = 4,
    decoder_layers: int = 4,
    vocab_size: int = 51865,
    audio_positions: int = 1500,
    text_positions: int = 448,
    name: str = "whisper",
) -> ModelConfig:
    """A Whisper model (OpenAI's ``dims``: n_mels, n_audio_state, n_audio_head, n_audio_layer, n_text_layer,
    n_vocab, n_audio_ctx, n_text_ctx). Whisper uses one width and head count for both halves, no dropout."""
    return ModelConfig(
        encoder=EncoderConfig(
            kind="whisper",
            n_mels=n_mels,
            d_model=d_model,
            n_layers=encoder_layers,
            n_heads=n_heads,
            subsampling_factor=2,
            max_positions=audio_positions,
            dropout=0.0,
            dropout_att=0.0,
        ),
        decoder=DecoderConfig(
            d_model=d_model,
            n_layers=decoder_layers,
            n_heads=n_heads,
            max_len=text_positions,
            dropout=0.0,
            dropout_att=0.0,
            positions="learned",
            embed_norm=False,
            activation="gelu",
            key_bias=False,
            output_bias=False,
        ),
        vocab_size=vocab_size,
        name=name,
    )


def whisper_tiny(vocab_size: int = 51865) -> ModelConfig:
    """Whisper tiny: 4 + 4 layers at d=384, 6 heads. 37.8M parameters with the multilingual vocabulary."""
    return whisper_config(vocab_size=vocab_size, name="whisper-tiny")


def whisper_base(vocab_size: int = 51865) -> ModelConfig:
    """Whisper base: 6 + 6 layers at d=512, 8 heads. 72.6M parameters with the multilingual vocabulary."""
    return whisper_config(
        d_model=512, n_heads=8, encoder_layers=6, decoder_layers=6, vocab_size=vocab_size, name="whisper-base"
    )


PRESETS: dict[str, Callable[..., ModelConfig]] = {
    "canary-1b": canary_1b,
    "canary-1b-flash": canary_1b_flash,
    "canary-180m-flash": canary_180m_flash,
    "tiny-balanced": tiny_balanced,
    "tiny-flash": tiny_flash,
    "test": unit_test,
    "whisper-tiny": whisper_tiny,
    "whisper-base": whisper_base,
}


def preset_config(name: str, vocab_size: int | None = None) -> ModelConfig:
    """The config of preset ``name``, with its default vocabulary unless ``vocab_size`` is given."""
    if name not in PRESETS:
        raise KeyError(f"unknown model preset {name!r}; known: {', '.join(PRESETS)}")
    return PRESETS[name]() if vocab_size is None else PRESETS[name](vocab_size)
