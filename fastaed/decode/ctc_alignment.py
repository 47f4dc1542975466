"""Word timestamps from a CTC head: forced alignment of the transcript through its frame posteriors.

The likeliest path of the transcript's tokens through the usual CTC topology (a blank between labels,
optional except between two equal labels; Graves et al. 2006) gives every token its frames, found by the
Viterbi recursion over the 2U+1 states of ``blank y1 blank y2 ... yU blank``: vectorised over states, one
step per frame. (torchaudio's ``forced_align`` is gone from its recent releases and is no dependency here.)
A word, SentencePiece pieces from one starting with "▁" to the next, spans its tokens' frames.

Dimensions: T' encoder frames, V vocabulary, U target tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from fastaed.decode.segments import Word


def ctc_viterbi_states(log_probs: Tensor, targets: Tensor, blank: int) -> Tensor:
    """The likeliest CTC path of ``targets`` (U,) through ``log_probs`` (T, V): (T,) the state of each frame
    in the extended sequence ``blank y1 blank y2 ... yU blank`` (odd state 2u+1 = token u, even = blank).

    Each frame stays, moves one state on, or skips the blank between two different labels; the path ends
    on the last label or the blank after it. Vectorised over the 2U+1 states, a loop over frames.
    Raises ValueError when T is shorter than the targets need (U plus one blank per repeated label).
    """
    if log_probs.dim() != 2 or targets.dim() != 1:
        raise ValueError(
            f"need log_probs (T, V) and targets (U,), got {tuple(log_probs.shape)}, {tuple(targets.shape)}"
        )
    num_frames, num_tokens = log_probs.shape[0], targets.shape[0]
    targets = targets.to(device=log_probs.device, dtype=torch.long)
    if bool((targets == blank).any()):
        raise ValueError(f"the targets hold the blank id {blank}")
    repeats = int((targets[1:] == targets[:-1]).sum()) if num_tokens > 1 else 0
    if num_frames < num_tokens + repeats or num_frames == 0:
        raise ValueError(
            f"{num_tokens} tokens ({repeats} repeated) need at least {num_tokens + repeats} frames, "
            f"got {num_frames}"
        )
    num_states = 2 * num_tokens + 1
    labels = torch.full((num_states,), blank, dtype=torch.long, device=log_probs.device)
    labels[1::2] = targets
    emit = log_probs.float()[:, labels]  # (T, S)
    can_skip = torch.zeros(num_states, dtype=torch.bool, device=log_probs.device)
    if num_tokens > 1:
        can_skip[3::2] = targets[1:] != targets[:-1]
    neg_inf = torch.tensor(float("-inf"), device=log_probs.device)
    score = torch.full((num_states,), float("-inf"), device=log_probs.device)
    score[: min(2, num_states)] = emit[0, : min(2, num_states)]
    # Steps back per frame and state: int8 keeps the table at T · S bytes for long inputs.
    moves = torch.zeros((num_frames, num_states), dtype=torch.int8, device=log_probs.device)
    for t in range(1, num_frames):
        from_one = F.pad(score[:-1], (1, 0), value=float("-inf"))
        from_two = torch.where(can_skip, F.pad(score[:-2], (2, 0), value=float("-inf")), neg_inf)
        best, moves[t] = torch.stack([score, from_one, from_two]).max(dim=0)  # steps back: 0, 1 or 2
        score = best + emit[t]
    last = num_states - 1
    state = last if num_tokens == 0 or score[last] >= score[last - 1] else last - 1
    back = moves.cpu().tolist()
    states = [0] * num_frames
    for t in range(num_frames - 1, -1, -1):
        states[t] = state
        state -= back[t][state]
    return torch.tensor(states, dtype=torch.long)


def ctc_token_frames(log_probs: Tensor, targets: Tensor, blank: int) -> tuple[Tensor, Tensor, Tensor]:
    """Per target token on the Viterbi path: first frame, last frame (inclusive) and the mean posterior of
    its label over its frames; (U,) each."""
    states = ctc_viterbi_states(log_probs, targets, blank)
    num_tokens = targets.shape[0]
    frame_index = torch.arange(states.shape[0])
    on_token = states % 2 == 1
    token = (states[on_token] - 1) // 2
    frames = frame_index[on_token]
    starts = torch.full((num_tokens,), states.shape[0], dtype=torch.long).scatter_reduce(
        0, token, frames, "amin"
    )
    ends = torch.full((num_tokens,), -1, dtype=torch.long).scatter_reduce(0, token, frames, "amax")
    posterior = log_probs.float().cpu()[frames, targets.cpu().long()[token]].exp()
    sums = torch.zeros(num_tokens).index_add(0, token, posterior)
    counts = torch.zeros(num_tokens).index_add(0, token, torch.ones_like(posterior))
    return starts, ends, sums / counts


def ctc_forced_align(log_probs: Tensor, targets: Tensor, blank: int) -> Tensor:
    """(U,) the frame where each target token starts on the likeliest CTC path of ``targets`` (U,)
    through ``log_probs`` (T, V)."""
    return ctc_token_frames(log_probs, targets, blank)[0]


def _piece(tokenizer: Any, token_id: int, specials: set[int]) -> str | None:
    """The SentencePiece piece of a text token, None for a special token (prompt, end of text, padding)."""
    if token_id in specials:
        return None
    pieces = getattr(tokenizer, "pieces", None)  # CanaryTokenizer: every id's piece in one list
    if pieces is not None:
        return pieces[token_id]
    return tokenizer.sp.id_to_piece(token_id - tokenizer.num_specials)  # Tokenizer: specials first


def ctc_alignable(num_frames: int, token_ids: Sequence[int], tokenizer: Any) -> bool:
    """Whether ``num_frames`` CTC frames can hold the text tokens of ``token_ids`` (one frame each, plus a
    blank between equal neighbours): a looping decoder writes more than that."""
    specials = set(tokenizer.special_ids.values())
    kept = [int(t) for t in token_ids if int(t) not in specials]
    repeats = sum(a == b for a, b in zip(kept, kept[1:]))
    return not kept or num_frames >= len(kept) + repeats


def ctc_word_timestamps(
    log_probs: Tensor,
    token_ids: Sequence[int],
    tokenizer: Any,
    frame_seconds: float,
    time_offset: float = 0.0,
    *,
    blank: int | None = None,
) -> list[Word]:
    """Words of ``token_ids`` timed by forced alignment through a CTC head's ``log_probs`` (T', V) of one
    utterance (its valid frames only).

    tokenizer: a SentencePiece ``Tokenizer`` or ``CanaryTokenizer``; special tokens in ``token_ids`` are
    dropped. A word starts at a piece beginning with "▁"; it spans from its first token's first frame to its
    last token's last frame plus one, in seconds (``frame_seconds`` per frame, from ``time_offset``), and
    its probability is the mean over its tokens of their label's posterior on their frames. ``blank``:
    default the tokenizer's pad id (the CTC head's blank).
    """
    specials = set(tokenizer.special_ids.values())
    kept = [(t, p) for t in token_ids if (p := _piece(tokenizer, int(t), specials)) is not None]
    if not kept:
        return []
    blank = tokenizer.pad_id if blank is None else blank
    targets = torch.tensor([t for t, _ in kept], dtype=torch.long)
    starts, ends, probs = ctc_token_frames(log_probs, targets, blank)
    groups: list[list[int]] = []
    for i, (_, piece) in enumerate(kept):
        if piece.startswith("▁") or not groups:
            groups.append([i])
        else:
            groups[-1].append(i)
    words = []
    for group in groups:
        text = "".join(kept[i][1] for i in group).replace("▁", " ")
        text = text if text.startswith(" ") else " " + text
        start = time_offset + int(starts[group[0]]) * frame_seconds
        end = time_offset + (int(ends[group[-1]]) + 1) * frame_seconds
        words.append(Word(text, round(start, 3), round(end, 3), float(probs[group].mean())))
    return words
