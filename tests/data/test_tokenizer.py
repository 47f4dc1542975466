"""Tokenizer and prompts: round trips, the prompt layout, the two pnc tasks, identity and persistence."""

import pickle

import pytest

from fastaed.data import errors as E
from fastaed.data.errors import BadInputError
from fastaed.data.manifest import Utterance
from fastaed.data.text import strip_pnc
from fastaed.data.tokenizer import PROMPT_LENGTH, Tokenizer, TokenizerConfig, train_tokenizer
from fastaed.testing import SENTENCES, train_tiny_tokenizer


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return train_tiny_tokenizer(tmp_path_factory.mktemp("tok"))


def test_text_round_trip(tok):
    for s in SENTENCES:
        assert tok.decode(tok.encode_text(s)) == s


def test_special_ids_come_first_and_text_never_produces_them(tok):
    assert tok.pad_id == 0
    ids = [i for s in SENTENCES for i in tok.encode_text(s)]
    assert min(ids) >= tok.num_specials
    assert tok.encode_text("<|endoftext|>") != [tok.eos_id]


def test_prompt_layout_and_sequence(tok):
    u = Utterance(
        "a.wav",
        1.0,
        "The cat sat.",
        source_lang="en",
        target_lang="de",
        task="translate",
        answer="Where is the house?",
        pnc=True,
    )
    seq = tok.sequence(u)
    sp = tok.specials
    assert [sp[i] for i in seq[:PROMPT_LENGTH]] == [
        "<|startoftranscript|>",
        "<|en|>",
        "<|translate|>",
        "<|de|>",
        "<|pnc|>",
    ]
    assert seq[-1] == tok.eos_id
    assert tok.decode(seq) == "Where is the house?"  # the target is the answer, not the source text


def test_pnc_selects_a_different_target(tok):
    text = "Where is the river, and where is the house?"
    with_pnc = tok.sequence(Utterance("a", 1.0, text, pnc=True))
    without = tok.sequence(Utterance("a", 1.0, text, pnc=False))
    assert tok.specials[with_pnc[4]] == "<|pnc|>" and tok.specials[without[4]] == "<|nopnc|>"
    assert tok.decode(with_pnc) == text
    assert tok.decode(without) == "where is the river and where is the house"


def test_strip_pnc_keeps_word_apostrophes_and_accents():
    assert strip_pnc("Don't 'quote' me, L'ÉTÉ!") == "don't quote me l'été"
    assert strip_pnc("end.Next a--b") == "end next a b"


def test_unknown_language_names_the_field(tok):
    u = Utterance("a.wav", 1.0, "x", source_lang="en", target_lang="xx", manifest="m.jsonl", line=7)
    with pytest.raises(BadInputError) as info:
        tok.sequence(u)
    assert info.value.reason == E.UNKNOWN_LANGUAGE
    assert info.value.field == "target_lang" and "m.jsonl:7" in str(info.value)


def test_save_load_pickle_preserve_identity_and_ids(tok, tmp_path):
    tok.save(tmp_path / "t")
    loaded = Tokenizer.load(tmp_path / "t")
    unpickled = pickle.loads(pickle.dumps(tok))
    for other in (loaded, unpickled):
        assert other.identity == tok.identity
        assert other.encode_text(SENTENCES[1]) == tok.encode_text(SENTENCES[1])


def test_identity_changes_with_the_model_and_the_languages(tok, tmp_path):
    other = train_tokenizer(list(SENTENCES) * 4, tmp_path / "o", TokenizerConfig(vocab_size=48))
    assert other.identity != tok.identity
    more_langs = train_tokenizer(
        list(SENTENCES) * 4,
        tmp_path / "l",
        TokenizerConfig(vocab_size=64, languages=("en", "de", "es", "fr", "it")),
    )
    assert more_langs.identity != tok.identity


def test_training_is_deterministic(tmp_path):
    a = train_tiny_tokenizer(tmp_path / "a")
    b = train_tiny_tokenizer(tmp_path / "b")
    assert a.identity == b.identity
