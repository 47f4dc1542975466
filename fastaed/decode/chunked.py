"""Files cut into chunks of speech, decoded in batches, put back together with times.

The batched long-form algorithm (``fastaed.decode.longform``) and the server (``fastaed.serve``) share it:
a voice-activity detector (:mod:`fastaed.decode.vad`) finds the speech; a chunk's audio is its speech
regions, each with ``AUDIO_PAD_S`` of audio either side, laid end to end: the pauses between them shrink
to the padding. Packing speech only is what lets one window hold as much speech as it can (a padded
Whisper pays its whole 30 s window per chunk), and Whisper, which tends to stop writing after a long
silence inside its window, then hears none. Each chunk keeps the map from its audio back to the file
(:class:`Span`), so every time reported is a time in the file. Any batch of chunks is decoded with the
model's own input (padded or not); a file's segments are its chunks' texts cut at the pauses inside them,
timed by the detector's edges.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from fastaed.data import errors as E
from fastaed.data.audio import resample
from fastaed.data.dataset import load_utterance_audio
from fastaed.data.manifest import Utterance
from fastaed.data.whisper_tokenizer import WhisperTokenizer
from fastaed.decode.segments import FileTranscript, Segment, Word
from fastaed.decode.transcribe import Transcriber

AUDIO_PAD_S = 0.2  # audio kept before and after each chunk's speech


@dataclass(frozen=True)
class Span:
    """A piece of a chunk's audio: file seconds [file_start, file_end) at ``at`` seconds into the chunk."""

    file_start: float
    file_end: float
    at: float


@dataclass(frozen=True)
class PlannedChunk:
    """One input to decode: speech ``regions`` (file seconds, the detector's edges) and the ``spans`` of
    the file its audio is made of."""

    regions: list[tuple[float, float]]
    spans: list[Span]

    @property
    def start(self) -> float:
        return self.regions[0][0]

    @property
    def end(self) -> float:
        return self.regions[-1][1]

    def file_time(self, t: float, *, end: bool = False) -> float:
        """Seconds into the chunk's audio -> seconds into the file (``end``: a span's end belongs to it)."""
        for span in self.spans:
            length = span.file_end - span.file_start
            if t < span.at + length or (end and t <= span.at + length):
                return span.file_start + max(t - span.at, 0.0)
        return self.spans[-1].file_end


@dataclass
class PendingFile:
    """A file cut into chunks, filled in as its chunks are decoded (in any order, in any batches)."""

    index: int  # the caller's key (input position, request number)
    utt: Utterance  # the prompt fields (language, task, pnc)
    duration: float
    chunks: list[PlannedChunk] = field(default_factory=list)
    pieces: list[torch.Tensor] = field(default_factory=list)  # (N_j,) audio of chunk j
    texts: dict[int, str] = field(default_factory=dict)
    words: dict[int, list[Word] | None] = field(default_factory=dict)
    guards: dict[str, int] = field(default_factory=dict)  # chunks each loop guard ended
    timed: bool = True  # time words (to split chunks at pauses, or to report them); False: text only

    @property
    def done(self) -> bool:
        return len(self.texts) == len(self.chunks)


class ChunkedDecoder:
    """Files cut into chunks of speech, chunks decoded in batches, files put back together.

    :meth:`prepare` cuts one file, :meth:`decode_rows` decodes any batch of chunks (of any files: long-form
    batched decoding sorts them by duration, the server batches across requests), :meth:`finish` assembles a
    file whose chunks are all decoded. A file that fits the model's window is one chunk, its whole audio
    (decoded exactly as ``Transcriber.run`` would); a longer one is cut where the detector finds pauses.
    Where the model can time its words (Whisper: cross-attention DTW; a CTC head: forced alignment) a
    chunk's text is cut into one segment per speech region, so a 30 s chunk gives phrase-sized subtitles.
    """

    def __init__(self, tr: Transcriber, chunk_s: float = 30.0, *, word_timestamps: bool = False,
                 group_s: float = 1800.0):  # fmt: skip
        from fastaed.decode.vad import VadConfig, load_vad

        self.tr, self.word_timestamps, self.group_s = tr, word_timestamps, group_s
        # Regions at the detector's own edges (they time the segments); the decoder hears AUDIO_PAD_S more
        # on each side, so a soft onset or a word-final consonant is never cut off.
        self.vad, self.vad_config = load_vad(), VadConfig(speech_pad_s=0.0)
        self.sample_rate = tr.frontend.config.sample_rate
        limit = tr.max_seconds()
        self.window_s = min(chunk_s, limit) if limit else chunk_s  # the longest audio one chunk holds
        # Speech per chunk, so that with the padding either side the audio still fits the model's window.
        self.chunk_s = self.window_s - 2 * AUDIO_PAD_S
        self.chunks = 0
        self.padded_input = tr.padded_whisper  # every chunk costs the model its whole window
        self.whisper = isinstance(tr.tokenizer, WhisperTokenizer)
        self.can_time_words = self.whisper or tr.model.ctc_head is not None
        if self.whisper:
            from fastaed.decode.alignment import alignment_heads

            self.heads = alignment_heads(tr.model.config, tr.model.config.name)

    def transcribe(
        self,
        items: list[tuple[int, Utterance]],
        on_bad_input: str,
        report: E.BadInputReport,
        bar: tqdm,
    ) -> dict[int, FileTranscript]:
        """Offline: read the files, and every ``group_s`` seconds of waiting chunks decode them sorted by
        duration (longest first) in batches of ``batch_size``; transcripts by the items' keys."""
        done: dict[int, FileTranscript] = {}
        group: list[PendingFile] = []
        waiting = 0.0
        for index, utt in items:
            try:
                wave = load_utterance_audio(utt)
            except E.BadInputError as err:
                E.handle(err, on_bad_input, report)  # type: ignore[arg-type]
                continue
            group.append(self.prepare(index, utt, wave))
            waiting += sum(len(p) for p in group[-1].pieces) / self.sample_rate
            if waiting >= self.group_s:
                self._decode_group(group, done, bar)
                group, waiting = [], 0.0
        if group:
            self._decode_group(group, done, bar)
        return done

    def prepare(self, index: int, utt: Utterance, wave: torch.Tensor, *, timed: bool = True) -> PendingFile:
        """(N,) waveform at the model's rate -> its chunks and their audio (no speech: no chunks).
        ``timed=False``: only the text is wanted (no word alignment, one segment per chunk)."""
        from fastaed.decode.vad import merge_chunks, speech_probs, speech_regions

        rate = self.sample_rate
        pending = PendingFile(index, utt, len(wave) / rate, timed=timed or self.word_timestamps)
        audio16 = wave if rate == 16000 else resample(wave.float(), rate, 16000)
        probs = speech_probs(audio16, self.vad)
        regions = speech_regions(probs, self.vad_config, rate, len(wave))
        if not regions:
            return pending
        if pending.duration <= self.window_s:  # the whole clip, as one utterance (as Transcriber.run)
            pending.chunks = [PlannedChunk(regions, [Span(0.0, pending.duration, 0.0)])]
            pending.pieces = [wave]
            return pending
        # A region longer than a chunk is cut (at its least likely window), then regions are packed.
        pieces = [r for c in merge_chunks(regions, self.chunk_s, probs=probs) for r in c.regions]
        for chunk in self._pack(pieces, pending.duration):
            pending.chunks.append(chunk)
            audio = [wave[round(s.file_start * rate) : round(s.file_end * rate)] for s in chunk.spans]
            pending.pieces.append(torch.cat(audio))
        return pending

    def _pack(self, regions: list[tuple[float, float]], duration: float) -> list[PlannedChunk]:
        """Speech regions (each at most ``chunk_s``) -> chunks of at most ``window_s`` seconds of audio:
        each region with AUDIO_PAD_S either side (never overlapping its neighbours), end to end."""
        chunks: list[PlannedChunk] = []
        current: list[tuple[float, float]] = []
        spans: list[Span] = []
        at, previous_end = 0.0, 0.0
        for i, (start, end) in enumerate(regions):
            next_start = regions[i + 1][0] if i + 1 < len(regions) else duration
            lo = max(start - AUDIO_PAD_S, previous_end, 0.0)
            hi = min(end + AUDIO_PAD_S, (end + next_start) / 2, duration)
            if current and at + (hi - lo) > self.window_s:
                chunks.append(PlannedChunk(current, spans))
                current, spans, at = [], [], 0.0
            current.append((start, end))
            if spans and abs(spans[-1].file_end - lo) < 1e-9:  # adjacent: one span
                last = spans.pop()
                spans.append(Span(last.file_start, hi, last.at))
            else:
                spans.append(Span(lo, hi, at))
            at += hi - lo
            previous_end = hi
        if current:
            chunks.append(PlannedChunk(current, spans))
        return chunks

    def _decode_group(self, group: list[PendingFile], done: dict[int, FileTranscript], bar: tqdm) -> None:
        rows = [(p, j) for p in group for j in range(len(p.chunks))]
        rows.sort(key=lambda r: -len(r[0].pieces[r[1]]))  # duration buckets, longest first
        size = self.tr.config.batch_size
        for b in range(0, len(rows), size):
            batch = rows[b : b + size]
            self.decode_rows(batch)
            bar.update(round(sum(len(p.pieces[j]) for p, j in batch) / self.sample_rate, 1))
        for p in group:
            done[p.index] = self.finish(p)

    def decode_rows(self, batch: list[tuple[PendingFile, int]]) -> None:
        """Decode one batch of chunks (file, chunk number) of any files; fills their texts and words."""
        tr = self.tr
        waves = [p.pieces[j] for p, j in batch]
        enc, enc_lens = tr.encode_waveforms(waves)
        seconds = torch.tensor([len(w) / self.sample_rate for w in waves])
        hyps = tr.search(enc, enc_lens, [p.utt for p, _ in batch], seconds=seconds)
        for k, ((p, j), nbest) in enumerate(zip(batch, hyps, strict=True)):
            tokens = nbest[0].tokens
            p.texts[j] = self._decode_text(tokens)
            if nbest[0].guard:
                p.guards[nbest[0].guard] = p.guards.get(nbest[0].guard, 0) + 1
            if self.can_time_words and p.timed and p.texts[j].strip():
                p.words[j] = self._words(enc[k], int(enc_lens[k]), len(waves[k]), p.utt, tokens, p.chunks[j])
        self.chunks += len(batch)

    def _decode_text(self, tokens: list[int]) -> str:
        tok = self.tr.tokenizer
        return tok.decode(tokens, strip=False) if self.whisper else tok.decode(tokens)  # type: ignore[call-arg]

    def _words(self, enc: torch.Tensor, enc_len: int, samples: int, utt: Utterance, tokens: list[int], chunk):
        """Timed words of one decoded chunk (seconds from the file start); enc: (T', De) its encoder
        output."""
        tr = self.tr
        hop = tr.frontend.config.hop_length
        if self.whisper:
            from fastaed.decode.alignment import add_whisper_word_timestamps

            tok: WhisperTokenizer = tr.tokenizer  # type: ignore[assignment]
            sot = [t for t in tok.utterance_prompt(utt) if t != tok.no_timestamps_id]
            segment = Segment(id=0, start=0.0, end=samples / self.sample_rate, text="", tokens=tokens)
            frames = min(samples // hop, self.tr.model.config.encoder.max_positions * 2)
            add_whisper_word_timestamps(tr.model, tok, enc, frames, sot, [segment], 0.0, self.heads)
            return [self._to_file(w, chunk) for w in segment.words or []]
        from fastaed.decode.ctc_alignment import ctc_alignable, ctc_word_timestamps

        log_probs = tr.model.ctc_log_probs(enc[None, :enc_len])[0]
        frame_s = tr.model.config.encoder.subsampling_factor * hop / self.sample_rate
        if not ctc_alignable(log_probs.shape[0], tokens, tr.tokenizer):
            return None  # the decoder wrote more than the CTC topology fits (a loop): the chunk stays whole
        words = ctc_word_timestamps(log_probs, tokens, tr.tokenizer, frame_s, 0.0)
        return [self._to_file(w, chunk) for w in words]

    @staticmethod
    def _to_file(word: Word, chunk: PlannedChunk) -> Word:
        """A word timed in the chunk's audio, timed in the file."""
        start, end = chunk.file_time(word.start), chunk.file_time(word.end, end=True)
        return Word(word.word, round(start, 3), round(max(end, start), 3), word.probability)

    def finish(self, p: PendingFile, *, word_timestamps: bool | None = None) -> FileTranscript:
        """The timed transcript of a file whose chunks are all decoded (``word_timestamps``: keep the words
        in its segments; default the decoder's setting)."""
        keep_words = self.word_timestamps if word_timestamps is None else word_timestamps
        segments: list[Segment] = []
        unaligned = 0
        for j, chunk in enumerate(p.chunks):
            text = p.texts[j]
            if not text.strip():
                continue
            words = p.words.get(j)
            unaligned += self.can_time_words and p.timed and words is None
            for start, end, piece, piece_words in _split_at_pauses(text, words, chunk.regions):
                keep = piece_words if keep_words else None
                segments.append(Segment(id=len(segments), start=start, end=end, text=piece, words=keep,
                                        seek=round(chunk.start * 100)))  # fmt: skip
        text = "".join(s.text if s.text.startswith(" ") else " " + s.text for s in segments)
        notes = [] if p.chunks else ["no speech found (voice activity detector)"]
        for guard, n in sorted(p.guards.items()):
            notes.append(f"loop guard ({guard}) ended {n} chunk(s)")
        if unaligned:
            notes.append(f"{unaligned} chunk(s) without word times: more tokens than CTC frames can align")
        u = p.utt
        return FileTranscript(u.audio_filepath, p.duration, u.source_lang, u.task, text.strip(), segments,
                              notes, offset=u.offset, loop_guards=dict(p.guards))  # fmt: skip


def _split_at_pauses(text: str, words: list | None, regions: list[tuple[float, float]]):
    """(start, end, text, words) pieces of one chunk's transcript: one per speech region (a pause the
    voice-activity detector found ends a piece), each word going to the region its middle falls in, timed by
    the region's edges (the detector's 32 ms windows are finer than word alignment); without timed words,
    the chunk's whole span with its text."""
    if not words:
        yield regions[0][0], regions[-1][1], text if text.startswith(" ") else " " + text.strip(), None
        return
    gaps = [(a_end + b_start) / 2 for (_, a_end), (b_start, _) in zip(regions, regions[1:])]
    groups: list[list] = [[] for _ in regions]
    for w in words:
        middle = (w.start + w.end) / 2
        groups[sum(middle >= g for g in gaps)].append(w)
    for (start, end), group in zip(regions, groups):
        if group:
            piece = "".join(w.word for w in group)
            yield start, end, piece if piece.startswith(" ") else " " + piece, group
