"""One bad utterance never stops a job, and an expected failure is a message, not a traceback.

Under ``--on-bad-input skip`` every command leaves bad items out, counts them by reason and writes every good
one; in the default error mode the first bad item stops the command with its file, line and field. A broken
checkpoint, config, bins or profile file, an unwritable output or an unknown flag ends the command with
``fastaed CMD: error: ...`` on stderr and exit status 2. (A traceback would fail these tests: ``main`` is
called in-process, so only ``SystemExit`` is caught.)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from fastaed.cli.main import main
from fastaed.formats import save_model
from fastaed.model import build_model
from fastaed.testing import train_tiny_tokenizer, write_tiny_corpus, write_tone
from tests.train import TEST_CONFIG, data_overrides, subprocess_env


def run(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as info:
        main(argv)
    return info.value.code


def failed(capsys, command: str) -> str:
    """stderr of a command that must have stopped with a one-line message (returned for more checks)."""
    err = capsys.readouterr().err
    assert err.startswith(f"fastaed {command}: error: ") and "Traceback" not in err, err
    return err


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """An untrained tiny checkpoint with its tokenizer, and a corpus of 4 short tones (decodes in a blink:
    a row emits at most one token per encoder frame)."""
    root = tmp_path_factory.mktemp("ckpt")
    tokenizer = train_tiny_tokenizer(root / "tokenizer")
    ckpt = save_model(
        build_model("test", vocab_size=tokenizer.vocab_size),
        root / "ckpt",
        tokenizer_identity=tokenizer.identity,
    )
    tokenizer.save(ckpt / "tokenizer")
    manifest = write_tiny_corpus(root / "corpus", num=4)
    return ckpt, manifest


def lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ---- item 2: --on-bad-input skip means skip, in every command ---------------------------------------------


def bad_audio(root) -> dict[str, object]:
    """One audio path of each unusable kind, by the reason it is counted under."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "empty.wav").write_bytes(b"")
    (root / "corrupt.wav").write_bytes(b"RIFF this is not a wave file")
    (root / "folder.wav").mkdir(exist_ok=True)
    return {
        "missing": (root / "missing.wav", "missing_audio"),
        "folder": (root / "folder.wav", "missing_audio"),
        "empty": (root / "empty.wav", "empty_audio"),
        "corrupt": (root / "corrupt.wav", "corrupt_audio"),
    }


def test_transcribe_skips_bad_audio_paths_counts_them_and_writes_the_good_ones(ckpt, tmp_path, capsys):
    model, _ = ckpt
    good = [write_tone(tmp_path / f"good{i}.wav", 0.5 + 0.25 * i) for i in range(2)]
    bad = [path for path, _ in bad_audio(tmp_path / "bad").values()]
    out = tmp_path / "hyps.jsonl"
    argv = ["transcribe", str(model), str(good[0]), *map(str, bad), str(good[1]), "--out", str(out),
            "--no-progress", "--on-bad-input", "skip"]  # fmt: skip
    assert run(argv) == 0
    assert [r["audio_filepath"] for r in lines(out)] == [str(p) for p in good]
    err = capsys.readouterr().err
    assert "4 skipped" in err and "missing_audio: 2" in err and "empty_audio: 1" in err
    assert "corrupt_audio: 1" in err


@pytest.mark.parametrize("kind", ["missing", "folder", "empty", "corrupt"])
def test_a_bad_audio_path_stops_transcribe_naming_the_file_in_error_mode(kind, ckpt, tmp_path, capsys):
    model, _ = ckpt
    path, reason = bad_audio(tmp_path / "bad")[kind]
    good = write_tone(tmp_path / "good.wav", 0.5)
    out = tmp_path / "hyps.jsonl"
    assert run(["transcribe", str(model), str(good), str(path), "--out", str(out), "--no-progress"]) == 2
    err = failed(capsys, "transcribe")
    assert err.startswith(f"fastaed transcribe: error: {path}: ") and f"[{reason}]" in err
    assert "--on-bad-input skip" in err and not out.exists()


def with_unknown_language(manifest, tmp_path):
    """The corpus with its 2nd entry in a language the tokenizer has no token for."""
    rows = manifest.read_text().splitlines()
    rows[1] = json.dumps(json.loads(rows[1]) | {"source_lang": "xx"})
    bad = manifest.parent / f"{tmp_path.name}.jsonl"  # beside the audio: relative paths resolve
    bad.write_text("\n".join(rows) + "\n")
    return bad


def test_transcribe_and_eval_skip_entries_in_an_unknown_language(ckpt, tmp_path, capsys):
    model, manifest = ckpt
    bad = with_unknown_language(manifest, tmp_path)
    out, doc = tmp_path / "hyps.jsonl", tmp_path / "eval.json"
    skip = ["--no-progress", "--on-bad-input", "skip"]
    assert run(["transcribe", str(model), "--manifest", str(bad), "--out", str(out), *skip]) == 0
    assert [r["line"] for r in lines(out)] == [1, 3, 4]
    assert "unknown_language: 1" in capsys.readouterr().err
    hyps = tmp_path / "eval_hyps.jsonl"
    argv = ["eval", str(model), "--manifest", str(bad), "--json", str(doc), "--hyps", str(hyps), *skip]
    assert run(argv) == 0
    result = json.loads(doc.read_text())["sets"][str(bad)]
    assert result["utterances"] == 3 and result["bad_input"]["by_reason"] == {"unknown_language": 1}
    assert len(lines(hyps)) == 3 and "unknown_language: 1" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["transcribe", "eval"])
def test_an_unknown_language_stops_before_decoding_with_file_line_field(command, ckpt, tmp_path, capsys):
    model, manifest = ckpt
    bad = with_unknown_language(manifest, tmp_path)
    out = tmp_path / "out.json"
    flag = "--out" if command == "transcribe" else "--json"
    assert run([command, str(model), "--manifest", str(bad), flag, str(out), "--no-progress"]) == 2
    err = failed(capsys, command)
    assert f"{bad}:2: field 'source_lang'" in err and "[unknown_language]" in err and not out.exists()


def test_an_unknown_language_flag_names_the_audio_file(ckpt, tmp_path, capsys):
    model, _ = ckpt
    audio = write_tone(tmp_path / "a.wav", 0.5)
    argv = ["transcribe", str(model), str(audio), "--lang", "xx", "--out", str(tmp_path / "h.jsonl")]
    assert run([*argv, "--no-progress"]) == 2
    assert f"error: {audio}: field 'source_lang'" in failed(capsys, "transcribe")


# ---- item 5: expected failures are messages ----------------------------------------------------------------


def broken_checkpoint(model, root, kind: str):
    """A copy of ``model`` that is missing, has a corrupt config.json or a truncated weights file."""
    path = root / f"ckpt-{kind}"
    if kind == "missing":
        return path
    shutil.copytree(model, path)
    if kind == "config":
        (path / "config.json").write_text('{"format_version": 1, "model_config": {')
    else:
        weights = path / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:1000])
    return path


def checkpoint_commands(ckpt_dir, manifest, tmp_path) -> dict[str, list[str]]:
    """Every command that loads a checkpoint, pointed at ``ckpt_dir``."""
    run_dir = tmp_path / "run"  # a training run whose only checkpoint is ckpt_dir (for bench convergence)
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_text(json.dumps({"type": "eval", "step": 1, "wer": 0.5}) + "\n")
    if ckpt_dir.exists():
        shutil.copytree(ckpt_dir, run_dir / "ckpt-1")
        (run_dir / "ckpt-1" / "trainer_state.pt").write_bytes(b"")
    out = tmp_path / "out.json"
    audio = manifest.parent / "audio" / "u0.wav"
    return {
        "transcribe": ["transcribe", str(ckpt_dir), str(audio), "--out", str(out), "--no-progress"],
        "eval": ["eval", str(ckpt_dir), "--manifest", str(manifest), "--no-progress"],
        "model info": ["model", "info", str(ckpt_dir)],
        "batch-sizes": [
            "batch-sizes",
            "--model",
            str(ckpt_dir),
            "--device",
            "cpu",
            "--memory-budget",
            "1",
            "--out",
            str(out),
            "--no-progress",
        ],  # fmt: skip
        "bench convergence": ["bench", "convergence", str(run_dir), str(run_dir), "--eval", f"x={manifest}"],
    }


@pytest.mark.parametrize(
    "command, kind",
    [("transcribe", "missing"), ("eval", "missing"), ("batch-sizes", "config"), ("model info", "config")]
    + [(c, k) for c in ("transcribe", "eval", "bench convergence") for k in ("config", "weights")],
)
def test_a_broken_checkpoint_is_a_message_in_every_command(command, kind, ckpt, tmp_path, capsys):
    model, manifest = ckpt
    broken = broken_checkpoint(model, tmp_path, kind)
    assert run(checkpoint_commands(broken, manifest, tmp_path)[command]) == 2
    assert "ckpt-" in failed(capsys, command)  # the message names the checkpoint (or its file)


def test_a_broken_yaml_config_names_the_file_and_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  preset: test\n  ctc_weight: [0.3\noptim:\n  lr: 1e-3\n")
    assert run(["train", "--config", str(bad)]) == 2
    err = failed(capsys, "train")
    assert err.startswith(f"fastaed train: error: {bad}:4:") and "not valid YAML" in err
    # The torchrun entry point reports the same, in a process of its own.
    done = subprocess.run([sys.executable, "-m", "fastaed.cli.train", "--config", str(bad)],
                          capture_output=True, text=True, env=subprocess_env())  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith(f"fastaed train: error: {bad}:4:"), done.stderr


def broken_json(path):
    path.write_text('{\n  "batch_sizes": [1, 2],\n  "bins": {"format": }\n}\n')
    return path


@pytest.mark.parametrize("flag", ["--bins", "--profile"])
def test_broken_bins_and_profile_json_name_the_file_and_line(flag, tmp_path, capsys):
    bad = broken_json(tmp_path / "bad.json")
    assert run(["padding", "--synthetic", "100", flag, str(bad)]) == 2
    assert f"error: {bad}:3:" in failed(capsys, "padding")


@pytest.mark.parametrize("key", ["sampler.bins", "sampler.profile"])
def test_a_broken_bins_or_profile_file_stops_train_with_a_message(key, tmp_path, capsys):
    from tests.train import tiny_data

    manifest, tok_dir = tiny_data(tmp_path, num=4)
    bad = broken_json(tmp_path / "bad.json")
    argv = ["train", "--config", str(TEST_CONFIG), *data_overrides(manifest, tok_dir, tmp_path / "run")]
    assert run([*argv, f"{key}={bad}", "optim.max_steps=1"]) == 2
    assert f"error: {bad}:3:" in failed(capsys, "train")


def test_profile_and_bins_loaders_name_the_file_and_line(tmp_path):
    from fastaed.sampling.bins import Bins
    from fastaed.sampling.budget import load_profile
    from fastaed.train.profile.profile import BatchSizeProfile, read_identity
    from fastaed.util.files import FileFormatError

    bad = broken_json(tmp_path / "bad.json")
    for load in (Bins.load, load_profile, BatchSizeProfile.load, read_identity):
        with pytest.raises(FileFormatError, match=f"^{bad}:3:"):
            load(bad)
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"batch_sizes": [1], "bins": {"format": "other"}}))
    for load in (Bins.load, load_profile, BatchSizeProfile.load):
        with pytest.raises(FileFormatError, match=f"^{wrong}"):
            load(wrong)


def unwritable_outputs(tmp_path) -> dict[str, object]:
    (tmp_path / "a_dir").mkdir()
    (tmp_path / "a_file").write_text("")
    return {"existing dir": tmp_path / "a_dir", "under a file": tmp_path / "a_file" / "sub" / "out.json"}


@pytest.mark.parametrize("where", ["existing dir", "under a file"])
@pytest.mark.parametrize("flag", ["transcribe --out", "eval --json", "eval --hyps"])
def test_an_unwritable_output_is_refused_before_decoding(flag, where, ckpt, tmp_path, capsys, monkeypatch):
    from fastaed.decode.transcribe import Transcriber

    model, manifest = ckpt
    monkeypatch.setattr(Transcriber, "run", lambda *a, **k: pytest.fail("decoding started"))
    command, option = flag.split()
    out = unwritable_outputs(tmp_path)[where]
    inputs = (
        [str(manifest.parent / "audio" / "u0.wav")]
        if command == "transcribe"
        else ["--manifest", str(manifest)]
    )
    argv = [command, str(model), *inputs, option, str(out), "--no-progress"]
    assert run(argv) == 2
    assert f"error: {option} {out}:" in failed(capsys, command)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_an_output_in_a_read_only_folder_is_refused_before_decoding(ckpt, tmp_path, capsys):
    model, manifest = ckpt
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        assert run(["eval", str(model), "--manifest", str(manifest), "--json", str(folder / "e.json")]) == 2
    finally:
        folder.chmod(0o700)
    assert "not writable" in failed(capsys, "eval")


# ---- item 5: KEY=VALUE overrides anywhere, unknown flags refused -------------------------------------------


@pytest.fixture
def captured_train(monkeypatch):
    """Replace the trainer: record the config and resume a command would train with."""
    seen = {}
    monkeypatch.setattr("fastaed.train.loop.train", lambda cfg, resume: seen.update(cfg=cfg, resume=resume))
    return seen


@pytest.mark.parametrize("entry", ["fastaed train", "python -m fastaed.cli.train"])
def test_train_overrides_are_accepted_after_any_flag(entry, captured_train):
    from fastaed.cli.train import main as train_main

    argv = ["optim.lr=2e-3", "--config", str(TEST_CONFIG), "optim.max_steps=3", "--resume", "none",
            "optim.warmup_steps=1", "optim.max_steps=4"]  # fmt: skip
    with pytest.raises(SystemExit) as info:
        main(["train", *argv]) if entry == "fastaed train" else train_main(argv)
    assert info.value.code == 0
    cfg = captured_train["cfg"]
    assert (cfg.optim.lr, cfg.optim.warmup_steps, cfg.optim.max_steps) == (2e-3, 1, 4)  # the last value wins
    assert captured_train["resume"] == "none"


@pytest.mark.parametrize("entry", ["fastaed train", "python -m fastaed.cli.train"])
def test_train_refuses_an_unknown_flag_clearly(entry, captured_train, capsys):
    from fastaed.cli.train import main as train_main

    argv = ["--config", str(TEST_CONFIG), "--lr", "1e-3"]
    with pytest.raises(SystemExit) as info:
        main(["train", *argv]) if entry == "fastaed train" else train_main(argv)
    assert info.value.code == 2 and not captured_train
    err = failed(capsys, "train")
    assert "unknown option --lr" in err and "KEY=VALUE" in err
