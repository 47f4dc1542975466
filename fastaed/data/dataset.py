"""Utterance indices -> padded training batch, running inside DataLoader workers.

Use with any batch sampler that yields lists of indices into the metadata index::

    ds = AEDDataset(index, tokenizer)
    loader = DataLoader(ds, batch_sampler=sampler, collate_fn=ds.collate, num_workers=2)

Shapes (B batch, N samples, T feature frames, F mel bins, U decoder sequence length)::

    audio        (B, N_max) float32   zero-padded waveforms at 16 kHz
    audio_lens   (B,) int64
    feats        (B, T_max, F) float32 (only with ``features=``; padded frames are 0)
    feat_lens    (B,) int64
    tokens       (B, U_max) int64     prompt + target + EOS, right-padded with ``pad_id``
    token_lens   (B,) int64           U per utterance (equals the index's out_lengths)
    prompt_lens  (B,) int64           the tokenizer's prompt length (5 Canary-style, 2 or 4 Whisper)

Teacher forcing uses ``dec_inputs = tokens[:, :-1]`` and ``dec_targets = tokens[:, 1:]`` (length U - 1
each, exposed as properties); ``target_mask`` marks the real target positions.

Bad audio under ``on_bad_input="skip"`` is dropped from its batch and counted in ``batch.bad_input``
(the trainer sums these reports); under ``"error"`` the error names the manifest line and field.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from fastaed.data import errors as E
from fastaed.data.audio import load_audio
from fastaed.data.errors import BadInputError, BadInputReport, OnBadInput
from fastaed.data.features import FeatureConfig
from fastaed.data.frontend import build_frontend
from fastaed.data.index import MetadataIndex
from fastaed.data.manifest import Utterance
from fastaed.data.tokenizer import Tokenizer
from fastaed.data.whisper_features import WhisperFeatureConfig
from fastaed.data.whisper_tokenizer import WhisperTokenizer


@dataclass
class Example:
    index: int
    audio: torch.Tensor  # (N,) float32
    tokens: list[int]  # full decoder sequence, length U


@dataclass
class Skipped:
    index: int
    error: BadInputError


@dataclass
class Batch:
    indices: list[int]
    audio: torch.Tensor
    audio_lens: torch.Tensor
    tokens: torch.Tensor
    token_lens: torch.Tensor
    prompt_lens: torch.Tensor
    pad_id: int
    feats: torch.Tensor | None = None
    feat_lens: torch.Tensor | None = None
    bad_input: BadInputReport = field(default_factory=BadInputReport)

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def dec_inputs(self) -> torch.Tensor:
        """(B, U_max - 1) decoder inputs for teacher forcing."""
        return self.tokens[:, :-1]

    @property
    def dec_targets(self) -> torch.Tensor:
        """(B, U_max - 1) next-token targets; positions past ``token_lens - 1`` hold ``pad_id``."""
        return self.tokens[:, 1:]

    @property
    def dec_lens(self) -> torch.Tensor:
        return self.token_lens - 1

    @property
    def target_mask(self) -> torch.Tensor:
        """(B, U_max - 1) bool, True where the target is a real token (prompt continuation, text or EOS)."""
        positions = torch.arange(self.tokens.shape[1] - 1, device=self.tokens.device)
        return positions[None, :] < self.dec_lens[:, None]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        moved = {}
        for name in ("audio", "audio_lens", "tokens", "token_lens", "prompt_lens", "feats", "feat_lens"):
            value = getattr(self, name)
            moved[name] = value.to(device, non_blocking=non_blocking) if value is not None else None
        return Batch(indices=self.indices, pad_id=self.pad_id, bad_input=self.bad_input, **moved)

    def pin_memory(self) -> Batch:  # called by DataLoader(pin_memory=True)
        for name in ("audio", "audio_lens", "tokens", "token_lens", "prompt_lens", "feats", "feat_lens"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, value.pin_memory())
        return self


def pad_1d(seqs: list[torch.Tensor], value: float | int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad 1-D tensors into (B, L_max); returns (padded, lengths)."""
    lens = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    out = torch.full((len(seqs), int(lens.max()) if len(seqs) else 0), value, dtype=seqs[0].dtype)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = s
    return out, lens


def load_utterance_audio(utt: Utterance, duration_tolerance: float = 0.1) -> torch.Tensor:
    """(N,) waveform of one manifest entry; errors carry the manifest file and line.

    A whole-file entry (offset 0) is checked against the file's length; a segment (offset > 0) against the
    slice it asks for, since its file is legitimately longer.
    """
    try:
        return load_audio(
            utt.audio_filepath,
            offset=utt.offset,
            duration=utt.duration if utt.offset > 0 else None,
            expected_duration=utt.duration,
            duration_tolerance=duration_tolerance,
        )
    except BadInputError as err:
        raise err.with_location(utt.manifest, utt.line) from None


class AEDDataset(torch.utils.data.Dataset):
    """Map-style dataset over a :class:`MetadataIndex`: ``ds[i]`` loads one utterance, ``collate`` pads.

    Args:
        index: the metadata index (its manifests are re-read one line at a time by byte offset).
        tokenizer: must be the tokenizer the index was built with (checked).
        features: compute log-mel features in the worker (``None``: leave it to the model/GPU).
        on_bad_input: ``"error"`` or ``"skip"`` (counted in each batch's ``bad_input``).
        duration_tolerance: allowed |manifest duration - real duration| in seconds.
    """

    def __init__(
        self,
        index: MetadataIndex,
        tokenizer: Tokenizer | WhisperTokenizer,
        *,
        features: FeatureConfig | WhisperFeatureConfig | None = None,
        on_bad_input: OnBadInput = "error",
        duration_tolerance: float = 0.1,
    ):
        if index.tokenizer_identity != tokenizer.identity:
            raise ValueError(
                f"index was built with tokenizer {index.tokenizer_identity}, got {tokenizer.identity}: "
                "output lengths would disagree; rebuild the index with this tokenizer"
            )
        self.index = index
        self.tokenizer = tokenizer
        self.on_bad_input = on_bad_input
        self.duration_tolerance = duration_tolerance
        self.feature_extractor = build_frontend(features).eval() if features is not None else None

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> Example | Skipped:
        utt = self.index.utterance(i)
        try:
            audio = load_utterance_audio(utt, self.duration_tolerance)
            tokens = self.tokenizer.sequence(utt)
        except BadInputError as err:
            if self.on_bad_input == "error":
                raise
            return Skipped(int(i), err)
        if len(tokens) != self.index.out_lengths[i]:  # the one definition of U must hold everywhere
            stale = f"U={len(tokens)} but the index says {self.index.out_lengths[i]}"
            raise RuntimeError(f"{utt.manifest}:{utt.line}: {stale}; was the manifest edited in place?")
        return Example(int(i), audio, tokens)

    def collate(self, items: list[Example | Skipped]) -> Batch:
        report = BadInputReport()
        examples = []
        for item in items:
            if isinstance(item, Skipped):
                E.handle(item.error, "skip", report)
            else:
                examples.append(item)
        if not examples:
            empty = torch.zeros(0, 0)
            zero = torch.zeros(0, dtype=torch.long)
            return Batch([], empty, zero, empty.long(), zero, zero, self.tokenizer.pad_id, bad_input=report)
        audio, audio_lens = pad_1d([e.audio for e in examples], 0.0)
        tokens, token_lens = pad_1d(
            [torch.tensor(e.tokens, dtype=torch.long) for e in examples], self.tokenizer.pad_id
        )
        batch = Batch(
            indices=[e.index for e in examples],
            audio=audio,
            audio_lens=audio_lens,
            tokens=tokens,
            token_lens=token_lens,
            prompt_lens=torch.full_like(token_lens, self.tokenizer.prompt_length),
            pad_id=self.tokenizer.pad_id,
            bad_input=report,
        )
        if self.feature_extractor is not None:
            with torch.no_grad():
                batch.feats, batch.feat_lens = self.feature_extractor(audio, audio_lens)
        return batch
