"""Whisper's tokenizer: byte-level BPE (GPT-2's, read from ``tokenizer.json`` by the ``tokenizers`` library)
with Whisper's special tokens, prompt and token suppression.

Id layout: the BPE vocabulary first, then ``<|endoftext|>``, ``<|startoftranscript|>``, one token per
language (multilingual models), ``<|translate|>``, ``<|transcribe|>``, ``<|startoflm|>``, ``<|startofprev|>``,
``<|nospeech|>`` (``<|nocaptions|>`` in older files), ``<|notimestamps|>`` and 1501 timestamps to the end of
the model's vocabulary. Every id is read from the file by its text, never assumed.

Prompt (no timestamps): multilingual ``<|startoftranscript|><|lang|><|transcribe or translate|>
<|notimestamps|>``; English-only models (vocabulary of 51864) ``<|startoftranscript|><|notimestamps|>``.
Whisper only translates *into English*: ``task=translate`` needs ``target_lang="en"``.

Suppression, as Whisper's engines apply it: at every step the non-speech symbols (``suppress_ids``, from the
model's own config when it has one, else derived from the vocabulary the way Whisper does) and the task/
start tokens; at the first generated step also the blank (``" "``) and ``<|endoftext|>``.

A tokenizer folder holds the original ``tokenizer.json`` and ``whisper.json`` (kind ``"whisper-bpe"``,
vocabulary size, suppression lists, the language codes).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer as HFTokenizer

from fastaed.data import errors as E
from fastaed.data.errors import BadInputError
from fastaed.data.manifest import Utterance

KIND = "whisper-bpe"
META_FILE = "whisper.json"
BPE_FILE = "tokenizer.json"
ENGLISH_ONLY_VOCAB = 51864  # Whisper's English-only models; multilingual ones have >= 51865
# Whisper's list of symbols that are not speech (as in its engines): single-token forms are suppressed.
_NON_SPEECH_SYMBOLS = list('"#()*+/:;<=>@[\\]^_`{|}~「」『』') + (
    "<< >> <<< >>> -- --- -( -[ (' (\" (( )) ((( ))) [[ ]] {{ }} ♪♪ ♪♪♪".split()
)
_MUSIC = set("♩♪♫♬♭♮♯")


class WhisperTokenizer:
    """Text <-> ids plus Whisper's prompt and suppression lists. Picklable."""

    def __init__(
        self,
        bpe_json: str,
        vocab_size: int,
        suppress_ids: Sequence[int] | None = None,
        suppress_at_start_ids: Sequence[int] | None = None,
        multilingual: bool | None = None,
    ):
        self._json = bpe_json
        self.bpe = HFTokenizer.from_str(bpe_json)
        self.vocab_size = int(vocab_size)
        added = {t["content"]: t["id"] for t in json.loads(bpe_json).get("added_tokens", [])}
        self.special_ids = added

        def need(*names: str) -> int:
            for name in names:
                if name in added:
                    return added[name]
            raise ValueError(f"tokenizer.json lacks the special token {names[0]}")

        self.eos_id = need("<|endoftext|>")
        self.pad_id = self.eos_id  # Whisper has no pad token; padded targets are masked by length anyway
        self.sot_id = need("<|startoftranscript|>")
        self.translate_id = need("<|translate|>")
        self.transcribe_id = need("<|transcribe|>")
        self.sot_lm_id = need("<|startoflm|>")
        self.sot_prev_id = need("<|startofprev|>")
        self.no_speech_id = need("<|nospeech|>", "<|nocaptions|>")
        self.no_timestamps_id = need("<|notimestamps|>")
        self.timestamp_begin = self.no_timestamps_id + 1
        # Whisper's own rule (its released vocabularies); small models made for tests say it explicitly.
        self.multilingual = (
            self.vocab_size > ENGLISH_ONLY_VOCAB if multilingual is None else bool(multilingual)
        )
        languages = [
            t[2:-2]
            for t, i in sorted(added.items(), key=lambda kv: kv[1])
            if self.sot_id < i < self.translate_id
        ]
        self.languages = tuple(languages) if self.multilingual else ("en",)
        self.first_text_special = self.eos_id  # every id from here on is a special or a timestamp
        if suppress_ids is None:
            suppress_ids = self.non_speech_ids()
        self.suppress_ids = tuple(
            sorted(
                set(suppress_ids)
                | {self.transcribe_id, self.translate_id, self.sot_id, self.sot_prev_id, self.sot_lm_id}
            )
        )
        if suppress_at_start_ids is None:
            suppress_at_start_ids = [*self.bpe.encode(" ", add_special_tokens=False).ids, self.eos_id]
        self.suppress_at_start_ids = tuple(sorted(set(suppress_at_start_ids)))
        meta = json.dumps([self.vocab_size, self.suppress_ids, self.suppress_at_start_ids, self.multilingual])
        meta = meta.encode()
        self.identity = hashlib.sha256(bpe_json.encode() + meta).hexdigest()[:16]

    def __reduce__(self):
        return (
            WhisperTokenizer,
            (self._json, self.vocab_size, self.suppress_ids, self.suppress_at_start_ids, self.multilingual),
        )

    def non_speech_ids(self) -> list[int]:
        """Ids of symbols that are not speech (and " -", " '"), the way Whisper's decoders derive them."""

        def enc(text: str) -> list[int]:
            return self.bpe.encode(text, add_special_tokens=False).ids

        result = {enc(" -")[0], enc(" '")[0]}
        for symbol in _NON_SPEECH_SYMBOLS + sorted(_MUSIC):
            for ids in (enc(symbol), enc(" " + symbol)):
                if len(ids) == 1 or symbol in _MUSIC:
                    result.add(ids[0])
        return sorted(result)

    # ---- persistence -------------------------------------------------------------------------------
    @classmethod
    def from_files(cls, tokenizer_json: str | Path, vocab_size: int, config: dict[str, Any] | None = None):
        """From a ``tokenizer.json``; ``config``: a CTranslate2 ``config.json`` or Hugging Face
        ``generation_config.json`` whose suppression lists (and ``is_multilingual``) are used when present."""
        config = config or {}
        multilingual = config.get("is_multilingual")
        suppress = config.get("suppress_ids", config.get("suppress_tokens"))
        at_start = config.get("suppress_ids_begin", config.get("begin_suppress_tokens"))
        if isinstance(suppress, str):  # CTranslate2 may store lists as JSON text
            suppress = json.loads(suppress)
        if isinstance(at_start, str):
            at_start = json.loads(at_start)
        return cls(Path(tokenizer_json).read_text(), vocab_size, suppress, at_start, multilingual)

    @classmethod
    def load(cls, directory: str | Path) -> WhisperTokenizer:
        directory = Path(directory)
        meta = json.loads((directory / META_FILE).read_text())
        if meta.get("kind") != KIND:
            raise ValueError(f"{directory / META_FILE}: kind {meta.get('kind')!r}, expected {KIND!r}")
        return cls(
            (directory / BPE_FILE).read_text(),
            meta["vocab_size"],
            meta["suppress_ids"],
            meta["suppress_at_start_ids"],
            meta["multilingual"],
        )

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / BPE_FILE).write_text(self._json)
        meta = {
            "kind": KIND,
            "vocab_size": self.vocab_size,
            "multilingual": self.multilingual,
            "languages": list(self.languages),
            "suppress_ids": list(self.suppress_ids),
            "suppress_at_start_ids": list(self.suppress_at_start_ids),
            "identity": self.identity,
        }
        (directory / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")

    # ---- text --------------------------------------------------------------------------------------
    def encode_text(self, text: str) -> list[int]:
        """Text pieces of a transcript, with the leading space Whisper's outputs carry."""
        text = text.strip()
        return self.bpe.encode(" " + text, add_special_tokens=False).ids if text else []

    def encode_texts(self, texts: list[str], num_threads: int = 1) -> list[list[int]]:
        return [self.encode_text(t) for t in texts]

    def decode(self, ids: Iterable[int], *, strip: bool = True) -> str:
        """Ids -> text; specials and timestamps are dropped. ``strip=False`` keeps the leading space of a
        segment's text (as openai-whisper's segments have it)."""
        text = self.bpe.decode([i for i in ids if i < self.first_text_special])
        return text.strip() if strip else text

    def token_to_id(self, token: str) -> int:
        return self.special_ids[token]

    # ---- prompts -----------------------------------------------------------------------------------
    def language_id(self, lang: str, *, field: str = "source_lang", where: Utterance | None = None) -> int:
        tok = f"<|{lang}|>"
        if lang not in self.languages or tok not in self.special_ids:
            raise BadInputError(
                E.UNKNOWN_LANGUAGE,
                f"language {lang!r} is not one of this Whisper model's {len(self.languages)}",
                path=where.manifest if where else None,
                line=where.line if where else None,
                field=field,
            )
        return self.special_ids[tok]

    def prompt(
        self,
        source_lang: str,
        task: str,
        target_lang: str,
        pnc: bool = True,
        *,
        where: Utterance | None = None,
    ) -> list[int]:
        """``<|sot|>[<|lang|><|task|>]<|notimestamps|>``; pnc is ignored (Whisper always writes cased,
        punctuated text)."""
        if task == "translate" and target_lang != "en":
            raise BadInputError(
                E.BAD_FIELD,
                f"Whisper translates into English only, not into {target_lang!r}",
                path=where.manifest if where else None,
                line=where.line if where else None,
                field="target_lang",
            )
        if task not in ("transcribe", "translate"):
            raise ValueError(f"task must be transcribe or translate, got {task!r}")
        if not self.multilingual:
            self.language_id(source_lang, where=where)  # raises unless it is English
            if task == "translate":
                raise BadInputError(
                    E.BAD_FIELD,
                    "an English-only Whisper model cannot translate",
                    path=where.manifest if where else None,
                    line=where.line if where else None,
                    field="task",
                )
            return [self.sot_id, self.no_timestamps_id]
        task_id = self.translate_id if task == "translate" else self.transcribe_id
        return [self.sot_id, self.language_id(source_lang, where=where), task_id, self.no_timestamps_id]

    @property
    def prompt_length(self) -> int:
        """Prompt tokens before the transcript: 4 on multilingual models, 2 on English-only ones."""
        return 4 if self.multilingual else 2

    def utterance_prompt(self, utt: Utterance) -> list[int]:
        return self.prompt(utt.source_lang, utt.task, utt.target_lang, utt.pnc, where=utt)

    def sequence(self, utt: Utterance) -> list[int]:
        """Full decoder sequence: prompt + text pieces + EOS (the output length U)."""
        return [*self.utterance_prompt(utt), *self.encode_text(utt.target_text), self.eos_id]
