"""Distillation from a frozen teacher (``distill.*``, ``fastaed.train.distill``) on a tiny random Whisper:
the cached teacher equals the teacher run directly (cached == uncached), the teacher is never changed while
the student trains on unpadded input, the distillation loss goes down, a resumed run repeats the
uninterrupted one, and a cache that no longer matches the data is rebuilt rather than used."""

from __future__ import annotations

import hashlib
import math

import pytest
import torch
import torch.nn.functional as F

from fastaed.data.dataset import AEDDataset
from fastaed.data.index import build_index
from fastaed.formats import load_model, read_checkpoint_meta
from fastaed.model import distillation_loss
from fastaed.testing import write_tiny_corpus
from fastaed.train import train
from fastaed.train.config import ConfigError, TrainConfig
from fastaed.train.distill import CACHE_FILE, TeacherCache, teacher_frontend
from fastaed.train.metrics import METRICS_FILE
from fastaed.train.pretrained import load_pretrained
from tests import whisper_fixtures as wf
from tests.train import TEST_CONFIG, train_records

DISTILL = ["model.ctc_weight=null", "model.dropout=0.0", "specaugment.enabled=false", "optim.warmup_steps=0",
           "loss.label_smoothing=0.0", "optim.lr=3e-3"]  # fmt: skip


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """(imported tiny random Whisper checkpoint: padded front end, manifest of 8 tones with sentences)."""
    root = tmp_path_factory.mktemp("distill")
    return wf.imported_checkpoint(root), write_tiny_corpus(root / "data", num=8)


def config(pretrained, out_dir, *overrides: str) -> TrainConfig:
    ckpt, manifest = pretrained
    items = [f"data.train_manifests=[{manifest}]", "data.tokenizer=null", f"model.init_from={ckpt}",
             f"runtime.out_dir={out_dir}", f"distill.teacher={ckpt}", *DISTILL, *overrides]  # fmt: skip
    return TrainConfig.from_yaml(TEST_CONFIG, items)


def digest(folder) -> str:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return hashlib.sha256(b"".join(p.read_bytes() for p in files)).hexdigest()


def test_distillation_terms_vanish_for_a_student_equal_to_its_teacher():
    torch.manual_seed(0)
    logits, states = torch.randn(5, 11), torch.randn(5, 4)
    kl, l2 = distillation_loss(logits, logits.clone(), states, states.clone())
    assert abs(float(kl)) < 1e-5 and float(l2) == 0.0
    other = logits + torch.randn(5, 11)
    kl, l2 = distillation_loss(other, logits, states + 1.0, states)
    expected = F.kl_div(F.log_softmax(other, -1), F.log_softmax(logits, -1), log_target=True, reduction="sum")
    assert math.isclose(float(kl), float(expected), rel_tol=1e-5)
    assert math.isclose(float(l2), 5.0, rel_tol=1e-6)
    with pytest.raises(ValueError, match="disagree"):
        distillation_loss(logits, logits[:4], states, states)


def test_teacher_cache_equals_the_padded_teacher_run_directly(pretrained, tmp_path):
    ckpt, _ = pretrained
    train(config(pretrained, tmp_path / "run", "optim.max_steps=1"), resume="none")
    cache = TeacherCache.load(tmp_path / "run" / CACHE_FILE)
    assert cache is not None and cache.identity.teacher_input == "padded"
    tok = load_pretrained(config(pretrained, tmp_path / "x").model).tokenizer
    index = build_index([pretrained[1]], tok)
    dataset = AEDDataset(index, tok)
    teacher, frontend = load_model(ckpt).eval(), teacher_frontend(ckpt, "padded")
    batch = dataset.collate([dataset[i] for i in range(len(dataset))])
    with torch.no_grad():
        feats, lens = frontend(batch.audio, batch.audio_lens)
        assert feats.shape[1] == 3000  # the teacher saw Whisper's 30 s window
        direct = teacher(feats, lens, batch.dec_inputs, batch.dec_lens)  # (B, U, V)
        mask = torch.arange(direct.shape[1])[None, :] < batch.dec_lens[:, None]
        states = cache.rows(batch.indices, direct.shape[1], torch.device("cpu"))
        from_cache = F.linear(states, cache.weight, cache.bias)
    torch.testing.assert_close(from_cache[mask], direct[mask], atol=2e-2, rtol=2e-3)  # float16 states


def test_teacher_stays_frozen_while_the_unpadded_student_learns(pretrained, tmp_path):
    ckpt, _ = pretrained
    before = digest(ckpt)
    cfg = config(pretrained, tmp_path / "run", "optim.max_steps=24", "distill.ce_weight=0",
                 "distill.state_weight=1.0", "runtime.ckpt_every=0")  # fmt: skip
    summary = train(cfg, resume="none")
    assert digest(ckpt) == before
    out = summary["checkpoint"]
    assert read_checkpoint_meta(out)["frontend"]["input"] == "unpadded"
    assert read_checkpoint_meta(ckpt)["frontend"]["input"] == "padded"
    records = train_records(tmp_path / "run" / METRICS_FILE)
    kl = [records[s]["kl_loss"] for s in sorted(records)]
    assert all(r["state_loss"] is not None for r in records.values())
    first, last = sum(kl[:3]) / 3, sum(kl[-3:]) / 3
    assert last < 0.5 * first, (first, last)
    # With ce_weight 0 the objective is the distillation terms alone.
    r = records[1]
    assert math.isclose(r["loss"], r["kl_loss"] + r["state_loss"], rel_tol=1e-6)


def test_resumed_distillation_repeats_the_uninterrupted_run(pretrained, tmp_path):
    common = ["runtime.ckpt_every=3", "distill.state_weight=0.5", "distill.ce_weight=0.5"]
    train(config(pretrained, tmp_path / "ref", "optim.max_steps=6", *common), resume="none")
    train(config(pretrained, tmp_path / "run", "optim.max_steps=3", *common), resume="none")
    second = train(config(pretrained, tmp_path / "run", "optim.max_steps=6", *common), resume="auto")
    assert second["resumed_from"].endswith("ckpt-3")
    ref, got = train_records(tmp_path / "ref" / METRICS_FILE), train_records(tmp_path / "run" / METRICS_FILE)
    for step in ref:
        for key in ("loss", "kl_loss", "state_loss", "ce_loss"):
            assert math.isclose(ref[step][key], got[step][key], rel_tol=1e-5, abs_tol=1e-7), (step, key)
    ref_model, run_model = load_model(tmp_path / "ref" / "ckpt-6"), load_model(tmp_path / "run" / "ckpt-6")
    torch.testing.assert_close(ref_model.state_dict(), run_model.state_dict())


def test_a_cache_for_other_data_or_a_damaged_one_is_rebuilt(pretrained, tmp_path):
    run = tmp_path / "run"
    train(config(pretrained, run, "optim.max_steps=1"), resume="none")
    first = TeacherCache.load(run / CACHE_FILE)
    (run / CACHE_FILE).write_bytes(b"not a cache")
    train(config(pretrained, run, "optim.max_steps=1"), resume="none")
    rebuilt = TeacherCache.load(run / CACHE_FILE)
    assert rebuilt is not None and rebuilt.identity == first.identity
    torch.testing.assert_close(rebuilt.states, first.states)
    other = write_tiny_corpus(tmp_path / "other", num=5)
    cfg = config(pretrained, run, "optim.max_steps=1", f"data.train_manifests=[{other}]")
    train(cfg, resume="none")
    changed = TeacherCache.load(run / CACHE_FILE)
    assert changed.identity.items == 5 and changed.identity.index_key != first.identity.index_key


def test_distillation_config_rules(pretrained, tmp_path):
    with pytest.raises(ConfigError, match="teacher_input"):
        config(pretrained, tmp_path, "distill.teacher_input=sideways")
    with pytest.raises(ConfigError, match="not all 0"):
        config(pretrained, tmp_path, "distill.ce_weight=0", "distill.kl_weight=0")


def test_lazy_teacher_trains_on_the_same_numbers_as_the_cache_built_first(pretrained, tmp_path):
    common = ["optim.max_steps=4", "distill.state_weight=1.0", "runtime.num_workers=0"]
    train(config(pretrained, tmp_path / "before", *common), resume="none")
    train(config(pretrained, tmp_path / "lazy", *common, "distill.cache=lazy"), resume="none")
    assert not (tmp_path / "lazy" / CACHE_FILE).exists()
    a = train_records(tmp_path / "before" / METRICS_FILE)
    b = train_records(tmp_path / "lazy" / METRICS_FILE)
    for step in a:
        for key in ("kl_loss", "state_loss"):  # float16 states either way; batch shapes may differ
            assert math.isclose(a[step][key], b[step][key], rel_tol=1e-3, abs_tol=1e-5), (step, key)
