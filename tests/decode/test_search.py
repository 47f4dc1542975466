"""Decoding properties: greedy with either cache (compacting or not) == the uncached oracle, beam 1 ==
greedy, batched == one at a time, the length penalty ranks as specified, forced lengths, compaction keeps
rows apart."""

from __future__ import annotations

import math

import pytest
import torch

from fastaed.decode import beam_search, greedy_search, length_penalty
from fastaed.decode.search import Hypothesis
from fastaed.model import build_model
from tests.decode.oracle import greedy_oracle

EOS, VOCAB, WIDTH = 1, 40, 32


@pytest.fixture
def model():
    torch.manual_seed(0)
    m = build_model("test", vocab_size=VOCAB).eval()
    with torch.no_grad():  # EOS likely enough that some rows end early and others run to their limit
        m.decoder.output_bias[EOS] = 2.5
    return m


def _inputs(b: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    enc_lens = torch.randint(3, 13, (b,), generator=gen)
    enc = torch.randn(b, int(enc_lens.max()), WIDTH, generator=gen)
    enc = enc * (torch.arange(enc.shape[1])[None, :, None] < enc_lens[:, None, None])  # zero padded frames
    prompts = torch.tensor([[2, 10, 3, 10, 5]] * b)
    prompts[:, 4] = torch.randint(5, 7, (b,), generator=gen)  # mixed pnc tokens
    return enc, enc_lens, prompts


@pytest.mark.parametrize(
    "cache_kind, compact", [("kv", True), ("kv", False), ("hidden", True), ("hidden", False)]
)
def test_greedy_equals_the_uncached_oracle(model, cache_kind, compact):
    enc, enc_lens, prompts = _inputs(6, seed=11)  # padded: encoder lengths 3..12, mixed pnc prompts
    hyps = greedy_search(model, enc, enc_lens, prompts, EOS, cache_kind=cache_kind, compact=compact)
    tokens = [h.tokens for h in hyps]
    assert tokens == greedy_oracle(model, enc, enc_lens, prompts, EOS)
    lengths = [len(t) for t in tokens]
    assert min(lengths) < max(lengths)  # rows ended at different steps: compaction (or not) mattered
    assert any(h.ended for h in hyps) and not all(h.ended for h in hyps)  # EOS and the length limit both


def test_a_model_that_always_says_eos_gives_empty_hypotheses(model):
    enc, enc_lens, prompts = _inputs(3, seed=8)
    with torch.no_grad():
        model.decoder.output_bias.fill_(-1e4)
        model.decoder.output_bias[EOS] = 1e4
    for compact in (True, False):
        hyps = greedy_search(model, enc, enc_lens, prompts, EOS, compact=compact)
        assert [(h.tokens, h.ended) for h in hyps] == [([], True)] * 3


def test_batched_equals_one_at_a_time(model):
    enc, enc_lens, prompts = _inputs(5, seed=2)
    batched = greedy_search(model, enc, enc_lens, prompts, EOS)
    beams = beam_search(model, enc, enc_lens, prompts, EOS, beam_size=3, alpha=0.6)
    for i in range(5):
        n = int(enc_lens[i])
        alone = greedy_search(model, enc[i : i + 1, :n], enc_lens[i : i + 1], prompts[i : i + 1], EOS)[0]
        assert alone.tokens == batched[i].tokens
        assert alone.logprob == pytest.approx(batched[i].logprob, abs=1e-4)
        alone_beam = beam_search(
            model, enc[i : i + 1, :n], enc_lens[i : i + 1], prompts[i : i + 1], EOS, beam_size=3, alpha=0.6
        )[0]
        assert [h.tokens for h in alone_beam] == [h.tokens for h in beams[i]]


def test_beam_size_one_is_greedy(model):
    enc, enc_lens, prompts = _inputs(6, seed=3)
    greedy = greedy_search(model, enc, enc_lens, prompts, EOS)
    beam = beam_search(model, enc, enc_lens, prompts, EOS, beam_size=1, alpha=0.0)
    assert [h.tokens for h in greedy] == [b[0].tokens for b in beam]
    for g, b in zip(greedy, beam):
        assert b[0].logprob == pytest.approx(g.logprob, abs=1e-4)


def test_beam_search_beats_or_ties_greedy_and_returns_sorted_nbest(model):
    enc, enc_lens, prompts = _inputs(4, seed=4)
    greedy = greedy_search(model, enc, enc_lens, prompts, EOS)
    beams = beam_search(model, enc, enc_lens, prompts, EOS, beam_size=4, alpha=0.0)
    for g, nbest in zip(greedy, beams):
        assert 1 <= len(nbest) <= 4
        assert [h.score for h in nbest] == sorted((h.score for h in nbest), reverse=True)
        if g.ended:  # greedy's output is one of the candidates beam search weighs
            assert nbest[0].score >= g.logprob - 1e-6


def test_scores_apply_the_gnmt_length_penalty(model):
    enc, enc_lens, prompts = _inputs(3, seed=5)
    for alpha in (0.0, 1.0):
        for nbest in beam_search(model, enc, enc_lens, prompts, EOS, beam_size=3, alpha=alpha):
            for h in nbest:
                n = len(h.tokens) + int(h.ended)
                assert h.score == pytest.approx(h.logprob / ((5 + n) / 6) ** alpha)
    assert length_penalty(1, 1.0) == 1.0 and length_penalty(7, 2.0) == 4.0


def _bigram_step(table: torch.Tensor):
    """A decoder whose next-token log-probabilities depend only on the last token: scripted outcomes."""

    def step(tokens, cache):
        cache.length += tokens.shape[1]
        return table[tokens[:, -1]]

    return step


def test_length_penalty_changes_the_ranking(model, monkeypatch):
    # After the prompt: EOS (p=0.5) or token 20 (p=0.5); after 20: token 21 (0.9); after 21: EOS (0.9).
    # Short "" has log P = log 0.5 = -0.69; long [20, 21] has log 0.5 + 2 log 0.9 = -0.90.
    table = torch.full((VOCAB, VOCAB), -30.0)
    table[5, EOS] = table[5, 20] = math.log(0.5)
    table[20, 21] = table[21, EOS] = math.log(0.9)
    table[20, 22] = table[21, 23] = math.log(0.1)
    table = torch.log_softmax(table, dim=-1)
    monkeypatch.setattr(model.decoder, "step", _bigram_step(table))
    enc, enc_lens, prompts = torch.zeros(1, 8, WIDTH), torch.tensor([8]), torch.tensor([[2, 10, 3, 10, 5]])

    plain = beam_search(model, enc, enc_lens, prompts, EOS, beam_size=2, alpha=0.0)[0]
    assert plain[0].tokens == [] and plain[0].score == pytest.approx(math.log(0.5), abs=1e-3)
    favour_long = beam_search(model, enc, enc_lens, prompts, EOS, beam_size=2, alpha=2.0)[0]
    assert favour_long[0].tokens == [20, 21]
    assert favour_long[0].score == pytest.approx((math.log(0.5) + 2 * math.log(0.9)) / (8 / 6) ** 2, abs=1e-3)


def test_forced_lengths_emit_exactly_that_many_tokens(model):
    enc, enc_lens, prompts = _inputs(4, seed=6)
    want = torch.tensor([0, 2, 5, 50])
    hyps = greedy_search(model, enc, enc_lens, prompts, EOS, force_lengths=want)
    for h, n, limit in zip(hyps, want.tolist(), enc_lens.tolist()):
        assert EOS not in h.tokens
        if n < limit:
            assert len(h.tokens) == n and h.ended
        else:
            assert len(h.tokens) == limit and not h.ended  # the encoder-frame limit still holds


def test_rows_stop_at_eos_or_their_encoder_length(model):
    enc, enc_lens, prompts = _inputs(8, seed=7)
    for h, n in zip(greedy_search(model, enc, enc_lens, prompts, EOS), enc_lens.tolist()):
        assert isinstance(h, Hypothesis) and EOS not in h.tokens
        assert len(h.tokens) <= n and (h.ended or len(h.tokens) == n)
