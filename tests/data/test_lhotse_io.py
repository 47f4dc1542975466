"""Lhotse cut manifests: read lazily, convert to NeMo JSONL, and index the result."""

import pytest

from fastaed.data import errors as E
from fastaed.data.errors import BadInputError, BadInputReport
from fastaed.data.index import build_index
from fastaed.data.lhotse_io import lhotse_to_nemo, read_lhotse_cuts
from fastaed.testing import train_tiny_tokenizer, write_tone
from tests import import_optional

lhotse = import_optional("lhotse", "pip install -e .[lhotse]")


def make_cuts(tmp_path, *, empty_text_for=None):
    cuts = []
    for i in range(3):
        wav = write_tone(tmp_path / f"r{i}.wav", 2.0, seed=i)
        rec = lhotse.Recording.from_file(wav, recording_id=f"r{i}")
        text = "" if i == empty_text_for else f"The river number {i}."
        sup = lhotse.SupervisionSegment(
            id=f"s{i}",
            recording_id=rec.id,
            start=0.5,
            duration=1.0,
            text=text,
            language="en",
            custom={"pnc": "no"} if i == 1 else None,
        )
        cuts.append(
            lhotse.MonoCut(id=f"c{i}", start=0.5, duration=1.0, channel=0, recording=rec, supervisions=[sup])
        )
    path = tmp_path / "cuts.jsonl.gz"
    lhotse.CutSet.from_cuts(cuts).to_file(path)
    return path


def test_cuts_become_utterances_with_offsets(tmp_path):
    utts = list(read_lhotse_cuts(make_cuts(tmp_path)))
    assert [u.text for u in utts] == [f"The river number {i}." for i in range(3)]
    assert all(u.offset == 0.5 and u.duration == 1.0 for u in utts)
    assert [u.pnc for u in utts] == [True, False, True]
    assert utts[0].audio_filepath == str(tmp_path / "r0.wav")


def test_conversion_to_nemo_is_indexable(tmp_path):
    out = tmp_path / "nemo.jsonl"
    assert lhotse_to_nemo(make_cuts(tmp_path), out) == 3
    tok = train_tiny_tokenizer(tmp_path / "tok")
    index = build_index([out], tok)
    assert len(index) == 3 and index.utterance(2).offset == 0.5


def test_bad_cut_is_named_or_counted(tmp_path):
    path = make_cuts(tmp_path, empty_text_for=1)
    with pytest.raises(BadInputError) as info:
        list(read_lhotse_cuts(path))
    assert info.value.reason == E.EMPTY_TEXT and info.value.line == 2 and "c1" in str(info.value)
    report = BadInputReport()
    assert len(list(read_lhotse_cuts(path, on_bad_input="skip", report=report))) == 2
    assert report.counts == {E.EMPTY_TEXT: 1}
