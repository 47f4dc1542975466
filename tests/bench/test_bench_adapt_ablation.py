"""``fastaed bench adapt-ablation`` on a tiny random Whisper: every variant trains the same number of steps
from the adapt work folder (the teacher cache reused, not rebuilt), is scored on the adaptation dev clips,
and an unknown variant or a missing work folder is a clear error."""

from __future__ import annotations

import json

import pytest

from fastaed.bench.adapt_ablation import AdaptAblationConfig, run
from fastaed.testing import write_tiny_corpus
from fastaed.train.adapt import AdaptConfig, adapt
from fastaed.train.distill import CACHE_FILE
from tests import whisper_fixtures as wf

QUICK = ("optim.max_steps=2", "runtime.num_workers=0", "runtime.progress=false")


@pytest.mark.slow
def test_each_variant_trains_equal_steps_and_reuses_the_teacher_cache(tmp_path):
    ckpt = wf.imported_checkpoint(tmp_path)
    manifest = write_tiny_corpus(tmp_path / "data", num=8)
    adapt(AdaptConfig(checkpoint=ckpt, out=tmp_path / "out", audio=(manifest,), dev_clips=2, overrides=QUICK))
    work = tmp_path / "out.work"
    config = AdaptAblationConfig(work=work, variants=("kl+state", "ce"), steps=3, out_dir=tmp_path / "abl")
    result = run(config)
    assert [r["variant"] for r in result["runs"]] == ["kl+state", "ce"]
    assert all(r["steps"] == 3 and r["dev_utts"] == 2 for r in result["runs"])
    # the tiny corpus names no TTS engine: its clips count as real ones
    assert all("wer_vs_teacher" in r and r["real_utts"] == 2 for r in result["runs"])
    # scored again without training: the same numbers
    config = AdaptAblationConfig(work=work, variants=("ce",), steps=3, out_dir=tmp_path / "abl", reuse=True)
    again = run(config)
    assert again["runs"][0]["wer_vs_teacher"] == result["runs"][1]["wer_vs_teacher"]
    assert result["best"] in ("kl+state", "ce")
    # the distilling variant read the copied cache (no second teacher pass); the plain one has none
    metrics = (tmp_path / "abl" / "kl_state" / "metrics.jsonl").read_text().splitlines()
    assert any("kl_loss" in json.loads(line) for line in metrics)
    assert (tmp_path / "abl" / "kl_state" / CACHE_FILE).is_file()
    assert not (tmp_path / "abl" / "ce" / CACHE_FILE).exists()


def test_unknown_variant_and_missing_work_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown"):
        run(AdaptAblationConfig(work=tmp_path, variants=("mse",)))
    with pytest.raises(FileNotFoundError, match="run fastaed adapt first"):
        run(AdaptAblationConfig(work=tmp_path / "nowhere"))
