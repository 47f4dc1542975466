"""Scores for decoded output: WER / CER (jiwer) on transcription, BLEU (sacrebleu) on translation.

Text normalisers (applied to both sides before WER/CER), chosen by name:

* ``basic`` (default): ``fastaed.data.text.strip_pnc`` — Unicode NFC, curly apostrophes made straight, lower
  case, punctuation and symbols replaced by spaces (an apostrophe survives only inside a word: "don't"),
  whitespace collapsed. WER thus measures words, not casing or punctuation, whatever the entry's pnc setting.
* ``whisper``: Whisper's English normaliser (``whisper_normalizer.english.EnglishTextNormalizer``, the one
  Whisper's papers score with): also spells numbers as digits ("ten" → "10"), British spellings as American,
  contractions and titles expanded ("mr" → "mister"), fillers ("um", "hmm") removed. Needed to compare with
  Whisper models, which write "10 of clubs" where a reference says "ten of clubs". For an entry in another
  language it is Whisper's basic normaliser instead (``BasicTextNormalizer``, as Whisper's papers score
  non-English sets: lower case, symbols and bracketed asides removed) with diacritics removed too, since
  references such as Debian's Spanish Asterisk prompts leave accents out ("numero" for "número").
* ``none``: whitespace collapsed only; casing and punctuation count as errors.

Entries whose reference is empty after the normaliser have no WER and are counted apart (``no_reference``).
BLEU uses sacrebleu's defaults (13a tokeniser, case-sensitive) on the raw texts, as translation is scored.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

from fastaed.data.text import strip_pnc

if TYPE_CHECKING:  # the trainer's dev WER imports this module without the transcription machinery
    from fastaed.decode.transcribe import Transcript


Normalizer = Literal["basic", "whisper", "none"]
NORMALIZERS: tuple[Normalizer, ...] = ("basic", "whisper", "none")
NORMALIZER_DESCRIPTIONS = {
    "basic": "fastaed.data.text.strip_pnc (lower case, punctuation removed) on both sides",
    "whisper": "Whisper's EnglishTextNormalizer (whisper-normalizer) on both sides",
    "none": "whitespace collapsed only (casing and punctuation count)",
}


def _collapse_spaces(text: str) -> str:
    return " ".join(text.split())


@functools.cache
def _whisper_english() -> Callable[[str], str]:
    from whisper_normalizer.english import EnglishTextNormalizer  # loads a spelling table: built once

    normalizer = EnglishTextNormalizer()
    return lambda text: _collapse_spaces(normalizer(text))


@functools.cache
def _whisper_basic() -> Callable[[str], str]:
    from whisper_normalizer.basic import BasicTextNormalizer

    normalizer = BasicTextNormalizer(remove_diacritics=True)
    return lambda text: _collapse_spaces(normalizer(text))


def text_normalizer(name: Normalizer, language: str = "en") -> Callable[[str], str]:
    """The function a normaliser name stands for in ``language`` (see the module docstring)."""
    if name == "basic":
        return strip_pnc
    if name == "whisper":
        return _whisper_english() if language == "en" else _whisper_basic()
    if name == "none":
        return _collapse_spaces
    raise ValueError(f"unknown normalizer {name!r}; expected one of {NORMALIZERS}")


def word_error_rates(
    refs: list[str], hyps: list[str], normalizer: Normalizer = "basic", languages: Sequence[str] | None = None
) -> dict[str, float]:
    """Corpus WER and CER (jiwer) after ``normalizer`` on both sides (``basic``: casing, punctuation ignored);
    ``languages``: each pair's language (default English), for the language-aware ``whisper`` normaliser.

    Every reference must be non-empty after normalising (an empty reference has no WER).
    """
    import jiwer  # imported on use (as sacrebleu below): the trainer imports this module too

    norms = [text_normalizer(normalizer, lang) for lang in (languages or ["en"] * len(refs))]
    r, h = [n(x) for n, x in zip(norms, refs)], [n(x) for n, x in zip(norms, hyps)]
    return {"wer": float(jiwer.wer(r, h)), "cer": float(jiwer.cer(r, h))}


def score(transcripts: Sequence[Transcript], normalizer: Normalizer = "basic") -> dict[str, Any]:
    """Scores overall and per group ``task/source_lang->target_lang``; WER/CER after ``normalizer``.

    Returns ``{"groups": {name: {...}}, "wer", "cer", "bleu", "utterances", "no_reference"}`` where the top
    level WER/CER cover every transcribe entry and BLEU every translate entry (``None`` when there is none).
    """
    by_group: dict[str, list[Transcript]] = defaultdict(list)
    no_ref = 0
    for t in transcripts:
        u = t.utterance
        # translations are scored by BLEU on raw text: the WER normaliser does not decide their emptiness
        norm = text_normalizer(normalizer, u.source_lang) if u.task == "transcribe" else strip_pnc
        if not norm(u.target_text):
            no_ref += 1
            continue
        by_group[f"{u.task}/{u.source_lang}->{u.target_lang}"].append(t)

    def summarize(items: list[Transcript]) -> dict[str, Any]:
        refs, hyps = [t.utterance.target_text for t in items], [t.text for t in items]
        out: dict[str, Any] = {"utterances": len(items), "wer": None, "cer": None, "bleu": None}
        if items and items[0].utterance.task == "translate":
            import sacrebleu  # only translation needs it

            out["bleu"] = float(sacrebleu.corpus_bleu(hyps, [refs]).score)
        elif items:
            out |= word_error_rates(refs, hyps, normalizer, [t.utterance.source_lang for t in items])
        return out

    groups = {name: summarize(items) for name, items in sorted(by_group.items())}
    asr = [t for name, items in by_group.items() if name.startswith("transcribe/") for t in items]
    ast = [t for name, items in by_group.items() if name.startswith("translate/") for t in items]
    return {
        "utterances": len(transcripts),
        "no_reference": no_ref,
        **{k: v for k, v in summarize(asr).items() if k in ("wer", "cer")},
        "bleu": summarize(ast)["bleu"] if ast else None,
        "groups": groups,
    }
