"""Checksums cover every file of a checkpoint, its tokenizer included, and a damaged tokenizer is an error
that names the file (issue 29, item 4)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import soundfile as sf

from fastaed.cli.main import main
from fastaed.decode.transcribe import find_tokenizer
from fastaed.formats import CHECKSUMS_FILE, CheckpointError, UnverifiedCheckpointWarning, verify_tokenizer
from fastaed.formats.native import write_checksums
from fastaed.formats.nemo import export_nemo, import_nemo
from tests import whisper_fixtures as wf
from tests.formats.test_nemo_format import canary_tokenizer


@pytest.fixture(scope="module")
def whisper_ckpt(tmp_path_factory):
    return wf.imported_checkpoint(tmp_path_factory.mktemp("whisper"))


def _files(folder):
    return sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and p.name != CHECKSUMS_FILE and not p.name.startswith(".")
    )


def _listed(folder):
    return sorted(json.loads((folder / CHECKSUMS_FILE).read_text())["files"])


def _flip(path):
    """Same size, different bytes: only a checksum notices."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_imported_whisper_checksums_cover_every_file(whisper_ckpt):
    listed = _listed(whisper_ckpt)
    assert listed == _files(whisper_ckpt)
    assert "tokenizer/tokenizer.json" in listed and "tokenizer/whisper.json" in listed
    assert verify_tokenizer(whisper_ckpt) is True


def test_imported_nemo_checksums_cover_every_file(tmp_path):
    from fastaed.data.features import FeatureConfig
    from fastaed.data.frontend import frontend_dict
    from fastaed.formats import save_model
    from tests.formats.test_nemo_format import canary_model

    tok = canary_tokenizer("canary")
    first = save_model(canary_model(tok.model_vocab_size), tmp_path / "a", tokenizer=tok,
                       frontend=frontend_dict(FeatureConfig(n_mels=80, valid_frames="nemo")))  # fmt: skip
    assert _listed(first) == _files(first) and "tokenizer/tokenizer.json" in _listed(first)
    back = import_nemo(export_nemo(first, tmp_path / "a.nemo"), tmp_path / "back")
    assert _listed(back) == _files(back) and "tokenizer/tokenizer.json" in _listed(back)


def test_corrupted_tokenizer_is_a_named_error(whisper_ckpt, tmp_path, capsys):
    import shutil

    ckpt = shutil.copytree(whisper_ckpt, tmp_path / "ckpt")
    _flip(ckpt / "tokenizer" / "tokenizer.json")
    with pytest.raises(CheckpointError, match=r"tokenizer/tokenizer\.json: sha256 differs"):
        find_tokenizer(ckpt)
    wav = tmp_path / "a.wav"
    sf.write(wav, 0.1 * np.random.default_rng(0).standard_normal(8000), 16000)
    with pytest.raises(SystemExit) as exit_:
        main(["transcribe", str(ckpt), str(wav), "--out", str(tmp_path / "h.jsonl")])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "Traceback" not in err
    assert f"{ckpt / 'tokenizer' / 'tokenizer.json'}: sha256 differs" in err
    with pytest.raises(CheckpointError, match="tokenizer.json"):
        from fastaed.formats.whisper_import import export_hf

        export_hf(ckpt, tmp_path / "hf")


def test_tokenizer_file_added_after_the_listing_is_refused(whisper_ckpt, tmp_path):
    import shutil

    ckpt = shutil.copytree(whisper_ckpt, tmp_path / "ckpt")
    (ckpt / "tokenizer" / "tokenizer.model").write_bytes(b"swapped in")
    with pytest.raises(CheckpointError, match=r"tokenizer\.model: not listed"):
        verify_tokenizer(ckpt)


def test_older_listing_without_the_tokenizer_loads_with_a_warning(whisper_ckpt, tmp_path):
    import shutil

    ckpt = shutil.copytree(whisper_ckpt, tmp_path / "ckpt")
    write_checksums(ckpt, ["config.json", "model.safetensors"])  # what imports wrote before
    with pytest.warns(UnverifiedCheckpointWarning, match="tokenizer: not listed"):
        assert verify_tokenizer(ckpt) is False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert find_tokenizer(ckpt) is not None  # warned once per checkpoint


def test_fine_tuning_start_checks_the_tokenizer(whisper_ckpt, tmp_path):
    import shutil

    from fastaed.train.config import ModelSection
    from fastaed.train.pretrained import load_pretrained

    ckpt = shutil.copytree(whisper_ckpt, tmp_path / "ckpt")
    assert load_pretrained(ModelSection(init_from=str(ckpt))) is not None
    _flip(ckpt / "tokenizer" / "whisper.json")
    with pytest.raises(CheckpointError, match=r"tokenizer/whisper\.json: sha256 differs"):
        load_pretrained(ModelSection(init_from=str(ckpt)))
