"""NeMo ``.nemo`` Canary checkpoints in and out: ``fastaed import nemo`` and ``fastaed export nemo``.

A ``.nemo`` file is a tar of ``model_config.yaml`` (the model's config), ``model_weights.ckpt`` (a
``torch.save``d state dict) and the tokenizer files the config names as ``nemo:<file>``. Importing one that
holds an ``EncDecMultiTaskModel`` (FastConformer encoder + Transformer decoder: the Canary family) writes an
ordinary fastaed checkpoint:

* the weights, renamed by ``fastaed.formats.nemo_state``, under a :class:`ModelConfig` whose options say
  where NeMo's modules differ from fastaed's defaults (``xscaling``, decoder positions divided by sqrt(D));
* the exact front end as the checkpoint's ``frontend`` entry (``{"kind": "nemo", ...FeatureConfig}``: NeMo's
  frame count, and the window and filterbank when the stored ones differ from the computed ones);
* the aggregate tokenizer with its prompt format in ``tokenizer/`` (:mod:`fastaed.data.canary_tokenizer`);
* NeMo's greedy length rule (``max_generation_delta``) under ``extra.generation``, so ``fastaed transcribe``
  stops where NeMo's ``transcribe()`` would, and the original config under ``extra.nemo`` for the export.

Anything NeMo can express that fastaed's modules cannot (an intermediate Transformer encoder, other
subsampling, attention context limits, ...) is refused with the config key to blame, never approximated.
Export writes the inverse: a ``.nemo`` that ``EncDecMultiTaskModel.restore_from`` loads.
"""

from __future__ import annotations

import copy
import io
import lzma
import math
import os
import re
import tarfile
import time
import uuid
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import yaml

from fastaed.data.canary_tokenizer import SPECIAL_PART, CanaryTokenizer
from fastaed.data.features import FeatureConfig, mel_filterbank
from fastaed.data.frontend import frontend_config, frontend_dict
from fastaed.formats.native import (
    CHECKPOINT_KIND,
    TOKENIZER_DIR,
    CheckpointError,
    is_checkpoint_folder,
    load_model,
    read_checkpoint_meta,
    save_model,
    verify_tokenizer,
)
from fastaed.formats.nemo_state import from_nemo, to_nemo
from fastaed.model import EncoderDecoderModel
from fastaed.model.config import DecoderConfig, EncoderConfig, ModelConfig
from fastaed.util.files import one_line
from fastaed.util.outputs import FileKind, building_dir, check_output_dir, check_output_file, replacing_file

NEMO_TAG = "fastaed.export"  # a pax header naming fastaed's own .nemo files (so a re-export may replace one)
NEMO_KIND = FileKind(".nemo exported by fastaed", lambda p: _exported_by_fastaed(p))

CONFIG_NAME = "model_config.yaml"
WEIGHTS_NAME = "model_weights.ckpt"
MODEL_TARGET = "nemo.collections.asr.models.aed_multitask_models.EncDecMultiTaskModel"
_TOKENIZER_FILES = {
    "model_path": "tokenizer.model",
    "vocab_path": "vocab.txt",
    "spe_tokenizer_vocab": "tokenizer.vocab",
}
TABLE_TOLERANCE = 1e-6  # a stored table this close to the computed one is the computed one


class NemoFormatError(CheckpointError):
    """A ``.nemo`` file that is not a Canary AED checkpoint fastaed can represent exactly."""


@dataclass
class NemoArchive:
    """The parts of a ``.nemo`` file: its config, its state dict and the other files by name."""

    path: Path
    config: dict[str, Any]
    state: dict[str, torch.Tensor]
    files: dict[str, bytes]

    def file(self, ref: str, key: str) -> bytes:
        name = ref.removeprefix("nemo:")
        if name not in self.files:
            raise NemoFormatError(f"{self.path}: {key} names {ref!r}, which the archive does not hold")
        return self.files[name]


def read_nemo(path: str | os.PathLike[str]) -> NemoArchive:
    """Open a ``.nemo`` file (plain or compressed tar); member names lose any leading ``./``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such .nemo file")
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar.getmembers():
                if member.isfile():
                    files[Path(member.name).name] = tar.extractfile(member).read()  # type: ignore[union-attr]
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError) as e:  # truncated or corrupt
        raise NemoFormatError(f"{path}: not a .nemo archive ({one_line(e)})") from None
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if name not in files:
            raise NemoFormatError(f"{path}: archive has no {name}")
    try:
        raw_config = yaml.safe_load(files.pop(CONFIG_NAME))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise NemoFormatError(f"{path}: {CONFIG_NAME} is not valid YAML ({one_line(e)})") from None
    if not isinstance(raw_config, dict):
        raise NemoFormatError(f"{path}: {CONFIG_NAME} is not a mapping")
    config = _resolve(raw_config, path)
    try:
        state = torch.load(io.BytesIO(files.pop(WEIGHTS_NAME)), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several kinds for a damaged or foreign pickle
        raise NemoFormatError(f"{path}: unreadable {WEIGHTS_NAME} ({one_line(e)})") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(t, torch.Tensor) for t in state.values()):
        raise NemoFormatError(f"{path}: {WEIGHTS_NAME} is not a state dict of tensors")
    return NemoArchive(path, config, state, files)


_REF = re.compile(r"\$\{([^}]+)\}")


def _resolve(cfg: dict[str, Any], path: Path) -> dict[str, Any]:
    """Resolve OmegaConf ``${a.b}`` references (relative to the root, or to ``model.``) that a saved config
    may still hold; any other interpolation is an error."""

    def lookup(ref: str) -> Any:
        for root in (cfg, cfg.get("model", {})):
            node: Any = root
            for key in ref.split("."):
                node = node.get(key) if isinstance(node, dict) else None
            if node is not None:
                return node
        raise NemoFormatError(f"{path}: {CONFIG_NAME} has an unresolvable reference ${{{ref}}}")

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        if isinstance(node, str) and (m := _REF.fullmatch(node)):
            if ":" in m.group(1):
                raise NemoFormatError(f"{path}: {CONFIG_NAME} has an unsupported resolver {node!r}")
            return walk(lookup(m.group(1)))
        return node

    return walk(cfg)


# ---- config mapping -----------------------------------------------------------------------------------


def _require(cfg: dict[str, Any], key: str, allowed: tuple[Any, ...], where: str, default: Any = None) -> Any:
    value = cfg.get(key, default)
    if value not in allowed:
        raise NemoFormatError(
            f"{where}.{key} = {value!r} is not supported (fastaed represents {', '.join(map(repr, allowed))})"
        )
    return value


def model_config(cfg: dict[str, Any], state: dict[str, torch.Tensor], name: str) -> ModelConfig:
    """The :class:`ModelConfig` of a Canary config; refuses what fastaed cannot represent exactly."""
    target = cfg.get("target", MODEL_TARGET)
    if not str(target).endswith("EncDecMultiTaskModel"):
        raise NemoFormatError(f"target = {target!r}: only EncDecMultiTaskModel (Canary AED) is supported")
    e = cfg["encoder"]
    w = "encoder"
    _require(e, "_target_", ("nemo.collections.asr.modules.ConformerEncoder",), w)
    _require(e, "subsampling", ("dw_striding",), w, "striding")
    _require(e, "self_attention_model", ("rel_pos",), w, "rel_pos")
    _require(e, "untie_biases", (True,), w, True)
    _require(e, "causal_downsampling", (False,), w, False)
    _require(e, "conv_norm_type", ("batch_norm",), w, "batch_norm")
    _require(e, "use_bias", (True,), w, True)
    _require(e, "reduction", (None,), w)
    _require(e, "global_tokens", (0,), w, 0)
    _require(e, "conv_context_size", (None, [(e.get("conv_kernel_size", 31) - 1) // 2] * 2), w)
    if e.get("feat_out", -1) not in (-1, e["d_model"]):
        raise NemoFormatError(f"encoder.feat_out = {e['feat_out']}: an output projection is not supported")
    if e.get("att_context_size") not in (None, [-1, -1]):
        raise NemoFormatError(f"encoder.att_context_size = {e['att_context_size']}: only full context")
    if (cfg.get("transf_encoder") or {}).get("num_layers", 0) > 0:
        raise NemoFormatError(
            "transf_encoder.num_layers > 0: an intermediate Transformer encoder is not supported"
        )
    channels = e.get("subsampling_conv_channels", -1)
    encoder = EncoderConfig(
        n_mels=e["feat_in"], d_model=e["d_model"], n_layers=e["n_layers"], n_heads=e.get("n_heads", 4),
        ff_expansion=_ratio(e.get("ff_expansion_factor", 4), "encoder.ff_expansion_factor"),
        conv_kernel=e.get("conv_kernel_size", 31), subsampling_factor=e.get("subsampling_factor", 4),
        subsampling_channels=e["d_model"] if channels == -1 else channels, dropout=e.get("dropout", 0.1),
        dropout_att=e.get("dropout_att", 0.0), xscaling=bool(e.get("xscaling", True)),
    )  # fmt: skip
    d = cfg["transf_decoder"].get("config_dict", cfg["transf_decoder"])
    w = "transf_decoder.config_dict"
    _require(d, "pre_ln", (True,), w, False)
    _require(cfg["transf_decoder"], "pre_ln_final_layer_norm", (True,), "transf_decoder", True)
    hidden = d["hidden_size"]
    head = cfg.get("head", {})
    _require(head, "num_layers", (1,), "head", 1)
    emb = "transf_decoder._embedding"
    vocab = state[f"{emb}.token_embedding.weight"].shape[0]
    tied = torch.equal(state["log_softmax.mlp.layer0.weight"], state[f"{emb}.token_embedding.weight"])
    if not tied:
        raise NemoFormatError("log_softmax.mlp.layer0.weight differs from the token embedding (not tied)")
    max_len = d.get("max_sequence_length", 512)
    positions = _positions(state, hidden, max_len, bool(d.get("learn_positional_encodings", False)))
    decoder = DecoderConfig(
        d_model=hidden, n_layers=d["num_layers"], n_heads=d["num_attention_heads"],
        ff_expansion=_ratio(d["inner_size"] / hidden, f"{w}.inner_size / hidden_size"), max_len=max_len,
        dropout=d.get("ffn_dropout", 0.0), dropout_att=d.get("attn_score_dropout", 0.0),
        activation=_require(d, "hidden_act", ("relu", "gelu"), w, "relu"),
        positions="learned" if positions is not None else "sinusoidal", scaled_positions=positions is None,
    )  # fmt: skip
    return ModelConfig(encoder=encoder, decoder=decoder, vocab_size=vocab, name=name)


def _ratio(value: float, key: str) -> int:
    if value != int(value) or value < 1:
        raise NemoFormatError(f"{key} = {value}: fastaed needs a whole multiple of the width")
    return int(value)


def _positions(
    state: dict[str, torch.Tensor], hidden: int, max_len: int, learned: bool
) -> torch.Tensor | None:
    """None when the decoder's position table is NeMo's fixed sinusoid / sqrt(D) (fastaed computes it),
    else the stored table (kept as a learned one: a fine-tuned or altered table is not the formula)."""
    name = "transf_decoder._embedding.position_embedding." + ("weight" if learned else "pos_enc")
    table = state[name]
    if learned:
        return table
    pos = torch.arange(max_len, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, hidden, 2, dtype=torch.float32) * (-math.log(10000.0) / hidden))
    formula = torch.stack(((pos * div).sin(), (pos * div).cos()), dim=-1).flatten(1) / math.sqrt(hidden)
    same = table.shape == formula.shape and float((table - formula).abs().max()) <= TABLE_TOLERANCE
    return None if same else table


def feature_config(cfg: dict[str, Any], state: dict[str, torch.Tensor]) -> FeatureConfig:
    """NeMo's ``AudioToMelSpectrogramPreprocessor`` as a :class:`FeatureConfig` (NeMo's frame count; the
    stored window and filterbank when they differ from the computed ones)."""
    p, w = cfg["preprocessor"], "preprocessor"
    _require(p, "_target_", ("nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor",), w)
    _require(p, "log", (True,), w, True)
    _require(p, "log_zero_guard_type", ("add",), w, "add")
    _require(p, "mag_power", (2.0, 2), w, 2.0)
    _require(p, "frame_splicing", (1,), w, 1)
    _require(p, "exact_pad", (False,), w, False)
    _require(p, "pad_value", (0, 0.0), w, 0)
    _require(p, "use_torchaudio", (False,), w, False)
    normalize = _require(p, "normalize", ("per_feature", None, "none", False), w, "per_feature")
    guard = p.get("log_zero_guard_value", 2**-24)
    if not isinstance(guard, int | float):
        raise NemoFormatError(f"preprocessor.log_zero_guard_value = {guard!r}: only a number is supported")
    sr = p.get("sample_rate", 16000)
    win = p.get("n_window_size") or int(p.get("window_size", 0.02) * sr)
    hop = p.get("n_window_stride") or int(p.get("window_stride", 0.01) * sr)
    preemph = p.get("preemph", 0.97)
    fc = FeatureConfig(
        sample_rate=sr, n_fft=p.get("n_fft") or 2 ** math.ceil(math.log2(win)), win_length=win,
        hop_length=hop,
        n_mels=p.get("features", 64), preemphasis=0.0 if preemph is None else float(preemph),
        dither=float(p.get("dither", 1e-5)), log_guard=float(guard),
        normalize="per_feature" if normalize == "per_feature" else "none", f_min=float(p.get("lowfreq", 0)),
        f_max=None if p.get("highfreq") is None else float(p["highfreq"]), valid_frames="nemo",
    )  # fmt: skip
    window = state.get("preprocessor.featurizer.window")
    if window is None:
        _require(p, "window", ("hann",), w, "hann")
    elif not _close(window, torch.hann_window(win, periodic=False)):
        fc = replace(fc, window=tuple(window.float().tolist()))
    fb = state.get("preprocessor.featurizer.fb")
    if fb is None:
        _require(p, "mel_norm", ("slaney",), w, "slaney")
    elif not _close(fb[0], mel_filterbank(fc)):
        fc = replace(fc, filterbank=tuple(map(tuple, fb[0].float().tolist())))
    return fc


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and float((a.float() - b).abs().max()) <= TABLE_TOLERANCE * max(
        1.0, float(b.abs().max())
    )


def tokenizer(archive: NemoArchive) -> CanaryTokenizer:
    """The aggregate tokenizer: the config's ``tokenizer.langs`` in order, each a SentencePiece model."""
    t = archive.config.get("tokenizer", {})
    if t.get("type") != "agg" or SPECIAL_PART not in t.get("langs", {}):
        raise NemoFormatError(f"{archive.path}: tokenizer must be type 'agg' with a {SPECIAL_PART} part")
    parts = []
    for name, part in t["langs"].items():
        if part.get("type", "bpe") != "bpe" or "model_path" not in part:
            raise NemoFormatError(f"tokenizer.langs.{name}: only SentencePiece (bpe) parts are supported")
        parts.append((name, archive.file(part["model_path"], f"tokenizer.langs.{name}.model_path")))
    fmt = archive.config.get("prompt_format")
    if fmt not in ("canary", "canary2"):
        raise NemoFormatError(f"prompt_format = {fmt!r}: only 'canary' and 'canary2' are supported")
    return CanaryTokenizer(parts, fmt)


def generation_rule(cfg: dict[str, Any]) -> dict[str, Any]:
    """NeMo's greedy length rule: at most ``min(max_sequence_length, T' + delta) - prompt`` new tokens, T' the
    batch's padded encoder length, or ``max_sequence_length - prompt`` when ``delta < 0``."""
    decoding = cfg.get("decoding") or {}
    delta = (decoding.get("greedy") or {}).get("max_generation_delta", -1)
    return {"rule": "nemo", "max_generation_delta": int(delta)}


# ---- import / export ----------------------------------------------------------------------------------


def import_nemo(
    source: str | os.PathLike[str], out_dir: str | os.PathLike[str], name: str | None = None
) -> Path:
    """Convert a Canary ``.nemo`` into a fastaed checkpoint folder (with ``tokenizer/``), built beside
    ``out_dir`` and renamed in (a folder fastaed did not write is refused); returns it."""
    check_output_dir(out_dir, CHECKPOINT_KIND, legacy=is_checkpoint_folder)  # before any reading
    archive = read_nemo(source)
    try:
        model, tok, features, extra = _convert(archive, name or Path(source).stem)
    except NemoFormatError as e:
        raise e if str(archive.path) in str(e) else NemoFormatError(f"{archive.path}: {e}") from None
    except (KeyError, ValueError, TypeError, AttributeError, IndexError, RuntimeError) as e:
        # a key the config lacks, a tensor of the wrong shape, a tokenizer model SentencePiece cannot load
        raise NemoFormatError(
            f"{archive.path}: not a Canary checkpoint fastaed can read ({one_line(e)})"
        ) from None
    with building_dir(out_dir, CHECKPOINT_KIND, "import nemo", legacy=is_checkpoint_folder) as tmp:
        save_model(model, tmp, tokenizer=tok, extra=extra, frontend=frontend_dict(features))
    return Path(out_dir)


def _convert(
    archive: NemoArchive, name: str
) -> tuple[EncoderDecoderModel, CanaryTokenizer, FeatureConfig, dict[str, Any]]:
    """The fastaed model, tokenizer, front end and checkpoint metadata of a ``.nemo``'s contents."""
    cfg = archive.config
    config = model_config(cfg, archive.state, name)
    tok = tokenizer(archive)
    if tok.model_vocab_size != config.vocab_size:
        raise NemoFormatError(
            f"{archive.path}: the decoder has {config.vocab_size} outputs, the tokenizer {tok.vocab_size} "
            "ids "
            f"(padded: {tok.model_vocab_size})"
        )
    with torch.device("meta"):
        model = EncoderDecoderModel(config)
    nemo_state = dict(archive.state)
    emb = "transf_decoder._embedding.position_embedding"
    if f"{emb}.weight" in nemo_state:  # learn_positional_encodings: the table is a weight, not a buffer
        nemo_state[f"{emb}.pos_enc"] = nemo_state.pop(f"{emb}.weight")
    state = from_nemo(nemo_state, config)
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as e:
        raise NemoFormatError(f"{archive.path}: weights do not fit the config ({e})") from None
    features = feature_config(cfg, archive.state)
    extra = {
        "source": {"format": "nemo", "path": str(archive.path), "nemo_version": cfg.get("nemo_version")},
        "generation": generation_rule(cfg),
        "nemo": {"config": cfg},
    }
    return model.eval(), tok, features, extra


def export_nemo(checkpoint: str | os.PathLike[str], out_path: str | os.PathLike[str]) -> Path:
    """Write a fastaed checkpoint with a Canary tokenizer as a ``.nemo`` that NeMo restores (written beside
    ``out_path`` and moved in; an existing file is replaced only when fastaed exported it)."""
    ckpt = Path(checkpoint)
    out = Path(out_path)
    check_output_file(out, NEMO_KIND)
    meta = read_checkpoint_meta(ckpt)
    tok_dir = ckpt / TOKENIZER_DIR
    if not (tok_dir / "tokenizer.json").is_file():
        raise CheckpointError(f"{ckpt}: no tokenizer/ folder (export needs the checkpoint's own tokenizer)")
    verify_tokenizer(ckpt)
    from fastaed.data.tokenizer import load_tokenizer

    tok = load_tokenizer(tok_dir)
    if not isinstance(tok, CanaryTokenizer):
        raise NemoFormatError(
            f"{ckpt}: its tokenizer is not a Canary aggregate tokenizer; only checkpoints imported from NeMo "
            "(and fine-tuned) can be exported"
        )
    model = load_model(ckpt)
    config = model.config
    _check_exportable(config)
    features = frontend_config(meta.get("frontend"))
    if not isinstance(features, FeatureConfig):
        raise NemoFormatError(f"{ckpt}: its front end is not NeMo's log-mel")
    state = to_nemo(model.state_dict(), config)
    _add_nemo_only_tensors(state, model, features)
    files = {}
    cfg = copy.deepcopy((meta.get("extra") or {}).get("nemo", {}).get("config")) or {}
    cfg = _nemo_config(cfg, config, features, tok)
    for name, proto in tok.parts:
        # NeMo restores each part from three files: the model, its piece list and its scored vocabulary.
        sp = tok.models[name]
        pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
        refs = {key: f"{uuid.uuid4().hex}_{suffix}" for key, suffix in _TOKENIZER_FILES.items()}
        files[refs["model_path"]] = proto
        files[refs["vocab_path"]] = ("\n".join(pieces) + "\n").encode()
        scored = (f"{p}\t{sp.get_score(i)}" for i, p in enumerate(pieces))
        files[refs["spe_tokenizer_vocab"]] = ("\n".join(scored) + "\n").encode()
        part = cfg["tokenizer"]["langs"].setdefault(name, {})
        part.update({"dir": None, "type": "bpe", **{key: f"nemo:{ref}" for key, ref in refs.items()}})
    weights = io.BytesIO()
    torch.save(state, weights)
    files[WEIGHTS_NAME] = weights.getvalue()
    files[CONFIG_NAME] = yaml.safe_dump(cfg, sort_keys=False).encode()
    with (
        replacing_file(out, NEMO_KIND) as tmp,
        tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT, pax_headers={NEMO_TAG: "nemo"}) as tar,
    ):
        for name, data in files.items():
            info = tarfile.TarInfo(f"./{name}")
            info.size, info.mtime = len(data), int(time.time())
            tar.addfile(info, io.BytesIO(data))
    return out


def _exported_by_fastaed(path: Path) -> bool:
    """Whether ``path`` is a ``.nemo`` :func:`export_nemo` wrote (its global pax header says so)."""
    try:
        with tarfile.open(path, "r:*") as tar:
            return tar.pax_headers.get(NEMO_TAG) == "nemo"
    except (OSError, tarfile.TarError):
        return False


def _check_exportable(config: ModelConfig) -> None:
    enc, dec = config.encoder, config.decoder
    problems = []
    if enc.kind != "fastconformer":
        problems.append(f"encoder kind {enc.kind!r}")
    if not dec.embed_norm:
        problems.append("no embedding LayerNorm")
    if not dec.tie_embeddings:
        problems.append("an untied output layer")
    if not (dec.key_bias and dec.output_bias):
        problems.append("attention keys or output logits without a bias")
    if problems:
        raise NemoFormatError(f"cannot be written as a NeMo Canary model: {', '.join(problems)}")


def _add_nemo_only_tensors(
    state: dict[str, torch.Tensor], model: EncoderDecoderModel, fc: FeatureConfig
) -> None:
    """What NeMo's state dict holds beyond fastaed's weights: the tied head, the front end's window and
    filterbank, the fixed position table, zero key biases / output bias where fastaed has none."""
    dec = model.config.decoder
    emb = "transf_decoder._embedding"
    state["log_softmax.mlp.layer0.weight"] = state[f"{emb}.token_embedding.weight"]
    if "log_softmax.mlp.layer0.bias" not in state or model.decoder.output_bias is None:
        state["log_softmax.mlp.layer0.bias"] = torch.zeros(model.config.vocab_size)
    if dec.positions == "sinusoidal":
        table = model.decoder.position_table(dec.max_len, torch.device("cpu")).float()
        state[f"{emb}.position_embedding.pos_enc"] = table.detach().clone()
    window = (
        torch.hann_window(fc.win_length, periodic=False) if fc.window is None else torch.tensor(fc.window)
    )
    fb = mel_filterbank(fc) if fc.filterbank is None else torch.tensor(fc.filterbank)
    state["preprocessor.featurizer.window"] = window.float()
    state["preprocessor.featurizer.fb"] = fb.float()[None]


def _nemo_config(cfg: dict[str, Any], config: ModelConfig, fc: FeatureConfig, tok: CanaryTokenizer) -> dict:
    """The original NeMo config (or a fresh one), with every field fastaed's model and front end decide."""
    enc, dec = config.encoder, config.decoder
    cfg.setdefault("sample_rate", fc.sample_rate)
    cfg["prompt_format"] = tok.prompt_format
    cfg["target"] = MODEL_TARGET
    cfg["model_defaults"] = {
        "asr_enc_hidden": enc.d_model,
        "lm_enc_hidden": dec.d_model,
        "lm_dec_hidden": dec.d_model,
    }
    cfg["tokenizer"] = {
        "dir": None, "type": "agg", "langs": {name: {} for name, _ in tok.parts},
        "custom_tokenizer": {
            "_target_": "nemo.collections.common.tokenizers.canary_tokenizer.CanaryTokenizer",
            "tokenizer": None,
        },
    }  # fmt: skip
    cfg["preprocessor"] = {
        **cfg.get("preprocessor", {}),
        "_target_": "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor",
        # Sizes in samples (exact), so the seconds-based keys must go: NeMo refuses both at once.
        "sample_rate": fc.sample_rate, "n_window_size": fc.win_length, "n_window_stride": fc.hop_length,
        "window_size": None, "window_stride": None,
        "n_fft": fc.n_fft, "features": fc.n_mels, "preemph": fc.preemphasis or None, "dither": fc.dither,
        "log": True, "log_zero_guard_type": "add", "log_zero_guard_value": fc.log_guard,
        "normalize": "per_feature" if fc.normalize == "per_feature" else None, "lowfreq": fc.f_min,
        "highfreq": fc.f_max, "frame_splicing": 1, "pad_value": 0.0, "mag_power": 2.0, "window": "hann",
    }  # fmt: skip
    cfg["encoder"] = {
        **cfg.get("encoder", {}),
        "_target_": "nemo.collections.asr.modules.ConformerEncoder", "feat_in": enc.n_mels, "feat_out": -1,
        "n_layers": enc.n_layers, "d_model": enc.d_model, "subsampling": "dw_striding",
        "subsampling_factor": enc.subsampling_factor, "subsampling_conv_channels": enc.subsampling_channels,
        "ff_expansion_factor": enc.ff_expansion, "self_attention_model": "rel_pos", "n_heads": enc.n_heads,
        "att_context_size": [-1, -1], "xscaling": enc.xscaling, "untie_biases": True,
        "conv_kernel_size": enc.conv_kernel, "conv_norm_type": "batch_norm", "causal_downsampling": False,
        "dropout": enc.dropout, "dropout_att": enc.dropout_att,
    }  # fmt: skip
    cfg.setdefault("transf_encoder", {"num_layers": 0})["num_layers"] = 0
    td = cfg.setdefault("transf_decoder", {})
    td.update({
        "_target_": "nemo.collections.asr.modules.transformer.get_nemo_transformer", "model_name": None,
        "pretrained": False, "encoder": None, "pre_ln_final_layer_norm": True,
    })  # fmt: skip
    td["config_dict"] = {
        **td.get("config_dict", {}),
        "max_sequence_length": dec.max_len, "num_token_types": 0, "hidden_size": dec.d_model,
        "inner_size": dec.ff_expansion * dec.d_model, "num_layers": dec.n_layers,
        "num_attention_heads": dec.n_heads, "hidden_act": dec.activation, "pre_ln": True,
        "learn_positional_encodings": False, "vocab_size": None, "ffn_dropout": dec.dropout,
        "attn_layer_dropout": dec.dropout, "embedding_dropout": dec.dropout,
        "attn_score_dropout": dec.dropout_att,
    }  # fmt: skip
    cfg["head"] = {
        **cfg.get("head", {}),
        "_target_": "nemo.collections.asr.parts.submodules.token_classifier.TokenClassifier", "num_layers": 1,
        "log_softmax": True, "hidden_size": dec.d_model, "num_classes": config.vocab_size,
    }  # fmt: skip
    cfg.setdefault("decoding", {"strategy": "greedy"})
    cfg.setdefault("loss", {
        "_target_": "nemo.collections.common.losses.smoothed_cross_entropy.SmoothedCrossEntropyLoss",
        "label_smoothing": 0.0, "pad_id": None,
    })  # fmt: skip
    return cfg
