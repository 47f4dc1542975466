"""Hugging Face ``WhisperForConditionalGeneration`` folders, both ways, through the canonical (OpenAI) names.

A folder holds ``config.json`` (``model_type: whisper``), ``model.safetensors`` (``model.encoder.layers.0
.self_attn.q_proj.weight``, ...; ``proj_out.weight`` is tied to the token embedding and may be absent),
optionally ``generation_config.json`` (suppression lists), ``tokenizer.json`` and
``preprocessor_config.json``.
:func:`write_hf` writes all of them so that ``transformers`` loads the model, its fast tokenizer and its
feature extractor from the folder alone.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from fastaed.data.whisper_tokenizer import WhisperTokenizer
from fastaed.formats.whisper import Canonical, WhisperDims, WhisperImportError

_HF_BLOCK = {  # canonical block suffix -> Hugging Face layer suffix
    "attn.query": "self_attn.q_proj",
    "attn.key": "self_attn.k_proj",
    "attn.value": "self_attn.v_proj",
    "attn.out": "self_attn.out_proj",
    "attn_ln": "self_attn_layer_norm",
    "cross_attn.query": "encoder_attn.q_proj",
    "cross_attn.key": "encoder_attn.k_proj",
    "cross_attn.value": "encoder_attn.v_proj",
    "cross_attn.out": "encoder_attn.out_proj",
    "cross_attn_ln": "encoder_attn_layer_norm",
    "mlp.0": "fc1",
    "mlp.2": "fc2",
    "mlp_ln": "final_layer_norm",
}
_HF_TOP = {
    "encoder.conv1": "model.encoder.conv1",
    "encoder.conv2": "model.encoder.conv2",
    "encoder.ln_post": "model.encoder.layer_norm",
    "decoder.ln": "model.decoder.layer_norm",
    "decoder.token_embedding": "model.decoder.embed_tokens",
}
_HF_TENSORS = {
    "encoder.positional_embedding": "model.encoder.embed_positions.weight",
    "decoder.positional_embedding": "model.decoder.embed_positions.weight",
}


def _canonical_to_hf_name(name: str) -> str:
    if name in _HF_TENSORS:
        return _HF_TENSORS[name]
    for c, h in _HF_TOP.items():
        if name.startswith(c + "."):
            return h + name[len(c) :]
    part, _, rest = name.partition(".blocks.")  # encoder | decoder, "3.attn.query.weight"
    index, _, suffix = rest.partition(".")
    module, _, param = suffix.rpartition(".")
    if module not in _HF_BLOCK:
        raise KeyError(name)
    return f"model.{part}.layers.{index}.{_HF_BLOCK[module]}.{param}"


def read_hf(folder: Path) -> tuple[WhisperDims, Canonical, dict[str, Any]]:
    """A Hugging Face Whisper folder -> dims, canonical weights, and its generation config (suppression)."""
    cfg_path = folder / "config.json"
    cfg = json.loads(cfg_path.read_text())
    if cfg.get("model_type") != "whisper":
        raise WhisperImportError(f"{cfg_path}: model_type {cfg.get('model_type')!r}, not 'whisper'")
    try:
        dims = WhisperDims(
            n_mels=cfg["num_mel_bins"],
            n_vocab=cfg["vocab_size"],
            n_audio_ctx=cfg["max_source_positions"],
            n_audio_state=cfg["d_model"],
            n_audio_head=cfg["encoder_attention_heads"],
            n_audio_layer=cfg["encoder_layers"],
            n_text_ctx=cfg["max_target_positions"],
            n_text_state=cfg["d_model"],
            n_text_head=cfg["decoder_attention_heads"],
            n_text_layer=cfg["decoder_layers"],
        )
    except KeyError as e:
        raise WhisperImportError(f"{cfg_path}: missing {e}") from None
    hf: dict[str, torch.Tensor] = {}
    for f in sorted(folder.glob("model*.safetensors")):
        hf.update(load_file(str(f)))
    canonical: Canonical = {}
    hf_names = {}
    for layer_kind, n in (("encoder", dims.n_audio_layer), ("decoder", dims.n_text_layer)):
        for i in range(n):
            for module in _HF_BLOCK:
                if layer_kind == "encoder" and module.startswith("cross_attn"):
                    continue
                for p in ("weight", "bias"):
                    name = f"{layer_kind}.blocks.{i}.{module}.{p}"
                    hf_names[name] = _canonical_to_hf_name(name)
    for c in _HF_TOP:
        for p in ("weight", "bias"):
            hf_names[f"{c}.{p}"] = _canonical_to_hf_name(f"{c}.{p}")
    hf_names.update({c: h for c, h in _HF_TENSORS.items()})
    for name, hf_name in hf_names.items():
        if hf_name in hf:
            canonical[name] = hf[hf_name]
    gen_path = folder / "generation_config.json"
    generation = json.loads(gen_path.read_text()) if gen_path.is_file() else {}
    return dims, canonical, generation


def write_hf(
    dims: WhisperDims, canonical: Canonical, folder: str | Path, tokenizer: WhisperTokenizer
) -> Path:
    """Write a Hugging Face Whisper folder that ``WhisperForConditionalGeneration.from_pretrained`` loads,
    with the tokenizer's ``tokenizer.json``, its suppression lists (``generation_config.json``) and a
    ``preprocessor_config.json`` for ``WhisperFeatureExtractor``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {}
    for name, tensor in canonical.items():
        if name.endswith("key.bias"):
            continue
        state[_canonical_to_hf_name(name)] = tensor.detach().float().contiguous()
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    d = dims
    eot = tokenizer.eos_id
    config = {
        "architectures": ["WhisperForConditionalGeneration"],
        "model_type": "whisper",
        "vocab_size": d.n_vocab,
        "num_mel_bins": d.n_mels,
        "d_model": d.n_audio_state,
        "encoder_layers": d.n_audio_layer,
        "encoder_attention_heads": d.n_audio_head,
        "decoder_layers": d.n_text_layer,
        "decoder_attention_heads": d.n_text_head,
        "encoder_ffn_dim": 4 * d.n_audio_state,
        "decoder_ffn_dim": 4 * d.n_text_state,
        "max_source_positions": d.n_audio_ctx,
        "max_target_positions": d.n_text_ctx,
        "activation_function": "gelu",
        "scale_embedding": False,
        "tie_word_embeddings": True,
        "dropout": 0.0,
        "attention_dropout": 0.0,
        "activation_dropout": 0.0,
        "torch_dtype": "float32",
        "pad_token_id": eot,
        "eos_token_id": eot,
        "bos_token_id": eot,
    }
    config["decoder_start_token_id"] = tokenizer.sot_id
    generation = {
        "decoder_start_token_id": tokenizer.sot_id,
        "eos_token_id": eot,
        "pad_token_id": eot,
        "bos_token_id": eot,
        "no_timestamps_token_id": tokenizer.no_timestamps_id,
        "suppress_tokens": list(tokenizer.suppress_ids),
        "begin_suppress_tokens": list(tokenizer.suppress_at_start_ids),
        "max_length": d.n_text_ctx,
        "is_multilingual": tokenizer.multilingual,
    }
    (folder / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    tokenizer.save(folder / "fastaed_tokenizer")
    (folder / "tokenizer.json").write_text((folder / "fastaed_tokenizer" / "tokenizer.json").read_text())
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    preprocessor = {
        "feature_extractor_type": "WhisperFeatureExtractor",
        "feature_size": d.n_mels,
        "sampling_rate": 16000,
        "hop_length": 160,
        "chunk_length": 30,
        "n_fft": 400,
        "n_samples": 480000,
        "nb_max_frames": 3000,
        "padding_side": "right",
        "padding_value": 0.0,
        "return_attention_mask": False,
        "processor_class": "WhisperProcessor",
    }
    (folder / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2) + "\n")
    (folder / "fastaed_dims.json").write_text(json.dumps(asdict(dims)) + "\n")
    return folder
