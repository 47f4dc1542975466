"""CLI: every command parses --help; tokenizer -> index -> validate works end to end, with a counted skip."""

import argparse
import json
import subprocess
import sys

import pytest

from fastaed.cli.main import build_parser, main
from fastaed.testing import write_tiny_corpus

COMMANDS = [
    ["synth"],
    ["tokenizer", "train"],
    ["tokenizer", "encode"],
    ["data", "index"],
    ["data", "real-check"],
    ["data", "from-lhotse"],
    ["bins"],
    ["model", "info"],
    ["model", "list"],
    ["padding"],
    ["bench", "index"],
    ["bench", "features"],
    ["bench", "sampler"],
    ["bench", "rtfx"],
    ["bench", "convergence"],
    ["bench", "batch-sizes"],
    ["bench", "all"],
    ["transcribe"],
    ["eval"],
]


def run(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as info:
        main(argv)
    return info.value.code


def train_tokenizer_args(manifest, out) -> list[str]:
    return [
        "tokenizer",
        "train",
        str(manifest),
        "--vocab-size",
        "64",
        "--out",
        str(out),
        "--on-bad-input",
        "skip",
    ]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help(command, capsys):
    assert run([*command, "--help"]) == 0
    assert "usage: fastaed" in capsys.readouterr().out


def test_python_dash_m_entry_point():
    out = subprocess.run(
        [sys.executable, "-m", "fastaed", "--help"], capture_output=True, text=True, check=True
    )
    assert "synth" in out.stdout and "tokenizer" in out.stdout


def test_tokenizer_index_validate_end_to_end_with_counted_skip(tmp_path, capsys):
    m = write_tiny_corpus(tmp_path / "c", num=6)
    lines = m.read_text().splitlines()
    broken = json.loads(lines[2])
    broken["audio_filepath"] = "audio/gone.wav"
    m.write_text("\n".join([*lines[:2], json.dumps(broken), *lines[3:], "{not json"]) + "\n")

    assert run(train_tokenizer_args(m, tmp_path / "tok")) == 0
    assert (tmp_path / "tok" / "tokenizer.model").is_file()

    summary_path = tmp_path / "summary.json"
    index_args = ["data", "index", str(m), "--tokenizer", str(tmp_path / "tok"), "--on-bad-input", "skip"]
    assert run([*index_args, "--validate-audio", "--workers", "1", "--json", str(summary_path)]) == 0
    out = capsys.readouterr().out
    summary = json.loads(summary_path.read_text())
    # The malformed line is not an utterance; the missing file is found by the audio validation.
    assert summary["utterances"] == 6
    assert summary["audio_checked"] == 6
    assert summary["bad_input"]["by_reason"] == {"malformed_json": 1, "missing_audio": 1}
    assert "bad input: 2 skipped" in out and "gone.wav" in out


def test_index_error_policy_names_the_line(tmp_path, capsys):
    m = write_tiny_corpus(tmp_path / "c", num=2)
    m.write_text(m.read_text() + '{"audio_filepath": "x.wav", "duration": 1, "text": ""}\n')
    run(train_tokenizer_args(m, tmp_path / "tok"))
    assert run(["data", "index", str(m), "--tokenizer", str(tmp_path / "tok")]) == 2
    assert "train.jsonl:3: field 'text': empty target text" in capsys.readouterr().err


def test_parser_lists_subcommands_in_pipeline_order():
    text = build_parser().format_help()
    assert text.index("synth") < text.index("tokenizer") < text.index("bench")


def test_model_info_json_for_a_preset_and_a_checkpoint(tmp_path, capsys):
    from fastaed.formats import save_model
    from fastaed.model import build_model

    assert run(["model", "info", "tiny-flash", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    for key in ("params", "encoder_params", "decoder_params", "encoder_layers", "decoder_layers"):
        assert isinstance(info[key], int)
    assert info["decoder_layers"] == 2
    model = build_model("test", vocab_size=50)
    save_model(model, tmp_path / "ckpt", tokenizer_identity="abc")
    assert run(["model", "info", str(tmp_path / "ckpt"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["params"] == sum(p.numel() for p in model.parameters())
    assert info["tokenizer_identity"] == "abc" and info["vocab_size"] == 50


def _subparsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield path + (name,), sub
                yield from _subparsers(sub, path + (name,))


def test_json_output_is_one_flag_everywhere():
    flags = {f for _, p in _subparsers(build_parser()) for a in p._actions for f in a.option_strings}
    assert {f for f in flags if "json" in f} == {"--json"}


def test_decode_flags_default_to_decode_config():
    from fastaed.cli.config_args import config_from_args
    from fastaed.decode.transcribe import DecodeConfig

    for command in (["transcribe", "ckpt", "a.wav", "--out", "h.jsonl"], ["eval", "ckpt", "--manifest", "m"]):
        args = build_parser().parse_args(command)
        assert config_from_args(DecodeConfig, args) == DecodeConfig()
        assert args.on_bad_input == "error"
    args = build_parser().parse_args(["transcribe", "c", "--out", "h", "--beam-size", "4", "--nbest", "2",
                                      "--no-progress", "--dtype", "fp32"])  # fmt: skip
    assert config_from_args(DecodeConfig, args) == DecodeConfig(
        beam_size=4, nbest=2, progress=False, dtype="fp32"
    )
