"""Decoder caches: stepping with either kind gives the teacher-forced logits, ``select`` picks and repeats
rows, and misuse fails clearly."""

from __future__ import annotations

import pytest
import torch

from fastaed.model import HiddenStateCache, KVCache, build_model
from tests import stepped_and_forced

VOCAB, WIDTH = 40, 32


@pytest.fixture
def model():
    torch.manual_seed(0)
    return build_model("test", vocab_size=VOCAB).eval()


def _inputs(b: int = 3):
    gen = torch.Generator().manual_seed(0)
    enc_lens = torch.tensor([9, 4, 6][:b])  # padded: rows differ in length
    enc = torch.randn(b, int(enc_lens.max()), WIDTH, generator=gen)
    tokens = torch.cat(
        [torch.tensor([[2, 10, 3, 10, 5]] * b), torch.randint(11, VOCAB, (b, 6), generator=gen)], 1
    )
    return enc, enc_lens, tokens  # tokens: (B, 11), a 5-token prompt then 6 more


@pytest.mark.parametrize("kind, cls", [("kv", KVCache), ("hidden", HiddenStateCache)])
@torch.no_grad()
def test_stepping_gives_the_teacher_forced_logits(model, kind, cls):
    enc, enc_lens, tokens = _inputs()
    # the prompt pre-fill, then one token at a time
    cache, pairs = stepped_and_forced(model, enc, enc_lens, tokens, prefill=5, kind=kind)
    assert isinstance(cache, cls) and cache.capacity == tokens.shape[1] and cache.batch_size == 3
    assert cache.length == tokens.shape[1] and len(pairs) == tokens.shape[1] - 4
    for stepped, forced in pairs:
        torch.testing.assert_close(stepped, forced, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["kv", "hidden"])
@torch.no_grad()
def test_select_picks_and_repeats_rows(model, kind):
    enc, enc_lens, tokens = _inputs()
    cache = model.start_decoding(enc, enc_lens, 7, kind)
    model.decoder.step(tokens[:, :5], cache)
    rows = torch.tensor([2, 0, 0])  # compaction drops row 1; beam search repeats a parent
    picked = cache.select(rows)
    assert picked.length == 5 and picked.batch_size == 3
    got = model.decoder.step(tokens[rows, 5:6], picked)
    want = model.decoder.step(tokens[:, 5:6], cache)[rows]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_misuse_fails_clearly(model):
    enc, enc_lens, tokens = _inputs()
    cache = model.start_decoding(enc, enc_lens, 7)
    with torch.no_grad():
        model.decoder.step(tokens[:, :5], cache)
        with pytest.raises(ValueError, match="empty cache"):  # several tokens: only the prompt pre-fill
            model.decoder.step(tokens[:, 5:7], cache)
        model.decoder.step(tokens[:, 5:6], cache)
        model.decoder.step(tokens[:, 6:7], cache)
        with pytest.raises(ValueError, match="holds 7 positions"):
            model.decoder.step(tokens[:, 7:8], cache)
    with pytest.raises(ValueError, match="unknown cache kind"):
        model.start_decoding(enc, enc_lens, 7, "paged")  # type: ignore[arg-type]


def test_no_mask_when_no_frame_is_padded(model):
    enc, _, _ = _inputs()
    assert model.start_decoding(enc, torch.full((3,), enc.shape[1]), 4).memory_mask is None
    padded = model.start_decoding(enc, torch.tensor([9, 4, 6]), 4).memory_mask
    assert padded is not None and padded.shape == (3, 1, 1, 9)
