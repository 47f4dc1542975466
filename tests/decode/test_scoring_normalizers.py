"""WER text normalisers: basic (the default, unchanged), Whisper's English normaliser, and none."""

from __future__ import annotations

import json

import pytest

from fastaed.cli.main import main
from fastaed.data.manifest import Utterance
from fastaed.decode.scoring import score, text_normalizer, word_error_rates
from fastaed.decode.transcribe import Transcript


def _transcripts(pairs: list[tuple[str, str]], task: str = "transcribe") -> list[Transcript]:
    return [
        Transcript(Utterance(f"{i}.wav", 1.0, ref, task=task), hyp, 0.0) for i, (ref, hyp) in enumerate(pairs)
    ]


def test_basic_is_the_default_and_ignores_case_and_punctuation():
    refs, hyps = ["ten of clubs", "go forward"], ["Ten of clubs.", "Go, forward!"]
    assert word_error_rates(refs, hyps) == word_error_rates(refs, hyps, "basic")
    assert word_error_rates(refs, hyps)["wer"] == 0.0


def test_whisper_normaliser_spells_numbers_and_spelling_variants_alike():
    refs = ["ten of clubs", "eight of spades four of clubs", "mister john dashwood", "the colour grey"]
    hyps = ["10 of clubs.", "8 of spades, 4 of clubs.", "Mr. John Dashwood", "The color gray."]
    assert word_error_rates(refs, hyps, "basic")["wer"] > 0.3  # numerals and spellings count as errors
    assert word_error_rates(refs, hyps, "whisper")["wer"] == 0.0


def test_none_counts_case_and_punctuation():
    assert word_error_rates(["ten of clubs"], ["Ten of clubs."], "none")["wer"] == pytest.approx(2 / 3)
    assert text_normalizer("none")("  a \t b ") == "a b"


def test_score_passes_the_normaliser_and_counts_references_it_empties():
    pairs = [("ten of clubs", "10 of clubs"), ("hmm", "hmm")]  # Whisper's normaliser drops fillers
    basic, whisper = score(_transcripts(pairs)), score(_transcripts(pairs), "whisper")
    assert basic["no_reference"] == 0 and basic["wer"] == pytest.approx(1 / 4)
    assert whisper["no_reference"] == 1 and whisper["wer"] == 0.0


def test_translations_keep_bleu_on_raw_text_whatever_the_normaliser():
    pairs = [("Zehn Kreuz.", "Zehn Kreuz.")]
    assert (
        score(_transcripts(pairs, "translate"), "whisper")["bleu"]
        == score(_transcripts(pairs, "translate"))["bleu"]
    )


def test_unknown_normaliser_is_refused():
    with pytest.raises(ValueError, match="unknown normalizer"):
        text_normalizer("fancy")


def test_eval_cli_takes_the_normaliser(overfit, tmp_path):
    ckpt, manifest, _ = overfit
    out = tmp_path / "eval.json"
    with pytest.raises(SystemExit) as info:
        main(["eval", str(ckpt), "--manifest", str(manifest), "--json", str(out), "--no-progress",
              "--normalizer", "whisper"])  # fmt: skip
    assert info.value.code == 0
    doc = json.loads(out.read_text())
    assert doc["normalizer"] == "whisper" and "EnglishTextNormalizer" in doc["normaliser"]
    assert doc["sets"][str(manifest)]["wer"] == 0.0  # the memorised sentences survive normalisation
    with pytest.raises(SystemExit) as info:
        main(["eval", str(ckpt), "--manifest", str(manifest), "--normalizer", "bogus"])
    assert info.value.code == 2


def test_whisper_normaliser_scores_other_languages_with_the_basic_one_without_accents():
    refs, hyps = ["Introduzca su numero de contrasena."], ["Introduzca su número de contraseña"]
    assert word_error_rates(refs, hyps, "whisper", languages=["es"])["wer"] == 0.0
    # English-only rules stay out of other languages: "one" is not a number word in Spanish.
    assert word_error_rates(["one"], ["1"], "whisper", ["es"])["wer"] == 1.0
    assert word_error_rates(["one"], ["1"], "whisper")["wer"] == 0.0
    fr = word_error_rates(["Pour l'été, appuyez sur 2."], ["pour l ete appuyez sur 2"], "whisper", ["fr"])
    assert fr["wer"] == 0.0
