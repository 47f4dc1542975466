"""Pre-LN Transformer decoder with causal self-attention and cross-attention to the encoder.

Dimensions: B batch, U decoder tokens, T encoder frames, D decoder width (Dd), H heads, V vocabulary.
Masks: True = valid (see ``fastaed.model.attention``). Token sequences are right-padded.

Block::

    x = x + SelfAttn(LN(x))                  # causal
    x = x + CrossAttn(LN(x), encoder)        # padded encoder frames masked
    x = x + FFN(LN(x))                       # Linear(D -> 4D), ReLU, Linear(4D -> D)

Input: token embedding + fixed sinusoidal positions, not scaled by sqrt(D) (as in Canary), followed by a
LayerNorm (Canary's embedding layer has one; with 1/sqrt(D) initialisation the positions would otherwise
dominate the token vectors), then dropout. Output: final LayerNorm, then logits through the token embedding
matrix (tied, as Canary's classifier head is) plus a bias — with tying, the Canary presets land on their
published parameter counts. Whisper's decoder is the same blocks with options (``DecoderConfig``): learned
positions, no embedding LayerNorm, GELU, no key bias, no output bias.

One block forward serves both uses. Teacher forcing (:meth:`TransformerDecoder.forward`) runs it over whole
sequences; decoding starts a cache from the encoder output (:meth:`TransformerDecoder.start`) and feeds
tokens through :meth:`TransformerDecoder.step`, which runs the same blocks with each layer's view of the
cache (``fastaed.model.cache``: a K/V cache, or NeMo-style hidden states for the benchmark baseline).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fastaed.model.attention import (
    CrossAttention,
    LayerCache,
    SelfAttention,
    lengths_to_mask,
    sinusoidal_encoding,
)
from fastaed.model.cache import CacheKind, DecoderCache, HiddenStateCache, KVCache
from fastaed.model.config import DecoderConfig


class CrossAttentionOutput(NamedTuple):
    """What :meth:`TransformerDecoder.forward_with_cross_attention` returns."""

    logits: Tensor  # (B, U, V)
    weights: Tensor  # (B, L, H, U, T) cross-attention probabilities of the requested layers


class DecoderBlock(nn.Module):
    """Self-attention, cross-attention and a ReLU (or GELU) feed-forward, each pre-LN with a residual."""

    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        d = cfg.d_model
        self.self_norm = nn.LayerNorm(d)
        self.self_attn = SelfAttention(d, cfg.n_heads, cfg.dropout_att, key_bias=cfg.key_bias)
        self.cross_norm = nn.LayerNorm(d)
        self.cross_attn = CrossAttention(d, cfg.n_heads, cfg.dropout_att, key_bias=cfg.key_bias)
        self.ff_norm = nn.LayerNorm(d)
        activation = nn.GELU() if cfg.activation == "gelu" else nn.ReLU()
        self.ff = nn.Sequential(
            nn.Linear(d, cfg.ff_expansion * d), activation, nn.Linear(cfg.ff_expansion * d, d)
        )
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(
        self, x: Tensor, memory: Tensor | None, memory_mask: Tensor | None, cache: LayerCache | None = None
    ) -> Tensor:
        """x: (B, U, D); memory: (B, T, D) encoder states (None with a cache: it holds them); memory_mask:
        (B, 1, 1, T) True = valid frame, or None. ``cache``: this layer's view of a decoder cache, which
        supplies (and keeps) the keys/values of earlier positions. Returns (B, U, D)."""
        h = self.self_norm(x) if cache is None else cache.self_inputs(self.self_norm, x)
        x = x + self.dropout(self.self_attn(h, cache))
        x = x + self.dropout(self.cross_attn(self.cross_norm(x), memory, memory_mask, cache))
        return x + self.dropout(self.ff(self.ff_norm(x)))

    def forward_with_cross_scores(
        self, x: Tensor, memory: Tensor, memory_mask: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Teacher-forced :meth:`forward` (no cache) that also returns the cross-attention scores before
        softmax, (B, H, U, T) float32 (see ``CrossAttention.forward_with_scores``)."""
        x = x + self.dropout(self.self_attn(self.self_norm(x)))
        cross, scores = self.cross_attn.forward_with_scores(self.cross_norm(x), memory, memory_mask)
        x = x + self.dropout(cross)
        return x + self.dropout(self.ff(self.ff_norm(x))), scores


class TransformerDecoder(nn.Module):
    """Token ids and encoder states -> next-token logits."""

    def __init__(self, cfg: DecoderConfig, vocab_size: int):
        super().__init__()
        self.cfg = cfg
        self.vocab_size = vocab_size
        self.embedding = nn.Embedding(vocab_size, cfg.d_model)
        # Learned positions (Whisper): one row per position up to max_len, which then also caps training.
        self.positions = nn.Embedding(cfg.max_len, cfg.d_model) if cfg.positions == "learned" else None
        self.embed_norm = nn.LayerNorm(cfg.d_model) if cfg.embed_norm else nn.Identity()
        self.dropout = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(DecoderBlock(cfg) for _ in range(cfg.n_layers))
        self.final_norm = nn.LayerNorm(cfg.d_model)
        # Tied: logits = h · Eᵀ + b, via F.linear on the embedding weight, so no tensor is shared between
        # modules and checkpoints stay plain (safetensors refuses shared storage).
        self.output = None if cfg.tie_embeddings else nn.Linear(cfg.d_model, vocab_size, bias=False)
        self.output_bias = nn.Parameter(torch.zeros(vocab_size)) if cfg.output_bias else None
        # The output layer of decoding steps on a faster kernel, chosen at load for inference (not saved):
        # an int8 copy (``fastaed.model.quantize``) or oneDNN on this matrix (``fastaed.model.onednn``).
        self.step_head: nn.Module | None = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Normal(0, 1/sqrt(D)) weights, zero biases, as Canary initialises its decoder.

        With the tied output this keeps the initial logits at unit scale; PyTorch's default N(0, 1) embedding
        would make them ~sqrt(D) large.
        """
        std = 1.0 / math.sqrt(self.cfg.d_model)
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.normal_(module.weight, std=std)
                if isinstance(module, nn.Linear) and module.bias is not None:
                    nn.init.zeros_(module.bias)
        if self.output_bias is not None:
            nn.init.zeros_(self.output_bias)

    def embed(self, tokens: Tensor, pos: Tensor) -> Tensor:
        """tokens: (B, U) ids; pos: (U, D) their position encodings. Returns (B, U, D)."""
        return self.dropout(self.embed_norm(self.embedding(tokens) + pos[None]))

    def position_table(self, length: int, device: torch.device) -> Tensor:
        """(length, D) encodings of positions 0 .. length - 1, in the embedding's dtype."""
        if self.positions is not None:
            if length > self.cfg.max_len:
                raise ValueError(
                    f"{length} decoder positions requested; this decoder learned {self.cfg.max_len}"
                )
            return self.positions.weight[:length]
        pos = sinusoidal_encoding(torch.arange(length, device=device), self.cfg.d_model)
        if self.cfg.scaled_positions:  # NeMo's FixedPositionalEncoding divides its table by sqrt(D)
            pos = pos / math.sqrt(self.cfg.d_model)
        return pos.to(self.embedding.weight.dtype)

    def logits(self, hidden: Tensor) -> Tensor:
        """hidden: (B, U, D) block outputs -> (B, U, V) logits."""
        return self.classify(self.final_norm(hidden))

    @property
    def output_weight(self) -> Tensor:
        """(V, D) the output matrix: the token embedding when tied."""
        return self.embedding.weight if self.output is None else self.output.weight

    def classify(self, normed: Tensor) -> Tensor:
        """normed: (B, U, D) final-LayerNorm outputs (what :meth:`features` returns) -> (B, U, V) logits."""
        return F.linear(normed, self.output_weight, self.output_bias)

    def step_logits(self, hidden: Tensor) -> Tensor:
        """hidden: (B, D) last-position block outputs of a decoding step -> (B, V) logits.

        Without autograd the product runs against a (D, V) copy of the output matrix: for a few rows the
        (V, D) layout makes a matrix-vector product that reads the matrix at a third of the speed (measured
        with Whisper's 51,864 x 384 on 2 cores: 8.9 ms vs 3.0 ms per step at batch 1). The copy is made once
        and remade whenever the weight changes (an optimizer step, ``.to()``); it is not a parameter.
        """
        if torch.is_grad_enabled() and self.training:
            return self.logits(hidden[:, None])[:, 0]
        hidden = self.final_norm(hidden)
        if self.step_head is not None:
            return self.step_head(hidden)
        weight = self.output_weight
        key = (weight.data_ptr(), weight._version, weight.dtype, weight.device)
        cached = self.__dict__.get("_output_t")
        if cached is None or cached[0] != key:
            cached = (key, weight.detach().t().contiguous())
            self.__dict__["_output_t"] = cached
        out = hidden @ cached[1]
        return out if self.output_bias is None else out + self.output_bias

    def forward(self, tokens: Tensor, memory: Tensor, memory_lens: Tensor) -> Tensor:
        """Teacher-forced decoding of a whole (right-padded) sequence.

        tokens: (B, U) input ids; memory: (B, T, D) encoder states; memory_lens: (B,) valid frames, each >= 1.
        Returns (B, U, V) logits; rows past a sequence's length are meaningless (the loss ignores them).
        """
        return self.classify(self.features(tokens, memory, memory_lens))

    def features(self, tokens: Tensor, memory: Tensor, memory_lens: Tensor) -> Tensor:
        """Teacher-forced final states: (B, U, D) outputs of the final LayerNorm, the vectors the output
        matrix turns into logits (:meth:`classify`). Distillation matches a student's to a teacher's.

        tokens: (B, U); memory: (B, T, D); memory_lens: (B,) valid frames, each >= 1."""
        memory_mask = lengths_to_mask(memory_lens, memory.shape[1])[:, None, None, :]  # (B, 1, 1, T)
        x = self.embed(tokens, self.position_table(tokens.shape[1], tokens.device))
        for layer in self.layers:
            x = layer(x, memory, memory_mask)
        return self.final_norm(x)

    def forward_with_cross_attention(
        self,
        tokens: Tensor,
        memory: Tensor,
        memory_lens: Tensor,
        layers: Sequence[int],
        weight_lens: Tensor | None = None,
    ) -> CrossAttentionOutput:
        """:meth:`forward` that also returns the cross-attention probabilities of the ``layers`` asked for.

        tokens: (B, U); memory: (B, T, D); memory_lens: (B,) valid frames (what the decoder attends to);
        layers: L distinct layer indices. ``weight_lens``: (B,) frames the returned probabilities are
        normalised over (default ``memory_lens``; clamped to it): Whisper's word alignment re-normalises over
        the frames that hold audio while the decoder still attends to the whole padded window.

        Returns logits (B, U, V), equal to :meth:`forward`'s up to float rounding, and weights
        (B, L, H, U, T), zero past ``weight_lens``. Only the requested layers run their cross-attention
        written out (the probabilities are materialised); the others keep SDPA's fused kernel.
        """
        wanted = list(layers)
        in_range = all(0 <= i < len(self.layers) for i in wanted)
        if not wanted or len(set(wanted)) != len(wanted) or not in_range:
            raise ValueError(f"layers must be distinct indices in [0, {len(self.layers)}), got {wanted}")
        memory_mask = lengths_to_mask(memory_lens, memory.shape[1])[:, None, None, :]  # (B, 1, 1, T)
        x = self.embed(tokens, self.position_table(tokens.shape[1], tokens.device))
        scores: dict[int, Tensor] = {}
        for i, layer in enumerate(self.layers):
            if i in wanted:
                x, scores[i] = layer.forward_with_cross_scores(x, memory, memory_mask)
            else:
                x = layer(x, memory, memory_mask)
        lens = memory_lens if weight_lens is None else torch.minimum(weight_lens, memory_lens)
        weight_mask = lengths_to_mask(lens, memory.shape[1])[:, None, None, None, :]  # (B, 1, 1, 1, T)
        stacked = torch.stack([scores[i] for i in wanted], dim=1)  # (B, L, H, U, T)
        weights = torch.softmax(stacked.masked_fill(~weight_mask, float("-inf")), dim=-1)
        return CrossAttentionOutput(self.logits(x), weights)

    def cross_attention_weights(
        self, tokens: Tensor, memory: Tensor, memory_lens: Tensor, layers: Sequence[int]
    ) -> Tensor:
        """(B, L, H, U, T) cross-attention probabilities of ``layers`` under teacher forcing: the softmax of
        q·kᵀ/sqrt(Dh) over each row's valid frames (see :meth:`forward_with_cross_attention`)."""
        return self.forward_with_cross_attention(tokens, memory, memory_lens, layers).weights

    def start(
        self, memory: Tensor, memory_lens: Tensor, capacity: int, kind: CacheKind = "kv"
    ) -> DecoderCache:
        """An empty cache for decoding ``memory`` (B, T, D) encoder states with ``memory_lens`` (B,) frames.

        ``capacity``: the most tokens a row will hold (prompt + generated). ``kind``: ``"kv"`` projects every
        layer's cross-attention keys/values here, once per utterance; ``"hidden"`` (NeMo-style) keeps the
        states and re-projects them at every step (see ``fastaed.model.cache``).
        """
        # SDPA's mask layout, built once; no mask at all when nothing is padded (batch 1, equal lengths).
        mask = lengths_to_mask(memory_lens, memory.shape[1])[:, None, None, :]
        mask = None if bool(mask.all()) else mask
        positions = self.position_table(capacity, memory.device)
        if kind == "kv":
            memory_kv = [layer.cross_attn.project_memory(memory) for layer in self.layers]
            return KVCache.empty(memory_kv, mask, positions)
        if kind == "hidden":
            states: list[Tensor | None] = [None] * len(self.layers)
            return HiddenStateCache(memory=memory, states=states, memory_mask=mask, positions=positions)
        raise ValueError(f"unknown cache kind {kind!r} (expected 'kv' or 'hidden')")

    def step(self, tokens: Tensor, cache: DecoderCache) -> Tensor:
        """Feed ``tokens`` (B, N) at positions ``cache.length ...``; returns the logits of the last, (B, V).

        N > 1 is the prompt pre-fill and needs an empty cache (causal attention inside the new tokens); N = 1
        is one decoding step. Mutates ``cache`` (fills N positions). Call in eval mode.
        """
        n, start = tokens.shape[1], cache.length
        if start + n > cache.capacity:
            raise ValueError(f"cache holds {cache.capacity} positions; {start} filled, {n} more requested")
        if n > 1 and start > 0:
            raise ValueError("several tokens at once only into an empty cache (the prompt pre-fill)")
        # The position table is looked up, not recomputed: same encodings, no per-step sin/cos.
        x = self.embed(tokens, cache.positions[start : start + n])  # (B, N, D)
        for i, layer in enumerate(self.layers):
            x = layer(x, None, cache.memory_mask, cache.layer(i))
        cache.length = start + n
        return self.step_logits(x[:, -1])
