"""One 30 s Whisper window decoded with timestamp tokens: the step long-form ``transcribe`` repeats.

Dimensions: T' encoder frames (1500 for a 30 s window), D model width, V vocabulary.

The decoder is fed ``[<|startofprev|> previous text] <|sot|> [<|lang|> <|task|>]`` and writes text with
timestamp tokens ``<|t|>`` (t in 0.02 s steps from the window start). The rules openai-whisper applies to
every step (its ``ApplyTimestampRules``, ``SuppressBlank``, ``SuppressTokens``) are applied here the same
way, so greedy decoding at temperature 0 writes the same tokens it writes:

* timestamps come in pairs (a segment's end and the next one's start), except right before the end of text;
* timestamps never go back, and a segment has non-zero length;
* the first token is a timestamp no later than ``max_initial_timestamp`` (1 s);
* when the timestamps together are more likely than the likeliest text token, a timestamp is written;
* a blank or end-of-text as first token, ``<|notimestamps|>`` and the non-speech symbols are never written.

Besides the tokens a window reports what the fallback and skip rules of long-form decoding read: the average
log-probability of its tokens (end of text included), the compression ratio of its text (zlib; repetitive
text compresses well) and the probability of ``<|nospeech|>`` at the ``<|sot|>`` position.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import torch
from torch import Tensor

from fastaed.data.whisper_tokenizer import WhisperTokenizer
from fastaed.model import EncoderDecoderModel

TIME_PRECISION = 0.02  # seconds per timestamp token (2 mel frames of 10 ms)


@dataclass(frozen=True)
class WindowResult:
    """The decoded window: generated ids (timestamps included, end-of-text excluded) and the statistics."""

    tokens: list[int]
    text: str
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float
    temperature: float


def compression_ratio(text: str) -> float:
    """Bytes of ``text`` over bytes of its zlib compression (about 1 for ordinary text, > 2.4 for loops)."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


class WindowDecoder:
    """Greedy (temperature 0) or sampled decoding of one window under Whisper's timestamp rules.

    ``max_initial_timestamp``: seconds; the first timestamp may not be later. ``sample_len``: most generated
    tokens (openai-whisper: half the text context, 224).
    """

    def __init__(
        self,
        model: EncoderDecoderModel,
        tokenizer: WhisperTokenizer,
        *,
        max_initial_timestamp: float = 1.0,
        sample_len: int | None = None,
    ):
        self.model, self.tokenizer = model, tokenizer
        self.n_ctx = model.config.decoder.max_len
        self.sample_len = sample_len or self.n_ctx // 2
        self.max_initial_index = round(max_initial_timestamp / TIME_PRECISION)
        device = next(model.parameters()).device
        # Whisper's "-1" suppression list: non-speech symbols and the task tokens, plus <|nospeech|>.
        suppress = {*tokenizer.suppress_ids, tokenizer.no_speech_id}
        self.suppress = torch.tensor(sorted(suppress), dtype=torch.long, device=device)
        self.suppress_blank = torch.tensor(tokenizer.suppress_at_start_ids, dtype=torch.long, device=device)

    def sot_sequence(self, language: str, task: str) -> list[int]:
        """``<|sot|>`` and, for a multilingual model, the language and task tokens (no
        ``<|notimestamps|>``)."""
        tok = self.tokenizer
        if not tok.multilingual:
            return [tok.sot_id]
        task_id = tok.translate_id if task == "translate" else tok.transcribe_id
        return [tok.sot_id, tok.language_id(language), task_id]

    def initial_tokens(self, sot_sequence: list[int], previous: list[int]) -> list[int]:
        """The decoder's input before the first generated token: the previous text (at most half the context
        less one) after ``<|startofprev|>``, then the start-of-transcript sequence."""
        if not previous:
            return list(sot_sequence)
        keep = previous[-(self.n_ctx // 2 - 1) :]
        return [self.tokenizer.sot_prev_id, *keep, *sot_sequence]

    @torch.inference_mode()
    def decode(
        self,
        enc: Tensor,
        sot_sequence: list[int],
        previous: list[int],
        temperature: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> WindowResult:
        """enc: (1, T', D) encoder output of the window. ``previous``: prompt ids (text and timestamps of the
        windows before; empty for none)."""
        tok = self.tokenizer
        device = enc.device
        initial = self.initial_tokens(sot_sequence, previous)
        sot_index = initial.index(tok.sot_id)
        enc_lens = torch.tensor([enc.shape[1]], device=device)
        cache = self.model.start_decoding(enc, enc_lens, self.n_ctx)
        # Up to <|sot|> first: its logits give the no-speech probability; then the rest of the prompt.
        head = torch.tensor([initial[: sot_index + 1]], device=device)
        logits = self.model.decoder.step(head, cache)
        no_speech_prob = float(torch.softmax(logits.float(), dim=-1)[0, tok.no_speech_id])
        for t in initial[sot_index + 1 :]:
            logits = self.model.decoder.step(torch.tensor([[t]], device=device), cache)

        tokens: list[int] = []
        sum_logprob = 0.0
        length = len(initial)
        for _ in range(self.sample_len):
            logits = self.filtered(logits[0].float(), tokens)
            if temperature > 0:
                probs = torch.softmax(logits / temperature, dim=-1)
                next_id = int(torch.multinomial(probs, 1, generator=generator))
            else:
                next_id = int(logits.argmax())
            sum_logprob += float(torch.log_softmax(logits, dim=-1)[next_id])
            if next_id == tok.eos_id:
                break
            tokens.append(next_id)
            length += 1
            if length > self.n_ctx:  # no position left for this token
                break
            logits = self.model.decoder.step(torch.tensor([[next_id]], device=device), cache)
        text = tok.decode(tokens)
        return WindowResult(
            tokens=tokens, text=text, avg_logprob=sum_logprob / (len(tokens) + 1),
            compression_ratio=compression_ratio(text.strip()), no_speech_prob=no_speech_prob,
            temperature=temperature,
        )  # fmt: skip

    def filtered(self, logits: Tensor, sampled: list[int]) -> Tensor:
        """logits (V,) of the next token after the ``sampled`` ids -> the same with forbidden ids at -inf."""
        tok = self.tokenizer
        ts_begin, eos = tok.timestamp_begin, tok.eos_id
        logits = logits.clone()
        if not sampled:
            logits[self.suppress_blank] = -torch.inf
        logits[self.suppress] = -torch.inf
        logits[tok.no_timestamps_id] = -torch.inf

        last_ts = len(sampled) >= 1 and sampled[-1] >= ts_begin
        penultimate_ts = len(sampled) < 2 or sampled[-2] >= ts_begin
        if last_ts:
            if penultimate_ts:  # a pair just closed: text (or the end) must follow
                logits[ts_begin:] = -torch.inf
            else:  # a segment's end: the next one's start, or the end of text
                logits[:eos] = -torch.inf
        stamps = [t for t in sampled if t >= ts_begin]
        if stamps:
            # Never back in time; a new segment may start where the last ended, not inside it.
            floor = stamps[-1] if last_ts and not penultimate_ts else stamps[-1] + 1
            logits[ts_begin:floor] = -torch.inf
        if not sampled:
            logits[:ts_begin] = -torch.inf  # the first token is a timestamp ...
            logits[ts_begin + self.max_initial_index + 1 :] = -torch.inf  # ... no later than 1 s

        logprobs = torch.log_softmax(logits, dim=-1)
        if logprobs[ts_begin:].logsumexp(dim=-1) > logprobs[:ts_begin].max():
            logits[:ts_begin] = -torch.inf
        return logits
