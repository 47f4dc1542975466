"""Batch-size profiles for fine-tuning an imported Whisper checkpoint (``model.init_from``): the synthetic
step computes Whisper's front end (real frames unpadded, 3000 frames padded) with the tokenizer's 2-token
prompt; the trainer accepts a profile made by ``fastaed batch-sizes --config`` for its run and trains at its
sizes, and refuses one made for the other front-end input or another model, saying what differs."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest
import torch

from fastaed.cli.main import main
from fastaed.data.frontend import build_frontend
from fastaed.data.tokenizer import load_tokenizer
from fastaed.data.whisper_features import WhisperFeatureConfig
from fastaed.sampling.bins import Bins
from fastaed.testing import write_tiny_corpus
from fastaed.train.config import ModelSection, TrainConfig
from fastaed.train.loop import train
from fastaed.train.profile import BatchSizeProfile, ProfileIdentity, ProfileMismatchError, check_profile
from fastaed.train.profile.memory import OncePerLength
from fastaed.train.profile.run import ProfileSettings, bucket_shapes, open_profiler, resolve_run
from tests import whisper_fixtures as wf
from tests.train import TEST_CONFIG, train_records

# The tiny corpus of 16 utterances: 0.5-4.25 s, U (Whisper BPE of the fixture, 2-token prompt) 15-34.
BINS = Bins(duration_edges=[2.0, 4.25], max_u=[[40], [40]], max_tps=None)
BUDGET_GIB = "0.05"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(root, checkpoint, fine-tuning config file, bins file): a tiny random Whisper imported as
    ``fastaed import whisper`` writes it (English-only: a 2-token prompt), and the config naming it."""
    root = tmp_path_factory.mktemp("finetune-profile")
    ckpt = wf.imported_checkpoint(root)
    manifest = write_tiny_corpus(root / "data", num=16)
    overrides = [
        f"data.train_manifests=[{manifest}]", "data.tokenizer=null", f"model.init_from={ckpt}",
        "model.ctc_weight=null", "model.dropout=null", "specaugment.enabled=false",
        "sampler.max_duration=10.0", "runtime.ckpt_every=0",
    ]  # fmt: skip
    config = TrainConfig.from_yaml(TEST_CONFIG, overrides).to_yaml(root / "finetune.yaml")
    bins = root / "bins.json"
    bins.write_text(BINS.to_json())
    return root, ckpt, config, bins


def make_profile(setup, name: str, *argv: str) -> BatchSizeProfile:
    root, _, _, bins = setup
    out = root / name
    if not out.exists():  # module-scoped files: each profile is made once
        argv = ("batch-sizes", *argv, "--bins", str(bins), "--memory-budget", BUDGET_GIB, "--no-progress")
        with pytest.raises(SystemExit) as info:
            main([*argv, "--out", str(out)])
        assert info.value.code == 0
    return BatchSizeProfile.load(out)


def config_profile(setup, frontend_input: str = "unpadded") -> BatchSizeProfile:
    """``fastaed batch-sizes --config finetune.yaml model.frontend_input=...``."""
    config = str(setup[2])
    return make_profile(
        setup, f"{frontend_input}.json", "--config", config, f"model.frontend_input={frontend_input}"
    )


def run_config(setup, out, *overrides: str) -> TrainConfig:
    """The fine-tuning config; no batch budget (``max_duration: null``): the profile alone sizes batches."""
    return TrainConfig.from_yaml(
        setup[2], [f"runtime.out_dir={out}", "sampler.max_duration=null", *overrides]
    )


@pytest.mark.parametrize("frontend_input", ["unpadded", "padded"])
def test_synthetic_step_computes_whisper_features_with_the_tokenizers_prompt(setup, frontend_input):
    _, ckpt, _, _ = setup
    run = resolve_run(ModelSection(init_from=str(ckpt), frontend_input=frontend_input))
    step = open_profiler(run, device="cpu", budget=None, specaugment=False).step
    tokenizer = load_tokenizer(ckpt / "tokenizer")
    assert step.prompt_length == tokenizer.prompt_length == 2 and run.prompt == "whisper-2"
    assert step.vocab_size == run.model.vocab_size == tokenizer.vocab_size
    shape = step.shape(1.37, 10)
    batch = step.batch(3, shape)
    step.forward(batch)  # the trainer's piece_forward fills in the features
    real, real_lens = build_frontend(run.frontend)(batch.audio, batch.audio_lens)
    frames = 3000 if frontend_input == "padded" else 21920 // 160
    assert batch.feats.shape == real.shape == (3, frames, 16)
    assert batch.feat_lens.tolist() == real_lens.tolist() == [frames] * 3
    # The real front end's features of the first row in every row (computed once per distinct length).
    torch.testing.assert_close(batch.feats, real[:1].expand_as(real))
    assert shape.t == (30.0 if frontend_input == "padded" else 1.37)  # the memory model's T: feature seconds
    assert batch.prompt_lens.tolist() == [2, 2, 2]
    assert [s.out_len for s in bucket_shapes(Bins([1.0], [[1]], None), step)] == [3]  # U >= prompt + EOS
    with pytest.raises(ValueError, match="shorter than the prompt"):
        step.batch_for([1.0], [2])


@pytest.mark.parametrize("frontend_input", ["unpadded", "padded"])
def test_once_per_length_front_end_equals_the_real_one_on_mixed_lengths(frontend_input):
    fe = WhisperFeatureConfig(n_mels=16, input=frontend_input)
    gen = torch.Generator().manual_seed(0)
    lens = torch.tensor([8000, 16000, 8000, 12000, 16000])
    waves = torch.randn(5, 16000, generator=gen) * (torch.arange(16000) < lens[:, None])
    once, once_lens = OncePerLength(build_frontend(fe))(waves, lens)
    real, real_lens = build_frontend(fe)(waves[[0, 1, 0, 3, 1]], lens)  # the rows once-per-length reuses
    torch.testing.assert_close(once, real)
    assert once_lens.tolist() == real_lens.tolist() and once.shape[0] == 5


def test_profile_identity_is_the_fine_tuning_runs(setup):
    _, ckpt, _, _ = setup
    profile = config_profile(setup)
    ident = profile.identity
    tokenizer = load_tokenizer(ckpt / "tokenizer")
    assert (ident.prompt, ident.frontend, ident.tokenizer) == (
        "whisper-2",
        "whisper-unpadded",
        tokenizer.identity,
    )
    assert min(profile.batch_sizes) >= 2 and all(b.fill >= 0.85 for b in profile.buckets)
    # --model DIR with the same input: the same identity; without: the checkpoint's stored (padded) input.
    same = make_profile(setup, "model-unpadded.json", "--model", str(ckpt), "--frontend-input", "unpadded")
    assert same.identity == ident
    stored = make_profile(setup, "model-stored.json", "--model", str(ckpt))
    assert stored.identity.frontend == "whisper-padded"


def test_trainer_trains_at_the_sizes_of_a_profile_made_for_its_init_from_config(setup, tmp_path):
    """The profile passes the trainer's identity check unforced; edited sizes [3, 2] (far below the ~50 the
    budget chose) show the trainer batches each bucket at the profile's size, not by any rule of its own."""
    doc = config_profile(setup).to_dict()
    assert min(doc["batch_sizes"]) > 3
    doc["batch_sizes"] = [3, 2]
    path = tmp_path / "sizes.json"
    path.write_text(json.dumps(doc))
    summary = train(run_config(setup, tmp_path / "run", f"sampler.profile={path}", "optim.max_steps=7"))
    assert summary["steps"] == 7
    seen: dict[int, set[int]] = {}
    for record in train_records(tmp_path / "run" / "metrics.jsonl").values():
        seen.setdefault(record["bucket"], set()).add(record["batch_size"])
    assert seen == {0: {3, 2}, 1: {2}}, seen  # 8 utterances per bucket: 3 + 3 + 2, and 2 + 2 + 2 + 2


def test_padded_profile_is_refused_for_an_unpadded_run_and_the_reverse(setup, tmp_path):
    padded, unpadded = config_profile(setup, "padded"), config_profile(setup, "unpadded")
    # 3000 frames per utterance: memory does not shrink with the audio, so far fewer fit.
    assert all(4 * p < u for p, u in zip(padded.batch_sizes, unpadded.batch_sizes))
    assert padded.identity.frontend == "whisper-padded" and padded.identity.prompt == "whisper-2"
    cases = [(setup[0] / "padded.json", "unpadded"), (setup[0] / "unpadded.json", "padded")]
    for path, run_input in cases:
        cfg = run_config(
            setup, tmp_path / run_input, f"sampler.profile={path}", f"model.frontend_input={run_input}"
        )
        with pytest.raises(ProfileMismatchError) as err:
            train(cfg, resume="none")
        message = str(err.value)
        made = "unpadded" if run_input == "padded" else "padded"
        assert f"frontend: profile 'whisper-{made}' != run 'whisper-{run_input}'" in message
        assert (
            str(path) in message and "model.frontend_input" in message and "model_config_hash" not in message
        )


def test_profile_of_another_model_is_refused(setup, tmp_path):
    other = make_profile(setup, "preset.json", "--model", "test")
    cfg = run_config(setup, tmp_path / "run", f"sampler.profile={setup[0] / 'preset.json'}")
    with pytest.raises(ProfileMismatchError) as err:
        train(cfg, resume="none")
    message = str(err.value)
    assert "model_config_hash" in message and "prompt: profile 'canary-5' != run 'whisper-2'" in message
    assert other.identity.frontend is None and "frontend: profile None != run 'whisper-unpadded'" in message


def test_profiles_without_a_frontend_field_still_match_runs_from_scratch(tmp_path):
    """Profiles written before the front end was part of the identity hold none: a fastaed log-mel run (from
    scratch, ``frontend=None``) accepts them as before, a Whisper run does not."""
    from fastaed.model import preset_config

    model = preset_config("test", 64)
    scratch = ProfileIdentity.for_training(model, "cpu", "fp32", _Tok("tok123"), None)
    assert scratch.frontend is None and scratch.prompt == "canary-5"
    old = {k: v for k, v in asdict(scratch).items() if k != "frontend"}
    path = tmp_path / "old.json"
    profile = BatchSizeProfile(BINS, [4, 3], scratch, 1 << 30, 0.15, int(0.85 * (1 << 30)), "model", [])
    path.write_text(json.dumps({**profile.to_dict(), "identity": old}))
    assert check_profile(path, scratch) == []
    assert BatchSizeProfile.load(path).identity == scratch


class _Tok:
    """A tokenizer as the identity sees it: fastaed's SentencePiece one (Canary's 5-token prompt)."""

    def __init__(self, identity: str):
        self.identity, self.prompt_length = identity, 5


def test_buckets_the_whisper_model_cannot_take_get_no_batch(setup):
    """Past the encoder's 1500 positions (30 s unpadded) or Whisper's 30 s window (padded) no batch trains:
    batch size 0 with the reason, no trial; the other buckets are profiled as usual."""
    _, ckpt, _, _ = setup
    bins = Bins(duration_edges=[1.0, 35.0], max_u=[[12, 20], [30, 40]], max_tps=None)
    for frontend_input, why in [("unpadded", "1750 encoder positions"), ("padded", "30 s padded input")]:
        run = resolve_run(ModelSection(init_from=str(ckpt), frontend_input=frontend_input))
        profiler = open_profiler(run, device="cpu", budget=float(BUDGET_GIB), specaugment=False)
        profile = profiler.profile(bins, ProfileSettings(profiler.budget_bytes), progress=False)
        assert profile.batch_sizes[2:] == [0, 0] and min(profile.batch_sizes[:2]) >= 2
        assert all(why in b.note and b.trials == 0 for b in profile.buckets[2:])
        assert all(b.note is None and b.fill >= 0.85 for b in profile.buckets[:2])
