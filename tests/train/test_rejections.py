"""One bad utterance never stops a job: clips no batch can hold, clips too short for the encoder and
transcripts that cannot fit their audio are rejected before the first step, counted by reason, printed at the
start and end of the run and written to ``summary.json`` with the bad-input skips."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fastaed.cli.train import main
from fastaed.constants import HOP_LENGTH, SAMPLE_RATE
from fastaed.model import build_model
from fastaed.model.subsampling import conv_output_length
from fastaed.sampling import Bins
from fastaed.testing import write_tone
from fastaed.train.batches import length_limits
from fastaed.train.loop import train
from tests.train import TEST_CONFIG, data_overrides, make_config, tiny_data

CHATTY = ("The quick brown fox jumps over the lazy dog. " * 45)[:2000]


def entry(path: str, seconds: float, text: str) -> str:
    return json.dumps(
        {"audio_filepath": path, "duration": seconds, "text": text, "source_lang": "en", "target_lang": "en"}
    )


def add_bad_lines(manifest: Path) -> Path:
    """The tiny corpus plus a clip over the 4 s budget of configs/train_test.yaml (a 61 s clip under a 60 s
    one), a 0.04 s clip (1 encoder frame), a 2,000-character line on 1 s, and a malformed line."""
    root = manifest.parent
    odd = {"long.wav": 5.0, "short.wav": 0.04, "chatty.wav": 1.0}
    for name, seconds in odd.items():
        write_tone(root / "audio" / name, seconds)
    lines = [
        entry("audio/long.wav", 5.0, "a long clip"),
        entry("audio/short.wav", 0.04, "a"),
        entry("audio/chatty.wav", 1.0, CHATTY),
        '{"audio_filepath": "audio/u0.wav", "duration": ',
    ]
    out = root / "odd.jsonl"
    out.write_text(manifest.read_text() + "\n".join(lines) + "\n")
    return out


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    manifest, tok_dir = tiny_data(tmp_path_factory.mktemp("rejections"))
    return add_bad_lines(manifest), tok_dir


def run_cli(manifest: Path, tok_dir: Path, out: Path, *overrides: str) -> dict:
    argv = ["--config", str(TEST_CONFIG), *data_overrides(manifest, tok_dir, out), *overrides]
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "data.on_bad_input=skip", "runtime.ckpt_every=0", "optim.max_steps=4"])
    assert exit_info.value.code == 0
    return json.loads((out / "summary.json").read_text())


def test_untrainable_utterances_are_rejected_counted_and_reported(data, tmp_path, capsys):
    manifest, tok_dir = data
    summary = run_cli(manifest, tok_dir, tmp_path / "run")
    assert summary["steps"] == 4 and summary["stopped_by"] == "max_steps"
    rejected = summary["rejected"]
    assert {k: v for k, v in rejected["by_reason"].items() if v} == {
        "too_short": 1,
        "tokens_exceed_frames": 1,
        "over_budget": 1,
    }
    assert rejected["total"] == 3
    assert summary["bad_input"]["skipped"] == 1 and summary["bad_input"]["by_reason"] == {"malformed_json": 1}
    out = capsys.readouterr().out
    start = next(line for line in out.splitlines() if line.startswith("left out:"))  # before step 1
    for reason in ("malformed_json 1", "too_short 1", "tokens_exceed_frames 1", "over_budget 1"):
        assert reason in start
    end = out[out.index("run summary") :]  # the closing table
    assert "rejected by the sampler" in end and "3 (" in end and "bad input skipped" in end
    assert "over_budget 1" in end and "malformed_json 1" in end


def test_given_bins_wider_than_the_budget_reject_their_buckets_with_a_note(data, tmp_path, capsys):
    manifest, tok_dir = data
    # The last bucket (2 s, 4.5 s] cannot hold one example within 4 s: its 2.25 s clip goes, with a note.
    bins = Bins(duration_edges=[1.5, 2.0, 4.5], max_u=[[400], [400], [400]], max_tps=None)
    path = bins.save(tmp_path / "bins.json")
    summary = run_cli(manifest, tok_dir, tmp_path / "run", f"sampler.bins={path}")
    assert summary["steps"] == 4 and summary["rejected"]["by_reason"]["over_budget"] == 2
    out = capsys.readouterr().out
    assert "note: 1 of 3 buckets cannot hold one example" in out and "over_budget" in out


def test_nothing_trainable_names_a_manifest_line(tmp_path):
    manifest, tok_dir = tiny_data(tmp_path, num=1)
    write_tone(manifest.parent / "audio" / "long.wav", 5.0)
    only_long = manifest.parent / "long.jsonl"
    only_long.write_text(entry("audio/long.wav", 5.0, "a long clip") + "\n")
    cfg = make_config(only_long, tok_dir, tmp_path / "run")
    with pytest.raises(ValueError, match=r"no trainable utterance.*over_budget 1.*long\.jsonl:1"):
        train(cfg)


def test_length_limits_match_the_model_encoder_frames():
    cfg = make_config(Path("m.jsonl"), Path("tok"), Path("out"))
    limits = length_limits(cfg)
    stages = cfg.model.model_config(None).encoder.subsampling_stages
    samples = np.arange(0, 20_000, 7)
    want = [conv_output_length(n // HOP_LENGTH + 1, stages) for n in samples.tolist()]
    assert limits.encoder_frames(samples / SAMPLE_RATE).tolist() == want
    assert limits.encoder_frames(np.array([limits.min_duration])).tolist() == [limits.min_encoder_frames]


def test_the_shortest_admitted_clip_trains_alone_and_a_shorter_one_would_crash():
    # Why ``too_short`` exists: a lone 1-frame utterance breaks the conformer conv module's BatchNorm.
    cfg = make_config(Path("m.jsonl"), Path("tok"), Path("out"))
    model = build_model(cfg.model.model_config(64)).train()
    shortest = round(length_limits(cfg).min_duration * SAMPLE_RATE)
    for samples in (shortest, shortest - 1):
        frames = samples // HOP_LENGTH + 1
        feats, lens = torch.randn(1, frames, model.config.encoder.n_mels), torch.tensor([frames])
        if samples == shortest:
            assert model.encode(feats, lens)[1].tolist() == [2]
        else:
            with pytest.raises(ValueError, match="more than 1 value per channel"):
                model.encode(feats, lens)


def test_whisper_clips_past_its_30s_positions_are_rejected_as_too_long():
    from fastaed.model import whisper_config
    from fastaed.sampling.limits import LengthLimits
    from fastaed.train.batches import length_limits
    from fastaed.train.config import TrainConfig

    cfg = TrainConfig.from_dict({"data": {"tokenizer": "t", "train_manifests": ["m"]}})
    sizes = {"d_model": 64, "n_heads": 4, "encoder_layers": 1, "decoder_layers": 1, "vocab_size": 100}
    model = whisper_config(n_mels=80, audio_positions=1500, text_positions=32, name="w", **sizes)
    limits = length_limits(cfg, model, prompt_length=2)
    assert limits.max_input_s == 30.0
    masks = limits.violations(np.array([29.9, 30.0, 30.28]), np.array([5, 5, 5]))
    assert masks["too_long"].tolist() == [False, False, True]
    assert LengthLimits().violations(np.array([300.0]), np.array([5]))["too_long"].tolist() == [False]
