"""Scores for decoded output: WER / CER (jiwer) on transcription, BLEU (sacrebleu) on translation.

Text normaliser (both sides, before WER/CER): ``fastaed.data.text.strip_pnc`` — Unicode NFC, curly
apostrophes made straight, lower case, punctuation and symbols replaced by spaces (an apostrophe survives only
inside a word: "don't"), whitespace collapsed. WER thus measures words, not casing or punctuation, whatever
the pnc setting of the entry. Entries with an empty normalised reference have no WER and are counted apart.
BLEU uses sacrebleu's defaults (13a tokeniser, case-sensitive) on the raw texts, as translation is scored.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from fastaed.data.text import strip_pnc

if TYPE_CHECKING:  # the trainer's dev WER imports this module without the transcription machinery
    from fastaed.decode.transcribe import Transcript


def word_error_rates(refs: list[str], hyps: list[str]) -> dict[str, float]:
    """Corpus WER and CER (jiwer) after :func:`strip_pnc` on both sides: casing and punctuation never count.

    Every reference must be non-empty after normalising (an empty reference has no WER).
    """
    import jiwer  # imported on use (as sacrebleu below): the trainer imports this module too

    r, h = [strip_pnc(x) for x in refs], [strip_pnc(x) for x in hyps]
    return {"wer": float(jiwer.wer(r, h)), "cer": float(jiwer.cer(r, h))}


def score(transcripts: Sequence[Transcript]) -> dict[str, Any]:
    """Scores overall and per group ``task/source_lang->target_lang``.

    Returns ``{"groups": {name: {...}}, "wer", "cer", "bleu", "utterances", "no_reference"}`` where the top
    level WER/CER cover every transcribe entry and BLEU every translate entry (``None`` when there is none).
    """
    by_group: dict[str, list[Transcript]] = defaultdict(list)
    no_ref = 0
    for t in transcripts:
        u = t.utterance
        if not strip_pnc(u.target_text):
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
            out |= word_error_rates(refs, hyps)
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
