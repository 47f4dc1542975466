"""fastaed against NeMo itself on the same Canary weights: ``transcribe()`` RTFx and decoder tokens/s.

For each model a ``.nemo`` is built by NeMo (``fastaed/bench/peers/nemo_runner.py`` in ``.venv-nemo``, random
weights, every tensor perturbed) and imported with ``fastaed import nemo``; both sides then decode the same
real clips (the pocketsphinx set of ``fastaed data real-check``, repeated ``copies`` times) greedily with the
same number of CPU threads, fp32:

* NeMo: ``EncDecMultiTaskModel.transcribe(paths, batch_size, num_workers=0)`` (audio reading, features,
  encoder, its ``GreedySequenceGenerator`` with the hidden-state cache, all inside the timer; one untimed
  warm-up call);
* fastaed: ``Transcriber.run`` on the imported checkpoint (same protocol: reading, features, encoder and
  the K/V-cached greedy search inside the timer; one untimed warm-up batch).

fastaed also runs ``--dtype int8`` (dynamic int8 linear layers, ``fastaed.model.quantize``) beside its fp32;
NeMo runs fp32 (its CPU inference has no int8 mode), so int8 rows report their speed over NeMo fp32 and the
share of clips whose tokens still equal NeMo's, not identity.

RTFx = audio seconds / wall seconds, the median of ``repeats`` passes; each pass runs NeMo, then fastaed at
every precision and batch size, and the load average is read around each engine. Decoder-only tokens/s: greedy
decoding of encoder states computed beforehand, same batches on both sides. Tokens must be identical per clip
(fp32). Random weights emit no EOS, so a bias on the EOS logit is calibrated (bisection, on fastaed's side)
until greedy outputs average ``tokens_per_second`` per audio second, and written into the ``.nemo`` before
both sides load it (the same weights); the rate that results is reported with the numbers. The
models: ``tiny`` (2 + 2 layers at 64/96) and ``canary-180m-flash`` (17 x 512 encoder, 4 x 1024 decoder, 8
heads, 128 mels: the published architecture) with ``max_sequence_length`` 128 and NeMo's default
``max_generation_delta`` -1 (the cap is then fixed, not batch-dependent). Targets: >= 2x at batch 1 and >= 3x
at batch 16 on CPU.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fastaed.data.manifest import Utterance
from fastaed.decode.search import greedy_search, nemo_limits
from fastaed.decode.transcribe import DecodeConfig, Transcriber
from fastaed.util.tables import format_table
from fastaed.util.threads import wait_settings

ROOT = Path(__file__).resolve().parents[2]
RUNNER = Path(__file__).resolve().parent / "peers" / "nemo_runner.py"
TARGETS = {1: 2.0, 16: 3.0}
PROTOCOL = (
    "median wall time of --repeats passes, each pass NeMo transcribe() (its own warm-up) then fastaed at "
    "every precision and batch size (one untimed warm-up batch each); load average read around each engine; "
    "same CPU threads and OpenMP wait settings (NeMo's subprocess inherits the environment)"
)
TIMESTAMP_TOKENS = [f"<|{i}|>" for i in range(900)]  # Canary-2's special set has them: a realistic vocabulary

MODELS: dict[str, dict[str, Any]] = {
    "tiny": {
        "prompt_format": "canary2", "n_mels": 80,
        "encoder": {"d_model": 64, "n_layers": 2, "n_heads": 4, "subsampling_channels": 32},
        "decoder": {"hidden": 96, "layers": 2, "heads": 4, "max_sequence_length": 128},
    },
    "canary-180m-flash": {
        "prompt_format": "canary2", "n_mels": 128,
        "encoder": {"d_model": 512, "n_layers": 17, "n_heads": 8, "subsampling_channels": 256},
        "decoder": {"hidden": 1024, "layers": 4, "heads": 8, "max_sequence_length": 128},
    },
}  # fmt: skip


@dataclass(frozen=True)
class NemoBenchConfig:
    """Options of ``fastaed bench nemo``."""

    models: tuple[str, ...] = field(
        default=("tiny", "canary-180m-flash"), metadata={"help": "of: tiny, canary-180m-flash"}
    )
    clips: Path = field(default=Path("data/real/real_check.jsonl"), metadata={"help": "real clips manifest"})
    copies: int = field(default=2, metadata={"help": "times the clip list is repeated"})
    batch_sizes: tuple[int, ...] = field(default=(1, 16), metadata={"help": "transcription batch sizes"})
    threads: int = field(default=2, metadata={"help": "CPU threads, both sides"})
    repeats: int = field(
        default=3, metadata={"help": "timed passes, NeMo and fastaed alternating (the median is kept)"}
    )
    dtypes: tuple[str, ...] = field(
        default=("fp32", "int8"), metadata={"help": "fastaed precisions (NeMo runs fp32): fp32, int8"}
    )
    tokens_per_second: float = field(
        default=6.0, metadata={"help": "output rate the EOS bias of the random models is calibrated to"}
    )
    nemo_python: Path = field(default=Path(".venv-nemo/bin/python"), metadata={"help": "NeMo peer venv"})
    work: Path | None = field(default=None, metadata={"help": "keep the .nemo files here (default: temp)"})
    json: Path | None = field(default=None, metadata={"help": "write the results here"})


def _nemo(config: NemoBenchConfig, *args: str) -> None:
    python = config.nemo_python if config.nemo_python.is_absolute() else ROOT / config.nemo_python
    if not python.exists():
        raise FileNotFoundError(f"{python}: no NeMo peer (make nemo-venv)")
    proc = subprocess.run([str(python), str(RUNNER), *args], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"nemo_runner {args[0]} failed:\n{proc.stderr[-3000:]}")


def _clips(config: NemoBenchConfig) -> list[dict[str, Any]]:
    if not config.clips.is_file():
        raise FileNotFoundError(f"{config.clips}: no clips (fastaed data real-check --out data/real)")
    rows = [json.loads(line) for line in config.clips.read_text().splitlines() if line.strip()]
    for r in rows:
        r["path"] = str((config.clips.parent / r["audio_filepath"]).resolve())
    return rows


def _strip(tokens: list[int], pad: int, eos: int) -> list[int]:
    while tokens and tokens[-1] in (pad, eos):
        tokens = tokens[:-1]
    return tokens


def bench_model(
    name: str, config: NemoBenchConfig, work: Path, clips: list[dict[str, Any]]
) -> dict[str, Any]:
    """Build, import and time one model on both sides."""
    from fastaed.formats.nemo import import_nemo

    spec = dict(MODELS[name], texts=[c["text"] for c in clips] * 4, bpe_vocab=256, seed=0, perturb=0.3,
                signal_gain=3, cross_gain=4, extra_specials=TIMESTAMP_TOKENS,
                decoding={"strategy": "greedy", "greedy": {"max_generation_delta": -1}})  # fmt: skip
    (work / f"{name}.json").write_text(json.dumps(spec))
    nemo_path = work / f"{name}.nemo"
    _nemo(config, "build", str(work / f"{name}.json"), str(nemo_path))
    ckpt = import_nemo(nemo_path, work / f"{name}-ckpt")
    torch.set_num_threads(config.threads)
    eos_bias = calibrate_eos_bias(ckpt, clips, config.tokens_per_second)
    add_eos_bias(nemo_path, eos_bias)  # the same weights on both sides: written into the .nemo, re-imported
    ckpt = import_nemo(nemo_path, work / f"{name}-ckpt-calibrated")
    paths = [c["path"] for c in clips] * config.copies
    request = {"audio": paths, "lang": "en", "pnc": True, "threads": config.threads,
               "batch_sizes": list(config.batch_sizes), "repeats": 1}  # fmt: skip
    (work / f"{name}-req.json").write_text(json.dumps(request))
    durations = [c["duration"] for c in clips] * config.copies
    utts = [
        Utterance(p, d, "", source_lang="en", target_lang="en", pnc=True) for p, d in zip(paths, durations)
    ]
    audio = sum(durations)
    transcribers = {
        dtype: Transcriber(ckpt, DecodeConfig(progress=False, device="cpu", dtype=dtype))  # type: ignore[arg-type]
        for dtype in config.dtypes
    }
    # Quiet-machine protocol: passes alternate the engines (NeMo, then fastaed at every precision and batch
    # size), the load average is read around each, the median wall time is kept.
    nemo_seconds: dict[int, list[float]] = {bs: [] for bs in config.batch_sizes}
    ours_seconds: dict[tuple[str, int], list[float]] = {}
    theirs: dict[str, Any] = {}
    loads: list[float] = []
    for _ in range(config.repeats):
        loads.append(os.getloadavg()[0])
        out_json = work / f"{name}-nemo.json"
        _nemo(config, "bench", str(nemo_path), str(work / f"{name}-req.json"), str(out_json))
        theirs = json.loads(out_json.read_text())
        for bs in config.batch_sizes:
            nemo_seconds[bs].append(theirs["runs"][str(bs)]["seconds"])
        loads.append(os.getloadavg()[0])
        torch.set_num_threads(config.threads)
        for dtype, tr in transcribers.items():
            for bs in config.batch_sizes:
                tr.config = dataclasses.replace(tr.config, batch_size=bs)
                ours_seconds.setdefault((dtype, bs), []).append(tr.run(utts).wall_seconds)
        loads.append(os.getloadavg()[0])
    runs = []
    for bs in config.batch_sizes:
        tr = transcribers.get("fp32") or next(iter(transcribers.values()))
        pad, eos = tr.tokenizer.pad_id, tr.tokenizer.eos_id
        nemo_run = theirs["runs"][str(bs)]
        nemo_tokens = [_strip(t, pad, eos) for t in nemo_run["tokens"]]
        nemo_wall = statistics.median(nemo_seconds[bs])
        n_tokens = sum(len(t) + 1 for t in nemo_tokens)
        row: dict[str, Any] = {
            "batch_size": bs, "audio_seconds": audio, "utterances": len(utts), "nemo_rtfx": audio / nemo_wall,
            "target": TARGETS.get(bs), "tokens_per_audio_second": n_tokens / audio,
            "nemo_passes_seconds": nemo_seconds[bs],
            "nemo_decoder_tokens_per_s": nemo_run["decoder"]["tokens"] / nemo_run["decoder"]["seconds"],
        }  # fmt: skip
        for dtype, tr in transcribers.items():
            tr.config = dataclasses.replace(tr.config, batch_size=bs)
            wall = statistics.median(ours_seconds[dtype, bs])
            ours_tokens, dec = _decode_as_nemo(tr, utts, bs, 2)
            same = sum(a == b for a, b in zip(ours_tokens, nemo_tokens))
            prefix = "" if dtype == "fp32" else f"{dtype}_"
            row |= {
                f"{prefix}fastaed_rtfx": audio / wall, f"{prefix}speedup": nemo_wall / wall,
                f"{prefix}fastaed_passes_seconds": ours_seconds[dtype, bs],
                f"{prefix}identical_tokens": ours_tokens == nemo_tokens,
                f"{prefix}identical_token_share": same / len(nemo_tokens),
                f"{prefix}fastaed_decoder_tokens_per_s": dec["tokens"] / dec["seconds"],
            }  # fmt: skip
            row[f"{prefix}decoder_speedup"] = (
                row[f"{prefix}fastaed_decoder_tokens_per_s"] / row["nemo_decoder_tokens_per_s"]
            )
        runs.append(row)
    info = json.loads((ckpt / "config.json").read_text())
    return {"model": name, "params": info["num_params"]["total"], "eos_bias": eos_bias,
            "vocab_size": info["model_config"]["vocab_size"], "runs": runs,
            "load_average": {"min": min(loads), "max": max(loads)}}  # fmt: skip


def calibrate_eos_bias(ckpt: Path, clips: list[dict[str, Any]], rate: float, steps: int = 10) -> float:
    """The EOS-logit bias (bisection in [0, 32]) at which greedy outputs come closest to ``rate`` tokens per
    audio second on ``clips``. Random weights never end on their own; this gives them realistic lengths."""
    from fastaed.data.dataset import load_utterance_audio

    tr = Transcriber(ckpt, DecodeConfig(batch_size=1, progress=False, device="cpu", dtype="fp32"))
    utts = [
        Utterance(c["path"], c["duration"], "", source_lang="en", target_lang="en", pnc=True) for c in clips
    ]
    audio = sum(c["duration"] for c in clips)
    with torch.inference_mode():
        states = []
        for u in utts:
            wave = load_utterance_audio(u)
            enc, lens = tr.model.encode(*tr.frontend(wave[None], torch.tensor([len(wave)])))
            states.append((enc, lens, tr.prompts([u])))
    bias = tr.model.decoder.output_bias
    eos, base = tr.tokenizer.eos_id, float(bias.detach()[tr.tokenizer.eos_id])
    delta = (tr.generation or {}).get("max_generation_delta", -1)

    def rate_at(extra: float) -> float:
        with torch.no_grad():
            bias[eos] = base + extra
        count = 0
        for enc, lens, prompts in states:
            limits = nemo_limits(tr.model, enc, prompts.shape[1], delta)
            count += len(greedy_search(tr.model, enc, lens, prompts, eos, limits=limits)[0].tokens) + 1
        return count / audio

    lo, hi = 0.0, 32.0  # more bias, earlier EOS, lower rate
    for _ in range(steps):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if rate_at(mid) > rate else (lo, mid)
    return (lo + hi) / 2


def add_eos_bias(nemo_path: Path, extra: float) -> None:
    """Add ``extra`` to the EOS logit's bias inside a ``.nemo`` (rewritten in place)."""
    import io
    import tarfile

    from fastaed.formats.nemo import WEIGHTS_NAME, read_nemo, tokenizer

    archive = read_nemo(nemo_path)
    eos = tokenizer(archive).eos_id
    with tarfile.open(nemo_path) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    key = next(k for k in members if k.endswith(WEIGHTS_NAME))
    state = torch.load(io.BytesIO(members[key]), map_location="cpu", weights_only=True)
    state["log_softmax.mlp.layer0.bias"][eos] += extra
    buf = io.BytesIO()
    torch.save(state, buf)
    members[key] = buf.getvalue()
    with tarfile.open(nemo_path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _decode_as_nemo(tr: Transcriber, utts: list[Utterance], bs: int, repeats: int) -> tuple[list, dict]:
    """Tokens of every clip, batched in input order as NeMo's ``transcribe()`` batches them, and the
    decoder-only timing (encoder states computed beforehand; best of ``repeats`` after a warm-up)."""
    from fastaed.data.dataset import load_utterance_audio, pad_1d

    states = []
    with torch.inference_mode():
        for s in range(0, len(utts), bs):
            batch = utts[s : s + bs]
            audio, lens = pad_1d([load_utterance_audio(u) for u in batch])
            enc, enc_lens = tr.model.encode(*tr.frontend(audio, lens))
            states.append((enc, enc_lens, tr.prompts(batch)))
    rule = tr.generation or {}
    best, tokens, count = float("inf"), [], 0
    for r in range(repeats + 1):
        t0, out = time.perf_counter(), []
        for enc, enc_lens, prompts in states:
            limits = nemo_limits(tr.model, enc, prompts.shape[1], rule.get("max_generation_delta", -1))
            out += greedy_search(tr.model, enc, enc_lens, prompts, tr.tokenizer.eos_id, limits=limits)
        if r:
            best = min(best, time.perf_counter() - t0)
        tokens = [_strip(h.tokens, tr.tokenizer.pad_id, tr.tokenizer.eos_id) for h in out]
        count = sum(len(t) + 1 for t in tokens)
    return tokens, {"seconds": best, "tokens": count}


def run(config: NemoBenchConfig) -> dict[str, Any]:
    clips = _clips(config)
    with tempfile.TemporaryDirectory(prefix="fastaed-bench-nemo-") as tmp:
        work = config.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        models = [bench_model(name, config, work, clips) for name in config.models]
    ok = all(r.get("identical_tokens", False) and (r["target"] is None or r["speedup"] >= r["target"])
             for m in models for r in m["runs"])  # fmt: skip
    return {
        "benchmark": "nemo", "models": models, "threads": config.threads,
        "openmp_wait": wait_settings(), "copies": config.copies,
        "clips": len(clips), "tokens_per_second_target": config.tokens_per_second, "dtype": "fp32",
        "fastaed_dtypes": list(config.dtypes), "protocol": PROTOCOL,
        "device": "cpu",
        "machine": platform.machine(), "torch": torch.__version__, "targets": TARGETS, "all_targets_met": ok,
    }  # fmt: skip


def print_report(result: dict[str, Any]) -> None:
    rows = []
    for m in result["models"]:
        for r in m["runs"]:
            target = f">= {r['target']:.0f}x" if r["target"] else "-"
            rows.append([
                m["model"], r["batch_size"], f"{r['tokens_per_audio_second']:.1f}", f"{r['nemo_rtfx']:.1f}",
                f"{r['fastaed_rtfx']:.1f}", f"{r['speedup']:.2f}x", target,
                f"{r['nemo_decoder_tokens_per_s']:.0f}", f"{r['fastaed_decoder_tokens_per_s']:.0f}",
                f"{r['decoder_speedup']:.2f}x", "yes" if r["identical_tokens"] else "NO",
                *(
                    [f"{r['int8_fastaed_rtfx']:.1f}", f"{r['int8_speedup']:.2f}x",
                     f"{100 * r['int8_identical_token_share']:.0f}%"]
                    if "int8_fastaed_rtfx" in r else ["-", "-", "-"]
                ),
            ])  # fmt: skip
    header = ["model", "batch", "tok/audio s", "NeMo RTFx", "fastaed RTFx", "speedup", "target",
              "NeMo dec tok/s", "fastaed dec tok/s", "dec speedup", "same tokens",
              "int8 RTFx", "int8 x NeMo fp32", "int8 same tokens"]  # fmt: skip
    print()
    print(format_table(header, rows))
    print(
        f"CPU, {result['threads']} threads, fp32, greedy; {result['clips']} real clips x {result['copies']}"
    )
