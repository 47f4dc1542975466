"""Decoder caches: what the decoder keeps between decoding steps, in two kinds.

Dimensions: B rows (utterances, or utterances x beams), T encoder frames, D decoder width, H heads,
Dh = D / H, L decoder layers, N new tokens in one step, S capacity (prompt + longest output), S' positions
filled so far.

Both kinds run the one decoder forward (``DecoderBlock.forward``, the one teacher forcing uses), through
:meth:`DecoderCache.layer`: each layer's attention asks its cache for keys and values
(:class:`fastaed.model.attention.LayerCache`). They differ only in what they keep:

* :class:`KVCache` (``"kv"``, the fast path): self-attention keys/values in one preallocated
  (L, B, H, S, Dh) pair, filled in place, and the cross-attention keys/values of every layer, projected once
  per utterance. One step costs O(L x (D² + S·D)) per row: the new token's projections and one attention
  read over the cached keys.
* :class:`HiddenStateCache` (``"hidden"``): what NeMo's ``TransformerDecoder`` keeps in its
  ``decoder_mems_list``: each layer's input states, before the layer norm. Every step re-normalises the
  whole prefix and re-projects it to keys/values, and re-projects every encoder frame to cross-attention
  keys/values: O(L x (S + T) x D²) per row. It is the baseline of ``fastaed bench rtfx``.

All rows of a cache sit at the same position: prompts have a fixed length (the Canary prompt is 5 tokens)
and every step appends the same number of tokens to every row, so no self-attention mask is needed. Rows
that are done leave the cache through :meth:`DecoderCache.select` ("compaction"), after which they cost
nothing; beam search uses the same call to reorder rows by their parent beam.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fastaed.model.attention import CrossAttention, LayerCache, SelfAttention, split_heads

CacheKind = Literal["kv", "hidden"]
MemoryKV = list[tuple[Tensor, Tensor]]  # per layer: cross-attention keys and values, (B, H, T, Dh) each


@dataclass(kw_only=True)
class DecoderCache:
    """What both kinds share: the encoder mask, the position table and how many positions are filled."""

    memory_mask: Tensor | None  # (B, 1, 1, T) True = valid frame; None when every frame is valid
    positions: Tensor  # (S, D) sinusoidal encodings of every position, computed once (not per step)
    length: int = 0  # positions filled (the same for every row)

    @property
    def capacity(self) -> int:
        return self.positions.shape[0]

    @property
    def batch_size(self) -> int:
        raise NotImplementedError

    def layer(self, index: int) -> LayerCache:
        """Layer ``index``'s view, handed to its attention modules."""
        raise NotImplementedError

    def select(self, rows: Tensor) -> DecoderCache:
        """A cache holding ``rows`` (B',) int64 of this one, in that order (repeats allowed: beam search)."""
        raise NotImplementedError

    def _selected_mask(self, rows: Tensor) -> Tensor | None:
        return self.memory_mask[rows] if self.memory_mask is not None else None


@dataclass(kw_only=True)
class KVCache(DecoderCache):
    """Self-attention ``keys``/``values`` (L, B, H, S, Dh), preallocated; ``memory``: cross K/V per layer."""

    keys: Tensor
    values: Tensor
    memory: MemoryKV

    @classmethod
    def empty(cls, memory: MemoryKV, memory_mask: Tensor | None, positions: Tensor) -> KVCache:
        """An empty cache for ``memory`` (per-layer cross-attention K/V), with room for every position."""
        k0 = memory[0][0]
        b, h, _, dh = k0.shape
        keys = k0.new_empty((len(memory), b, h, positions.shape[0], dh))
        return cls(
            keys=keys,
            values=torch.empty_like(keys),
            memory=memory,
            memory_mask=memory_mask,
            positions=positions,
        )

    @property
    def batch_size(self) -> int:
        return self.keys.shape[1]

    def layer(self, index: int) -> LayerCache:
        return _KVLayer(self, index)

    def select(self, rows: Tensor) -> KVCache:
        """Only the filled positions are copied, so compaction costs one read of what a step already reads."""
        n = self.length
        keys = self.keys.new_empty((self.keys.shape[0], len(rows), *self.keys.shape[2:]))
        values = torch.empty_like(keys)
        keys[:, :, :, :n] = self.keys[:, rows, :, :n]
        values[:, :, :, :n] = self.values[:, rows, :, :n]
        memory = [(k[rows], v[rows]) for k, v in self.memory]
        mask = self._selected_mask(rows)
        return KVCache(
            keys=keys, values=values, memory=memory, memory_mask=mask, positions=self.positions, length=n
        )


@dataclass
class _KVLayer:
    cache: KVCache
    index: int

    def self_inputs(self, norm: nn.Module, x: Tensor) -> Tensor:
        return norm(x)  # only the new positions: the earlier ones live on as keys and values

    def self_kv(self, attn: SelfAttention, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        q, k, v = attn.project(x)  # only the new positions are projected
        start, end = self.cache.length, self.cache.length + x.shape[1]
        keys, values = self.cache.keys[self.index], self.cache.values[self.index]  # (B, H, S, Dh) views
        keys[:, :, start:end] = k
        values[:, :, start:end] = v
        return q, keys[:, :, :end], values[:, :, :end]

    def memory_kv(self, attn: CrossAttention) -> tuple[Tensor, Tensor]:
        return self.cache.memory[self.index]


@dataclass(kw_only=True)
class HiddenStateCache(DecoderCache):
    """``memory`` (B, T, D) encoder states at decoder width; ``states``: per layer, the block inputs (before
    its layer norm) of every position so far, (B, S', D) (None before the first step)."""

    memory: Tensor
    states: list[Tensor | None]

    @property
    def batch_size(self) -> int:
        return self.memory.shape[0]

    def layer(self, index: int) -> LayerCache:
        return _HiddenLayer(self, index)

    def select(self, rows: Tensor) -> HiddenStateCache:
        states = [s[rows] if s is not None else None for s in self.states]
        mask = self._selected_mask(rows)
        return HiddenStateCache(
            memory=self.memory[rows],
            states=states,
            memory_mask=mask,
            positions=self.positions,
            length=self.length,
        )


@dataclass
class _HiddenLayer:
    cache: HiddenStateCache
    index: int
    prefix: Tensor | None = None  # (B, S', D) the normalised prefix of this step, for self_kv

    def self_inputs(self, norm: nn.Module, x: Tensor) -> Tensor:
        prev = self.cache.states[self.index]
        states = x if prev is None else torch.cat([prev, x], dim=1)  # (B, S', D)
        self.cache.states[self.index] = states
        self.prefix = norm(states)  # as NeMo: the whole prefix re-normalised at every step
        return self.prefix[:, -x.shape[1] :]

    def self_kv(self, attn: SelfAttention, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        assert self.prefix is not None, "self_inputs() first"
        # As NeMo's separate query and key/value nets: the query of the new positions, the keys and values
        # of the whole prefix, again. Row slices of the fused weight are views (no copy).
        w, b, d = attn.qkv.weight, attn.bias, x.shape[-1]
        q = F.linear(x, w[:d], None if b is None else b[:d])
        k, v = F.linear(self.prefix, w[d:], None if b is None else b[d:]).chunk(2, dim=-1)
        h = attn.n_heads
        return split_heads(q, h), split_heads(k, h), split_heads(v, h)

    def memory_kv(self, attn: CrossAttention) -> tuple[Tensor, Tensor]:
        return attn.project_memory(self.cache.memory)  # every step, every frame
