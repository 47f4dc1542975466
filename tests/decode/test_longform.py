"""Long-form decoding (issue 25): any length in, timed segments out.

Whole-file features equal the one-shot spectrogram; the timestamp rules hold token by token; on a real long
file (the pocketsphinx clips joined with pauses) sequential decoding writes openai-whisper's segments; silence
gives an empty transcript and a note; a corrupt file among several is a counted skip; eval scores a clip
longer than Whisper's window instead of refusing it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from fastaed.data.audio import load_audio
from fastaed.data.manifest import read_manifest
from fastaed.data.whisper_features import WhisperLogMel
from fastaed.decode.longform import LongFormConfig, transcribe_long
from fastaed.decode.transcribe import DecodeConfig, Transcriber, utterances_from_audio
from fastaed.decode.whisper_window import WindowDecoder
from fastaed.formats.whisper_import import import_whisper
from tests import whisper_fixtures as wf

ROOT = Path(__file__).resolve().parents[2]
OPENAI_PY = ROOT / ".venv-openai" / "bin" / "python"
GREEDY = LongFormConfig(long_form="sequential", temperatures=(0.0,))


@pytest.mark.parametrize("seconds", [0.03, 7.3, 65.0])  # shorter than a frame, one window, three
@pytest.mark.parametrize("block", [700, 6000])
def test_whole_file_log_mel_equals_the_one_shot_spectrogram(seconds, block):
    mel = WhisperLogMel()
    wave = torch.randn(int(seconds * 16000), generator=torch.Generator().manual_seed(1)) * 0.1
    once = mel.log_mel(torch.nn.functional.pad(wave, (0, mel.config.chunk_samples)))
    once = (torch.maximum(once, once.max() - 8.0) + 4.0) / 4.0
    assert torch.equal(mel.long_log_mel(wave, block_frames=block), once)


@pytest.fixture(scope="module")
def small_whisper(tmp_path_factory):
    """A random Whisper-layout model and its tokenizer (20 timestamps)."""
    root = tmp_path_factory.mktemp("small")
    tok = wf.tokenizer(root, multilingual=False)
    return wf.random_model(tok.vocab_size, n_mels=16, d_model=32, heads=2, layers=1), tok


def test_timestamp_rules_hold_at_every_step(small_whisper):
    model, tok = small_whisper
    window = WindowDecoder(model, tok, max_initial_timestamp=0.1)  # at most <|0.10|> first: 5 timestamps
    ts = tok.timestamp_begin
    logits = torch.randn(tok.vocab_size, generator=torch.Generator().manual_seed(0))
    allowed = lambda sampled: torch.isfinite(window.filtered(logits, sampled)).nonzero().flatten().tolist()  # noqa: E731
    assert allowed([]) == list(range(ts, ts + 6))  # a timestamp first, no later than 0.1 s
    text = 300  # an ordinary text id
    after_pair = allowed([ts + 2, ts + 2][:1] + [text, ts + 4, ts + 4])  # a closed pair: text or end
    assert all(i < ts for i in after_pair) and tok.no_timestamps_id not in after_pair
    after_end = allowed([ts + 2, text, ts + 6])  # a segment's end: the next start (not earlier) or EOS
    assert all(i >= ts + 6 or i == tok.eos_id for i in after_end)
    after_text = allowed([ts + 2, text])  # inside a segment: no timestamp at or before its start
    assert not any(ts <= i <= ts + 2 for i in after_text)
    for sampled in ([], [ts], [ts, text]):
        forbidden = set(window.suppress.tolist()) | {tok.no_timestamps_id}
        assert not forbidden & set(allowed(sampled))


def _joined_real_file(out: Path) -> tuple[Path, list[dict]]:
    """The 12 pocketsphinx clips end to end with pauses of 0.4-2.6 s: about 70 s, three windows."""
    manifest = wf.real_check_manifest()
    rng = np.random.default_rng(3)
    pieces, truth, t = [], [], 0.0
    for u in read_manifest(manifest):
        pause = float(rng.uniform(0.4, 2.6))
        pieces += [np.zeros(int(pause * 16000), dtype=np.float32)]
        wave = load_audio(u.audio_filepath).numpy()
        t += pause
        truth.append({"start": t, "end": t + len(wave) / 16000, "text": u.text})
        pieces.append(wave)
        t += len(wave) / 16000
    sf.write(out, np.concatenate(pieces), 16000)
    return out, truth


@pytest.fixture(scope="module")
def tiny_en(tmp_path_factory) -> Path:
    return import_whisper(wf.real_whisper("tiny.en"), tmp_path_factory.mktemp("tiny") / "ckpt")


@pytest.fixture(scope="module")
def long_file(tmp_path_factory):
    return _joined_real_file(tmp_path_factory.mktemp("long") / "joined.wav")


@pytest.fixture(scope="module")
def sequential(tiny_en, long_file):
    tr = Transcriber(tiny_en, DecodeConfig(progress=False))
    utts = utterances_from_audio([long_file[0]], source_lang="en", target_lang="en", task="transcribe",
                                 pnc=True)  # fmt: skip
    return transcribe_long(tr, utts, GREEDY)


def test_sequential_segments_are_timed_inside_the_file_and_cover_every_clip(sequential, long_file):
    _, truth = long_file
    segments = sequential.transcripts[0].segments
    assert sequential.mode == "sequential" and len(segments) >= len(truth) // 2
    assert all(0 <= s.start <= s.end <= truth[-1]["end"] + 1.0 for s in segments)
    assert all(a.start <= b.start for a, b in zip(segments, segments[1:]))
    for clip in truth:  # every clip's middle lies inside some segment (no speech second lost)
        mid = (clip["start"] + clip["end"]) / 2
        assert any(s.start - 0.5 <= mid <= s.end + 0.5 for s in segments), clip


def test_sequential_writes_openai_whispers_segments(sequential, tiny_en, tmp_path, long_file):
    if not OPENAI_PY.exists():
        pytest.skip("no openai-whisper peer venv .venv-openai (make openai-venv)")
    from fastaed.formats.openai_export import export_openai

    pt = export_openai(tiny_en, tmp_path / "tiny.en.pt")
    script = (
        "import json, sys, torch, whisper\n"
        "torch.set_num_threads(2)\n"
        "m = whisper.load_model(sys.argv[1], device='cpu')\n"
        "r = whisper.transcribe(m, sys.argv[2], temperature=0.0, fp16=False, language='en')\n"
        "json.dump(r, open(sys.argv[3], 'w'))\n"
    )
    out = tmp_path / "openai.json"
    run = subprocess.run([str(OPENAI_PY), "-c", script, str(pt), str(long_file[0]), str(out)],
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    theirs = json.loads(out.read_text())
    ours = sequential.transcripts[0]
    assert ours.text == theirs["text"]
    assert [(s.start, s.end, s.text, s.tokens) for s in ours.segments] == [
        (s["start"], s["end"], s["text"], s["tokens"]) for s in theirs["segments"]
    ]
    for a, b in zip(ours.segments, theirs["segments"]):
        assert a.avg_logprob == pytest.approx(b["avg_logprob"], abs=1e-4)
        assert a.no_speech_prob == pytest.approx(b["no_speech_prob"], abs=1e-4)


@pytest.mark.parametrize("mode", ["sequential", "batched"])
def test_silence_gives_an_empty_transcript_and_a_note(tiny_en, tmp_path, mode):
    """Whisper writes ". . . ." over faint noise; the voice-activity detector finds nothing to write."""
    path = tmp_path / "quiet.wav"
    sf.write(path, np.random.default_rng(0).normal(0, 1e-4, 45 * 16000).astype(np.float32), 16000)
    tr = Transcriber(tiny_en, DecodeConfig(progress=False))
    utts = utterances_from_audio([path], source_lang="en", target_lang="en", task="transcribe", pnc=True)
    result = transcribe_long(tr, utts, LongFormConfig(long_form=mode))
    (t,) = result.transcripts
    assert t.text == "" and t.segments == [] and "no speech found" in t.notes[0]
    assert t.duration == pytest.approx(45.0) and result.skipped.total == 0


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fastaed", *args], capture_output=True, text=True,
                          timeout=600)  # fmt: skip


def test_a_corrupt_file_among_several_is_a_counted_skip(tiny_en, long_file, tmp_path):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF not really a wave file")
    out = tmp_path / "subs"
    run = _cli("transcribe", str(tiny_en), str(long_file[0]), str(bad), "--out", str(out), "--format", "srt",
               "--on-bad-input", "skip", "--temperatures", "0", "--no-progress")  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert "broken.wav" in run.stderr and "1 skipped" in run.stderr
    assert [p.name for p in sorted(out.glob("*.srt"))] == ["joined.srt"]
    strict = _cli("transcribe", str(tiny_en), str(bad), "--out", str(tmp_path / "x.srt"), "--no-progress")
    assert strict.returncode != 0 and "broken.wav" in strict.stderr and "Traceback" not in strict.stderr


def test_eval_scores_a_clip_longer_than_the_window(tiny_en, long_file, tmp_path):
    path, truth = long_file
    manifest = tmp_path / "long.jsonl"
    entry = {"audio_filepath": str(path), "duration": sf.info(path).duration,
             "text": " ".join(c["text"] for c in truth), "pnc": "no"}  # fmt: skip
    manifest.write_text(json.dumps(entry) + "\n")
    run = _cli("eval", str(tiny_en), "--manifest", str(manifest), "--normalizer", "whisper",
               "--json", str(tmp_path / "e.json"), "--temperatures", "0", "--no-progress")  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    doc = json.loads((tmp_path / "e.json").read_text())
    scores = doc["sets"][str(manifest)]
    assert scores["bad_input"]["skipped"] == 0 and scores["wer"] < 0.15
