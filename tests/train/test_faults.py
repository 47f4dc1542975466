"""Faults: an OOM splits the batch without changing the gradient, NaN losses are skipped then fatal, and bad
audio follows the on_bad_input policy (counted under skip, a clear error under error)."""

from __future__ import annotations

import contextlib
import functools

import pytest
import torch

from fastaed.data.dataset import AEDDataset
from fastaed.data.errors import BadInputError
from fastaed.data.features import LogMelFeatures
from fastaed.data.index import build_index
from fastaed.data.tokenizer import Tokenizer
from fastaed.model import build_model
from fastaed.train.config import DebugConfig, LossConfig
from fastaed.train.faults import (
    FaultInjector,
    NonFiniteGuard,
    NonFiniteLossError,
    UtteranceOOMError,
    accumulate_with_oom_split,
    is_oom,
    split_batch,
)
from fastaed.train.loop import train
from fastaed.train.metrics import batch_stats
from fastaed.train.step import piece_forward
from tests.train import make_config, tiny_data, train_records


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    manifest, tok_dir = tiny_data(root)
    tok = Tokenizer.load(tok_dir)
    index = build_index([manifest], tok, use_cache=False)
    dataset = AEDDataset(index, tok)
    cfg = make_config(manifest, tok_dir, root / "unused")
    torch.manual_seed(0)
    # eval mode: batch norm is a per-frame affine map, so a split batch must give the same gradient exactly
    model = build_model(cfg.model.model_config(tok.vocab_size)).eval()
    return manifest, tok_dir, dataset, model


def _gradients(dataset, model, debug: DebugConfig):
    batch = dataset.collate([dataset[i] for i in range(len(dataset))])  # all 8 utterances, fresh features
    norm = batch_stats(batch, mask_prompt=True)[:2].float()
    injector = FaultInjector(debug)
    forward = functools.partial(
        piece_forward,
        model=model,
        frontend=LogMelFeatures().eval(),
        specaug=None,
        generator=torch.Generator().manual_seed(0),
        norm=norm,
        loss_cfg=LossConfig(),
        ctc_weight=model.config.ctc_weight,
        injector=injector,
        step=1,
        autocast=contextlib.nullcontext,
    )
    model.zero_grad(set_to_none=True)
    kept, splits = accumulate_with_oom_split(
        [batch], forward, zero_grad=lambda: model.zero_grad(set_to_none=True), backward=injector.backward
    )
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return grads, torch.stack(kept).sum(0), splits


@pytest.mark.parametrize("phase", ["forward", "backward"])
def test_oom_split_gives_the_unsplit_gradient_and_is_counted(setup, phase):
    _, _, dataset, model = setup
    ref_grads, ref_loss, ref_splits = _gradients(dataset, model, DebugConfig())
    grads, loss, splits = _gradients(dataset, model, DebugConfig(oom_above_batch_size=2, oom_phase=phase))
    assert ref_splits == 0
    assert splits == 3  # 8 -> 4 + 4 -> 2 + 2 + 2 + 2
    assert torch.allclose(loss, ref_loss, rtol=1e-5, atol=1e-6)
    assert grads.keys() == ref_grads.keys()
    for name, g in grads.items():
        assert torch.allclose(g, ref_grads[name], rtol=1e-4, atol=1e-6), name


def test_oom_on_one_utterance_names_it(setup):
    _, _, dataset, model = setup
    with pytest.raises(UtteranceOOMError, match=r"single utterance, #\d+ \(\d+\.\d+ s, U=\d+\)"):
        _gradients(dataset, model, DebugConfig(oom_above_batch_size=0))


def test_what_counts_as_an_oom():
    assert is_oom(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_oom(RuntimeError("CUDA error: out of memory"))
    assert is_oom(RuntimeError("cuFFT error: CUFFT_INTERNAL_ERROR"))
    assert not is_oom(RuntimeError("shape mismatch"))
    assert not is_oom(ValueError("out of memory"))  # only runtime errors come from the allocator


def test_split_batch_trims_each_half_to_its_own_lengths(setup):
    _, _, dataset, _ = setup
    batch = dataset.collate([dataset[i] for i in (0, 7, 1)])  # short, long, short
    a, b = split_batch(batch)
    assert a.indices == [0, 7] and b.indices == [1]
    assert b.audio.shape[1] == int(b.audio_lens.max()) < batch.audio.shape[1]
    assert b.tokens.shape[1] == int(b.token_lens.max())


def test_nonfinite_guard_counts_and_resets():
    guard = NonFiniteGuard(max_consecutive=2)
    assert guard.check(True, 1) and not guard.check(False, 2) and guard.check(True, 3)
    assert not guard.check(False, 4)
    with pytest.raises(NonFiniteLossError, match=r"2 consecutive .* \(steps 4\.\.5"):
        guard.check(False, 5)
    assert guard.skipped == 3


def test_injected_oom_during_training_is_split_and_logged(setup, tmp_path):
    manifest, tok_dir, _, _ = setup
    cfg = make_config(
        manifest, tok_dir, tmp_path / "run", "debug.oom_above_batch_size=1", "optim.max_steps=4"
    )
    summary = train(cfg, resume="none")
    records = train_records(tmp_path / "run" / "metrics.jsonl")
    assert summary["steps"] == 4 and summary["oom_splits"] > 0
    assert sum(r["oom_splits"] for r in records.values()) == summary["oom_splits"]
    assert all(r["loss"] is not None for r in records.values())  # nothing was dropped or skipped


def test_nan_loss_skips_the_step_then_aborts_after_k_in_a_row(setup, tmp_path):
    manifest, tok_dir, _, _ = setup
    cfg = make_config(manifest, tok_dir, tmp_path / "once", "debug.nan_loss_steps=[2]", "optim.max_steps=4")
    summary = train(cfg, resume="none")
    records = train_records(tmp_path / "once" / "metrics.jsonl")
    assert summary["steps"] == 4 and summary["nonfinite_skipped"] == 1
    assert records[2]["skipped_step"] and records[2]["loss"] is None
    assert not records[3]["skipped_step"]

    cfg = make_config(
        manifest, tok_dir, tmp_path / "many", "debug.nan_loss_steps=[2,3,4]", "optim.max_steps=6"
    )
    with pytest.raises(NonFiniteLossError, match=r"3 consecutive steps .* \(steps 2\.\.4"):
        train(cfg, resume="none")


def test_missing_audio_is_counted_under_skip_and_a_clear_error_otherwise(tmp_path):
    manifest, tok_dir = tiny_data(tmp_path)
    (manifest.parent / "audio" / "u3.wav").unlink()
    cfg = make_config(manifest, tok_dir, tmp_path / "skip", "data.on_bad_input=skip", "optim.max_steps=6")
    summary = train(cfg, resume="none")
    assert summary["steps"] == 6
    assert summary["bad_input"]["audio_by_reason"] == {"missing_audio": summary["bad_input"]["audio_skipped"]}
    assert summary["bad_input"]["audio_skipped"] >= 1  # once per epoch that reached it
    records = train_records(tmp_path / "skip" / "metrics.jsonl")
    assert sum(r["bad_input_skipped"] for r in records.values()) == summary["bad_input"]["audio_skipped"]

    cfg = make_config(manifest, tok_dir, tmp_path / "error", "optim.max_steps=6")
    with pytest.raises(BadInputError, match=r"train\.jsonl:4: .*u3\.wav.*\[missing_audio\]"):
        train(cfg, resume="none")
