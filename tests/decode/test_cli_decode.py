"""`fastaed transcribe` / `fastaed eval` end to end on a checkpoint that memorised its corpus: WER 0 on its
training utterances, the pnc prompt token selects the output form, the task prompt is built per entry,
beam search agrees with greedy on memorised data, bad audio is an error or a counted skip."""

from __future__ import annotations

import json
import shutil

import pytest

from fastaed.cli.main import main
from fastaed.data.manifest import Utterance
from fastaed.decode.transcribe import DecodeConfig, Transcriber, find_tokenizer
from fastaed.testing import SENTENCES


def _run(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as info:
        main(argv)
    return info.value.code


def test_eval_reports_zero_wer_on_memorised_utterances(overfit, tmp_path, capsys):
    ckpt, manifest, _ = overfit
    out = tmp_path / "eval.json"
    hyps = tmp_path / "hyps.jsonl"
    code = _run(["eval", str(ckpt), "--manifest", str(manifest), "--json", str(out), "--hyps", str(hyps),
                 "--no-progress"])  # fmt: skip
    assert code == 0
    doc = json.loads(out.read_text())
    result = doc["sets"][str(manifest)]
    assert result["wer"] == 0.0 and result["cer"] == 0.0 and result["utterances"] == 8
    assert result["rtfx"] > 0 and result["audio_seconds"] > 0 and doc["batch_size"] == 32
    assert "WER" in capsys.readouterr().out
    rows = [json.loads(line) for line in hyps.read_text().splitlines()]
    assert [r["text"] for r in rows if r["pnc"] == "yes"] == list(SENTENCES[:4])  # exact, punctuation too


def test_eval_in_int8_keeps_the_memorised_transcripts(overfit, tmp_path):
    """``--dtype int8`` quantizes the FastConformer/Transformer model's linear layers on load; a model that
    memorised its corpus still writes it, and the report names the precision."""
    ckpt, manifest, _ = overfit
    out = tmp_path / "eval.json"
    code = _run(["eval", str(ckpt), "--manifest", str(manifest), "--json", str(out), "--dtype", "int8",
                 "--no-progress"])  # fmt: skip
    assert code == 0
    doc = json.loads(out.read_text())
    assert doc["dtype"] == "int8" and doc["sets"][str(manifest)]["wer"] == 0.0


def test_pnc_prompt_selects_the_output_form(overfit, tmp_path):
    ckpt, manifest, _ = overfit
    audio = manifest.parent / "audio" / "u2.wav"
    texts = {}
    for pnc in ("yes", "no"):
        out = tmp_path / f"{pnc}.jsonl"
        argv = ["transcribe", str(ckpt), str(audio), "--pnc", pnc, "--out", str(out), "--no-progress"]
        assert _run(argv) == 0
        texts[pnc] = json.loads(out.read_text())["text"]
    assert texts == {"yes": SENTENCES[2], "no": "where is the river and where is the house"}


def test_prompt_rows_follow_each_entry(overfit):
    ckpt, _, tokenizer = overfit
    transcriber = Transcriber(ckpt, DecodeConfig(progress=False))
    utts = [
        Utterance("a.wav", 1.0, "", source_lang="en", target_lang="en", task="transcribe", pnc=True),
        Utterance("b.wav", 1.0, "", source_lang="en", target_lang="de", task="translate", pnc=False),
    ]
    rows = transcriber.prompts(utts).tolist()
    ids = tokenizer.special_ids
    assert rows[0] == [tokenizer.sot_id, ids["<|en|>"], ids["<|transcribe|>"], ids["<|en|>"], ids["<|pnc|>"]]
    assert rows[1] == [tokenizer.sot_id, ids["<|en|>"], ids["<|translate|>"], ids["<|de|>"], ids["<|nopnc|>"]]


def test_beam_search_transcripts_and_nbest(overfit, tmp_path):
    ckpt, manifest, _ = overfit
    out = tmp_path / "beam.jsonl"
    argv = ["transcribe", str(ckpt), "--manifest", str(manifest), "--beam-size", "3", "--nbest", "3",
            "--batch-size", "3", "--out", str(out), "--no-progress"]  # fmt: skip
    assert _run(argv) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 8
    for r in rows:
        assert len(r["nbest"]) == 3 and r["nbest"][0]["text"] == r["text"]
        assert [h["score"] for h in r["nbest"]] == sorted((h["score"] for h in r["nbest"]), reverse=True)
    assert [r["text"] for r in rows if r["pnc"] == "yes"] == list(SENTENCES[:4])


def test_bad_audio_is_an_error_or_a_counted_skip(overfit, tmp_path, capsys):
    ckpt, manifest, _ = overfit
    lines = manifest.read_text().splitlines()
    broken = json.loads(lines[0]) | {"audio_filepath": "audio/missing.wav"}
    bad = manifest.parent / "bad.jsonl"  # relative audio paths resolve against the manifest's folder
    bad.write_text("\n".join([lines[1], json.dumps(broken), lines[2]]) + "\n")
    out = tmp_path / "h.jsonl"
    assert _run(["transcribe", str(ckpt), "--manifest", str(bad), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "missing.wav" in err and f"{bad}:2" in err and "audio_filepath" in err
    argv = ["transcribe", str(ckpt), "--manifest", str(bad), "--out", str(out), "--no-progress",
            "--on-bad-input", "skip"]  # fmt: skip
    assert _run(argv) == 0
    assert len(out.read_text().splitlines()) == 2
    assert "1 skipped" in capsys.readouterr().err


def test_tokenizer_is_found_and_checked(overfit, tmp_path):
    ckpt, _, tokenizer = overfit
    assert find_tokenizer(ckpt).identity == tokenizer.identity
    bare = tmp_path / "bare"
    shutil.copytree(ckpt, bare, ignore=shutil.ignore_patterns("tokenizer"))
    with pytest.raises(FileNotFoundError, match="--tokenizer"):
        find_tokenizer(bare)
    assert find_tokenizer(bare, ckpt / "tokenizer").identity == tokenizer.identity
