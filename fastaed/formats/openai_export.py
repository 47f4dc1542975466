"""``fastaed export openai``: a fastaed Whisper checkpoint as the ``.pt`` file openai-whisper's
``whisper.load_model(path)`` reads.

The file is ``torch.save`` of ``{"dims": {...}, "model_state_dict": {...}}`` with OpenAI's parameter names:
the canonical form of :mod:`fastaed.formats.whisper`, which the importers already produce, so the mapping is
:func:`~fastaed.formats.whisper.fastaed_to_canonical` and nothing here renames a tensor. Weights stay
float32 (OpenAI's own files are float16; ``load_model`` casts either way, and float32 keeps the peer
comparisons exact).

Two extra top-level keys, which ``load_model`` ignores:

* ``fastaed_export``: who wrote the file (so a later export may replace it and nothing else is overwritten);
* ``alignment_heads``: a bool ``(n_text_layer, n_text_head)`` mask of the cross-attention heads that word
  timestamps use: by default the ones fastaed's own word timestamps use
  (:func:`fastaed.decode.alignment.alignment_heads`: OpenAI's published heads for a released model, else the
  upper half of the decoder layers), so both tools align words with the same heads. ``load_model(path)``
  cannot take them (a non-persistent buffer it sets only for OpenAI's named models), so the openai-whisper
  peer runner applies them with ``set_alignment_heads``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from fastaed.formats.native import CheckpointError, load_model
from fastaed.formats.whisper import WhisperDims, fastaed_to_canonical
from fastaed.model import EncoderDecoderModel
from fastaed.model.config import ModelConfig
from fastaed.util.outputs import FileKind, check_output_file, replacing_file

EXPORT_TAG = "fastaed_export"
EXPORT_FORMAT = "fastaed.openai-whisper"
# OpenAI's tokenizers: 51864 ids (English-only), 51865 multilingual, 51866 from large-v3 on (Cantonese).
OPENAI_VOCAB_SIZES = (51864, 51865, 51866)

AlignmentHeads = Sequence[tuple[int, int]]  # (decoder layer, head) pairs


def _exported_by_fastaed(path: Path) -> bool:
    """Whether ``path`` is a ``.pt`` this module wrote (memory-mapped: the tensors are not read)."""
    try:
        doc = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 (not a torch zip file, a pickle with code in it, a truncated file)
        return False
    tag = doc.get(EXPORT_TAG) if isinstance(doc, dict) else None
    return isinstance(tag, dict) and tag.get("format") == EXPORT_FORMAT


OPENAI_KIND = FileKind("Whisper .pt (openai-whisper layout)", _exported_by_fastaed)


def _layout_differences(config: ModelConfig) -> list[str]:
    """The fields where ``config`` leaves OpenAI's Whisper architecture (empty: it is that architecture).

    Dropout does not change inference, and a CTC head is an extra openai-whisper simply does not have."""
    if config.encoder.kind != "whisper":
        return [f"encoder kind {config.encoder.kind!r}, not 'whisper'"]
    expected = WhisperDims.of(config).model_config(config.name)

    def comparable(c: ModelConfig) -> dict[str, Any]:
        enc = dataclasses.replace(c.encoder, dropout=0.0, dropout_att=0.0)
        dec = dataclasses.replace(c.decoder, dropout=0.0, dropout_att=0.0)
        return dataclasses.replace(c, encoder=enc, decoder=dec, ctc_weight=None).to_dict()

    ours, theirs = comparable(config), comparable(expected)
    return [
        f"{part}.{key}={ours[part][key]!r} (Whisper: {theirs[part][key]!r})"
        for part in ("encoder", "decoder")
        for key in ours[part]
        if ours[part][key] != theirs[part][key]
    ]


def alignment_mask(dims: WhisperDims, heads: AlignmentHeads) -> torch.Tensor:
    """``(n_text_layer, n_text_head)`` bool mask of ``heads``; a pair outside the decoder is a ValueError."""
    mask = torch.zeros(dims.n_text_layer, dims.n_text_head, dtype=torch.bool)
    for layer, head in heads:
        if not (0 <= layer < dims.n_text_layer and 0 <= head < dims.n_text_head):
            raise ValueError(
                f"alignment head ({layer}, {head}) is outside the decoder's "
                f"{dims.n_text_layer} layers x {dims.n_text_head} heads"
            )
        mask[layer, head] = True
    return mask


def openai_checkpoint(
    model: EncoderDecoderModel, *, alignment_heads: AlignmentHeads | None = None, source: str = ""
) -> dict[str, Any]:
    """The dict ``torch.save`` writes for ``model`` (a fastaed Whisper): dims, OpenAI-named float32 weights,
    the export tag and the alignment-head mask (``alignment_heads``, default: fastaed's own choice for this
    model). Raises ValueError for any other architecture."""
    from fastaed.decode.alignment import alignment_heads as fastaed_alignment_heads

    if differences := _layout_differences(model.config):
        raise ValueError(f"not OpenAI's Whisper architecture: {'; '.join(differences)}")
    dims, canonical = fastaed_to_canonical(model)
    heads = (
        fastaed_alignment_heads(model.config)
        if alignment_heads is None
        else alignment_mask(dims, alignment_heads)
    )
    return {
        "dims": asdict(dims),
        "model_state_dict": {k: v.contiguous() for k, v in canonical.items()},
        "alignment_heads": heads,
        EXPORT_TAG: {"format": EXPORT_FORMAT, "name": model.config.name, "source": source},
    }


def export_openai(
    checkpoint: str | Path, out_path: str | Path, *, alignment_heads: AlignmentHeads | None = None
) -> Path:
    """Write the fastaed Whisper ``checkpoint`` as an openai-whisper ``.pt`` at ``out_path`` (written beside
    it and moved in; an existing file is replaced only when fastaed exported it).

    ``alignment_heads``: (layer, head) pairs for word timestamps; default: those fastaed uses for this model.
    Raises :class:`CheckpointError` naming the checkpoint when it is not a Whisper model."""
    checkpoint, out = Path(checkpoint), Path(out_path)
    check_output_file(out, OPENAI_KIND)  # before loading anything
    model = load_model(checkpoint)
    try:
        doc = openai_checkpoint(model, alignment_heads=alignment_heads, source=str(checkpoint.resolve()))
    except ValueError as e:
        raise CheckpointError(f"{checkpoint}: cannot export to openai-whisper: {e}") from None
    with replacing_file(out, OPENAI_KIND) as tmp:
        torch.save(doc, tmp)
    return out


def vocabulary_note(n_vocab: int) -> str | None:
    """A warning when a model's vocabulary is not one of OpenAI's tokenizers (openai-whisper always decodes
    with its own, so a model with another vocabulary loads but its text means nothing)."""
    if n_vocab in OPENAI_VOCAB_SIZES:
        return None
    sizes = ", ".join(map(str, OPENAI_VOCAB_SIZES))
    return (
        f"{n_vocab} tokens is not one of OpenAI's Whisper vocabularies ({sizes}): openai-whisper will load "
        "the model but decode its ids with its own tokenizer"
    )
