"""Dev-set evaluation during training: teacher-forced loss and greedy-decoding WER / CER.

Dimensions: B batch, T' encoder frames, De encoder width, P prompt tokens, U decoder tokens.

Greedy decoding is the K/V-cached ``fastaed.decode.search.greedy_search`` that transcription uses: a row
stops at EOS or after as many tokens as the utterance has encoder frames, capped by the decoder's
``max_len``. WER and CER (``fastaed.decode.scoring.word_error_rates``, jiwer) are computed after the same
normaliser on both sides (lower case, punctuation stripped: ``fastaed.data.text.strip_pnc``), so a pnc=yes
target is scored on its words only.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import numpy as np
import torch
from torch import nn

from fastaed.data.dataset import AEDDataset
from fastaed.data.text import strip_pnc
from fastaed.data.tokenizer import Tokenizer
from fastaed.data.whisper_tokenizer import WhisperTokenizer
from fastaed.decode.scoring import word_error_rates
from fastaed.decode.search import greedy_search
from fastaed.model import EncoderDecoderModel, cross_entropy_loss
from fastaed.train.config import LossConfig
from fastaed.train.faults import CollateWithFirstError, apply_bad_input_policy

NUM_EXAMPLES = 3  # reference/hypothesis pairs kept in the eval record


def duration_batches(durations: np.ndarray, max_padded_seconds: float) -> list[list[int]]:
    """Indices sorted by duration, cut into batches whose padded duration (B × longest) fits the budget."""
    order = np.argsort(durations, kind="stable")
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order.tolist():
        if current and (len(current) + 1) * float(durations[i]) > max_padded_seconds:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


@torch.no_grad()
def evaluate(
    model: EncoderDecoderModel,
    frontend: nn.Module,  # waves (B, N), lens (B,) -> feats (B, T, F), feat_lens (B,)
    dataset: AEDDataset,
    tokenizer: Tokenizer | WhisperTokenizer,
    *,
    device: torch.device,
    autocast: Callable[[], AbstractContextManager[Any]],
    loss_cfg: LossConfig,
    on_bad_input: str,
    max_wer_utts: int,
    batch_duration: float,
    num_workers: int = 0,
) -> dict[str, Any]:
    """Dev loss over the whole dev set (as the training loss is computed, per token) and greedy WER/CER over
    its first ``max_wer_utts`` utterances. Leaves the model and front end in the mode it found them in."""
    was_training = model.training, frontend.training
    model.eval()
    frontend.eval()
    index = dataset.index
    wer_ids = set(range(min(max_wer_utts, len(index))))
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=duration_batches(index.durations, batch_duration),
        collate_fn=CollateWithFirstError(dataset),
        num_workers=num_workers,
    )
    loss_sum, tokens, skipped = 0.0, 0, 0
    hyps: dict[int, str] = {}
    for batch, error in loader:
        apply_bad_input_policy(on_bad_input, error)
        skipped += batch.bad_input.total
        if len(batch) == 0:
            continue
        batch = batch.to(device)
        feats, feat_lens = frontend(batch.audio, batch.audio_lens)
        with autocast():
            enc, enc_lens = model.encode(feats, feat_lens)
            logits = model.decode(enc, enc_lens, batch.dec_inputs)
            ce_sum, n = cross_entropy_loss(
                logits,
                batch.dec_targets,
                target_lens=batch.dec_lens,
                prompt_lens=batch.prompt_lens if loss_cfg.mask_prompt else None,
                label_smoothing=loss_cfg.label_smoothing,
                reduction="sum",
            )
            loss_sum += float(ce_sum)
            tokens += int(n)
            rows = [j for j, i in enumerate(batch.indices) if i in wer_ids]
            if rows:
                sel = torch.tensor(rows, device=device)
                p = int(batch.prompt_lens[0])  # one prompt length per tokenizer
                decoded = greedy_search(
                    model, enc[sel], enc_lens[sel], batch.tokens[sel, :p], tokenizer.eos_id
                )
                hyps.update({batch.indices[j]: tokenizer.decode(h.tokens) for j, h in zip(rows, decoded)})
    model.train(was_training[0])
    frontend.train(was_training[1])

    pairs = []
    for i in sorted(hyps):
        ref = strip_pnc(index.utterance(i).target_text)
        if ref:  # an empty reference has no WER
            pairs.append((ref, strip_pnc(hyps[i])))
    result: dict[str, Any] = {
        "dev_loss": loss_sum / tokens if tokens else None,
        "dev_tokens": tokens,
        "dev_utts": len(index),
        "wer_utts": len(pairs),
        "wer": None,
        "cer": None,
        "dev_skipped": skipped,
    }
    if pairs:
        refs, hyp_texts = [r for r, _ in pairs], [h for _, h in pairs]
        result |= word_error_rates(refs, hyp_texts)
        result["examples"] = [{"ref": r, "hyp": h} for r, h in pairs[:NUM_EXAMPLES]]
    return result
