"""Incremental decoder: a preallocated self-attention K/V cache and cross-attention K/V computed once.

Dimensions: B rows (utterances, or utterances x beams), T' encoder frames, D decoder width, H heads,
Dh = D / H, L decoder layers, N new tokens in one call, S cache capacity (prompt + longest output),
V vocabulary.

One decoding step with the cache costs O(layers x (D² + S·D)) per row: the new token's projections and one
attention read over the cached keys. Without it (``fastaed.train.evaluate.greedy_decode``) every step re-runs
the whole prefix, and a NeMo-style decoder (it caches hidden states, not keys and values) re-projects the
whole prefix and every encoder frame at every step; ``fastaed bench rtfx`` measures both against this one.

All rows of a cache sit at the same position: prompts have a fixed length (the Canary prompt is 5 tokens)
and every call appends the same number of tokens to every row, so no self-attention mask is needed. Rows
that are done leave the cache through :meth:`DecoderCache.select` ("compaction"), after which they cost
nothing; beam search uses the same call to reorder rows by their parent beam.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from fastaed.model import EncoderDecoderModel
from fastaed.model.attention import lengths_to_mask, merge_heads, sinusoidal_encoding, split_heads


@dataclass
class DecoderCache:
    """Decoder state: ``keys``/``values`` (L, B, H, S, Dh); ``memory`` K, V per layer (B, H, T', Dh)."""

    keys: Tensor
    values: Tensor
    memory: list[tuple[Tensor, Tensor]]
    memory_mask: Tensor | None  # (B, 1, 1, T') True = valid frame; None when every frame is valid
    positions: Tensor  # (S, D) sinusoidal encodings of every position, computed once (not per step)
    length: int = 0  # positions filled (the same for every row)

    @property
    def batch_size(self) -> int:
        return self.keys.shape[1]

    @property
    def capacity(self) -> int:
        return self.keys.shape[3]

    def select(self, rows: Tensor) -> DecoderCache:
        """A cache holding ``rows`` (B',) int64 of this one, in that order (repeats allowed: beam search).

        Only the filled positions are copied, so compaction costs one read of what a step already reads.
        """
        n = self.length
        keys = self.keys.new_empty((self.keys.shape[0], len(rows), *self.keys.shape[2:]))
        values = torch.empty_like(keys)
        keys[:, :, :, :n] = self.keys[:, rows, :, :n]
        values[:, :, :, :n] = self.values[:, rows, :, :n]
        memory = [(k[rows], v[rows]) for k, v in self.memory]
        mask = self.memory_mask[rows] if self.memory_mask is not None else None
        return DecoderCache(keys, values, memory, mask, self.positions, n)


def start(model: EncoderDecoderModel, enc: Tensor, enc_lens: Tensor, capacity: int) -> DecoderCache:
    """An empty cache for ``enc`` (B, T', De) encoder states with ``enc_lens`` (B,) valid frames.

    ``capacity``: the most tokens a row will hold (prompt + generated). The encoder states are projected to
    the decoder width and to every layer's cross-attention keys/values here, once per utterance.
    """
    dec = model.decoder
    memory = dec.project_memory(model.projection(enc))
    k0 = memory[0][0]
    b, h, _, dh = k0.shape
    shape = (len(dec.layers), b, h, capacity, dh)
    keys = k0.new_empty(shape)
    positions = sinusoidal_encoding(torch.arange(capacity, device=enc.device), dec.cfg.d_model).to(k0.dtype)
    # SDPA's mask layout, built once; no mask at all when nothing is padded (batch 1, equal lengths).
    mask = lengths_to_mask(enc_lens, enc.shape[1])[:, None, None, :]
    return DecoderCache(keys, torch.empty_like(keys), memory, None if bool(mask.all()) else mask, positions)


def step(model: EncoderDecoderModel, cache: DecoderCache, tokens: Tensor) -> Tensor:
    """Feed ``tokens`` (B, N) at positions ``cache.length ...``; returns the last position's logits (B, V).

    N > 1 is the prompt pre-fill and needs an empty cache (causal attention inside the new tokens); N = 1
    is one decoding step. Mutates ``cache`` (fills N positions). Call in eval mode (no dropout here).
    """
    dec = model.decoder
    n, start_pos = tokens.shape[1], cache.length
    if start_pos + n > cache.capacity:
        raise ValueError(f"cache holds {cache.capacity} positions; {start_pos} filled, {n} more requested")
    if n > 1 and start_pos > 0:
        raise ValueError("several tokens at once only into an empty cache (the prompt pre-fill)")
    end = start_pos + n
    # = dec.embed(tokens, positions), with the position table looked up instead of recomputed
    x = dec.embed_norm(dec.embedding(tokens) + cache.positions[None, start_pos:end])  # (B, N, D)
    for i, layer in enumerate(dec.layers):
        attn = layer.self_attn
        q, k, v = (split_heads(t, attn.n_heads) for t in attn.qkv(layer.self_norm(x)).chunk(3, dim=-1))
        cache.keys[i, :, :, start_pos:end] = k
        cache.values[i, :, :, start_pos:end] = v
        out = F.scaled_dot_product_attention(
            q, cache.keys[i, :, :, :end], cache.values[i, :, :, :end], is_causal=n > 1
        )  # (B, H, N, Dh)
        x = x + attn.out(merge_heads(out))
        cross = layer.cross_attn  # = cross(cross_norm(x), memory[i], mask) with the mask already in layout
        q = split_heads(cross.q(layer.cross_norm(x)), cross.n_heads)
        out = F.scaled_dot_product_attention(q, *cache.memory[i], attn_mask=cache.memory_mask)
        x = x + cross.out(merge_heads(out))
        x = x + layer.ff(layer.ff_norm(x))
    cache.length = end
    return dec.logits(x[:, -1:])[:, 0]
