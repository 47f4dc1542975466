"""float32 inference on CPU with the large linear layers on oneDNN's inner product, not PyTorch's default.

Why: PyTorch's CPU ``F.linear`` on float32 calls the BLAS (MKL in the PyPI wheel), whose matrix-vector
product runs on one thread and, for the decoder's small matrices, at a third of what the memory can deliver.
A decoding step at batch 1 is nothing but matrix-vector products, so that is where its time went. oneDNN's
inner product (``torch.ops.mkldnn._linear_pointwise``, the kernel PyTorch's own compiler emits for CPU
linear layers) uses both threads and streams the same weights faster (``fastaed bench linear``: per shape
and row count); at 16 rows or 1,500 (the encoder) it is level or faster. ``fastaed bench breakdown``
records the step times with and without.

Only weights of at least ``MIN_WEIGHT_ELEMENTS`` (1 MiB of float32) move: a oneDNN call costs tens of
microseconds more to set up than the BLAS one, which pays only when the weight streams from memory for long
enough (``fastaed bench linear`` times both per shape). The small 192-wide test models (every matrix under
1 MiB, the whole decoder inside the cache) ran slower with every layer switched; Whisper tiny.en's
384 x 384 projections stay on the BLAS too.

Same weights, same arithmetic, another summation order: logits move in the last float bits (about 1e-6
relative), as they do between batch sizes. Whether a transcript changes is checked on real clips by the
benchmarks (``bench whisper``: every transcript against faster-whisper's; ``bench nemo``: tokens against
NeMo's).

The layers keep their parameters (no copy; the state dict keys of the model are unchanged except where a
Whisper projection's key-less bias is folded into one full bias, as ``fastaed.model.quantize`` does), so a
model switched over still teacher-forces and exports; it is meant for inference (the kernel has no fast
backward).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fastaed.model.swap import swap_linear_layers

MIN_WEIGHT_ELEMENTS = 1 << 18  # 1 MiB of float32: smaller layers keep the BLAS call (module docstring)


def onednn_available() -> bool:
    """Whether this PyTorch build has oneDNN's linear kernel for CPU tensors."""
    try:
        return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    except (AttributeError, RuntimeError):
        return False


class OneDNNLinear(nn.Module):
    """y = x · Wᵀ + b on oneDNN. weight: (N, K) float32 parameter (shared, not copied); bias: (N,) or None.

    forward: (..., K) -> (..., N), equal to ``F.linear`` up to float rounding.
    """

    def __init__(self, weight: nn.Parameter, bias: Tensor | None):
        super().__init__()
        self.weight = weight
        self.bias = bias if bias is None or isinstance(bias, nn.Parameter) else nn.Parameter(bias, False)
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]

    def forward(self, x: Tensor) -> Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "none", [], "")

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, onednn"


def use_onednn(model: nn.Module, min_weight_elements: int | None = None) -> nn.Module:
    """Run, in place, every linear layer of a float32 CPU ``model`` whose weight holds at least
    ``min_weight_elements`` (default :data:`MIN_WEIGHT_ELEMENTS`) on oneDNN; returns the model.

    Fused Whisper projections whose key part has no bias get their full bias folded in once (it was
    rebuilt at every call). A decoder's output layer gets a oneDNN step head on the embedding matrix itself
    (``TransformerDecoder.step_head``), which also drops the transposed copy the default path keeps; the
    matrix itself stays for teacher forcing (``fastaed.model.swap``).
    """
    if not onednn_available():
        raise RuntimeError(f"this PyTorch build ({torch.__version__}) has no oneDNN linear kernel")
    param = next(model.parameters())
    if param.device.type != "cpu" or param.dtype != torch.float32:
        raise ValueError(f"oneDNN linears take float32 on CPU; the model is {param.dtype} on {param.device}")

    least = MIN_WEIGHT_ELEMENTS if min_weight_elements is None else min_weight_elements
    return swap_linear_layers(model, OneDNNLinear, lambda weight: weight.numel() >= least)


def uses_onednn(model: nn.Module) -> bool:
    """Whether any linear layer of ``model`` runs on oneDNN (:func:`use_onednn`)."""
    return any(isinstance(m, OneDNNLinear) for m in model.modules())
