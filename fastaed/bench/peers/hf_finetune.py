"""Client of the Hugging Face fine-tuning peer: runs ``hf_finetune_runner.py`` with ``.venv-whisper``'s
python.

Baseline (b) of issue 15: the ``transformers`` ``Seq2SeqTrainer`` recipe users run today (30 s padded
input), on a Hugging Face folder written by ``fastaed export hf`` from the checkpoint fastaed's own recipes
start from. The runner's docstring lists its subcommands and request fields.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from fastaed.bench.peers.whisper import PeerError, _candidate_python, peer_imports, run_whisper_peer

HF_RUNNER = Path(__file__).with_name("hf_finetune_runner.py")
_HF_MODULES = "torch, transformers, accelerate, soundfile, numpy"  # what the runner (and Trainer) import
_SLACK_S = 900.0  # model load, manifest check and saving on top of the training budget


@dataclass(frozen=True)
class HFFinetuneConfig:
    """The Hugging Face recipe's settings (the runner's ``train`` request)."""

    batch_size: int = 8  # per_device_train_batch_size: a fixed number of utterances, each padded to 30 s
    lr: float = 1e-5  # peak learning rate, held constant after warmup
    warmup_steps: int = 50  # linear warmup steps (constant_with_warmup schedule)
    betas: tuple[float, float] = (0.9, 0.98)  # AdamW betas
    weight_decay: float = 0.0
    grad_clip: float = 1.0  # max gradient norm
    max_steps: int | None = None  # stop after this many steps ...
    time_budget_s: float | None = None  # ... or at the first step end past this many training seconds
    threads: int = 1  # torch CPU threads (and the BLAS/OpenMP pools)
    seed: int = 0
    save_model: bool = True  # write model + tokenizer + feature extractor to out_dir/model
    language: str = "en"  # the prefix language of a multilingual model (every manifest line must match)
    dataloader_workers: int = 0  # 0: features are computed in the training process, as on 2 cores

    def __post_init__(self) -> None:
        if self.max_steps is None and self.time_budget_s is None:
            raise ValueError("HFFinetuneConfig needs max_steps or time_budget_s")
        if self.batch_size < 1 or self.threads < 1 or self.warmup_steps < 0:
            raise ValueError(f"batch_size and threads must be >= 1, warmup_steps >= 0: {self}")


class HFLogits(NamedTuple):
    """What :func:`hf_logits` returns."""

    logits: list[np.ndarray]  # one (U, V) float32 array per example
    labels: list[list[int]]  # the train recipe's labels of each text: prefix + text + end-of-text
    features: list[np.ndarray]  # WhisperFeatureExtractor's (n_mels, 3000) float32 log-mel of each audio file


def hf_peer_python() -> Path | None:
    """The peer venv's python if it imports torch, transformers, accelerate and soundfile (else None)."""
    python = _candidate_python()
    if not python.exists():
        return None
    return python if peer_imports(python, _HF_MODULES) else None


def _python() -> Path:
    python = hf_peer_python()
    if python is None:
        raise PeerError(
            f"no Hugging Face peer: {_candidate_python()} is missing or cannot import {_HF_MODULES} "
            "(run `make whisper-venv`)"
        )
    return python


def _thread_env(threads: int) -> dict[str, str]:
    n = str(threads)
    return {"OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n}


def run_hf_finetune(
    model_dir: str | Path, manifest: str | Path, out_dir: str | Path, config: HFFinetuneConfig
) -> dict:
    """Fine-tune the Hugging Face Whisper folder ``model_dir`` on a NeMo manifest with ``Seq2SeqTrainer``.

    Returns the runner's summary (also in ``out_dir/summary.json``): steps, train_time_s, audio_s,
    audio_s_per_s, utterances_seen, mean_batch_size, input_padding, output_padding, peak_mem_mb, first_loss,
    final_loss, versions, metrics (the per-step ``metrics.jsonl``) and model_dir (the trained folder, which
    ``fastaed import whisper`` reads back).

    Raises:
        PeerError: no peer venv, a bad manifest line (the message names file, line and field), or a failure.
    """
    budget = config.time_budget_s
    request = asdict(config)
    return run_whisper_peer(
        "train",
        timeout_s=None if budget is None else budget + _SLACK_S,
        runner=HF_RUNNER,
        python=_python(),
        env=_thread_env(config.threads),
        model=Path(model_dir).resolve(),
        manifest=Path(manifest).resolve(),
        out_dir=Path(out_dir).resolve(),
        **request,
    )


def hf_logits(
    model_dir: str | Path,
    features: list[np.ndarray],
    tokens: list[list[int]],
    *,
    texts: list[str] | None = None,
    audio: list[str | Path] | None = None,
    threads: int = 1,
) -> HFLogits:
    """Teacher-forced logits of ``transformers``' ``WhisperForConditionalGeneration`` (float32, eval).

    features: one (n_mels, 3000) array per example; tokens: its decoder input ids. Also returns the recipe's
    training labels for ``texts`` and its ``WhisperFeatureExtractor`` features of each ``audio`` file.
    """
    with tempfile.TemporaryDirectory(prefix="fastaed-hf-logits-") as tmp:
        paths = []
        for i, x in enumerate(features):
            paths.append(Path(tmp) / f"features_{i:05d}.npy")
            np.save(paths[-1], np.ascontiguousarray(x, dtype=np.float32))
        response = run_whisper_peer(
            "logits",
            timeout_s=600.0,
            runner=HF_RUNNER,
            python=_python(),
            env=_thread_env(threads),
            model=Path(model_dir).resolve(),
            features=paths,
            tokens=tokens,
            texts=texts or [],
            audio=[Path(a).resolve() for a in audio or []],
            out_dir=Path(tmp) / "out",
            threads=threads,
        )
        return HFLogits(
            logits=[np.load(p) for p in response["logits"]],
            labels=response.get("labels", []),
            features=[np.load(p) for p in response.get("features", [])],
        )
