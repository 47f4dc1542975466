"""The loop guard (issue 28, item 2): a looping decoder is stopped and counted, never silent.

A repeated unit is found at any period up to the limit and cut to one copy; short legitimate repeats ("no
no", "five five") are left alone; the token cap ends a row that writes more than its audio can hold; the
guard is off where a reference engine has none (padded Whisper), so parity outputs stay theirs; eval and
transcribe report how often it fired.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest
import torch

from fastaed.decode.search import LoopGuard, greedy_search
from fastaed.decode.transcribe import DecodeConfig, Transcriber
from fastaed.formats import save_model
from fastaed.model import build_model, preset_config
from fastaed.testing import train_tiny_tokenizer, write_tone
from tests import whisper_fixtures as wf


def _period(tokens: list[int]) -> int:
    return int(LoopGuard().period(torch.tensor([tokens]), len(tokens))[0])


@pytest.mark.parametrize(
    ("tokens", "period"),
    [
        ([5, 6, 7] * 3, 3),  # three copies of a 3-token unit: 9 tokens >= min_span 8
        ([1, 2] + [9] * 8, 1),  # one token eight times
        ([4, 5, 6, 7, 8, 9, 10, 11, 12, 13] * 3, 10),
        ([3, 3], 0),  # "no no"
        ([8, 2, 8, 2], 0),  # "five five" spelled in two tokens each: 4 tokens, below the span
        ([5, 6, 7] * 2, 0),  # two copies only
        ([1, 2, 3, 4, 5, 6, 7, 8, 9], 0),
    ],
)
def test_a_repeated_unit_is_found_at_its_period(tokens, period):
    assert _period(tokens) == period


@pytest.fixture(scope="module")
def looping(tmp_path_factory):
    """A random Whisper-layout model: its greedy output repeats single tokens for ever."""
    tok = wf.tokenizer(tmp_path_factory.mktemp("loop"), multilingual=False)
    model = wf.random_model(
        tok.vocab_size, n_mels=16, d_model=32, heads=2, layers=1, text_positions=64
    ).eval()
    feats = torch.randn(2, 3000, 16, generator=torch.Generator().manual_seed(0))
    enc, lens = model.encode(feats, torch.tensor([3000, 3000]))
    prompts = torch.tensor([[tok.sot_id, tok.no_timestamps_id]] * 2)
    return model, tok, enc, lens, prompts


def test_repetition_ends_the_row_with_one_copy_of_the_unit(looping):
    model, tok, enc, lens, prompts = looping
    free = greedy_search(model, enc, lens, prompts, tok.eos_id)
    guarded = greedy_search(model, enc, lens, prompts, tok.eos_id, loop_guard=LoopGuard())
    for f, g in zip(free, guarded):
        assert g.guard == "repetition" and f.guard is None and not g.ended
        assert len(g.tokens) < len(f.tokens) and f.tokens[: len(g.tokens)] == g.tokens  # a prefix of it
        assert _period(g.tokens) == 0  # what is kept no longer loops


def test_the_token_cap_ends_a_row_that_outruns_its_audio(looping):
    model, tok, enc, lens, prompts = looping
    guard = LoopGuard(max_period=0, tokens_per_second=6.5, slack=2)  # the cap alone
    caps = guard.cap(torch.tensor([1.0, 2.0]))  # 9 and 15 new tokens
    hyps = greedy_search(model, enc, lens, prompts, tok.eos_id, loop_guard=guard, token_caps=caps)
    assert [len(h.tokens) for h in hyps] == [9, 15] and all(h.guard == "token_cap" for h in hyps)
    loose = greedy_search(model, enc, lens, prompts, tok.eos_id, loop_guard=guard,
                          token_caps=torch.tensor([500, 500]))  # fmt: skip
    assert all(h.guard is None for h in loose)  # the decoder's own limit came first: not the cap's doing


def test_the_guard_is_off_for_padded_whisper_and_on_otherwise(tmp_path):
    ckpt = wf.checkpoint(tmp_path / "w", multilingual=False)
    assert Transcriber(ckpt, DecodeConfig(progress=False)).loop_guard is None  # faster-whisper parity
    assert Transcriber(ckpt, DecodeConfig(progress=False, whisper_input="unpadded")).loop_guard is not None
    assert Transcriber(ckpt, DecodeConfig(progress=False, loop_guard="on")).loop_guard is not None


def test_eval_counts_what_the_guard_ended(tmp_path):
    tokenizer = train_tiny_tokenizer(tmp_path / "tokenizer", vocab_size=64)
    torch.manual_seed(1)
    config = preset_config("test", tokenizer.vocab_size)
    config = dataclasses.replace(config, decoder=dataclasses.replace(config.decoder, max_len=256))
    ckpt = save_model(build_model(config).eval(), tmp_path / "ckpt", tokenizer=tokenizer)
    lines = []
    for i in range(3):
        write_tone(tmp_path / f"t{i}.wav", 6.0, freq=300 + 100 * i, seed=i)
        lines.append(
            json.dumps({"audio_filepath": str(tmp_path / f"t{i}.wav"), "duration": 6.0, "text": "a b"})
        )
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    run = subprocess.run(
        [sys.executable, "-m", "fastaed", "eval", str(ckpt), "--manifest", str(manifest), "--json",
         str(tmp_path / "e.json"), "--no-progress"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    loops = json.loads((tmp_path / "e.json").read_text())["sets"][str(manifest)]["loop_guard"]
    assert sum(loops.values()) == 3 and "loop guard ended 3 outputs" in run.stderr
