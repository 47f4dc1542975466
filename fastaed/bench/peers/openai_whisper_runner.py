"""The openai-whisper side of the long-form comparisons, run by ``.venv-openai``'s python.

A standalone script: it imports only the standard library, numpy, torch and ``whisper`` (openai-whisper
20250625), never fastaed, so ``.venv-openai/bin/python`` runs it without fastaed installed there. fastaed's
client (``fastaed.bench.peers.openai_whisper.run_openai_peer``) writes a JSON request, runs

    .venv-openai/bin/python openai_whisper_runner.py SUBCOMMAND --request REQ.json --response RESP.json

and reads the JSON response; arrays travel as ``.npy`` files named in the JSON. ``model`` is always a ``.pt``
written by ``fastaed export openai`` (or any file ``whisper.load_model(path)`` reads); ``threads`` is torch's
CPU thread count. ``alignment_heads`` (optional): the name of one of OpenAI's models (``"tiny.en"``: its
published heads) or a list of [layer, head]; default: the mask the ``.pt`` carries, else openai-whisper's own
default (every head of the upper half of the decoder layers).

Subcommands (request fields):

* ``transcribe`` {model, audio: [paths], language=null, task="transcribe", temperature=0.0 (a number or a
  list: the fallback ladder), condition_on_previous_text=true, word_timestamps=false, threads=1, warmup=0,
  compression_ratio_threshold=2.4, logprob_threshold=-1.0, no_speech_threshold=0.6, initial_prompt=null,
  alignment_heads}: ``whisper.transcribe`` of each file, float32 (``fp16=False``), greedy (no beam search;
  above temperature 0 one sample, as ``transcribe()`` does by default). The thresholds default to
  ``transcribe()``'s own. Returns per file its text, language, segments (id, seek, start, end, text, tokens,
  temperature, avg_logprob, compression_ratio, no_speech_prob, and words when asked: word, start, end,
  probability), seconds (reading the audio through ffmpeg included) and audio seconds; over the timed pass the
  audio / wall seconds (RTFx), the process's peak RSS (``peak_rss_mb``; ``peak_rss_after_load_mb`` counts
  from after the model is loaded, Linux only) and the alignment heads used. ``warmup`` files (the first
  ones) are transcribed once before the clock starts.
* ``logits`` {model, mel: [npy] or audio: [paths], tokens: [[ids]] (one list per clip, or one for all),
  out_dir, threads=1}: the decoder's logits ``(len(tokens), n_vocab)`` for each clip, one float32 ``.npy``
  each, from ``model.logits(tokens, model.embed_audio(mel))``. ``mel``: ``(n_mels, 3000)`` arrays to use as
  they are; ``audio``: openai-whisper computes the log-mel of the first 30 s (zero-padded to 30 s, as
  ``transcribe`` pads) and writes it too, so the caller can compare features. Also returns the alignment
  heads, so a caller sees which ones a ``.pt`` carried.
* ``versions`` {}: the versions of openai-whisper, torch and numpy.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import resource
import sys
import time
from pathlib import Path

# Python puts this script's folder first on sys.path, and fastaed's faster-whisper client there is named
# ``whisper.py``: without this, ``import whisper`` would find that file instead of openai-whisper.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import numpy as np  # noqa: E402
import torch  # noqa: E402
import whisper  # noqa: E402
from whisper.audio import (  # noqa: E402
    N_FRAMES,
    N_SAMPLES,
    SAMPLE_RATE,
    load_audio,
    log_mel_spectrogram,
    pad_or_trim,
)

SEGMENT_FIELDS = (
    "id",
    "seek",
    "start",
    "end",
    "text",
    "tokens",
    "temperature",
    "avg_logprob",
    "compression_ratio",
    "no_speech_prob",
)


class PeerRequestError(ValueError):
    """A request the runner cannot serve (its message names the field or file)."""


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MiB (Linux reports ``ru_maxrss`` in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss() -> bool:
    """Restart the kernel's peak-RSS count (``VmHWM``) from the current RSS; False where Linux cannot."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_rss_since_reset_mb() -> float | None:
    """``VmHWM`` in MiB: the peak RSS since :func:`reset_peak_rss` (None without ``/proc``)."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return None
    kib = next((line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")), None)
    return int(kib) / 1024 if kib else None


def _heads_dump(mask: np.ndarray) -> bytes:
    """A bool (layers, heads) mask in the form ``Whisper.set_alignment_heads`` takes (gzip, then base85)."""
    return base64.b85encode(gzip.compress(np.ascontiguousarray(mask, dtype=bool).tobytes()))


def load_model(request: dict) -> whisper.Whisper:
    """The request's model on the CPU in float32, with the alignment heads the request or the file names."""
    path = request["model"]
    if not Path(path).is_file():
        raise PeerRequestError(f"model {path}: no such file")
    model = whisper.load_model(path, device="cpu")
    heads = request.get("alignment_heads")
    dims = model.dims
    if isinstance(heads, str):
        if heads not in whisper._ALIGNMENT_HEADS:  # OpenAI's published table, keyed by model name
            raise PeerRequestError(f"alignment_heads {heads!r}: not one of openai-whisper's model names")
        model.set_alignment_heads(whisper._ALIGNMENT_HEADS[heads])
    elif heads:
        mask = np.zeros((dims.n_text_layer, dims.n_text_head), dtype=bool)
        for layer, head in heads:
            if not (0 <= int(layer) < dims.n_text_layer and 0 <= int(head) < dims.n_text_head):
                raise PeerRequestError(f"alignment_heads: ({layer}, {head}) is outside the decoder")
            mask[int(layer), int(head)] = True
        model.set_alignment_heads(_heads_dump(mask))
    else:
        stored = torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("alignment_heads")
        if stored is not None:
            model.set_alignment_heads(_heads_dump(stored.numpy()))
    return model.float().eval()


def alignment_heads(model: whisper.Whisper) -> list[list[int]]:
    """The (layer, head) pairs word timestamps use, as the model now holds them."""
    return model.alignment_heads.to_dense().nonzero().tolist()


def _temperature(request: dict) -> float | tuple[float, ...]:
    value = request.get("temperature", 0.0)
    return tuple(float(t) for t in value) if isinstance(value, list) else float(value)


def _segment(segment: dict) -> dict:
    out = {field: segment[field] for field in SEGMENT_FIELDS}
    out["tokens"] = [int(t) for t in out["tokens"]]
    if "words" in segment:
        out["words"] = [
            {"word": w["word"], "start": w["start"], "end": w["end"], "probability": w["probability"]}
            for w in segment["words"]
        ]
    return out


def _transcribe_file(model: whisper.Whisper, path: str, request: dict) -> dict:
    start = time.perf_counter()
    audio = load_audio(path)  # ffmpeg: 16 kHz mono float32, as whisper.transcribe(path) would read it
    result = whisper.transcribe(
        model,
        audio,
        verbose=None,  # no console output
        temperature=_temperature(request),
        compression_ratio_threshold=request.get("compression_ratio_threshold", 2.4),
        logprob_threshold=request.get("logprob_threshold", -1.0),
        no_speech_threshold=request.get("no_speech_threshold", 0.6),
        condition_on_previous_text=bool(request.get("condition_on_previous_text", True)),
        initial_prompt=request.get("initial_prompt"),
        word_timestamps=bool(request.get("word_timestamps", False)),
        language=request.get("language"),
        task=request.get("task", "transcribe"),
        fp16=False,
    )
    seconds = time.perf_counter() - start
    return {
        "audio": path,
        "text": result["text"],
        "language": result["language"],
        "segments": [_segment(s) for s in result["segments"]],
        "seconds": seconds,
        "audio_seconds": len(audio) / SAMPLE_RATE,
    }


# ------------------------------------------------------------------------------------------- subcommands


def cmd_transcribe(request: dict) -> dict:
    threads = int(request.get("threads", 1))
    torch.set_num_threads(threads)
    audio_paths = [str(p) for p in request["audio"]]
    if not audio_paths:
        raise PeerRequestError("no audio given")
    for path in audio_paths:
        if not Path(path).is_file():
            raise PeerRequestError(f"audio {path}: no such file")
    start = time.perf_counter()
    model = load_model(request)
    load_seconds = time.perf_counter() - start
    # load_model holds the whole checkpoint beside the model for a moment: that transient is the file
    # format's, not transcription's, so a second peak is counted from here (the process peak is kept too).
    counting = reset_peak_rss()
    warmup = audio_paths[: int(request.get("warmup", 0))]
    start = time.perf_counter()
    with torch.inference_mode():
        for path in warmup:
            _transcribe_file(model, path, request)
        warmup_seconds = time.perf_counter() - start
        start = time.perf_counter()
        files = [_transcribe_file(model, path, request) for path in audio_paths]
    wall = time.perf_counter() - start
    audio_seconds = sum(f["audio_seconds"] for f in files)
    return {
        "files": files,
        "audio_seconds": audio_seconds,
        "wall_seconds": wall,
        "rtfx": audio_seconds / wall if wall > 0 else None,
        "peak_rss_mb": peak_rss_mb(),
        "peak_rss_after_load_mb": peak_rss_since_reset_mb() if counting else None,
        "load_seconds": load_seconds,
        "warmup_seconds": warmup_seconds,
        "warmup_files": len(warmup),
        "threads": threads,
        "alignment_heads": alignment_heads(model),
    }


def cmd_logits(request: dict) -> dict:
    torch.set_num_threads(int(request.get("threads", 1)))
    model = load_model(request)
    out_dir = Path(request["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    mels, mel_paths = [], []
    if request.get("mel"):
        for path in request["mel"]:
            mel = np.load(path)
            if mel.ndim != 2 or mel.shape != (model.dims.n_mels, N_FRAMES):
                expected = (model.dims.n_mels, N_FRAMES)
                raise PeerRequestError(f"{path}: mel of shape {mel.shape}; expected {expected}")
            mels.append(torch.from_numpy(mel.astype(np.float32)))
    else:
        for i, path in enumerate(request["audio"]):
            mel = log_mel_spectrogram(pad_or_trim(load_audio(path), N_SAMPLES), model.dims.n_mels)
            mels.append(mel)
            mel_paths.append(str(out_dir / f"mel_{i:05d}.npy"))
            np.save(mel_paths[-1], mel.numpy())
    tokens = request["tokens"]
    if tokens and isinstance(tokens[0], int):
        tokens = [tokens] * len(mels)
    if len(tokens) != len(mels):
        raise PeerRequestError(f"{len(tokens)} token lists for {len(mels)} clips")
    paths = []
    with torch.inference_mode():
        for i, (mel, ids) in enumerate(zip(mels, tokens)):
            audio_features = model.embed_audio(mel[None])
            logits = model.logits(torch.tensor([ids], dtype=torch.long), audio_features)[0]
            paths.append(str(out_dir / f"logits_{i:05d}.npy"))
            np.save(paths[-1], logits.float().numpy())
    return {"logits": paths, "mel": mel_paths, "alignment_heads": alignment_heads(model)}


def cmd_versions(request: dict) -> dict:
    from whisper.version import __version__

    return {"openai_whisper": __version__, "torch": torch.__version__, "numpy": np.__version__}


COMMANDS = {"transcribe": cmd_transcribe, "logits": cmd_logits, "versions": cmd_versions}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=sorted(COMMANDS))
    parser.add_argument("--request", type=Path, required=True, help="JSON request")
    parser.add_argument("--response", type=Path, required=True, help="JSON response (written on success)")
    args = parser.parse_args(argv)
    request = json.loads(args.request.read_text(encoding="utf-8"))
    try:
        response = COMMANDS[args.command](request)
    except (PeerRequestError, KeyError) as e:
        missing = f"missing request field {e}" if isinstance(e, KeyError) else str(e)
        print(f"openai_whisper_runner {args.command}: {missing}", file=sys.stderr)
        return 2
    tmp = args.response.with_suffix(".tmp")
    tmp.write_text(json.dumps(response), encoding="utf-8")
    tmp.replace(args.response)
    return 0


if __name__ == "__main__":
    sys.exit(main())
