"""Signal-processing and model-rate constants shared by data, model and decoding.

Everything derived is computed, never retyped.
"""

SAMPLE_RATE = 16_000  # Hz; every audio file is resampled to this on load
WINDOW_SECONDS = 0.025  # STFT window length (s)
HOP_SECONDS = 0.010  # STFT hop (s)
N_FFT = 512  # FFT size (samples); the 400-sample window is zero-padded to it
N_MELS = 128  # log-mel bins
SUBSAMPLING = 8  # encoder frame-rate reduction (FastConformer: 3 stride-2 convs)


def exact_div(x: int | float, y: int | float) -> int:
    q, r = divmod(round(x * 1_000_000), round(y * 1_000_000))
    assert r == 0, f"{x} is not a multiple of {y}"
    return q


WIN_LENGTH = exact_div(SAMPLE_RATE * WINDOW_SECONDS, 1)  # 400 samples
HOP_LENGTH = exact_div(SAMPLE_RATE * HOP_SECONDS, 1)  # 160 samples
FRAMES_PER_SECOND = exact_div(SAMPLE_RATE, HOP_LENGTH)  # 100 feature frames / s
ENCODER_FRAMES_PER_SECOND = FRAMES_PER_SECOND / SUBSAMPLING  # 12.5 encoder frames / s (80 ms)
