"""SentencePiece BPE tokenizer with Canary-style special tokens and prompts.

Id layout: the special tokens take ids ``0 .. S-1`` (pad first, so zero-initialised buffers are padding),
then the SentencePiece pieces follow at ``S + piece_id``. Keeping the specials out of the SentencePiece
model means they can never be produced by splitting ordinary text, and the language list can grow without
retraining the pieces.

The decoder sequence of one utterance (its length is the **output length U** used everywhere)::

    <|startoftranscript|> <|src_lang|> <|task|> <|tgt_lang|> <|pnc|>  text pieces ...  <|endoftext|>
    '------------------------ prompt (5 tokens) -----------------'

A tokenizer directory holds ``tokenizer.model`` (SentencePiece) and ``tokenizer.json`` (specials,
languages); :attr:`Tokenizer.identity` hashes both, so caches and checkpoints can tell tokenizers apart.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import sentencepiece as spm

from fastaed.data import canary_tokenizer, whisper_tokenizer
from fastaed.data import errors as E
from fastaed.data.errors import BadInputError
from fastaed.data.manifest import Utterance
from fastaed.data.text import clean_pnc, strip_pnc, target_form

PAD = "<pad>"
EOS = "<|endoftext|>"
SOT = "<|startoftranscript|>"
TASK_TOKENS = {"transcribe": "<|transcribe|>", "translate": "<|translate|>"}
PNC_TOKENS = {True: "<|pnc|>", False: "<|nopnc|>"}
PROMPT_LENGTH = 5  # sot, src_lang, task, tgt_lang, pnc
DEFAULT_LANGUAGES = ("en", "de", "es", "fr")
FORMAT_VERSION = 1


def language_token(lang: str) -> str:
    return f"<|{lang}|>"


@dataclass(frozen=True)
class TokenizerConfig:
    """How to train the SentencePiece part."""

    vocab_size: int = 1024  # pieces, excluding the special tokens
    model_type: str = "bpe"  # "bpe" | "unigram"
    character_coverage: float = 1.0  # small corpora: keep every character
    languages: tuple[str, ...] = DEFAULT_LANGUAGES  # extra codes found in the manifests are added
    seed_sentencepiece_size: int = 200_000

    def __post_init__(self):
        if self.vocab_size < 8:
            raise ValueError(f"vocab_size must be >= 8, got {self.vocab_size}")
        if self.model_type not in ("bpe", "unigram"):
            raise ValueError(f"model_type must be bpe or unigram, got {self.model_type!r}")


class Tokenizer:
    """Text <-> ids plus the Canary prompt. Picklable (DataLoader workers get a copy)."""

    def __init__(self, model_proto: bytes, languages: Sequence[str]):
        self._proto = model_proto
        self.languages = tuple(languages)
        self.sp = spm.SentencePieceProcessor(model_proto=model_proto)
        self.specials = [PAD, EOS, SOT, *TASK_TOKENS.values(), *PNC_TOKENS.values()]
        self.specials += [language_token(lang) for lang in self.languages]
        self.special_ids = {tok: i for i, tok in enumerate(self.specials)}
        self.num_specials = len(self.specials)
        self.pad_id = self.special_ids[PAD]
        self.eos_id = self.special_ids[EOS]
        self.sot_id = self.special_ids[SOT]
        meta = json.dumps({"specials": self.specials, "v": FORMAT_VERSION}).encode()
        self.identity = hashlib.sha256(model_proto + meta).hexdigest()[:16]

    def __reduce__(self):
        return (Tokenizer, (self._proto, self.languages))

    # ---- persistence -------------------------------------------------------------------------------
    @classmethod
    def load(cls, directory: str | Path) -> Tokenizer:
        directory = Path(directory)
        model, meta = directory / "tokenizer.model", directory / "tokenizer.json"
        for f in (model, meta):
            if not f.is_file():
                raise FileNotFoundError(
                    f"tokenizer file missing: {f} (train one with `fastaed tokenizer train`)"
                )
        info = json.loads(meta.read_text())
        if info.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{meta}: format_version {info.get('format_version')} != {FORMAT_VERSION}")
        return cls(model.read_bytes(), info["languages"])

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "tokenizer.model").write_bytes(self._proto)
        info = {
            "format_version": FORMAT_VERSION,
            "languages": list(self.languages),
            "specials": self.specials,
            "num_pieces": self.sp.get_piece_size(),
            "vocab_size": self.vocab_size,
            "identity": self.identity,
        }
        (directory / "tokenizer.json").write_text(json.dumps(info, indent=2) + "\n")

    # ---- text --------------------------------------------------------------------------------------
    @property
    def prompt_length(self) -> int:
        """Prompt tokens before the transcript (every prompt of this tokenizer has this length)."""
        return PROMPT_LENGTH

    @property
    def vocab_size(self) -> int:
        """Total ids: specials + SentencePiece pieces."""
        return self.num_specials + self.sp.get_piece_size()

    def encode_text(self, text: str) -> list[int]:
        off = self.num_specials
        return [off + i for i in self.sp.encode(text)]

    def encode_texts(self, texts: list[str], num_threads: int = 1) -> list[list[int]]:
        off = self.num_specials
        return [[off + i for i in ids] for ids in self.sp.encode(texts, num_threads=num_threads)]

    def decode(self, ids: Iterable[int]) -> str:
        """Ids -> text, ignoring special tokens (prompt, EOS, padding)."""
        off = self.num_specials
        return self.sp.decode([i - off for i in ids if i >= off])

    def token_to_id(self, token: str) -> int:
        return self.special_ids[token]

    # ---- prompts -----------------------------------------------------------------------------------
    def language_id(self, lang: str, *, field: str = "source_lang", where: Utterance | None = None) -> int:
        tok = language_token(lang)
        if tok not in self.special_ids:
            raise BadInputError(
                E.UNKNOWN_LANGUAGE,
                f"language {lang!r} has no token; this tokenizer knows {list(self.languages)}",
                path=where.manifest if where else None,
                line=where.line if where else None,
                field=field,
            )
        return self.special_ids[tok]

    def prompt(
        self, source_lang: str, task: str, target_lang: str, pnc: bool, *, where: Utterance | None = None
    ) -> list[int]:
        """The 5-token Canary prompt ``<|sot|><|src|><|task|><|tgt|><|pnc|>``."""
        if task not in TASK_TOKENS:
            raise ValueError(f"task must be one of {list(TASK_TOKENS)}, got {task!r}")
        return [
            self.sot_id,
            self.language_id(source_lang, field="source_lang", where=where),
            self.special_ids[TASK_TOKENS[task]],
            self.language_id(target_lang, field="target_lang", where=where),
            self.special_ids[PNC_TOKENS[bool(pnc)]],
        ]

    def utterance_prompt(self, utt: Utterance) -> list[int]:
        return self.prompt(utt.source_lang, utt.task, utt.target_lang, utt.pnc, where=utt)

    def sequence(self, utt: Utterance) -> list[int]:
        """Full decoder sequence: prompt + target pieces + EOS. ``len(sequence(u))`` is U."""
        return [
            *self.utterance_prompt(utt),
            *self.encode_text(target_form(utt.target_text, utt.pnc)),
            self.eos_id,
        ]


def train_tokenizer(texts: Iterable[str], out_dir: str | Path, config: TokenizerConfig) -> Tokenizer:
    """Train the SentencePiece part on ``texts`` and save the tokenizer to ``out_dir``.

    Each text is fed in both task forms (as written, and lower-cased without punctuation) so pieces exist
    for both pnc=yes and pnc=no targets. If the corpus is too small for ``vocab_size`` pieces, the model is
    trained with as many as the data supports (reported in tokenizer.json as ``num_pieces``).
    """

    def both_forms():
        for text in texts:
            yield clean_pnc(text)
            yield strip_pnc(text)

    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=both_forms(),
        model_writer=buffer,
        vocab_size=config.vocab_size,
        model_type=config.model_type,
        character_coverage=config.character_coverage,
        hard_vocab_limit=False,
        unk_id=0,
        bos_id=-1,
        eos_id=-1,
        pad_id=-1,
        seed_sentencepiece_size=config.seed_sentencepiece_size,
        num_threads=2,
        minloglevel=2,
    )
    tok = Tokenizer(buffer.getvalue(), config.languages)
    tok.save(out_dir)
    return tok


def load_tokenizer(directory: str | Path):
    """The tokenizer saved in ``directory``, whatever its kind: Whisper's byte-level BPE (``whisper.json``),
    NeMo's Canary aggregate (``tokenizer.json`` with ``"kind": "canary-aggregate"``) or fastaed's own
    SentencePiece tokenizer (``tokenizer.model`` + ``tokenizer.json``)."""
    directory = Path(directory)
    if (directory / whisper_tokenizer.META_FILE).is_file():
        return whisper_tokenizer.WhisperTokenizer.load(directory)
    if _kind(directory) == canary_tokenizer.KIND:
        return canary_tokenizer.CanaryTokenizer.load(directory)
    return Tokenizer.load(directory)


def _kind(directory: Path) -> str | None:
    """The ``kind`` in ``tokenizer.json`` (None when absent: fastaed's SentencePiece tokenizer)."""
    try:
        info = json.loads((directory / "tokenizer.json").read_text())
    except (OSError, ValueError):
        return None
    return info.get("kind") if isinstance(info, dict) else None


def is_tokenizer_dir(directory: str | Path) -> bool:
    """Whether ``directory`` holds a tokenizer :func:`load_tokenizer` can read."""
    directory = Path(directory)
    if (directory / whisper_tokenizer.META_FILE).is_file():
        return True
    if _kind(directory) == canary_tokenizer.KIND:
        return True
    return (directory / "tokenizer.json").is_file() and (directory / "tokenizer.model").is_file()
