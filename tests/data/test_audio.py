"""Audio loading (formats, slicing, mono, resampling on load), bad-audio errors, and the resampler."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from fastaed.data import audio as audio_mod
from fastaed.data.audio import audio_info, load_audio, resample
from fastaed.data.errors import (
    CORRUPT_AUDIO,
    DURATION_MISMATCH,
    EMPTY_AUDIO,
    MISSING_AUDIO,
    NONFINITE_AUDIO,
    BadInputError,
)


def tone(freq: float, seconds: float, sr: int, amp: float = 0.5) -> np.ndarray:
    """(N,) float32 sine, phase computed in float64 (float32 phase noise would look like aliasing)."""
    t = np.arange(round(seconds * sr), dtype=np.float64) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_hz(x: torch.Tensor, sr: int) -> float:
    """Frequency of the largest FFT magnitude (Hann-windowed)."""
    spec = torch.fft.rfft(x.double() * torch.hann_window(x.numel(), dtype=torch.float64)).abs()
    return float(spec.argmax()) * sr / x.numel()


def rms(x: torch.Tensor) -> float:
    return float(x.double().pow(2).mean().sqrt())


def write(path: Path, data: np.ndarray, sr: int = 16_000, **kw) -> Path:
    sf.write(path, data, sr, **kw)
    return path


# --------------------------------------------------------------------------------------------- resampling


def test_resample_22050_to_16k_keeps_frequency_amplitude_and_length():
    x = torch.from_numpy(tone(440, 1.0, 22050))
    y = resample(x, 22050, 16000)
    assert y.shape == (math.ceil(22050 * 16000 / 22050),) and y.dtype == torch.float32
    mid = y[2000:-2000]  # away from the zero-padded edges
    assert abs(peak_hz(mid, 16000) - 440) < 2
    assert rms(mid) == pytest.approx(0.5 / math.sqrt(2), rel=1e-3)


def test_resample_8k_to_16k_keeps_frequency_amplitude_and_length():
    x = torch.from_numpy(tone(1000, 0.7, 8000))
    y = resample(x, 8000, 16000)
    assert y.shape == (math.ceil(x.numel() * 2),)
    mid = y[2000:-2000]
    assert abs(peak_hz(mid, 16000) - 1000) < 3
    assert rms(mid) == pytest.approx(0.5 / math.sqrt(2), rel=1e-3)


@pytest.mark.parametrize(
    "orig,new,n", [(22050, 16000, 1001), (44100, 16000, 4410), (32000, 16000, 3), (11025, 16000, 7)]
)
def test_resample_length_is_ceil_and_leading_dims_are_kept(orig, new, n):
    x = torch.randn(2, 3, n)
    assert resample(x, orig, new).shape == (2, 3, math.ceil(n * new / orig))


def test_resample_is_identity_for_equal_rates():
    x = torch.randn(1234)
    assert torch.equal(resample(x, 16000, 16000), x)


def test_resample_attenuates_out_of_band_tone_by_more_than_40db():
    # 10 kHz at 44.1 kHz is above the new 8 kHz Nyquist; without a low-pass it would alias to 6 kHz.
    x = torch.from_numpy(tone(10_000, 1.0, 44100))
    y = resample(x, 44100, 16000)[1000:-1000]
    assert 20 * math.log10(rms(y) / rms(x)) < -40


def test_resample_gather_path_matches_dense_path():
    # The gather path serves rate pairs with a huge L·M (e.g. 16001 -> 16000); both must agree.
    g = math.gcd(22050, 16000)
    up, down = 16000 // g, 22050 // g
    x = torch.randn(2, 3000)
    n_out = math.ceil(3000 * up / down)
    dense = audio_mod._resample_dense(x, up, down, n_out)
    gather = audio_mod._resample_gather(x, up, down, n_out)
    torch.testing.assert_close(dense, gather, atol=1e-5, rtol=0)
    y = resample(torch.from_numpy(tone(440, 1.0, 16001)), 16001, 16000)  # coprime rates: gather path
    assert y.numel() == 16000 and abs(peak_hz(y[1000:-1000], 16000) - 440) < 2


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_resample_matches_cpu():
    x = torch.from_numpy(tone(440, 1.0, 22050))
    torch.testing.assert_close(
        resample(x.cuda(), 22050, 16000).cpu(), resample(x, 22050, 16000), atol=1e-5, rtol=0
    )


# ------------------------------------------------------------------------------------------------ loading


@pytest.mark.parametrize("fmt", ["wav", "flac", "ogg"])
def test_load_audio_reads_wav_flac_ogg(tmp_path, fmt):
    data = tone(440, 0.5, 16000)
    path = write(tmp_path / f"a.{fmt}", data)
    wave = load_audio(path)
    assert wave.dtype == torch.float32 and wave.dim() == 1
    if fmt == "ogg":  # lossy: same length, pitch and loudness
        assert wave.numel() == data.size
        assert abs(peak_hz(wave, 16000) - 440) < 3
        assert rms(wave) == pytest.approx(rms(torch.from_numpy(data)), rel=0.05)
    else:  # 16-bit PCM: exact up to quantisation
        np.testing.assert_allclose(wave.numpy(), data, atol=1 / 32768)
    assert audio_info(path) == (data.size, 16000, 1)
    # Seeking gives the same samples as decoding everything, in every format.
    np.testing.assert_allclose(
        load_audio(path, offset=0.1, duration=0.2).numpy(), wave[1600:4800].numpy(), atol=1e-6
    )


def test_load_audio_averages_channels_to_mono(tmp_path):
    left, right = tone(440, 0.3, 16000), tone(1000, 0.3, 16000, amp=0.25)
    path = write(tmp_path / "stereo.wav", np.stack([left, right], axis=1), subtype="FLOAT")
    assert audio_info(path)[2] == 2
    np.testing.assert_allclose(load_audio(path).numpy(), (left + right) / 2, atol=1e-7)


def test_load_audio_offset_and_duration_equal_slicing_the_full_array(tmp_path):
    data = np.random.default_rng(0).uniform(-0.5, 0.5, 16000 * 2).astype(np.float32)
    path = write(tmp_path / "slice.wav", data, subtype="FLOAT")
    full = load_audio(path).numpy()
    np.testing.assert_array_equal(full, data)
    np.testing.assert_array_equal(load_audio(path, offset=0.25, duration=0.5).numpy(), data[4000:12000])
    np.testing.assert_array_equal(load_audio(path, offset=1.5).numpy(), data[24000:])
    # A slice running past the end is cut at the end.
    np.testing.assert_array_equal(load_audio(path, offset=1.75, duration=1.0).numpy(), data[28000:])


def test_load_audio_reads_only_the_requested_frames(tmp_path, monkeypatch):
    path = write(tmp_path / "long.wav", np.zeros(16000 * 5, dtype=np.float32))
    seen: list[int] = []
    original = sf.SoundFile.read

    def spy(self, frames=-1, *args, **kwargs):
        seen.append(frames)
        return original(self, frames, *args, **kwargs)

    monkeypatch.setattr(sf.SoundFile, "read", spy)
    assert load_audio(path, offset=3.0, duration=0.5).numel() == 8000
    assert seen == [8000]


def test_load_audio_resamples_to_the_requested_rate(tmp_path):
    data = tone(440, 1.0, 22050)
    path = write(tmp_path / "a22k.wav", data, sr=22050, subtype="FLOAT")
    wave = load_audio(path)  # default 16 kHz
    assert wave.numel() == 16000
    torch.testing.assert_close(wave, resample(torch.from_numpy(data), 22050, 16000))
    assert abs(peak_hz(wave[1000:-1000], 16000) - 440) < 2
    # Slicing is in seconds of the file, before resampling.
    assert load_audio(path, offset=0.5, duration=0.25).numel() == math.ceil(
        round(0.25 * 22050) * 16000 / 22050
    )


def test_load_audio_accepts_duration_within_tolerance(tmp_path):
    path = write(tmp_path / "ok.wav", np.zeros(16000, dtype=np.float32))
    assert load_audio(path, expected_duration=1.05).numel() == 16000
    assert load_audio(path, offset=0.5, duration=0.5, expected_duration=0.5).numel() == 8000


# ------------------------------------------------------------------------------------------- bad audio


def assert_bad(exc: pytest.ExceptionInfo, reason: str, path: Path, field: str | None = None) -> None:
    err = exc.value
    assert err.reason == reason
    assert path.name in str(err) and path.name in err.detail
    assert err.path is None and err.line is None  # the caller fills the manifest location
    if field is not None:
        assert err.field == field
    located = err.with_location("train.jsonl", 7)
    assert "train.jsonl:7" in str(located) and path.name in str(located)


def test_missing_file_raises_missing_audio(tmp_path):
    path = tmp_path / "nowhere.wav"
    with pytest.raises(BadInputError) as exc:
        load_audio(path)
    assert_bad(exc, MISSING_AUDIO, path, field="audio_filepath")
    with pytest.raises(BadInputError) as exc:
        audio_info(path)
    assert_bad(exc, MISSING_AUDIO, path, field="audio_filepath")


def test_corrupt_file_raises_corrupt_audio(tmp_path):
    path = tmp_path / "garbage.wav"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(BadInputError) as exc:
        load_audio(path)
    assert_bad(exc, CORRUPT_AUDIO, path, field="audio_filepath")
    with pytest.raises(BadInputError) as exc:
        audio_info(path)
    assert_bad(exc, CORRUPT_AUDIO, path, field="audio_filepath")


def test_file_with_zero_samples_raises_empty_audio(tmp_path):
    path = write(tmp_path / "empty.wav", np.zeros(0, dtype=np.float32))
    with pytest.raises(BadInputError) as exc:
        load_audio(path)
    assert_bad(exc, EMPTY_AUDIO, path)


def test_offset_beyond_the_end_raises_empty_audio(tmp_path):
    path = write(tmp_path / "short.wav", np.zeros(8000, dtype=np.float32))
    with pytest.raises(BadInputError) as exc:
        load_audio(path, offset=0.6)
    assert_bad(exc, EMPTY_AUDIO, path)


def test_nan_samples_raise_nonfinite_audio(tmp_path):
    data = np.zeros(1600, dtype=np.float32)
    data[100] = np.nan
    data[200] = np.inf
    path = write(tmp_path / "nan.wav", data, subtype="FLOAT")
    with pytest.raises(BadInputError) as exc:
        load_audio(path)
    assert_bad(exc, NONFINITE_AUDIO, path)
    assert "2 NaN/inf" in exc.value.detail


def test_duration_mismatch_raises_with_manifest_and_real_values(tmp_path):
    path = write(tmp_path / "two_s.wav", np.zeros(32000, dtype=np.float32))
    with pytest.raises(BadInputError) as exc:
        load_audio(path, expected_duration=2.5)
    assert_bad(exc, DURATION_MISMATCH, path, field="duration")
    assert "2.500" in exc.value.detail and "2.000" in exc.value.detail
    # Relative to the offset: 2 s file, offset 1 s leaves 1 s, not the 2 s the manifest claims.
    with pytest.raises(BadInputError) as exc:
        load_audio(path, offset=1.0, expected_duration=2.0)
    assert exc.value.reason == DURATION_MISMATCH
    # A requested slice that runs past the end is short of the claimed duration.
    with pytest.raises(BadInputError) as exc:
        load_audio(path, offset=1.5, duration=1.0, expected_duration=1.0)
    assert exc.value.reason == DURATION_MISMATCH
