"""The reference greedy decoder the tests hold the cached searches to: no cache, no compaction.

Every step re-runs the teacher-forced decoder (``EncoderDecoderModel.decode``) over the whole prefix of
every row, so it shares nothing with ``fastaed.model.cache`` or ``fastaed.decode.search`` but the network.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fastaed.model import EncoderDecoderModel


@torch.no_grad()
def greedy_oracle(
    model: EncoderDecoderModel, enc: Tensor, enc_lens: Tensor, prompts: Tensor, eos_id: int
) -> list[list[int]]:
    """Batched greedy decoding, full recompute per step.

    enc: (B, T', De) encoder states; enc_lens: (B,); prompts: (B, P) prompt ids (all rows the same length).
    A row stops at EOS or after as many new tokens as it has encoder frames (capped by the decoder's
    ``max_len``). Returns the generated ids of each row, without the prompt and without EOS.
    """
    b, p = prompts.shape
    cap = max(model.config.decoder.max_len - p, 1)
    limit = enc_lens.clamp(min=1, max=cap)  # (B,) new-token budget per row
    tokens = prompts
    finished = torch.zeros(b, dtype=torch.bool, device=prompts.device)
    emitted = torch.zeros(b, dtype=torch.long, device=prompts.device)
    for t in range(int(limit.max())):
        logits = model.decode(enc, enc_lens, tokens)[:, -1]  # (B, V): only the last position is needed
        next_id = logits.argmax(-1).masked_fill(finished, eos_id)  # finished rows get filler, ignored below
        tokens = torch.cat([tokens, next_id[:, None]], dim=1)  # (B, P + t + 1)
        emitted += (~finished).long()
        finished |= (next_id == eos_id) | (t + 1 >= limit)
        if bool(finished.all()):
            break
    out = []
    for row, n in zip(tokens[:, p:].tolist(), emitted.tolist()):
        ids = row[:n]
        out.append(ids[:-1] if ids and ids[-1] == eos_id else ids)
    return out
