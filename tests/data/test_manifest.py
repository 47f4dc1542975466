"""Manifests: lazy reading, path resolution, field semantics, weighted mixing, and precise errors."""

import json

import pytest

from fastaed.data import errors as E
from fastaed.data.errors import BadInputError, BadInputReport
from fastaed.data.manifest import ManifestSpec, iter_weighted, read_line_at, read_manifest
from fastaed.testing import write_tiny_corpus


def write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def good(**kw):
    entry = {"audio_filepath": "a.wav", "duration": 1.5, "text": "Hi there."}
    entry.update(kw)
    return json.dumps(entry)


def test_relative_paths_resolve_against_manifest_folder(tmp_path):
    m = write_tiny_corpus(tmp_path / "corpus", num=3)
    utts = list(read_manifest(m))
    assert len(utts) == 3
    assert all(u.audio_filepath.startswith(str(tmp_path / "corpus" / "audio")) for u in utts)
    assert [u.line for u in utts] == [1, 2, 3]


def test_reading_is_lazy(tmp_path):
    m = write_lines(tmp_path / "m.jsonl", [good(), "{broken"])
    it = read_manifest(m)
    assert next(it).text == "Hi there."  # the bad second line is not touched yet
    with pytest.raises(BadInputError):
        next(it)


def test_field_defaults_and_aliases(tmp_path):
    m = write_lines(
        tmp_path / "m.jsonl",
        [
            good(),
            good(taskname="ast", source_lang="en", target_lang="de", answer="Hallo.", pnc="no"),
            good(source_lang="en", target_lang="es"),
            good(offset=2.0, pnc=False),
        ],
    )
    a, b, c, d = read_manifest(m)
    assert (a.task, a.source_lang, a.target_lang, a.pnc, a.offset) == ("transcribe", "en", "en", True, 0.0)
    assert (b.task, b.target_lang, b.pnc, b.target_text) == ("translate", "de", False, "Hallo.")
    assert c.task == "translate"  # differing languages imply translation
    assert d.offset == 2.0 and d.pnc is False


@pytest.mark.parametrize(
    "line, reason, field",
    [
        ("{not json", E.MALFORMED_JSON, None),
        ("[1, 2]", E.MALFORMED_JSON, None),
        (json.dumps({"duration": 1.0, "text": "x"}), E.MISSING_FIELD, "audio_filepath"),
        (json.dumps({"audio_filepath": "a.wav", "text": "x"}), E.MISSING_FIELD, "duration"),
        (good(duration=-1), E.BAD_FIELD, "duration"),
        (good(duration="long"), E.BAD_FIELD, "duration"),
        (good(duration=float("nan")).replace("NaN", "NaN"), E.BAD_FIELD, "duration"),
        (good(offset=-0.5), E.BAD_FIELD, "offset"),
        (good(text="   "), E.EMPTY_TEXT, "text"),
        (good(answer=""), E.EMPTY_TEXT, "answer"),
        (good(task="summarize"), E.BAD_FIELD, "task"),
        (good(pnc="maybe"), E.BAD_FIELD, "pnc"),
        (good(source_lang=""), E.UNKNOWN_LANGUAGE, "source_lang"),
    ],
)
def test_bad_line_error_names_file_line_and_field(tmp_path, line, reason, field):
    m = write_lines(tmp_path / "m.jsonl", [good(), line])
    with pytest.raises(BadInputError) as info:
        list(read_manifest(m))
    err = info.value
    assert (err.reason, err.line, err.field, err.path) == (reason, 2, field, str(m))
    assert f"{m}:2" in str(err)
    if field:
        assert f"'{field}'" in str(err)


def test_skip_policy_counts_every_bad_line(tmp_path):
    m = write_lines(tmp_path / "m.jsonl", [good(), "{x", good(text=""), "", good()])
    report = BadInputReport()
    utts = list(read_manifest(m, on_bad_input="skip", report=report))
    assert [u.line for u in utts] == [1, 5]  # blank line 4 is not an utterance, and not an error
    assert report.total == 2 and report.counts == {E.MALFORMED_JSON: 1, E.EMPTY_TEXT: 1}


def test_skip_without_report_is_refused(tmp_path):
    m = write_lines(tmp_path / "m.jsonl", ["{x"])
    with pytest.raises(ValueError, match="BadInputReport"):
        list(read_manifest(m, on_bad_input="skip"))


def test_random_access_by_byte_offset_equals_sequential_read(tmp_path):
    m = write_lines(tmp_path / "m.jsonl", [good(text=f"line {i} é") for i in range(5)])
    raw = m.read_bytes()
    offsets = [0] + [i + 1 for i, b in enumerate(raw) if b == ord("\n")][:-1]
    seq = list(read_manifest(m))
    assert [read_line_at(str(m), o, k + 1) for k, o in enumerate(offsets)] == seq


def test_weighted_mix_yields_everything_once_and_follows_weights(tmp_path):
    a = write_lines(tmp_path / "a.jsonl", [good(text=f"a{i}") for i in range(300)])
    b = write_lines(tmp_path / "b.jsonl", [good(text=f"b{i}") for i in range(300)])
    mixed = [u.text for u in iter_weighted([ManifestSpec(a, 3.0), ManifestSpec(b, 1.0)], seed=1)]
    assert sorted(mixed) == sorted([f"a{i}" for i in range(300)] + [f"b{i}" for i in range(300)])
    share_a_early = sum(t.startswith("a") for t in mixed[:200]) / 200
    assert 0.65 < share_a_early < 0.85  # ~3:1 while both are live
    again = [u.text for u in iter_weighted([ManifestSpec(a, 3.0), ManifestSpec(b, 1.0)], seed=1)]
    assert again == mixed


def test_manifest_spec_parses_weight_suffix(tmp_path):
    assert ManifestSpec.parse("x.jsonl:2.5") == ManifestSpec(tmp_path.__class__("x.jsonl"), 2.5)
    with pytest.raises(ValueError):
        ManifestSpec.parse("x.jsonl:-1")
