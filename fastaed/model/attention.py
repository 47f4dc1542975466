"""Attention: relative-position self-attention for the encoder, SDPA self/cross-attention for the decoder.

Dimensions: B batch, T encoder frames, U decoder tokens, D model width, H heads, Dh = D / H head width,
P = 2T - 1 relative offsets.

Mask convention, used everywhere in ``fastaed.model``: boolean masks are **True = keep** (a valid frame or
token, a key that may be attended), the same meaning as ``scaled_dot_product_attention``'s boolean
``attn_mask``. Lengths are (B,) int64 counts of valid positions; sequences are right-padded.

Encoder attention (Transformer-XL style, Dai et al. 2019, as used by Conformer/FastConformer)::

    scores[i, j] = ((q_i + u) · k_j + (q_i + v) · p_{i-j}) / sqrt(Dh)

with per-layer learned biases u, v of shape (H, Dh) ("untied" across layers) and p the projected sinusoidal
encoding of the relative offset i - j. We still run SDPA: the query is q + u, and the position term
(q + v) · p, realigned by :func:`rel_shift` and divided by sqrt(Dh), goes in as an additive float
``attn_mask`` together with -inf on padded keys. SDPA adds its own q·kᵀ/sqrt(Dh), so the sum is exactly the
formula above, and the softmax/weighted-sum run in one fused kernel.

Decoder attention takes an optional per-layer cache (:class:`LayerCache`, implemented in
``fastaed.model.cache``): without one it attends within the given tokens (teacher forcing); with one, the
cache supplies the keys/values of every position decoded so far and of the encoder memory, so the same
forward serves step-by-step decoding whatever the cache keeps (keys/values, or NeMo-style hidden states).
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def lengths_to_mask(lengths: Tensor, max_len: int) -> Tensor:
    """(B,) lengths -> (B, max_len) bool mask, True on valid positions."""
    positions = torch.arange(max_len, device=lengths.device)
    return positions[None, :] < lengths[:, None]


def sinusoidal_encoding(positions: Tensor, dim: int) -> Tensor:
    """(N,) positions (may be negative) -> (N, dim) float32 encoding, sin on even channels, cos on odd.

    Computed on the fly (cheap next to attention), so no sequence length is ever out of range.
    """
    if dim % 2:
        raise ValueError(f"sinusoidal encoding needs an even width, got {dim}")
    inv_freq = torch.exp(
        torch.arange(0, dim, 2, device=positions.device, dtype=torch.float32) * (-math.log(10000.0) / dim)
    )
    angles = positions.to(torch.float32)[:, None] * inv_freq[None, :]  # (N, dim/2)
    return torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(1)  # (N, dim) interleaved sin/cos


def relative_positions(length: int, device: torch.device | None = None) -> Tensor:
    """Relative offsets T-1, T-2, ..., -(T-1): the order :func:`rel_shift` expects. Shape (2T - 1,)."""
    return torch.arange(length - 1, -length, -1, device=device)


def rel_shift(x: Tensor) -> Tensor:
    """Realign position scores from "per offset" to "per key".

    x: (B, H, T, 2T-1) where x[..., i, c] scores query i against offset T-1-c
    (the order of :func:`relative_positions`).
    Returns (B, H, T, T) with out[..., i, j] = x[..., i, T-1-i+j], the score for offset i - j.

    The pad-and-reshape trick (Transformer-XL) moves each row left by a different amount with a copy and two
    views instead of a gather over a (B, H, T, T) index.
    """
    b, h, t, p = x.shape
    x = F.pad(x, (1, 0))  # (B, H, T, 2T): a zero column in front
    x = x.view(b, h, p + 1, t)  # (B, H, 2T, T): rows now straddle the original rows
    return x[:, :, 1:].reshape(b, h, t, p)[..., :t]  # (B, H, T, 2T-1) -> (B, H, T, T)


def split_heads(x: Tensor, n_heads: int) -> Tensor:
    """(B, L, D) -> (B, H, L, Dh)."""
    b, length, d = x.shape
    return x.view(b, length, n_heads, d // n_heads).transpose(1, 2)  # (B, L, H, Dh) -> (B, H, L, Dh)


def merge_heads(x: Tensor) -> Tensor:
    """(B, H, L, Dh) -> (B, L, D)."""
    b, h, length, dh = x.shape
    return x.transpose(1, 2).reshape(b, length, h * dh)  # (B, L, H, Dh) -> (B, L, D)


class RelPositionMultiHeadAttention(nn.Module):
    """Encoder self-attention with relative positions and untied u/v biases (see the module docstring)."""

    def __init__(self, d_model: int, n_heads: int, dropout_att: float = 0.0):
        super().__init__()
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.dropout_att = dropout_att
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.pos_proj = nn.Linear(d_model, d_model, bias=False)  # per-layer view of the shared encoding
        self.out = nn.Linear(d_model, d_model)
        # Content bias u and position bias v; zero start = plain attention plus a relative-position term.
        self.pos_bias_u = nn.Parameter(torch.zeros(n_heads, self.head_dim))
        self.pos_bias_v = nn.Parameter(torch.zeros(n_heads, self.head_dim))

    def forward(self, x: Tensor, pos_emb: Tensor, key_mask: Tensor) -> Tensor:
        """x: (B, T, D); pos_emb: (2T-1, D) encoding of offsets T-1..-(T-1); key_mask: (B, T) True = valid.

        Returns (B, T, D). Padded query rows get finite but meaningless values (every row keeps at least the
        valid keys, so nothing is NaN as long as each length is >= 1).
        """
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        q, k, v = (split_heads(t, self.n_heads) for t in (q, k, v))  # (B, H, T, Dh) each
        p = split_heads(self.pos_proj(pos_emb)[None], self.n_heads)  # (1, H, 2T-1, Dh)

        u = self.pos_bias_u[None, :, None, :]  # (1, H, 1, Dh)
        bias_v = self.pos_bias_v[None, :, None, :]  # (1, H, 1, Dh)
        pos_scores = rel_shift(torch.matmul(q + bias_v, p.transpose(-1, -2)))  # (B, H, T, T)
        pos_scores = pos_scores / math.sqrt(self.head_dim)
        # -inf on padded keys: SDPA's softmax then gives them exactly zero weight.
        attn_bias = pos_scores.masked_fill(~key_mask[:, None, None, :], float("-inf"))

        out = F.scaled_dot_product_attention(
            q + u, k, v, attn_mask=attn_bias, dropout_p=self.dropout_att if self.training else 0.0
        )  # (B, H, T, Dh)
        return self.out(merge_heads(out))


class LayerCache(Protocol):
    """One decoder layer's decoding state, as its attention modules see it (``fastaed.model.cache``)."""

    def self_inputs(self, norm: nn.Module, x: Tensor) -> Tensor:
        """x: (B, N, D) the block's input at the new positions -> ``norm(x)``, the self-attention input (a
        cache may keep what it needs of x on the way)."""
        ...

    def self_kv(self, attn: SelfAttention, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x: (B, N, D) normalised new positions -> their queries (B, H, N, Dh) and the keys and values of
        every position so far, these included, (B, H, S', Dh) each."""
        ...

    def memory_kv(self, attn: CrossAttention) -> tuple[Tensor, Tensor]:
        """Cross-attention keys and values of the encoder memory, (B, H, T, Dh) each."""
        ...


class SelfAttention(nn.Module):
    """Decoder self-attention through SDPA (causal), or unmasked/key-masked for an encoder (``causal=False``).

    Causality alone also isolates padding: inputs are right-padded, so every key a valid query can see
    (j <= i < length) is itself valid, and ``is_causal=True`` keeps SDPA on its fastest kernels. Padded query
    rows attend to earlier positions (never an empty row, so no NaN); their outputs are ignored by the loss.
    With a cache, every row sits at the same position, so again no mask is needed: new tokens see all cached
    ones, and several new tokens (the prompt pre-fill, into an empty cache) are causal among themselves.

    ``key_bias=False`` (Whisper) drops the key projection's bias: the fused projection then has no bias and
    ``qv_bias`` holds the query and value biases. (A key bias only adds q·b to every score of a query, which
    softmax ignores; a model trained without one is imported exactly either way, this keeps it untrainable.)
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        dropout_att: float = 0.0,
        *,
        causal: bool = True,
        key_bias: bool = True,
    ):
        super().__init__()
        self.n_heads = n_heads
        self.dropout_att = dropout_att
        self.causal = causal
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=key_bias)
        self.qv_bias = None if key_bias else nn.Parameter(torch.zeros(2 * d_model))
        self.out = nn.Linear(d_model, d_model)

    @property
    def bias(self) -> Tensor | None:
        """(3D,) bias of the fused projection (zeros for the keys without ``key_bias``)."""
        if self.qv_bias is None:
            return self.qkv.bias
        return bias_with_zero_key(self.qv_bias, 1, self.qkv.weight.shape[1])

    def project(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x: (B, N, D) -> queries, keys, values, (B, H, N, Dh) each."""
        # Without a separate bias the layer itself runs (the same F.linear; or an int8 layer, which has the
        # whole bias folded in: ``fastaed.model.quantize``).
        qkv = self.qkv(x) if self.qv_bias is None else F.linear(x, self.qkv.weight, self.bias)
        q, k, v = qkv.chunk(3, dim=-1)
        return split_heads(q, self.n_heads), split_heads(k, self.n_heads), split_heads(v, self.n_heads)

    def forward(self, x: Tensor, cache: LayerCache | None = None, key_mask: Tensor | None = None) -> Tensor:
        """x: (B, N, D) -> (B, N, D). ``cache``: attend to the cached positions too (and extend them).
        ``key_mask``: (B, 1, 1, N) True = valid key, for a non-causal (encoder) attention over padded rows."""
        if cache is None:
            q, k, v = self.project(x)
            causal = self.causal
        else:
            q, k, v = cache.self_kv(self, x)  # k, v: (B, H, S', Dh), the N new positions last
            causal = x.shape[1] > 1  # one new token sees every key; a pre-fill starts from an empty cache
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=key_mask,
            is_causal=causal,
            dropout_p=self.dropout_att if self.training else 0.0,
        )  # (B, H, N, Dh)
        return self.out(merge_heads(out))


def bias_with_zero_key(bias_without_key: Tensor, key_index: int, d_model: int) -> Tensor:
    """The full bias of a fused projection whose key part (``key_index``) has none: ((parts-1)·D,) ->
    (parts·D,), zeros in the key's slice."""
    pieces = list(bias_without_key.split(d_model))
    return torch.cat([*pieces[:key_index], bias_without_key.new_zeros(d_model), *pieces[key_index:]])


class CrossAttention(nn.Module):
    """Decoder-to-encoder attention through SDPA.

    Keys and values come from :meth:`project_memory`, separate from :meth:`forward`, so a cache can compute
    them once per utterance (or, as NeMo does, at every step).
    """

    def __init__(self, d_model: int, n_heads: int, dropout_att: float = 0.0, *, key_bias: bool = True):
        super().__init__()
        self.n_heads = n_heads
        self.dropout_att = dropout_att
        self.q = nn.Linear(d_model, d_model)
        self.kv = nn.Linear(d_model, 2 * d_model, bias=key_bias)
        self.v_bias = None if key_bias else nn.Parameter(torch.zeros(d_model))  # see SelfAttention
        self.out = nn.Linear(d_model, d_model)

    @property
    def memory_bias(self) -> Tensor | None:
        """(2D,) bias of the fused key/value projection (zeros for the keys without ``key_bias``)."""
        if self.v_bias is None:
            return self.kv.bias
        return bias_with_zero_key(self.v_bias, 0, self.kv.weight.shape[1])

    def project_memory(self, memory: Tensor) -> tuple[Tensor, Tensor]:
        """memory: (B, T, D) encoder output -> keys and values, (B, H, T, Dh) each."""
        kv = self.kv(memory) if self.v_bias is None else F.linear(memory, self.kv.weight, self.memory_bias)
        k, v = kv.chunk(2, dim=-1)
        return split_heads(k, self.n_heads), split_heads(v, self.n_heads)

    def forward(
        self, x: Tensor, memory: Tensor | None, memory_mask: Tensor | None, cache: LayerCache | None = None
    ) -> Tensor:
        """x: (B, U, D); memory: (B, T, D) encoder states, or None when ``cache`` holds them.

        memory_mask: (B, 1, 1, T) True = valid frame (SDPA's layout: the same frames for every head and
        query), or None when every frame is valid.
        """
        q = split_heads(self.q(x), self.n_heads)  # (B, H, U, Dh)
        if cache is not None:
            k, v = cache.memory_kv(self)
        elif memory is not None:
            k, v = self.project_memory(memory)
        else:
            raise ValueError("cross-attention needs the encoder memory or a cache holding it")
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=memory_mask, dropout_p=self.dropout_att if self.training else 0.0
        )  # (B, H, U, Dh)
        return self.out(merge_heads(out))

    def forward_with_scores(self, x: Tensor, memory: Tensor, memory_mask: Tensor) -> tuple[Tensor, Tensor]:
        """:meth:`forward` without a cache, written out so its attention logits can be returned.

        x: (B, U, D); memory: (B, T, D); memory_mask: (B, 1, 1, T) True = valid frame. Returns the output
        (B, U, D), equal to :meth:`forward`'s up to float rounding, and the float32 scores q·kᵀ/sqrt(Dh)
        before any mask, (B, H, U, T): word alignment normalises them over frames of its own choosing.
        """
        q = split_heads(self.q(x), self.n_heads)  # (B, H, U, Dh)
        k, v = self.project_memory(memory)
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(q.shape[-1])  # (B, H, U, T)
        probs = torch.softmax(scores.masked_fill(~memory_mask, float("-inf")), dim=-1)
        if self.training and self.dropout_att > 0:
            probs = F.dropout(probs, self.dropout_att)
        out = torch.matmul(probs, v)  # (B, H, U, Dh)
        return self.out(merge_heads(out)), scores.float()
