"""Swap a model's linear layers for an inference kernel, in place: what int8 (``fastaed.model.quantize``) and
oneDNN (``fastaed.model.onednn``) both do, written once.

The walk knows the model's two special cases. Whisper's fused attention projections carry no key bias (their
``qv_bias`` holds the query and value parts), so the swapped layer gets the full bias folded in once and
``qv_bias`` / ``v_bias`` is dropped. A decoder's output matrix (the tied embedding, or ``decoder.output``) is
left in place, since teacher forcing and token lookup read it as a float matrix; decoding steps get their own
swapped copy of it as ``TransformerDecoder.step_head``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from fastaed.model.attention import CrossAttention, SelfAttention
from fastaed.model.decoder import TransformerDecoder


def swap_linear_layers(
    model: nn.Module,
    make: Callable[[Tensor, Tensor | None], nn.Module],
    take: Callable[[Tensor], bool] = lambda weight: True,
) -> nn.Module:
    """Replace every ``nn.Linear`` of ``model`` whose weight ``take`` accepts by ``make(weight, bias)``
    (weight (N, K), bias (N,) or None), the fused Whisper projections and the decoder's step head included
    (module docstring). Returns ``model``."""
    with torch.no_grad():
        for module in list(model.modules()):
            if isinstance(module, SelfAttention) and module.qv_bias is not None and take(module.qkv.weight):
                module.qkv = make(module.qkv.weight, module.bias)  # type: ignore[assignment]
                module.qv_bias = None
            elif isinstance(module, CrossAttention) and module.v_bias is not None and take(module.kv.weight):
                module.kv = make(module.kv.weight, module.memory_bias)  # type: ignore[assignment]
                module.v_bias = None
            elif isinstance(module, TransformerDecoder) and take(module.output_weight):
                module.step_head = make(module.output_weight, module.output_bias)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            is_output = isinstance(parent, TransformerDecoder) and name == "output"
            if type(child) is nn.Linear and not is_output and take(child.weight):
                setattr(parent, name, make(child.weight, child.bias))
    return model
