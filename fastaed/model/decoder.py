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
published parameter counts.

Ready for incremental decoding: cross-attention keys/values come from
:meth:`TransformerDecoder.project_memory` (computed once per utterance), and self-attention uses one fused
``qkv`` projection a K/V cache can slice.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fastaed.model.attention import CrossAttention, SelfAttention, lengths_to_mask, sinusoidal_encoding
from fastaed.model.config import DecoderConfig

MemoryKV = list[tuple[Tensor, Tensor]]  # per layer: cross-attention keys and values, (B, H, T, Dh) each


class DecoderBlock(nn.Module):
    """Self-attention, cross-attention and a ReLU feed-forward, each pre-LN with a residual."""

    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        d = cfg.d_model
        self.self_norm = nn.LayerNorm(d)
        self.self_attn = SelfAttention(d, cfg.n_heads, cfg.dropout_att)
        self.cross_norm = nn.LayerNorm(d)
        self.cross_attn = CrossAttention(d, cfg.n_heads, cfg.dropout_att)
        self.ff_norm = nn.LayerNorm(d)
        self.ff = nn.Sequential(
            nn.Linear(d, cfg.ff_expansion * d), nn.ReLU(), nn.Linear(cfg.ff_expansion * d, d)
        )
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, memory_kv: tuple[Tensor, Tensor], memory_mask: Tensor) -> Tensor:
        """x: (B, U, D); memory_kv: (B, H, T, Dh) keys and values; memory_mask: (B, T). Returns (B, U, D)."""
        x = x + self.dropout(self.self_attn(self.self_norm(x)))
        x = x + self.dropout(self.cross_attn(self.cross_norm(x), memory_kv, memory_mask))
        return x + self.dropout(self.ff(self.ff_norm(x)))


class TransformerDecoder(nn.Module):
    """Token ids and encoder states -> next-token logits."""

    def __init__(self, cfg: DecoderConfig, vocab_size: int):
        super().__init__()
        self.cfg = cfg
        self.vocab_size = vocab_size
        self.embedding = nn.Embedding(vocab_size, cfg.d_model)
        self.embed_norm = nn.LayerNorm(cfg.d_model)
        self.dropout = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(DecoderBlock(cfg) for _ in range(cfg.n_layers))
        self.final_norm = nn.LayerNorm(cfg.d_model)
        # Tied: logits = h · Eᵀ + b, via F.linear on the embedding weight, so no tensor is shared between
        # modules and checkpoints stay plain (safetensors refuses shared storage).
        self.output = None if cfg.tie_embeddings else nn.Linear(cfg.d_model, vocab_size, bias=False)
        self.output_bias = nn.Parameter(torch.zeros(vocab_size))
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
        nn.init.zeros_(self.output_bias)

    def project_memory(self, memory: Tensor) -> MemoryKV:
        """memory: (B, T, D) encoder states (already projected to the decoder width) -> per-layer K/V."""
        return [layer.cross_attn.project_memory(memory) for layer in self.layers]

    def embed(self, tokens: Tensor, positions: Tensor) -> Tensor:
        """tokens: (B, U) ids; positions: (U,) absolute positions. Returns (B, U, D)."""
        pos = sinusoidal_encoding(positions, self.cfg.d_model).to(self.embedding.weight.dtype)  # (U, D)
        return self.dropout(self.embed_norm(self.embedding(tokens) + pos[None]))

    def logits(self, hidden: Tensor) -> Tensor:
        """hidden: (B, U, D) block outputs -> (B, U, V) logits."""
        hidden = self.final_norm(hidden)
        weight = self.embedding.weight if self.output is None else self.output.weight
        return F.linear(hidden, weight, self.output_bias)

    def forward(self, tokens: Tensor, memory: Tensor, memory_lens: Tensor) -> Tensor:
        """Teacher-forced decoding of a whole (right-padded) sequence.

        tokens: (B, U) input ids; memory: (B, T, D) encoder states; memory_lens: (B,) valid frames, each >= 1.
        Returns (B, U, V) logits; rows past a sequence's length are meaningless (the loss ignores them).
        """
        memory_kv = self.project_memory(memory)
        memory_mask = lengths_to_mask(memory_lens, memory.shape[1])  # (B, T)
        x = self.embed(tokens, torch.arange(tokens.shape[1], device=tokens.device))
        for layer, kv in zip(self.layers, memory_kv, strict=True):
            x = layer(x, kv, memory_mask)
        return self.logits(x)
