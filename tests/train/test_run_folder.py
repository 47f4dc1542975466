"""The run folder keeps what it holds (issue 29, items 1 and 2): ``runtime.out_dir`` must be a folder the
trainer made (a non-empty folder of user files is refused, untouched); a run folder whose checkpoints are
all damaged is an error naming each, not a silent fresh start; and a fresh start (``--resume none`` or
``runtime.resume=none``) moves the earlier run's metrics, summary and checkpoints aside, byte for byte."""

from __future__ import annotations

import shutil

import pytest

from fastaed.cli.main import main
from fastaed.formats import WEIGHTS_FILE
from fastaed.train.checkpoint import STATE_FILE, NoIntactCheckpointError, resolve_resume
from fastaed.util import outputs
from fastaed.util.outputs import MARKER, read_marker
from tests.train import TEST_CONFIG, data_overrides, tiny_data, train_records

RUN = ["optim.max_steps=2", "runtime.ckpt_every=1", "runtime.keep_checkpoints=2", "runtime.progress=false"]


def _damage(path):
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 16] = bytes(b ^ 0x5A for b in data[mid : mid + 16])
    path.write_bytes(bytes(data))


def fastaed_train(data, out_dir, *args: str) -> int:
    manifest, tok_dir = data
    argv = ["train", "--config", str(TEST_CONFIG), *data_overrides(manifest, tok_dir, out_dir), *RUN, *args]
    with pytest.raises(SystemExit) as info:
        main(argv)
    return info.value.code


def snapshot(folder) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return tiny_data(tmp_path_factory.mktemp("run_folder"), num=6)


@pytest.fixture(scope="module")
def finished_run(data, tmp_path_factory):
    """A run folder the trainer wrote: checkpoints at steps 1 and 2, metrics.jsonl, summary.json."""
    run = tmp_path_factory.mktemp("finished") / "run"
    assert fastaed_train(data, run) == 0
    assert (run / "ckpt-1").is_dir() and (run / "ckpt-2").is_dir()
    assert read_marker(run)["kind"] == "training run"
    return run


def test_a_folder_of_user_files_is_refused_and_left_as_it_was(data, tmp_path, capsys):
    out = tmp_path / "models"
    out.mkdir()
    (out / "notes.txt").write_text("mine\n")
    (out / "sub").mkdir()
    (out / "sub" / "weights.bin").write_bytes(b"\x00" * 10)
    before = snapshot(out)
    capsys.readouterr()
    assert fastaed_train(data, out) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"fastaed train: error: runtime.out_dir {out}: ") and err.count("\n") == 1, err
    assert "notes.txt" in err and "nothing was changed" in err
    assert snapshot(out) == before and sorted(p.name for p in out.iterdir()) == ["notes.txt", "sub"]
    # ``--resume none`` does not make it the trainer's either
    assert fastaed_train(data, out, "--resume", "none") == 2
    assert snapshot(out) == before


def test_an_empty_folder_and_a_run_folder_from_before_the_marker_are_accepted(data, finished_run, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert fastaed_train(data, empty, "optim.max_steps=1") == 0
    assert (empty / "ckpt-1").is_dir() and (empty / MARKER).is_file()

    legacy = tmp_path / "legacy"
    shutil.copytree(finished_run, legacy)
    (legacy / MARKER).unlink()  # as a run written before the marker existed
    assert fastaed_train(data, legacy, "optim.max_steps=3") == 0
    assert sorted(train_records(legacy / "metrics.jsonl")) == [1, 2, 3]  # resumed, history kept


def test_checkpoints_all_damaged_are_named_not_resolved_to_a_fresh_start(finished_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    _damage(run / "ckpt-2" / WEIGHTS_FILE)
    (run / "ckpt-1" / STATE_FILE).unlink()
    with pytest.raises(NoIntactCheckpointError) as info:
        resolve_resume("auto", run)
    message = str(info.value)
    assert "ckpt-2: " in message and "sha256 differs" in message
    assert "ckpt-1: " in message and f"missing {STATE_FILE}" in message
    assert (run / "ckpt-1").is_dir() and (run / "ckpt-2").is_dir()  # nothing moved


@pytest.mark.parametrize("fresh", [["--resume", "none"], ["runtime.resume=none"]])
def test_damaged_checkpoints_stop_auto_resume_and_a_fresh_start_keeps_the_old_run(
    data, finished_run, tmp_path, capsys, fresh
):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    for step in (1, 2):
        _damage(run / f"ckpt-{step}" / WEIGHTS_FILE)
    before = snapshot(run)
    capsys.readouterr()

    # auto-resume: exit 2 naming both checkpoints and why; the folder is exactly as it was (twice)
    for _ in range(2):
        assert fastaed_train(data, run) == 2
        err = capsys.readouterr().err
        assert err.startswith("fastaed train: error: ") and err.count("\n") == 1, err
        assert "ckpt-1: " in err and "ckpt-2: " in err and err.count("sha256 differs") == 2, err
        assert "--resume none" in err
        assert snapshot(run) == before

    # a fresh start on request: trains from step 1, the earlier run kept byte for byte in previous-1/
    assert fastaed_train(data, run, *fresh) == 0
    kept = run / "previous-1"
    earlier = {k: v for k, v in before.items() if k != MARKER}
    assert snapshot(kept) == earlier, "the earlier run's files were changed"
    assert (kept / "ckpt-1").is_dir() and (kept / "ckpt-2").is_dir()  # the damaged checkpoints: not deleted
    assert {"metrics.jsonl", "summary.json"} <= set(p.name for p in kept.iterdir())
    assert sorted(train_records(run / "metrics.jsonl")) == [1, 2]
    assert (run / "ckpt-2").is_dir() and (run / "summary.json").is_file()


def test_a_fresh_start_over_an_intact_run_moves_it_aside_whole(data, finished_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    before = snapshot(run)
    # one step with keep_checkpoints=1: the old run's ckpt-2 must neither displace nor be pruned by ckpt-1
    one_step = ["optim.max_steps=1", "runtime.keep_checkpoints=1"]
    assert fastaed_train(data, run, "--resume", "none", *one_step) == 0
    assert snapshot(run / "previous-1") == {k: v for k, v in before.items() if k != MARKER}
    assert sorted(p.name for p in run.glob("ckpt-*")) == ["ckpt-1"]
    assert (run / "latest").read_text().strip() == "ckpt-1"
    # a second fresh start keeps both earlier runs
    assert fastaed_train(data, run, "--resume", "none", "optim.max_steps=1") == 0
    assert (run / "previous-2" / "ckpt-1").is_dir() and (run / "previous-1" / "ckpt-2").is_dir()


def test_another_kind_of_fastaed_output_is_refused(data, tmp_path, capsys):
    out = tmp_path / "imported"
    out.mkdir()
    (out / "model.safetensors").write_bytes(b"weights")
    outputs.write_marker(out, "checkpoint", "import whisper", ["model.safetensors"])
    before = snapshot(out)
    capsys.readouterr()
    assert fastaed_train(data, out) == 2
    err = capsys.readouterr().err
    assert "runtime.out_dir" in err and "not a training run" in err and err.count("\n") == 1, err
    assert snapshot(out) == before


def test_files_a_user_adds_to_a_run_folder_stay_where_they_are(data, finished_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    (run / "eval.json").write_text('{"wer": 0.5}\n')  # e.g. `fastaed eval RUN --json RUN/eval.json`
    assert fastaed_train(data, run, "optim.max_steps=3") == 0  # resumes
    assert fastaed_train(data, run, "--resume", "none", "optim.max_steps=1") == 0  # starts over
    assert (run / "eval.json").read_text() == '{"wer": 0.5}\n'
    assert sorted(train_records(run / "previous-1" / "metrics.jsonl")) == [1, 2, 3]
