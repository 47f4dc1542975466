"""``fastaed export openai``: a fastaed Whisper as the ``.pt`` openai-whisper's ``load_model(path)`` reads.

Round trips on a tiny random Whisper (every parameter perturbed, so a swapped tensor shows), the names and
shapes OpenAI's ``Whisper`` module declares (written out here, not taken from the converter under test), and
output safety: a user's file is refused and left as it was, an earlier export is replaced. Loading in
openai-whisper itself is in tests/bench/test_openai_peer.py (it needs ``.venv-openai``).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from fastaed.cli.main import main
from fastaed.formats import save_model
from fastaed.formats.native import CheckpointError
from fastaed.formats.openai_export import (
    EXPORT_TAG,
    OPENAI_KIND,
    export_openai,
    openai_checkpoint,
    vocabulary_note,
)
from fastaed.formats.whisper import WhisperDims, canonical_to_fastaed, read_openai
from fastaed.model import EncoderDecoderModel
from fastaed.model.config import unit_test
from fastaed.util.outputs import OutputExistsError
from tests import whisper_fixtures as wf


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A tiny random multilingual Whisper: 16 mels, d=32, 2 heads, 1 + 1 layers, 16 text positions."""
    return wf.checkpoint(tmp_path_factory.mktemp("whisper"), multilingual=True)


def _load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def _openai_names(dims: WhisperDims) -> dict[str, tuple[int, ...]]:
    """Every entry of openai-whisper's ``Whisper(dims).state_dict()`` and its shape (keys have no bias)."""
    d, mels, vocab = dims.n_audio_state, dims.n_mels, dims.n_vocab

    def linear(name: str, rows: int, cols: int, bias: bool = True) -> dict[str, tuple[int, ...]]:
        return {f"{name}.weight": (rows, cols), **({f"{name}.bias": (rows,)} if bias else {})}

    def norm(name: str) -> dict[str, tuple[int, ...]]:
        return {f"{name}.weight": (d,), f"{name}.bias": (d,)}

    def attention(name: str) -> dict[str, tuple[int, ...]]:
        return {
            **linear(f"{name}.query", d, d),
            **linear(f"{name}.key", d, d, bias=False),
            **linear(f"{name}.value", d, d),
            **linear(f"{name}.out", d, d),
        }

    def block(name: str, cross: bool) -> dict[str, tuple[int, ...]]:
        out = {**attention(f"{name}.attn"), **norm(f"{name}.attn_ln")}
        if cross:
            out |= {**attention(f"{name}.cross_attn"), **norm(f"{name}.cross_attn_ln")}
        return (
            out
            | linear(f"{name}.mlp.0", 4 * d, d)
            | linear(f"{name}.mlp.2", d, 4 * d)
            | norm(f"{name}.mlp_ln")
        )

    names = {
        "encoder.positional_embedding": (dims.n_audio_ctx, d),
        "encoder.conv1.weight": (d, mels, 3),
        "encoder.conv1.bias": (d,),
        "encoder.conv2.weight": (d, d, 3),
        "encoder.conv2.bias": (d,),
        **norm("encoder.ln_post"),
        "decoder.token_embedding.weight": (vocab, d),
        "decoder.positional_embedding": (dims.n_text_ctx, d),
        **norm("decoder.ln"),
    }
    for i in range(dims.n_audio_layer):
        names |= block(f"encoder.blocks.{i}", cross=False)
    for i in range(dims.n_text_layer):
        names |= block(f"decoder.blocks.{i}", cross=True)
    return names


def test_export_has_openai_names_shapes_and_dims(ckpt, tmp_path):
    from fastaed.formats import load_model

    model = load_model(ckpt)
    out = export_openai(ckpt, tmp_path / "model.pt")
    doc = _load(out)
    dims = WhisperDims(**doc["dims"])
    assert dims == WhisperDims.of(model.config)
    assert doc["dims"].keys() == {
        "n_mels", "n_vocab", "n_audio_ctx", "n_audio_state", "n_audio_head", "n_audio_layer",
        "n_text_ctx", "n_text_state", "n_text_head", "n_text_layer",
    }  # fmt: skip
    shapes = {k: tuple(v.shape) for k, v in doc["model_state_dict"].items()}
    assert shapes == _openai_names(dims)
    assert all(v.dtype == torch.float32 for v in doc["model_state_dict"].values())
    assert doc[EXPORT_TAG]["name"] == model.config.name
    assert doc["alignment_heads"].tolist() == [[True, True]]  # an unreleased model: every upper-half head


def test_export_reimports_to_the_same_weights(ckpt, tmp_path):
    from fastaed.formats import load_model

    original = load_model(ckpt).state_dict()
    dims, canonical = read_openai(export_openai(ckpt, tmp_path / "model.pt"))
    back = canonical_to_fastaed(dims, canonical, "back").state_dict()
    assert back.keys() == original.keys()
    for name, tensor in original.items():
        assert torch.equal(back[name], tensor), name


def test_alignment_heads_are_stored_as_a_layer_by_head_mask(ckpt, tmp_path):
    doc = _load(export_openai(ckpt, tmp_path / "model.pt", alignment_heads=[(0, 1)]))
    assert doc["alignment_heads"].tolist() == [[False, True]]  # 1 decoder layer x 2 heads


def test_alignment_heads_outside_the_decoder_are_a_clear_error(ckpt, tmp_path):
    with pytest.raises(CheckpointError, match=r"alignment head \(1, 0\) is outside"):
        export_openai(ckpt, tmp_path / "model.pt", alignment_heads=[(1, 0)])
    assert not (tmp_path / "model.pt").exists()


def test_default_alignment_heads_are_the_ones_fastaeds_word_timestamps_use(tmp_path):
    from fastaed.decode.alignment import alignment_heads

    vocab = wf.tokenizer_json(tmp_path)[1]
    model = wf.random_model(vocab, n_mels=16, d_model=48, heads=6, layers=4, text_positions=16)
    released = dataclasses.replace(model.config, name="whisper-tiny.en")  # tiny.en's decoder: 4 x 6 heads
    published = alignment_heads(released)
    assert int(published.sum()) == 8 and not published[0].any()  # OpenAI's table, not the upper-half default
    model.config = released
    assert torch.equal(openai_checkpoint(model)["alignment_heads"], published)
    model.config = dataclasses.replace(released, name="whisper-mine")  # unknown: the upper half of the layers
    assert openai_checkpoint(model)["alignment_heads"].tolist() == [[False] * 6] * 2 + [[True] * 6] * 2


def test_a_users_file_is_refused_and_left_unchanged(ckpt, tmp_path):
    mine = tmp_path / "mine.pt"
    torch.save({"dims": {}, "model_state_dict": {}}, mine)  # a real .pt, but not one fastaed exported
    before = mine.read_bytes()
    with pytest.raises(OutputExistsError, match="mine.pt"):
        export_openai(ckpt, mine)
    assert mine.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.pt"]  # no temporary file left behind


def test_an_earlier_export_is_replaced(ckpt, tmp_path):
    out = export_openai(ckpt, tmp_path / "model.pt")
    assert OPENAI_KIND.recognise(out)
    export_openai(ckpt, out, alignment_heads=[(0, 0)])
    assert _load(out)["alignment_heads"].tolist() == [[True, False]]


def test_a_non_whisper_checkpoint_is_a_clear_error(tmp_path, capsys):
    canary_like = save_model(EncoderDecoderModel(unit_test(64)).eval(), tmp_path / "fastconformer")
    with pytest.raises(SystemExit) as exit_:
        main(["export", "openai", str(canary_like), "--out", str(tmp_path / "model.pt")])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "Traceback" not in err, err
    assert str(canary_like) in err and "encoder kind 'fastconformer'" in err, err
    assert not (tmp_path / "model.pt").exists()


def test_cli_exports_and_notes_a_vocabulary_openai_whisper_does_not_have(ckpt, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["export", "openai", str(ckpt), "--out", str(tmp_path / "m.pt"), "--alignment-heads", "0:1"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0, out
    assert "not one of OpenAI's Whisper vocabularies" in out  # the fixture's vocabulary is tiny
    assert _load(tmp_path / "m.pt")["alignment_heads"].tolist() == [[False, True]]
    assert vocabulary_note(51864) is None and vocabulary_note(51866) is None
