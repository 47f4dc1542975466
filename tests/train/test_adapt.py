"""``fastaed adapt`` end to end on a tiny random Whisper: clips without a transcript get the teacher's, a
looping pseudo-label is left out and counted, the result is an ordinary unpadded checkpoint with its
summary, a second run with the same arguments resumes instead of starting over, and a user's folders are
refused before any work."""

from __future__ import annotations

import json

import pytest

from fastaed.cli.main import main
from fastaed.data.errors import BadInputReport
from fastaed.decode.transcribe import DecodeConfig, Transcriber, utterances_from_audio
from fastaed.formats import read_checkpoint_meta, verify_checksums
from fastaed.testing import write_tiny_corpus
from fastaed.train.adapt import (
    DEV_FILE,
    SUMMARY_FILE,
    TARGET_FILE,
    AdaptConfig,
    adapt,
    choose_clips,
    dev_split,
    pseudo_label,
)
from fastaed.util.outputs import OutputExistsError
from tests import whisper_fixtures as wf

QUICK = ("optim.max_steps=3", "runtime.num_workers=0", "runtime.progress=false")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(tiny imported Whisper, manifest with transcripts, the same clips without them)."""
    root = tmp_path_factory.mktemp("adapt")
    ckpt = wf.imported_checkpoint(root)
    labelled = write_tiny_corpus(root / "data", num=8)
    unlabelled = root / "data" / "unlabelled.jsonl"
    rows = [json.loads(line) for line in labelled.read_text().splitlines()]
    unlabelled.write_text(
        "".join(json.dumps({k: v for k, v in r.items() if k != "text"}) + "\n" for r in rows)
    )
    return ckpt, labelled, unlabelled


def config(setup, tmp_path, *audio, **kw) -> AdaptConfig:
    kw = {"dev_clips": 2, "overrides": QUICK, "threads": 1, **kw}
    return AdaptConfig(checkpoint=setup[0], out=tmp_path / "out", audio=tuple(audio), **kw)


def test_adapted_checkpoint_is_ordinary_unpadded_and_resumes(setup, tmp_path):
    ckpt, labelled, _ = setup
    summary = adapt(config(setup, tmp_path, labelled))
    out = tmp_path / "out"
    meta = read_checkpoint_meta(out)
    assert (
        meta["frontend"]["input"] == "unpadded"
        and read_checkpoint_meta(ckpt)["frontend"]["input"] == "padded"
    )
    assert verify_checksums(out) and not (out / "trainer_state.pt").exists()
    saved = json.loads((out / SUMMARY_FILE).read_text())
    assert saved["steps"] == summary["steps"] == 3 and saved["clips"] == 6 and saved["teacher_s"] is not None
    assert saved["data"]["targets"] == {"transcript": 8, "teacher": 0}
    work = tmp_path / "out.work"
    assert len((work / TARGET_FILE).read_text().splitlines()) == 6
    assert len((work / DEV_FILE).read_text().splitlines()) == 2
    # the result decodes as it is, unpadded (its front end says so)
    clip = labelled.parent / "audio" / "u0.wav"
    utts = utterances_from_audio([clip], source_lang="en", target_lang="en", task="transcribe", pnc=True)
    transcriber = Transcriber(out, DecodeConfig(batch_size=1, progress=False))
    assert not transcriber.padded_whisper and len(transcriber.run(utts).transcripts) == 1
    # the same command again continues the run (more steps asked for), reusing targets and teacher cache
    again = adapt(config(setup, tmp_path, labelled, **{"overrides": (*QUICK, "optim.max_steps=5")}))
    assert again["steps"] == 5 and again["checkpoint"].endswith("ckpt-5")


def test_clips_without_a_transcript_get_the_teachers(setup, tmp_path):
    _, labelled, unlabelled = setup
    summary = adapt(config(setup, tmp_path, labelled, unlabelled))
    data = summary["data"]
    dropped = data["pseudo_label_dropped"]
    assert data["targets"]["transcript"] == 8 and data["targets"]["teacher"] + sum(dropped.values()) == 8
    rows = [json.loads(x) for x in (tmp_path / "out.work" / TARGET_FILE).read_text().splitlines()]
    rows += [json.loads(x) for x in (tmp_path / "out.work" / DEV_FILE).read_text().splitlines()]
    teacher = [r for r in rows if r["target_source"] == "teacher"]
    assert len(teacher) == data["targets"]["teacher"] and all(r["text"].strip() for r in teacher)
    # this random teacher loops: its pseudo-labels are counted out, never trained on
    assert dropped["loop"] > 0


def test_no_target_left_is_a_clear_error(setup, tmp_path):
    _, labelled, _ = setup
    rows = [
        json.loads(line) | {"task": "translate", "target_lang": "de"}
        for line in labelled.read_text().splitlines()
    ]
    translations = labelled.with_name("translations.jsonl")
    translations.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ValueError, match="no adaptation clip has a target: 0 chosen"):
        adapt(config(setup, tmp_path, translations))


def test_transcript_targets_refuse_an_unlabelled_clip(setup, tmp_path):
    _, _, unlabelled = setup
    with pytest.raises(Exception, match="field 'text' is empty"):
        adapt(config(setup, tmp_path, unlabelled, targets="transcript"))


def test_clip_choice_keeps_real_speech_and_samples_synthetic(tmp_path):
    synthetic = tmp_path / "syn.jsonl"
    real = tmp_path / "real.jsonl"
    rows = [
        {"audio_filepath": f"s{i}.wav", "duration": 1.0, "text": "a", "engine": "flite"} for i in range(20)
    ]
    synthetic.write_text("".join(json.dumps(r) + "\n" for r in rows))
    reals = [{"audio_filepath": f"r{i}.wav", "duration": 1.0, "text": "b"} for i in range(4)]
    reals.append({"audio_filepath": "x.wav", "duration": 1.0, "text": "c", "source_lang": "de"})
    real.write_text("".join(json.dumps(r) + "\n" for r in reals) + "{broken\n")
    report = BadInputReport()
    chosen = choose_clips([synthetic, real], english_only=True, max_clips=5, seed=0, report=report)
    names = [u.audio_filepath.rsplit("/", 1)[1] for u, _ in chosen]
    assert [n for n in names if n.startswith("r")] == ["r0.wav", "r1.wav", "r2.wav", "r3.wav"]
    assert sum(n.startswith("s") for n in names) == 5
    assert report.total == 2  # the German clip for an English-only model, the broken line: counted
    again = choose_clips([synthetic, real], english_only=True, max_clips=5, seed=0, report=BadInputReport())
    assert [u.audio_filepath for u, _ in again] == [u.audio_filepath for u, _ in chosen]
    train, dev = dev_split([raw | {"audio_filepath": u.audio_filepath} for u, raw in chosen], 3)
    assert (
        len(dev) == 3
        and len(train) == 6
        and not {d["audio_filepath"] for d in dev} & {t["audio_filepath"] for t in train}
    )


def test_user_folders_are_refused_before_any_work(setup, tmp_path):
    _, labelled, _ = setup
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError):
        adapt(config(setup, tmp_path, labelled))
    assert not (tmp_path / "out.work").exists()
    (tmp_path / "out" / "notes.txt").unlink()
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "thesis.tex").write_text("mine")
    with pytest.raises(OutputExistsError):
        adapt(config(setup, tmp_path, labelled, work=tmp_path / "work"))
    assert (tmp_path / "work" / "thesis.tex").read_text() == "mine"


def test_adapt_cli_names_missing_audio(setup, tmp_path, capsys):
    ckpt = setup[0]
    with pytest.raises(SystemExit) as info:
        main(["adapt", str(ckpt), "--out", str(tmp_path / "o"), "--audio", str(tmp_path / "nowhere.jsonl")])
    assert info.value.code != 0
    assert "nowhere.jsonl" in capsys.readouterr().err


def test_the_whole_command_ends_within_its_time_budget(setup, tmp_path):
    _, labelled, _ = setup
    budget = 10.0
    unlimited = ("runtime.num_workers=0", "runtime.progress=false", "runtime.ckpt_every=0")
    summary = adapt(config(setup, tmp_path, labelled, time_budget_s=budget, overrides=unlimited))
    assert summary["steps"] > 3  # trained until the budget, not a step cap
    assert summary["wall_s"] <= budget, summary["wall_s"]  # stages, last step, dev evaluation, export


def test_pseudo_labelling_leaves_the_training_process_heap_alone(setup, monkeypatch):
    """Inference keeps its peak heap (fastaed.util.heap); a process that trains after labelling must not."""
    import fastaed.decode.transcribe as transcribe

    ckpt, labelled, _ = setup
    calls = []
    monkeypatch.setattr(transcribe, "reuse_freed_memory", lambda: calls.append("labels") or True)
    report = BadInputReport()
    utts = [u for u, _ in choose_clips([labelled], True, 100, 0, report)][:2]
    texts, dropped, _ = pseudo_label(ckpt, utts, threads=1)
    assert len(texts) + sum(dropped.values()) == 2 and not calls
    Transcriber(ckpt, DecodeConfig(device="cpu", progress=False))  # what transcribe/eval/serve load with
    assert calls == ["labels"]
