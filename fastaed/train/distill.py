"""Self-distillation: a frozen teacher's view of every training utterance, and the loss terms against it.

A run with ``distill.teacher`` set (``fastaed adapt`` writes one; any fine-tune may add it) trains its
student against the teacher checkpoint run on its *own* input shape (``distill.teacher_input``, Whisper's
30 s padded window by default) while the student sees what the run's front end gives it (the real frames
alone). The teacher never changes, and an utterance's teacher-forced pass depends only on its audio and its
token sequence, so it is computed once, before the first step (:func:`build_teacher_cache`), and read
back at every epoch: the padded encoder, 5-10x the cost of the unpadded student's forward and backward on
short clips, runs once per utterance instead of once per epoch.

What is kept per utterance: the teacher's final decoder states (U - 1, D) in float16 (final LayerNorm
outputs, the vectors the output matrix multiplies), plus the teacher's output matrix once. From them the
loss recomputes the teacher's logits exactly (up to the float16 rounding of the states): a full (U, V)
distribution per utterance would be ~130x larger for Whisper's 51,864 tokens.

The cache is keyed by the training index (manifest contents, tokenizer, bad-input policy), the teacher's
weights (their sha256) and its input shape; a stale or foreign cache is rebuilt, never used. Rank 0 builds
it, the other ranks wait and read it (``distributed.rank0_first``).

Loss (``step.compute_loss``), per counted target position (the cross-entropy's), divided by the step's token
count like the cross-entropy so gradient accumulation, OOM splits and ranks stay exact::

    ce_weight · CE(student, transcript) + kl_weight · τ² KL(teacher_τ ‖ student_τ) + state_weight · |s - t|²/D

Dimensions: N utterances, U decoder positions, D decoder width, V vocabulary.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load, save_file
from tqdm.auto import tqdm

from fastaed.data.dataset import AEDDataset, Batch
from fastaed.data.frontend import build_frontend, frontend_config
from fastaed.data.index import MetadataIndex
from fastaed.data.whisper_features import WhisperFeatureConfig
from fastaed.formats import load_model, read_checkpoint_meta
from fastaed.formats.native import CHECKSUMS_FILE
from fastaed.model import EncoderDecoderModel

CACHE_FILE = "teacher_cache.safetensors"
FORMAT = 1


@dataclass(frozen=True)
class TeacherIdentity:
    """What a teacher cache was computed from; a cache is used only for the same identity."""

    index_key: str  # the training index's key (manifest contents, tokenizer, bad-input policy)
    teacher_sha256: str  # the teacher's weights file
    teacher_input: str  # "padded" | "unpadded" (Whisper front ends) | "native"
    items: int  # utterances in the index

    @classmethod
    def of(cls, teacher: Path, teacher_input: str, index: MetadataIndex) -> TeacherIdentity:
        return cls(index.key, weights_digest(teacher), teacher_input, len(index))


def weights_digest(checkpoint: Path) -> str:
    """The sha256 of a checkpoint's weights file as its checksum listing records it (its size otherwise)."""
    listed = checkpoint / CHECKSUMS_FILE
    listing = json.loads(listed.read_text()) if listed.is_file() else {}
    entry = (listing.get("files") or {}).get("model.safetensors") or {}
    return entry.get("sha256") or f"size:{(checkpoint / 'model.safetensors').stat().st_size}"


@dataclass
class TeacherCache:
    """Every utterance's teacher states and the teacher's output layer.

    states: (P, D) float16, utterance i's rows at ``offsets[i]:offsets[i + 1]`` (its U_i - 1 teacher-forced
    positions; none for an utterance the teacher could not read, which training skips the same way);
    weight: (V, D) and bias: (V,) or None, the teacher's output layer.
    """

    identity: TeacherIdentity
    states: torch.Tensor
    offsets: torch.Tensor  # (N + 1,) int64
    weight: torch.Tensor
    bias: torch.Tensor | None
    build_s: float = 0.0  # wall time of the teacher pass that made it

    def save(self, path: Path) -> None:
        """Atomically (a temporary sibling, then rename): a killed build leaves no half cache."""
        tensors = {"states": self.states, "offsets": self.offsets, "weight": self.weight}
        if self.bias is not None:
            tensors["bias"] = self.bias
        meta = {"format": str(FORMAT), "identity": json.dumps(dataclasses.asdict(self.identity)),
                "build_s": str(self.build_s)}  # fmt: skip
        tmp = path.with_name(f".{path.name}.tmp")
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=meta)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> TeacherCache | None:
        """The cache at ``path``, or None when there is none or it is unreadable (it is then rebuilt)."""
        if not path.is_file():
            return None
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
            if meta.get("format") != str(FORMAT):
                return None
            identity = TeacherIdentity(**json.loads(meta["identity"]))
            t = load(path.read_bytes())  # in memory, not mapped: the file may be replaced under a run
        except Exception:  # noqa: BLE001 - a damaged cache is recomputed, not trusted
            return None
        return cls(identity, t["states"], t["offsets"], t["weight"], t.get("bias"), float(meta["build_s"]))

    def rows(self, indices: list[int], length: int, device: torch.device) -> torch.Tensor:
        """(B, length, D) float32 teacher states of ``indices``, zero past each utterance's positions."""
        per_item = [self.states[int(self.offsets[i]) : int(self.offsets[i + 1])] for i in indices]
        return stack_rows(per_item, length, self.states.shape[1], device)


def stack_rows(per_item: list[torch.Tensor], length: int, width: int, device: torch.device) -> torch.Tensor:
    """(B, length, width) float32: each item's (n_i, width) rows, cut or zero-padded to ``length``."""
    out = torch.zeros(len(per_item), length, width)
    for b, rows in enumerate(per_item):
        n = min(len(rows), length)
        out[b, :n] = rows[:n].float()
    return out.to(device)


@torch.no_grad()
def teacher_states(model: EncoderDecoderModel, frontend: torch.nn.Module, batch: Batch) -> list[torch.Tensor]:
    """The teacher-forced final decoder states of every row of ``batch`` (its audio through the teacher's
    own front end), each (U_i - 1, D) float16 on the CPU: what a cache holds and a live teacher keeps."""
    feats, feat_lens = frontend(batch.audio, batch.audio_lens)
    enc, enc_lens = model.encode(feats, feat_lens)
    states = model.decode_features(enc, enc_lens, batch.dec_inputs)  # (B, U - 1, D)
    return [states[row, : int(n)].to(torch.float16).cpu() for row, n in enumerate(batch.dec_lens)]


@dataclass(frozen=True)
class DistillWeights:
    """The loss's weights (``distill`` section of the training config)."""

    ce: float
    kl: float
    state: float
    temperature: float


class LiveTeacher:
    """``distill.cache: lazy``: the teacher run on each utterance the first time a batch holds it, its states
    kept in memory for later epochs (the same float16 rows a cache built beforehand holds, so a resumed run,
    which computes them again, trains on the same numbers). For fine-tunes on data too large to pass over
    before the first step."""

    def __init__(self, teacher: Path, teacher_input: str, device: torch.device):
        self.model: EncoderDecoderModel = load_model(teacher, map_location=device).eval()
        self.frontend = teacher_frontend(teacher, teacher_input).to(device)
        self.memo: dict[int, torch.Tensor] = {}

    def rows(self, piece: Batch, length: int, device: torch.device) -> torch.Tensor:
        """(B, length, D) float32 teacher states of ``piece``'s utterances, zero past each one's positions."""
        todo = [b for b, i in enumerate(piece.indices) if i not in self.memo]
        if todo:
            sel = torch.tensor(todo, device=piece.audio.device)
            lens = piece.audio_lens[sel]
            rows = Batch(
                indices=[piece.indices[b] for b in todo], audio=piece.audio[sel][:, : int(lens.max())],
                audio_lens=lens, tokens=piece.tokens[sel], token_lens=piece.token_lens[sel],
                prompt_lens=piece.prompt_lens[sel], pad_id=piece.pad_id,
            )  # fmt: skip
            self.memo.update(zip(rows.indices, teacher_states(self.model, self.frontend, rows)))
        d = self.model.config.decoder.d_model
        return stack_rows([self.memo[i] for i in piece.indices], length, d, device)


class Distiller:
    """The teacher side of a step: teacher states (from a cache built beforehand, or a live teacher) ->
    teacher logits, and the weights of the three terms."""

    def __init__(self, source: TeacherCache | LiveTeacher, weights: DistillWeights, device: torch.device):
        self.source = source
        self.weights = weights
        if isinstance(source, TeacherCache):
            weight, bias = source.weight, source.bias
        else:
            dec = source.model.decoder
            bias = dec.output_bias.detach() if dec.output_bias is not None else None
            weight = dec.output_weight.detach()
        self.weight = weight.float().to(device)
        self.bias = bias.float().to(device) if bias is not None else None

    def teacher(self, piece: Batch, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher (logits (N, V), states (N, D)) at the N True positions of ``mask`` (B, U)."""
        if isinstance(self.source, LiveTeacher):
            states = self.source.rows(piece, mask.shape[1], mask.device)[mask]
            return F.linear(states, self.weight, self.bias), states
        cache = self.source
        missing = [i for i in piece.indices if cache.offsets[i + 1] == cache.offsets[i]]
        if missing:  # audio the teacher could not read but the student could: the cache is not this data's
            raise RuntimeError(f"the teacher cache has no states for utterances {missing[:5]}; rebuild it")
        states = cache.rows(piece.indices, mask.shape[1], mask.device)[mask]  # (N, D)
        return F.linear(states, self.weight, self.bias), states


def teacher_frontend(teacher: Path, teacher_input: str) -> torch.nn.Module:
    """The teacher's front end with its input shape forced to ``teacher_input`` (Whisper only)."""
    frontend = frontend_config(read_checkpoint_meta(teacher).get("frontend"))
    if isinstance(frontend, WhisperFeatureConfig):
        frontend = dataclasses.replace(frontend, input=teacher_input)
    elif teacher_input != "native":
        raise ValueError(
            f"distill.teacher_input={teacher_input!r}: {teacher} has a log-mel front end without a padded "
            "mode; use 'native'"
        )
    return build_frontend(frontend).eval()


@torch.no_grad()
def build_teacher_cache(
    teacher: Path,
    teacher_input: str,
    dataset: AEDDataset,
    *,
    batch_size: int = 8,
    device: torch.device | None = None,
    progress: bool = True,
) -> TeacherCache:
    """Run ``teacher`` over every utterance of ``dataset`` (teacher-forced on the dataset's own token
    sequences, so positions line up with training's) and keep its final decoder states.

    Utterances go in duration order, ``batch_size`` at a time (a padded Whisper batch costs its windows,
    whatever the clips' lengths). Audio the dataset cannot read gets no rows (training skips it too).
    """
    t0 = time.perf_counter()
    device = device or torch.device("cpu")
    model: EncoderDecoderModel = load_model(teacher, map_location=device).eval()
    frontend = teacher_frontend(teacher, teacher_input).to(device)
    index = dataset.index
    # A padded teacher takes one window; longer clips are rejected by the trainer's length limits anyway
    # (the student has as many positions), so they get no rows instead of stopping the pass.
    config = getattr(frontend, "config", None)
    fits = np.ones(len(index), dtype=bool)
    if teacher_input == "padded" and isinstance(config, WhisperFeatureConfig):
        fits = index.durations <= config.chunk_samples / config.sample_rate
    order = [int(i) for i in np.argsort(index.durations, kind="stable") if fits[i]]
    counts = np.zeros(len(index), dtype=np.int64)
    chunks: dict[int, torch.Tensor] = {}
    bar = tqdm(total=len(order), desc="teacher", unit="utt", disable=not progress, dynamic_ncols=True)
    for start in range(0, len(order), batch_size):
        batch = dataset.collate([dataset[i] for i in order[start : start + batch_size]])
        bar.update(min(batch_size, len(order) - start))
        if not len(batch):
            continue
        for i, rows in zip(batch.indices, teacher_states(model, frontend, batch.to(device))):
            chunks[i], counts[i] = rows, len(rows)
    bar.close()
    offsets = torch.zeros(len(index) + 1, dtype=torch.int64)
    offsets[1:] = torch.from_numpy(np.cumsum(counts))
    d = model.config.decoder.d_model
    states = torch.cat([chunks[i] for i in range(len(index)) if i in chunks]) if chunks else torch.zeros(0, d)
    dec = model.decoder
    weight = dec.output_weight.detach().float().cpu()
    bias = dec.output_bias.detach().float().cpu() if dec.output_bias is not None else None
    identity = TeacherIdentity.of(teacher, teacher_input, index)
    return TeacherCache(identity, states.to(torch.float16), offsets, weight, bias, time.perf_counter() - t0)


def describe(cache: TeacherCache) -> dict[str, Any]:
    """A summary line's worth: utterances covered, positions, build time."""
    covered = int((cache.offsets[1:] > cache.offsets[:-1]).sum())
    return {"utterances": covered, "positions": int(cache.offsets[-1]), "build_s": round(cache.build_s, 1)}
