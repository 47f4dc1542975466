"""NeMo's Canary tokenizer: an aggregate of SentencePiece models, with the ``canary`` / ``canary2`` prompts.

A Canary ``.nemo`` carries several SentencePiece models: ``spl_tokens`` (the special tokens, each a
user-defined piece) and one BPE model per language. NeMo's ``AggregateTokenizer`` concatenates their piece
lists in the order the config lists them, so a piece's id is its id in its own model plus the sizes of the
models before it. Text is encoded with the model of its language; ids are decoded by finding the model whose
range holds them. The decoder's output layer is wider (padded to a multiple of 8): ids past
:attr:`CanaryTokenizer.vocab_size` exist in the model but mean nothing.

Prompts (the decoder's first tokens; NeMo's ``canary`` and ``canary2`` prompt formats)::

    canary   <|startoftranscript|> <|src|> <|transcribe|>|<|translate|> <|tgt|> <|pnc|>|<|nopnc|>
    canary2  <|startofcontext|> <|startoftranscript|> <|emo:undefined|> <|src|> <|tgt|> <|pnc|>|<|nopnc|>
             <|noitn|> <|notimestamp|> <|nodiarize|>

A tokenizer folder holds ``tokenizer.json`` (``"kind": "canary-aggregate"``, the prompt format and the parts
in order) and one ``<part>.model`` per part.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import sentencepiece as spm

from fastaed.data import errors as E
from fastaed.data.errors import BadInputError
from fastaed.data.manifest import Utterance
from fastaed.data.text import target_form

KIND = "canary-aggregate"
FORMAT_VERSION = 1
SPECIAL_PART = "spl_tokens"  # NeMo's name for the special-token model
PROMPT_FORMATS = ("canary", "canary2")
PAD, EOS, SOT, BOCTX = "<pad>", "<|endoftext|>", "<|startoftranscript|>", "<|startofcontext|>"
TASK_TOKENS = {"transcribe": "<|transcribe|>", "translate": "<|translate|>"}
PNC_TOKENS = {True: "<|pnc|>", False: "<|nopnc|>"}
CANARY2_DEFAULTS = ("<|emo:undefined|>", "<|noitn|>", "<|notimestamp|>", "<|nodiarize|>")
# NeMo maps Canary-1 two-letter codes to Canary-2 locale names when only those exist.
_LOCALES = {"en": "en-US", "es": "es-ES", "fr": "fr-FR", "de": "de-DE"}
_SPECIAL = re.compile(r"<\|.+\|>")
WORD_BOUNDARY = "\u2581"  # SentencePiece's "▁"


def padded_vocab_size(vocab_size: int) -> int:
    """The decoder's output width for ``vocab_size`` ids: NeMo rounds up to a multiple of 8."""
    return 8 * -(-vocab_size // 8)


class CanaryTokenizer:
    """Text <-> ids of NeMo's aggregate tokenizer, plus the Canary prompts. Picklable."""

    def __init__(self, parts: Sequence[tuple[str, bytes]], prompt_format: str):
        if prompt_format not in PROMPT_FORMATS:
            raise ValueError(f"prompt format must be one of {PROMPT_FORMATS}, got {prompt_format!r}")
        names = [name for name, _ in parts]
        if SPECIAL_PART not in names or len(set(names)) != len(names) or len(names) < 2:
            raise ValueError(f"need a {SPECIAL_PART!r} part and at least one language, got {names}")
        self.parts = tuple((name, bytes(proto)) for name, proto in parts)
        self.prompt_format = prompt_format
        self.models = {name: spm.SentencePieceProcessor(model_proto=proto) for name, proto in self.parts}
        self.offsets: dict[str, int] = {}
        self.pieces: list[str] = []  # every id's piece, in aggregate order
        for name, _ in self.parts:
            self.offsets[name] = len(self.pieces)
            sp = self.models[name]
            self.pieces += [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
        self.languages = tuple(n for n in names if n != SPECIAL_PART)
        base = self.offsets[SPECIAL_PART]
        special_model = self.models[SPECIAL_PART]
        self.special_ids = {
            piece: base + i
            for i in range(special_model.get_piece_size())
            if _SPECIAL.fullmatch(piece := special_model.id_to_piece(i)) or piece == PAD
        }
        for token in (PAD, EOS, SOT):
            if token not in self.special_ids:
                raise ValueError(f"the {SPECIAL_PART} model has no {token} token")
        self.pad_id, self.eos_id, self.sot_id = (self.special_ids[t] for t in (PAD, EOS, SOT))
        digest = hashlib.sha256(json.dumps({"format": prompt_format, "names": names}).encode())
        for _, proto in self.parts:
            digest.update(proto)
        self.identity = digest.hexdigest()[:16]

    def __reduce__(self):
        return (CanaryTokenizer, (self.parts, self.prompt_format))

    # ---- persistence -------------------------------------------------------------------------------
    @classmethod
    def load(cls, directory: str | Path) -> CanaryTokenizer:
        directory = Path(directory)
        meta_path = directory / "tokenizer.json"
        info = json.loads(meta_path.read_text())
        if info.get("kind") != KIND:
            raise ValueError(f"{meta_path}: kind {info.get('kind')!r}, expected {KIND!r}")
        if info.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{meta_path}: format_version {info.get('format_version')} != {FORMAT_VERSION}")
        parts = []
        for part in info["parts"]:
            path = directory / part["file"]
            if not path.is_file():
                raise FileNotFoundError(f"tokenizer file missing: {path} (listed in {meta_path})")
            parts.append((part["name"], path.read_bytes()))
        return cls(parts, info["prompt_format"])

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        listed = []
        for name, proto in self.parts:
            (directory / f"{name}.model").write_bytes(proto)
            listed.append(
                {"name": name, "file": f"{name}.model", "pieces": self.models[name].get_piece_size()}
            )
        info = {
            "kind": KIND,
            "format_version": FORMAT_VERSION,
            "prompt_format": self.prompt_format,
            "parts": listed,
            "languages": list(self.languages),
            "vocab_size": self.vocab_size,
            "model_vocab_size": self.model_vocab_size,
            "identity": self.identity,
        }
        (directory / "tokenizer.json").write_text(json.dumps(info, indent=2) + "\n")

    # ---- text --------------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """Ids the tokenizer can produce and read back (NeMo's aggregate vocabulary)."""
        return len(self.pieces)

    @property
    def model_vocab_size(self) -> int:
        """The decoder's output width: :attr:`vocab_size` padded to a multiple of 8, as NeMo builds it."""
        return padded_vocab_size(self.vocab_size)

    @property
    def prompt_length(self) -> int:
        return 5 if self.prompt_format == "canary" else 5 + len(CANARY2_DEFAULTS)

    def text_part(self, lang: str, *, field: str = "target_lang", where: Utterance | None = None) -> str:
        """The part that encodes text of language ``lang`` (``en`` also finds ``en-US``, as NeMo does)."""
        for name in (lang, _LOCALES.get(lang)):
            if name in self.languages:
                return name
        raise self._unknown(lang, field, where, f"no text model for language {lang!r}")

    def encode_text(self, text: str, lang: str | None = None) -> list[int]:
        """Ids of ``text`` in language ``lang`` (default: the first language)."""
        part = self.languages[0] if lang is None else self.text_part(lang)
        offset = self.offsets[part]
        return [offset + i for i in self.models[part].encode(text)]

    def encode_texts(
        self, texts: list[str], num_threads: int = 1, lang: str | None = None
    ) -> list[list[int]]:
        return [self.encode_text(t, lang) for t in texts]

    def decode(self, ids: Iterable[int]) -> str:
        """Ids -> text exactly as NeMo's ``transcribe()`` writes it: trailing EOS/padding dropped (its
        ``format_hypotheses``), then ``AggregateTokenizer.ids_to_text`` (every piece joined, special tokens
        included, word boundaries as spaces); outer spaces stripped and ids past the vocabulary skipped."""
        ids = list(ids)
        while ids and ids[-1] in (self.pad_id, self.eos_id):
            ids.pop()
        pieces = [self.pieces[i] for i in ids if 0 <= i < len(self.pieces)]
        return "".join(pieces).replace(WORD_BOUNDARY, " ").strip()

    def token_to_id(self, token: str) -> int:
        return self.special_ids[token]

    # ---- prompts -----------------------------------------------------------------------------------
    def language_id(self, lang: str, *, field: str = "source_lang", where: Utterance | None = None) -> int:
        for name in (lang, _LOCALES.get(lang)):
            if name is not None and (tok := f"<|{name}|>") in self.special_ids:
                return self.special_ids[tok]
        raise self._unknown(lang, field, where, f"language {lang!r} has no prompt token")

    def prompt(
        self, source_lang: str, task: str, target_lang: str, pnc: bool, *, where: Utterance | None = None
    ) -> list[int]:
        """The decoder prompt of this tokenizer's format."""
        if task not in TASK_TOKENS:
            raise ValueError(f"task must be one of {list(TASK_TOKENS)}, got {task!r}")
        src = self.language_id(source_lang, field="source_lang", where=where)
        tgt = self.language_id(target_lang, field="target_lang", where=where)
        pnc_id = self._special(PNC_TOKENS[bool(pnc)])
        if self.prompt_format == "canary":
            return [self.sot_id, src, self._special(TASK_TOKENS[task]), tgt, pnc_id]
        # canary2 has no task token: translation is implied by source != target.
        emotion, *flags = (self._special(t) for t in CANARY2_DEFAULTS)
        return [self._special(BOCTX), self.sot_id, emotion, src, tgt, pnc_id, *flags]

    def utterance_prompt(self, utt: Utterance) -> list[int]:
        return self.prompt(utt.source_lang, utt.task, utt.target_lang, utt.pnc, where=utt)

    def sequence(self, utt: Utterance) -> list[int]:
        """Full decoder sequence: prompt + target text (in the target language's model) + EOS."""
        text = target_form(utt.target_text, utt.pnc)
        self.text_part(utt.target_lang, where=utt)  # a clear error before encoding
        return [*self.utterance_prompt(utt), *self.encode_text(text, utt.target_lang), self.eos_id]

    def _special(self, token: str) -> int:
        if token not in self.special_ids:
            raise ValueError(f"this {self.prompt_format} tokenizer has no {token} token")
        return self.special_ids[token]

    def _unknown(self, lang: str, field: str, where: Utterance | None, detail: str) -> BadInputError:
        return BadInputError(
            E.UNKNOWN_LANGUAGE,
            f"{detail}; this tokenizer knows {list(self.languages)}",
            path=where.manifest if where else None,
            line=where.line if where else None,
            field=field,
        )
