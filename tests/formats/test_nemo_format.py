"""The ``.nemo`` format without NeMo: export -> import round trips, the Canary tokenizer, NeMo's front-end and
length options, and clear refusals. (Parity against NeMo's own code: ``test_nemo_parity.py``.)"""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import pytest
import sentencepiece as spm
import torch
import yaml

from fastaed.data.canary_tokenizer import CanaryTokenizer, padded_vocab_size
from fastaed.data.errors import BadInputError
from fastaed.data.features import FeatureConfig, LogMelFeatures
from fastaed.data.frontend import frontend_config, frontend_dict
from fastaed.data.manifest import Utterance
from fastaed.data.tokenizer import load_tokenizer
from fastaed.formats import load_model, read_checkpoint_meta, save_model
from fastaed.formats.nemo import NemoFormatError, export_nemo, import_nemo, read_nemo
from fastaed.model import build_model
from fastaed.model.config import DecoderConfig, EncoderConfig, ModelConfig

SPECIALS = {
    "canary": ["<|transcribe|>", "<|translate|>", "<|en|>", "<|de|>"],
    "canary2": ["<|startofcontext|>", "<|emo:undefined|>", "<|itn|>", "<|noitn|>", "<|timestamp|>",
                "<|notimestamp|>", "<|diarize|>", "<|nodiarize|>", "<|en|>", "<|de|>"],
}  # fmt: skip
NEMO_DEFAULTS = ["<|nospeech|>", "<pad>", "<|endoftext|>", "<|startoftranscript|>", "<|pnc|>", "<|nopnc|>"]
TEXTS = ["the quick brown fox jumps over the lazy dog", "go forward ten meters", "ten of clubs"] * 20


def _spm(texts: list[str], **kw) -> bytes:
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=buf, model_type="bpe", hard_vocab_limit=False,
        minloglevel=2, **kw,
    )  # fmt: skip
    return buf.getvalue()


def canary_tokenizer(fmt: str) -> CanaryTokenizer:
    """As NeMo builds one: a special-token model (its defaults first) and a BPE model per language."""
    specials = NEMO_DEFAULTS + SPECIALS[fmt]
    special = _spm(
        specials, vocab_size=len(specials) + 2, user_defined_symbols=specials, bos_id=-1, eos_id=-1
    )
    return CanaryTokenizer([("spl_tokens", special), ("en", _spm(TEXTS, vocab_size=40)),
                            ("de", _spm(TEXTS[::-1], vocab_size=30))], fmt)  # fmt: skip


def canary_model(vocab_size: int, d_enc: int = 32, d_dec: int = 48) -> torch.nn.Module:
    config = ModelConfig(
        encoder=EncoderConfig(d_model=d_enc, n_layers=1, n_heads=2, subsampling_channels=8, n_mels=80,
                              xscaling=True, conv_kernel=5),
        decoder=DecoderConfig(d_model=d_dec, n_layers=1, n_heads=2, max_len=64, scaled_positions=True),
        vocab_size=vocab_size,
    )  # fmt: skip
    torch.manual_seed(0)
    model = build_model(config)
    with torch.no_grad():  # every tensor off its default init, so a dropped tensor shows
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.add_(0.1 * torch.randn_like(t))
    return model.eval()


@pytest.fixture(params=["canary", "canary2"])
def checkpoint(request, tmp_path) -> Path:
    tok = canary_tokenizer(request.param)
    model = canary_model(tok.model_vocab_size)
    features = FeatureConfig(n_mels=80, valid_frames="nemo")
    out = save_model(
        model, tmp_path / "ckpt", tokenizer_identity=tok.identity, frontend=frontend_dict(features)
    )
    tok.save(out / "tokenizer")
    return out


def test_export_then_import_gives_back_every_tensor(checkpoint, tmp_path):
    nemo = export_nemo(checkpoint, tmp_path / "model.nemo")
    back = import_nemo(nemo, tmp_path / "back")
    a, b = load_model(checkpoint), load_model(back)
    assert a.config.encoder == b.config.encoder and a.config.decoder == b.config.decoder
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    assert frontend_config(read_checkpoint_meta(back)["frontend"]) == frontend_config(
        read_checkpoint_meta(checkpoint)["frontend"]
    )
    assert load_tokenizer(back / "tokenizer").identity == load_tokenizer(checkpoint / "tokenizer").identity


def test_exported_archive_is_laid_out_as_nemo_expects(checkpoint, tmp_path):
    archive = read_nemo(export_nemo(checkpoint, tmp_path / "model.nemo"))
    cfg = archive.config
    assert cfg["target"].endswith("EncDecMultiTaskModel")
    for name, part in cfg["tokenizer"]["langs"].items():
        assert part["model_path"].removeprefix("nemo:") in archive.files, name
    emb = archive.state["transf_decoder._embedding.token_embedding.weight"]
    assert archive.state["log_softmax.mlp.layer0.weight"] is emb or torch.equal(
        archive.state["log_softmax.mlp.layer0.weight"], emb
    )
    assert archive.state["preprocessor.featurizer.fb"].shape == (1, 80, 257)
    assert emb.shape[0] % 8 == 0


def _rewrite(nemo: Path, edit) -> Path:
    """A copy of ``nemo`` with its config edited by ``edit(cfg)``."""
    with tarfile.open(nemo) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    cfg = yaml.safe_load(members["./model_config.yaml"])
    edit(cfg)
    members["./model_config.yaml"] = yaml.safe_dump(cfg).encode()
    out = nemo.with_name("edited.nemo")
    with tarfile.open(out, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out


@pytest.mark.parametrize(
    "edit, key",
    [
        (lambda c: c["transf_encoder"].update(num_layers=2), "transf_encoder.num_layers"),
        (lambda c: c["encoder"].update(subsampling="striding"), "encoder.subsampling"),
        (lambda c: c["encoder"].update(att_context_size=[64, 0]), "encoder.att_context_size"),
        (lambda c: c["preprocessor"].update(mag_power=1.0), "preprocessor.mag_power"),
        (lambda c: c.update(prompt_format="canary_qwen"), "prompt_format"),
    ],
)
def test_import_refuses_what_it_cannot_represent_naming_the_key(checkpoint, tmp_path, edit, key):
    edited = _rewrite(export_nemo(checkpoint, tmp_path / "model.nemo"), edit)
    with pytest.raises(NemoFormatError, match=key.replace(".", r"\.")):
        import_nemo(edited, tmp_path / "out")


def test_stored_position_table_that_is_not_the_formula_is_kept(checkpoint, tmp_path):
    nemo = export_nemo(checkpoint, tmp_path / "model.nemo")
    with tarfile.open(nemo) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    state = torch.load(io.BytesIO(members["./model_weights.ckpt"]), weights_only=True)
    state["transf_decoder._embedding.position_embedding.pos_enc"] += 0.01
    buf = io.BytesIO()
    torch.save(state, buf)
    members["./model_weights.ckpt"] = buf.getvalue()
    with tarfile.open(nemo, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    model = load_model(import_nemo(nemo, tmp_path / "out"))
    assert model.config.decoder.positions == "learned"
    expected = state["transf_decoder._embedding.position_embedding.pos_enc"]
    assert torch.equal(model.decoder.positions.weight, expected)


def test_canary_prompts_match_nemo_formats():
    one, two = canary_tokenizer("canary"), canary_tokenizer("canary2")
    sid = one.special_ids
    assert one.prompt("en", "transcribe", "de", True) == [
        sid["<|startoftranscript|>"], sid["<|en|>"], sid["<|transcribe|>"], sid["<|de|>"], sid["<|pnc|>"]
    ]  # fmt: skip
    s2 = two.special_ids
    assert two.prompt("en", "transcribe", "en", False) == [
        s2[t]
        for t in ("<|startofcontext|>", "<|startoftranscript|>", "<|emo:undefined|>", "<|en|>", "<|en|>",
                  "<|nopnc|>", "<|noitn|>", "<|notimestamp|>", "<|nodiarize|>")
    ]  # fmt: skip
    assert (one.pad_id, one.eos_id) == (sid["<pad>"], sid["<|endoftext|>"]) == (2, 3)  # <unk> is id 0


def test_aggregate_ids_route_text_by_language_and_decode_back():
    tok = canary_tokenizer("canary")
    en, de = tok.encode_text("go forward", "en"), tok.encode_text("go forward", "de")
    assert min(en) >= tok.offsets["en"] and max(en) < tok.offsets["de"] <= min(de)
    assert tok.decode(en) == tok.decode(de) == "go forward"
    assert tok.decode([*en, tok.vocab_size + 1, tok.pad_id, tok.eos_id]) == "go forward"  # as NeMo's text
    assert tok.decode([tok.special_ids["<|en|>"], *en]) == "<|en|> go forward"
    utt = Utterance(audio_filepath="a.wav", duration=1.0, text="go forward", source_lang="en",
                    target_lang="en", task="transcribe", pnc=False)  # fmt: skip
    assert tok.sequence(utt) == [*tok.utterance_prompt(utt), *en, tok.eos_id]
    assert tok.model_vocab_size == padded_vocab_size(tok.vocab_size) and tok.model_vocab_size % 8 == 0
    assert pickle.loads(pickle.dumps(tok)).identity == tok.identity


def test_unknown_language_is_bad_input_naming_the_field():
    tok = canary_tokenizer("canary2")
    utt = Utterance(audio_filepath="a.wav", duration=1.0, text="x", source_lang="fr", target_lang="en",
                    task="transcribe", pnc=True, manifest="m.jsonl", line=3)  # fmt: skip
    with pytest.raises(BadInputError, match="source_lang"):
        tok.utterance_prompt(utt)


def test_nemo_frame_count_drops_the_last_centred_frame():
    nemo = LogMelFeatures(FeatureConfig(n_mels=40, valid_frames="nemo")).eval()
    ours = LogMelFeatures(FeatureConfig(n_mels=40)).eval()
    wave = torch.randn(1, 16000)
    feats, lens = nemo(wave, torch.tensor([16000]))
    _, lens_ours = ours(wave, torch.tensor([16000]))
    assert int(lens[0]) == 100 and int(lens_ours[0]) == 101 and feats.shape[1] == 101
    assert feats[0, 100].abs().max() == 0  # zeroed, and left out of the statistics
    assert torch.allclose(feats[0, :100].mean(0), torch.zeros(40), atol=1e-5)


def test_explicit_window_and_filterbank_are_used():
    base = FeatureConfig(n_mels=8)
    window = torch.hann_window(400, periodic=False) * 0.5
    custom = FeatureConfig(n_mels=8, window=tuple(window.tolist()))
    wave = torch.randn(1, 8000)
    a, _ = LogMelFeatures(base).eval()(wave, torch.tensor([8000]))
    b, _ = LogMelFeatures(custom).eval()(wave, torch.tensor([8000]))
    assert not torch.allclose(a, b)
    assert frontend_config(frontend_dict(custom)) == custom  # survives the JSON round trip as tuples


def test_nemo_length_rule():
    from fastaed.decode.search import nemo_limits

    model = canary_model(64)
    enc = torch.zeros(3, 20, 32)
    assert nemo_limits(model, enc, 5, -1).tolist() == [64 - 5] * 3
    assert nemo_limits(model, enc, 5, 8).tolist() == [20 + 8 - 5] * 3


def test_cli_export_and_import_nemo(checkpoint, tmp_path, capsys):
    from fastaed.cli.main import build_parser, parse, run_command

    nemo = tmp_path / "cli.nemo"
    assert run_command(parse(build_parser(), ["export", "nemo", str(checkpoint), "--out", str(nemo)])) == 0
    assert (
        run_command(parse(build_parser(), ["import", "nemo", str(nemo), "--out", str(tmp_path / "c")])) == 0
    )
    assert (tmp_path / "c" / "tokenizer" / "tokenizer.json").is_file()
    bad = tmp_path / "bad.nemo"
    bad.write_bytes(b"not a tar")
    assert run_command(parse(build_parser(), ["import", "nemo", str(bad), "--out", str(tmp_path / "d")])) == 2
    assert "not a .nemo archive" in capsys.readouterr().err
