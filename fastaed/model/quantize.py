"""int8 inference on CPU: every linear layer runs on int8 weights and int8 activations.

Scheme (dynamic quantization, as CTranslate2's ``int8`` compute type): each weight matrix is quantized once,
symmetric, per output channel (``scale_n = max|W_n| / 127``); each call quantizes its input on the fly and the
products accumulate exactly in int32, then are rescaled to float32 with the bias added. Everything that is
not a matrix product (convolutions, norms, softmax, attention itself) stays float32.

* Several rows (the encoder's frames, a prompt pre-fill, batched decoding steps): every row is quantized by
  its own range (``max|x_r| / 127``, symmetric) and multiplied by ``torch._int_mm``. A row's result therefore
  depends on that row alone, never on the rest of its batch or on padded frames: batching does not change a
  transcript. A range per tensor instead (PyTorch's FBGEMM dynamic linear, tried first) let a few outlier
  frames of Whisper base's encoder set the step for all 1,500: WER on 16 Asterisk prompts went from 4.5% to
  15.2% (per row: 4.5%, as float32).
* One row (a decoding step at batch 1): FBGEMM's dynamic linear, whose per-tensor range is then the row's own;
  its packed weights make the matrix-vector product that a step is made of (Whisper's 51,864 x 384 output
  layer included) 2x faster than float32, where ``torch._int_mm`` is no faster than float32.

Why int8 activations and not weight-only int8: ``torch._weight_int8pack_mm`` (int8 weights, float
activations) measured 5-30x slower than float32 here, at every shape.

The packed weights are not parameters: a quantized model is for inference only (no state dict of its own,
no ``.to(device)``); quantize a float32 model after loading it (:func:`quantize_int8`).
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

from fastaed.model.swap import swap_linear_layers

# One-row products: 7-bit activations (PyTorch's default for x86 dynamic linears): without VNNI the int8
# kernels add byte pairs into a saturating int16, which a full 8-bit range can overflow.
REDUCE_RANGE = True


class Int8Linear(nn.Module):
    """y = x · Wᵀ + b with W held as per-channel int8 and x quantized per call (see the module docstring).

    weight: (N, K) float; bias: (N,) or None. forward: (..., K) float32 -> (..., N) float32.
    """

    def __init__(self, weight: Tensor, bias: Tensor | None):
        super().__init__()
        weight = weight.detach().float().cpu()
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        scale = (weight.abs().amax(dim=1) / 127.0).clamp(min=1e-12)  # (N,)
        q = torch.round(weight / scale[:, None]).to(torch.int8)  # (N, K)
        self.register_buffer("weight_t", q.t().contiguous(), persistent=False)  # (K, N) for torch._int_mm
        self.register_buffer("weight_scale", scale, persistent=False)
        self.register_buffer("bias", None if bias is None else bias.detach().float().cpu(), persistent=False)
        with warnings.catch_warnings():  # quantized tensor creation is marked deprecated; the kernels are not
            warnings.simplefilter("ignore")
            zero = torch.zeros(self.out_features, dtype=torch.long)
            packed = torch.quantize_per_channel(weight, scale.double(), zero, 0, torch.qint8)
            self._packed = torch.ops.quantized.linear_prepack(packed, self.bias)

    def forward(self, x: Tensor) -> Tensor:
        rows = x.reshape(-1, self.in_features)
        if rows.shape[0] == 1:
            return torch.ops.quantized.linear_dynamic(x.contiguous(), self._packed, REDUCE_RANGE)
        step = (rows.abs().amax(dim=1, keepdim=True) / 127.0).clamp(min=1e-12)  # (M, 1): each row's own
        q = torch.round(rows / step).to(torch.int8)
        out = torch._int_mm(q, self.weight_t).float().mul_(step).mul_(self.weight_scale)  # (M, N), exact sums
        if self.bias is not None:
            out.add_(self.bias)
        return out.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


def int8_available() -> bool:
    """Whether this PyTorch build has the int8 linear kernels (x86 FBGEMM/oneDNN or ARM QNNPACK)."""
    try:
        engines = torch.backends.quantized.supported_engines
        kernels = hasattr(torch.ops.quantized, "linear_dynamic") and hasattr(torch, "_int_mm")
        return kernels and any(e in engines for e in ("x86", "fbgemm", "onednn", "qnnpack"))
    except (AttributeError, RuntimeError):
        return False


def quantize_int8(model: nn.Module) -> nn.Module:
    """Replace, in place, every linear layer of a float CPU ``model`` by an :class:`Int8Linear`; returns it.

    Fused attention projections whose key part has no bias (Whisper) get their full bias folded into the
    int8 layer. A decoder's output matrix (the tied embedding) gains an int8 copy for decoding steps
    (``TransformerDecoder.step_head``); the float embedding stays for token lookup and teacher forcing.
    """
    if not int8_available():
        raise RuntimeError(f"this PyTorch build ({torch.__version__}) has no int8 linear kernels")
    param = next(model.parameters())
    if param.device.type != "cpu":
        raise ValueError(f"int8 inference runs on CPU; the model is on {param.device}")
    return swap_linear_layers(model.float().eval(), Int8Linear)


def is_quantized(model: nn.Module) -> bool:
    """Whether :func:`quantize_int8` has been applied to ``model``."""
    return any(isinstance(m, Int8Linear) for m in model.modules())
