"""Log-mel features and SpecAugment: shapes, normalisation, tones, padding invariance, dither, masking."""

from __future__ import annotations

import math

import pytest
import torch

from fastaed.data.features import (
    FeatureConfig,
    LogMelFeatures,
    SpecAugment,
    SpecAugmentConfig,
    _draw_masks,
    hz_to_mel,
    mel_center_frequencies,
    mel_filterbank,
    mel_to_hz,
)

SR = 16_000
HOP = 160


def tone(freq: float, seconds: float = 1.0, sr: int = SR, amp: float = 0.5) -> torch.Tensor:
    """(N,) float32 sine; the phase is computed in float64 so long tones stay clean."""
    t = torch.arange(round(seconds * sr), dtype=torch.float64) / sr
    return (amp * torch.sin(2 * math.pi * freq * t)).float()


def noise_batch(lens: list[int], seed: int = 0, pad_value: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, max len) white noise padded with ``pad_value``, and (B,) lengths."""
    g = torch.Generator().manual_seed(seed)
    waves = torch.full((len(lens), max(lens)), pad_value)
    for i, n in enumerate(lens):
        waves[i, :n] = 0.1 * torch.randn(n, generator=g)
    return waves, torch.tensor(lens)


def test_shapes_lengths_and_dtype_follow_centred_stft_convention():
    waves, lens = noise_batch([16000, 12345, 800])
    feats, feat_lens = LogMelFeatures().eval()(waves, lens)
    assert feats.shape == (3, 16000 // HOP + 1, 128)
    assert feats.dtype == torch.float32
    assert feat_lens.dtype == torch.int64
    assert feat_lens.tolist() == [n // HOP + 1 for n in lens.tolist()]
    assert LogMelFeatures().num_frames(12345) == 12345 // HOP + 1
    assert FeatureConfig().num_frames(400) == 3


def test_per_feature_normalisation_uses_valid_frames_and_zeroes_padding():
    waves, lens = noise_batch([16000, 9000], seed=1)
    waves[:, :4000] *= 5  # non-stationary, so statistics over the wrong frames would show
    feats, feat_lens = LogMelFeatures().eval()(waves, lens)
    for i, n in enumerate(feat_lens.tolist()):
        valid = feats[i, :n]
        torch.testing.assert_close(valid.mean(0), torch.zeros(128), atol=1e-4, rtol=0)
        torch.testing.assert_close(valid.std(0), torch.ones(128), atol=1e-3, rtol=0)
        assert (feats[i, n:] == 0).all()


@pytest.mark.parametrize("freq", [1000.0, 3000.0])
def test_tone_peaks_in_the_mel_bin_whose_centre_is_nearest(freq):
    cfg = FeatureConfig(normalize="none")
    wave = tone(freq)
    feats, _ = LogMelFeatures(cfg).eval()(wave[None], torch.tensor([wave.numel()]))
    expected = int((mel_center_frequencies(cfg) - freq).abs().argmin())
    assert int(feats[0].mean(0).argmax()) == expected


def test_padding_invariance_alone_vs_batched_with_longer_utterance():
    cfg = FeatureConfig(dither=0.0)
    extractor = LogMelFeatures(cfg).eval()
    short, _ = noise_batch([12345], seed=2)
    batch, lens = noise_batch([12345, 20000], seed=3, pad_value=7.0)  # garbage padding must not leak
    batch[0, :12345] = short[0]
    alone, alone_lens = extractor(short, torch.tensor([12345]))
    batched, batched_lens = extractor(batch, lens)
    n = int(alone_lens[0])
    assert n == int(batched_lens[0]) == alone.shape[1]
    torch.testing.assert_close(batched[0, :n], alone[0], atol=1e-5, rtol=0)
    # The same holds with raw log-mels (no normalisation to hide an offset).
    raw = LogMelFeatures(FeatureConfig(dither=0.0, normalize="none")).eval()
    torch.testing.assert_close(
        raw(batch, lens)[0][0, :n], raw(short, torch.tensor([12345]))[0][0], atol=1e-5, rtol=0
    )


def test_dither_only_in_training_mode_and_deterministic_with_generator():
    waves, lens = noise_batch([8000, 6000], seed=4)
    waves[1] = 0.0  # silence: dither changes its log-mels a lot
    cfg = FeatureConfig(normalize="none")
    extractor = LogMelFeatures(cfg)
    plain = LogMelFeatures(FeatureConfig(normalize="none", dither=0.0)).eval()

    extractor.eval()
    torch.testing.assert_close(extractor(waves, lens)[0], plain(waves, lens)[0], atol=0, rtol=0)

    extractor.train()
    a, _ = extractor(waves, lens, generator=torch.Generator().manual_seed(0))
    b, _ = extractor(waves, lens, generator=torch.Generator().manual_seed(0))
    c, _ = extractor(waves, lens, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert not torch.equal(a, plain(waves, lens)[0])


def test_features_stay_float32_and_unchanged_under_autocast():
    waves, lens = noise_batch([8000, 5000], seed=5)
    extractor = LogMelFeatures().eval()
    ref, _ = extractor(waves, lens)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        feats, _ = extractor(waves.bfloat16(), lens)
    assert feats.dtype == torch.float32
    # Only the bf16 rounding of the input differs; the STFT itself must not run in bf16.
    torch.testing.assert_close(feats, extractor(waves.bfloat16().float(), lens)[0], atol=1e-5, rtol=0)
    assert (feats - ref).abs().mean() < 0.05


def test_feature_config_rejects_invalid_values():
    with pytest.raises(ValueError):
        FeatureConfig(win_length=600)
    with pytest.raises(ValueError):
        FeatureConfig(normalize="per_utterance")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        FeatureConfig(f_max=9000)
    with pytest.raises(ValueError):
        FeatureConfig(preemphasis=1.0)


def test_slaney_mel_scale_is_linear_below_1khz_and_invertible():
    hz = torch.tensor([0.0, 500.0, 1000.0, 4000.0, 8000.0], dtype=torch.float64)
    mel = hz_to_mel(hz)
    assert mel[1].item() == pytest.approx(7.5) and mel[2].item() == pytest.approx(15.0)
    torch.testing.assert_close(mel_to_hz(mel), hz)


def test_mel_filters_are_area_normalised_triangles_peaking_at_their_centres():
    assert mel_filterbank(FeatureConfig()).shape == (128, 257)
    # On a fine FFT grid every triangle is well sampled, so its area (sum × bin width) must be 1.
    cfg = FeatureConfig(n_fft=16384)
    fb = mel_filterbank(cfg)  # (n_mels, F)
    bin_hz = cfg.sample_rate / cfg.n_fft
    assert (fb >= 0).all()
    torch.testing.assert_close(fb.sum(1) * bin_hz, torch.ones(128), atol=2e-3, rtol=0)
    peaks = fb.argmax(1).double() * bin_hz
    assert ((peaks - mel_center_frequencies(cfg)).abs() <= bin_hz).all()


# ----------------------------------------------------------------------------------------------- SpecAugment


def test_specaugment_masks_only_inside_valid_lengths():
    torch.manual_seed(0)
    lens = torch.tensor([100, 37, 60])
    feats = torch.ones(3, 100, 128)
    aug = SpecAugment(SpecAugmentConfig(freq_masks=2, freq_width=27, time_masks=10, time_width=0.05)).train()
    out = aug(feats, lens, generator=torch.Generator().manual_seed(0))
    assert (feats == 1).all()  # input untouched
    masked = out == 0
    assert masked.any()
    for i, n in enumerate(lens.tolist()):
        assert not masked[i, n:].any()
        # Time masks: at most 10 masks of at most floor(0.05 · n) frames each.
        fully_masked_frames = masked[i, :n].all(1).sum()
        assert fully_masked_frames <= 10 * math.floor(0.05 * n)


def test_specaugment_mask_widths_respect_limits():
    lens = torch.full((64,), 200)
    feats = torch.ones(64, 200, 80)
    g = torch.Generator().manual_seed(1)
    time_only = SpecAugment(SpecAugmentConfig(freq_masks=0, time_masks=1, time_width=7)).train()
    out = time_only(feats, lens, generator=g)
    widths = (out[:, :, 0] == 0).sum(1)
    assert widths.max() <= 7 and widths.max() > 0
    assert (out == 0).all(2).sum(1).equal(widths)  # whole frames
    freq_only = SpecAugment(SpecAugmentConfig(freq_masks=1, freq_width=27, time_masks=0)).train()
    out = freq_only(feats, lens, generator=g)
    widths = (out[:, 0, :] == 0).sum(1)
    assert widths.max() <= 27 and widths.max() > 0


def test_specaugment_draws_masks_that_end_inside_their_limit():
    max_width = torch.tensor([[0], [5], [27], [10]])
    limit = torch.tensor([[50], [5], [128], [12]])
    start, width = _draw_masks(max_width, limit, 2000, torch.Generator().manual_seed(2))
    assert start.shape == width.shape == (4, 2000)
    assert (width >= 0).all() and (width <= max_width).all() and (start >= 0).all()
    assert (start + width <= limit).all()
    # Every width from 0 to max is drawn (uniform), including the extremes.
    assert width[2].unique().numel() == 28 and (width[0] == 0).all()


def test_specaugment_is_identity_in_eval_mode():
    feats = torch.randn(2, 50, 128)
    out = SpecAugment().eval()(feats, torch.tensor([50, 30]))
    assert torch.equal(out, feats)


def test_specaugment_is_deterministic_with_generator():
    feats = torch.randn(4, 120, 128)
    lens = torch.tensor([120, 100, 80, 60])
    aug = SpecAugment().train()
    a = aug(feats, lens, generator=torch.Generator().manual_seed(3))
    b = aug(feats, lens, generator=torch.Generator().manual_seed(3))
    c = aug(feats, lens, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_specaugment_config_rejects_bad_time_width():
    with pytest.raises(ValueError):
        SpecAugmentConfig(time_width=1.5)
    with pytest.raises(TypeError):
        SpecAugmentConfig(time_width=True)


# ----------------------------------------------------------------------------------------------------- GPU


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_features_match_cpu_features():
    waves, lens = noise_batch([16000, 12345, 4000], seed=6)
    cpu = LogMelFeatures().eval()
    gpu = LogMelFeatures().eval().cuda()
    ref, ref_lens = cpu(waves, lens)
    out, out_lens = gpu(waves.cuda(), lens.cuda())
    assert out.is_cuda and out.dtype == torch.float32
    assert torch.equal(out_lens.cpu(), ref_lens)
    torch.testing.assert_close(out.cpu(), ref, atol=2e-3, rtol=1e-3)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        auto, _ = gpu(waves.cuda(), lens.cuda())
    torch.testing.assert_close(auto.cpu(), ref, atol=2e-3, rtol=1e-3)
    aug = SpecAugment().train().cuda()
    masked = aug(out, out_lens, generator=torch.Generator(device="cuda").manual_seed(0))
    assert masked.is_cuda and masked.shape == out.shape
