"""Timed transcripts: what long-form decoding returns and the subtitle writers read.

A :class:`FileTranscript` is one audio file's result: its segments in time order, each with start/end in
seconds from the start of the file and, when word timestamps were asked for, its words. Field names follow
OpenAI's ``verbose_json`` (``id``, ``seek``, ``start``, ``end``, ``text``, ``tokens``, ``temperature``,
``avg_logprob``, ``compression_ratio``, ``no_speech_prob``, ``words``), so
:meth:`FileTranscript.to_verbose_json` is that document.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Word:
    """One word with its time span (seconds from the start of the file) and the model's probability."""

    word: str  # as the model wrote it, leading space included (" Hello")
    start: float
    end: float
    probability: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return {"word": self.word, "start": self.start, "end": self.end, "probability": self.probability}


@dataclass
class Segment:
    """One timed piece of text. ``seek``: the first mel frame (10 ms) of the window that produced it."""

    id: int
    start: float
    end: float
    text: str
    tokens: list[int] = field(default_factory=list)
    seek: int = 0
    temperature: float = 0.0
    avg_logprob: float = 0.0
    compression_ratio: float = 0.0
    no_speech_prob: float = 0.0
    words: list[Word] | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {
            "id": self.id, "seek": self.seek, "start": self.start, "end": self.end, "text": self.text,
            "tokens": self.tokens, "temperature": self.temperature, "avg_logprob": self.avg_logprob,
            "compression_ratio": self.compression_ratio, "no_speech_prob": self.no_speech_prob,
        }  # fmt: skip
        if self.words is not None:
            out["words"] = [w.to_dict() for w in self.words]
        return out


@dataclass
class FileTranscript:
    """One audio file's timed transcript. ``text``: the whole transcript (segments joined as the decoder
    wrote them); ``notes``: what a reader should know (no speech found, a guard that fired, ...)."""

    audio_filepath: str
    duration: float  # seconds of audio in the file
    language: str
    task: str
    text: str
    segments: list[Segment]
    notes: list[str] = field(default_factory=list)
    offset: float = 0.0  # where the transcribed audio starts in the file (a manifest entry's offset)
    loop_guards: dict[str, int] = field(default_factory=dict)  # chunks each loop guard ended (batched)

    def to_verbose_json(self) -> dict[str, Any]:
        """OpenAI's ``verbose_json`` response for this file (plus ``audio_filepath`` and ``notes``)."""
        out: dict[str, Any] = {
            "task": "translate" if self.task == "translate" else "transcribe",
            "language": self.language, "duration": self.duration, "text": self.text,
            "segments": [s.to_dict() for s in self.segments],
        }  # fmt: skip
        if any(s.words is not None for s in self.segments):
            out["words"] = [w.to_dict() for s in self.segments for w in (s.words or [])]
        out["audio_filepath"] = self.audio_filepath
        if self.notes:
            out["notes"] = list(self.notes)
        if self.loop_guards:
            out["loop_guard"] = dict(self.loop_guards)
        return out
