"""The fixed held-out half of the real sets: decided by the utt_id alone, disjoint from the adaptation half,
covering the set; the halves real-check writes; the helpers adaptation and scoring code list them with."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from fastaed.data import asterisk, heldout, realcheck
from fastaed.data.errors import BadInputError
from fastaed.util.outputs import OutputExistsError


def _write_manifest(path: Path, ids: list[str]) -> list[str]:
    lines = [
        json.dumps({"audio_filepath": f"a/{i}.wav", "duration": 1.0, "text": i, "utt_id": i}) for i in ids
    ]
    path.write_text("".join(line + "\n" for line in lines))
    return lines


def test_the_split_is_a_pinned_function_of_the_utt_id():
    # Pinned: a change of rule would move clips a model was already scored on into adaptation data.
    pinned = {
        "asterisk-digits-1": True, "asterisk-activated": False, "asterisk-es-digits-1": False,
        "asterisk-fr-digits-1": True, "asterisk-es-vm-tooshort": True, "asterisk-fr-for": True,
    }  # fmt: skip
    assert {u: heldout.is_heldout(u) for u in pinned} == pinned
    for u in pinned:  # the first byte of the utt_id's SHA-1
        assert heldout.is_heldout(u) == (hashlib.sha1(u.encode()).digest()[0] < 128)


def test_about_half_of_all_clips_are_held_out():
    ids = [f"asterisk-prompt-{i}" for i in range(4000)]
    assert 0.47 < sum(map(heldout.is_heldout, ids)) / len(ids) < 0.53


def test_halves_are_disjoint_cover_the_set_and_keep_its_lines_and_order(tmp_path):
    ids = [f"asterisk-x{i}" for i in range(40)]
    lines = _write_manifest(tmp_path / "asterisk.jsonl", ids)
    held, adapt = heldout.split_manifest(tmp_path / "asterisk.jsonl")
    assert (held.name, adapt.name) == ("asterisk.heldout.jsonl", "asterisk.adapt.jsonl")
    held_lines, adapt_lines = held.read_text().splitlines(), adapt.read_text().splitlines()
    assert held_lines and adapt_lines and not set(held_lines) & set(adapt_lines)
    assert held_lines == [x for x in lines if x in held_lines]  # the manifest's order
    assert sorted(held_lines + adapt_lines) == sorted(lines)
    assert all(heldout.is_heldout(json.loads(x)["utt_id"]) for x in held_lines)


def test_a_clip_stays_on_its_side_whatever_else_the_set_holds(tmp_path):
    ids = [f"asterisk-x{i}" for i in range(40)]
    _write_manifest(tmp_path / "asterisk.jsonl", ids)
    _write_manifest(tmp_path / "other.jsonl", ids[::-1][:13] + ["asterisk-new"])
    whole = heldout.split_manifest(tmp_path / "asterisk.jsonl")[0].read_text().splitlines()
    part = heldout.split_manifest(tmp_path / "other.jsonl")[0].read_text().splitlines()
    assert set(part) - set(whole) <= {x for x in part if '"asterisk-new"' in x}


def test_splitting_again_gives_the_same_bytes_and_replaces_only_its_own_halves(tmp_path):
    manifest = tmp_path / "asterisk.jsonl"
    _write_manifest(manifest, [f"asterisk-x{i}" for i in range(10)])
    first = [p.read_bytes() for p in heldout.split_manifest(manifest)]
    assert [p.read_bytes() for p in heldout.split_manifest(manifest)] == first
    (tmp_path / "asterisk.adapt.jsonl").write_text("my own notes\n")
    with pytest.raises(OutputExistsError, match="asterisk.adapt.jsonl"):
        heldout.split_manifest(manifest)
    assert (tmp_path / "asterisk.adapt.jsonl").read_text() == "my own notes\n"


@pytest.mark.parametrize("line, message", [("{not json", "malformed_json"), ('{"text": "a"}', "utt_id")])
def test_a_line_without_an_utt_id_is_an_error_naming_it(tmp_path, line, message):
    manifest = tmp_path / "asterisk.jsonl"
    _write_manifest(manifest, ["asterisk-a"])
    manifest.write_text(manifest.read_text() + line + "\n")
    with pytest.raises(BadInputError, match=message) as info:
        heldout.split_manifest(manifest)
    assert info.value.path == str(manifest) and info.value.line == 2
    assert not (tmp_path / "asterisk.heldout.jsonl").exists()


def test_a_half_is_not_split_again(tmp_path):
    with pytest.raises(ValueError, match="already one half"):
        heldout.split_manifest(tmp_path / "asterisk.heldout.jsonl")


def test_set_names_agree_with_the_files_the_sets_write():
    assert heldout.HELDOUT_SETS["pocketsphinx"] == realcheck.MANIFEST_NAME  # held out whole
    split = {Path(s.manifest_name).stem: s.code for s in asterisk.LANGUAGES.values()}
    assert split == heldout.SPLIT_SETS
    assert {heldout.HELDOUT_SETS[stem] for stem in split} == {f"{stem}.heldout.jsonl" for stem in split}


def test_helpers_list_existing_halves_by_language_and_never_overlap(tmp_path):
    for name in ("real_check.jsonl", "asterisk.jsonl", "asterisk_fr.jsonl"):
        _write_manifest(tmp_path / name, [f"{name}-{i}" for i in range(8)])
    for name in ("asterisk.jsonl", "asterisk_fr.jsonl"):
        heldout.split_manifest(tmp_path / name)
    held = heldout.heldout_manifests(tmp_path)
    assert held == {
        "pocketsphinx": tmp_path / "real_check.jsonl",
        "asterisk": tmp_path / "asterisk.heldout.jsonl",
        "asterisk_fr": tmp_path / "asterisk_fr.heldout.jsonl",
    }  # asterisk_es: not built, so not listed
    adapt = heldout.adaptation_manifests(tmp_path)
    assert adapt == [tmp_path / "asterisk.adapt.jsonl", tmp_path / "asterisk_fr.adapt.jsonl"]
    assert not set(held.values()) & set(adapt)
    held_ids = {json.loads(x)["utt_id"] for p in held.values() for x in p.read_text().splitlines()}
    adapt_ids = {json.loads(x)["utt_id"] for p in adapt for x in p.read_text().splitlines()}
    assert adapt_ids and not held_ids & adapt_ids
    assert list(heldout.heldout_manifests(tmp_path, {"fr"})) == ["asterisk_fr"]
    assert heldout.adaptation_manifests(tmp_path, {"en"}) == [tmp_path / "asterisk.adapt.jsonl"]
    assert heldout.adaptation_manifests(tmp_path, {"es"}) == []


def test_a_real_check_folder_may_hold_every_file_the_sets_write(tmp_path, capsys):
    from fastaed.cli.data import adopt_real_check_dir, real_check_names

    out = tmp_path / "real"
    out.mkdir()
    names = real_check_names()
    assert {"asterisk_es.heldout.jsonl", "asterisk_fr.adapt.jsonl", "asterisk_fr_audio"} <= names
    for name in names | {".asterisk_es.heldout.0a1b2c3d.tmp.jsonl"}:  # a half a killed run left behind
        (out / name).write_text("")
    adopt_real_check_dir(out)  # from before markers: recognised by its names
    (out / "asterisk_de.jsonl").write_text("")
    with pytest.raises(OutputExistsError, match="asterisk_de.jsonl"):
        adopt_real_check_dir(out)
