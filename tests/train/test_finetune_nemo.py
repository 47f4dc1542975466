"""A Canary model goes import nemo -> fastaed train (``model.init_from``) -> export nemo and keeps what NeMo
needs (issue 29, item 5): the fine-tuned checkpoints carry the import's ``extra`` (NeMo's greedy length rule
under ``generation``, the original NeMo config) and front end, so the exported ``.nemo`` has the original's
settings with the fine-tuned weights. Without NeMo; ``test_finetune_nemo_parity.py`` restores it in NeMo."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
import torch
import yaml

from fastaed.data.features import FeatureConfig
from fastaed.data.frontend import frontend_dict
from fastaed.formats import load_model, read_checkpoint_meta, save_model
from fastaed.formats.nemo import export_nemo, import_nemo, read_nemo
from fastaed.formats.nemo_state import to_nemo
from fastaed.testing import write_tiny_corpus
from fastaed.train import train
from fastaed.train.config import TrainConfig
from tests.formats.test_nemo_format import canary_model, canary_tokenizer
from tests.train import TEST_CONFIG

GENERATION = {"strategy": "greedy", "greedy": {"max_generation_delta": 6}}
FINETUNE = [
    "data.tokenizer=null", "model.ctc_weight=null", "model.dropout=null", "specaugment.enabled=false",
    "optim.max_steps=3", "optim.warmup_steps=1", "optim.lr=1e-2", "runtime.ckpt_every=3",
]  # fmt: skip


def canary_nemo(root: Path, fmt: str = "canary2") -> Path:
    """A small Canary ``.nemo`` with settings of its own: NeMo's length rule with a delta, a dither, and a
    key fastaed does not use (kept as it is)."""
    tok = canary_tokenizer(fmt)
    features = FeatureConfig(n_mels=80, valid_frames="nemo", dither=2e-5)
    ckpt = save_model(canary_model(tok.model_vocab_size), root / "made", tokenizer_identity=tok.identity,
                      frontend=frontend_dict(features), tokenizer=tok)  # fmt: skip
    made = export_nemo(ckpt, root / "made.nemo")
    with tarfile.open(made) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    cfg = yaml.safe_load(members["./model_config.yaml"])
    cfg["decoding"] = GENERATION
    cfg["nemo_version"] = "3.0.0"
    cfg["user_note"] = {"kept": True}
    members["./model_config.yaml"] = yaml.safe_dump(cfg, sort_keys=False).encode()
    out = root / "original.nemo"
    with tarfile.open(out, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out


def settings(cfg: dict) -> dict:
    """A ``.nemo`` config without the tokenizer file names (fresh random names on every export)."""
    return {k: v for k, v in cfg.items() if k != "tokenizer"}


def finetune(root: Path, imported: Path, manifest: Path) -> Path:
    """``fastaed train`` from ``imported``; returns the run folder (checkpoint at step 3)."""
    run = root / "run"
    items = [f"data.train_manifests=[{manifest}]", f"model.init_from={imported}", f"runtime.out_dir={run}"]
    summary = train(TrainConfig.from_yaml(TEST_CONFIG, [*items, *FINETUNE]), resume="none")
    assert summary["steps"] == 3
    return run


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    """(original .nemo, imported checkpoint, fine-tuned checkpoint, manifest)."""
    root = tmp_path_factory.mktemp("finetune_nemo")
    original = canary_nemo(root)
    imported = import_nemo(original, root / "imported")
    manifest = write_tiny_corpus(root / "data", num=6)
    return original, imported, finetune(root, imported, manifest) / "ckpt-3", manifest


def test_finetuned_checkpoint_keeps_the_imports_generation_rule_and_nemo_config(finetuned):
    _, imported, trained, _ = finetuned
    before, after = read_checkpoint_meta(imported), read_checkpoint_meta(trained)
    assert (
        after["extra"]["generation"]
        == before["extra"]["generation"]
        == {
            "rule": "nemo",
            "max_generation_delta": 6,
        }
    )
    assert after["extra"]["nemo"] == before["extra"]["nemo"]
    assert after["extra"]["source"] == before["extra"]["source"]
    assert after["frontend"] == before["frontend"]
    assert after["extra"]["step"] == 3 and "train_config" in after["extra"]


def test_import_train_export_gives_the_original_settings_with_the_trained_weights(finetuned, tmp_path):
    original, imported, trained, _ = finetuned
    exported = read_nemo(export_nemo(trained, tmp_path / "finetuned.nemo"))
    source = read_nemo(original)
    assert settings(exported.config) == settings(source.config)
    assert exported.config["decoding"] == GENERATION and exported.config["user_note"] == {"kept": True}
    assert exported.config["preprocessor"]["dither"] == 2e-5
    model = load_model(trained)
    want = to_nemo(model.state_dict(), model.config)
    start = to_nemo(load_model(imported).state_dict(), model.config)
    assert any(not torch.equal(want[k], start[k]) for k in want), "fine-tuning changed nothing"
    for k, v in want.items():
        assert torch.equal(exported.state[k], v), k
    # the exported fine-tuned model imports back to the same checkpoint settings
    back = import_nemo(tmp_path / "finetuned.nemo", tmp_path / "back")
    assert (
        read_checkpoint_meta(back)["extra"]["generation"]
        == read_checkpoint_meta(trained)["extra"]["generation"]
    )
