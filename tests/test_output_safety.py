"""No command overwrites what a user owns (issue 29, item 1): each command that writes a folder or a file,
pointed at a user's folder or file, exits 2 with one line naming it and leaves every byte as it was; pointed
at its own earlier output, it replaces it. Plus the rules of ``fastaed.util.outputs`` itself."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from fastaed.cli.main import build_parser, parse, run_command
from fastaed.formats import save_model
from fastaed.formats.whisper import fastaed_to_canonical
from fastaed.testing import write_tiny_corpus
from fastaed.util import outputs
from fastaed.util.outputs import MARKER, OutputExistsError, building_dir, check_output_file, replacing_file
from tests import whisper_fixtures as wf


def cli(*argv: str) -> int:
    return run_command(parse(build_parser(), [str(a) for a in argv]))


def snapshot(path: Path) -> dict[str, bytes]:
    """Every file under ``path`` (or the file itself) with its bytes, and every folder."""
    if path.is_file():
        return {"": path.read_bytes()}
    return {
        p.relative_to(path).as_posix(): p.read_bytes() if p.is_file() else b"<dir>"
        for p in sorted(path.rglob("*"))
    }


@pytest.fixture()
def users_folder(tmp_path) -> Path:
    """A folder of a user's own files (one nested), e.g. `--out ~/work` by mistake."""
    folder = tmp_path / "work"
    (folder / "thesis").mkdir(parents=True)
    (folder / "notes.txt").write_text("years of notes\n")
    (folder / "thesis" / "draft.tex").write_bytes(os.urandom(64))
    return folder


def refuses(capsys, target: Path, *argv: str, name: str = "notes.txt") -> None:
    """The command exits 2 with one line naming ``target`` (and ``name``), leaving it byte for byte."""
    before = snapshot(target)
    assert cli(*argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(target) in err and name in err, err
    assert "choose another" in err and "remove" in err, err
    assert snapshot(target) == before
    assert not [p.name for p in target.parent.iterdir() if p.name.startswith(f".{target.name}.")]


def marked(folder: Path, kind: str) -> bool:
    return json.loads((folder / MARKER).read_text())["kind"] == kind


# ---- folders ---------------------------------------------------------------------------------------------


@pytest.fixture()
def whisper_pt(tmp_path) -> tuple[Path, Path]:
    tok_path, vocab = wf.tokenizer_json(tmp_path)
    model = wf.random_model(vocab, n_mels=16, d_model=32, heads=2, layers=1, audio_positions=1500)
    dims, canonical = fastaed_to_canonical(model)
    torch.save({"dims": asdict(dims), "model_state_dict": canonical}, tmp_path / "w.pt")
    return tmp_path / "w.pt", tok_path


def test_import_whisper_refuses_a_users_folder_and_replaces_its_own(
    whisper_pt, users_folder, tmp_path, capsys
):
    pt, tok = whisper_pt
    refuses(capsys, users_folder, "import", "whisper", pt, "--tokenizer", tok, "--out", users_folder)
    out = tmp_path / "models" / "w"
    assert cli("import", "whisper", pt, "--tokenizer", tok, "--out", out) == 0
    assert marked(out, "checkpoint")
    first = (out / "model.safetensors").read_bytes()
    assert cli("import", "whisper", pt, "--tokenizer", tok, "--out", out, "--name", "again") == 0
    assert (out / "model.safetensors").read_bytes() == first and "again" in (out / "config.json").read_text()
    (out / MARKER).unlink()  # an import from before markers: recognised by its config and checksums
    listing = json.loads((out / "checksums.json").read_text())  # (which listed config and weights only)
    listing["files"] = {k: v for k, v in listing["files"].items() if not k.startswith("tokenizer/")}
    (out / "checksums.json").write_text(json.dumps(listing))
    assert cli("import", "whisper", pt, "--tokenizer", tok, "--out", out) == 0
    (out / "mine.txt").write_text("added by the user")  # a user's file inside: no longer replaceable
    refuses(capsys, out, "import", "whisper", pt, "--tokenizer", tok, "--out", out, name="mine.txt")
    assert [p.name for p in out.parent.iterdir()] == ["w"]  # no temporary folder left behind


def test_import_whisper_uses_an_empty_folder(whisper_pt, tmp_path):
    pt, tok = whisper_pt
    (tmp_path / "empty").mkdir()
    assert cli("import", "whisper", pt, "--tokenizer", tok, "--out", tmp_path / "empty") == 0
    assert (tmp_path / "empty" / "config.json").is_file()


@pytest.fixture()
def canary_checkpoint(tmp_path) -> Path:
    from fastaed.data.features import FeatureConfig
    from fastaed.data.frontend import frontend_dict
    from tests.formats.test_nemo_format import canary_model, canary_tokenizer

    tok = canary_tokenizer("canary")
    model = canary_model(tok.model_vocab_size)
    features = FeatureConfig(n_mels=80, valid_frames="nemo")
    return save_model(model, tmp_path / "ckpt", tokenizer=tok, frontend=frontend_dict(features))


def test_import_nemo_refuses_a_users_folder_and_replaces_its_own(
    canary_checkpoint, users_folder, tmp_path, capsys
):
    nemo = tmp_path / "c.nemo"
    assert cli("export", "nemo", canary_checkpoint, "--out", nemo) == 0
    refuses(capsys, users_folder, "import", "nemo", nemo, "--out", users_folder)
    out = tmp_path / "canary"
    assert cli("import", "nemo", nemo, "--out", out) == 0 and marked(out, "checkpoint")
    assert cli("import", "nemo", nemo, "--out", out) == 0
    assert (out / "tokenizer" / "tokenizer.json").is_file()


def test_export_nemo_replaces_only_its_own_file(canary_checkpoint, tmp_path, capsys):
    theirs = tmp_path / "canary-180m-flash.nemo"  # e.g. the original download
    theirs.write_bytes(os.urandom(300))
    refuses(capsys, theirs, "export", "nemo", canary_checkpoint, "--out", theirs, name="not a .nemo exported")
    ours = tmp_path / "finetuned.nemo"
    assert cli("export", "nemo", canary_checkpoint, "--out", ours) == 0
    assert cli("export", "nemo", canary_checkpoint, "--out", ours) == 0
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".nemo") == [theirs.name, ours.name]


def test_export_hf_refuses_a_users_folder_and_replaces_its_own(tmp_path, users_folder, capsys):
    ckpt = wf.checkpoint(tmp_path / "w", multilingual=False)
    refuses(capsys, users_folder, "export", "hf", ckpt, "--out", users_folder)
    out = tmp_path / "hf"
    assert cli("export", "hf", ckpt, "--out", out) == 0 and (out / "model.safetensors").is_file()
    assert cli("export", "hf", ckpt, "--out", out) == 0
    # a checkpoint folder is not a Hugging Face export: refused, not replaced
    refuses(capsys, ckpt, "export", "hf", ckpt, "--out", ckpt, name="config.json")


def test_data_shard_refuses_a_users_folder_and_replaces_its_own(tmp_path, users_folder, capsys):
    manifest = write_tiny_corpus(tmp_path / "data", 6)
    refuses(capsys, users_folder, "data", "shard", manifest, "--out", users_folder, "--items-per-shard", 3)
    out = tmp_path / "shards"
    assert cli("data", "shard", manifest, "--out", out, "--items-per-shard", 3) == 0
    assert cli("data", "shard", manifest, "--out", out, "--items-per-shard", 2) == 0  # fewer, smaller shards
    assert sorted(p.name for p in out.glob("audio_*.tar")) == ["audio_0.tar", "audio_1.tar", "audio_2.tar"]
    (out / MARKER).unlink()  # shards from before markers are recognised by their index
    assert cli("data", "shard", manifest, "--out", out, "--items-per-shard", 6) == 0
    assert [p.name for p in out.glob("audio_*.tar")] == ["audio_0.tar"]


def test_tokenizer_train_refuses_a_users_folder_and_replaces_its_own(tmp_path, users_folder, capsys):
    manifest = write_tiny_corpus(tmp_path / "data", 6)
    refuses(capsys, users_folder, "tokenizer", "train", manifest, "--out", users_folder, "--vocab-size", 64)
    out = tmp_path / "tok"
    assert cli("tokenizer", "train", manifest, "--out", out, "--vocab-size", 64) == 0
    assert cli("tokenizer", "train", manifest, "--out", out, "--vocab-size", 64) == 0
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "tokenizer.json", "tokenizer.model"]


def test_data_real_check_refuses_a_users_folder_and_adds_to_its_own(
    tmp_path, users_folder, monkeypatch, capsys
):
    from fastaed.cli import data as data_cli

    def fake_set(args):  # no network: what the pocketsphinx set writes
        (args.out / "audio").mkdir(exist_ok=True)
        (args.out / "real_check.jsonl").write_text("{}\n")

    monkeypatch.setattr(data_cli, "_pocketsphinx_set", fake_set)
    argv = ("data", "real-check", "--sets", "pocketsphinx", "--out")
    refuses(capsys, users_folder, *argv, users_folder)
    out = tmp_path / "real"
    assert cli(*argv, out) == 0 and cli(*argv, out) == 0 and marked(out, "real-check folder")
    (out / "notes.txt").write_text("mine")
    refuses(capsys, out, *argv, out)


@pytest.mark.tts
@pytest.mark.skipif(not all(map(__import__("shutil").which, ("flite", "espeak-ng"))), reason="needs TTS")
def test_synth_refuses_a_users_folder_and_replaces_its_own(tmp_path, users_folder, capsys):
    from fastaed.synth.corpus import generate_corpus

    refuses(capsys, users_folder, "synth", "--preset", "tiny", "--out", users_folder, "--no-progress")
    out = tmp_path / "corpus"
    for _ in range(2):  # one utterance, twice onto the same folder
        result = generate_corpus(out, "tiny", workers=1, progress=False, only=["dev-000000"])
        assert result.out_dir == out and (out / "card.json").is_file() and marked(out, "synth corpus")
    assert [p.name for p in (out / "audio" / "dev").iterdir()] == ["dev-000000.wav"]


# ---- files -----------------------------------------------------------------------------------------------


def test_bins_refuses_a_users_files_and_replaces_its_own(tmp_path, capsys):
    theirs_json, theirs_png = tmp_path / "bins.json", tmp_path / "bins.png"
    theirs_json.write_text('{"mine": true}\n')
    theirs_png.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(40))  # someone else's image
    argv = ["bins", "--synthetic", "500", "--num-buckets", "3", "--num-subbuckets", "1"]
    refuses(capsys, theirs_json, *argv, "--out", theirs_json, name="not a bins JSON")
    ours_json = tmp_path / "ours.json"
    refuses(capsys, theirs_png, *argv, "--out", ours_json, "--png", theirs_png, name="bins plot")
    assert not ours_json.exists()  # refused before any work
    ours_png = tmp_path / "ours.png"
    assert cli(*argv, "--out", ours_json, "--png", ours_png) == 0
    assert outputs.png_tag(ours_png) == "bins plot"
    assert cli(*argv, "--out", ours_json, "--png", ours_png) == 0
    # a bins JSON is not a padding report
    argv = ["padding", "--synthetic", "200", "--strategy", "random", "--json", ours_json]
    refuses(capsys, ours_json, *argv, name="not a padding report")


def test_padding_refuses_a_users_files_and_replaces_its_own(tmp_path, capsys):
    theirs = tmp_path / "report.json"
    theirs.write_text('{"utterances": 3}\n')  # JSON, but not a padding report
    argv = ["padding", "--synthetic", "300", "--strategy", "random"]
    refuses(capsys, theirs, *argv, "--json", theirs, name="padding report")
    ours, png = tmp_path / "ours.json", tmp_path / "ours.png"
    assert cli(*argv, "--json", ours, "--png", png) == 0
    assert cli(*argv, "--json", ours, "--png", png) == 0
    assert json.loads(ours.read_text())["utterances"] == 300 and outputs.png_tag(png) == "padding plot"


def test_batch_sizes_refuses_a_users_file_and_replaces_its_own(tmp_path, capsys):
    from fastaed.sampling.bins import Bins

    bins = tmp_path / "bins.json"
    bins.write_text(Bins(duration_edges=[1.0], max_u=[[10]], max_tps=None).to_json())
    theirs = tmp_path / "results.json"
    theirs.write_text('{"format": "my.results"}\n')
    argv = ["batch-sizes", "--model", "test", "--bins", bins, "--memory-budget", "0.05", "--no-progress"]
    refuses(capsys, theirs, *argv, "--out", theirs, name="batch-size profile")
    refuses(capsys, theirs, *argv, "--out", tmp_path / "p.json", "--json", theirs, name="summary")
    assert not (tmp_path / "p.json").exists()
    for _ in range(2):
        assert cli(*argv, "--out", tmp_path / "p.json", "--json", tmp_path / "s.json") == 0
    capsys.readouterr()
    assert outputs.png_tag(tmp_path / "p.png") == "batch-size profile plot"


# ---- the helper ------------------------------------------------------------------------------------------


def test_a_failed_build_leaves_the_earlier_output_and_no_temporary(tmp_path):
    out = tmp_path / "out"
    with building_dir(out, "thing", "test") as tmp:
        (tmp / "a").write_text("1")
    before = snapshot(out)
    with pytest.raises(RuntimeError), building_dir(out, "thing", "test") as tmp:
        (tmp / "a").write_text("2")
        raise RuntimeError("interrupted")
    assert snapshot(out) == before and [p.name for p in tmp_path.iterdir()] == ["out"]


def test_another_kind_of_output_and_links_are_refused(tmp_path):
    with building_dir(tmp_path / "shards", "shard folder", "data shard") as tmp:
        (tmp / "shard_index.json").write_text("{}")
    with pytest.raises(OutputExistsError, match="holds a fastaed shard folder"):
        with building_dir(tmp_path / "shards", "checkpoint", "import whisper"):
            pass
    (tmp_path / "link").symlink_to(tmp_path / "shards")
    with pytest.raises(OutputExistsError, match="symbolic link"):
        outputs.check_output_dir(tmp_path / "link", "shard folder")
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputExistsError, match="is a file"):
        outputs.check_output_dir(tmp_path / "file", "shard folder")


def test_a_file_output_is_replaced_atomically_or_not_at_all(tmp_path):
    kind = outputs.json_kind("report", "total")
    path = tmp_path / "r.json"
    with replacing_file(path, kind) as tmp:
        tmp.write_text('{"total": 1}')
    with pytest.raises(RuntimeError), replacing_file(path, kind) as tmp:
        tmp.write_text('{"total": 2}')
        raise RuntimeError("interrupted")
    assert path.read_text() == '{"total": 1}' and [p.name for p in tmp_path.iterdir()] == ["r.json"]
    (tmp_path / "d").mkdir()
    with pytest.raises(OutputExistsError, match="is a folder"):
        check_output_file(tmp_path / "d", kind)
