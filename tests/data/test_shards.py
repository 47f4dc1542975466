"""NeMo tarred shards: brace patterns, ``write_shards`` round trips a corpus (byte-identical on a rewrite),
members are found with or without stored positions, and bad members, lines and shards get the loose-file
errors (naming the manifest line and the member) or counted skips."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from fastaed.data.audio import load_audio
from fastaed.data.errors import BadInputError, BadInputReport
from fastaed.data.manifest import read_manifest
from fastaed.data.shard_sources import open_shard_source
from fastaed.data.shards import (
    SHARD_INDEX_FILE,
    ShardDataset,
    expand_shard_pattern,
    scan_tar,
    write_shards,
)
from fastaed.testing import train_tiny_tokenizer, write_tiny_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    manifest = write_tiny_corpus(root / "data", num=7)
    return manifest, train_tiny_tokenizer(root / "tok"), root


def _items(shards):
    return [x for s in shards for x in s]


def test_brace_patterns_expand_like_nemo():
    assert expand_shard_pattern("a/audio__OP_0..2_CL_.tar") == [
        "a/audio_0.tar",
        "a/audio_1.tar",
        "a/audio_2.tar",
    ]
    assert expand_shard_pattern("x{08..10}.tar") == ["x08.tar", "x09.tar", "x10.tar"]
    assert len(expand_shard_pattern("n_OP_0..1_CL_/s_{0..2}.tar")) == 6
    assert expand_shard_pattern("plain.tar") == ["plain.tar"]


def test_writer_round_trips_every_utterance_with_its_audio(corpus, tmp_path):
    manifest, tok, _ = corpus
    result = write_shards([manifest], tmp_path / "a", items_per_shard=3)
    assert (result.num_shards, result.num_items) == (3, 7)
    shards = open_shard_source(str(tmp_path / "a"), tok)
    assert [s.num_items for s in shards] == [3, 3, 1]
    items = _items(shards)
    loose = {u.text + str(u.duration): u for u in read_manifest(manifest)}
    assert sorted(x["text"] + str(x["duration"]) for x in items) == sorted(loose)
    ds = ShardDataset(tok, on_bad_input="error")
    for item in items:
        utt = loose[item["text"] + str(item["duration"])]
        example = ds[item]
        assert torch.equal(example.audio, load_audio(utt.audio_filepath))
        assert len(example.tokens) == item["out_length"] == len(tok.sequence(utt))
    # Deterministic: the same input gives byte-identical files.
    write_shards([manifest], tmp_path / "b", items_per_shard=3)
    for name in ("audio_0.tar", "manifest_2.json", SHARD_INDEX_FILE):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_shards_by_seconds_stay_within_the_limit(corpus, tmp_path):
    manifest, tok, _ = corpus
    write_shards([manifest], tmp_path / "s", seconds_per_shard=3.0)
    index = json.loads((tmp_path / "s" / SHARD_INDEX_FILE).read_text())
    assert sum(s["num_items"] for s in index["shards"]) == 7
    assert all(s["seconds"] <= 3.0 or s["num_items"] == 1 for s in index["shards"])


def test_members_are_found_without_stored_positions_and_through_patterns(corpus, tmp_path):
    manifest, tok, _ = corpus
    write_shards([manifest], tmp_path / "a", items_per_shard=3)
    (tmp_path / "a" / SHARD_INDEX_FILE).unlink()  # a set made by NeMo's own script: no index, no positions
    for p in (tmp_path / "a").glob("manifest_*.json"):
        lines = [json.loads(x) for x in p.read_text().splitlines()]
        p.write_text(
            "".join(
                json.dumps({k: v for k, v in e.items() if not k.startswith("tar_")}) + "\n" for e in lines
            )
        )
    pattern = f"{tmp_path}/a/manifest__OP_0..2_CL_.json::{tmp_path}/a/audio_{{0..2}}.tar"
    for spec in (str(tmp_path / "a"), pattern):
        items = _items(open_shard_source(spec, tok))
        assert len(items) == 7 and all(x["member_pos"] is None for x in items)
        ds = ShardDataset(tok, on_bad_input="error")
        assert all(ds[x].audio.numel() > 0 for x in items)


def _corrupt_first_member(tar):
    member = next(iter(scan_tar(tar).values()))
    with open(tar, "r+b") as f:
        f.seek(member.offset)
        f.write(b"\x00garbage" * 8)


def test_bad_members_name_the_line_and_member_or_are_counted(corpus, tmp_path):
    manifest, tok, _ = corpus
    write_shards([manifest], tmp_path / "a", items_per_shard=3)
    tar = tmp_path / "a" / "audio_0.tar"
    _corrupt_first_member(tar)
    items = _items(open_shard_source(str(tmp_path / "a"), tok))
    first = items[0]
    with pytest.raises(
        BadInputError, match=r"manifest_0\.json:1: field 'audio_filepath'.*audio_0\.tar"
    ) as err:
        ShardDataset(tok, on_bad_input="error")[first]
    assert err.value.reason == "corrupt_audio"
    skipped = ShardDataset(tok, on_bad_input="skip")[first]
    assert skipped.error.reason == "corrupt_audio"
    # A member the tar does not have (no stored position): missing_audio, naming the member.
    gone = {**items[1], "member": "nope.wav", "member_pos": None}
    with pytest.raises(BadInputError, match="member nope.wav is not in tar") as err:
        ShardDataset(tok, on_bad_input="error")[gone]
    assert err.value.reason == "missing_audio"
    batch = ShardDataset(tok).collate([ShardDataset(tok)[x] for x in (first, gone, items[2])])
    assert len(batch) == 1 and batch.bad_input.counts == {"corrupt_audio": 1, "missing_audio": 1}


def test_a_missing_shard_is_an_error_or_left_out_and_counted(corpus, tmp_path):
    manifest, tok, _ = corpus
    write_shards([manifest], tmp_path / "a", items_per_shard=3)
    (tmp_path / "a" / "audio_1.tar").unlink()
    with pytest.raises(BadInputError, match=r"audio_1\.tar does not exist \[missing_shard\]"):
        open_shard_source(str(tmp_path / "a"), tok)
    report = BadInputReport()
    shards = open_shard_source(str(tmp_path / "a"), tok, on_bad_input="skip", report=report)
    assert len(shards) == 2 and report.counts == {"missing_shard": 1}


def test_a_bad_manifest_line_in_a_shard_names_it_or_becomes_an_invalid_item(corpus, tmp_path):
    manifest, tok, _ = corpus
    write_shards([manifest], tmp_path / "a", items_per_shard=3)
    path = tmp_path / "a" / "manifest_0.json"
    lines = path.read_text().splitlines()
    lines[1] = json.dumps({**json.loads(lines[1]), "duration": "long"})
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(BadInputError, match=r"manifest_0\.json:2: field 'duration'"):
        _items(open_shard_source(str(tmp_path / "a"), tok))
    items = _items(open_shard_source(str(tmp_path / "a"), tok, on_bad_input="skip"))
    bad = [x for x in items if "bad" in x]
    assert len(items) == 7 and len(bad) == 1 and bad[0]["duration"] != bad[0]["duration"]  # NaN: rejected


def test_writer_skips_missing_audio_under_skip_and_names_it_otherwise(corpus, tmp_path):
    manifest, tok, root = corpus
    data = tmp_path / "data"
    shutil.copytree(manifest.parent, data)
    (data / "audio" / "u3.wav").unlink()
    with pytest.raises(BadInputError, match=r"train\.jsonl:4: field 'audio_filepath'"):
        write_shards([data / manifest.name], tmp_path / "a", items_per_shard=3)
    result = write_shards([data / manifest.name], tmp_path / "b", items_per_shard=3, on_bad_input="skip")
    assert result.num_items == 6 and result.report.counts == {"missing_audio": 1}
