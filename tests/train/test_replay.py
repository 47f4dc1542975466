"""Replay in a distilled fine-tune (``distill.replay_manifests``, ``fastaed.train.replay``) on a tiny random
Whisper: replay clips are trained on with the teacher's own transcripts (never the manifest's), every clip
read is either kept or counted out, the labels are reused while teacher and manifest are unchanged and
redone when the manifest changes, and the bench keeps replay audio apart from the real speech it scores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fastaed.bench.finetune import FinetuneBenchConfig, check_replay_apart, replay_overrides
from fastaed.decode.transcribe import DecodeConfig, Transcriber, utterances_from_audio
from fastaed.testing import write_tiny_corpus
from fastaed.train import train
from fastaed.train.config import ConfigError, TrainConfig
from fastaed.train.distill import CACHE_FILE, TeacherCache
from fastaed.train.replay import REPLAY_DIR
from tests import whisper_fixtures as wf
from tests.train import TEST_CONFIG

QUICK = ["model.ctc_weight=null", "specaugment.enabled=false", "optim.max_steps=2", "runtime.num_workers=0",
         "runtime.progress=false", "runtime.ckpt_every=0"]  # fmt: skip


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(tiny imported Whisper, its training manifest, replay audio: other clips, 3 without transcripts)."""
    root = tmp_path_factory.mktemp("replay")
    ckpt = wf.imported_checkpoint(root)
    data = write_tiny_corpus(root / "data", num=6)
    other = write_tiny_corpus(root / "other", num=10, seed=1)
    rows = [json.loads(line) for line in other.read_text().splitlines()]
    for r in rows[:3]:
        r.pop("text")
    other.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return ckpt, data, other


def config(setup, out_dir: Path, *overrides: str, replay: str | None = None) -> TrainConfig:
    ckpt, data, other = setup
    items = [f"data.train_manifests=[{data}]", "data.tokenizer=null", f"model.init_from={ckpt}",
             f"runtime.out_dir={out_dir}", f"distill.teacher={ckpt}",
             f"distill.replay_manifests=[{replay or other}]", *QUICK, *overrides]  # fmt: skip
    return TrainConfig.from_yaml(TEST_CONFIG, items)


def teacher_texts(ckpt: Path, manifest: Path) -> dict[str, str | None]:
    """audio path -> the teacher's greedy padded transcript (None where the loop guard ended it)."""
    audio = [Path(manifest.parent, json.loads(x)["audio_filepath"]).resolve() for x in manifest.open()]
    utts = utterances_from_audio(audio, source_lang="en", target_lang="en", task="transcribe", pnc=True)
    config = DecodeConfig(batch_size=4, device="cpu", whisper_input="padded", loop_guard="on", progress=False)
    out = Transcriber(ckpt, config).run(utts).transcripts
    return {
        str(Path(t.utterance.audio_filepath).resolve()): (None if t.guard is not None else t.text.strip())
        for t in out
    }


def test_replay_clips_train_with_the_teachers_transcripts(setup, tmp_path):
    ckpt, data, other = setup
    summary = train(config(setup, tmp_path / "run"), resume="none")
    report = summary["replay"][str(other)]
    rows = [json.loads(x) for x in (tmp_path / "run" / REPLAY_DIR / f"0-{other.stem}.jsonl").open()]
    assert report["clips"] == len(rows) > 0
    assert report["read"] == 10 == len(rows) + sum(report["dropped"].values())  # every clip kept or counted
    expected = teacher_texts(ckpt, other)
    assert all(r["target_source"] == "teacher" and r["text"] == expected[r["audio_filepath"]] for r in rows)
    references = {str(Path(other.parent, r["audio_filepath"]).resolve()): r.get("text")
                  for r in map(json.loads, other.read_text().splitlines())}  # fmt: skip
    labelled = [r for r in rows if references[r["audio_filepath"]]]
    assert labelled and all(r["text"] != references[r["audio_filepath"]] for r in labelled)
    index = summary["bad_input"]["train_index"]
    assert index["skipped"] == 0  # the replay rows are valid training lines
    cache = TeacherCache.load(tmp_path / "run" / CACHE_FILE)  # indexed by the training index: data + replay
    assert cache is not None and cache.identity.items == 6 + len(rows)


def test_replay_labels_are_reused_until_the_manifest_changes(setup, tmp_path, monkeypatch):
    ckpt, data, other = setup
    train(config(setup, tmp_path / "run"), resume="none")
    labelled = tmp_path / "run" / REPLAY_DIR / f"0-{other.stem}.jsonl"
    first = labelled.read_text()
    calls = []
    import fastaed.train.teacher_labels as labels_module

    real = labels_module.pseudo_label
    monkeypatch.setattr(labels_module, "pseudo_label", lambda *a, **k: calls.append(1) or real(*a, **k))
    train(config(setup, tmp_path / "run"), resume="none")
    assert not calls and labelled.read_text() == first
    changed = tmp_path / "changed.jsonl"  # the same clips by absolute path: another manifest
    rows = [json.loads(x) for x in other.read_text().splitlines()]
    for r in rows:
        r["audio_filepath"] = str(Path(other.parent, r["audio_filepath"]).resolve())
    changed.write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = train(config(setup, tmp_path / "run2", replay=f"{changed}:3"), resume="none")
    assert calls and summary["replay"][str(changed)]["read"] == 10


def test_replay_needs_a_teacher(setup, tmp_path):
    with pytest.raises(ConfigError, match="replay_manifests needs distill.teacher"):
        config(setup, tmp_path, "distill.teacher=null")


def test_bench_refuses_replay_audio_it_also_scores(setup, tmp_path):
    _, data, other = setup
    clip = json.loads(data.read_text().splitlines()[3])
    mixed = tmp_path / "mixed.jsonl"  # line 2: a scored clip (by absolute path, without its transcript)
    scored = {k: v for k, v in clip.items() if k != "text"} | {
        "audio_filepath": str(data.parent / clip["audio_filepath"])
    }
    mixed.write_text(other.read_text().splitlines()[0] + "\n" + json.dumps(scored) + "\n")
    both = FinetuneBenchConfig(train_manifests=(other,), real_manifests=(data,), replay_manifests=(mixed,))
    with pytest.raises(
        ValueError, match=r"mixed.jsonl:2: replay audio .*u3.wav is also scored .*train.jsonl:4"
    ):
        check_replay_apart(both)
    apart = FinetuneBenchConfig(train_manifests=(data,), real_manifests=(data,), replay_manifests=(other,))
    check_replay_apart(apart)
    # 6 training clips, 10 replay clips, a 20% share: each replay clip is drawn max(0.25 * 6 / 10, 1) times
    (override,) = replay_overrides(apart)
    assert override == f"distill.replay_manifests=[{other}:1]"
    share = FinetuneBenchConfig(train_manifests=(data,) * 8, replay_manifests=(other,), replay_share=0.5)
    assert replay_overrides(share) == [f"distill.replay_manifests=[{other}:4.8]"]
