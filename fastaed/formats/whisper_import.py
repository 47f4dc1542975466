"""``fastaed import whisper`` / ``fastaed export hf``: detect a Whisper source's format, convert it through
the canonical form (``whisper.py``), and write a fastaed checkpoint with its tokenizer and front end."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fastaed.data.tokenizer import load_tokenizer
from fastaed.data.whisper_features import WhisperFeatureConfig
from fastaed.data.whisper_tokenizer import WhisperTokenizer
from fastaed.formats import hf_whisper
from fastaed.formats.ctranslate2 import CTranslate2FormatError
from fastaed.formats.native import (
    CHECKPOINT_KIND,
    TOKENIZER_DIR,
    CheckpointError,
    is_checkpoint_folder,
    load_model,
    save_model,
    verify_tokenizer,
)
from fastaed.formats.whisper import (
    Canonical,
    WhisperDims,
    WhisperImportError,
    canonical_to_fastaed,
    check_encoder_positions,
    fastaed_to_canonical,
    read_ctranslate2,
    read_openai,
)
from fastaed.util.files import one_line
from fastaed.util.outputs import building_dir, check_output_dir

HF_KIND = "Hugging Face Whisper folder"

# ---- import --------------------------------------------------------------------------------------------


def detect_format(src: Path) -> str:
    """``ctranslate2`` | ``openai`` | ``hf`` for a source path (raises naming what is missing)."""
    if src.is_file():
        return "openai"
    if not src.is_dir():
        raise WhisperImportError(f"{src}: no such file or folder")
    if (src / "model.bin").is_file():
        return "ctranslate2"
    if (src / "config.json").is_file() and any(src.glob("model*.safetensors")):
        return "hf"
    raise WhisperImportError(
        f"{src}: neither a CTranslate2 folder (model.bin) nor a Hugging Face folder (config.json + "
        "model.safetensors) nor an OpenAI .pt file"
    )


def _read(src: Path, fmt: str) -> tuple[WhisperDims, Canonical, dict[str, Any]]:
    if fmt == "ctranslate2":
        return read_ctranslate2(src)
    if fmt == "hf":
        return hf_whisper.read_hf(src)
    return (*read_openai(src), {})


@contextmanager
def _named(path: Path, what: str) -> Iterator[None]:
    """The reader boundary: whatever a damaged or foreign file makes the parsers raise (a missing tensor or
    key, a wrong shape, bad JSON or safetensors) becomes one :class:`WhisperImportError` naming ``path``.
    Only parsing and converting run inside it (no writes), so an unexpected kind is a damaged file too."""
    try:
        yield
    except (WhisperImportError, CTranslate2FormatError):
        raise
    except Exception as e:  # noqa: BLE001 (the tokenizers library raises bare Exception for bad JSON)
        raise WhisperImportError(f"{path}: {what} ({one_line(e)})") from None


def import_whisper(
    src: str | Path,
    out_dir: str | Path,
    *,
    tokenizer_json: str | Path | None = None,
    name: str | None = None,
    frontend_override: dict[str, Any] | None = None,
) -> Path:
    """Convert a Whisper checkpoint into a fastaed checkpoint folder (weights + config + ``tokenizer/``).

    ``tokenizer_json``: needed for OpenAI ``.pt`` files (which carry none); CTranslate2 and Hugging Face
    folders bring their own ``tokenizer.json``. ``frontend_override``: fields of the stored front end
    (default: 30 s padded input, OpenAI's convention, the model's mel bins).
    """
    src, out = Path(src), Path(out_dir)
    check_output_dir(out, CHECKPOINT_KIND, legacy=is_checkpoint_folder)  # before any reading
    fmt = detect_format(src)
    if fmt == "openai" and tokenizer_json is None:
        raise WhisperImportError(f"{src}: an OpenAI checkpoint carries no tokenizer; pass --tokenizer FILE")
    tok_path = Path(tokenizer_json) if tokenizer_json else src / "tokenizer.json"
    if not tok_path.is_file():
        raise WhisperImportError(f"{tok_path}: tokenizer.json not found (pass --tokenizer FILE)")
    with _named(src, f"not a readable {fmt} Whisper checkpoint"):
        dims, state, config = _read(src, fmt)
        check_encoder_positions(dims, state, str(src))
        name = name or f"whisper-{src.stem if src.is_file() else src.name}"
        model = canonical_to_fastaed(dims, state, name)
    with _named(tok_path, "not a Whisper tokenizer.json for this model"):
        tokenizer = WhisperTokenizer.from_files(tok_path, dims.n_vocab, config)
    frontend = WhisperFeatureConfig(**{"n_mels": dims.n_mels, **(frontend_override or {})})
    if frontend.n_mels != dims.n_mels:
        raise WhisperImportError(f"front end has {frontend.n_mels} mel bins, the model takes {dims.n_mels}")
    extra = {"source": {"format": fmt, "path": str(src.resolve()), "dims": asdict(dims)}}
    frontend_dict = {"kind": "whisper", **asdict(frontend)}
    # Built beside ``out`` and renamed in: a folder of the user's is refused, never deleted.
    with building_dir(out, CHECKPOINT_KIND, "import whisper", legacy=is_checkpoint_folder) as tmp:
        save_model(model, tmp, tokenizer=tokenizer, extra=extra, frontend=frontend_dict)
    return out


def export_hf(checkpoint: str | Path, out_dir: str | Path) -> Path:
    """Write a fastaed Whisper checkpoint as a Hugging Face folder (``hf_whisper.write_hf``), built beside
    ``out_dir`` and renamed in (a folder fastaed did not write is refused)."""
    checkpoint = Path(checkpoint)
    check_output_dir(out_dir, HF_KIND)
    model = load_model(checkpoint)
    verify_tokenizer(checkpoint)
    tokenizer = load_tokenizer(checkpoint / TOKENIZER_DIR)
    if not isinstance(tokenizer, WhisperTokenizer):
        raise CheckpointError(
            f"{checkpoint}: not a Whisper checkpoint (its tokenizer is {type(tokenizer).__name__})"
        )
    try:
        dims, canonical = fastaed_to_canonical(model)
    except ValueError as e:
        raise CheckpointError(f"{checkpoint}: {e}") from None
    with building_dir(out_dir, HF_KIND, "export hf") as tmp:
        hf_whisper.write_hf(dims, canonical, tmp, tokenizer)
    return Path(out_dir)
