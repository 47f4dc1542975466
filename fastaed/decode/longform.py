"""Long-form transcription: audio of any length in, timed segments out, for Whisper and fastaed/Canary models.

Two algorithms (``LongFormConfig.long_form``):

* ``sequential`` (Whisper): openai-whisper's ``transcribe()``. The log-mel of the whole file (followed by 30 s
  of silence) is sliced into 30 s windows; each window is decoded with timestamp tokens
  (:mod:`fastaed.decode.whisper_window`), its text cut into segments at the timestamp pairs, and the next
  window starts where the last complete segment ended (or after the window, when it ended on a single
  timestamp). The text so far is the next window's prompt (``condition_on_previous_text``). A window whose
  output is too repetitive (compression ratio above 2.4) or too unlikely (average log-probability below -1)
  is decoded again at the next temperature; a window that is probably silence (``<|nospeech|>`` above 0.6
  and an unlikely output) is skipped. Greedy at temperature 0 writes the tokens openai-whisper writes.
* ``batched`` (every model): a voice-activity detector (:mod:`fastaed.decode.vad`) finds the speech; regions
  are merged into chunks of at most ``chunk_s`` seconds, each keeping its true offset in the file. Chunks of
  all files are decoded together, sorted by duration and batched (the paper's bucketing, applied to
  inference), with the model's own input (padded or not). One segment per chunk, from its first to its last
  speech second.

``auto`` decodes a clip that fits the model's window as one utterance (today's path) when no timestamps are
asked for; otherwise Whisper with padded input runs ``sequential`` and every other model ``batched``.

Memory: a file's audio and (sequential) its log-mel, half the audio's size, are held; nothing else grows
with the file's length (the spectrogram is computed in blocks, see ``WhisperLogMel.long_log_mel``).
Batched decoding reads files until ``group_s`` seconds of chunks are waiting, decodes them, then goes on.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from tqdm.auto import tqdm

from fastaed.data import errors as E
from fastaed.data.dataset import load_utterance_audio
from fastaed.data.manifest import Utterance
from fastaed.data.whisper_features import WhisperLogMel
from fastaed.data.whisper_tokenizer import WhisperTokenizer
from fastaed.decode.chunked import AUDIO_PAD_S, ChunkedDecoder
from fastaed.decode.segments import FileTranscript, Segment
from fastaed.decode.transcribe import Transcriber, TranscribeResult, Transcript
from fastaed.decode.whisper_window import TIME_PRECISION, WindowDecoder, WindowResult
from fastaed.util.devices import synchronize

LongFormMode = Literal["auto", "sequential", "batched"]
TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


@dataclass(frozen=True)
class LongFormConfig:
    """How audio longer than one window is decoded (defaults: openai-whisper's ``transcribe``)."""

    long_form: LongFormMode = field(
        default="auto",
        metadata={"help": "audio longer than one window, or timestamps asked for: sequential (Whisper: "
                  "openai-whisper's algorithm), batched (voice activity -> chunks decoded in duration-sorted "
                  "batches; every model), auto (sequential for Whisper with padded input, else batched)"},
    )  # fmt: skip
    temperatures: tuple[float, ...] = field(
        default=TEMPERATURES, metadata={"help": "sequential: fallback temperatures, tried in order"}
    )
    compression_ratio_threshold: float | None = field(
        default=2.4, metadata={"help": "sequential: a window whose text compresses better is decoded again"}
    )
    logprob_threshold: float | None = field(
        default=-1.0,
        metadata={"help": "sequential: a window whose mean token log-prob is lower is decoded again"},
    )
    no_speech_threshold: float | None = field(
        default=0.6,
        metadata={"help": "sequential: a window this likely silent (and unlikely text) is skipped"},
    )
    condition_on_previous_text: bool = field(
        default=True, metadata={"help": "sequential: the text so far is the next window's prompt"}
    )
    initial_prompt: str | None = field(
        default=None, metadata={"help": "sequential: text that precedes the first window (names, spelling)"}
    )
    word_timestamps: bool = field(
        default=False,
        metadata={"help": "times of every word (Whisper: cross-attention DTW; CTC heads: CTC alignment)"},
    )
    chunk_s: float = field(
        default=30.0, metadata={"help": "batched: longest chunk of merged speech (seconds)"}
    )
    group_s: float = field(
        default=1800.0, metadata={"help": "batched: seconds of chunks held and decoded together"}
    )
    seed: int = field(default=0, metadata={"cli": False})  # sampling at temperature > 0

    def __post_init__(self) -> None:
        if self.long_form not in ("auto", "sequential", "batched"):
            raise ValueError(f"long_form must be auto, sequential or batched, got {self.long_form!r}")
        if not self.temperatures or any(t < 0 for t in self.temperatures):
            raise ValueError(f"temperatures must be a non-empty list of values >= 0, got {self.temperatures}")
        if self.chunk_s <= 2 * AUDIO_PAD_S or self.group_s <= 0:
            raise ValueError(f"chunk_s must be > {2 * AUDIO_PAD_S} and group_s > 0")


@dataclass
class LongFormResult:
    """Timed transcripts in input order, plus the totals ``fastaed transcribe`` reports."""

    transcripts: list[FileTranscript]
    audio_seconds: float
    wall_seconds: float
    skipped: E.BadInputReport
    mode: str  # the algorithm that ran ("sequential", "batched", or "short" for single-window clips)
    windows: int = 0  # sequential: windows decoded (fallback re-decodes included); batched: chunks
    fallbacks: int = 0

    @property
    def rtfx(self) -> float:
        return self.audio_seconds / max(self.wall_seconds, 1e-9)


def resolve_mode(tr: Transcriber, config: LongFormConfig) -> str:
    """The algorithm ``auto`` stands for with this model; sequential is refused for non-Whisper models."""
    whisper = isinstance(tr.tokenizer, WhisperTokenizer)
    if config.long_form == "sequential" and not whisper:
        raise ValueError(
            f"--long-form sequential needs a Whisper model (its timestamp tokens); this is a {tr.family} "
            "model: use batched"
        )
    if config.long_form != "auto":
        return config.long_form
    return "sequential" if whisper and tr.padded_whisper else "batched"


def transcribe_long(
    tr: Transcriber,
    utterances: Sequence[Utterance],
    config: LongFormConfig,
    *,
    on_bad_input: str = "error",
    pnc: str = "prompt",
) -> LongFormResult:
    """Timed transcripts of ``utterances`` (whole files or manifest entries of any length)."""
    mode = resolve_mode(tr, config)
    if config.word_timestamps:
        _check_word_timestamps(tr)
    report = E.BadInputReport()
    usable = tr.usable(utterances, on_bad_input, report, pnc, any_length=True)  # type: ignore[arg-type]
    total = sum(utterances[i].duration for i in usable)
    bar = tqdm(total=round(total, 1), desc=f"transcribe ({mode})", unit="s", disable=not tr.config.progress)
    synchronize(tr.device)
    t0 = time.perf_counter()
    if mode == "sequential":
        engine = _Sequential(tr, config)
        done = {}
        for i in usable:
            try:
                done[i] = engine.transcribe(utterances[i], bar)
            except E.BadInputError as err:
                E.handle(err, on_bad_input, report)  # type: ignore[arg-type]
        windows, fallbacks = engine.windows, engine.fallbacks
    else:
        batched = ChunkedDecoder(tr, config.chunk_s, word_timestamps=config.word_timestamps,
                                 group_s=config.group_s)  # fmt: skip
        done = batched.transcribe([(i, utterances[i]) for i in usable], on_bad_input, report, bar)
        windows, fallbacks = batched.chunks, 0
    synchronize(tr.device)
    wall = time.perf_counter() - t0
    bar.close()
    ordered = [done[i] for i in sorted(done)]
    return LongFormResult(ordered, sum(t.duration for t in ordered), wall, report, mode, windows, fallbacks)


def _check_word_timestamps(tr: Transcriber) -> None:
    if isinstance(tr.tokenizer, WhisperTokenizer) or tr.model.ctc_head is not None:
        return
    raise ValueError(
        f"--word-timestamps needs a Whisper model (cross-attention alignment) or a model with a CTC head; "
        f"this {tr.family} model has neither"
    )


def needs_long_form(tr: Transcriber, utterances: Sequence[Utterance], config: LongFormConfig) -> bool:
    """Whether ``auto`` must leave the one-utterance path: a clip is longer than the model's window (or
    than a batched chunk, for models without one), or the caller asked for another mode."""
    if config.long_form != "auto" or config.word_timestamps:
        return True
    return not all(_fits_one_window(tr, u, config) for u in utterances)


def _fits_one_window(tr: Transcriber, utt: Utterance, config: LongFormConfig) -> bool:
    """Whether a clip is decoded as one utterance: it fits the model's window (or a batched chunk, for models
    without one)."""
    return utt.duration <= (tr.max_seconds() or config.chunk_s)


def transcribe_any_length(
    tr: Transcriber,
    utterances: Sequence[Utterance],
    config: LongFormConfig,
    *,
    on_bad_input: str = "error",
    pnc: str = "scored",
) -> TranscribeResult:
    """Texts of clips of any length, for scoring: those that fit the model's window decoded as one utterance
    each (``Transcriber.run``), the longer ones by long-form decoding; results in input order, audio and
    wall seconds summed over both."""
    long_ids = {i for i, u in enumerate(utterances) if not _fits_one_window(tr, u, config)}
    short = tr.run([u for i, u in enumerate(utterances) if i not in long_ids], on_bad_input=on_bad_input,
                   pnc=pnc)  # type: ignore[arg-type]  # fmt: skip
    if not long_ids:
        return short
    longs = [u for i, u in enumerate(utterances) if i in long_ids]
    result = transcribe_long(tr, longs, config, on_bad_input=on_bad_input, pnc=pnc)
    by_file = {(t.audio_filepath, t.offset): t for t in result.transcripts}
    texts = {}
    for u in longs:
        t = by_file.get((u.audio_filepath, u.offset))
        if t is not None:
            score = sum(s.avg_logprob for s in t.segments) / max(len(t.segments), 1)
            guard = next(iter(sorted(t.loop_guards)), None)  # a file counts once, by its first guard
            texts[id(u)] = Transcript(u, t.text.strip(), score, [], guard)
    shorts = {id(t.utterance): t for t in short.transcripts}
    ordered = [x for u in utterances if (x := shorts.get(id(u)) or texts.get(id(u))) is not None]
    short.skipped.merge(result.skipped)
    whisper = isinstance(tr.tokenizer, WhisperTokenizer)
    unprompted = sum(not t.utterance.pnc for t in ordered) if whisper else 0
    return TranscribeResult(ordered, short.audio_seconds + result.audio_seconds,
                            short.wall_seconds + result.wall_seconds, short.skipped, unprompted)  # fmt: skip


# ---- sequential: openai-whisper's algorithm ---------------------------------------------------------------


class _Sequential:
    def __init__(self, tr: Transcriber, config: LongFormConfig):
        if not isinstance(tr.tokenizer, WhisperTokenizer):
            raise ValueError("sequential long-form decoding needs a Whisper model")
        self.tr, self.config = tr, config
        self.tok: WhisperTokenizer = tr.tokenizer
        self.window = WindowDecoder(tr.model, self.tok)
        self.mel = tr.frontend if isinstance(tr.frontend, WhisperLogMel) else WhisperLogMel()
        self.frames = self.mel.config.chunk_frames  # 3000 mel frames: one window
        self.stride = self.frames // tr.model.config.encoder.max_positions  # mel frames per timestamp: 2
        self.padded = tr.padded_whisper
        self.generator = torch.Generator().manual_seed(config.seed)
        self.windows = self.fallbacks = 0
        self.words = _WordTimer(tr) if config.word_timestamps else None

    def transcribe(self, utt: Utterance, bar: tqdm) -> FileTranscript:
        cfg, tok, tr = self.config, self.tok, self.tr
        wave = load_utterance_audio(utt)
        task = "translate" if utt.task == "translate" else "transcribe"
        if not self._has_speech(wave):  # Whisper would write ". . ." over a silent file: say so instead
            seconds_in = len(wave) / self.mel.config.sample_rate
            bar.update(round(seconds_in, 1))
            note = ["no speech found (voice activity detector)"]
            return FileTranscript(utt.audio_filepath, seconds_in, utt.source_lang, task, "", [], note,
                                  offset=utt.offset)  # fmt: skip
        mel = self.mel.long_log_mel(wave.to(tr.device))  # (n_mels, content + 3000)
        del wave
        content = mel.shape[1] - self.frames
        hop, rate = self.mel.config.hop_length, self.mel.config.sample_rate
        seconds = lambda frames: frames * hop / rate  # noqa: E731  # openai-whisper's rounding, to the bit
        sot = self.window.sot_sequence(utt.source_lang, task)
        prompt_tokens = tok.encode_text(" " + cfg.initial_prompt.strip()) if cfg.initial_prompt else []
        all_tokens: list[int] = list(prompt_tokens)
        segments: list[Segment] = []
        reset_since, seek, last_speech = 0, 0, 0.0
        while seek < content:
            offset = seconds(seek)
            size = min(self.frames, content - seek)
            window = mel[:, seek : seek + size]
            if self.padded:
                window = torch.nn.functional.pad(window, (0, self.frames - size))
            feats = window.T[None].to(tr.dtype)  # (1, frames, n_mels)
            enc, _ = tr.model.encode(feats, torch.tensor([feats.shape[1]], device=tr.device))
            result = self._decode_with_fallback(enc, sot, all_tokens[reset_since:])
            if self._is_silence(result):
                seek += size
                bar.update(round(seconds(size), 1))
                continue
            previous_seek = seek
            current, seek, single_ending = self._segments(result, seek, size, offset, seconds(size))
            if self.words is not None:
                last_speech = self.words.add(enc[0], size, sot, current, offset, last_speech)
                if not single_ending:
                    ends = [w.end for s in current for w in (s.words or [])]
                    if ends and ends[-1] > offset:
                        seek = round(ends[-1] * (rate // hop))
            for s in current:  # an instantaneous segment, or one without text, keeps no text
                if s.start == s.end or not s.text.strip():
                    s.text, s.tokens, s.words = "", [], ([] if s.words is not None else None)
            for s in current:
                s.id = len(segments)
                segments.append(s)
                all_tokens.extend(s.tokens)
            if not cfg.condition_on_previous_text or result.temperature > 0.5:
                reset_since = len(all_tokens)
            bar.update(round(seconds(min(content, seek) - previous_seek), 1))
        text = tok.decode(all_tokens[len(prompt_tokens) :], strip=False)
        notes = [] if segments else ["no speech found"]
        return FileTranscript(utt.audio_filepath, seconds(content), utt.source_lang, task, text, segments,
                              notes, offset=utt.offset)  # fmt: skip

    def _has_speech(self, wave: torch.Tensor) -> bool:
        """Whether the voice-activity detector finds any speech at all (a file without any is not decoded;
        files with speech are decoded whole, exactly as openai-whisper does)."""
        from fastaed.decode.vad import VadConfig, detect_chunks, load_vad

        return bool(detect_chunks(wave, self.mel.config.sample_rate, VadConfig(), model=load_vad()))

    def _decode_with_fallback(self, enc: torch.Tensor, sot: list[int], previous: list[int]) -> WindowResult:
        cfg = self.config
        result = None
        for i, temperature in enumerate(cfg.temperatures):
            self.windows += 1
            self.fallbacks += i > 0
            result = self.window.decode(enc, sot, previous, temperature, self.generator)
            too_repetitive = (
                cfg.compression_ratio_threshold is not None
                and result.compression_ratio > cfg.compression_ratio_threshold
            )
            too_unlikely = cfg.logprob_threshold is not None and result.avg_logprob < cfg.logprob_threshold
            silence = (
                cfg.no_speech_threshold is not None
                and result.no_speech_prob > cfg.no_speech_threshold
                and too_unlikely
            )
            if silence or not (too_repetitive or too_unlikely):
                break
        assert result is not None
        return result

    def _is_silence(self, result: WindowResult) -> bool:
        cfg = self.config
        if cfg.no_speech_threshold is None or result.no_speech_prob <= cfg.no_speech_threshold:
            return False
        return not (cfg.logprob_threshold is not None and result.avg_logprob > cfg.logprob_threshold)

    def _segments(
        self, result: WindowResult, seek: int, size: int, offset: float, window_s: float
    ) -> tuple[list[Segment], int, bool]:
        """Cut the window's tokens into segments at consecutive timestamp pairs; returns them, the next seek
        and whether the window ended on a single timestamp (its last segment is complete)."""
        ts_begin = self.tok.timestamp_begin
        tokens = result.tokens
        is_ts = [t >= ts_begin for t in tokens]
        single_ending = is_ts[-2:] == [False, True]
        cuts = [i + 1 for i in range(len(tokens) - 1) if is_ts[i] and is_ts[i + 1]]

        def segment(start: float, end: float, ids: list[int]) -> Segment:
            text = self.tok.decode([t for t in ids if t < self.tok.eos_id], strip=False)
            return Segment(
                id=0, seek=seek, start=start, end=end, text=text, tokens=list(ids),
                temperature=result.temperature, avg_logprob=result.avg_logprob,
                compression_ratio=result.compression_ratio, no_speech_prob=result.no_speech_prob,
            )  # fmt: skip

        if cuts:
            if single_ending:
                cuts.append(len(tokens))
            out, last = [], 0
            for cut in cuts:
                piece = tokens[last:cut]
                start = offset + (piece[0] - ts_begin) * TIME_PRECISION
                end = offset + (piece[-1] - ts_begin) * TIME_PRECISION
                out.append(segment(start, end, piece))
                last = cut
            if single_ending:
                return out, seek + size, True
            return out, seek + (tokens[last - 1] - ts_begin) * self.stride, False
        duration = window_s
        stamps = [t for t in tokens if t >= ts_begin]
        if stamps and stamps[-1] != ts_begin:
            duration = (stamps[-1] - ts_begin) * TIME_PRECISION
        return [segment(offset, offset + duration, tokens)], seek + size, single_ending


class _WordTimer:
    """Word timestamps for a window's segments: cross-attention DTW (Whisper) from the window's encoder
    output, which the decoder already computed."""

    def __init__(self, tr: Transcriber):
        from fastaed.decode.alignment import alignment_heads

        self.tr = tr
        self.heads = alignment_heads(tr.model.config, tr.model.config.name)

    def add(
        self,
        enc: torch.Tensor,
        num_frames: int,
        sot: list[int],
        segments: list[Segment],
        offset: float,
        last_speech: float,
    ) -> float:
        from fastaed.decode.alignment import add_whisper_word_timestamps

        add_whisper_word_timestamps(
            self.tr.model, self.tr.tokenizer, enc, num_frames, sot, segments, offset, self.heads,
            last_speech_timestamp=last_speech,
        )  # fmt: skip
        ends = [w.end for s in segments for w in (s.words or [])]
        return ends[-1] if ends else last_speech
