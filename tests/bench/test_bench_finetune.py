"""``fastaed bench finetune`` on a tiny random Whisper: both fastaed recipes train from the same checkpoint,
the padded one with its fixed batch size and 30 s inputs; every model is scored on dev data and on the
real-speech sets, and the report carries every measured quantity. (The Hugging Face recipe needs the peer
venv: tests/bench/test_hf_peer.py.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fastaed.bench.finetune import (
    FinetuneBenchConfig,
    TreePeak,
    hf_recipe_config,
    one_manifest,
    print_report,
    recipe_overrides,
    run,
)
from fastaed.bench.finetune_eval import SECTION_BEGIN, SECTION_END, spread_subset, update_markdown
from fastaed.data.errors import BadInputError
from fastaed.testing import write_tiny_corpus
from tests import whisper_fixtures as wf
from tests.train import REPO


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A tiny random Whisper checkpoint and an 8-utterance corpus."""
    root = tmp_path_factory.mktemp("finetune_bench")
    ckpt = wf.imported_checkpoint(root)
    return ckpt, write_tiny_corpus(root / "data", num=8)


def test_bucketed_and_padded_recipes_run_on_the_same_checkpoint(source, tmp_path, capsys):
    ckpt, manifest = source
    config = FinetuneBenchConfig(
        config=REPO / "configs" / "finetune_whisper_tiny.yaml", checkpoint=ckpt, train_manifests=(manifest,),
        dev_manifest=manifest, recipes=("bucketed", "padded"), time_budget_s=60.0, max_steps=2, threads=1,
        max_duration=4.0, padded_batch_size=3, dev_max_utts=2, real_manifests=(manifest, tmp_path / "none"),
        real_max_utts=3, out_dir=tmp_path / "runs", markdown=tmp_path / "B.md",
    )  # fmt: skip
    (tmp_path / "B.md").write_text("# Benchmarks\n\n## Other\n\nkept\n")
    result = run(config)
    by = {r["recipe"]: r for r in result["runs"]}
    assert set(by) == {"bucketed", "padded"} and all(r["steps"] == 2 for r in by.values())
    assert by["padded"]["mean_batch_size"] == 3.0  # the fixed batch size
    # 8 utterances of 0.5..2.25 s in 30 s windows: most of what the padded encoder computes is padding
    assert by["padded"]["input_padding"] > 0.9 > by["bucketed"]["input_padding"]
    assert all(r["dev_wer"] is not None and r["peak_mem_mb"] > 0 for r in by.values())
    assert all(r["loader_workers"] == 1 and r["peak_mem_mb_trainer_process"] > 0 for r in by.values())
    assert by["bucketed"]["dev_input"] == "unpadded" and by["padded"]["dev_input"] == "padded"
    assert set(result["comparisons"]) == {"padded"}
    # one real set (the missing one is skipped): original padded + unpadded, each fine-tuned model in its
    # training shape (the padded recipe's too: domain shift told apart from padding)
    shapes = [(r["model"], r["input"], r["utterances"]) for r in result["real_speech"]]
    assert shapes == [
        ("original", "padded", 3), ("original", "unpadded", 3), ("fine-tuned (bucketed)", "unpadded", 3),
        ("fine-tuned (padded)", "padded", 3),
    ]  # fmt: skip
    assert str(manifest) in result["real_speech_verdict"]
    assert (tmp_path / "runs" / "curves.png").stat().st_size > 0
    md = (tmp_path / "B.md").read_text()
    assert md.startswith("# Benchmarks") and "kept" in md and "](runs/curves.png)" in md
    assert (
        "| (a) fastaed: 30 s padded, fixed batch | 2 |" in md and "fine-tuned (bucketed) | unpadded | 3" in md
    )
    assert f"real set not scored: `{tmp_path / 'none'}`" in md and f"`{manifest}`" in md  # nothing unsaid
    print_report(result)
    out = capsys.readouterr().out
    assert "bucketed / padded" in out and "real speech" in out and "real set not scored" in out


def test_hf_recipe_trains_the_exported_weights_and_is_scored_like_the_others(source, tmp_path):
    from fastaed.bench.peers.hf_finetune import hf_peer_python

    if hf_peer_python() is None:
        pytest.skip("no .venv-whisper with transformers (make whisper-venv)")
    ckpt, manifest = source
    config = FinetuneBenchConfig(
        config=REPO / "configs" / "finetune_whisper_tiny.yaml", checkpoint=ckpt, train_manifests=(manifest,),
        dev_manifest=manifest, recipes=("hf",), time_budget_s=60.0, max_steps=2, threads=1,
        padded_batch_size=3, dev_max_utts=2, real_manifests=(), out_dir=tmp_path / "runs",
    )  # fmt: skip
    result = run(config)
    (hf,) = result["runs"]
    assert hf["steps"] == 2 and hf["mean_batch_size"] == 3.0 and hf["input_padding"] > 0.9
    assert hf["dev_wer"] is not None and hf["dev_input"] == "padded" and not result["comparisons"]


def test_markdown_section_is_replaced_not_appended(tmp_path):
    path = tmp_path / "B.md"
    path.write_text("# B\n")
    update_markdown(path, f"{SECTION_BEGIN}\none\n{SECTION_END}", "## Fine-tuning")
    update_markdown(path, f"{SECTION_BEGIN}\ntwo\n{SECTION_END}", "## Fine-tuning")
    text = path.read_text()
    assert text.count("## Fine-tuning") == 1 and "two" in text and "one" not in text


def test_spread_subset_covers_the_whole_list():
    items = list(range(10))
    assert spread_subset(items, 4) == [0, 2, 5, 7]
    assert spread_subset(items, 0) == items and spread_subset(items, 20) == items


def test_one_manifest_keeps_every_line_of_every_manifest_with_resolvable_audio(tmp_path):
    a, b = tmp_path / "a", tmp_path / "deeper" / "b"
    for d, n in ((a, 2), (b, 3)):
        d.mkdir(parents=True)
        lines = [
            {"audio_filepath": f"clip{i}.wav", "duration": 1.0 + i, "text": f"{d.name} {i}"} for i in range(n)
        ]
        (d / "m.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    single = one_manifest((a / "m.jsonl",), tmp_path / "one.jsonl")
    assert single == a / "m.jsonl"  # one manifest is used as it is
    out = one_manifest((a / "m.jsonl", b / "m.jsonl"), tmp_path / "one.jsonl")
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["text"] for r in rows] == ["a 0", "a 1", "b 0", "b 1", "b 2"]
    assert rows[3]["audio_filepath"] == str((b / "clip1.wav").resolve())
    assert all(Path(r["audio_filepath"]).is_absolute() for r in rows)
    with open(b / "m.jsonl", "a") as f:
        f.write('{"audio_filepath": "clip9.wav", "text": "no duration"}\n')
    with pytest.raises(BadInputError, match=r"m\.jsonl:5.*duration"):
        one_manifest((a / "m.jsonl", b / "m.jsonl"), tmp_path / "one.jsonl")


def test_distilled_recipe_is_the_bucketed_one_plus_the_padded_original_as_teacher(tmp_path):
    yaml = REPO / "configs" / "finetune_whisper_tiny.yaml"
    config = FinetuneBenchConfig(config=yaml, out_dir=tmp_path, replay_manifests=())
    bucketed = recipe_overrides(config, "bucketed", tmp_path / "ckpt")
    distilled = recipe_overrides(config, "distilled", tmp_path / "ckpt")
    extra = [x for x in distilled if x not in bucketed]
    assert f"distill.teacher={tmp_path / 'ckpt'}" in extra and "distill.teacher_input=padded" in extra
    assert "distill.cache=lazy" in extra and all(x.startswith(("distill.", "runtime.out_dir")) for x in extra)
    assert not any(x.startswith("distill.") for x in bucketed)
    # started from another checkpoint (fastaed adapt's), the teacher is still the original on padded input
    adapted = FinetuneBenchConfig(
        config=yaml, out_dir=tmp_path, replay_manifests=(), distilled_init=tmp_path / "a"
    )
    started = recipe_overrides(adapted, "distilled", tmp_path / "ckpt")
    assert (
        f"model.init_from={tmp_path / 'a'}" in started and f"distill.teacher={tmp_path / 'ckpt'}" in started
    )
    assert f"model.init_from={tmp_path / 'ckpt'}" in recipe_overrides(adapted, "bucketed", tmp_path / "ckpt")


def test_every_recipe_gets_the_yaml_loader_workers_hf_included(tmp_path):
    """Like for like: the Hugging Face Trainer gets as many data-loading workers as fastaed's DataLoader."""
    yaml = (REPO / "configs" / "finetune_whisper_tiny.yaml").read_text()
    assert "  num_workers: 1\n" in yaml
    (tmp_path / "ft.yaml").write_text(yaml.replace("  num_workers: 1\n", "  num_workers: 3\n"))
    config = FinetuneBenchConfig(config=tmp_path / "ft.yaml", out_dir=tmp_path / "runs")
    assert hf_recipe_config(config).dataloader_workers == 3
    assert "runtime.num_workers=3" in recipe_overrides(config, "bucketed", tmp_path / "ckpt")
    default = FinetuneBenchConfig(config=REPO / "configs" / "finetune_whisper_tiny.yaml")
    assert hf_recipe_config(default).dataloader_workers == 1


_ALLOCATE = """
import subprocess, sys, time
hold = b"x" * (int(sys.argv[1]) << 20)  # touched pages: resident
if len(sys.argv) > 2:  # a worker of its own, like a DataLoader's, holding 200 MB while this one holds 100
    subprocess.run([sys.executable, "-c", sys.argv[2], "200"], check=True)
else:
    time.sleep(1.5)
"""


def test_peak_memory_counts_the_worker_processes_of_a_recipe():
    """A recipe's peak is its whole process tree's: a trainer holding 100 MB whose worker holds 200 MB peaks
    above 300 MB, which neither process's own ru_maxrss shows."""
    child = [sys.executable, "-c", _ALLOCATE, "100", _ALLOCATE]
    with TreePeak(interval_s=0.02) as peak:
        subprocess.run(child, check=True)
    assert peak.peak_mb > 300, peak.peak_mb
    with TreePeak(interval_s=0.02) as idle:  # nothing started: nothing counted
        pass
    assert idle.peak_mb < 50


def test_process_tree_is_found_with_and_without_the_kernels_children_files():
    from fastaed.bench.finetune import _children_by_scan, _descendants

    code = "import subprocess, sys; subprocess.run([sys.executable, '-c', 'import time; time.sleep(2)'])"
    child = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 10
        while not (below := _descendants(child.pid)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(below) == 1 and set(below) | {child.pid} <= set(_descendants(os.getpid()))
        scan = _children_by_scan()
        assert child.pid in scan[os.getpid()] and scan[child.pid] == below
    finally:
        child.wait()
