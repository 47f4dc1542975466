"""Model properties: exact lengths and shapes, padding invariance, causality, overfitting, loss semantics."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from fastaed.model import (
    AEDOutput,
    build_model,
    cross_entropy_loss,
    ctc_loss,
    preset_config,
    subsampled_lengths,
)
from fastaed.model.attention import rel_shift

N_MELS = 128


def _model(seed: int = 0, **overrides):
    torch.manual_seed(seed)
    config = preset_config("test")
    if overrides:
        config = dataclasses.replace(config, **overrides)
    return build_model(config)


def _conv_len(n: int) -> int:
    for _ in range(3):
        n = (n + 2 * 1 - 3) // 2 + 1
    return n


def test_rel_shift_aligns_offset_scores_to_keys():
    b, h, t = 2, 3, 6
    x = torch.randn(b, h, t, 2 * t - 1)
    i = torch.arange(t)[:, None]
    j = torch.arange(t)[None, :]
    expected = x.gather(-1, (t - 1 - i + j).expand(b, h, t, t))  # column for offset i - j
    assert torch.equal(rel_shift(x), expected)


@pytest.mark.parametrize("length", [1, 2, 7, 8, 9, 15, 16, 17, 100, 257])
def test_encoder_length_is_the_exact_conv_formula(length):
    model = _model().eval()
    enc, enc_lens = model.encode(torch.randn(1, length, N_MELS), torch.tensor([length]))
    assert enc_lens.tolist() == [_conv_len(length)]
    assert enc.shape == (1, _conv_len(length), 32)
    assert subsampled_lengths(torch.tensor([length]), 3).item() == _conv_len(length)


def test_forward_shapes():
    model = _model().eval()
    feats, feat_lens = torch.randn(3, 90, N_MELS), torch.tensor([90, 41, 8])
    tokens, token_lens = torch.randint(1, 100, (3, 11)), torch.tensor([11, 3, 1])
    logits = model(feats, feat_lens, tokens, token_lens)
    assert logits.shape == (3, 11, model.config.vocab_size)
    enc, enc_lens = model.encode(feats, feat_lens)
    assert enc_lens.tolist() == [_conv_len(n) for n in (90, 41, 8)]
    assert torch.all(enc[1, enc_lens[1] :] == 0), "padded encoder frames are zeroed"


def test_padding_invariance_encoder_logits_and_loss():
    """An utterance gives the same outputs alone as batched with a longer, different one (eval mode)."""
    model = _model(seed=1).eval()
    gen = torch.Generator().manual_seed(0)
    short_t, long_t, short_u, long_u = 53, 131, 5, 12
    short_feats = torch.randn(short_t, N_MELS, generator=gen)
    short_tokens = torch.randint(1, 1000, (short_u,), generator=gen)

    alone_enc, alone_lens = model.encode(short_feats[None], torch.tensor([short_t]))
    alone_logits = model(
        short_feats[None], torch.tensor([short_t]), short_tokens[None], torch.tensor([short_u])
    )

    # Batch: the short utterance padded with noise (not zeros) next to a longer one; its token padding holds
    # arbitrary ids too, so only masking (not lucky zeros) can make the outputs agree.
    feats = torch.randn(2, long_t, N_MELS, generator=gen)
    feats[0, :short_t] = short_feats
    tokens = torch.randint(1, 1000, (2, long_u), generator=gen)
    tokens[0, :short_u] = short_tokens
    feat_lens, dec_lens = torch.tensor([short_t, long_t]), torch.tensor([short_u, long_u])
    enc, enc_lens = model.encode(feats, feat_lens)
    logits = model(feats, feat_lens, tokens, dec_lens)

    n = alone_lens.item()
    assert enc_lens[0].item() == n
    torch.testing.assert_close(enc[0, :n], alone_enc[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(logits[0, :short_u], alone_logits[0], atol=1e-5, rtol=1e-5)

    targets = torch.randint(1, 1000, (2, long_u), generator=gen)
    loss_alone, _ = cross_entropy_loss(alone_logits, targets[:1, :short_u], target_lens=dec_lens[:1])
    loss_row, count = cross_entropy_loss(logits[:1], targets[:1], target_lens=dec_lens[:1])
    assert count.item() == short_u
    torch.testing.assert_close(loss_row, loss_alone, atol=1e-5, rtol=1e-5)


def test_decoder_is_causal():
    model = _model().eval()
    feats, feat_lens = torch.randn(2, 64, N_MELS), torch.tensor([64, 50])
    tokens = torch.randint(1, 1000, (2, 10))
    changed = tokens.clone()
    changed[:, 6] = (changed[:, 6] + 1) % 1000
    lens = torch.tensor([10, 10])
    before, after = model(feats, feat_lens, tokens, lens), model(feats, feat_lens, changed, lens)
    torch.testing.assert_close(before[:, :6], after[:, :6], atol=0, rtol=0)
    assert not torch.allclose(before[:, 6:], after[:, 6:])


@pytest.fixture
def one_thread():
    """Tiny ops gain nothing from intra-op threads, and on a shared 2-core machine their spin-waits stall."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_overfits_a_tiny_batch(one_thread):
    """The whole model (encoder, cross-attention, decoder) can memorise two utterances."""
    model = _model(seed=2).train()
    gen = torch.Generator().manual_seed(2)
    feats, feat_lens = torch.randn(2, 80, N_MELS, generator=gen), torch.tensor([80, 61])
    seqs = torch.randint(1, 1000, (2, 10), generator=gen)
    token_lens = torch.tensor([10, 7])
    seqs[1, 7:] = 0  # pad
    dec_inputs, targets, dec_lens = seqs[:, :-1], seqs[:, 1:], token_lens - 1
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(150):
        logits = model(feats, feat_lens, dec_inputs, dec_lens)
        loss, _ = cross_entropy_loss(logits, targets, target_lens=dec_lens)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0], (losses[0], losses[-1])


def test_ctc_head_is_optional_and_shares_the_encoder_pass():
    feats, feat_lens = torch.randn(2, 70, N_MELS), torch.tensor([70, 40])
    tokens, lens = torch.randint(1, 1000, (2, 6)), torch.tensor([6, 4])
    with pytest.raises(RuntimeError, match="no CTC head"):
        _model().eval()(feats, feat_lens, tokens, lens, return_ctc=True)
    model = _model(ctc_weight=0.3).eval()
    out = model(feats, feat_lens, tokens, lens, return_ctc=True)
    assert isinstance(out, AEDOutput)
    assert out.ctc_log_probs.shape == (2, _conv_len(70), model.config.vocab_size)
    torch.testing.assert_close(out.ctc_log_probs.exp().sum(-1), torch.ones(2, _conv_len(70)))
    torch.testing.assert_close(out.logits, model(feats, feat_lens, tokens, lens))
    loss, count = ctc_loss(out.ctc_log_probs, out.enc_lens, tokens[:, :4], torch.tensor([4, 3]))
    assert count.item() == 7 and torch.isfinite(loss)


# ----------------------------------------------------------------------------------------------- loss


def test_cross_entropy_without_smoothing_matches_torch_ignore_index():
    logits, targets = torch.randn(3, 7, 50), torch.randint(1, 50, (3, 7))
    targets[0, 5:] = 0
    targets[2, 2:] = 0
    loss, count = cross_entropy_loss(logits, targets, pad_id=0)
    expected = F.cross_entropy(logits.reshape(-1, 50), targets.reshape(-1), ignore_index=0)
    torch.testing.assert_close(loss, expected)
    assert count.item() == (targets != 0).sum().item()
    by_lens, _ = cross_entropy_loss(logits, targets, target_lens=(targets != 0).sum(1))
    torch.testing.assert_close(by_lens, expected)


def test_loss_is_normalised_per_token_not_per_utterance():
    logits, targets = torch.randn(2, 6, 20), torch.randint(1, 20, (2, 6))
    lens = torch.tensor([6, 1])
    per_token = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")  # (B, U)
    expected = (per_token[0].sum() + per_token[1, 0]) / 7
    loss, count = cross_entropy_loss(logits, targets, target_lens=lens)
    torch.testing.assert_close(loss, expected)
    total, _ = cross_entropy_loss(logits, targets, target_lens=lens, reduction="sum")
    torch.testing.assert_close(total, expected * 7)
    assert count.item() == 7


def test_prompt_masking_excludes_prompt_targets():
    logits, targets = torch.randn(2, 8, 30), torch.randint(1, 30, (2, 8))
    lens, prompt_lens = torch.tensor([8, 6]), torch.tensor([5, 3])  # 4 and 2 prompt targets
    loss, count = cross_entropy_loss(logits, targets, target_lens=lens, prompt_lens=prompt_lens)
    assert count.item() == (8 - 4) + (6 - 2)
    per_token = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
    expected = (per_token[0, 4:].sum() + per_token[1, 2:6].sum()) / count
    torch.testing.assert_close(loss, expected)
    perturbed = logits.clone()
    perturbed[0, :4] += torch.randn(4, 30)
    torch.testing.assert_close(
        cross_entropy_loss(perturbed, targets, target_lens=lens, prompt_lens=prompt_lens)[0], loss
    )


def test_label_smoothing_follows_the_nemo_definition():
    v, eps = 40, 0.1
    logits, targets = torch.randn(2, 5, v), torch.randint(1, v, (2, 5))
    logp = logits.log_softmax(-1)
    s = v * eps / (v - 1)
    nll = (1 - s) * logp.gather(-1, targets[..., None])[..., 0] + s * logp.mean(-1)
    loss, _ = cross_entropy_loss(logits, targets, label_smoothing=eps)
    torch.testing.assert_close(loss, -nll.mean())
    with pytest.raises(ValueError):
        cross_entropy_loss(logits, targets, label_smoothing=1.0)


def test_ctc_loss_is_torch_ctc_per_target_token():
    log_probs = torch.randn(2, 12, 9).log_softmax(-1)
    lens, targets, target_lens = torch.tensor([12, 9]), torch.randint(1, 9, (2, 4)), torch.tensor([4, 2])
    loss, count = ctc_loss(log_probs, lens, targets, target_lens)
    expected = F.ctc_loss(log_probs.transpose(0, 1), targets, lens, target_lens, reduction="sum") / 6
    torch.testing.assert_close(loss, expected)
    assert count.item() == 6
