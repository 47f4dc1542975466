"""Word-level timestamps: Whisper's cross-attention alignment, and forced alignment of a CTC head.

Whisper (the method of openai-whisper's ``timing.py``, written anew here; its results are compared with
openai-whisper's own in the tests). A few cross-attention heads of Whisper's decoder follow the audio
(its "alignment heads", published per model). The window's text is fed again, teacher-forced, after
``<|notimestamps|>``; those heads' attention over the frames that hold audio is normalised per head over the
tokens, smoothed along time by a median filter and averaged over heads into a (tokens, frames) similarity,
and dynamic time warping finds the monotone path through it. A token starts where the path first reaches
its row; words are groups of tokens (split at spaces, or at every whole character for the languages written
without spaces). Then the same clean-ups as openai-whisper: over-long words at sentence and segment
boundaries are cut to twice the median word length, punctuation joins its neighbour, and a segment's start
and end move to its first and last word.

CTC (models with a CTC head): forced alignment, in ``fastaed.decode.ctc_alignment``; its entry points
:func:`ctc_forced_align` and :func:`ctc_word_timestamps` are importable from here too.

Dimensions: U tokens, T' encoder frames (50 per second for Whisper), V vocabulary, L layers, H heads.
"""

from __future__ import annotations

import itertools
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from fastaed.data.whisper_tokenizer import WhisperTokenizer
from fastaed.decode.ctc_alignment import ctc_forced_align, ctc_word_timestamps
from fastaed.decode.segments import Segment, Word
from fastaed.model import EncoderDecoderModel, ModelConfig

__all__ = [
    "add_whisper_word_timestamps",
    "alignment_heads",
    "ctc_forced_align",
    "ctc_word_timestamps",
    "dtw_path",
    "find_alignment",
    "median_filter",
    "merge_punctuations",
    "split_word_tokens",
]

TOKENS_PER_SECOND = 50  # Whisper encoder frames per second: 10 ms mel frames, halved by the conv stem
MEDIAN_FILTER_WIDTH = 7  # frames; smooths each head's attention along time before the heads are averaged
PREPEND_PUNCTUATIONS = "\"'“¿([{-"  # joined to the word that follows (openai-whisper's defaults)
APPEND_PUNCTUATIONS = "\"'.。,，!！?？:：”)]}、"  # joined to the word before
SENTENCE_END_MARKS = ".。!！?？"
MAX_MEDIAN_WORD_SECONDS = 0.7  # a cap on the median word length that the long-word rules scale from
# Written without spaces between words: split at every decodable character instead.
UNICODE_SPLIT_LANGUAGES = frozenset({"zh", "ja", "th", "lo", "my", "yue"})


@dataclass(frozen=True)
class AlignmentHeads:
    """The published alignment heads of one Whisper model: its decoder shape and (layer, head) pairs."""

    n_layers: int
    n_heads: int
    pairs: tuple[tuple[int, int], ...]


# Decoded once from openai-whisper's ``_ALIGNMENT_HEADS`` (base85 + gzip boolean arrays, release 20250625) and
# kept as plain data, so nothing here depends on that package.
WHISPER_ALIGNMENT_HEADS: dict[str, AlignmentHeads] = {
    "tiny.en": AlignmentHeads(4, 6, ((1, 0), (2, 0), (2, 5), (3, 0), (3, 1), (3, 2), (3, 3), (3, 4))),
    "tiny": AlignmentHeads(4, 6, ((2, 2), (3, 0), (3, 2), (3, 3), (3, 4), (3, 5))),
    "base.en": AlignmentHeads(6, 8, ((3, 3), (4, 7), (5, 1), (5, 5), (5, 7))),
    "base": AlignmentHeads(6, 8, ((3, 1), (4, 2), (4, 3), (4, 7), (5, 1), (5, 2), (5, 4), (5, 6))),
    "small.en": AlignmentHeads(12, 12, (
        (6, 6), (7, 0), (7, 3), (7, 8), (8, 2), (8, 5), (8, 7), (9, 0), (9, 4), (9, 8), (9, 10), (10, 0),
        (10, 1), (10, 2), (10, 3), (10, 6), (10, 11), (11, 2), (11, 4),
    )),
    "small": AlignmentHeads(12, 12, (
        (5, 3), (5, 9), (8, 0), (8, 4), (8, 7), (8, 8), (9, 0), (9, 7), (9, 9), (10, 5),
    )),
    "medium.en": AlignmentHeads(24, 16, (
        (11, 4), (14, 1), (14, 12), (14, 14), (15, 4), (16, 0), (16, 4), (16, 9), (17, 12), (17, 14),
        (18, 7), (18, 10), (18, 15), (20, 0), (20, 3), (20, 9), (20, 14), (21, 12),
    )),
    "medium": AlignmentHeads(24, 16, ((13, 15), (15, 4), (15, 15), (16, 1), (20, 0), (23, 4))),
    "large-v1": AlignmentHeads(32, 20, (
        (9, 19), (11, 2), (11, 4), (11, 17), (22, 7), (22, 11), (22, 17), (23, 2), (23, 15),
    )),
    "large-v2": AlignmentHeads(32, 20, (
        (10, 12), (13, 17), (16, 11), (16, 12), (16, 13), (17, 15), (17, 16), (18, 4), (18, 11), (18, 19),
        (19, 11), (21, 2), (21, 3), (22, 3), (22, 9), (22, 12), (23, 5), (23, 7), (23, 13), (25, 5),
        (26, 1), (26, 12), (27, 15),
    )),
    "large-v3": AlignmentHeads(32, 20, (
        (7, 0), (10, 17), (12, 18), (13, 12), (16, 1), (17, 14), (19, 11), (21, 4), (24, 1), (25, 6),
    )),
    "large-v3-turbo": AlignmentHeads(4, 20, ((2, 4), (2, 11), (3, 3), (3, 6), (3, 11), (3, 14))),
}  # fmt: skip
_NAME_ALIASES = {"large": "large-v3", "turbo": "large-v3-turbo"}


def whisper_model_key(name: str) -> str:
    """A model name as the alignment-head table spells it: ``whisper-tiny.en`` (what ``fastaed import
    whisper`` records), ``openai/whisper-tiny.en`` or ``faster-whisper-tiny.en`` -> ``tiny.en``; ``turbo``
    -> ``large-v3-turbo``."""
    key = name.strip().lower().rsplit("/", 1)[-1]
    key = re.sub(r"^.*?whisper[-_]", "", key)
    return _NAME_ALIASES.get(key, key)


def alignment_heads(model_config: ModelConfig, name: str | None = None) -> Tensor:
    """(n_layers, n_heads) bool: the decoder's cross-attention heads that word alignment averages.

    ``name`` (default: the config's, e.g. ``whisper-tiny.en`` for an imported tiny.en) picks openai-whisper's
    published heads when it names a released model whose decoder has this shape; any other model gets every
    head of the upper half of the decoder layers (openai-whisper's default).
    """
    dec = model_config.decoder
    heads = torch.zeros(dec.n_layers, dec.n_heads, dtype=torch.bool)
    known = WHISPER_ALIGNMENT_HEADS.get(whisper_model_key(name or model_config.name))
    if known is not None and (known.n_layers, known.n_heads) == (dec.n_layers, dec.n_heads):
        for layer, head in known.pairs:
            heads[layer, head] = True
    else:
        heads[dec.n_layers // 2 :] = True
    return heads


# ---- Whisper: cross-attention DTW ------------------------------------------------------------------------


def median_filter(x: Tensor, width: int) -> Tensor:
    """Median over a sliding window of odd ``width`` along the last dimension, edges reflected. x: (..., N).
    A row no longer than half the window is returned as it is (reflection needs more)."""
    if width < 1 or width % 2 == 0:
        raise ValueError(f"median filter width must be odd, got {width}")
    half = width // 2
    if x.shape[-1] <= half:
        return x
    padded = F.pad(x, (half, half), mode="reflect")
    if bool(torch.isnan(padded).any()):  # sort's order for NaN (last); min/max would spread it
        return padded.unfold(-1, width, 1).sort(dim=-1).values[..., half]
    # An odd-even transposition network over the ``width`` shifted views sorts every window at once with
    # elementwise min/max: the same values as sorting each window, ~8x faster than many tiny sorts on CPU.
    n = x.shape[-1]
    views = [padded[..., k : k + n] for k in range(width)]
    for round_ in range(width):
        for k in range(round_ % 2, width - 1, 2):
            views[k], views[k + 1] = (
                torch.minimum(views[k], views[k + 1]),
                torch.maximum(views[k], views[k + 1]),
            )
    return views[half]


def dtw_path(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The cheapest monotone path through ``cost`` (N, M), from (0, 0) to (N-1, M-1), moving down, right or
    diagonally. Returns its row and column indices, (K,) each, in path order.

    Filled one anti-diagonal at a time (every cell of one depends only on the two before it), so the loop
    runs N + M times over vectors instead of N · M times over cells; the tables are stored skewed (row d
    holds the cells i + j = d, indexed by i) so each step reads plain slices. Ties and precision follow
    openai-whisper's DTW: sums in float64 stored in float32; the diagonal when strictly cheapest, else the
    move from above when strictly cheapest, else the move from the left.
    """
    n, m = cost.shape
    rows_i = np.broadcast_to(np.arange(1, n + 1)[:, None], (n, m))
    cols_j = np.broadcast_to(np.arange(1, m + 1)[None, :], (n, m))
    skewed = np.full((n + m + 1, n + 1), np.inf)  # out-of-table cells cost inf, so they never win
    skewed[(rows_i + cols_j).ravel(), rows_i.ravel()] = np.asarray(cost, dtype=np.float64).ravel()
    total = np.full((n + m + 1, n + 1), np.inf, dtype=np.float32)
    total[0, 0] = 0.0
    move = np.full((n + m + 1, n + 1), 2, dtype=np.int8)  # 0 diagonal, 1 from above, 2 from the left
    for d in range(2, n + m + 1):
        diag, up, left = total[d - 2, :-1], total[d - 1, :-1], total[d - 1, 1:]  # for i = 1 .. n
        diag_wins = (diag < up) & (diag < left)
        up_wins = (up < diag) & (up < left)
        best = np.where(diag_wins, diag, np.where(up_wins, up, left))
        total[d, 1:] = skewed[d, 1:] + best.astype(np.float64)  # float64 sum, stored as float32
        move[d, 1:] = np.where(diag_wins, 0, np.where(up_wins, 1, 2))
    rows, cols = [], []
    i, j = n, m
    while i > 0 or j > 0:
        rows.append(i - 1)
        cols.append(j - 1)
        step = move[i + j, i] if i > 0 and j > 0 else (2 if i == 0 else 1)  # the borders lead to (0, 0)
        if step == 0:
            i, j = i - 1, j - 1
        elif step == 1:
            i -= 1
        else:
            j -= 1
    return np.array(rows[::-1], dtype=np.int64), np.array(cols[::-1], dtype=np.int64)


def _decode_raw(tokenizer: WhisperTokenizer, ids: Sequence[int]) -> str:
    """Ids -> text as written, specials included, nothing stripped (a cut UTF-8 sequence reads U+FFFD)."""
    return tokenizer.bpe.decode(list(ids), skip_special_tokens=False)


def split_tokens_on_unicode(
    tokenizer: WhisperTokenizer, tokens: list[int]
) -> tuple[list[str], list[list[int]]]:
    """Cut ``tokens`` wherever the text decoded so far ends on a whole character: (pieces, their tokens).

    A piece that decodes to the replacement character is still cut when the full text has that character
    at the same place (the model really wrote it); otherwise its bytes continue in the next token.
    """
    full = _decode_raw(tokenizer, tokens)
    pieces: list[str] = []
    groups: list[list[int]] = []
    current: list[int] = []
    offset = 0
    for token in tokens:
        current.append(token)
        text = _decode_raw(tokenizer, current)
        cut = text.find("\ufffd")
        if cut < 0 or full[offset + cut : offset + cut + 1] == "\ufffd":
            pieces.append(text)
            groups.append(current)
            current = []
            offset += len(text)
    return pieces, groups


def split_word_tokens(
    tokenizer: WhisperTokenizer, tokens: list[int], language: str = "en"
) -> tuple[list[str], list[list[int]]]:
    """Group ``tokens`` into words: (words as written, leading space included; each word's tokens).

    Languages written without spaces split at every whole character; the others start a word at a piece
    with a leading space, at a punctuation piece and at a special token (end of text).
    """
    pieces, groups = split_tokens_on_unicode(tokenizer, tokens)
    if language in UNICODE_SPLIT_LANGUAGES:
        return pieces, groups
    words: list[str] = []
    word_tokens: list[list[int]] = []
    for piece, group in zip(pieces, groups, strict=True):
        # A substring test, as openai-whisper's: a piece of blanks (strip -> "") counts as punctuation.
        starts_word = (
            group[0] >= tokenizer.eos_id or piece.startswith(" ") or piece.strip() in string.punctuation
        )
        if starts_word or not words:
            words.append(piece)
            word_tokens.append(list(group))
        else:
            words[-1] += piece
            word_tokens[-1].extend(group)
    return words, word_tokens


@dataclass
class WordTiming:
    """One word of the alignment, times in seconds from the window start."""

    word: str
    tokens: list[int]
    start: float
    end: float
    probability: float


def find_alignment(
    model: EncoderDecoderModel,
    tokenizer: WhisperTokenizer,
    enc: Tensor,
    num_frames: int,
    sot_sequence: Sequence[int],
    text_tokens: list[int],
    heads: Tensor,
    *,
    language: str = "en",
    medfilt_width: int = MEDIAN_FILTER_WIDTH,
) -> list[WordTiming]:
    """Word timings of ``text_tokens`` (ids < end of text) in one window.

    enc: (T', D) the window's encoder output; num_frames: mel frames of real audio in the window (the
    attention is read over the first ``num_frames // 2`` encoder frames); heads: (L, H) bool.
    """
    if not text_tokens:
        return []
    prefix = len(sot_sequence)
    tokens = torch.tensor([*sot_sequence, tokenizer.no_timestamps_id, *text_tokens, tokenizer.eos_id])
    pairs = [tuple(p) for p in heads.nonzero().tolist()]  # row-major: (layer, head) order
    if not pairs:
        raise ValueError("no alignment head selected")
    layers = sorted({layer for layer, _ in pairs})
    frames = max(1, min(num_frames // 2, enc.shape[0]))  # at least one frame: a blank window times at 0
    with torch.no_grad():
        memory = model.projection(enc[None])  # (1, T', Dd)
        out = model.decoder.forward_with_cross_attention(
            tokens[None].to(enc.device),
            memory,
            torch.tensor([enc.shape[0]], device=enc.device),
            layers,
            weight_lens=torch.tensor([frames], device=enc.device),
        )
    logits = out.logits[0, prefix:, : tokenizer.eos_id].float().cpu()  # rows predict the text, then EOT
    token_probs = logits.softmax(dim=-1)[torch.arange(len(text_tokens)), torch.tensor(text_tokens)]
    text_token_probs = token_probs.tolist()

    weights = torch.stack([out.weights[0, layers.index(layer), head] for layer, head in pairs])
    weights = weights[:, :, :frames].float().cpu()  # (heads, tokens, frames)
    std, mean = torch.std_mean(weights, dim=-2, keepdim=True, correction=0)
    weights = median_filter((weights - mean) / std, medfilt_width)
    matrix = weights.mean(dim=0)[prefix:-1]  # rows: <|notimestamps|> and the text tokens (each predicts one)
    text_indices, time_indices = dtw_path(-matrix.double().numpy())

    words, word_tokens = split_word_tokens(tokenizer, [*text_tokens, tokenizer.eos_id], language)
    if len(word_tokens) <= 1:  # only the end of text
        return []
    boundaries = np.pad(np.cumsum([len(t) for t in word_tokens[:-1]]), (1, 0))
    # The path enters each row once; the column where it does is that token's start.
    jumps = np.pad(np.diff(text_indices), (1, 0), constant_values=1).astype(bool)
    jump_times = time_indices[jumps] / TOKENS_PER_SECOND
    return [
        WordTiming(
            word,
            tokens_of_word,
            float(jump_times[i]),
            float(jump_times[j]),
            float(np.mean(text_token_probs[i:j])),
        )
        for word, tokens_of_word, i, j in zip(words, word_tokens, boundaries[:-1], boundaries[1:])
    ]


def merge_punctuations(alignment: list[WordTiming], prepended: str, appended: str) -> None:
    """Join opening punctuation to the word after it and closing punctuation to the word before it, in
    place; an absorbed entry keeps its place with no text and no tokens."""
    target = len(alignment) - 1
    for i in range(len(alignment) - 2, -1, -1):  # right to left: a run of openers ends on one word
        before, after = alignment[i], alignment[target]
        if before.word.startswith(" ") and before.word.strip() in prepended:
            after.word = before.word + after.word
            after.tokens = before.tokens + after.tokens
            before.word, before.tokens = "", []
        else:
            target = i
    target = 0
    for j in range(1, len(alignment)):  # left to right: a run of closers ends on one word
        before, after = alignment[target], alignment[j]
        if not before.word.endswith(" ") and after.word in appended:
            before.word = before.word + after.word
            before.tokens = before.tokens + after.tokens
            after.word, after.tokens = "", []
        else:
            target = j


def _round(seconds: float) -> float:
    return float(np.round(seconds, 2))  # numpy's rounding, as openai-whisper's float64 times get


def window_language(tokenizer: WhisperTokenizer, sot_sequence: Sequence[int]) -> str:
    """The language whose token is in ``sot_sequence``; English when there is none (English-only models)."""
    by_id = {tokenizer.special_ids.get(f"<|{lang}|>"): lang for lang in tokenizer.languages}
    return next((by_id[t] for t in sot_sequence if t in by_id), "en")


def add_whisper_word_timestamps(
    model: EncoderDecoderModel,
    tokenizer: WhisperTokenizer,
    enc: Tensor,
    num_frames: int,
    sot_sequence: Sequence[int],
    segments: list[Segment],
    time_offset: float,
    heads: Tensor,
    *,
    prepend_punctuations: str = PREPEND_PUNCTUATIONS,
    append_punctuations: str = APPEND_PUNCTUATIONS,
    last_speech_timestamp: float = 0.0,
    language: str | None = None,
    medfilt_width: int = MEDIAN_FILTER_WIDTH,
) -> None:
    """Fill ``words`` of the ``segments`` one window produced, and move their start/end to their words.

    enc: (T', D) that window's encoder output (the decoder's, reused); num_frames: mel frames of real audio
    in it; sot_sequence: the window's ``<|sot|> [<|lang|> <|task|>]`` (without a previous-text prompt);
    segments: their ``tokens`` may hold timestamps (only ids below end of text are aligned); time_offset:
    seconds from the file start to the window start; heads: (L, H) bool from :func:`alignment_heads`;
    last_speech_timestamp: the end of the speech before this window (seconds); language: default the one
    in ``sot_sequence``. Times are rounded to 0.01 s, as openai-whisper writes them.
    """
    if not segments:
        return
    per_segment = [[t for t in s.tokens if t < tokenizer.eos_id] for s in segments]
    text_tokens = list(itertools.chain.from_iterable(per_segment))
    language = language or window_language(tokenizer, sot_sequence)
    alignment = find_alignment(
        model, tokenizer, enc, num_frames, sot_sequence, text_tokens, heads,
        language=language, medfilt_width=medfilt_width,
    )  # fmt: skip
    durations = np.array([t.end - t.start for t in alignment])
    durations = durations[durations.nonzero()]
    median_duration = min(MAX_MEDIAN_WORD_SECONDS, float(np.median(durations))) if len(durations) else 0.0
    max_duration = median_duration * 2

    # Attention smears a word before a pause over the pause: cut words at sentence ends to 2x the median.
    if len(durations):
        for i in range(1, len(alignment)):
            if alignment[i].end - alignment[i].start > max_duration:
                if alignment[i].word in SENTENCE_END_MARKS:
                    alignment[i].end = alignment[i].start + max_duration
                elif alignment[i - 1].word in SENTENCE_END_MARKS:
                    alignment[i].start = alignment[i].end - max_duration
    merge_punctuations(alignment, prepend_punctuations, append_punctuations)

    word_index = 0
    for segment, tokens in zip(segments, per_segment, strict=True):
        used, words = 0, []
        while word_index < len(alignment) and used < len(tokens):
            timing = alignment[word_index]
            if timing.word:
                start, end = _round(time_offset + timing.start), _round(time_offset + timing.end)
                words.append(Word(timing.word, start, end, timing.probability))
            used += len(timing.tokens)
            word_index += 1
        if words:
            _fit_segment_edges(segment, words, last_speech_timestamp, median_duration, max_duration)
            last_speech_timestamp = segment.end
        segment.words = words


def _fit_segment_edges(
    segment: Segment, words: list[Word], last_speech: float, median_duration: float, max_duration: float
) -> None:
    """openai-whisper's segment-boundary rules: a first word after a long pause is cut to 2x the median;
    a first or last word that runs 0.5 s past the segment's own timestamp is cut to it, else the segment
    edge moves to the word."""
    first, last = words[0], words[-1]
    long_first = first.end - first.start > max_duration
    long_pair = len(words) > 1 and words[1].end - first.start > max_duration * 2
    if first.end - last_speech > median_duration * 4 and (long_first or long_pair):
        if len(words) > 1 and words[1].end - words[1].start > max_duration:
            boundary = max(words[1].end / 2, words[1].end - max_duration)
            first.end = words[1].start = boundary
        first.start = max(0, first.end - max_duration)
    if segment.start < first.end and segment.start - 0.5 > first.start:
        first.start = max(0, min(first.end - median_duration, segment.start))
    else:
        segment.start = first.start
    if segment.end > last.start and segment.end + 0.5 < last.end:
        last.end = max(last.start + median_duration, segment.end)
    else:
        segment.end = last.end
