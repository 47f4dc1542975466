"""Dataset/collate: shapes, teacher-forcing views, U == index, DataLoader workers, bad audio handling."""

import json

import pytest
import torch
from torch.utils.data import DataLoader

from fastaed.data import errors as E
from fastaed.data.dataset import AEDDataset, Batch
from fastaed.data.errors import BadInputError
from fastaed.data.features import FeatureConfig
from fastaed.data.index import build_index
from fastaed.testing import train_tiny_tokenizer, write_tiny_corpus


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return train_tiny_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture
def corpus(tmp_path, tok):
    m = write_tiny_corpus(tmp_path / "c", num=6)
    return m, build_index([m], tok)


def test_collate_pads_and_matches_the_index(corpus, tok):
    _, index = corpus
    ds = AEDDataset(index, tok)
    batch = ds.collate([ds[i] for i in (0, 3, 5)])
    assert isinstance(batch, Batch) and len(batch) == 3
    assert batch.audio.shape == (3, int(batch.audio_lens.max()))
    assert batch.audio_lens.tolist() == [round(index.durations[i] * 16000) for i in (0, 3, 5)]
    assert batch.token_lens.tolist() == index.out_lengths[[0, 3, 5]].tolist()
    assert batch.tokens.shape == (3, int(index.out_lengths[[0, 3, 5]].max()))
    # padding beyond each length is pad / zero
    for row, (n, u) in enumerate(zip(batch.audio_lens, batch.token_lens)):
        assert torch.all(batch.audio[row, n:] == 0)
        assert torch.all(batch.tokens[row, u:] == tok.pad_id)


def test_teacher_forcing_views(corpus, tok):
    _, index = corpus
    ds = AEDDataset(index, tok)
    b = ds.collate([ds[i] for i in range(4)])
    assert torch.equal(b.dec_inputs[:, 1:], b.dec_targets[:, :-1])
    assert b.target_mask.sum().item() == int((b.token_lens - 1).sum())
    last = b.dec_targets[torch.arange(len(b)), b.dec_lens - 1]
    assert torch.all(last == tok.eos_id)  # every target ends with EOS
    assert torch.all(b.dec_targets[~b.target_mask] == tok.pad_id)
    assert b.prompt_lens.tolist() == [5] * 4


def test_features_in_workers(corpus, tok):
    _, index = corpus
    ds = AEDDataset(index, tok, features=FeatureConfig())
    b = ds.collate([ds[i] for i in range(3)])
    assert b.feats.shape == (3, int(b.feat_lens.max()), 128)
    assert b.feat_lens.tolist() == (b.audio_lens // 160 + 1).tolist()


def test_dataloader_with_workers_and_batch_sampler(corpus, tok):
    _, index = corpus
    ds = AEDDataset(index, tok)
    batches = [[0, 1], [2, 3, 4], [5]]
    loader = DataLoader(ds, batch_sampler=batches, collate_fn=ds.collate, num_workers=2)
    seen = [b.indices for b in loader]
    assert seen == batches


def _corrupt_line(manifest, line_no, **changes):
    lines = manifest.read_text().splitlines()
    entry = json.loads(lines[line_no - 1])
    entry.update(changes)
    lines[line_no - 1] = json.dumps(entry)
    manifest.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    "make_bad, reason, field",
    [
        (
            lambda m, d: _corrupt_line(m, 2, audio_filepath="audio/missing.wav"),
            E.MISSING_AUDIO,
            "audio_filepath",
        ),
        (
            lambda m, d: (d / "audio" / "u1.wav").write_bytes(b"RIFF garbage" * 10),
            E.CORRUPT_AUDIO,
            "audio_filepath",
        ),
        (lambda m, d: _corrupt_line(m, 2, duration=5.0), E.DURATION_MISMATCH, "duration"),
    ],
)
def test_bad_audio_errors_name_manifest_line_and_field(tmp_path, tok, make_bad, reason, field):
    m = write_tiny_corpus(tmp_path / "c", num=3)
    make_bad(m, tmp_path / "c")
    index = build_index([m], tok)
    ds = AEDDataset(index, tok)
    with pytest.raises(BadInputError) as info:
        ds[1]
    assert (info.value.reason, info.value.line, info.value.field) == (reason, 2, field)
    assert str(m) in str(info.value)


def test_bad_audio_is_counted_in_the_batch_under_skip(tmp_path, tok):
    m = write_tiny_corpus(tmp_path / "c", num=4)
    _corrupt_line(m, 2, audio_filepath="audio/missing.wav")
    index = build_index([m], tok)
    ds = AEDDataset(index, tok, on_bad_input="skip")
    loader = DataLoader(ds, batch_sampler=[[0, 1], [2, 3]], collate_fn=ds.collate, num_workers=1)
    batches = list(loader)
    assert batches[0].indices == [0] and batches[0].bad_input.counts == {E.MISSING_AUDIO: 1}
    assert batches[1].indices == [2, 3] and batches[1].bad_input.total == 0


def test_error_policy_propagates_from_workers(tmp_path, tok):
    m = write_tiny_corpus(tmp_path / "c", num=2)
    _corrupt_line(m, 1, audio_filepath="audio/nope.wav")
    ds = AEDDataset(build_index([m], tok), tok)
    loader = DataLoader(ds, batch_sampler=[[0, 1]], collate_fn=ds.collate, num_workers=1)
    # torch re-raises worker errors as RuntimeError carrying the original message (file, line, field).
    with pytest.raises((BadInputError, RuntimeError), match=r"train.jsonl:1: field 'audio_filepath'.*nope.wav"):
        list(loader)


def test_tokenizer_mismatch_is_refused(corpus, tmp_path):
    _, index = corpus
    other = train_tiny_tokenizer(tmp_path / "other", vocab_size=48)
    with pytest.raises(ValueError, match="rebuild the index"):
        AEDDataset(index, other)
