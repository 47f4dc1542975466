"""Files cut into chunks of speech, decoded in batches, put back together with times.

The batched long-form algorithm (``fastaed.decode.longform``) and the server (``fastaed.serve``) share it:
a voice-activity detector (:mod:`fastaed.decode.vad`) finds the speech; regions are merged into chunks of at
most the model's window (less ``AUDIO_PAD_S`` of audio kept either side), each with its true offset; any
batch of chunks is decoded with the model's own input (padded or not); a file's segments are its chunks'
texts cut at the pauses inside them, timed by the detector's edges.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from fastaed.data import errors as E
from fastaed.data.dataset import load_utterance_audio
from fastaed.data.manifest import Utterance
from fastaed.data.whisper_tokenizer import WhisperTokenizer
from fastaed.decode.segments import FileTranscript, Segment, Word
from fastaed.decode.transcribe import Transcriber
from fastaed.decode.vad import Chunk

AUDIO_PAD_S = 0.2  # audio kept before and after each chunk's speech


@dataclass
class PendingFile:
    """A file cut into chunks, filled in as its chunks are decoded (in any order, in any batches)."""

    index: int  # the caller's key (input position, request number)
    utt: Utterance  # the prompt fields (language, task, pnc)
    duration: float
    chunks: list[Chunk] = field(default_factory=list)
    pieces: list[torch.Tensor] = field(default_factory=list)  # (N_j,) audio of chunk j, padded either side
    texts: dict[int, str] = field(default_factory=dict)
    words: dict[int, list[Word] | None] = field(default_factory=dict)
    guards: dict[str, int] = field(default_factory=dict)  # chunks each loop guard ended

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

    def prepare(self, index: int, utt: Utterance, wave: torch.Tensor) -> PendingFile:
        """(N,) waveform at the model's rate -> its chunks and their audio (no speech: no chunks)."""
        pending = PendingFile(index, utt, len(wave) / self.sample_rate)
        chunks = self._chunks(wave)
        if chunks and pending.duration <= self.window_s:  # the whole clip, as one utterance
            regions = [r for c in chunks for r in c.regions]
            pending.chunks, pending.pieces = [Chunk(0.0, pending.duration, regions)], [wave]
            return pending
        pending.chunks = chunks
        pending.pieces = [wave[self._first(c) : round((c.end + AUDIO_PAD_S) * self.sample_rate)].clone()
                          for c in chunks]  # fmt: skip
        return pending

    def _first(self, chunk) -> int:
        """First sample of a chunk's audio: AUDIO_PAD_S before its speech (not before the file)."""
        return max(round((chunk.start - AUDIO_PAD_S) * self.sample_rate), 0)

    def _chunks(self, wave: torch.Tensor) -> list:
        from fastaed.decode.vad import detect_chunks

        return detect_chunks(wave, self.sample_rate, self.vad_config, self.chunk_s)

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
            if self.can_time_words and p.texts[j].strip():
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
            offset = self._first(chunk) / self.sample_rate
            segment = Segment(
                id=0, start=offset, end=offset + samples / self.sample_rate, text="", tokens=tokens
            )
            frames = min(samples // hop, self.tr.model.config.encoder.max_positions * 2)
            add_whisper_word_timestamps(tr.model, tok, enc, frames, sot, [segment], offset, self.heads)
            return segment.words or []
        from fastaed.decode.ctc_alignment import ctc_alignable, ctc_word_timestamps

        log_probs = tr.model.ctc_log_probs(enc[None, :enc_len])[0]
        frame_s = tr.model.config.encoder.subsampling_factor * hop / self.sample_rate
        if not ctc_alignable(log_probs.shape[0], tokens, tr.tokenizer):
            return None  # the decoder wrote more than the CTC topology fits (a loop): the chunk stays whole
        return ctc_word_timestamps(
            log_probs, tokens, tr.tokenizer, frame_s, self._first(chunk) / self.sample_rate
        )

    def finish(self, p: PendingFile) -> FileTranscript:
        """The timed transcript of a file whose chunks are all decoded."""
        segments: list[Segment] = []
        unaligned = 0
        for j, chunk in enumerate(p.chunks):
            text = p.texts[j]
            if not text.strip():
                continue
            words = p.words.get(j)
            unaligned += self.can_time_words and words is None
            for start, end, piece, piece_words in _split_at_pauses(text, words, chunk.regions):
                keep = piece_words if self.word_timestamps else None
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
