"""Metadata index: U matches the tokenizer, caching by content, parallel == serial, skips survive reload."""

import json

import numpy as np
import pytest

from fastaed.data import errors as E
from fastaed.data.errors import BadInputError
from fastaed.data.index import build_index
from fastaed.data.manifest import ManifestSpec, read_manifest
from fastaed.testing import train_tiny_tokenizer, write_tiny_corpus


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return train_tiny_tokenizer(tmp_path_factory.mktemp("tok"))


def test_out_length_is_the_full_decoder_sequence(tmp_path, tok):
    m = write_tiny_corpus(tmp_path, num=8)
    index = build_index([m], tok)
    utts = list(read_manifest(m))
    assert index.out_lengths.tolist() == [len(tok.sequence(u)) for u in utts]
    assert index.durations.dtype == np.float32 and index.out_lengths.dtype == np.int32
    assert np.allclose(index.durations, [u.duration for u in utts])
    assert [index.utterance(i) for i in range(len(index))] == utts


def test_reload_comes_from_cache_and_is_identical(tmp_path, tok):
    m = write_tiny_corpus(tmp_path, num=5)
    first = build_index([m], tok)
    second = build_index([m], tok)
    assert not first.from_cache and second.from_cache
    for name in ("durations", "out_lengths", "source", "byte_offsets", "lines"):
        assert np.array_equal(getattr(first, name), getattr(second, name))


def test_cache_key_follows_content_tokenizer_and_policy(tmp_path, tok):
    m = write_tiny_corpus(tmp_path, num=5)
    key = build_index([m], tok).key
    assert build_index([m], tok, on_bad_input="skip").key != key
    other_tok = train_tiny_tokenizer(tmp_path / "tok2", vocab_size=48)
    assert build_index([m], other_tok).key != key
    lines = m.read_text().splitlines()
    entry = json.loads(lines[0])
    entry["text"] = "A different sentence entirely."
    m.write_text("\n".join([json.dumps(entry), *lines[1:]]) + "\n")  # same path, new content
    changed = build_index([m], tok)
    assert changed.key != key and not changed.from_cache
    assert changed.out_lengths[0] == len(tok.sequence(next(iter(read_manifest(m)))))


def test_parallel_chunked_build_equals_serial(tmp_path, tok, monkeypatch):
    import fastaed.data.index as index_module

    m = write_tiny_corpus(tmp_path, num=8)
    big = tmp_path / "big.jsonl"
    big.write_text(m.read_text() * 50 + "\n\n" + m.read_text() * 10)  # blank lines in the middle
    serial = build_index([big], tok, num_workers=1, use_cache=False)
    monkeypatch.setattr(index_module, "CHUNK_BYTES", 1000)  # many chunks, boundaries mid-file
    parallel = build_index([big], tok, num_workers=2, use_cache=False)
    for name in ("durations", "out_lengths", "byte_offsets", "lines"):
        assert np.array_equal(getattr(serial, name), getattr(parallel, name))
    assert parallel.lines[-1] == 8 * 60 + 2  # line numbers count the blank lines too


def test_several_manifests_keep_sources_and_weights(tmp_path, tok):
    a = write_tiny_corpus(tmp_path / "a", num=3)
    b = write_tiny_corpus(tmp_path / "b", num=4)
    index = build_index([ManifestSpec(a, 2.0), ManifestSpec(b, 0.5)], tok)
    assert index.source.tolist() == [0, 0, 0, 1, 1, 1, 1]
    assert index.weights == [2.0, 0.5]
    assert index.utterance(4).audio_filepath.startswith(str(tmp_path / "b"))


def test_bad_lines_raise_or_are_counted_and_the_count_survives_reload(tmp_path, tok):
    m = write_tiny_corpus(tmp_path, num=4)
    lines = m.read_text().splitlines()
    bad_lang = json.loads(lines[1])
    bad_lang["target_lang"] = "xx"
    m.write_text("\n".join([lines[0], json.dumps(bad_lang), "{oops", *lines[2:]]) + "\n")
    with pytest.raises(BadInputError) as info:
        build_index([m], tok)
    assert (info.value.line, info.value.field) == (2, "target_lang")
    index = build_index([m], tok, on_bad_input="skip")
    assert len(index) == 3 and index.lines.tolist() == [1, 4, 5]
    assert index.report.counts == {E.UNKNOWN_LANGUAGE: 1, E.MALFORMED_JSON: 1}
    reloaded = build_index([m], tok, on_bad_input="skip")
    assert reloaded.from_cache and reloaded.report.counts == index.report.counts


def test_empty_manifest_gives_empty_index(tmp_path, tok):
    m = tmp_path / "empty.jsonl"
    m.write_text("")
    index = build_index([m], tok)
    assert len(index) == 0 and index.out_lengths.dtype == np.int32
