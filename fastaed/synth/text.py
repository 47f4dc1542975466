"""Sentences for the synthetic corpus, read from Debian text packages, cleaned and vocabulary-restricted.

English sources (all required): ``wordnet-base`` (example sentences in the glosses), ``fortunes`` +
``fortunes-min`` (split into sentences) and ``bible-kjv`` (the ``bible`` program; verses split into clauses).
Other languages (optional, for the multilingual prompt subset): ``fortunes-de`` (German), ``fortunes-es``
(Spanish) and ``asterisk-core-sounds-fr`` (French: the transcript list of the Canadian-French telephony
prompts; Debian main ships no French fortunes, proverbs or prose corpus).

A sentence is kept only if a TTS engine will say exactly what its text says: no digits, no symbols, no
abbreviations or initials, no acronyms, no dashes used as pauses. Every target is made to read as a sentence
(first letter upper case, ends in ``.``, ``!`` or ``?``) so the cased, punctuated (pnc=yes) task is consistent
across sources: WordNet examples are lower case without a full stop and KJV clauses end in ``;`` or ``:``.
"""

from __future__ import annotations

import gzip
import hashlib
import re
import shutil
import subprocess
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

WORDNET_DIR = Path("/usr/share/wordnet")
FORTUNES_DIR = Path("/usr/share/games/fortunes")
ASTERISK_FR_TRANSCRIPTS = Path("/usr/share/doc/asterisk-core-sounds-fr/core-sounds-fr.txt.gz")
BIBLE_RANGE = "Gen1:1-Rev22:21"

# The Debian package that provides each source, for error messages and the card.
SOURCE_PACKAGES = {
    "wordnet": "wordnet-base",
    "fortunes": "fortunes fortunes-min",
    "bible-kjv": "bible-kjv bible-kjv-text",
    "fortunes-de": "fortunes-de",
    "fortunes-es": "fortunes-es",
    "asterisk-fr": "asterisk-core-sounds-fr",
}
MULTILINGUAL_SOURCES = {"de": "fortunes-de", "es": "fortunes-es", "fr": "asterisk-fr"}

_QUOTES = str.maketrans({"‘": "'", "’": "'", "‚": "'", "‛": "'", "′": "'", "`": "'", "´": "'"})
_DOUBLE_QUOTES = re.compile(r"[\"“”„‟″«»]")
_SPACES = re.compile(r"\s+")
# Sentence boundaries, but not after titles or initials (those pieces are rejected anyway; this keeps the
# sentence they belong to from being cut into a fragment that would pass).
_SENT_END = re.compile(r"(?<!\bMr\.)(?<!\bMrs\.)(?<!\bDr\.)(?<!\bSt\.)(?<!\b[A-Z]\.)(?<=[.!?])\s+")
_CLAUSE_END = re.compile(r"(?<=[.!?;:])\s+")
_EN_ALLOWED = re.compile(r"[A-Za-z ,.;:!?'\-]+")
_EN_WORD = re.compile(r"[a-z]+(?:'[a-z]+)*")
_ANY_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)*")
_BAD_APOSTROPHE = re.compile(r"(?<![A-Za-z])'|'(?![A-Za-z\s,.;:!?]|$)")
# Titles and abbreviations TTS expands ("Dr." -> "doctor") while the text would not. A mid-sentence one is
# caught by _MIDDLE_TERMINATOR (a full stop followed by more words); this set catches one at the end.
_ABBREVIATIONS = frozenset("mr mrs ms dr st jr sr mt ft vs etc inc ltd nr hr sra sta".split())
_CAPITALS = re.compile(r"[A-ZÀ-ÖØ-ÞŒ]{2,}")  # two capitals in a row: acronyms are spelled out
# A sentence terminator followed by more text: "Mr. Smith", "J. R. R.", "i.e.", or two sentences in one.
_MIDDLE_TERMINATOR = re.compile(r"[.!?;:][^\s]|[.!?].*\s")


@dataclass(frozen=True)
class Sentence:
    """One cleaned sentence. ``words`` are the lower-cased word tokens (vocabulary and duplicate key)."""

    text: str
    source: str
    lang: str
    words: tuple[str, ...]

    @property
    def key(self) -> str:
        """Two sentences with the same words are the same sentence for splitting and de-duplication."""
        return " ".join(self.words)


class SourceMissingError(RuntimeError):
    """A required Debian text package is not installed."""


def normalize_text(text: str) -> str:
    """Unicode NFKC, typographic quotes to ASCII apostrophes, whitespace collapsed."""
    if not text.isascii():  # the fast path matters: this runs on ~130k sentences
        text = unicodedata.normalize("NFKC", text).translate(_QUOTES)
    return " ".join(text.split())


def words_of(text: str, lang: str = "en") -> tuple[str, ...]:
    """Lower-cased word tokens; hyphenated words count as their parts (as a speaker says them)."""
    pattern = _EN_WORD if lang == "en" else _ANY_WORD
    return tuple(pattern.findall(text.lower()))


def _sentence_case(text: str) -> str | None:
    """Upper-case the first letter and make sure the text ends like a sentence."""
    text = text.strip(" ,;:-")
    if text and text[-1] in ";:":
        text = text[:-1].rstrip() + "."
    elif text and text[-1] not in ".!?":
        text += "."
    for i, ch in enumerate(text):
        if ch.isalpha():
            return text[:i] + ch.upper() + text[i + 1 :]
        if ch not in "¿¡":
            return None
    return None


def _clean(raw: str, lang: str) -> tuple[str, tuple[str, ...]] | None:
    text = normalize_text(raw)
    if '"' in text or not text.isascii():
        text = " ".join(_DOUBLE_QUOTES.sub("", text).split())
    if not text or text.endswith(".."):
        return None
    if lang == "en":
        if not _EN_ALLOWED.fullmatch(text) or _BAD_APOSTROPHE.search(text):
            return None
    else:
        if any(not (ch.isalpha() or ch in " ,.;:!?'-¿¡") for ch in text):
            return None
        if "'" in text and lang != "fr":  # German/Spanish fortunes use ' as quotation marks
            return None
    if "--" in text or " -" in text or "- " in text or text[0] == "-" or _CAPITALS.search(text):
        return None  # dashes are read as pauses
    text = _sentence_case(text)
    if text is None or _MIDDLE_TERMINATOR.search(text[:-1] + " "):
        return None
    if text.rsplit(" ", 1)[-1][:-1].lower() in _ABBREVIATIONS:
        return None
    words = words_of(text, lang)
    if not words:
        return None
    if lang == "en" and any(len(w) == 1 and w not in ("a", "i", "o") for w in words):
        return None  # stray letters are spelled out ("x marks the spot", "Q: ...")
    return text, words


def clean_sentence(raw: str, lang: str = "en") -> str | None:
    """The sentence as a TTS engine will say it, or None if it cannot be used (see the module docstring)."""
    cleaned = _clean(raw, lang)
    return cleaned[0] if cleaned else None


def split_sentences(paragraph: str, clauses: bool = False) -> list[str]:
    """Split running text at sentence ends (and at ``;`` / ``:`` when ``clauses``)."""
    paragraph = _SPACES.sub(" ", paragraph).strip()
    if not paragraph:
        return []
    return [p for p in (_CLAUSE_END if clauses else _SENT_END).split(paragraph) if p]


# ---------------------------------------------------------------------------------------------- sources


def _require(path: Path, source: str) -> None:
    if not path.exists():
        raise SourceMissingError(
            f"{source} text not found at {path}: install the Debian package(s) {SOURCE_PACKAGES[source]}"
        )


def read_wordnet(wordnet_dir: Path = WORDNET_DIR) -> Iterator[str]:
    """Example sentences quoted in the WordNet glosses (``data.noun`` ... ``data.adv``)."""
    _require(wordnet_dir / "data.noun", "wordnet")
    for pos in ("noun", "verb", "adj", "adv"):
        with open(wordnet_dir / f"data.{pos}", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("  ") or " | " not in line:  # licence header
                    continue
                yield from re.findall(r'"([^"]+)"', line.split(" | ", 1)[1])


def _fortune_files(directory: Path) -> list[Path]:
    """Fortune text files in one directory (not the offensive ``off`` collections, not indexes)."""
    files = []
    for p in sorted(directory.iterdir()):
        if p.is_dir() or p.is_symlink() or p.suffix in (".dat", ".u8"):
            continue
        files.append(p)
    return files


def read_fortunes(directory: Path, source: str = "fortunes") -> Iterator[str]:
    """Sentences of the fortune cookies in ``directory``; attribution lines (``-- Author``) are dropped."""
    _require(directory, source)
    files = _fortune_files(directory)
    if not files:
        raise SourceMissingError(
            f"no fortune files in {directory}: install the Debian package(s) {SOURCE_PACKAGES[source]}"
        )
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        for cookie in text.split("\n%\n"):
            lines = [ln for ln in cookie.splitlines() if not re.match(r"\s*(--|―|—)", ln)]
            yield from split_sentences(" ".join(lines))


def read_bible(timeout: float = 120.0) -> Iterator[str]:
    """KJV clauses: each chapter's verses are joined and split at ``. ! ? ; :``.

    The KJV prints the divine name as small capitals (``LORD``, ``GOD``); they are spoken as ordinary words.
    """
    exe = shutil.which("bible")
    if exe is None:
        raise SourceMissingError("bible not found: install the Debian packages bible-kjv bible-kjv-text")
    out = subprocess.run(
        [exe, "-l0", BIBLE_RANGE], capture_output=True, text=True, timeout=timeout, check=True
    ).stdout
    chapter: list[str] = []
    for line in out.splitlines() + [""]:
        m = re.match(r"\s*\d+ (.*)$", line)
        if m:
            chapter.append(m.group(1))
            continue
        if chapter:
            text = " ".join(chapter).replace("LORD", "Lord").replace("GOD", "God")
            yield from split_sentences(text, clauses=True)
            chapter = []


def read_asterisk_fr(path: Path = ASTERISK_FR_TRANSCRIPTS) -> Iterator[str]:
    """French sentences: the transcripts of the Asterisk French (fr-CA) telephony prompts."""
    _require(path, "asterisk-fr")
    with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith(";") or ":" not in line:
                continue
            yield from split_sentences(line.split(":", 1)[1])


def _read_source(source: str) -> Iterator[str]:
    if source == "wordnet":
        return read_wordnet()
    if source == "fortunes":
        return read_fortunes(FORTUNES_DIR)
    if source == "bible-kjv":
        return read_bible()
    if source == "fortunes-de":
        return read_fortunes(FORTUNES_DIR / "de", source)
    if source == "fortunes-es":
        return read_fortunes(FORTUNES_DIR / "es", source)
    if source == "asterisk-fr":
        return read_asterisk_fr()
    raise ValueError(f"unknown text source {source!r}")


def clean_pool(raw: Iterable[tuple[str, str]], lang: str) -> tuple[list[Sentence], Counter]:
    """Clean (source, text) pairs and drop duplicates (same words), keeping the first occurrence.

    Returns the sentences and per-source counts of raw / kept items for the card.
    """
    seen: set[str] = set()
    pool: list[Sentence] = []
    stats: Counter = Counter()
    for source, text in raw:
        stats[f"{source}/raw"] += 1
        cleaned = _clean(text, lang)
        if cleaned is None:
            continue
        sent = Sentence(cleaned[0], source, lang, cleaned[1])
        if sent.key in seen:
            continue
        seen.add(sent.key)
        pool.append(sent)
        stats[f"{source}/clean"] += 1
    return pool, stats


@lru_cache(maxsize=4)
def english_pool() -> tuple[tuple[Sentence, ...], dict[str, int]]:
    """All clean, unique English sentences (any length), in a fixed source order. Cached per process."""
    raw = ((src, t) for src in ("wordnet", "fortunes", "bible-kjv") for t in _read_source(src))
    pool, stats = clean_pool(raw, "en")
    return tuple(pool), dict(stats)


@lru_cache(maxsize=8)
def language_pool(lang: str) -> tuple[Sentence, ...]:
    """Clean, unique sentences of a non-English language (raises SourceMissingError if not installed)."""
    source = MULTILINGUAL_SOURCES[lang]
    pool, _ = clean_pool(((source, t) for t in _read_source(source)), lang)
    return tuple(pool)


# ---------------------------------------------------------------------------------- vocabulary restriction


def word_ranking(pool: Sequence[Sentence]) -> list[str]:
    """Words by frequency, most frequent first, counted with every source weighted equally.

    Plain counts would let the KJV (about half of the pool) decide the vocabulary ("unto", "thee"), and
    modern WordNet and fortune sentences would then rarely pass the top-N filter.
    """
    per_source: dict[str, Counter] = {}
    for s in pool:
        per_source.setdefault(s.source, Counter()).update(s.words)
    weight: Counter = Counter()
    for counts in per_source.values():
        total = sum(counts.values())
        for w, c in counts.items():
            weight[w] += c / total
    return sorted(weight, key=lambda w: (-weight[w], w))  # ties broken by spelling: deterministic


def restrict_vocabulary(
    pool: Iterable[Sentence], vocab: set[str] | frozenset[str], min_words: int, max_words: int
) -> list[Sentence]:
    """Sentences of ``min_words``..``max_words`` words, every word inside ``vocab``."""
    return [s for s in pool if min_words <= len(s.words) <= max_words and all(w in vocab for w in s.words)]


def length_filter(pool: Iterable[Sentence], min_words: int, max_words: int) -> list[Sentence]:
    return [s for s in pool if min_words <= len(s.words) <= max_words]


_PHRASE_EDGE = " \t,;:.!?\"'()[]-"


def phrases(sentences: Iterable[Sentence], seed: int, min_words: int, max_words: int) -> list[Sentence]:
    """One contiguous span of ``min_words``..``max_words`` words cut from each sentence, duplicates dropped.

    Real prompts, commands and answers are often one to three words ("Sunday", "press one", "you are muted"),
    a length the sentence corpus never has; a model fine-tuned on unpadded input must also learn where such
    short inputs end. Spans keep the sentence's own words and casing; the span length and start are drawn
    from a hash of the seed and the sentence, so a corpus is reproducible."""
    out, seen = [], set()
    for s in sentences:
        tokens = s.text.split()
        h = stable_hash(seed, "phrase", s.key)
        k = min_words + h % (max_words - min_words + 1)
        if len(tokens) < k:
            continue
        start = (h >> 16) % (len(tokens) - k + 1)
        phrase = " ".join(tokens[start : start + k]).strip(_PHRASE_EDGE)
        words = words_of(phrase, s.lang)
        # k whitespace tokens may normalise to one word more ("twenty-one"); a longer span is no phrase.
        if not phrase or not words or len(words) > max_words + 1 or " ".join(words) in seen:
            continue
        seen.add(" ".join(words))
        out.append(Sentence(phrase[0].upper() + phrase[1:], s.source, s.lang, words))
    return out


def stable_hash(*parts: object) -> int:
    """A 64-bit hash of the parts that is the same in every process and Python version (not ``hash()``)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big")


def split_by_sentence(
    sentences: Sequence[Sentence], seed: int, sizes: dict[str, int], salt: str = ""
) -> dict[str, list[Sentence]]:
    """Deal whole sentences to splits in a seeded hash order, so no sentence is in two splits.

    ``sizes`` maps split name to the number of sentences wanted, filled in the given order (test and dev
    first, so the held-out sets keep their size and a short pool only shrinks train).
    """
    order = sorted(sentences, key=lambda s: (stable_hash(seed, "split", salt, s.key), s.key))
    out: dict[str, list[Sentence]] = {}
    start = 0
    for name, n in sizes.items():
        out[name] = order[start : start + n]
        start += len(out[name])
    return out


@dataclass
class VocabMeasurement:
    """Proxy learnability numbers for one vocabulary size (a model cannot be trained here)."""

    top_n: int
    usable_sentences: int
    mean_words: float
    mean_chars: float
    est_mean_duration_s: float | None  # mean_chars / measured characters per second of the synthesized audio
    train_sentences: int
    heldout_oov_token_rate: float  # dev+test word tokens never seen in the train sentences
    heldout_oov_type_rate: float  # dev+test distinct words never seen in train
    vocab_seen_in_train: int  # distinct top-N words that occur in the train sentences
    vocab_seen_5x_in_train: int  # ... at least 5 times (a rough "learnable" count)
    source_mix: dict[str, float]  # fraction of usable sentences per source

    def to_dict(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def measure_vocabulary(
    pool: Sequence[Sentence],
    ranking: Sequence[str],
    top_ns: Sequence[int],
    min_words: int,
    max_words: int,
    seed: int,
    sizes: dict[str, int],
    chars_per_second: float | None = None,
) -> list[VocabMeasurement]:
    """For each N: how many sentences survive, how long they are, and how many held-out words train misses.

    ``sizes`` are the preset's sentence counts ({"test": .., "dev": .., "train": ..}), so the unseen-word rate
    is the one a model trained on this preset would face.
    """
    out = []
    for n in top_ns:
        usable = restrict_vocabulary(pool, frozenset(ranking[:n]), min_words, max_words)
        parts = split_by_sentence(usable, seed, sizes)
        train_counts = Counter(w for s in parts.get("train", []) for w in s.words)
        held = [w for name in ("dev", "test") for s in parts.get(name, []) for w in s.words]
        held_types = set(held)
        mean_chars = sum(len(s.text) for s in usable) / max(1, len(usable))
        sources = Counter(s.source for s in usable)
        out.append(
            VocabMeasurement(
                top_n=n,
                usable_sentences=len(usable),
                mean_words=sum(len(s.words) for s in usable) / max(1, len(usable)),
                mean_chars=mean_chars,
                est_mean_duration_s=(mean_chars / chars_per_second) if chars_per_second else None,
                train_sentences=len(parts.get("train", [])),
                heldout_oov_token_rate=sum(w not in train_counts for w in held) / max(1, len(held)),
                heldout_oov_type_rate=sum(w not in train_counts for w in held_types)
                / max(1, len(held_types)),
                vocab_seen_in_train=len(train_counts),
                vocab_seen_5x_in_train=sum(c >= 5 for c in train_counts.values()),
                source_mix={k: round(v / max(1, len(usable)), 4) for k, v in sorted(sources.items())},
            )
        )
    return out
