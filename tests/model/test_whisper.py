"""The Whisper family in fastaed.model: padding invariance of unpadded input, cached == teacher-forced
decoding, the layout (no key bias, tied output, learned positions), published sizes."""

from __future__ import annotations

import pytest
import torch

from fastaed.decode.search import greedy_search
from fastaed.model import EncoderDecoderModel, build_model, preset_info, whisper_sinusoids
from tests import whisper_fixtures as wf

VOCAB = 331


@pytest.fixture(scope="module")
def model() -> EncoderDecoderModel:
    return wf.random_model(VOCAB, n_mels=16, d_model=32, heads=2, text_positions=48)


def test_unpadded_batch_encodes_each_row_as_if_alone(model):
    torch.manual_seed(1)
    lens = torch.tensor([37, 20, 9])
    feats = torch.randn(3, 37, 16)
    feats[1, 20:] = 5.0  # garbage beyond a row's length must not matter
    feats[2, 9:] = -3.0
    enc, enc_lens = model.encode(feats, lens)
    assert enc_lens.tolist() == [19, 10, 5]
    for i, n in enumerate(lens.tolist()):
        alone, alone_len = model.encode(feats[i : i + 1, :n], lens[i : i + 1])
        torch.testing.assert_close(enc[i, : int(alone_len)], alone[0], atol=1e-5, rtol=1e-5)
        assert bool((enc[i, int(alone_len) :] == 0).all())


def test_greedy_with_cache_equals_argmax_of_teacher_forcing(model):
    torch.manual_seed(2)
    feats, lens = torch.randn(2, 30, 16), torch.tensor([30, 22])
    enc, enc_lens = model.encode(feats, lens)
    prompts = torch.tensor([[301, 303, 305], [301, 304, 305]])
    for kind in ("kv", "hidden"):
        hyps = greedy_search(model, enc, enc_lens, prompts, eos_id=300, cache_kind=kind)
        for row, hyp in enumerate(hyps):
            seq = prompts[row].tolist()
            for token in hyp.tokens:
                tokens = torch.tensor([seq])
                logits = model.decode(
                    enc[row : row + 1, : int(enc_lens[row])], enc_lens[row : row + 1], tokens
                )
                assert int(logits[0, -1].argmax()) == token
                seq.append(token)


def test_suppressed_ids_are_never_emitted(model):
    torch.manual_seed(3)
    enc, enc_lens = model.encode(torch.randn(1, 30, 16), torch.tensor([30]))
    prompt = torch.tensor([[301]])
    free = greedy_search(model, enc, enc_lens, prompt, eos_id=300)[0].tokens
    assert free, "a random model emits something"
    banned = torch.tensor(sorted(set(free)))
    again = greedy_search(model, enc, enc_lens, prompt, eos_id=300, suppress=banned)[0].tokens
    assert not set(again) & set(banned.tolist())
    first = greedy_search(model, enc, enc_lens, prompt, eos_id=300, suppress_at_start=banned[:1])[0].tokens
    assert first[0] != int(banned[0])


def test_whisper_layout_has_no_key_bias_and_a_tied_output(model):
    names = dict(model.named_parameters())
    assert "decoder.output_bias" not in names and model.decoder.output is None
    assert model.encoder.layers[0].attn.qkv.bias is None
    assert names["encoder.layers.0.attn.qv_bias"].shape == (64,)  # query + value biases only
    assert names["decoder.positions.weight"].shape == (48, 32)
    with pytest.raises(ValueError, match="learned 48"):
        model.decoder.position_table(49, torch.device("cpu"))


def test_encoder_refuses_more_frames_than_its_positions():
    small = wf.random_model(VOCAB, n_mels=16, d_model=32, heads=2, audio_positions=10)
    with pytest.raises(ValueError, match="10 positions"):
        small.encode(torch.randn(1, 21, 16), torch.tensor([21]))


def test_sinusoids_are_whispers_sin_then_cos_halves():
    table = whisper_sinusoids(1500, 384)
    assert table.shape == (1500, 384)
    torch.testing.assert_close(table[0, :192], torch.zeros(192))
    torch.testing.assert_close(table[0, 192:], torch.ones(192))
    # The slowest channel has timescale 10000: position 1500 turns it by 0.15 rad.
    assert abs(float(table[1499, 191]) - torch.sin(torch.tensor(1499 / 10000.0)).item()) < 1e-5


@pytest.mark.parametrize(
    ("name", "vocab", "params"), [("whisper-tiny", 51864, 37_184_256), ("whisper-base", 51865, 71_825_920)]
)
def test_presets_match_the_published_sizes(name, vocab, params):
    # The published counts (37.76M, 72.59M) include the encoder's fixed sinusoid table (1500 x D).
    info = preset_info(name, vocab)
    assert info["params"] == params
    d = 384 if name == "whisper-tiny" else 512
    assert round((params + 1500 * d) / 1e6, 2) in (37.76, 72.59)
    assert build_model(name, vocab).config.decoder.max_len == 448
