"""The offline synthetic corpus: text cleaning, splits, determinism, skip counting and the tiny preset."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from fastaed.synth import corpus, engines, text

# The engines, sox and the bible program (the KJV text source) come from Debian packages (make installs them).
HAVE_TTS = shutil.which("flite") is not None and all(
    shutil.which(b) for b in ("espeak-ng", "festival", "sox", "bible")
)
skip_without_tts = pytest.mark.skipif(not HAVE_TTS, reason="needs the Debian TTS packages (flite, ...)")
MANIFEST_FIELDS = {
    "audio_filepath",
    "duration",
    "text",
    "source_lang",
    "target_lang",
    "task",
    "pnc",
    "utt_id",
    "voice",
    "engine",
    "rate",
    "pitch",
    "sha1",
}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# ------------------------------------------------------------------------------------ text (no TTS needed)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("he was a good teacher", "He was a good teacher."),
        ("And God said, Let there be light:", "And God said, Let there be light."),
        ("“Don’t go,” she said.", "Don't go, she said."),
        ("The dogs' bones are here", "The dogs' bones are here."),
        ("Well-known facts are good.", "Well-known facts are good."),
        ("He said no.", "He said no."),
        ("I have 3 apples.", None),  # digits need verbalisation
        ("Mr. Smith went home.", None),  # TTS says "mister"
        ("NASA flew it.", None),  # spelled out
        ("Wait -- what?", None),  # dash read as a pause
        ("Email me @ home.", None),
        ("'Tis the season.", None),
        ("Q: why not?", None),  # stray letter
        ("It ended...", None),
    ],
)
def test_clean_sentence_english(raw, expected):
    assert text.clean_sentence(raw) == expected


def test_clean_sentence_other_languages_keep_accents():
    assert text.clean_sentence("¿dónde está la música?", "es") == "¿Dónde está la música?"
    assert text.clean_sentence("Vous n'êtes plus en ligne.", "fr") == "Vous n'êtes plus en ligne."
    assert text.clean_sentence("Das kostet 5 Euro.", "de") is None


def test_split_sentences_keeps_titles_together():
    assert text.split_sentences("Hello there. Mr. Smith is here! Fine?") == [
        "Hello there.",
        "Mr. Smith is here!",
        "Fine?",
    ]
    assert text.split_sentences("a; b: c.", clauses=True) == ["a;", "b:", "c."]


def _sentences(n: int) -> list[text.Sentence]:
    out = []
    for i in range(n):
        t = f"Sentence number {'x' * (i % 7 + 1)} {i:d}".replace(str(i), "w" * (i % 5 + 1) + "z" * (i // 5))
        out.append(text.Sentence(t, "test", "en", text.words_of(t)))
    return out


def test_split_by_sentence_is_disjoint_and_seeded():
    sents = _sentences(200)
    sizes = {"test": 20, "dev": 10, "train": 1000}
    parts = text.split_by_sentence(sents, seed=3, sizes=sizes)
    keys = {name: {s.key for s in part} for name, part in parts.items()}
    assert len(keys["test"]) == 20 and len(keys["dev"]) == 10 and len(keys["train"]) == 170
    assert not keys["train"] & (keys["dev"] | keys["test"]) and not keys["dev"] & keys["test"]
    assert text.split_by_sentence(sents, seed=3, sizes=sizes) == parts  # same seed, same split
    assert text.split_by_sentence(sents, seed=4, sizes=sizes)["test"] != parts["test"]


def test_restrict_vocabulary_and_ranking():
    pool = [
        text.Sentence(t, src, "en", text.words_of(t))
        for t, src in [
            ("The cat sat down.", "a"),
            ("The dog sat down.", "a"),
            ("The cat ran far away now.", "b"),
            ("Zebras are rare.", "b"),
        ]
    ]
    ranking = text.word_ranking(pool)
    assert ranking[0] == "the"
    vocab = frozenset(ranking[:6])
    kept = text.restrict_vocabulary(pool, vocab, min_words=4, max_words=14)
    assert all(all(w in vocab for w in s.words) for s in kept)
    assert all(4 <= len(s.words) <= 14 for s in kept)


def test_phrases_are_short_contiguous_unique_and_seeded():
    pool = [
        text.Sentence(t, "a", "en", text.words_of(t))
        for t in (
            "And the Lord spake unto Moses, saying:",
            "Press one for the operator.",
            "You are muted now.",
        )
    ]
    cut = text.phrases(pool, seed=3, min_words=1, max_words=3)
    assert cut and cut == text.phrases(pool, seed=3, min_words=1, max_words=3)
    for phrase in cut:
        assert 1 <= len(phrase.words) <= 3 and phrase.text[0].isupper()
        assert phrase.text[-1] not in ",.:!?"  # a span is trimmed of the sentence's punctuation
        source = next(s for s in pool if " ".join(phrase.words) in " ".join(s.words))
        assert source is not None  # contiguous words of one sentence
    assert len({p.key for p in cut}) == len(cut)
    seeds = {tuple(p.key for p in text.phrases(pool, seed=k, min_words=1, max_words=3)) for k in range(6)}
    assert len(seeds) > 1  # the seed chooses the spans


def test_utterance_rng_is_stable():
    # sha256-based: the same in every process and Python version (unlike the salted hash()).
    assert text.stable_hash(0, "utt", "train-000001") == text.stable_hash(0, "utt", "train-000001")
    assert text.stable_hash(0, "utt", "train-000001") != text.stable_hash(1, "utt", "train-000001")
    a = corpus.utt_rng(0, "x").random()
    assert a == corpus.utt_rng(0, "x").random()


# ---------------------------------------------------------------------------- engines (no TTS needed)


def test_missing_binary_names_the_package():
    with pytest.raises(engines.EngineMissingError, match="install the Debian package flite"):
        raise engines._missing("flite")
    with pytest.raises(engines.EngineMissingError, match="not found"):
        engines.run_tool(["fastaed-no-such-binary-xyz"], "flite", timeout=5)


def test_missing_engine_fails_fast_with_the_package(monkeypatch):
    monkeypatch.setattr(engines.shutil, "which", lambda name: None if name == "flite" else "/usr/bin/" + name)
    msg = "flite not found: install the Debian package flite (make demo/test installs it)"
    with pytest.raises(engines.EngineMissingError, match=re.escape(msg)):
        engines.require_engines(["flite/rms", "espeak-ng/en-us"])


def test_failing_command_names_engine_and_command():
    with pytest.raises(engines.SynthesisError, match="flite: exit status 3: sh -c") as info:
        engines.run_tool(["sh", "-c", "exit 3"], "flite", timeout=5)
    assert info.value.reason == engines.SYNTHESIS_FAILED
    with pytest.raises(engines.SynthesisError, match="timed out") as info:
        engines.run_tool(["sleep", "5"], "festival", timeout=0.2)
    assert info.value.reason == engines.SYNTHESIS_TIMEOUT


def test_near_silent_output_is_rejected(tmp_path):
    path = tmp_path / "quiet.wav"
    sf.write(path, np.full(16000, 20, dtype=np.int16), 16000, subtype="PCM_16")
    with pytest.raises(engines.SynthesisError, match="near-silent") as info:
        engines.read_checked(path, "flite")
    assert info.value.reason == engines.EMPTY_AUDIO


def test_festival_script_sets_every_parameter_per_utterance():
    jobs = [
        engines.SynthJob("a", 'Say "hi".', "festival/kal_diphone", rate=1.1, pitch=0.9),
        engines.SynthJob("b", "Back\\slash.", "festival/cmu_us_slt_arctic_hts", rate=0.9),
    ]
    script = engines.festival_script(jobs, [Path("/t/a.wav"), Path("/t/b.wav")])
    assert script.count("(voice_") == 2 and "Duration_Stretch 1.0000" in script
    assert '\\"hi\\"' in script and "Back\\\\slash" in script and '"-r" 0.9000' in script
    assert script.count("unwind-protect") == 2


def test_out_dir_with_foreign_files_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="notes.txt"):
        corpus.check_out_dir(tmp_path)


# ------------------------------------------------------------------------------------ tiny corpus (TTS)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """One tiny corpus (41 utterances) shared by the tests below."""
    out = tmp_path_factory.mktemp("tiny")
    return corpus.generate_corpus(out, "tiny", workers=2, seed=0, progress=False)


def _entries(result, name):
    return read_jsonl(result.out_dir / f"{name}.jsonl")


@pytest.mark.tts
@skip_without_tts
@pytest.mark.parametrize("name", corpus.ALL_MANIFESTS)
def test_tiny_manifests_fields_and_audio(tiny, name):
    entries = _entries(tiny, name)
    assert entries, f"{name} is empty"
    for e in entries:
        assert MANIFEST_FIELDS <= e.keys()
        assert e["task"] == "transcribe" and e["pnc"] == "yes" and e["source_lang"] == e["target_lang"]
        assert e["audio_filepath"] == f"audio/{name}/{e['utt_id']}.wav"
        data, sr = sf.read(tiny.out_dir / e["audio_filepath"], dtype="int16", always_2d=True)
        info = sf.info(str(tiny.out_dir / e["audio_filepath"]))
        assert sr == 16000 and data.shape[1] == 1 and info.subtype == "PCM_16"
        assert abs(len(data) / sr - e["duration"]) <= 1e-3
        assert engines.samples_sha1(data[:, 0]) == e["sha1"]
        assert 0.5 < e["duration"] < 15.0


@pytest.mark.tts
@skip_without_tts
def test_tiny_card_and_plot(tiny):
    out = tiny.out_dir
    for f in ("card.json", "card.md", "duration_hist.png", "vocab.txt"):
        assert (out / f).stat().st_size > 0
    card = json.loads((out / "card.json").read_text())
    assert card["totals"]["utterances"] == sum(len(_entries(tiny, m)) for m in corpus.ALL_MANIFESTS)
    assert card["totals"]["skipped"]["skipped"] == 0
    assert {m["top_n"] for m in card["vocabulary"]["measurements"]} >= {500, 1000, 2000, 5000}
    assert card["manifests"]["test_unseen_voice"]["voices"].keys() == {"flite/awb"}
    assert card["tools"]["engines"]["flite"]
    assert (out / "duration_hist.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.tts
@skip_without_tts
def test_tiny_split_by_sentence_and_unseen_voice(tiny):
    keys = {
        m: {text.words_of(e["text"], e["source_lang"]) for e in _entries(tiny, m)}
        for m in corpus.ALL_MANIFESTS
    }
    assert (
        not keys["train"] & keys["dev"]
        and not keys["train"] & keys["test"]
        and not keys["dev"] & keys["test"]
    )
    assert not keys["train_multilingual"] & keys["test_multilingual"]
    unseen = _entries(tiny, "test_unseen_voice")
    assert {e["voice"] for e in unseen} == {"flite/awb"}
    assert keys["test_unseen_voice"] == keys["test"]
    seen_voices = {e["voice"] for m in ("train", "dev", "test") for e in _entries(tiny, m)}
    assert "flite/awb" not in seen_voices
    langs = {e["source_lang"] for e in _entries(tiny, "train_multilingual")}
    assert langs <= {"de", "es", "fr"} and langs


@pytest.mark.tts
@skip_without_tts
def test_tiny_vocabulary_restriction(tiny):
    vocab = set((tiny.out_dir / "vocab.txt").read_text().split())
    assert len(vocab) == corpus.PRESETS["tiny"].top_n
    for m in ("train", "dev", "test"):
        for e in _entries(tiny, m):
            words = text.words_of(e["text"])
            assert 4 <= len(words) <= 14
            assert set(words) <= vocab, e["text"]


@pytest.mark.tts
@skip_without_tts
def test_same_utterance_id_gives_same_audio(tiny, tmp_path):
    # One utterance per engine family, regenerated alone, in-process and in other chunks than the first run.
    first = {e["utt_id"]: e for m in corpus.ALL_MANIFESTS for e in _entries(tiny, m)}
    picks: dict[str, str] = {}
    for utt_id, e in sorted(first.items()):
        picks.setdefault(e["engine"], utt_id)
    again = corpus.generate_corpus(
        tmp_path / "again", "tiny", workers=1, seed=0, progress=False, only=picks.values()
    )
    regenerated = {e["utt_id"]: e for entries in again.manifests.values() for e in entries}
    assert regenerated.keys() == set(picks.values())
    for utt_id, e in regenerated.items():
        assert e["sha1"] == first[utt_id]["sha1"], (utt_id, e["voice"])
        assert (e["voice"], e["rate"], e["pitch"], e["text"]) == (
            first[utt_id]["voice"],
            first[utt_id]["rate"],
            first[utt_id]["pitch"],
            first[utt_id]["text"],
        )


@pytest.mark.tts
@skip_without_tts
def test_failed_engine_call_is_counted(tiny, tmp_path, monkeypatch, capsys):
    def broken(job, workdir):
        raise RuntimeError("simulated flite crash")

    monkeypatch.setattr(engines, "synth_flite", broken)
    first = {e["utt_id"]: e for m in corpus.ALL_MANIFESTS for e in _entries(tiny, m)}
    flite_ids = [u for u, e in first.items() if e["engine"] == "flite"][:3]
    other_ids = [u for u, e in first.items() if e["engine"] == "espeak-ng"][:1]
    result = corpus.generate_corpus(
        tmp_path / "broken", "tiny", workers=1, seed=0, progress=False, only=flite_ids + other_ids
    )
    assert result.report.counts[engines.SYNTHESIS_FAILED] == len(flite_ids)
    assert any("simulated flite crash" in m for m in result.report.examples[engines.SYNTHESIS_FAILED])
    written = {e["utt_id"] for entries in result.manifests.values() for e in entries}
    assert written == set(other_ids)
    card = json.loads((tmp_path / "broken" / "card.json").read_text())
    assert card["totals"]["skipped"]["by_reason"] == {engines.SYNTHESIS_FAILED: len(flite_ids)}
    assert "synthesis_failed: 3" in (tmp_path / "broken" / "card.md").read_text()
