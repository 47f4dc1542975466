"""Target-text forms for the two pnc tasks.

``pnc=yes`` keeps the text as written (casing and punctuation). ``pnc=no`` lower-cases it and strips
punctuation, keeping letters (accents included), digits and word-internal apostrophes ("don't", "l'eau").
The same audio thus carries two real tasks that differ in what the decoder must produce.
"""

from __future__ import annotations

import re
import unicodedata

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'"})
_SPACES = re.compile(r"\s+")


# Anything that is not a letter/digit, whitespace or apostrophe (``_`` counts as punctuation here).
_NON_WORD = re.compile(r"[^\w\s']|_")
# An apostrophe not enclosed by word characters on both sides is a quote mark, not part of a word.
_LOOSE_APOSTROPHE = re.compile(r"(?<![^\W_])'|'(?![^\W_])")


def strip_pnc(text: str) -> str:
    """Lower-case and remove punctuation/symbols; an apostrophe survives only between two word characters."""
    text = unicodedata.normalize("NFC", text).translate(_APOSTROPHES).lower()
    # Punctuation between words ("end.Next", "a--b") must still separate them, hence a space, not "".
    text = _LOOSE_APOSTROPHE.sub(" ", _NON_WORD.sub(" ", text))
    return _SPACES.sub(" ", text).strip()


def clean_pnc(text: str) -> str:
    """The pnc=yes form: the text as written, with Unicode and whitespace normalised."""
    text = unicodedata.normalize("NFC", text).translate(_APOSTROPHES)
    return _SPACES.sub(" ", text).strip()


def target_form(text: str, pnc: bool) -> str:
    return clean_pnc(text) if pnc else strip_pnc(text)
