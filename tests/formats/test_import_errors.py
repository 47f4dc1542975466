"""Every import/export failure is one line naming the file and what is wrong, exit 2, no traceback
(issue 29, item 6): through the real command line, on damaged Whisper and NeMo sources."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest

from fastaed.cli.main import main
from tests import whisper_fixtures as wf
from tests.formats.test_whisper_import import ct2_tensors, write_model_bin


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    path, _ = wf.tokenizer_json(tmp_path_factory.mktemp("tok"))
    return path


def _fails(capsys, argv: list[str], *named: str) -> str:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for text in named:
        assert text in err, err
    return err


def test_garbage_pt_is_named(tmp_path, tok, capsys):
    (tmp_path / "garbage.pt").write_bytes(b"\x80\x04 not a torch file at all")
    out = tmp_path / "out"
    _fails(capsys, ["import", "whisper", str(tmp_path / "garbage.pt"), "--tokenizer", str(tok),
                    "--out", str(out)], str(tmp_path / "garbage.pt"))  # fmt: skip
    assert not out.exists()


def test_empty_folder_is_named(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    _fails(capsys, ["import", "whisper", str(tmp_path / "empty"), "--out", str(tmp_path / "o")],
           str(tmp_path / "empty"), "neither a CTranslate2 folder")  # fmt: skip


@pytest.mark.parametrize("damage", ["truncated", "tensor missing", "garbage"])
def test_damaged_model_bin_is_named(tmp_path, tok, capsys, damage):
    model = wf.random_model(wf.tokenizer_json(tmp_path)[1], n_mels=16, d_model=32, heads=2, layers=1)
    folder = tmp_path / "ct2"
    folder.mkdir()
    tensors = ct2_tensors(model)
    if damage == "tensor missing":
        del tensors["decoder/layer_norm/gamma"]
    write_model_bin(folder / "model.bin", tensors, {"decoder/projection/weight": "decoder/embeddings/weight"})
    data = (folder / "model.bin").read_bytes()
    if damage == "truncated":
        (folder / "model.bin").write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        (folder / "model.bin").write_bytes(np.full(64, 7, np.uint32).tobytes())
    (folder / "tokenizer.json").write_text(tok.read_text())
    err = _fails(capsys, ["import", "whisper", str(folder), "--out", str(tmp_path / "o")], "model.bin")
    if damage == "tensor missing":
        assert "decoder/layer_norm/gamma" in err


def test_bad_tokenizer_json_is_named(tmp_path, capsys):
    model = wf.random_model(wf.tokenizer_json(tmp_path)[1], n_mels=16, d_model=32, heads=2, layers=1)
    folder = tmp_path / "ct2"
    folder.mkdir()
    write_model_bin(folder / "model.bin", ct2_tensors(model), {})
    (folder / "tokenizer.json").write_text("{not json")
    _fails(
        capsys,
        ["import", "whisper", str(folder), "--out", str(tmp_path / "o")],
        str(folder / "tokenizer.json"),
    )


def _tar(path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(f"./{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


@pytest.mark.parametrize(
    ("members", "why"),
    [
        (None, "not a .nemo archive"),
        ({"model_config.yaml": b"a: [unclosed", "model_weights.ckpt": b""}, "not valid YAML"),
        ({"model_config.yaml": b"target: x", "model_weights.ckpt": b"junk"}, "unreadable model_weights.ckpt"),
        ({"model_config.yaml": b"target: x"}, "archive has no model_weights.ckpt"),
    ],
)
def test_garbage_nemo_is_named(tmp_path, capsys, members, why):
    nemo = tmp_path / "bad.nemo"
    if members is None:
        nemo.write_bytes(b"\x1f\x8b garbage that is no tar")
    else:
        _tar(nemo, members)
    _fails(capsys, ["import", "nemo", str(nemo), "--out", str(tmp_path / "o")], str(nemo), why)


def test_truncated_nemo_is_named(tmp_path, capsys):
    import torch

    weights = io.BytesIO()
    torch.save({"w": torch.zeros(1000)}, weights)
    _tar(
        tmp_path / "full.nemo", {"model_config.yaml": b"target: x", "model_weights.ckpt": weights.getvalue()}
    )
    data = (tmp_path / "full.nemo").read_bytes()
    nemo = tmp_path / "cut.nemo"
    nemo.write_bytes(data[: len(data) // 2])
    _fails(capsys, ["import", "nemo", str(nemo), "--out", str(tmp_path / "o")], str(nemo))


def test_nemo_missing_tensor_is_named(tmp_path, capsys):
    import torch

    from fastaed.formats.nemo import export_nemo

    with tarfile.open(export_nemo(_canary_checkpoint(tmp_path), tmp_path / "m.nemo")) as tar:
        members = {
            m.name.removeprefix("./"): tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()
        }
    state = torch.load(io.BytesIO(members["model_weights.ckpt"]), weights_only=True)
    gone = next(k for k in state if k.startswith("encoder.layers.0."))
    del state[gone]
    weights = io.BytesIO()
    torch.save(state, weights)
    members["model_weights.ckpt"] = weights.getvalue()
    _tar(tmp_path / "cut.nemo", members)
    _fails(capsys, ["import", "nemo", str(tmp_path / "cut.nemo"), "--out", str(tmp_path / "o")],
           str(tmp_path / "cut.nemo"), gone)  # fmt: skip


def test_export_of_the_wrong_family_is_named(tmp_path, capsys):
    ckpt = _canary_checkpoint(tmp_path)
    _fails(capsys, ["export", "hf", str(ckpt), "--out", str(tmp_path / "hf")], str(ckpt), "not a Whisper")


def _canary_checkpoint(tmp_path):
    from fastaed.data.features import FeatureConfig
    from fastaed.data.frontend import frontend_dict
    from fastaed.formats import save_model
    from tests.formats.test_nemo_format import canary_model, canary_tokenizer

    tok = canary_tokenizer("canary")
    return save_model(canary_model(tok.model_vocab_size), tmp_path / "ckpt", tokenizer=tok,
                      frontend=frontend_dict(FeatureConfig(n_mels=80, valid_frames="nemo")))  # fmt: skip
