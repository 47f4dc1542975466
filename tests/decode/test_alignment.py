"""Word timestamps: Whisper's cross-attention DTW (against openai-whisper itself when its peer venv
``.venv-openai`` exists) and CTC forced alignment (against brute force).

The real-speech tests use Whisper tiny.en imported from its pinned PyPI wheel and the pocketsphinx clips (a
failed fetch fails; nothing here skips but the openai-whisper comparison without its venv).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import subprocess
import textwrap
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from fastaed.data.manifest import read_manifest
from fastaed.data.tokenizer import load_tokenizer
from fastaed.data.whisper_features import WhisperFeatureConfig, WhisperLogMel
from fastaed.decode.alignment import (
    WHISPER_ALIGNMENT_HEADS,
    WordTiming,
    add_whisper_word_timestamps,
    alignment_heads,
    dtw_path,
    median_filter,
    merge_punctuations,
    split_word_tokens,
)
from fastaed.decode.ctc_alignment import ctc_forced_align, ctc_viterbi_states, ctc_word_timestamps
from fastaed.decode.search import greedy_search
from fastaed.decode.segments import Segment
from fastaed.formats.native import load_model
from fastaed.formats.whisper import fastaed_to_canonical
from fastaed.formats.whisper_import import import_whisper
from fastaed.model import build_model, preset_config, whisper_config
from fastaed.model.attention import lengths_to_mask
from fastaed.testing import train_tiny_tokenizer
from tests import whisper_fixtures as wf

ROOT = Path(__file__).resolve().parents[2]
OPENAI_PYTHON = ROOT / ".venv-openai" / "bin" / "python"
SAMPLE_RATE = 16000
HOP = 160

# ---- DTW and the median filter ---------------------------------------------------------------------------


def reference_dtw(cost: np.ndarray) -> tuple[list[int], list[int]]:
    """Cell-by-cell DTW with openai-whisper's tie rules (diagonal only when strictly cheapest, then up)."""
    n, m = cost.shape
    total = np.full((n + 1, m + 1), np.inf, dtype=np.float32)
    total[0, 0] = 0
    move = np.zeros((n + 1, m + 1), dtype=int)
    for j in range(1, m + 1):
        for i in range(1, n + 1):
            c0, c1, c2 = total[i - 1, j - 1], total[i - 1, j], total[i, j - 1]
            if c0 < c1 and c0 < c2:
                c, t = c0, 0
            elif c1 < c0 and c1 < c2:
                c, t = c1, 1
            else:
                c, t = c2, 2
            total[i, j] = float(cost[i - 1, j - 1]) + float(c)
            move[i, j] = t
    move[0, :], move[:, 0] = 2, 1
    path, i, j = [], n, m
    while i > 0 or j > 0:
        path.append((i - 1, j - 1))
        i, j = {0: (i - 1, j - 1), 1: (i - 1, j), 2: (i, j - 1)}[move[i, j]]
    rows, cols = zip(*path[::-1], strict=True)
    return list(rows), list(cols)


def test_dtw_follows_the_diagonal_of_a_diagonal_cost():
    cost = np.ones((7, 7))
    np.fill_diagonal(cost, -1.0)
    rows, cols = dtw_path(cost)
    assert rows.tolist() == cols.tolist() == list(range(7))


def test_dtw_walks_a_stretched_diagonal_monotonically():
    cost = np.ones((4, 12))
    for i in range(4):
        cost[i, 3 * i : 3 * i + 3] = -1.0  # each row owns three columns
    rows, cols = dtw_path(cost)
    assert cols.tolist() == list(range(12))
    assert rows.tolist() == [i for i in range(4) for _ in range(3)]


@pytest.mark.parametrize("seed", range(6))
def test_dtw_equals_the_cell_by_cell_recursion_ties_included(seed):
    rng = np.random.default_rng(seed)
    n, m = rng.integers(1, 9, size=2)
    cost = rng.integers(-2, 3, size=(n, m)).astype(np.float64)  # small integers: many ties
    rows, cols = dtw_path(cost)
    assert (rows.tolist(), cols.tolist()) == reference_dtw(cost)


def test_median_filter_is_the_median_of_reflected_windows():
    x = torch.randn(3, 5, 20)
    padded = np.pad(x.numpy(), ((0, 0), (0, 0), (3, 3)), mode="reflect")
    expected = np.stack([np.median(padded[..., i : i + 7], axis=-1) for i in range(20)], axis=-1)
    assert np.allclose(median_filter(x, 7).numpy(), expected)
    assert torch.equal(median_filter(x[..., :3], 7), x[..., :3])  # too short to reflect: unchanged
    x[0, 0, 4:6] = float("nan")  # NaN sorts last, as in a sort of each window
    windows = torch.nn.functional.pad(x, (3, 3), mode="reflect").unfold(-1, 7, 1)
    assert torch.equal(median_filter(x, 7), windows.sort(dim=-1).values[..., 3])


# ---- alignment heads and words ---------------------------------------------------------------------------


def test_alignment_heads_follow_the_model_name_and_default_to_the_upper_half():
    tiny = whisper_config(name="whisper-tiny.en")
    assert alignment_heads(tiny).nonzero().tolist() == [
        list(p) for p in WHISPER_ALIGNMENT_HEADS["tiny.en"].pairs
    ]
    assert alignment_heads(tiny, "openai/whisper-tiny").nonzero().tolist() == [
        [2, 2],
        [3, 0],
        [3, 2],
        [3, 3],
        [3, 4],
        [3, 5],
    ]
    unknown = alignment_heads(whisper_config(name="my-finetune"))
    assert unknown[:2].sum() == 0 and bool(unknown[2:].all())
    # A known name on a decoder of another shape is not trusted: the default again.
    assert torch.equal(alignment_heads(tiny, "large-v3"), unknown)
    turbo = whisper_config(d_model=1280, n_heads=20, decoder_layers=4, name="whisper-turbo")
    assert alignment_heads(turbo).sum() == 6


@pytest.fixture(scope="module")
def tiny_en_tokenizer():
    folder = wf.real_whisper("tiny.en")  # a failed fetch fails: no skip
    from fastaed.data.whisper_tokenizer import WhisperTokenizer

    return WhisperTokenizer.from_files(folder / "tokenizer.json", 51864)


def test_words_split_at_spaces_and_punctuation(tiny_en_tokenizer):
    tok = tiny_en_tokenizer
    ids = tok.encode_text("Hello, Mr. Dashwood's world") + [tok.eos_id]
    words, groups = split_word_tokens(tok, ids, "en")
    assert words == [" Hello", ",", " Mr", ".", " Dashwood's", " world", "<|endoftext|>"]
    assert list(itertools.chain(*groups)) == ids


def test_words_split_at_whole_characters_where_no_spaces_are_written(tiny_en_tokenizer):
    tok = tiny_en_tokenizer
    ids = tok.bpe.encode("你好世界", add_special_tokens=False).ids + [tok.eos_id]
    words, groups = split_word_tokens(tok, ids, "zh")
    assert words == ["你", "好", "世", "界", "<|endoftext|>"]
    assert len(ids) > len(words) and list(itertools.chain(*groups)) == ids  # some characters span tokens


def test_punctuation_joins_its_neighbours():
    timings = [
        WordTiming(w, [i], i, i + 1, 1.0) for i, w in enumerate([' "', " Hi", ",", " there", ".", '"'])
    ]
    merge_punctuations(timings, "\"'“¿([{-", "\"'.。,，!！?？:：”)]}、")
    assert [t.word for t in timings] == ["", ' " Hi,', "", ' there."', "", ""]
    assert [t.tokens for t in timings] == [[], [0, 1, 2], [], [3, 4, 5], [], []]


# ---- cross-attention weights -----------------------------------------------------------------------------


def manual_cross_attention(decoder, tokens, memory, memory_lens, layer_index, frames):
    """Layer ``layer_index``'s cross-attention probabilities written out from the parameters."""
    mask = lengths_to_mask(memory_lens, memory.shape[1])[:, None, None, :]
    x = decoder.embed(tokens, decoder.position_table(tokens.shape[1], tokens.device))
    for layer in decoder.layers[:layer_index]:
        x = layer(x, memory, mask)
    block = decoder.layers[layer_index]
    x = x + block.self_attn(block.self_norm(x))
    attn = block.cross_attn
    h, d = attn.n_heads, memory.shape[-1]
    q = attn.q(block.cross_norm(x)).view(*x.shape[:2], h, d // h).transpose(1, 2)
    k = (memory @ attn.kv.weight[:d].T).view(*memory.shape[:2], h, d // h).transpose(1, 2)  # no key bias
    scores = q @ k.transpose(-1, -2) / math.sqrt(d // h)
    valid = lengths_to_mask(frames, memory.shape[1])[:, None, None, :]
    return scores.masked_fill(~valid, float("-inf")).softmax(-1)


def test_cross_attention_weights_equal_a_manual_computation_and_logits_are_unchanged():
    model = wf.random_model(300, d_model=32, heads=4, layers=3)
    decoder = model.decoder
    torch.manual_seed(1)
    tokens, memory = torch.randint(0, 300, (2, 9)), torch.randn(2, 40, 32)
    memory_lens = torch.tensor([40, 27])
    with torch.no_grad():
        before = decoder(tokens, memory, memory_lens)
        weights = decoder.cross_attention_weights(tokens, memory, memory_lens, [2, 0])
        out = decoder.forward_with_cross_attention(tokens, memory, memory_lens, [1], torch.tensor([20, 30]))
        after = decoder(tokens, memory, memory_lens)
        expected = [
            manual_cross_attention(decoder, tokens, memory, memory_lens, i, memory_lens) for i in (2, 0)
        ]
        renormalised = manual_cross_attention(decoder, tokens, memory, memory_lens, 1, torch.tensor([20, 27]))
    assert weights.shape == (2, 2, 4, 9, 40)
    assert torch.allclose(weights, torch.stack(expected, dim=1), atol=1e-6)
    assert torch.allclose(out.weights[:, 0], renormalised, atol=1e-6)  # over min(weight_lens, memory_lens)
    assert torch.equal(before, after)  # the normal forward is untouched
    assert torch.allclose(out.logits, before, atol=1e-5)
    with pytest.raises(ValueError, match="distinct indices"):
        decoder.cross_attention_weights(tokens, memory, memory_lens, [3])


# ---- CTC forced alignment --------------------------------------------------------------------------------


def brute_force_ctc(log_probs: torch.Tensor, targets: list[int], blank: int) -> tuple[float, list[int]]:
    """The best frame labelling that collapses to ``targets`` and each token's first frame, by enumeration."""
    best, best_starts = -math.inf, []
    frames, vocab = log_probs.shape
    for labels in itertools.product(range(vocab), repeat=frames):
        collapsed, starts = [], []
        for t, label in enumerate(labels):
            if label != blank and (t == 0 or label != labels[t - 1]):
                collapsed.append(label)
                starts.append(t)
        if collapsed == targets:
            score = float(sum(log_probs[t, label] for t, label in enumerate(labels)))
            if score > best:
                best, best_starts = score, starts
    return best, best_starts


@pytest.mark.parametrize("seed", range(12))
def test_ctc_forced_align_equals_brute_force(seed):
    gen = torch.Generator().manual_seed(seed)
    targets = torch.randint(1, 3, (int(torch.randint(1, 4, (1,), generator=gen)),), generator=gen)
    needed = len(targets) + int((targets[1:] == targets[:-1]).sum())
    frames = needed + int(torch.randint(0, 7 - needed + 1, (1,), generator=gen)) if needed < 7 else needed
    log_probs = torch.randn(frames, 3, generator=gen).mul(2).log_softmax(-1)
    score, starts = brute_force_ctc(log_probs, targets.tolist(), blank=0)
    states = ctc_viterbi_states(log_probs, targets, blank=0)
    labels = torch.where(states % 2 == 1, targets[(states - 1).clamp(min=0) // 2], 0)
    assert float(log_probs[torch.arange(frames), labels].sum()) == pytest.approx(score, abs=1e-5)
    assert ctc_forced_align(log_probs, targets, blank=0).tolist() == starts


def test_ctc_forced_align_with_exactly_the_frames_needed():
    log_probs = torch.randn(4, 4).log_softmax(-1)
    # "a a b" needs a blank between the two a's: four frames hold a, blank, a, b and nothing else.
    assert ctc_forced_align(log_probs, torch.tensor([1, 1, 2]), blank=0).tolist() == [0, 2, 3]
    assert ctc_viterbi_states(log_probs, torch.tensor([1, 1, 2]), blank=0).tolist() == [1, 2, 3, 5]
    with pytest.raises(ValueError, match="need at least 4 frames, got 3"):
        ctc_forced_align(log_probs[:3], torch.tensor([1, 1, 2]), blank=0)


def test_ctc_words_span_their_pieces_frames(tmp_path):
    tok = train_tiny_tokenizer(tmp_path / "tok", vocab_size=64)
    ids = tok.encode_text("the cat sat")
    pieces = [tok.sp.id_to_piece(i - tok.num_specials) for i in ids]
    assert sum(p.startswith("▁") for p in pieces) == 3
    # Token k owns frames 3k+1 and 3k+2 (probability 0.9); blank elsewhere.
    frames = 3 * len(ids) + 1
    probs = torch.full((frames, tok.vocab_size), 0.1 / (tok.vocab_size - 1))
    probs[:, tok.pad_id] = 0.9
    for k, token in enumerate(ids):
        probs[3 * k + 1 : 3 * k + 3] = 0.1 / (tok.vocab_size - 1)
        probs[3 * k + 1 : 3 * k + 3, token] = 0.9
    words = ctc_word_timestamps(probs.log(), [tok.sot_id, *ids, tok.eos_id], tok, 0.08, time_offset=10.0)
    assert [w.word for w in words] == [" the", " cat", " sat"]
    first_piece = [k for k, p in enumerate(pieces) if p.startswith("▁")] + [len(ids)]
    for w, a, b in zip(words, first_piece, first_piece[1:]):
        assert w.start == pytest.approx(10.0 + 0.08 * (3 * a + 1))
        assert w.end == pytest.approx(10.0 + 0.08 * (3 * (b - 1) + 3))
        assert w.probability == pytest.approx(0.9)


# ---- real speech with Whisper tiny.en --------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_en(tmp_path_factory):
    folder = wf.real_whisper("tiny.en")  # a failed fetch or a digest mismatch fails: no skip
    ckpt = import_whisper(folder, tmp_path_factory.mktemp("tiny") / "ckpt")
    return load_model(ckpt), load_tokenizer(ckpt / "tokenizer")


def speech_span(wave: np.ndarray) -> tuple[float, float]:
    """Seconds of the first and last 10 ms frame louder than a tenth of the loudest."""
    rms = np.sqrt(np.mean(wave[: len(wave) // HOP * HOP].reshape(-1, HOP) ** 2, axis=1))
    loud = np.nonzero(rms > 0.1 * rms.max())[0]
    return loud[0] * 0.01, (loud[-1] + 1) * 0.01


@pytest.fixture(scope="module")
def joined_clips(tiny_en):
    """Three real clips joined with pauses in one 30 s window, decoded clip by clip into three segments
    (text tokens wrapped in timestamp tokens): (mel (3000, 80), real frames, segments, speech spans)."""
    model, tok = tiny_en
    clips = list(read_manifest(wf.real_check_manifest()))  # any failure fails: no skip
    front = WhisperLogMel(WhisperFeatureConfig())
    pieces, segments, spans, t = [], [], [], 0.0
    for index, pause in ((1, 1.5), (10, 1.0), (4, 0.0)):  # "he was not ...", "go forward ...", "he might ..."
        wave = sf.read(clips[index].audio_filepath, dtype="float32")[0]
        with torch.no_grad():
            enc, lens = model.encode(front.one(torch.from_numpy(wave))[None], torch.tensor([3000]))
        prompt = torch.tensor([[tok.sot_id, tok.no_timestamps_id]])
        text = greedy_search(model, enc, lens, prompt, tok.eos_id)[0].tokens
        start, end = round(t, 2), round(t + len(wave) / SAMPLE_RATE, 2)
        stamps = [tok.timestamp_begin + round(start / 0.02), tok.timestamp_begin + round(end / 0.02)]
        segments.append(
            Segment(len(segments), start, end, tok.decode(text), tokens=[stamps[0], *text, stamps[1]])
        )
        on, off = speech_span(wave)
        spans.append((t + on, t + off))
        pieces += [wave, np.zeros(int(pause * SAMPLE_RATE), np.float32)]
        t += len(wave) / SAMPLE_RATE + pause
    wave = np.concatenate(pieces)
    return front.one(torch.from_numpy(wave)), len(wave) // HOP, segments, spans


def copy_segments(segments: list[Segment]) -> list[Segment]:
    return [Segment(s.id, s.start, s.end, s.text, tokens=list(s.tokens), seek=s.seek) for s in segments]


def test_real_speech_words_are_monotone_inside_their_segments_and_near_the_speech(tiny_en, joined_clips):
    model, tok = tiny_en
    mel, frames, segments, spans = joined_clips
    segments = copy_segments(segments)
    with torch.no_grad():
        enc, _ = model.encode(mel[None], torch.tensor([3000]))
    offset = 12.34  # the window's place in a longer file
    for s in segments:
        s.start, s.end = s.start + offset, s.end + offset
    add_whisper_word_timestamps(
        model, tok, enc[0], frames, [tok.sot_id], segments, offset, alignment_heads(model.config)
    )
    times = [x for s in segments for w in s.words for x in (w.start, w.end)]
    assert times == sorted(times)
    for s, (on, off) in zip(segments, spans, strict=True):
        assert s.words and "".join(w.word for w in s.words).strip() == s.text
        assert s.start == s.words[0].start and s.end == s.words[-1].end  # edges moved to the words
        assert all(0 < w.probability <= 1 for w in s.words)
        # Measured (torch 2.13 CPU): starts within 0.18 s of the speech onset, ends within 0.27 s.
        assert abs(s.words[0].start - offset - on) < 0.3
        assert abs(s.words[-1].end - offset - off) < 0.35


# ---- openai-whisper, the reference ------------------------------------------------------------------------

PEER_SCRIPT = textwrap.dedent(
    """
    import base64, gzip, json, sys
    import numpy as np, torch, whisper
    from whisper.timing import add_word_timestamps
    from whisper.tokenizer import get_tokenizer

    request = json.load(open(sys.argv[1]))
    torch.set_num_threads(1)
    model = whisper.load_model(request["model"], device="cpu")
    model.set_alignment_heads(whisper._ALIGNMENT_HEADS["tiny.en"])
    tokenizer = get_tokenizer(model.is_multilingual, num_languages=model.num_languages)
    mel = torch.from_numpy(np.load(request["mel"]))
    results = []
    for case in request["cases"]:
        segments = [dict(s) for s in case["segments"]]
        add_word_timestamps(segments=segments, model=model, tokenizer=tokenizer, mel=mel,
                            num_frames=case["num_frames"], last_speech_timestamp=case["last_speech"])
        results.append([{k: s[k] for k in ("start", "end", "words")} for s in segments])
    heads = {}
    for name, blob in whisper._ALIGNMENT_HEADS.items():
        flags = np.frombuffer(gzip.decompress(base64.b85decode(blob)), dtype=bool)
        heads[name] = [flags.size, np.nonzero(flags)[0].tolist()]
    json.dump({"results": results, "sot": list(tokenizer.sot_sequence), "heads": heads},
              open(sys.argv[2], "w"), default=float)
    """
)


@pytest.fixture(scope="module")
def openai_peer():
    if not OPENAI_PYTHON.exists():
        pytest.skip("no openai-whisper peer venv .venv-openai (make openai-venv)")


def test_word_times_equal_openai_whispers_on_the_same_window(openai_peer, tiny_en, joined_clips, tmp_path):
    model, tok = tiny_en
    mel, frames, segments, _ = joined_clips
    dims, canonical = fastaed_to_canonical(model)
    torch.save({"dims": asdict(dims), "model_state_dict": canonical}, tmp_path / "tiny.en.pt")
    np.save(tmp_path / "mel.npy", mel.T.contiguous().numpy())
    seek = 1234  # mel frames before the window: a time offset of 12.34 s
    cases = [
        (frames, 0.0, segments, 0),  # three segments, pauses between
        (frames, 3.0, segments[1:], seek),  # later speech; a previous segment ended at 3 s
        (300, 0.0, segments[:1], 0),  # only the first clip's frames count (3 s)
    ]
    request = {"model": str(tmp_path / "tiny.en.pt"), "mel": str(tmp_path / "mel.npy"), "cases": []}
    for num_frames, last_speech, segs, case_seek in cases:
        shift = case_seek * HOP / SAMPLE_RATE
        dicts = [
            {"seek": case_seek, "start": s.start + shift, "end": s.end + shift, "tokens": s.tokens}
            for s in segs
        ]
        request["cases"].append(
            {"num_frames": num_frames, "last_speech": last_speech + shift, "segments": dicts}
        )
    (tmp_path / "request.json").write_text(json.dumps(request))
    (tmp_path / "peer.py").write_text(PEER_SCRIPT)
    argv = [
        str(OPENAI_PYTHON),
        str(tmp_path / "peer.py"),
        str(tmp_path / "request.json"),
        str(tmp_path / "out.json"),
    ]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    peer = json.loads((tmp_path / "out.json").read_text())
    assert peer["sot"] == [tok.sot_id]

    with torch.no_grad():
        enc, _ = model.encode(mel[None], torch.tensor([3000]))
    heads = alignment_heads(model.config)
    for (num_frames, last_speech, segs, case_seek), theirs in zip(cases, peer["results"], strict=True):
        shift = case_seek * HOP / SAMPLE_RATE
        ours = copy_segments(segs)
        for s in ours:
            s.start, s.end = s.start + shift, s.end + shift
        add_whisper_word_timestamps(
            model,
            tok,
            enc[0],
            num_frames,
            [tok.sot_id],
            ours,
            shift,
            heads,
            last_speech_timestamp=last_speech + shift,
        )
        for s, t in zip(ours, theirs, strict=True):
            assert [w.word for w in s.words] == [w["word"] for w in t["words"]]
            assert np.allclose(
                [(w.start, w.end) for w in s.words], [(w["start"], w["end"]) for w in t["words"]], atol=0.021
            )
            assert np.allclose(
                [w.probability for w in s.words], [w["probability"] for w in t["words"]], atol=1e-3
            )
            assert (s.start, s.end) == pytest.approx((t["start"], t["end"]), abs=0.021)

    # Our plain-data head table is openai-whisper's, model by model.
    for name, (size, flat) in peer["heads"].items():
        key = {"large": "large-v3", "turbo": "large-v3-turbo"}.get(name, name)
        table = WHISPER_ALIGNMENT_HEADS[key]
        assert size == table.n_layers * table.n_heads
        assert flat == [layer * table.n_heads + head for layer, head in table.pairs]


def test_ctc_words_from_a_models_ctc_head_are_monotone_and_inside_the_audio(tmp_path):
    tok = train_tiny_tokenizer(tmp_path / "tok", vocab_size=64)
    config = dataclasses.replace(preset_config("test", tok.vocab_size), ctc_weight=0.3)
    torch.manual_seed(0)
    model = build_model(config).eval()
    feats = torch.randn(1, 400, config.encoder.n_mels)  # 4 s of features
    with torch.no_grad():
        enc, lens = model.encode(feats, torch.tensor([400]))
        log_probs = model.ctc_log_probs(enc)[0, : int(lens[0])]
    frame_seconds = 4.0 / int(lens[0])
    words = ctc_word_timestamps(log_probs, tok.encode_text("the cat sat on the mat"), tok, frame_seconds, 1.0)
    assert [w.word for w in words] == [" the", " cat", " sat", " on", " the", " mat"]
    times = [x for w in words for x in (w.start, w.end)]
    assert times == sorted(times) and 1.0 <= times[0] and times[-1] <= 5.0 + 1e-6
    assert all(w.end > w.start and 0 < w.probability <= 1 for w in words)
