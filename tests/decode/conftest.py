"""A checkpoint that has memorised a tiny corpus: 4 tone clips, each with a pnc=yes and a pnc=no target."""

from __future__ import annotations

import json

import pytest
import torch

from fastaed.data.dataset import AEDDataset
from fastaed.data.features import FeatureConfig, LogMelFeatures
from fastaed.data.index import build_index
from fastaed.data.manifest import ManifestSpec
from fastaed.formats import save_model
from fastaed.model import build_model, cross_entropy_loss
from fastaed.testing import SENTENCES, train_tiny_tokenizer, write_tone

NUM_CLIPS = 4
STEPS = 150


@pytest.fixture(scope="session")
def overfit(tmp_path_factory):
    """(checkpoint dir, manifest with both pnc forms of every clip, tokenizer)."""
    root = tmp_path_factory.mktemp("overfit")
    both = []
    for i in range(NUM_CLIPS):  # long enough for the text: a row emits at most one token per 80 ms frame
        seconds = 1.5 + 0.25 * i
        write_tone(root / "audio" / f"u{i}.wav", seconds, freq=200 + 90 * i, seed=i)
        entry = {"audio_filepath": f"audio/u{i}.wav", "duration": seconds, "text": SENTENCES[i]}
        both += [{**entry, "pnc": pnc} for pnc in ("yes", "no")]
    manifest = root / "train.jsonl"
    manifest.write_text("".join(json.dumps(e) + "\n" for e in both))
    tokenizer = train_tiny_tokenizer(root / "tokenizer", vocab_size=200)  # ~10 pieces per sentence

    dataset = AEDDataset(build_index([ManifestSpec(manifest)], tokenizer), tokenizer)
    batch = dataset.collate([dataset[i] for i in range(len(dataset))])
    frontend = LogMelFeatures(FeatureConfig(dither=0.0)).eval()
    with torch.no_grad():
        feats, feat_lens = frontend(batch.audio, batch.audio_lens)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_model("test", vocab_size=tokenizer.vocab_size).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    for _ in range(STEPS):
        logits = model(feats, feat_lens, batch.dec_inputs, batch.dec_lens)
        loss, _ = cross_entropy_loss(  # prompt targets masked: the pnc token after <|en|> is a coin flip
            logits, batch.dec_targets, target_lens=batch.dec_lens, prompt_lens=batch.prompt_lens
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    torch.set_num_threads(threads)
    assert loss.item() < 0.02, f"the fixture model did not memorise its corpus (loss {loss.item():.3f})"

    ckpt = save_model(model.eval(), root / "ckpt", tokenizer_identity=tokenizer.identity)
    tokenizer.save(ckpt / "tokenizer")
    return ckpt, manifest, tokenizer
