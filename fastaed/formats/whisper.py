"""Whisper checkpoints in, fastaed checkpoints out: CTranslate2 folders, OpenAI ``.pt``, Hugging Face folders.

Every reader produces the *canonical* form — OpenAI's ``dims`` and parameter names (``encoder.blocks.0.attn
.query.weight``, ...) — and one mapping turns that into a fastaed :class:`EncoderDecoderModel` state dict, so
the three formats share the conversion (and Hugging Face export, ``hf_whisper.py``, runs it backwards).

fastaed's attention fuses the projections (self-attention ``qkv``: 3D × D; cross-attention ``kv``: 2D × D) and
keeps the query/value biases apart from the weight when a model has no key bias (``qv_bias``, ``v_bias``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fastaed.formats.ctranslate2 import read_model_bin
from fastaed.model import EncoderDecoderModel, whisper_config, whisper_sinusoids
from fastaed.model.config import ModelConfig
from fastaed.util.files import one_line


class WhisperImportError(ValueError):
    """A source that is not a Whisper checkpoint this importer understands (the message names the file)."""


@dataclass(frozen=True)
class WhisperDims:
    """OpenAI's ``ModelDimensions``."""

    n_mels: int
    n_vocab: int
    n_audio_ctx: int
    n_audio_state: int
    n_audio_head: int
    n_audio_layer: int
    n_text_ctx: int
    n_text_state: int
    n_text_head: int
    n_text_layer: int

    def model_config(self, name: str) -> ModelConfig:
        if self.n_audio_state != self.n_text_state or self.n_audio_head != self.n_text_head:
            raise WhisperImportError(
                f"encoder and decoder widths/heads differ ({self}); not a Whisper layout"
            )
        return whisper_config(
            n_mels=self.n_mels,
            d_model=self.n_audio_state,
            n_heads=self.n_audio_head,
            encoder_layers=self.n_audio_layer,
            decoder_layers=self.n_text_layer,
            vocab_size=self.n_vocab,
            audio_positions=self.n_audio_ctx,
            text_positions=self.n_text_ctx,
            name=name,
        )

    @classmethod
    def of(cls, config: ModelConfig) -> WhisperDims:
        e, d = config.encoder, config.decoder
        return cls(
            e.n_mels,
            config.vocab_size,
            e.max_positions,
            e.d_model,
            e.n_heads,
            e.n_layers,
            d.max_len,
            d.d_model,
            d.n_heads,
            d.n_layers,
        )


Canonical = dict[str, torch.Tensor]

# ---- canonical (OpenAI) <-> fastaed ---------------------------------------------------------------------

_PLAIN = {  # per-block modules whose tensors map one to one: canonical suffix -> fastaed suffix
    "attn_ln": "attn_norm",
    "mlp_ln": "ff_norm",
    "mlp.0": "ff.0",
    "mlp.2": "ff.2",
    "attn.out": "attn.out",
}
_DEC_PLAIN = {
    "attn_ln": "self_norm",
    "cross_attn_ln": "cross_norm",
    "mlp_ln": "ff_norm",
    "mlp.0": "ff.0",
    "mlp.2": "ff.2",
    "attn.out": "self_attn.out",
    "cross_attn.out": "cross_attn.out",
    "cross_attn.query": "cross_attn.q",
}


def canonical_to_fastaed(dims: WhisperDims, src: Canonical, name: str) -> EncoderDecoderModel:
    """A fastaed model holding the canonical weights ``src`` (float32)."""
    config = dims.model_config(name)
    state: dict[str, torch.Tensor] = {}

    def take(key: str) -> torch.Tensor:
        if key not in src:
            raise WhisperImportError(f"missing tensor {key!r}")
        return src[key].float()

    for part in ("conv1", "conv2"):
        for p in ("weight", "bias"):
            state[f"encoder.{part}.{p}"] = take(f"encoder.{part}.{p}")
    for i in range(dims.n_audio_layer):
        c, f = f"encoder.blocks.{i}", f"encoder.layers.{i}"
        _plain(state, take, c, f, _PLAIN)
        _self_attention(state, take, f"{c}.attn", f"{f}.attn")
    _norm(state, take, "encoder.ln_post", "encoder.final_norm")
    state["encoder.positions"] = take("encoder.positional_embedding")
    state["decoder.embedding.weight"] = take("decoder.token_embedding.weight")
    state["decoder.positions.weight"] = take("decoder.positional_embedding")
    for i in range(dims.n_text_layer):
        c, f = f"decoder.blocks.{i}", f"decoder.layers.{i}"
        _plain(state, take, c, f, _DEC_PLAIN)
        _self_attention(state, take, f"{c}.attn", f"{f}.self_attn")
        state[f"{f}.cross_attn.kv.weight"] = torch.cat(
            [take(f"{c}.cross_attn.key.weight"), take(f"{c}.cross_attn.value.weight")]
        )
        state[f"{f}.cross_attn.v_bias"] = take(f"{c}.cross_attn.value.bias")
    _norm(state, take, "decoder.ln", "decoder.final_norm")
    with torch.device("meta"):
        model = EncoderDecoderModel(config)
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


def fastaed_to_canonical(model: EncoderDecoderModel) -> tuple[WhisperDims, Canonical]:
    """The inverse of :func:`canonical_to_fastaed` (for exporters)."""
    if model.config.encoder.kind != "whisper":
        raise ValueError(
            f"{model.config.name} is not a Whisper model (encoder kind {model.config.encoder.kind})"
        )
    dims = WhisperDims.of(model.config)
    st = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    out: Canonical = {}
    d = dims.n_audio_state
    for part in ("conv1", "conv2"):
        for p in ("weight", "bias"):
            out[f"encoder.{part}.{p}"] = st[f"encoder.{part}.{p}"]
    for i in range(dims.n_audio_layer):
        c, f = f"encoder.blocks.{i}", f"encoder.layers.{i}"
        for cs, fs in _PLAIN.items():
            for p in ("weight", "bias"):
                out[f"{c}.{cs}.{p}"] = st[f"{f}.{fs}.{p}"]
        _split_self_attention(out, st, f"{c}.attn", f"{f}.attn", d)
    for p in ("weight", "bias"):
        out[f"encoder.ln_post.{p}"] = st[f"encoder.final_norm.{p}"]
    out["encoder.positional_embedding"] = st["encoder.positions"]
    out["decoder.token_embedding.weight"] = st["decoder.embedding.weight"]
    out["decoder.positional_embedding"] = st["decoder.positions.weight"]
    for i in range(dims.n_text_layer):
        c, f = f"decoder.blocks.{i}", f"decoder.layers.{i}"
        for cs, fs in _DEC_PLAIN.items():
            for p in ("weight", "bias"):
                out[f"{c}.{cs}.{p}"] = st[f"{f}.{fs}.{p}"]
        _split_self_attention(out, st, f"{c}.attn", f"{f}.self_attn", d)
        k, v = st[f"{f}.cross_attn.kv.weight"].split(d)
        out[f"{c}.cross_attn.key.weight"], out[f"{c}.cross_attn.value.weight"] = k, v
        out[f"{c}.cross_attn.value.bias"] = st[f"{f}.cross_attn.v_bias"]
    for p in ("weight", "bias"):
        out[f"decoder.ln.{p}"] = st[f"decoder.final_norm.{p}"]
    return dims, out


def _plain(state, take, c: str, f: str, names: dict[str, str]) -> None:
    for cs, fs in names.items():
        for p in ("weight", "bias"):
            state[f"{f}.{fs}.{p}"] = take(f"{c}.{cs}.{p}")


def _norm(state, take, c: str, f: str) -> None:
    for p in ("weight", "bias"):
        state[f"{f}.{p}"] = take(f"{c}.{p}")


def _self_attention(state, take, c: str, f: str) -> None:
    state[f"{f}.qkv.weight"] = torch.cat([take(f"{c}.{n}.weight") for n in ("query", "key", "value")])
    state[f"{f}.qv_bias"] = torch.cat([take(f"{c}.query.bias"), take(f"{c}.value.bias")])
    state[f"{f}.out.weight"] = take(f"{c}.out.weight")
    state[f"{f}.out.bias"] = take(f"{c}.out.bias")


def _split_self_attention(out: Canonical, st: dict, c: str, f: str, d: int) -> None:
    q, k, v = st[f"{f}.qkv.weight"].split(d)
    qb, vb = st[f"{f}.qv_bias"].split(d)
    out[f"{c}.query.weight"], out[f"{c}.key.weight"], out[f"{c}.value.weight"] = q, k, v
    out[f"{c}.query.bias"], out[f"{c}.value.bias"] = qb, vb
    out[f"{c}.out.weight"], out[f"{c}.out.bias"] = st[f"{f}.out.weight"], st[f"{f}.out.bias"]


# ---- readers -------------------------------------------------------------------------------------------


def read_ctranslate2(folder: Path) -> tuple[WhisperDims, Canonical, dict[str, Any]]:
    """A CTranslate2 Whisper folder (``model.bin``, ``config.json``) -> dims, canonical weights, config."""
    ct = read_model_bin(folder / "model.bin")
    if ct.spec != "WhisperSpec":
        raise WhisperImportError(f"{folder / 'model.bin'}: a {ct.spec}, not a WhisperSpec")
    config = json.loads((folder / "config.json").read_text()) if (folder / "config.json").is_file() else {}
    if ct.options.get("decoder/activation", 3) != 3 or not ct.options.get("decoder/pre_norm", 1):
        raise WhisperImportError(
            f"{folder / 'model.bin'}: not Whisper's GELU pre-norm decoder ({ct.options})"
        )
    out: Canonical = {}

    def layers(prefix: str) -> int:
        found = {int(m.group(1)) for n in ct.tensors if (m := re.match(rf"{prefix}/layer_(\d+)/", n))}
        if found != set(range(len(found))):
            raise WhisperImportError(
                f"{folder / 'model.bin'}: {prefix} layers {sorted(found)} are not 0..N-1"
            )
        return len(found)

    n_enc, n_dec = layers("encoder"), layers("decoder")

    def lin(src: str, dst: str) -> None:
        out[f"{dst}.weight"] = ct.get(f"{src}/weight")
        if f"{src}/bias" in ct.tensors:
            out[f"{dst}.bias"] = ct.get(f"{src}/bias")

    def norm(src: str, dst: str) -> None:
        out[f"{dst}.weight"], out[f"{dst}.bias"] = ct.get(f"{src}/gamma"), ct.get(f"{src}/beta")

    def fused_self(src: str, dst: str) -> None:
        w, b = ct.get(f"{src}/linear_0/weight"), ct.get(f"{src}/linear_0/bias")
        for name, wi, bi in zip(("query", "key", "value"), w.chunk(3), b.chunk(3), strict=True):
            out[f"{dst}.{name}.weight"] = wi
            if name != "key":
                out[f"{dst}.{name}.bias"] = bi
        lin(f"{src}/linear_1", f"{dst}.out")

    for part in ("conv1", "conv2"):
        lin(f"encoder/{part}", f"encoder.{part}")
    for i in range(n_enc):
        s, d = f"encoder/layer_{i}", f"encoder.blocks.{i}"
        norm(f"{s}/self_attention/layer_norm", f"{d}.attn_ln")
        fused_self(f"{s}/self_attention", f"{d}.attn")
        norm(f"{s}/ffn/layer_norm", f"{d}.mlp_ln")
        lin(f"{s}/ffn/linear_0", f"{d}.mlp.0")
        lin(f"{s}/ffn/linear_1", f"{d}.mlp.2")
    norm("encoder/layer_norm", "encoder.ln_post")
    out["encoder.positional_embedding"] = ct.get("encoder/position_encodings/encodings")
    out["decoder.token_embedding.weight"] = ct.get("decoder/embeddings/weight")
    out["decoder.positional_embedding"] = ct.get("decoder/position_encodings/encodings")
    for i in range(n_dec):
        s, d = f"decoder/layer_{i}", f"decoder.blocks.{i}"
        norm(f"{s}/self_attention/layer_norm", f"{d}.attn_ln")
        fused_self(f"{s}/self_attention", f"{d}.attn")
        norm(f"{s}/attention/layer_norm", f"{d}.cross_attn_ln")
        lin(f"{s}/attention/linear_0", f"{d}.cross_attn.query")
        kw, kb = ct.get(f"{s}/attention/linear_1/weight"), ct.get(f"{s}/attention/linear_1/bias")
        out[f"{d}.cross_attn.key.weight"], out[f"{d}.cross_attn.value.weight"] = kw.chunk(2)
        out[f"{d}.cross_attn.value.bias"] = kb.chunk(2)[1]
        lin(f"{s}/attention/linear_2", f"{d}.cross_attn.out")
        norm(f"{s}/ffn/layer_norm", f"{d}.mlp_ln")
        lin(f"{s}/ffn/linear_0", f"{d}.mlp.0")
        lin(f"{s}/ffn/linear_1", f"{d}.mlp.2")
    norm("decoder/layer_norm", "decoder.ln")
    conv1 = out["encoder.conv1.weight"]
    emb = out["decoder.token_embedding.weight"]
    dims = WhisperDims(
        n_mels=conv1.shape[1],
        n_vocab=emb.shape[0],
        n_audio_ctx=out["encoder.positional_embedding"].shape[0],
        n_audio_state=conv1.shape[0],
        n_audio_head=int(ct.options["encoder/num_heads"]),
        n_audio_layer=n_enc,
        n_text_ctx=out["decoder.positional_embedding"].shape[0],
        n_text_state=emb.shape[1],
        n_text_head=int(ct.options["decoder/num_heads"]),
        n_text_layer=n_dec,
    )
    return dims, out, config


def read_openai(path: Path) -> tuple[WhisperDims, Canonical]:
    """An OpenAI checkpoint (``torch.save`` of ``{"dims": {...}, "model_state_dict": {...}}``)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a pickle with code in it, a truncated zip, not a torch file at all
        raise WhisperImportError(
            f"{path}: not a loadable OpenAI Whisper checkpoint ({one_line(e)})"
        ) from None
    if not isinstance(ckpt, dict) or "dims" not in ckpt or "model_state_dict" not in ckpt:
        raise WhisperImportError(f"{path}: expected a dict with 'dims' and 'model_state_dict'")
    try:
        dims = WhisperDims(**{k: int(v) for k, v in ckpt["dims"].items()})
    except TypeError as e:
        raise WhisperImportError(f"{path}: unexpected dims {ckpt['dims']} ({e})") from None
    state = dict(ckpt["model_state_dict"])
    state.setdefault("encoder.positional_embedding", whisper_sinusoids(dims.n_audio_ctx, dims.n_audio_state))
    return dims, state


def check_encoder_positions(dims: WhisperDims, state: Canonical, where: str) -> None:
    """fastaed computes Whisper's encoder sinusoids; a file whose stored table differs would be imported
    wrongly, so it is an error, not a silent change."""
    stored = state.get("encoder.positional_embedding")
    if stored is None:
        return
    ours = whisper_sinusoids(dims.n_audio_ctx, dims.n_audio_state)
    if stored.shape != ours.shape or float((stored.float() - ours).abs().max()) > 1e-2:
        raise WhisperImportError(f"{where}: encoder positions differ from Whisper's sinusoids")
