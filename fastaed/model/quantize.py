"""int8 inference on CPU: every linear layer runs on int8 weights and int8 activations.

Scheme (dynamic quantization, as CTranslate2's ``int8`` compute type): each weight matrix is quantized once,
symmetric, per output channel (``scale_n = max|W_n| / 127``); each call quantizes its input on the fly from
the call's own range (PyTorch's dynamic linear: asymmetric, per tensor) and the product accumulates in int32
on FBGEMM's kernels (VNNI where the CPU has it), then is rescaled to float32 with the bias added. Everything
that is not a matrix product (convolutions, norms, softmax, attention itself) stays float32.

Why this and not weight-only int8: measured on 2 cores of this project's CPU, a (1, 384) x (384, 51864)
product (Whisper's output layer, one decoding step at batch 1) takes 1.8 ms dynamic int8 against 3.7 ms
float32, while ``torch._weight_int8pack_mm`` (int8 weights, float activations) took 17 ms; at encoder shapes
(1500 x 384 x 1536) dynamic int8 is 4x faster than float32 and weight-only 30x slower. Both halves of the
decode time (the encoder's big products and the decoder's per-token matrix-vector products) shrink.

Batch effect: the activation range is per call, so a row's quantization step depends on the other rows of
its batch (float32 decoding does not have this). Transcripts can therefore differ between batch sizes by the
rounding of an int8 step; ``fastaed bench whisper`` reports int8 WER per batch size.

The packed weights are not parameters: a quantized model is for inference only (no state dict of its own,
no ``.to(device)``); quantize a float32 model after loading it (:func:`quantize_int8`).
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

# 7-bit activations (PyTorch's default for x86 dynamic linears): without VNNI the int8 kernels add byte pairs
# into a saturating int16, which a full 8-bit range can overflow; the step it costs is below the weights'.
REDUCE_RANGE = True


class Int8Linear(nn.Module):
    """y = x · Wᵀ + b with W held as per-channel int8 (packed for FBGEMM) and x quantized per call.

    weight: (N, K) float; bias: (N,) or None. forward: (..., K) float32 -> (..., N) float32.
    """

    def __init__(self, weight: Tensor, bias: Tensor | None):
        super().__init__()
        weight = weight.detach().float().cpu()
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        scale = (weight.abs().amax(dim=1) / 127.0).clamp(min=1e-12).double()
        zero = torch.zeros(self.out_features, dtype=torch.long)
        with warnings.catch_warnings():  # quantized tensor creation is marked deprecated; the kernels are not
            warnings.simplefilter("ignore")
            q = torch.quantize_per_channel(weight, scale, zero, 0, torch.qint8)
            b = None if bias is None else bias.detach().float().cpu()
            self._packed = torch.ops.quantized.linear_prepack(q, b)

    def forward(self, x: Tensor) -> Tensor:
        return torch.ops.quantized.linear_dynamic(x.contiguous(), self._packed, REDUCE_RANGE)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


def int8_available() -> bool:
    """Whether this PyTorch build has the int8 linear kernels (x86 FBGEMM/oneDNN or ARM QNNPACK)."""
    try:
        engines = torch.backends.quantized.supported_engines
        return any(e in engines for e in ("x86", "fbgemm", "onednn", "qnnpack")) and hasattr(
            torch.ops.quantized, "linear_dynamic"
        )
    except (AttributeError, RuntimeError):
        return False


def quantize_int8(model: nn.Module) -> nn.Module:
    """Replace, in place, every linear layer of a float CPU ``model`` by an :class:`Int8Linear`; returns it.

    Fused attention projections whose key part has no bias (Whisper) get their full bias folded into the
    int8 layer. A decoder's output matrix (the tied embedding) gains an int8 copy for decoding steps
    (``TransformerDecoder.quantized_head``); the float embedding stays for token lookup and teacher forcing.
    """
    if not int8_available():
        raise RuntimeError(f"this PyTorch build ({torch.__version__}) has no int8 linear kernels")
    param = next(model.parameters())
    if param.device.type != "cpu":
        raise ValueError(f"int8 inference runs on CPU; the model is on {param.device}")
    model.float().eval()
    from fastaed.model.attention import CrossAttention, SelfAttention
    from fastaed.model.decoder import TransformerDecoder

    for module in list(model.modules()):
        if isinstance(module, SelfAttention) and module.qv_bias is not None:
            module.qkv = Int8Linear(module.qkv.weight, module.bias)  # type: ignore[assignment]
            module.qv_bias = None
        elif isinstance(module, CrossAttention) and module.v_bias is not None:
            module.kv = Int8Linear(module.kv.weight, module.memory_bias)  # type: ignore[assignment]
            module.v_bias = None
        elif isinstance(module, TransformerDecoder):
            module.quantized_head = Int8Linear(module.output_weight, module.output_bias)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear and not (isinstance(parent, TransformerDecoder) and name == "output"):
                setattr(parent, name, Int8Linear(child.weight, child.bias))
    return model


def is_quantized(model: nn.Module) -> bool:
    """Whether :func:`quantize_int8` has been applied to ``model``."""
    return any(isinstance(m, Int8Linear) for m in model.modules())
