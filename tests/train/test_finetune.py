"""Fine-tuning a pretrained (imported) Whisper checkpoint under ``fastaed train``: the checkpoint's weights,
tokenizer (Whisper's 2-token English prompt) and front end (unpadded) are used, the encoder stays exactly as
imported while frozen, a resumed run repeats the uninterrupted one, and the run's checkpoints carry the
front end and tokenizer so ``Transcriber`` takes them as they are."""

from __future__ import annotations

import math

import pytest
import torch

from fastaed.data.tokenizer import load_tokenizer
from fastaed.data.whisper_tokenizer import WhisperTokenizer
from fastaed.decode.transcribe import DecodeConfig, Transcriber
from fastaed.formats import load_model, read_checkpoint_meta
from fastaed.testing import write_tiny_corpus
from fastaed.train import train
from fastaed.train.config import ConfigError, TrainConfig
from fastaed.train.metrics import METRICS_FILE
from tests import whisper_fixtures as wf
from tests.train import TEST_CONFIG, train_records

FINETUNE = ["model.ctc_weight=null", "model.dropout=0.1", "specaugment.enabled=false", "optim.warmup_steps=2"]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """(imported checkpoint, manifest): a tiny random Whisper written as an OpenAI .pt and imported."""
    root = tmp_path_factory.mktemp("finetune")
    ckpt = wf.imported_checkpoint(root)
    return ckpt, write_tiny_corpus(root / "data", num=8)


def config(pretrained, out_dir, *overrides: str) -> TrainConfig:
    ckpt, manifest = pretrained
    items = [
        f"data.train_manifests=[{manifest}]",
        "data.tokenizer=null",
        f"model.init_from={ckpt}",
        f"runtime.out_dir={out_dir}",
        *FINETUNE,
        *overrides,
    ]
    return TrainConfig.from_yaml(TEST_CONFIG, items)


def encoder_state(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.encoder.state_dict().items()}


def test_frozen_encoder_stays_as_imported_then_trains(pretrained, tmp_path):
    ckpt, _ = pretrained
    summary = train(config(pretrained, tmp_path / "run", "optim.max_steps=5", "optim.freeze_encoder_steps=3",
                           "runtime.ckpt_every=3"), resume="none")  # fmt: skip
    assert summary["steps"] == 5
    start = load_model(ckpt)
    frozen, after = load_model(tmp_path / "run" / "ckpt-3"), load_model(tmp_path / "run" / "ckpt-5")
    for k, v in encoder_state(start).items():
        assert torch.equal(frozen.encoder.state_dict()[k], v), k
    assert any(not torch.equal(after.encoder.state_dict()[k], v) for k, v in encoder_state(start).items())
    changed = [
        k for k, v in start.decoder.state_dict().items() if not torch.equal(frozen.decoder.state_dict()[k], v)
    ]
    assert changed, "the decoder trained while the encoder was frozen"
    records = train_records(tmp_path / "run" / METRICS_FILE)
    assert [records[s]["encoder_frozen"] for s in range(1, 6)] == [True, True, True, False, False]


def test_finetuned_checkpoint_carries_whisper_frontend_and_tokenizer(pretrained, tmp_path):
    train(config(pretrained, tmp_path / "run", "optim.max_steps=2"), resume="none")
    out = tmp_path / "run" / "ckpt-2"
    meta = read_checkpoint_meta(out)
    assert meta["frontend"]["kind"] == "whisper" and meta["frontend"]["input"] == "unpadded"
    tok = load_tokenizer(out / "tokenizer")
    assert isinstance(tok, WhisperTokenizer) and tok.prompt_length == 2
    assert tok.identity == load_tokenizer(pretrained[0] / "tokenizer").identity
    from fastaed.decode.transcribe import utterances_from_audio

    utts = utterances_from_audio(
        [pretrained[1].parent / "audio" / "u0.wav"], source_lang="en", target_lang="en", task="transcribe",
        pnc=True,
    )  # fmt: skip
    result = Transcriber(out, DecodeConfig(batch_size=1, progress=False)).run(utts)
    assert len(result.transcripts) == 1


def test_padded_input_trains_on_30s_frames(pretrained, tmp_path):
    cfg = config(pretrained, tmp_path / "run", "optim.max_steps=1", "model.frontend_input=padded")
    train(cfg, resume="none")
    record = train_records(tmp_path / "run" / METRICS_FILE)[1]
    assert read_checkpoint_meta(tmp_path / "run" / "ckpt-1")["frontend"]["input"] == "padded"
    assert record["loss"] is not None and math.isfinite(record["loss"])


def test_resumed_finetune_repeats_the_uninterrupted_run(pretrained, tmp_path):
    common = ["runtime.ckpt_every=3", "optim.freeze_encoder_steps=2"]
    train(config(pretrained, tmp_path / "ref", "optim.max_steps=6", *common), resume="none")
    train(config(pretrained, tmp_path / "run", "optim.max_steps=3", *common), resume="none")
    second = train(config(pretrained, tmp_path / "run", "optim.max_steps=6", *common), resume="auto")
    assert second["resumed_from"].endswith("ckpt-3") and second["steps"] == 6
    ref, got = train_records(tmp_path / "ref" / METRICS_FILE), train_records(tmp_path / "run" / METRICS_FILE)
    assert sorted(ref) == sorted(got) == list(range(1, 7))
    for step in ref:
        a, b = ref[step], got[step]
        assert (a["bucket"], a["batch_sha1"]) == (b["bucket"], b["batch_sha1"]), step
        assert math.isclose(a["loss"], b["loss"], rel_tol=1e-5, abs_tol=1e-6), (step, a["loss"], b["loss"])
        assert math.isclose(a["grad_norm"], b["grad_norm"], rel_tol=1e-4, abs_tol=1e-6), step
    torch.testing.assert_close(
        load_model(tmp_path / "ref" / "ckpt-6").state_dict(),
        load_model(tmp_path / "run" / "ckpt-6").state_dict(),
    )


def test_init_from_config_rules(pretrained, tmp_path):
    with pytest.raises(ConfigError, match="leave it null with model.init_from"):
        config(pretrained, tmp_path, "data.tokenizer=somewhere")
    with pytest.raises(ConfigError, match="cannot gain a CTC head"):
        config(pretrained, tmp_path, "model.ctc_weight=0.3")


def test_oom_split_and_bad_audio_policy_apply_to_finetuning(pretrained, tmp_path):
    # No dropout: a split draws its masks in another order; the losses are otherwise the same.
    steps = ("optim.max_steps=2", "model.dropout=0.0")
    whole = train(config(pretrained, tmp_path / "whole", *steps), resume="none")
    split = train(
        config(pretrained, tmp_path / "split", *steps, "debug.oom_above_batch_size=1"), resume="none"
    )
    a, b = train_records(tmp_path / "whole" / METRICS_FILE), train_records(tmp_path / "split" / METRICS_FILE)
    assert sum(r["oom_splits"] for r in b.values()) > 0 and whole["steps"] == split["steps"] == 2
    for step in a:
        assert math.isclose(a[step]["loss"], b[step]["loss"], rel_tol=1e-5), step
    (pretrained[1].parent / "audio" / "u3.wav").rename(tmp_path / "u3.wav")  # one file goes missing
    try:
        skipped = train(
            config(pretrained, tmp_path / "skip", "optim.max_steps=8", "data.on_bad_input=skip"),
            resume="none",
        )
    finally:
        (tmp_path / "u3.wav").rename(pretrained[1].parent / "audio" / "u3.wav")
    assert skipped["steps"] == 8 and skipped["bad_input"]["audio_skipped"] >= 1
