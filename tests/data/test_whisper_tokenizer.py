"""Whisper's tokenizer: prompts of English-only and multilingual models, translation only into English,
decoding drops specials and timestamps, suppression lists, save/load keeps identity, bad languages named."""

from __future__ import annotations

import pickle

import pytest

from fastaed.data.errors import BadInputError
from fastaed.data.manifest import Utterance
from fastaed.data.tokenizer import load_tokenizer
from fastaed.data.whisper_tokenizer import WhisperTokenizer
from tests import whisper_fixtures as wf


@pytest.fixture(scope="module")
def multi(tmp_path_factory) -> WhisperTokenizer:
    return wf.tokenizer(tmp_path_factory.mktemp("tok"))


def test_multilingual_prompt_names_language_and_task(multi):
    t = multi
    assert t.prompt("de", "transcribe", "de") == [
        t.sot_id,
        t.special_ids["<|de|>"],
        t.transcribe_id,
        t.no_timestamps_id,
    ]
    assert t.prompt("fr", "translate", "en")[1:3] == [t.special_ids["<|fr|>"], t.translate_id]


def test_english_only_prompt_has_no_language_or_task(tmp_path):
    t = wf.tokenizer(tmp_path, multilingual=False)
    assert t.prompt("en", "transcribe", "en") == [t.sot_id, t.no_timestamps_id]
    with pytest.raises(BadInputError, match="language 'de'"):
        t.prompt("de", "transcribe", "de")
    with pytest.raises(BadInputError, match="cannot translate"):
        t.prompt("en", "translate", "en")


def test_translation_into_another_language_than_english_names_the_field(multi):
    utt = Utterance("a.wav", 1.0, "x", 0.0, "en", "de", "translate", True, None, "m.jsonl", 7)
    with pytest.raises(BadInputError) as err:
        multi.utterance_prompt(utt)
    assert "m.jsonl" in str(err.value) and "7" in str(err.value) and "target_lang" in str(err.value)
    unknown = Utterance("a.wav", 1.0, "x", 0.0, "xx", "xx", "transcribe", True, None, "m.jsonl", 3)
    with pytest.raises(BadInputError, match="'xx'"):
        multi.utterance_prompt(unknown)


def test_decode_drops_specials_and_timestamps_and_round_trips_text(multi):
    t = multi
    ids = t.encode_text("the cat sat on the mat")
    assert (
        t.decode([t.sot_id, t.no_timestamps_id, *ids, t.vocab_size - 1, t.eos_id]) == "the cat sat on the mat"
    )
    seq = t.sequence(Utterance("a.wav", 1.0, "the mat", 0.0, "en", "en", "transcribe", True))
    assert seq[:4] == t.prompt("en", "transcribe", "en") and seq[-1] == t.eos_id


def test_suppression_covers_task_tokens_symbols_and_the_first_blank(multi):
    t = multi
    for special in (t.transcribe_id, t.translate_id, t.sot_id, t.sot_prev_id, t.sot_lm_id):
        assert special in t.suppress_ids
    assert t.bpe.encode('"', add_special_tokens=False).ids[0] in t.suppress_ids
    assert set(t.suppress_at_start_ids) == {t.bpe.token_to_id("Ġ"), t.eos_id}
    assert t.eos_id not in t.suppress_ids


def test_save_load_and_pickle_keep_identity(multi, tmp_path):
    multi.save(tmp_path / "tok")
    again = load_tokenizer(tmp_path / "tok")
    assert isinstance(again, WhisperTokenizer) and again.identity == multi.identity
    assert again.suppress_ids == multi.suppress_ids and again.multilingual
    assert pickle.loads(pickle.dumps(multi)).identity == multi.identity


def test_config_suppression_lists_take_precedence(tmp_path):
    path, vocab = wf.tokenizer_json(tmp_path)
    t = WhisperTokenizer.from_files(path, vocab, {"suppress_ids": "[5, 6]", "suppress_ids_begin": [7]})
    assert {5, 6} <= set(t.suppress_ids) and t.suppress_at_start_ids == (7,)
