"""Batched greedy and beam search over the model's cached decoder.

Dimensions: B utterances, K beams, T' encoder frames, De encoder width, P prompt tokens, V vocabulary.

Both searches start a decoder cache from the encoder output (``EncoderDecoderModel.start_decoding``; the
cache itself lives in ``fastaed.model.cache``) and a (B, P) prompt (any mix of tasks/languages; the prompt
length is fixed), pre-fill the prompt in one ``decoder.step``, then add one token per step. A row stops at
EOS or at its length limit: as many new tokens as it has encoder frames (80 ms each, far above any speaking
rate; it bounds a looping decoder), capped by the decoder's ``max_len``. Done rows leave the cache at once
(compaction); greedy search can keep them instead, as NeMo does (the ``fastaed bench rtfx`` baseline).

Beam search scores a finished hypothesis with the GNMT length penalty (Wu et al. 2016):
``score = log P(y) / lp(|y|)``, ``lp(n) = ((5 + n) / 6) ** alpha``, where ``|y|`` counts the generated
tokens including EOS (the prompt excluded). ``alpha = 0`` ranks by plain log-probability; larger ``alpha``
favours longer outputs. An utterance is done once it has K finished hypotheses and no live beam can still
beat the worst of them (a live beam's log-probability only falls, and its penalty is at most lp(limit)).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from fastaed.model import CacheKind, EncoderDecoderModel


@dataclass(frozen=True)
class Hypothesis:
    """One output: generated ids (no prompt, no EOS), log-probability, length-normalised score."""

    tokens: list[int]
    logprob: float
    score: float  # logprob / lp(len(tokens) + ended) for beam search; = logprob for greedy
    ended: bool  # True if it ended with EOS (False: cut at the length limit)
    guard: str | None = None  # the loop guard that stopped it: "repetition" or "token_cap" (None: neither)


@dataclass(frozen=True)
class LoopGuard:
    """Stops a looping decoder (greedy search), and says so.

    * repetition: a row whose last tokens are one unit of ``period`` tokens repeated, at least
      ``min_repeats`` times and at least ``min_span`` tokens in all (so "no no" or a spelled-out number
      stays), for any period up to ``max_period``, ends there with one copy of the unit kept.
    * token cap: ``tokens_per_second`` × the row's audio seconds + ``slack`` new tokens at most (speech runs
      at 2-4 Whisper tokens per second; Moonshine caps at about 6.5): :meth:`cap`, given to the search as
      ``token_caps``.

    Checked every ``every`` steps (the check is a few tensor ops over the live rows' last tokens).
    """

    max_period: int = 16
    min_repeats: int = 3
    min_span: int = 8
    every: int = 4
    tokens_per_second: float | None = 6.5
    slack: int = 10

    def cap(self, seconds: Tensor) -> Tensor | None:
        """(B,) most new tokens for (B,) audio seconds, or None without a cap."""
        if self.tokens_per_second is None:
            return None
        return (seconds * self.tokens_per_second).ceil().long() + self.slack

    def period(self, seqs: Tensor, length: int) -> Tensor:
        """(B,) period of the repetition ending the first ``length`` tokens of ``seqs`` (B, L); 0: none."""
        found = torch.zeros(seqs.shape[0], dtype=torch.long, device=seqs.device)
        for p in range(1, self.max_period + 1):
            repeats = self.repeats(p)
            span = p * repeats
            if span > length:
                break
            tail = seqs[:, length - span : length].view(-1, repeats, p)
            hit = (tail == tail[:, -1:]).all(dim=2).all(dim=1)
            found = torch.where((found == 0) & hit, p, found)
        return found

    def repeats(self, p: int) -> int:
        """Copies of a ``p``-token unit that make a repetition: ``min_repeats``, and ``min_span`` tokens."""
        return max(self.min_repeats, -(-self.min_span // p))


def length_penalty(length: int | Tensor, alpha: float) -> float | Tensor:
    """GNMT length penalty ((5 + length) / 6) ** alpha."""
    return ((5 + length) / 6) ** alpha


def row_limits(model: EncoderDecoderModel, enc_lens: Tensor, prompt_len: int) -> Tensor:
    """(B,) most new tokens per row: its encoder frames, capped by the decoder's positions left."""
    cap = max(model.config.decoder.max_len - prompt_len, 1)
    return enc_lens.clamp(min=1, max=cap)


def nemo_limits(model: EncoderDecoderModel, enc: Tensor, prompt_len: int, delta: int) -> Tensor:
    """(B,) most new tokens per row under NeMo's greedy rule (``GreedySequenceGenerator``): one limit for the
    whole batch, ``min(max_len, T' + delta) - P`` with T' the batch's padded encoder length, or
    ``max_len - P`` when ``delta < 0``. Imported NeMo checkpoints decode with it, so a row that never emits
    EOS stops where NeMo's ``transcribe()`` would."""
    max_len = model.config.decoder.max_len
    cap = max_len if delta < 0 else min(max_len, enc.shape[1] + delta)
    return torch.full((enc.shape[0],), max(cap - prompt_len, 1), dtype=torch.long, device=enc.device)


def suppressed(logits: Tensor, step: int, always: Tensor | None, at_start: Tensor | None) -> Tensor:
    """logits (N, V) with the ids of ``always`` (and of ``at_start`` at step 0) set to -inf, in place."""
    if always is not None:
        logits[:, always] = -torch.inf
    if step == 0 and at_start is not None:
        logits[:, at_start] = -torch.inf
    return logits


@torch.inference_mode()
def greedy_search(
    model: EncoderDecoderModel,
    enc: Tensor,
    enc_lens: Tensor,
    prompts: Tensor,
    eos_id: int,
    *,
    force_lengths: Tensor | None = None,
    cache_kind: CacheKind = "kv",
    compact: bool = True,
    suppress: Tensor | None = None,
    suppress_at_start: Tensor | None = None,
    limits: Tensor | None = None,
    loop_guard: LoopGuard | None = None,
    token_caps: Tensor | None = None,
) -> list[Hypothesis]:
    """Batched greedy decoding with a decoder cache.

    enc: (B, T', De); enc_lens: (B,); prompts: (B, P). ``force_lengths`` (B,) makes row b emit exactly that
    many tokens before EOS (within its limit) — for timing random-weight models at realistic output
    lengths. ``cache_kind``: what the decoder keeps between steps (``"kv"``; ``"hidden"`` is the NeMo-style
    baseline, see ``fastaed.model.cache``). ``compact=False`` keeps done rows in the batch until every row is
    done (their further tokens are ignored), as NeMo does. ``suppress``: (S,) ids never emitted;
    ``suppress_at_start``: ids not emitted as the first token (Whisper's blank and EOS). ``limits``: (B,)
    most new tokens per row instead of :func:`row_limits` (e.g. :func:`nemo_limits`). ``loop_guard``: end a
    row that repeats itself (:class:`LoopGuard`). ``token_caps``: (B,) most new tokens per row from the
    guard's cap (``LoopGuard.cap``); a row stopped by it is marked ``token_cap``. Returns one
    :class:`Hypothesis` per row, in input order.
    """
    b, p = prompts.shape
    device = prompts.device
    limit = row_limits(model, enc_lens, p) if limits is None else limits.to(device)
    by_cap = torch.zeros(b, dtype=torch.bool, device=device)  # the guard's cap is the binding limit
    if token_caps is not None:
        by_cap = token_caps.to(device) < limit
        limit = torch.minimum(limit, token_caps.to(device))
    if force_lengths is not None:
        limit = torch.minimum(limit, force_lengths.to(limit) + 1)  # + 1: the EOS
    steps = int(limit.max())
    cache = model.start_decoding(enc, enc_lens, p + steps, cache_kind)
    logits = model.decoder.step(prompts, cache)
    # State of the live rows only (compacted together with the cache); results land in ``out`` as rows end.
    rows = torch.arange(b, device=device)  # original row of each live row
    seqs = torch.zeros(b, steps, dtype=torch.long, device=device)
    logprob = torch.zeros(b, dtype=torch.float32, device=device)
    live_limit = limit.clone()
    forced = force_lengths.to(device) if force_lengths is not None else None
    emitted = torch.zeros(b, dtype=torch.bool, device=device)  # without compaction: rows already in ``out``
    out: list[Hypothesis | None] = [None] * b

    looped = torch.zeros(b, dtype=torch.long, device=device)  # period of a row's repetition (0: none)

    def emit(live: Tensor, t: int, is_eos: Tensor) -> None:
        for i in live.tolist():
            e, period = bool(is_eos[i]), int(looped[i])
            if period:  # keep one copy of the repeated unit
                ids = seqs[i, : t + 1 - (loop_guard.repeats(period) - 1) * period].tolist()  # type: ignore[union-attr]
                out[int(rows[i])] = Hypothesis(ids, float(logprob[i]), float(logprob[i]), False, "repetition")
                continue
            ids = seqs[i, : t if e else t + 1].tolist()
            guard = "token_cap" if bool(by_cap[int(rows[i])]) and not e else None
            out[int(rows[i])] = Hypothesis(ids, float(logprob[i]), float(logprob[i]), e, guard)

    for t in range(steps):
        logp = torch.log_softmax(
            suppressed(logits.float(), t, suppress, suppress_at_start), dim=-1
        )  # (B', V)
        if forced is not None:
            logp[t < forced, eos_id] = -torch.inf  # no EOS before the forced length, only EOS at it
            at_length = t >= forced
            logp[at_length] = -torch.inf
            logp[at_length, eos_id] = 0.0
        best, next_id = logp.max(dim=-1)  # (B',)
        seqs[:, t] = next_id
        logprob += best
        is_eos = next_id == eos_id
        done = is_eos | (live_limit <= t + 1)
        if loop_guard is not None and (t + 1) % loop_guard.every == 0:
            looped = loop_guard.period(seqs, t + 1) * ~is_eos
            done |= looped > 0
        if not compact:
            done &= ~emitted
        if bool(done.any()):
            emit(done.nonzero().squeeze(1), t, is_eos)
            if not compact:
                emitted |= done
                if bool(emitted.all()):
                    break
            elif bool(done.all()):
                break
            else:
                keep = (~done).nonzero().squeeze(1)  # compaction: done rows cost nothing from here on
                cache, rows, next_id = cache.select(keep), rows[keep], next_id[keep]
                seqs, logprob, live_limit, looped = seqs[keep], logprob[keep], live_limit[keep], looped[keep]
                forced = forced[keep] if forced is not None else None
        logits = model.decoder.step(next_id[:, None], cache)
    assert all(h is not None for h in out)  # the last step ends every row (its limit)
    return out  # type: ignore[return-value]


@torch.inference_mode()
def beam_search(
    model: EncoderDecoderModel,
    enc: Tensor,
    enc_lens: Tensor,
    prompts: Tensor,
    eos_id: int,
    *,
    beam_size: int = 4,
    alpha: float = 1.0,
    nbest: int | None = None,
    suppress: Tensor | None = None,
    suppress_at_start: Tensor | None = None,
) -> list[list[Hypothesis]]:
    """Batched beam search with the K/V cache and the GNMT length penalty.

    enc: (B, T', De); enc_lens: (B,); prompts: (B, P). Returns per utterance its ``nbest`` (default
    ``beam_size``) best hypotheses, best first, ranked by ``score``. ``suppress``/``suppress_at_start``: as
    for :func:`greedy_search`.
    """
    k = beam_size
    if k < 1:
        raise ValueError(f"beam_size must be >= 1, got {k}")
    nbest = k if nbest is None else min(nbest, k)
    b, p = prompts.shape
    device = prompts.device
    limit = row_limits(model, enc_lens, p)  # (B,)
    cache = model.start_decoding(enc, enc_lens, p + int(limit.max()))
    logits = model.decoder.step(prompts, cache)  # (B, V): pre-fill once per utterance, then expand
    beam_rows = torch.arange(b, device=device).repeat_interleave(k)
    cache, logits = cache.select(beam_rows), logits[beam_rows]
    items = torch.arange(b, device=device)  # original utterance of each live item (k cache rows each)
    scores = torch.full((b, k), -torch.inf, dtype=torch.float64, device=device)
    scores[:, 0] = 0.0  # all beams start equal: keep one, or the first step would pick K copies
    history = torch.zeros(b * k, 0, dtype=torch.long, device=device)
    finished: list[list[Hypothesis]] = [[] for _ in range(b)]

    def finish(item: int, ids: list[int], logprob: float, ended: bool) -> None:
        n = len(ids) + int(ended)
        finished[item].append(Hypothesis(ids, logprob, logprob / float(length_penalty(n, alpha)), ended))

    for t in range(int(limit.max())):
        n_items = len(items)
        logits = suppressed(logits.float(), t, suppress, suppress_at_start)
        logp = torch.log_softmax(logits, dim=-1).double().view(n_items, k, -1)  # (B', K, V)
        vocab = logp.shape[-1]
        cand = (scores[:, :, None] + logp).view(n_items, k * vocab)
        top, idx = cand.topk(min(2 * k, k * vocab), dim=1)  # (B', 2K): enough for K live + some EOS
        parent, token = idx // vocab, idx % vocab
        is_eos = token == eos_id
        # EOS among the top K ends a hypothesis (a lower-ranked EOS could not make the top K anyway).
        rank = torch.arange(top.shape[1], device=device)[None]
        for i, j in (is_eos & (rank < k) & torch.isfinite(top)).nonzero().tolist():
            item, row = int(items[i]), i * k + int(parent[i, j])
            finish(item, history[row].tolist(), float(top[i, j]), True)
        # The K best non-EOS candidates live on.
        live_scores, order = top.masked_fill(is_eos, -torch.inf).topk(k, dim=1)  # (B', K)
        parent_rows = (torch.arange(n_items, device=device)[:, None] * k + parent.gather(1, order)).view(-1)
        new_tokens = token.gather(1, order).view(-1)  # (B' K,)
        history = torch.cat([history[parent_rows], new_tokens[:, None]], dim=1)
        scores = live_scores

        # Which utterances are done: at their limit (live beams end there, unfinished), or no live beam
        # can still beat the worst of K finished hypotheses.
        at_limit = t + 1 >= limit[items]
        done = torch.zeros(n_items, dtype=torch.bool, device=device)
        best_live = scores.max(dim=1).values  # (B',)
        for i in range(n_items):
            item = int(items[i])
            if bool(at_limit[i]):
                for j in range(k):
                    if torch.isfinite(scores[i, j]):
                        finish(item, history[i * k + j].tolist(), float(scores[i, j]), False)
                done[i] = True
            elif len(finished[item]) >= k:
                worst = sorted(h.score for h in finished[item])[-k]
                bound = float(best_live[i]) / float(length_penalty(int(limit[item]), alpha))
                done[i] = not torch.isfinite(best_live[i]) or bound <= worst
        if bool(done.all()):
            break
        keep_items = (~done).nonzero().squeeze(1)
        keep_rows = (keep_items[:, None] * k + torch.arange(k, device=device)[None]).view(-1)
        rows = parent_rows[keep_rows]  # cache rows: parents of the surviving beams
        cache = cache.select(rows)
        items, scores, history = items[keep_items], scores[keep_items], history[keep_rows]
        logits = model.decoder.step(new_tokens[keep_rows][:, None], cache)
    return [sorted(f, key=lambda h: -h.score)[:nbest] for f in finished]
