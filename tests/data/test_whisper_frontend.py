"""Whisper's front end: an independent numpy STFT agrees, both padding conventions give 3000 frames and
differ only where they should, unpadded features are the real frames, a checkpoint's entry rebuilds it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastaed.data.features import FeatureConfig, mel_filterbank
from fastaed.data.frontend import build_frontend, frontend_config, frontend_dict
from fastaed.data.whisper_features import WhisperFeatureConfig, WhisperLogMel


def numpy_log_mel(wave: np.ndarray, n_mels: int = 80) -> np.ndarray:
    """(N,) -> (frames, n_mels): Whisper's recipe with numpy's FFT and framing (frames = N // 160)."""
    x = np.pad(wave.astype(np.float64), (200, 200), mode="reflect")
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(400) / 400)  # periodic Hann
    n_frames = 1 + (len(x) - 400) // 160
    frames = np.stack([x[i * 160 : i * 160 + 400] * window for i in range(n_frames)])
    power = np.abs(np.fft.rfft(frames, n=400)) ** 2  # (frames, 201)
    fb = mel_filterbank(FeatureConfig(n_fft=400, win_length=400, n_mels=n_mels)).double().numpy()
    mel = np.log10(np.maximum(power[:-1] @ fb.T, 1e-10))
    return mel


def speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    return (
        0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t))
        + 0.01 * rng.standard_normal(len(t))
    ).astype(np.float32)


def test_unpadded_features_match_an_independent_numpy_stft():
    wave = speechlike(2.37)
    ours = WhisperLogMel(WhisperFeatureConfig(input="unpadded")).one(torch.from_numpy(wave)).numpy()
    ref = numpy_log_mel(np.pad(wave, (0, 160)))
    ref = ((np.maximum(ref, ref.max() - 8.0) + 4.0) / 4.0)[:-1]  # the clamp sees the last frame, then it goes
    assert ours.shape == ref.shape == (len(wave) // 160, 80)
    np.testing.assert_allclose(ours, ref, atol=2e-4)


def test_openai_padding_pads_the_audio_with_thirty_seconds_of_silence():
    wave = speechlike(3.1, seed=1)
    ours = WhisperLogMel(WhisperFeatureConfig(padding="openai")).one(torch.from_numpy(wave)).numpy()
    ref = numpy_log_mel(np.pad(wave, (0, 480000)))
    ref = ((np.maximum(ref, ref.max() - 8.0) + 4.0) / 4.0)[:3000]
    assert ours.shape == (3000, 80)
    np.testing.assert_allclose(ours, ref, atol=2e-4)


def test_faster_whisper_padding_zero_pads_the_log_mel_frames():
    wave = speechlike(1.5, seed=2)
    fw = WhisperLogMel(WhisperFeatureConfig(padding="faster-whisper")).one(torch.from_numpy(wave))
    alone = WhisperLogMel(WhisperFeatureConfig(input="unpadded")).one(torch.from_numpy(wave))
    n = len(wave) // 160
    assert fw.shape == (3000, 80) and alone.shape == (n, 80)
    torch.testing.assert_close(fw[:n], alone)
    assert bool((fw[n:] == 0).all())
    # OpenAI's convention computes the frames after the speech from 30 s of real silence (the clamp floor,
    # max - 8, in the scaled log domain), not zeros; the frames of the speech itself agree.
    openai = WhisperLogMel(WhisperFeatureConfig(padding="openai")).one(torch.from_numpy(wave))
    torch.testing.assert_close(openai[: n - 2], fw[: n - 2], atol=1e-4, rtol=1e-4)
    floor = (float(fw[:n].max()) * 4 - 4 - 8 + 4) / 4
    torch.testing.assert_close(openai[n + 2 :], torch.full_like(openai[n + 2 :], floor), atol=1e-4, rtol=0)


def test_batch_of_different_lengths_equals_each_clip_alone():
    waves = [torch.from_numpy(speechlike(s, seed=i)) for i, s in enumerate((1.0, 2.2, 0.4))]
    padded = torch.zeros(3, max(len(w) for w in waves))
    for i, w in enumerate(waves):
        padded[i, : len(w)] = w
        padded[i, len(w) :] = 0.7  # whatever lies beyond a clip must not leak in
    lens = torch.tensor([len(w) for w in waves])
    for mode in ("padded", "unpadded"):
        front = WhisperLogMel(WhisperFeatureConfig(input=mode))
        feats, feat_lens = front(padded, lens)
        for i, w in enumerate(waves):
            alone = front.one(w)
            assert int(feat_lens[i]) == alone.shape[0]
            torch.testing.assert_close(feats[i, : alone.shape[0]], alone)


def test_padded_input_longer_than_thirty_seconds_is_refused():
    long = torch.zeros(16000 * 31)
    for padding in ("openai", "faster-whisper"):
        with pytest.raises(ValueError, match="30 s window"):
            WhisperLogMel(WhisperFeatureConfig(padding=padding)).one(long)


def test_checkpoint_frontend_entry_round_trips():
    cfg = WhisperFeatureConfig(n_mels=128, input="unpadded", padding="faster-whisper")
    assert frontend_config(frontend_dict(cfg)) == cfg
    assert isinstance(build_frontend(frontend_config(frontend_dict(cfg))), WhisperLogMel)
    nemo = FeatureConfig(n_mels=80, dither=0.0)
    assert frontend_config(frontend_dict(nemo)) == nemo
    assert frontend_config(None) == FeatureConfig(dither=0.0)
    with pytest.raises(ValueError, match="unknown front-end kind"):
        frontend_config({"kind": "kaldi"})
