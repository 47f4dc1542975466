"""int8 inference: an int8 layer stays within its quantization step of the float product, a quantized model
(Whisper and FastConformer layouts) keeps no float linear layer yet tracks the float model's logits, its
decoding steps agree with its own teacher forcing, and the option is checked where it is given."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from fastaed.decode.search import greedy_search
from fastaed.decode.transcribe import DecodeConfig
from fastaed.model import EncoderDecoderModel, build_model
from fastaed.model.quantize import Int8Linear, int8_available, is_quantized, quantize_int8
from tests import stepped_and_forced
from tests import whisper_fixtures as wf

pytestmark = pytest.mark.skipif(not int8_available(), reason="no int8 linear kernels in this torch build")


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.detach().flatten(), b.detach().flatten(), dim=0))


def test_int8_linear_is_within_a_quantization_step_of_the_float_product():
    torch.manual_seed(0)
    layer = nn.Linear(64, 48)
    x = torch.randn(5, 7, 64)
    got, want = Int8Linear(layer.weight, layer.bias)(x), layer(x)
    assert got.shape == want.shape == (5, 7, 48)
    # Error of one product: K terms, each off by at most half a weight step times |x| plus half an input
    # step times |w|; the bound below is that sum, loose by the 7-bit activations.
    w_step = layer.weight.abs().amax(1) / 127
    x_step = (x.max() - x.min()) / 127
    bound = 64 * (0.5 * w_step * x.abs().max() + x_step * layer.weight.abs().max())
    assert bool(((got - want).abs() <= bound).all())
    assert _cosine(got, want) > 0.999


def test_a_rows_int8_result_does_not_depend_on_its_batch():
    """Several rows are quantized each by its own range and summed exactly in int32: a row gives the same
    bits beside any other rows (an outlier row or padding cannot coarsen its neighbours)."""
    torch.manual_seed(2)
    layer = Int8Linear(torch.randn(24, 40), torch.randn(24))
    x = torch.randn(6, 40)
    loud = torch.cat([x[:3], 1000 * torch.randn(1, 40)])  # the first rows beside an outlier row
    assert torch.equal(layer(x)[:3], layer(loud)[:3])
    assert torch.equal(layer(x.view(2, 3, 40)).view(6, 24), layer(x))


def test_int8_linear_without_bias_and_on_one_row():
    torch.manual_seed(1)
    w = torch.randn(300, 32)
    x = torch.randn(1, 32)
    assert _cosine(Int8Linear(w, None)(x), x @ w.t()) > 0.999


def _models() -> list[tuple[str, EncoderDecoderModel, torch.Tensor, torch.Tensor]]:
    torch.manual_seed(0)
    whisper = wf.random_model(331, n_mels=16, d_model=32, heads=2, text_positions=48).eval()
    canary = build_model("test", vocab_size=40).eval()
    feats_w, lens_w = torch.randn(2, 30, 16), torch.tensor([30, 21])
    n_mels = canary.config.encoder.n_mels
    feats_c, lens_c = torch.randn(2, 64, n_mels), torch.tensor([64, 40])
    return [("whisper", whisper, feats_w, lens_w), ("fastconformer", canary, feats_c, lens_c)]


@pytest.mark.parametrize("index", [0, 1], ids=["whisper", "fastconformer"])
@torch.no_grad()
def test_quantized_model_has_no_float_linear_and_tracks_the_float_logits(index):
    name, model, feats, lens = _models()[index]
    quantized = quantize_int8(copy.deepcopy(model))
    assert is_quantized(quantized) and not is_quantized(model)
    plain = [
        n for n, m in quantized.named_modules() if type(m) is nn.Linear and not n.endswith("decoder.output")
    ]
    assert plain == [], plain
    tokens = torch.randint(0, model.config.vocab_size, (2, 6))
    enc, enc_lens = model.encode(feats, lens)
    qenc, qenc_lens = quantized.encode(feats, lens)
    assert torch.equal(enc_lens, qenc_lens)
    assert _cosine(qenc[0], enc[0]) > 0.99, name
    logits, qlogits = model.decode(enc, enc_lens, tokens), quantized.decode(qenc, qenc_lens, tokens)
    assert _cosine(qlogits, logits) > 0.99, name


@torch.no_grad()
def test_quantized_steps_agree_with_their_own_teacher_forcing():
    """The cached step path (int8 output head) and teacher forcing (float output matrix) of one quantized
    model see the same int8 blocks: their logits differ only by the head's rounding."""
    _, model, feats, lens = _models()[0]
    quantized = quantize_int8(copy.deepcopy(model))
    enc, enc_lens = quantized.encode(feats, lens)
    tokens = torch.randint(0, model.config.vocab_size, (2, 5))
    _, pairs = stepped_and_forced(quantized, enc, enc_lens, tokens, prefill=2)
    assert len(pairs) == 4
    for stepped, forced in pairs:
        assert _cosine(stepped, forced) > 0.999
    out = greedy_search(quantized, enc, enc_lens, tokens[:, :2], eos_id=0)
    assert len(out) == 2


def test_quantizing_keeps_the_float_weights_for_lookup_and_state():
    _, model, _, _ = _models()[0]
    before = {k: v.clone() for k, v in model.state_dict().items() if "embedding" in k}
    quantized = quantize_int8(copy.deepcopy(model))
    assert quantized.decoder.step_head is not None
    for k, v in before.items():
        assert torch.equal(quantized.state_dict()[k], v)


def test_decode_config_takes_int8_and_refuses_other_precisions():
    assert DecodeConfig(dtype="int8").dtype == "int8"
    with pytest.raises(ValueError, match="int8"):
        DecodeConfig(dtype="int4")  # type: ignore[arg-type]
