"""The voice-activity detector (fastaed/decode/vad.py): silero's v6 weights run by our own batched code
give silero's probabilities, whatever the block size; regions and chunks on real speech with known pauses."""

from __future__ import annotations

import random
import subprocess
import sys

import numpy as np
import pytest
import torch

from fastaed.data import asterisk
from fastaed.data.audio import resample
from fastaed.decode import vad

needs_asterisk = pytest.mark.skipif(
    bool(asterisk.missing_sources()), reason=f"needs {', '.join(asterisk.PACKAGES)} (make apt)"
)

# Real prompts (one voice, studio-clean), short words among them, and the pauses inserted after each.
CLIPS = (
    "agent-pass", "digits/7", "vm-tempgreeting", "auth-thankyou", "letters/a",
    "followme/pls-hold-while-try", "activated", "digits/1", "demo-congrats",
)  # fmt: skip
PAUSES_S = (0.8, 1.5, 2.0, 0.7, 1.2, 3.0, 0.9, 1.1, 1.0)
LEAD_S = 1.0
NOISE_RMS = 1e-3  # a -60 dBFS floor under everything, as in a quiet room: silence is not digital zero
BOUNDARY_TOLERANCE_S = 0.1
SR = vad.VAD_SAMPLE_RATE


def _trimmed(name: str) -> torch.Tensor:
    """A prompt without its leading and trailing near-silence (10 ms frames 35 dB below its loudest)."""
    x = torch.from_numpy(asterisk.decode_g722(asterisk.VOICE_DIR / f"{name}.g722").astype(np.float32) / 32768)
    frames = x[: len(x) // 160 * 160].reshape(-1, 160)
    level = 10 * torch.log10(frames.pow(2).mean(1) + 1e-12)
    loud = (level > level.max() - 35).nonzero().flatten()
    return x[loud[0] * 160 : (loud[-1] + 1) * 160]


@pytest.fixture(scope="module")
def joined() -> tuple[torch.Tensor, list[tuple[float, float]]]:
    """~65 s of 16 kHz audio: the prompts with known pauses between them, and each prompt's true span."""
    parts, truth, t = [torch.zeros(int(LEAD_S * SR))], [], LEAD_S
    for name, pause in zip(CLIPS, PAUSES_S):
        speech = _trimmed(name)
        truth.append((t, t + len(speech) / SR))
        parts += [speech, torch.zeros(int(pause * SR))]
        t += len(speech) / SR + pause
    audio = torch.cat(parts)
    audio += NOISE_RMS * torch.randn(len(audio), generator=torch.Generator().manual_seed(0))
    return audio, truth


# ------------------------------------------------------------------------------------- probabilities


@needs_asterisk
def test_probabilities_equal_silero_jit_models_on_real_speech(joined):
    audio = joined[0][: 8 * SR + 300]  # two prompts and pauses, ending in a partial window (the JIT model
    # takes 0.5 to 5 ms a window on a loaded machine)
    threads = torch.get_num_threads()
    from silero_vad import load_silero_vad  # sets torch's threads to 1 on import: restored below

    torch.set_num_threads(threads)
    model = load_silero_vad()
    model.reset_states()
    padded = torch.nn.functional.pad(audio, (0, -len(audio) % vad.WINDOW_SAMPLES))
    with torch.inference_mode():
        expected = torch.tensor([model(w, SR).item() for w in padded.split(vad.WINDOW_SAMPLES)])
    ours = vad.speech_probs(audio)
    assert ours.shape == expected.shape == (-(-len(audio) // vad.WINDOW_SAMPLES),)
    assert expected.max() > 0.9 and expected.min() < 0.1  # speech and silence both scored
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-4)


@needs_asterisk
def test_probabilities_do_not_depend_on_block_size_or_how_the_stream_is_cut(joined):
    # 37 · 30 + 1 windows, the last one partial: cut naively into blocks of 37, the last block would be one
    # window, which batched kernels round differently (a matrix-vector product)
    audio = joined[0][: (37 * 30) * vad.WINDOW_SAMPLES + 123]
    whole = vad.speech_probs(audio)
    assert torch.equal(vad.speech_probs(audio, block_windows=37), whole)
    stream = vad.VadStream(block_windows=100)
    cuts = [0, 1000, 1007, 40_000, 40_001, 300_000, len(audio)]  # pieces shorter and longer than a window
    pieces = [stream.push(audio[a:b]) for a, b in zip(cuts[:-1], cuts[1:])]
    assert torch.equal(torch.cat([*pieces, stream.finish()]), whole)
    assert stream.num_samples == len(audio)


def test_running_the_vad_neither_imports_silero_nor_changes_torch_threads():
    probe = (
        "import sys, torch; torch.set_num_threads(2); from fastaed.decode import vad; "
        "vad.speech_probs(torch.zeros(4000)); print('silero_vad' in sys.modules, torch.get_num_threads())"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "2"]


# ------------------------------------------------------------------------------------------- regions


@needs_asterisk
def test_regions_match_every_prompt_within_100_ms_on_real_speech(joined):
    audio, truth = joined
    probs = vad.speech_probs(audio)
    regions = vad.speech_regions(probs, vad.VadConfig(speech_pad_s=0.0), SR, len(audio))
    assert len(regions) == len(truth), regions
    for (start, end), (true_start, true_end) in zip(regions, truth):
        assert abs(start - true_start) <= BOUNDARY_TOLERANCE_S, (start, end, true_start, true_end)
        assert abs(end - true_end) <= BOUNDARY_TOLERANCE_S, (start, end, true_start, true_end)


@needs_asterisk
def test_default_regions_cover_every_prompt_with_padding(joined):
    audio, truth = joined
    config = vad.VadConfig()
    regions = vad.speech_regions(vad.speech_probs(audio), config, SR, len(audio))
    assert len(regions) == len(truth)
    for (start, end), (true_start, true_end) in zip(regions, truth):
        # padded by speech_pad_s around the speech (each pause is wider than twice the pad)
        assert start <= true_start - config.speech_pad_s + BOUNDARY_TOLERANCE_S
        assert end >= true_end + config.speech_pad_s - BOUNDARY_TOLERANCE_S
    assert all(a[1] <= b[0] for a, b in zip(regions, regions[1:]))


def test_silence_and_noise_give_no_region():
    generator = torch.Generator().manual_seed(1)
    n = 10 * SR
    hum = torch.sin(2 * torch.pi * 50 * torch.arange(n) / SR)
    for signal in (
        torch.zeros(n),
        0.01 * torch.randn(n, generator=generator),
        0.3 * torch.randn(n),
        0.1 * hum,
    ):
        assert vad.speech_regions(vad.speech_probs(signal), num_samples=n) == []


def _probs(*runs: tuple[float, float]) -> list[float]:
    """Per-window probabilities from (value, seconds) runs."""
    return [value for value, seconds in runs for _ in range(round(seconds / vad.WINDOW_S))]


def test_hysteresis_keeps_dips_and_short_pauses_and_ends_at_the_silence():
    config = vad.VadConfig(
        threshold=0.5, neg_threshold=0.35, min_silence_s=0.5, min_speech_s=0.1, speech_pad_s=0
    )
    w = vad.WINDOW_S
    probs = _probs(
        (0.1, 1.024), (0.9, 0.512), (0.4, 0.512), (0.9, 0.512), (0.1, 0.256), (0.9, 0.512), (0.1, 1.024)
    )
    # the dip to 0.4 stays above neg_threshold; the 0.256 s pause is shorter than min_silence_s
    assert vad.speech_regions(probs, config) == [pytest.approx((32 * w, 104 * w))]
    # below neg_threshold for min_silence_s ends the region where the silence began
    probs = _probs((0.9, 0.512), (0.2, 0.512), (0.9, 0.512))
    assert vad.speech_regions(probs, config) == [pytest.approx((0, 16 * w)), pytest.approx((32 * w, 48 * w))]


def test_short_regions_are_dropped_and_padding_never_overlaps():
    config = vad.VadConfig(min_speech_s=0.1, min_silence_s=0.1, speech_pad_s=0.2)
    w = vad.WINDOW_S
    probs = _probs((0.1, 0.512), (0.9, 0.064), (0.1, 1.024), (0.9, 0.512), (0.1, 0.224), (0.9, 0.512))
    regions = vad.speech_regions(probs, config, SR, num_samples=len(probs) * vad.WINDOW_SAMPLES - 100)
    duration = (len(probs) * vad.WINDOW_SAMPLES - 100) / SR
    # the 64 ms blip is gone; the 0.224 s gap is split at its middle; the end stops at the audio's end
    assert regions == [
        pytest.approx((50 * w - 0.2, 66 * w + 3.5 * w)),
        pytest.approx((66 * w + 3.5 * w, duration)),
    ]


# -------------------------------------------------------------------------------------------- chunks


def _flat(regions) -> list[float]:
    return [t for region in regions for t in region]


def _check_chunks(regions, chunks, max_chunk_s):
    """No chunk too long; chunk bounds are its regions'; the chunks' regions are the input regions, each
    covered once (a cut region by consecutive pieces)."""
    assert all(c.duration <= max_chunk_s + 1e-9 for c in chunks)
    assert all((c.start, c.end) == (c.regions[0][0], c.regions[-1][1]) for c in chunks)
    pieces = [r for c in chunks for r in c.regions]
    joined_pieces = [pieces[0]]
    for start, end in pieces[1:]:
        if start == joined_pieces[-1][1]:  # a cut inside a region: the next piece starts at the cut
            joined_pieces[-1] = (joined_pieces[-1][0], end)
        else:
            joined_pieces.append((start, end))
    assert _flat(joined_pieces) == pytest.approx(_flat(regions))


def test_merged_chunks_respect_the_limit_and_cover_each_region_once():
    rng = random.Random(0)
    for max_chunk_s in (30.0, 12.0, 5.0):
        t, regions = 3.7, []
        for _ in range(200):
            length = rng.choice([rng.uniform(0.2, 3.0), rng.uniform(3.0, 25.0)])
            regions.append((t, t + length))
            t += length + rng.uniform(0.1, 4.0)
        chunks = vad.merge_chunks(regions, max_chunk_s)
        _check_chunks(regions, chunks, max_chunk_s)
        assert chunks[0].start == 3.7  # true offsets, not multiples of the chunk length
        # greedy: a chunk ends only because the next region would not fit
        for a, b in zip(chunks, chunks[1:]):
            assert b.regions[0][1] - a.start > max_chunk_s or a.regions[-1][1] == b.regions[0][0]


def test_a_long_region_is_cut_at_its_least_likely_window_or_evenly():
    w = vad.WINDOW_S
    probs = [0.9] * 2000  # 64 s
    probs[700] = 0.05  # 22.4 s: the quietest window in the second half of the first 30 s
    probs[300] = 0.01  # 9.6 s: quieter, but a cut there would leave a short chunk
    chunks = vad.merge_chunks([(1.0, 50.0), (50.5, 52.0)], 30.0, probs=probs)
    _check_chunks([(1.0, 50.0), (50.5, 52.0)], chunks, 30.0)
    assert chunks[0].end == pytest.approx(700.5 * w)
    assert [c.regions for c in chunks][1] == ((700.5 * w, 50.0), (50.5, 52.0))  # the rest joins the next
    even = vad.merge_chunks([(0.0, 70.0)], 30.0)
    assert _flat((c.start, c.end) for c in even) == pytest.approx([0, 70 / 3, 70 / 3, 140 / 3, 140 / 3, 70])


def test_gap_limits_keep_close_regions_together_and_split_at_long_silences():
    regions = [(0.0, 10.0), (10.2, 20.0), (21.0, 25.0), (35.0, 38.0)]
    # min_gap_s: the 0.2 s gap is never a cut, so the first chunk cannot stop after 10 s
    glued = vad.merge_chunks(regions, 22.0, min_gap_s=0.5)
    assert [c.regions for c in glued][0] == ((0.0, 10.0), (10.2, 20.0))
    assert [(c.start, c.end) for c in vad.merge_chunks(regions, 30.0)] == [(0.0, 25.0), (35.0, 38.0)]
    assert [(c.start, c.end) for c in vad.merge_chunks(regions, 60.0, max_gap_s=5.0)] == [(0, 25), (35, 38)]
    assert len(vad.merge_chunks(regions, 60.0)) == 1


@needs_asterisk
def test_detect_chunks_on_8_khz_real_speech_covers_every_prompt(joined):
    audio, truth = joined
    audio8 = resample(audio, SR, 8000)
    chunks = vad.detect_chunks(audio8, 8000, max_chunk_s=20.0)
    assert all(c.duration <= 20.0 for c in chunks) and len(chunks) >= 4  # the 29.8 s prompt was cut
    pieces = [r for c in chunks for r in c.regions]
    for true_start, true_end in truth:
        covered = sum(
            min(e, true_end) - max(s, true_start) for s, e in pieces if s < true_end and e > true_start
        )
        assert covered == pytest.approx(true_end - true_start, abs=0.05)
    assert vad.detect_chunks(torch.zeros(8000 * 5), 8000) == []
