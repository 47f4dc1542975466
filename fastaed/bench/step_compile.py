"""Does ``torch.compile`` pay for the batch-1 decoding step? Eager vs compiled ``decoder.step``, same tokens.

Per model (Whisper ``tiny.en`` / ``base`` with real weights on 30 s padded input, ``canary-180m-flash`` with
random weights and forced lengths, as ``bench breakdown`` builds them), each real clip is encoded and decoded
greedily once (eager), then its prompt pre-fill and every step are replayed twice on the same tokens: with
``decoder.step`` as it is and with ``torch.compile(decoder.step, dynamic=True)`` (TorchInductor, default mode;
dynamic shapes, so a growing cache is one graph, not one per length). Reported: the compile time (the first
compiled clip's replay minus its eager time, with an empty kernel cache), the median step time of each over
``repeats`` passes, and whether the compiled logits equal the eager ones bit for bit (the rule a decoder
change must keep) or only pick the same token.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from fastaed.util.tables import format_table


@dataclass(frozen=True)
class StepCompileBenchConfig:
    """Options of ``fastaed bench step-compile``."""

    models: tuple[str, ...] = field(
        default=("tiny.en", "base", "canary-180m-flash"),
        metadata={"help": "tiny.en, base (real weights) and/or canary-180m-flash (random weights)"},
    )
    data_dir: Path = field(default=Path("data/real"), metadata={"help": "real-check folder"})
    sets: tuple[str, ...] = field(default=("pocketsphinx", "asterisk"), metadata={"help": "clip sets"})
    max_clips_per_set: int = field(default=3, metadata={"help": "clips per set (evenly chosen)"})
    repeats: int = field(default=3, metadata={"help": "timed passes over the clips (medians are reported)"})
    threads: int = field(default=2, metadata={"help": "CPU threads"})
    tokens_per_second: float = field(default=6.0, metadata={"help": "forced output length (random weights)"})
    json: Path | None = field(default=None, metadata={"help": "write the results here"})


@dataclass
class _Clip:
    enc: torch.Tensor  # (1, T, D) encoder states
    enc_lens: torch.Tensor  # (1,)
    prompt: torch.Tensor  # (1, P)
    tokens: list[torch.Tensor]  # greedy output, one (1, 1) tensor per step


def _replay(step: Callable, model: Any, clip: _Clip) -> tuple[float, torch.Tensor]:
    """Seconds for the pre-fill and every step (the cross-attention set-up is not timed: the same for both),
    and the logits (steps + 1, V)."""
    capacity = clip.prompt.shape[1] + len(clip.tokens) + 1
    cache = model.start_decoding(clip.enc, clip.enc_lens, capacity)
    start = time.perf_counter()
    logits = [step(clip.prompt, cache)]
    logits += [step(token, cache) for token in clip.tokens]
    return time.perf_counter() - start, torch.cat(logits)


def _model_row(name: str, utts: list[Any], config: StepCompileBenchConfig, tmp: Path) -> dict[str, Any]:
    from fastaed.bench.breakdown import model_transcriber
    from fastaed.data.dataset import load_utterance_audio, pad_1d

    transcriber, forced_lengths, facts = model_transcriber(name, "fp32", tmp)
    model = transcriber.model
    clips = []
    with torch.inference_mode():
        for utt in utts:
            audio, audio_lens = pad_1d([load_utterance_audio(utt)])
            feats, feat_lens = transcriber.frontend(audio, audio_lens)
            enc, enc_lens = model.encode(feats, feat_lens)
            forced = torch.tensor([max(1, round(utt.duration * config.tokens_per_second))])
            seconds = torch.tensor([utt.duration])
            hyp = transcriber.search(
                enc, enc_lens, [utt], forced if forced_lengths else None, seconds=seconds
            )
            tokens = [torch.tensor([[t]]) for t in hyp[0][0].tokens]
            clips.append(_Clip(enc, enc_lens, transcriber.prompts([utt]), tokens))
        eager = model.decoder.step
        torch._dynamo.reset()  # nothing compiled for an earlier model is reused
        compiled = torch.compile(model.decoder.step, dynamic=True)
        eager_first, _ = _replay(eager, model, clips[0])
        compiled_first, _ = _replay(compiled, model, clips[0])  # compiles (pre-fill and step shapes)
        eager_s, compiled_s, diffs, same_token, identical = [], [], [], 0, True
        for _ in range(config.repeats):
            eager_pass = compiled_pass = 0.0
            for clip in clips:
                t_e, logits_e = _replay(eager, model, clip)
                t_c, logits_c = _replay(compiled, model, clip)
                eager_pass, compiled_pass = eager_pass + t_e, compiled_pass + t_c
                diffs.append(float((logits_e - logits_c).abs().max()))
                identical &= torch.equal(logits_e, logits_c)
                same_token += int((logits_e.argmax(-1) == logits_c.argmax(-1)).sum())
            eager_s.append(eager_pass)
            compiled_s.append(compiled_pass)
    steps = sum(len(c.tokens) + 1 for c in clips)
    eager_ms = 1000 * statistics.median(eager_s) / steps
    compiled_ms = 1000 * statistics.median(compiled_s) / steps
    return {
        "model": name, **facts, "clips": len(clips), "steps": steps,
        "compile_seconds": compiled_first - eager_first,
        "eager_ms_per_step": eager_ms, "compiled_ms_per_step": compiled_ms,
        "speedup": eager_ms / compiled_ms,
        "identical_logits": identical, "max_abs_logit_diff": max(diffs),
        "same_token_share": same_token / (steps * config.repeats),
    }  # fmt: skip


def run(config: StepCompileBenchConfig) -> dict[str, Any]:
    from fastaed.bench.whisper import _cpu_name, load_clips
    from fastaed.data.manifest import Utterance

    torch.set_num_threads(config.threads)
    clips = load_clips(config.data_dir, tuple(config.sets), config.max_clips_per_set)
    if not clips:
        raise ValueError(f"no clips in {config.data_dir} for sets {config.sets}")
    utts = [
        Utterance(c.audio, c.seconds, c.text, source_lang="en", target_lang="en", pnc=True) for c in clips
    ]
    rows = []
    with tempfile.TemporaryDirectory(prefix="fastaed-step-compile-") as tmp:
        # A cold compile, as a user's first run pays it: no kernels from an earlier run's on-disk cache.
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(Path(tmp) / "inductor-cache")
        for name in config.models:
            rows.append(_model_row(name, utts, config, Path(tmp)))
            r = rows[-1]
            print(f"{name}: eager {r['eager_ms_per_step']:.2f} ms/step, compiled "
                  f"{r['compiled_ms_per_step']:.2f} (compile {r['compile_seconds']:.0f} s)",
                  flush=True)  # fmt: skip
    return {
        "benchmark": "step-compile",
        "protocol": " ".join(__doc__.split("\n\n")[1].split()) if __doc__ else "",
        "threads": torch.get_num_threads(),
        "cpu": _cpu_name(),
        "torch": torch.__version__,
        "clips": {"count": len(clips), "audio_seconds": sum(c.seconds for c in clips)},
        "models": rows,
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
    }


def print_report(result: dict[str, Any]) -> None:
    header = ["model", "steps", "eager ms/step", "compiled ms/step", "speed-up", "compile s", "identical",
              "max |dlogit|", "same token"]  # fmt: skip
    rows = [
        [m["model"], str(m["steps"]), f"{m['eager_ms_per_step']:.2f}", f"{m['compiled_ms_per_step']:.2f}",
         f"{m['speedup']:.2f}x", f"{m['compile_seconds']:.0f}", "yes" if m["identical_logits"] else "no",
         f"{m['max_abs_logit_diff']:.1e}", f"{100 * m['same_token_share']:.1f}%"]
        for m in result["models"]
    ]  # fmt: skip
    print(f"torch.compile of the batch-1 decoding step ({result['clips']['count']} real clips, "
          f"{result['threads']} threads, torch {result['torch']})")  # fmt: skip
    print(format_table(header, rows))
