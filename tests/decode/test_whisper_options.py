"""Options a Whisper model cannot honour are refused, never ignored (issue 29, item 7): `--pnc no`,
`--task translate` on an English-only model, a target language other than English for translation or other
than the spoken one for transcription, `--lang` on an English-only model; a manifest entry with `pnc: no` is
bad input for `transcribe` (named, or skipped and counted) and a counted note for `eval`."""

from __future__ import annotations

import json

import pytest

from fastaed.cli.main import main
from fastaed.testing import write_tone
from tests import whisper_fixtures as wf


def _run(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as info:
        main([*argv, "--no-progress"])
    return info.value.code


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """English-only and multilingual tiny Whisper checkpoints, and a 1 s clip."""
    root = tmp_path_factory.mktemp("whisper-options")
    out = {kind: wf.checkpoint(root / kind, multilingual=kind == "multi") for kind in ("en", "multi")}
    return out, write_tone(root / "a.wav", 1.0)


def _error(capsys, command: str = "transcribe") -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err  # one line
    assert err[0].startswith(f"fastaed {command}: error: ")
    return err[0]


@pytest.mark.parametrize(
    ("kind", "flags", "named"),
    [
        ("en", ["--pnc", "no"], "--pnc no: "),
        ("multi", ["--pnc", "no"], "--pnc no: "),
        ("en", ["--task", "translate"], "--task translate: "),
        ("en", ["--lang", "de"], "--lang de: "),
        ("multi", ["--lang", "xx"], "--lang xx: "),
        ("multi", ["--task", "translate", "--lang", "de", "--target-lang", "fr"], "--target-lang fr: "),
        (
            "multi",
            ["--lang", "de", "--target-lang", "fr"],
            "--target-lang fr: ",
        ),  # transcribe: spoken language
    ],
)
@pytest.mark.parametrize("policy", ["error", "skip"])
def test_an_option_whisper_cannot_honour_is_refused_naming_it(
    kind, flags, named, policy, models, tmp_path, capsys
):
    ckpts, audio = models
    out = tmp_path / "h.jsonl"
    argv = ["transcribe", str(ckpts[kind]), str(audio), *flags, "--out", str(out), "--on-bad-input", policy]
    assert _run(argv) == 2  # a flag is not bad input: --on-bad-input skip does not skip every file for it
    err = _error(capsys)
    assert named in err and "Whisper" in err and not out.exists()
    if kind == "en" and "--pnc" not in flags:
        assert "English-only Whisper" in err or "Whisper model's 1" in err


@pytest.mark.parametrize(
    ("kind", "flags", "target"),
    [
        ("multi", ["--lang", "de", "--task", "translate"], "en"),
        ("en", ["--pnc", "yes"], "en"),
        ("en", [], "en"),
    ],
)
def test_options_whisper_honours_still_work(kind, flags, target, models, tmp_path):
    ckpts, audio = models
    out = tmp_path / "h.jsonl"
    assert _run(["transcribe", str(ckpts[kind]), str(audio), *flags, "--out", str(out)]) == 0
    row = json.loads(out.read_text())
    assert row["target_lang"] == target and row["pnc"] == "yes"


def test_prompt_flags_are_refused_with_a_manifest(models, tmp_path, capsys):
    ckpts, audio = models
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"audio_filepath": str(audio), "duration": 1.0, "text": "a"}) + "\n")
    argv = ["transcribe", str(ckpts["en"]), "--manifest", str(manifest), "--pnc", "no", "--lang", "en"]
    assert _run([*argv, "--out", str(tmp_path / "h.jsonl")]) == 2
    assert "--lang --pnc: not used with --manifest" in _error(capsys)


def _pnc_manifest(audio, tmp_path):
    rows = [{"audio_filepath": str(audio), "duration": 1.0, "text": "Hello there.", "pnc": pnc}
            for pnc in ("yes", "no", "yes")]  # fmt: skip
    path = tmp_path / "pnc.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_transcribe_refuses_a_pnc_no_entry_naming_its_line_or_skips_and_counts_it(models, tmp_path, capsys):
    ckpts, audio = models
    manifest, out = _pnc_manifest(audio, tmp_path), tmp_path / "h.jsonl"
    argv = ["transcribe", str(ckpts["en"]), "--manifest", str(manifest), "--out", str(out)]
    assert _run(argv) == 2
    err = _error(capsys)
    assert f"{manifest}:2: field 'pnc'" in err and "Whisper" in err and "[bad_field]" in err
    assert not out.exists()
    assert _run([*argv, "--on-bad-input", "skip"]) == 0
    assert [json.loads(x)["line"] for x in out.read_text().splitlines()] == [1, 3]
    assert "bad_field: 1" in capsys.readouterr().err


def test_eval_scores_pnc_no_entries_after_the_normaliser_and_says_so(models, tmp_path, capsys):
    ckpts, audio = models
    manifest, doc = _pnc_manifest(audio, tmp_path), tmp_path / "eval.json"
    argv = ["eval", str(ckpts["en"]), "--manifest", str(manifest), "--json", str(doc)]
    assert _run(argv) == 0
    result = json.loads(doc.read_text())["sets"][str(manifest)]
    assert result["utterances"] == 3 and result["pnc_not_prompted"] == 1
    assert "1 entries ask pnc=no" in capsys.readouterr().err
    # "none" scores the text as written, where pnc=no matters: the entry is bad input again
    assert _run([*argv, "--normalizer", "none"]) == 2
    assert f"{manifest}:2: field 'pnc'" in _error(capsys, "eval")
