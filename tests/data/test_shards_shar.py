"""Lhotse Shar read directly: cuts + recording members, as Lhotse 1.33 writes them (when installed) and as a
hand-made set; the audio equals what Lhotse itself loads; bad cuts and a missing recording tar are named."""

from __future__ import annotations

import gzip
import io
import json
import tarfile

import numpy as np
import pytest
import soundfile as sf
import torch

from fastaed.data.errors import BadInputError, BadInputReport
from fastaed.data.shard_sources import open_shard_source
from fastaed.data.shards import ShardDataset
from fastaed.testing import train_tiny_tokenizer, write_tone
from tests import import_optional


def write_shar(root, cuts_per_shard, seconds):
    """A Shar directory by hand: cuts.N.jsonl.gz + recording.N.tar (flac member, then its json)."""
    root.mkdir(parents=True)
    for shard, start in enumerate(range(0, len(seconds), cuts_per_shard)):
        lines = []
        with tarfile.open(root / f"recording.{shard:06d}.tar", "w") as tf:
            for i in range(start, min(start + cuts_per_shard, len(seconds))):
                buf = io.BytesIO()
                wave = 0.1 * np.sin(np.arange(int(seconds[i] * 16000)) * (0.01 + 0.001 * i))
                sf.write(buf, wave.astype(np.float32), 16000, format="FLAC")
                for name, data in ((f"c{i}.flac", buf.getvalue()), (f"c{i}.json", b"{}")):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tf.addfile(info, io.BytesIO(data))
                sup = {"id": f"s{i}", "recording_id": f"c{i}", "start": 0, "duration": seconds[i],
                       "text": "The cat sat on the mat.", "language": "en"}  # fmt: skip
                lines.append(
                    json.dumps({"id": f"c{i}", "start": 0, "duration": seconds[i], "supervisions": [sup]})
                )
        with gzip.open(root / f"cuts.{shard:06d}.jsonl.gz", "wt") as f:
            f.write("\n".join(lines) + "\n")
    return root


def test_hand_made_shar_reads_every_cut_with_its_audio(tmp_path):
    tok = train_tiny_tokenizer(tmp_path / "tok")
    root = write_shar(tmp_path / "shar", 2, [1.0, 1.5, 0.75, 2.0, 1.25])
    shards = open_shard_source(str(root), tok)
    assert [s.num_items for s in shards] == [2, 2, 1]
    items = [x for s in shards for x in s]
    ds = ShardDataset(tok, on_bad_input="error")
    for i, item in enumerate(items):
        assert item["member"] == f"c{i}"
        assert ds[item].audio.numel() == round(item["duration"] * 16000)


def test_bad_cuts_and_a_missing_recording_tar_are_named(tmp_path):
    tok = train_tiny_tokenizer(tmp_path / "tok")
    root = write_shar(tmp_path / "shar", 2, [1.0, 1.5, 0.75])
    path = root / "cuts.000000.jsonl.gz"
    cuts = [json.loads(x) for x in gzip.open(path, "rt").read().splitlines()]
    cuts[1]["supervisions"] = []  # no text
    with gzip.open(path, "wt") as f:
        f.write("\n".join(json.dumps(c) for c in cuts) + "\n")
    with pytest.raises(BadInputError, match=r"cuts\.000000\.jsonl\.gz:2: field 'supervisions': cut 'c1'"):
        [x for s in open_shard_source(str(root), tok) for x in s]
    (root / "recording.000001.tar").unlink()
    with pytest.raises(BadInputError, match="recording.000001.tar does not exist"):
        open_shard_source(str(root), tok)
    report = BadInputReport()
    shards = open_shard_source(str(root), tok, on_bad_input="skip", report=report)
    assert len(shards) == 1 and report.counts == {"missing_shard": 1}


def test_shar_written_by_lhotse_gives_lhotses_own_audio(tmp_path):
    lhotse = import_optional("lhotse", "pip install -e .[lhotse]")
    tok = train_tiny_tokenizer(tmp_path / "tok")
    cuts = []
    for i, seconds in enumerate([1.0, 1.75, 0.5]):
        rec = lhotse.Recording.from_file(
            write_tone(tmp_path / f"a{i}.wav", seconds, freq=300 + 40 * i, seed=i)
        )
        cut = rec.to_cut()
        cut.supervisions = [
            lhotse.SupervisionSegment(
                f"s{i}", rec.id, 0.0, rec.duration, text="We will answer.", language="en"
            )
        ]
        cuts.append(cut)
    out = tmp_path / "shar"
    out.mkdir()
    lhotse.CutSet.from_cuts(cuts).to_shar(out, fields={"recording": "flac"}, shard_size=2)
    items = [x for s in open_shard_source(str(out), tok) for x in s]
    theirs = {c.id: c.load_audio()[0] for c in lhotse.CutSet.from_shar(in_dir=out)}
    ds = ShardDataset(tok, on_bad_input="error")
    assert [x["member"] for x in items] == [c.id for c in cuts]
    for item in items:
        torch.testing.assert_close(
            ds[item].audio, torch.from_numpy(theirs[item["member"]]), atol=1e-4, rtol=0
        )
