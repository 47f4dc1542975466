"""Parameter names between NeMo's ``EncDecMultiTaskModel`` state dict and fastaed's ``EncoderDecoderModel``.

One table per layer says which fastaed tensor is which NeMo tensor(s) and how: ``copy``, ``cat`` (NeMo's
separate query/key/value projections are one fused projection here, concatenated along the output rows) or
``conv1d`` (NeMo's kernel-1 ``Conv1d`` pointwise convolutions are ``Linear`` here: the same weights without
the trailing kernel axis). Both directions read the same table, so import and export cannot drift apart.

NeMo's dw-striding subsampling is an ``nn.Sequential`` with activations in between: stage 0 is ``conv.0``,
stage s >= 1 is the depthwise ``conv.{3s-1}`` followed by the pointwise ``conv.{3s}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from fastaed.model.config import ModelConfig

Op = Literal["copy", "cat", "conv1d"]


@dataclass(frozen=True)
class Rule:
    ours: str
    nemo: tuple[str, ...]
    op: Op = "copy"


def _linear(ours: str, nemo: str) -> list[Rule]:
    return [Rule(f"{ours}.weight", (f"{nemo}.weight",)), Rule(f"{ours}.bias", (f"{nemo}.bias",))]


def _fused(ours: str, nemo: list[str]) -> list[Rule]:
    return [
        Rule(f"{ours}.weight", tuple(f"{n}.weight" for n in nemo), "cat"),
        Rule(f"{ours}.bias", tuple(f"{n}.bias" for n in nemo), "cat"),
    ]


def _conv1d(ours: str, nemo: str) -> list[Rule]:
    return [Rule(f"{ours}.weight", (f"{nemo}.weight",), "conv1d"), Rule(f"{ours}.bias", (f"{nemo}.bias",))]


def _norm(ours: str, nemo: str) -> list[Rule]:
    return _linear(ours, nemo)  # LayerNorm: weight and bias


def rules(config: ModelConfig) -> list[Rule]:
    """Every fastaed tensor of an AED model with this config and where NeMo keeps it."""
    enc, dec = config.encoder, config.decoder
    out: list[Rule] = []
    sub, nsub = "encoder.subsampling", "encoder.pre_encode"
    out += _linear(f"{sub}.convs.0", f"{nsub}.conv.0")
    for s in range(1, enc.subsampling_stages):
        out += _linear(f"{sub}.convs.{s}.0", f"{nsub}.conv.{3 * s - 1}")
        out += _linear(f"{sub}.convs.{s}.1", f"{nsub}.conv.{3 * s}")
    out += _linear(f"{sub}.out", f"{nsub}.out")
    for i in range(enc.n_layers):
        o, n = f"encoder.layers.{i}", f"encoder.layers.{i}"
        for ff in ("1", "2"):
            out += _norm(f"{o}.ff{ff}.norm", f"{n}.norm_feed_forward{ff}")
            out += _linear(f"{o}.ff{ff}.inner", f"{n}.feed_forward{ff}.linear1")
            out += _linear(f"{o}.ff{ff}.outer", f"{n}.feed_forward{ff}.linear2")
        out += _norm(f"{o}.attn_norm", f"{n}.norm_self_att")
        att = f"{n}.self_attn"
        out += _fused(f"{o}.attn.qkv", [f"{att}.linear_q", f"{att}.linear_k", f"{att}.linear_v"])
        out += _linear(f"{o}.attn.out", f"{att}.linear_out")
        out.append(Rule(f"{o}.attn.pos_proj.weight", (f"{att}.linear_pos.weight",)))
        out += [Rule(f"{o}.attn.pos_bias_{b}", (f"{att}.pos_bias_{b}",)) for b in "uv"]
        out += _norm(f"{o}.conv.norm", f"{n}.norm_conv")
        out += _conv1d(f"{o}.conv.pointwise_in", f"{n}.conv.pointwise_conv1")
        out += _linear(f"{o}.conv.depthwise", f"{n}.conv.depthwise_conv")
        bn = [f"{o}.conv.batch_norm.{k}" for k in ("weight", "bias", "running_mean", "running_var")]
        bn.append(f"{o}.conv.batch_norm.num_batches_tracked")
        out += [Rule(k, (k,)) for k in bn]  # the same names on both sides
        out += _conv1d(f"{o}.conv.pointwise_out", f"{n}.conv.pointwise_conv2")
        out += _norm(f"{o}.out_norm", f"{n}.norm_out")
    if enc.d_model != dec.d_model:
        out += _linear("projection", "encoder_decoder_proj")
    emb, nd = "transf_decoder._embedding", "transf_decoder._decoder"
    out.append(Rule("decoder.embedding.weight", (f"{emb}.token_embedding.weight",)))
    if dec.positions == "learned":
        out.append(Rule("decoder.positions.weight", (f"{emb}.position_embedding.pos_enc",)))
    out += _norm("decoder.embed_norm", f"{emb}.layer_norm")
    for i in range(dec.n_layers):
        o, n = f"decoder.layers.{i}", f"{nd}.layers.{i}"
        first, second = f"{n}.first_sub_layer", f"{n}.second_sub_layer"
        out += _norm(f"{o}.self_norm", f"{n}.layer_norm_1")
        out += _fused(f"{o}.self_attn.qkv", [f"{first}.query_net", f"{first}.key_net", f"{first}.value_net"])
        out += _linear(f"{o}.self_attn.out", f"{first}.out_projection")
        out += _norm(f"{o}.cross_norm", f"{n}.layer_norm_2")
        out += _linear(f"{o}.cross_attn.q", f"{second}.query_net")
        out += _fused(f"{o}.cross_attn.kv", [f"{second}.key_net", f"{second}.value_net"])
        out += _linear(f"{o}.cross_attn.out", f"{second}.out_projection")
        out += _norm(f"{o}.ff_norm", f"{n}.layer_norm_3")
        out += _linear(f"{o}.ff.0", f"{n}.third_sub_layer.dense_in")
        out += _linear(f"{o}.ff.2", f"{n}.third_sub_layer.dense_out")
    out += _norm("decoder.final_norm", f"{nd}.final_layer_norm")
    out.append(Rule("decoder.output_bias", ("log_softmax.mlp.layer0.bias",)))
    return out


def from_nemo(nemo: dict[str, Tensor], config: ModelConfig) -> dict[str, Tensor]:
    """fastaed state dict of ``config`` from NeMo's tensors. Raises KeyError naming a missing NeMo tensor."""
    state: dict[str, Tensor] = {}
    for rule in rules(config):
        missing = [k for k in rule.nemo if k not in nemo]
        if missing:
            raise KeyError(f"NeMo state dict has no {missing[0]} (needed for {rule.ours})")
        tensors = [nemo[k] for k in rule.nemo]
        if rule.op == "cat":
            state[rule.ours] = torch.cat(tensors, dim=0)
        elif rule.op == "conv1d":
            state[rule.ours] = tensors[0].squeeze(-1)
        else:
            state[rule.ours] = tensors[0]
    return {k: v.detach().clone().contiguous() for k, v in state.items()}


def to_nemo(state: dict[str, Tensor], config: ModelConfig) -> dict[str, Tensor]:
    """NeMo tensors from a fastaed state dict (the inverse of :func:`from_nemo`)."""
    out: dict[str, Tensor] = {}
    for rule in rules(config):
        t = state[rule.ours].detach().cpu()
        if rule.op == "cat":
            for name, piece in zip(rule.nemo, t.chunk(len(rule.nemo), dim=0), strict=True):
                out[name] = piece.clone()
        elif rule.op == "conv1d":
            out[rule.nemo[0]] = t.unsqueeze(-1).clone()
        else:
            out[rule.nemo[0]] = t.clone()
    return out
