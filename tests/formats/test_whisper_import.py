"""Whisper checkpoints in three formats become the same fastaed model: OpenAI .pt and Hugging Face folders
round-trip exactly, CTranslate2 model.bin (float32, float16, int8) is read as written, bad files are named,
and an imported checkpoint transcribes with no extra flags."""

from __future__ import annotations

import json
import struct
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from fastaed.decode.transcribe import DecodeConfig, Transcriber, utterances_from_audio
from fastaed.formats import load_model, read_checkpoint_meta
from fastaed.formats.ctranslate2 import CTranslate2FormatError, read_model_bin
from fastaed.formats.whisper import WhisperImportError, fastaed_to_canonical, read_ctranslate2
from fastaed.formats.whisper_import import export_hf, import_whisper
from tests import whisper_fixtures as wf

_CODES = {
    np.dtype(np.float32): 0,
    np.dtype(np.int8): 1,
    np.dtype(np.int16): 2,
    np.dtype(np.int32): 3,
    np.dtype(np.float16): 4,
}


def write_model_bin(path: Path, tensors: dict[str, np.ndarray], aliases: dict[str, str]) -> None:
    """CTranslate2's layout (version 6), written independently of the reader under test."""

    def string(s: str) -> bytes:
        b = s.encode() + b"\0"
        return struct.pack("<H", len(b)) + b

    out = [struct.pack("<I", 6), string("WhisperSpec"), struct.pack("<I", 3), struct.pack("<I", len(tensors))]
    for name, array in tensors.items():
        array = np.asarray(array)  # (ascontiguousarray would make scalars 1-D)
        out += [string(name), struct.pack("<B", array.ndim), *(struct.pack("<I", d) for d in array.shape)]
        raw = array.tobytes()
        out += [struct.pack("<B", _CODES[array.dtype]), struct.pack("<I", len(raw)), raw]
    out.append(struct.pack("<I", len(aliases)))
    for alias, target in aliases.items():
        out += [string(alias), string(target)]
    path.write_bytes(b"".join(out))


def ct2_tensors(model, dtype=np.float32, int8: bool = False) -> dict[str, np.ndarray]:
    """A fastaed Whisper model in CTranslate2's variable names (fused projections, zero key biases)."""
    dims, c = fastaed_to_canonical(model)
    t: dict[str, np.ndarray] = {}
    d = dims.n_audio_state

    def put(name: str, x: torch.Tensor) -> None:
        a = x.numpy().astype(dtype)
        if int8 and name.endswith("weight") and x.dim() == 2 and "embeddings" not in name:
            scale = 127.0 / np.abs(x.numpy()).max(axis=1)
            t[name] = np.round(x.numpy() * scale[:, None]).astype(np.int8)
            t[name + "_scale"] = scale.astype(np.float32)
        else:
            t[name] = a

    def lin(src: str, dst: str) -> None:
        put(f"{dst}/weight", c[f"{src}.weight"])
        if f"{src}.bias" in c:
            put(f"{dst}/bias", c[f"{src}.bias"])

    def norm(src: str, dst: str) -> None:
        put(f"{dst}/gamma", c[f"{src}.weight"])
        put(f"{dst}/beta", c[f"{src}.bias"])

    def fused(src: str, dst: str) -> None:
        put(f"{dst}/linear_0/weight", torch.cat([c[f"{src}.{n}.weight"] for n in ("query", "key", "value")]))
        bias = [c[f"{src}.query.bias"], torch.zeros(d), c[f"{src}.value.bias"]]
        put(f"{dst}/linear_0/bias", torch.cat(bias))
        lin(f"{src}.out", f"{dst}/linear_1")

    lin("encoder.conv1", "encoder/conv1")
    lin("encoder.conv2", "encoder/conv2")
    put("encoder/position_encodings/encodings", c["encoder.positional_embedding"])
    for i in range(dims.n_audio_layer):
        s, o = f"encoder.blocks.{i}", f"encoder/layer_{i}"
        norm(f"{s}.attn_ln", f"{o}/self_attention/layer_norm")
        fused(f"{s}.attn", f"{o}/self_attention")
        norm(f"{s}.mlp_ln", f"{o}/ffn/layer_norm")
        lin(f"{s}.mlp.0", f"{o}/ffn/linear_0")
        lin(f"{s}.mlp.2", f"{o}/ffn/linear_1")
    norm("encoder.ln_post", "encoder/layer_norm")
    put("decoder/embeddings/weight", c["decoder.token_embedding.weight"])
    put("decoder/position_encodings/encodings", c["decoder.positional_embedding"])
    for i in range(dims.n_text_layer):
        s, o = f"decoder.blocks.{i}", f"decoder/layer_{i}"
        norm(f"{s}.attn_ln", f"{o}/self_attention/layer_norm")
        fused(f"{s}.attn", f"{o}/self_attention")
        norm(f"{s}.cross_attn_ln", f"{o}/attention/layer_norm")
        lin(f"{s}.cross_attn.query", f"{o}/attention/linear_0")
        put(
            f"{o}/attention/linear_1/weight",
            torch.cat([c[f"{s}.cross_attn.key.weight"], c[f"{s}.cross_attn.value.weight"]]),
        )
        put(f"{o}/attention/linear_1/bias", torch.cat([torch.zeros(d), c[f"{s}.cross_attn.value.bias"]]))
        lin(f"{s}.cross_attn.out", f"{o}/attention/linear_2")
        norm(f"{s}.mlp_ln", f"{o}/ffn/layer_norm")
        lin(f"{s}.mlp.0", f"{o}/ffn/linear_0")
        lin(f"{s}.mlp.2", f"{o}/ffn/linear_1")
    norm("decoder.ln", "decoder/layer_norm")
    t["encoder/num_heads"] = np.array(dims.n_audio_head, dtype=np.int16)
    t["decoder/num_heads"] = np.array(dims.n_text_head, dtype=np.int16)
    t["decoder/activation"] = np.array(3, dtype=np.int8)
    t["decoder/pre_norm"] = np.array(1, dtype=np.int8)
    return t


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A random Whisper model, its tokenizer.json and vocabulary size."""
    root = tmp_path_factory.mktemp("whisper_src")
    tok_path, vocab = wf.tokenizer_json(root)
    return wf.random_model(vocab, n_mels=16, d_model=32, heads=2, audio_positions=1500), tok_path, root


def same_weights(a, b, atol: float = 0.0) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], atol=atol, rtol=0 if atol == 0 else 1e-2, msg=k)


def test_openai_checkpoint_round_trips_exactly(source, tmp_path):
    model, tok, _ = source
    dims, canonical = fastaed_to_canonical(model)
    # Files without the table (it is a fixed function) get Whisper's sinusoids, as the random model has.
    canonical.pop("encoder.positional_embedding")
    torch.save({"dims": asdict(dims), "model_state_dict": canonical}, tmp_path / "w.pt")
    out = import_whisper(tmp_path / "w.pt", tmp_path / "ckpt", tokenizer_json=tok)
    same_weights(load_model(out), model)
    with pytest.raises(WhisperImportError, match="no tokenizer"):
        import_whisper(tmp_path / "w.pt", tmp_path / "ckpt2")


def test_hf_export_then_import_is_exact(source, tmp_path):
    model, tok, _ = source
    first = import_whisper(_pt(source, tmp_path), tmp_path / "a", tokenizer_json=tok)
    hf = export_hf(first, tmp_path / "hf")
    assert json.loads((hf / "config.json").read_text())["model_type"] == "whisper"
    again = import_whisper(hf, tmp_path / "b")
    same_weights(load_model(again), model)
    assert (
        read_checkpoint_meta(again)["tokenizer_identity"] == read_checkpoint_meta(first)["tokenizer_identity"]
    )


@pytest.mark.parametrize(
    ("dtype", "int8", "atol"), [(np.float32, False, 0.0), (np.float16, False, 2e-3), (np.float32, True, 3e-2)]
)
def test_ctranslate2_folder_is_read_as_written(source, tmp_path, dtype, int8, atol):
    model, tok, _ = source
    folder = tmp_path / "ct2"
    folder.mkdir()
    write_model_bin(
        folder / "model.bin",
        ct2_tensors(model, dtype, int8),
        {"decoder/projection/weight": "decoder/embeddings/weight"},
    )
    (folder / "tokenizer.json").write_text(tok.read_text())
    (folder / "config.json").write_text(json.dumps({"suppress_ids": [5], "suppress_ids_begin": [220, 300]}))
    ct = read_model_bin(folder / "model.bin")
    assert ct.get("decoder/projection/weight") is ct.get("decoder/embeddings/weight")
    out = import_whisper(folder, tmp_path / "ckpt")
    same_weights(load_model(out), model, atol=atol)
    tokenizer_meta = json.loads((out / "tokenizer" / "whisper.json").read_text())
    assert 5 in tokenizer_meta["suppress_ids"] and tokenizer_meta["suppress_at_start_ids"] == [220, 300]


def test_damaged_sources_are_named(source, tmp_path):
    model, tok, _ = source
    folder = tmp_path / "ct2"
    folder.mkdir()
    write_model_bin(folder / "model.bin", ct2_tensors(model), {})
    data = (folder / "model.bin").read_bytes()
    (folder / "model.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(CTranslate2FormatError, match="model.bin: truncated"):
        read_ctranslate2(folder)
    (tmp_path / "bad.pt").write_bytes(b"not a torch file")
    with pytest.raises(WhisperImportError, match="bad.pt"):
        import_whisper(tmp_path / "bad.pt", tmp_path / "x", tokenizer_json=tok)
    (tmp_path / "empty").mkdir()
    with pytest.raises(WhisperImportError, match="neither a CTranslate2 folder"):
        import_whisper(tmp_path / "empty", tmp_path / "y")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_imported_checkpoint_transcribes_and_skips_audio_past_the_window(source, tmp_path):
    model, tok, _ = source
    ckpt = import_whisper(_pt(source, tmp_path), tmp_path / "ckpt", tokenizer_json=tok)
    rng = np.random.default_rng(0)
    for name, seconds in (("a", 1.2), ("b", 0.5), ("long", 31.0)):
        sf.write(tmp_path / f"{name}.wav", 0.1 * rng.standard_normal(int(seconds * 16000)), 16000)
    paths = [tmp_path / f"{n}.wav" for n in ("a", "b", "long")]
    utts = utterances_from_audio(paths, source_lang="en", target_lang="en", task="transcribe", pnc=True)
    for mode in ("padded", "unpadded"):
        t = Transcriber(ckpt, DecodeConfig(batch_size=2, progress=False, whisper_input=mode))
        result = t.run(utts, on_bad_input="skip")
        assert len(result.transcripts) == 2 and result.skipped.total == 1
        assert "long.wav" in str(result.skipped.examples) and "30 s window" in str(result.skipped.examples)


def _pt(source, tmp_path: Path) -> Path:
    model, _, _ = source
    dims, canonical = fastaed_to_canonical(model)
    path = tmp_path / "src.pt"
    torch.save({"dims": asdict(dims), "model_state_dict": canonical}, path)
    return path
