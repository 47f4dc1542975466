"""Voice-activity detection for batched long-form transcription: where is speech, and where to cut.

The detector is Silero VAD v6 (the weights ship in the ``silero-vad`` wheel), run by our own torch code
rather than silero's: its ``get_speech_timestamps`` calls a TorchScript model once per 32 ms window, 0.5 to
0.8 s per minute of audio on two cores. Here the convolutional front end, which depends on one window only,
runs over every window of a block in one batched call, and only the LSTM walks the window sequence (one
``nn.LSTM`` call per block); the state is carried from block to block, so any block size gives the same
probabilities. Measured on 60 s of real speech, 2 threads: 31 ms against silero's 534 ms (17x).

The silero package is never imported: its ``__init__`` calls ``torch.set_num_threads(1)``, which would slow
down everything else in the process. Its data file is found through the import system's metadata alone.

Pipeline: :func:`speech_probs` (one probability per 512-sample window at 16 kHz) → :func:`speech_regions`
(hysteresis into speech intervals, seconds) → :func:`merge_chunks` (greedy packing of regions into chunks
no longer than the model's window, each with its true offset in the file). :func:`detect_chunks` does all.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fastaed.data.audio import resample

VAD_SAMPLE_RATE = 16_000  # the weights are the 16 kHz model; other rates are resampled first
WINDOW_SAMPLES = 512  # one probability per 32 ms window
CONTEXT_SAMPLES = 64  # each window is seen with the 64 samples before it (zeros before the first)
WINDOW_S = WINDOW_SAMPLES / VAD_SAMPLE_RATE
DEFAULT_BLOCK_WINDOWS = 4096  # ~131 s of audio per batched front-end call: ~25 MB of activations
MIN_BLOCK_WINDOWS = 16  # no model call on fewer windows, unless the whole stream is shorter (see VadStream)

WEIGHTS_PACKAGE = "silero_vad"
# The TorchScript model: its 16 kHz weights are v6 ("VADr_v6_10_25"). The wheel's silero_vad_16k.safetensors
# holds different, older weights (they differ from these by up to 18 in one conv), so it is not used.
WEIGHTS_FILE = "data/silero_vad.jit"

Region = tuple[float, float]  # (start, end) in seconds of the file


# ------------------------------------------------------------------------------------------------ model


def weights_path() -> Path:
    """The TorchScript model file inside the installed ``silero-vad`` wheel, found without importing it."""
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        path = Path(location) / WEIGHTS_FILE
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"no {WEIGHTS_FILE} in an installed {WEIGHTS_PACKAGE!r} package (searched {locations or 'nothing'}); "
        "install fastaed's dependencies (pip install silero-vad==6.2.3)"
    )


class SileroVad(nn.Module):
    """Silero VAD v6, 16 kHz (:func:`load_vad` maps silero's parameter names to these).

    Per window: a 256-point STFT as a convolution (hop 128) over the 576 samples (64 of context + 512) with
    64 samples of reflection padding on the right, magnitude, four conv+ReLU layers down to one 128-d
    vector, an LSTM cell over the window sequence, then ReLU, a 1x1 conv and a sigmoid.
    """

    def __init__(self) -> None:
        super().__init__()
        self.n_fft = 256
        self.stft_conv = nn.Conv1d(1, 2 * (self.n_fft // 2 + 1), self.n_fft, stride=128, bias=False)
        self.conv1 = nn.Conv1d(129, 128, 3, padding=1)
        self.conv2 = nn.Conv1d(128, 64, 3, stride=2, padding=1)
        self.conv3 = nn.Conv1d(64, 64, 3, stride=2, padding=1)
        self.conv4 = nn.Conv1d(64, 128, 3, padding=1)
        # Trained as an LSTM cell; nn.LSTM has the same gate layout and runs a whole sequence in one call.
        self.lstm = nn.LSTM(128, 128)
        self.final_conv = nn.Conv1d(128, 1, 1)

    def window_features(self, windows: torch.Tensor) -> torch.Tensor:
        """(B, 576) windows with their context → (B, 128) LSTM inputs. Windows are independent here."""
        x = F.pad(windows.unsqueeze(1), (0, CONTEXT_SAMPLES), mode="reflect")  # (B, 1, 640)
        spec = self.stft_conv(x)  # (B, 258, 4): real parts then imaginary parts
        half = self.n_fft // 2 + 1
        x = (spec[:, :half] ** 2 + spec[:, half:] ** 2).sqrt()  # (B, 129, 4)
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            x = torch.relu(conv(x))
        return x.squeeze(-1)  # (B, 128, 1) → (B, 128)

    def forward(
        self, windows: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Consecutive windows of one stream → their probabilities and the state after the last one.

        Args:
            windows: (T, 576) float, window t = its 64 context samples then its 512 samples.
            state: (h, c), each (1, 128), after the window before the first; None at the stream's start.
        Returns:
            (T,) speech probabilities and the new (h, c).
        """
        features = self.window_features(windows)  # (T, 128)
        # The LSTM is T steps of a 128-wide matrix-vector product: far too small to share between threads,
        # and on a busy machine every step would wait for a second thread to be scheduled (measured: 12 s
        # instead of 0.03 s for two minutes of audio at load 3.4 on 2 cores). One thread, then back.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            hidden, (h, c) = self.lstm(features, state)  # (T, 128): h after each window
        finally:
            torch.set_num_threads(threads)
        return self._decide(hidden), (h, c)

    def _decide(self, hidden: torch.Tensor) -> torch.Tensor:
        """(T, 128) LSTM outputs → (T,) probabilities: ReLU, the 1x1 conv, sigmoid.

        A window's result must not depend on how the stream was cut into blocks, but a conv, matmul or
        sum over T rows may add in a T-dependent order, and an elementwise op's vectorised body and scalar
        tail may round differently. So the dot product is a fixed halving tree of elementwise adds, and
        the sigmoid runs in float64, whose last-bit differences vanish in the rounding to float32.
        """
        terms = torch.relu(hidden) * self.final_conv.weight.view(1, -1)  # (T, 128)
        while terms.shape[-1] > 1:
            half = terms.shape[-1] // 2
            terms = terms[:, :half] + terms[:, half:]
        logits = terms.squeeze(-1) + self.final_conv.bias
        return torch.sigmoid(logits.double()).float()


# Our parameter → its name in the TorchScript archive's 16 kHz model (``_model``).
_SILERO_NAMES = {
    "stft_conv.weight": "stft.forward_basis_buffer",
    **{
        f"conv{i + 1}.{kind}": f"encoder.{i}.reparam_conv.{kind}"
        for i in range(4)
        for kind in ("weight", "bias")
    },
    **{f"lstm.{kind}_l0": f"decoder.rnn.{kind}" for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")},
    "final_conv.weight": "decoder.decoder.2.weight",
    "final_conv.bias": "decoder.decoder.2.bias",
}


@functools.cache
def load_vad() -> SileroVad:
    """The VAD on the CPU in eval mode, loaded once per process (shared: move a copy, not this one)."""
    # torch's own TorchScript loader reads the archive; the model's code is never run, only its tensors taken.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "`torch.jit.load` is deprecated", DeprecationWarning)
        archive = torch.jit.load(str(weights_path()), map_location="cpu")
    silero = {name: tensor.detach().clone() for name, tensor in archive._model.state_dict().items()}
    model = SileroVad()
    model.load_state_dict({ours: silero[theirs] for ours, theirs in _SILERO_NAMES.items()})
    return model.eval().requires_grad_(False)


# --------------------------------------------------------------------------------------- probabilities


class VadStream:
    """Speech probabilities of one audio stream fed in pieces of any size (a long file read piece by piece).

    Each window is scored exactly as silero scores it (its 64 context samples, the LSTM state after the
    window before), and the last, partial window zero-padded, so a stream of N samples gets ceil(N / 512)
    values. They do not depend on how the stream is cut into pieces, nor on ``block_windows``, bit for bit:
    batched kernels take other code paths for a batch of one or two rows (a matrix-vector product) that
    round differently, so every model call but the last covers exactly ``block_windows`` windows, and a
    remainder smaller than MIN_BLOCK_WINDOWS is held back to join the last call. ``push`` returns what
    could be scored so far, ``finish`` the rest.
    """

    def __init__(self, model: SileroVad | None = None, block_windows: int = DEFAULT_BLOCK_WINDOWS) -> None:
        if block_windows < MIN_BLOCK_WINDOWS:
            raise ValueError(f"block_windows must be >= {MIN_BLOCK_WINDOWS}, got {block_windows}")
        self.model = model if model is not None else load_vad()
        self.block_windows = block_windows
        device = next(self.model.parameters()).device
        # The context of the next window to score, then every sample after it not scored yet.
        self._pending = torch.zeros(CONTEXT_SAMPLES, device=device)
        self._state: tuple[torch.Tensor, torch.Tensor] | None = None
        self._finished = False
        self.num_samples = 0

    @torch.inference_mode()
    def push(self, samples: torch.Tensor) -> torch.Tensor:
        """(n,) float samples at 16 kHz → (k,) probabilities of the next k windows (k may be 0)."""
        if samples.dim() != 1:
            raise ValueError(f"VadStream.push takes a 1-D waveform, got shape {tuple(samples.shape)}")
        if self._finished:
            raise RuntimeError("VadStream.push after finish(): start a new stream")
        self.num_samples += samples.numel()
        buffer = torch.cat([self._pending, samples.to(self._pending.device, torch.float32)])
        num_windows = (buffer.numel() - CONTEXT_SAMPLES) // WINDOW_SAMPLES
        probs, first = [], 0
        while num_windows - first - self.block_windows >= MIN_BLOCK_WINDOWS:
            probs.append(self._score(buffer, first, first + self.block_windows))
            first += self.block_windows
        self._pending = buffer[first * WINDOW_SAMPLES :].clone()
        return torch.cat(probs) if probs else buffer.new_zeros(0)

    @torch.inference_mode()
    def finish(self) -> torch.Tensor:
        """(k,) probabilities of the windows not returned yet, the last one zero-padded to 512 samples."""
        self._finished = True
        unscored = self._pending.numel() - CONTEXT_SAMPLES
        if unscored == 0:
            return self._pending.new_zeros(0)
        padded = F.pad(self._pending, (0, -unscored % WINDOW_SAMPLES))
        self._pending = padded[:CONTEXT_SAMPLES]
        return self._score(padded, 0, (padded.numel() - CONTEXT_SAMPLES) // WINDOW_SAMPLES)

    def _score(self, buffer: torch.Tensor, first: int, last: int) -> torch.Tensor:
        """Windows [first, last) of ``buffer`` (which starts with the context of window 0)."""
        span = buffer[first * WINDOW_SAMPLES : last * WINDOW_SAMPLES + CONTEXT_SAMPLES]
        windows = span.unfold(0, CONTEXT_SAMPLES + WINDOW_SAMPLES, WINDOW_SAMPLES)  # (T, 576), a view
        probs, self._state = self.model(windows, self._state)
        return probs


def speech_probs(
    audio: torch.Tensor, model: SileroVad | None = None, block_windows: int = DEFAULT_BLOCK_WINDOWS
) -> torch.Tensor:
    """Per-window speech probabilities of a 16 kHz waveform.

    Args:
        audio: (N,) float samples at 16 kHz (resample other rates first; see :func:`detect_chunks`).
        block_windows: windows per batched call (>= MIN_BLOCK_WINDOWS); bounds memory, never changes the
            result.
    Returns:
        (ceil(N / 512),) float32 on the model's device: window i covers samples [512 i, 512 (i + 1)); the
        last, partial window is scored zero-padded, as silero's ``get_speech_timestamps`` does.
    """
    stream = VadStream(model, block_windows)
    step = block_windows * WINDOW_SAMPLES  # slice the input too, so no full-length copy is ever made
    pieces = [stream.push(audio[start : start + step]) for start in range(0, audio.numel(), step)]
    return torch.cat([*pieces, stream.finish()])


# ------------------------------------------------------------------------------------------- regions


@dataclass(frozen=True)
class VadConfig:
    """How probabilities become speech regions. The defaults are chosen for transcription, where a lost
    word costs more than a second of silence decoded:

    - threshold 0.5: silero's calibrated default; speech starts at the first window at or above it.
    - neg_threshold (None = threshold - 0.15): speech continues until a window falls below this lower
      value (hysteresis), so a dip between syllables does not end it.
    - min_silence_s 0.5: a region ends only after this much silence, so regions are phrases and the short
      pauses between words never split them (each split is a place a chunk may be cut).
    - min_speech_s 0.1: shorter regions are dropped (a click, a breath), but a short isolated word ("no")
      is kept, which silero's 0.25 s default can drop.
    - speech_pad_s 0.2: each region grows by this much on both sides, because window decisions are 32 ms
      coarse and soft onsets and word-final consonants score low; neighbours closer than twice the pad
      share the silence between them at its middle, so regions never overlap.
    """

    threshold: float = 0.5
    neg_threshold: float | None = None
    min_speech_s: float = 0.1
    min_silence_s: float = 0.5
    speech_pad_s: float = 0.2

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")
        if not 0.0 <= self.exit_threshold <= self.threshold:
            raise ValueError(f"neg_threshold must be in [0, threshold], got {self.neg_threshold}")
        for name in ("min_speech_s", "min_silence_s", "speech_pad_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    @property
    def exit_threshold(self) -> float:
        """The probability below which speech ends (``neg_threshold`` or its default)."""
        if self.neg_threshold is not None:
            return self.neg_threshold
        return max(self.threshold - 0.15, 0.01)


def speech_regions(
    probs: torch.Tensor | Sequence[float],
    config: VadConfig | None = None,
    sample_rate: int = VAD_SAMPLE_RATE,
    num_samples: int | None = None,
) -> list[Region]:
    """Speech intervals of the audio ``probs`` was computed on, in seconds, sorted and non-overlapping.

    Args:
        probs: (W,) per-window probabilities from :func:`speech_probs` (window i starts at i · 32 ms).
        sample_rate, num_samples: the audio's length (any rate), which bounds the last region; None
            means W whole windows.
    """
    config = config or VadConfig()
    values = probs.tolist() if isinstance(probs, torch.Tensor) else list(probs)
    duration = num_samples / sample_rate if num_samples is not None else len(values) * WINDOW_S
    raw = [
        (first * WINDOW_S, min(last * WINDOW_S, duration))
        for first, last in _hysteresis(values, config)
        if min(last * WINDOW_S, duration) - first * WINDOW_S >= config.min_speech_s
    ]
    return _pad(raw, config.speech_pad_s, duration)


def _hysteresis(values: list[float], config: VadConfig) -> Iterator[tuple[int, int]]:
    """Window spans [first, last) of speech: enter at >= threshold, leave after min_silence_s below the
    exit threshold; the span ends where that silence began."""
    min_silence_windows = math.ceil(config.min_silence_s / WINDOW_S - 1e-9)
    start: int | None = None  # first window of the current region
    silence_from: int | None = None  # first window of the silence that may end it
    for i, p in enumerate(values):
        if start is None:
            if p >= config.threshold:
                start, silence_from = i, None
            continue
        if p >= config.threshold:
            silence_from = None  # speech again: the pause was too short to end the region
        elif p < config.exit_threshold and silence_from is None:
            silence_from = i
        if silence_from is not None and i + 1 - silence_from >= max(min_silence_windows, 1):
            yield start, silence_from
            start = silence_from = None
    if start is not None:
        yield start, silence_from if silence_from is not None else len(values)


def _pad(regions: list[Region], pad: float, duration: float) -> list[Region]:
    """Grow each region by ``pad`` each side within [0, duration]; close neighbours split their gap."""
    padded = []
    for i, (start, end) in enumerate(regions):
        before = regions[i - 1][1] if i > 0 else None
        after = regions[i + 1][0] if i + 1 < len(regions) else None
        start = max(0.0, start - pad) if before is None else max(start - pad, (before + start) / 2)
        end = min(duration, end + pad) if after is None else min(end + pad, (end + after) / 2)
        padded.append((start, end))
    return padded


# -------------------------------------------------------------------------------------------- chunks


@dataclass(frozen=True)
class Chunk:
    """A span of the file to decode as one input: [start, end) seconds from the file's start.

    ``regions`` are the speech regions (or pieces of a cut region) inside it, in order; the chunk runs from
    the first one's start to the last one's end, so chunks have their own lengths, not all max_chunk_s.
    """

    start: float
    end: float
    regions: tuple[Region, ...] = field(default=())

    @property
    def duration(self) -> float:
        return self.end - self.start


def merge_chunks(
    regions: Sequence[Region],
    max_chunk_s: float,
    min_gap_s: float = 0.0,
    probs: torch.Tensor | Sequence[float] | None = None,
    max_gap_s: float | None = None,
) -> list[Chunk]:
    """Pack neighbouring speech regions greedily into chunks of at most ``max_chunk_s``.

    A chunk is cut only between regions, and only at a gap of at least ``min_gap_s`` (closer regions stay
    together, as one region). A region longer than ``max_chunk_s`` is cut into pieces first: at its
    least-speech-like window in the second half of each allowed span when ``probs`` (per-window, as from
    :func:`speech_probs`) is given, else into equal pieces. A gap longer than ``max_gap_s`` (None: no limit)
    always ends a chunk, so no chunk decodes a long silence.

    Args:
        regions: sorted, non-overlapping (start, end) seconds, as from :func:`speech_regions`.
        max_chunk_s: the model's best input length (30 s for padded Whisper).
    Returns:
        Chunks in order; every region is covered by exactly one chunk (a cut one by consecutive chunks).
    """
    if max_chunk_s <= 0:
        raise ValueError(f"max_chunk_s must be > 0, got {max_chunk_s}")
    values = probs.tolist() if isinstance(probs, torch.Tensor) else probs
    pieces: list[list[Region]] = []  # units that are never cut further: lists of regions
    for unit in _glue(regions, min_gap_s):
        if unit[-1][1] - unit[0][0] <= max_chunk_s:
            pieces.append(unit)
            continue
        for cut_start, cut_end in _cut(unit[0][0], unit[-1][1], max_chunk_s, values):
            inside = [(max(s, cut_start), min(e, cut_end)) for s, e in unit if e > cut_start and s < cut_end]
            if inside:  # empty only when a cut span lies wholly in a gap glued by a large min_gap_s
                pieces.append(inside)
    chunks: list[list[Region]] = []
    for piece in pieces:
        if chunks:
            current = chunks[-1]
            fits = piece[-1][1] - current[0][0] <= max_chunk_s
            near = max_gap_s is None or piece[0][0] - current[-1][1] <= max_gap_s
            if fits and near:
                current.extend(piece)
                continue
        chunks.append(list(piece))
    return [Chunk(c[0][0], c[-1][1], tuple(c)) for c in chunks]


def _glue(regions: Sequence[Region], min_gap_s: float) -> list[list[Region]]:
    """Regions grouped so that no gap inside a group reaches ``min_gap_s``."""
    units: list[list[Region]] = []
    previous_end = -math.inf
    for start, end in regions:
        if end < start or start < previous_end:
            raise ValueError(
                f"regions must be sorted and non-overlapping: {start}..{end} after one ending {previous_end}"
            )
        if units and start - previous_end < min_gap_s:
            units[-1].append((start, end))
        else:
            units.append([(start, end)])
        previous_end = end
    return units


def _cut(start: float, end: float, max_chunk_s: float, probs: Sequence[float] | None) -> list[Region]:
    """[start, end) in consecutive pieces of at most ``max_chunk_s`` (see :func:`merge_chunks`)."""
    if probs is None or len(probs) == 0:
        count = math.ceil((end - start) / max_chunk_s - 1e-9)
        bounds = [start + (end - start) * k / count for k in range(count + 1)]
        return list(zip(bounds[:-1], bounds[1:]))
    pieces = []
    while end - start > max_chunk_s:
        # Windows lying wholly inside (start + max/2, start + max]; cut at the middle of the least likely.
        first = math.ceil((start + max_chunk_s / 2) / WINDOW_S)
        last = min(math.floor((start + max_chunk_s) / WINDOW_S), len(probs))  # exclusive
        if first >= last:  # too short a limit for a window, or no probabilities there: cut at the limit
            cut = start + max_chunk_s
        else:
            best = min(range(first, last), key=lambda i: (probs[i], -i))  # ties: the later, longer piece
            cut = (best + 0.5) * WINDOW_S
        pieces.append((start, cut))
        start = cut
    pieces.append((start, end))
    return pieces


def detect_chunks(
    audio: torch.Tensor,
    sample_rate: int,
    config: VadConfig | None = None,
    max_chunk_s: float = 30.0,
    model: SileroVad | None = None,
) -> list[Chunk]:
    """Speech chunks of a waveform: (N,) float at ``sample_rate`` → chunks of at most ``max_chunk_s``.

    Audio with no speech gives an empty list.
    """
    audio16 = resample(audio.float(), sample_rate, VAD_SAMPLE_RATE)
    probs = speech_probs(audio16, model)
    regions = speech_regions(probs, config, sample_rate, audio.numel())
    return merge_chunks(regions, max_chunk_s, probs=probs)
