"""float32 on oneDNN: a oneDNN layer computes F.linear's product up to rounding, a switched model keeps its
weights (shared, not copied) and decodes the same tokens as the default path (Whisper and FastConformer
layouts, greedy and beam), its cached steps agree with teacher forcing, and loading for inference switches
only float32 CPU models, unless told not to."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fastaed.decode.search import beam_search, greedy_search
from fastaed.decode.transcribe import DecodeConfig, load_for_inference
from fastaed.model import EncoderDecoderModel, build_model
from fastaed.model.onednn import OneDNNLinear, onednn_available, use_onednn, uses_onednn
from fastaed.model.quantize import is_quantized
from tests import stepped_and_forced
from tests import whisper_fixtures as wf

pytestmark = pytest.mark.skipif(not onednn_available(), reason="no oneDNN linear kernel in this torch build")


@pytest.mark.parametrize("shape", [(1, 37), (3, 5, 37), (16, 37)])
@pytest.mark.parametrize("bias", [True, False])
def test_onednn_linear_equals_the_default_product_up_to_rounding(shape, bias):
    torch.manual_seed(0)
    layer = nn.Linear(37, 53, bias=bias)
    x = torch.randn(*shape)
    fast = OneDNNLinear(layer.weight, layer.bias)
    got, want = fast(x), F.linear(x, layer.weight, layer.bias)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # a non-contiguous input (a transposed view) gives the same product
    xt = x.reshape(-1, 37).t().contiguous().t()
    torch.testing.assert_close(fast(xt), F.linear(xt, layer.weight, layer.bias), rtol=1e-5, atol=1e-5)


def _models() -> list[tuple[EncoderDecoderModel, torch.Tensor, torch.Tensor, torch.Tensor]]:
    torch.manual_seed(3)
    whisper = wf.random_model(331, n_mels=16, d_model=32, heads=2, text_positions=48).eval()
    canary = build_model("test", vocab_size=40).eval()
    feats_w, lens_w = torch.randn(3, 30, 16), torch.tensor([30, 21, 9])
    n_mels = canary.config.encoder.n_mels
    feats_c, lens_c = torch.randn(3, 64, n_mels), torch.tensor([64, 40, 17])
    prompt_w, prompt_c = torch.tensor([[1, 2]] * 3), torch.tensor([[1, 2, 3]] * 3)
    return [(whisper, feats_w, lens_w, prompt_w), (canary, feats_c, lens_c, prompt_c)]


@pytest.mark.parametrize("index", [0, 1], ids=["whisper", "fastconformer"])
@torch.no_grad()
def test_switched_model_decodes_the_default_paths_tokens(index):
    model, feats, lens, prompts = _models()[index]
    fast = use_onednn(copy.deepcopy(model), min_weight_elements=0)
    assert uses_onednn(fast) and not uses_onednn(model)
    assert [n for n, m in fast.named_modules() if type(m) is nn.Linear] == []
    enc, enc_lens = model.encode(feats, lens)
    fenc, fenc_lens = fast.encode(feats, lens)
    torch.testing.assert_close(fenc, enc, rtol=1e-4, atol=1e-4)
    eos = model.config.vocab_size - 1
    want = greedy_search(model, enc, enc_lens, prompts, eos)
    got = greedy_search(fast, enc, enc_lens, prompts, eos)
    assert [h.tokens for h in got] == [h.tokens for h in want]
    assert [h.logprob for h in got] == pytest.approx([h.logprob for h in want], abs=1e-3)
    want_beam = beam_search(model, enc, enc_lens, prompts, eos, beam_size=3)
    got_beam = beam_search(fast, enc, enc_lens, prompts, eos, beam_size=3)
    assert [[h.tokens for h in n] for n in got_beam] == [[h.tokens for h in n] for n in want_beam]


@torch.no_grad()
def test_switched_steps_agree_with_their_own_teacher_forcing():
    """The step head (oneDNN on the tied embedding matrix) and teacher forcing (the same matrix through the
    decoder's classifier) give the same logits up to rounding, position by position."""
    model, feats, lens, _ = _models()[0]
    fast = use_onednn(copy.deepcopy(model), min_weight_elements=0)
    enc, enc_lens = fast.encode(feats, lens)
    tokens = torch.randint(0, model.config.vocab_size, (3, 6))
    _, pairs = stepped_and_forced(fast, enc, enc_lens, tokens, prefill=2)
    assert len(pairs) == 5
    for stepped, forced in pairs:
        torch.testing.assert_close(stepped, forced, rtol=1e-4, atol=1e-4)


def test_switching_shares_the_weights_and_keeps_them_unchanged():
    model, _, _, _ = _models()[0]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = use_onednn(model, min_weight_elements=0)  # in place
    params = {id(p) for p in fast.parameters()}
    assert id(fast.decoder.step_head.weight) in params  # the embedding itself, no transposed copy
    state = fast.state_dict()
    for key, value in before.items():
        if key in state:
            assert torch.equal(state[key], value), key
    # the key-less Whisper bias is folded into one full bias: zeros in the key slice, q/v parts kept
    attn = fast.decoder.layers[0].self_attn
    d = attn.qkv.in_features
    assert attn.qv_bias is None
    assert torch.equal(attn.qkv.bias[d : 2 * d], torch.zeros(d))
    assert torch.equal(attn.qkv.bias[:d], before["decoder.layers.0.self_attn.qv_bias"][:d])


def test_only_layers_of_at_least_the_threshold_switch():
    """Small matrices keep the BLAS call (oneDNN's set-up cost does not pay there): a layer switches when its
    weight holds at least the threshold, and the output layer gets a step head only when it does."""
    model, _, _, _ = _models()[1]
    sizes = sorted({m.weight.numel() for m in model.modules() if type(m) is nn.Linear})
    cut = sizes[len(sizes) // 2]
    fast = use_onednn(copy.deepcopy(model), min_weight_elements=cut)
    switched = {m.weight.numel() for m in fast.modules() if isinstance(m, OneDNNLinear)}
    kept = {m.weight.numel() for m in fast.modules() if type(m) is nn.Linear}
    assert switched and kept
    assert min(switched) >= cut > max(kept)
    assert (fast.decoder.step_head is not None) == (fast.decoder.output_weight.numel() >= cut)
    assert not uses_onednn(use_onednn(copy.deepcopy(model)))  # the test model: every matrix under 1 MiB


def test_switching_refuses_a_model_that_is_not_float32_on_cpu():
    model, _, _, _ = _models()[1]
    with pytest.raises(ValueError, match="float32 on CPU"):
        use_onednn(copy.deepcopy(model).to(torch.bfloat16))


@pytest.mark.parametrize(
    ("dtype", "cpu_linear", "expect"),
    [("fp32", "onednn", True), ("fp32", "default", False), ("int8", "onednn", False)],
)
def test_loading_for_inference_switches_float32_cpu_models_only(
    tmp_path, monkeypatch, dtype, cpu_linear, expect
):
    monkeypatch.setattr("fastaed.model.onednn.MIN_WEIGHT_ELEMENTS", 0)  # the tiny checkpoint's layers too
    ckpt = wf.checkpoint(tmp_path, multilingual=False)
    loaded, _, _, _ = load_for_inference(ckpt, None, "cpu", dtype, cpu_linear=cpu_linear)
    assert uses_onednn(loaded) is expect
    assert is_quantized(loaded) is (dtype == "int8")


def test_decode_config_takes_the_linear_backend_and_refuses_others():
    assert DecodeConfig().cpu_linear == "onednn"
    assert DecodeConfig(cpu_linear="default").cpu_linear == "default"
    with pytest.raises(ValueError, match="cpu_linear"):
        DecodeConfig(cpu_linear="mkl")  # type: ignore[arg-type]
