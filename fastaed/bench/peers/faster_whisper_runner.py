"""The faster-whisper / CTranslate2 side of the Whisper comparisons, run by the peer venv's python.

This file is a standalone script: it imports only the standard library, numpy, soundfile, ctranslate2 and
faster_whisper (never fastaed), so ``.venv-whisper/bin/python`` runs it without fastaed installed there.
fastaed's client (``fastaed.bench.peers.run_whisper_peer``) writes a JSON request, runs

    .venv-whisper/bin/python faster_whisper_runner.py SUBCOMMAND --request REQ.json --response RESP.json

and reads the JSON response; arrays travel as ``.npy`` files named in the JSON.

Subcommands (request fields; ``model`` is a CTranslate2 Whisper folder, ``threads`` its CPU threads):

* ``features`` {audio: [wav], out_dir, n_mels=80}: faster-whisper's log-mel exactly as its ``transcribe``
  feeds the encoder: 160 samples of zero padding after the audio, a centred STFT whose last frame the
  extractor drops and ``transcribe`` drops one more (so ``samples // 160`` real frames), log-mel frames
  zero-padded (or cut) to 3000. Writes one float32 ``(n_mels, 3000)`` ``.npy`` per clip; returns their paths
  and each clip's real frame count.
* ``encode`` {model, features: [npy], out_dir, compute_type="float32", threads}: ``Whisper.encode`` of each
  ``(n_mels, 3000)`` array; writes one float32 ``(1500, d_model)`` ``.npy`` per clip.
* ``generate`` {model, features: [npy], prompt: [ids] (or prompts: one list per clip), max_length=448,
  suppress_blank=true, suppress_tokens=[-1], compute_type="float32", threads}: greedy ``Whisper.generate``
  (beam 1, no sampling); ``-1`` suppresses the ``suppress_ids`` of the model's config.json, as faster-whisper
  does. Returns the generated ids of each clip (prompt and end-of-text not included) and their scores.
* ``transcribe`` {model, audio: [wav], compute_type="float32"|"int8", threads, batch_size=1, language=null,
  warmup=1, task="transcribe"}: ``WhisperModel.transcribe`` one clip at a time (batch_size 1), or
  ``BatchedInferencePipeline`` (batch_size > 1), greedy: beam 1, temperature 0 only (no fallback), no VAD, no
  conditioning on previous text, no timestamps, no no-speech skipping. Returns per clip text, token ids and
  seconds, and audio seconds / wall seconds (RTFx) over the timed pass. ``warmup`` clips (the first ones) are
  transcribed once before the clock starts. Reading the audio (soundfile), features, encoder and decoder are
  timed, as in fastaed's transcriber.

* ``longform`` {model, audio: [wav], warmup_audio: [wav]=[], mode="sequential"|"batched", batch_size=8,
  temperature=0.0 (a number or a list: the fallback ladder), condition_on_previous_text=true,
  word_timestamps=false, language=null, compute_type="float32", threads}: long recordings as a user runs
  them. ``sequential``: ``WhisperModel.transcribe`` (beam 1, timestamps, no VAD, the thresholds at their
  defaults); ``batched``: ``BatchedInferencePipeline`` with its default Silero VAD (beam 1, ``batch_size``).
  Returns per file its text, language, segments (id, seek, start, end, text, tokens, temperature,
  avg_logprob, compression_ratio, no_speech_prob, and words when asked: word, start, end, probability),
  seconds (reading the audio included) and audio seconds; over the timed pass the audio / wall seconds
  (RTFx) and the process's peak RSS. ``warmup_audio`` is transcribed once before the clock starts.

The batched pipeline batches the *chunks of one recording* (VAD segments, or ``clip_timestamps``); it never
batches separate files. To batch separate clips, they are laid end to end in one array and each clip is given
as a ``clip_timestamps`` entry, so every batch row is exactly one clip (each still padded to 30 s of log-mel).
Clips longer than 30 s are cut to their first 30 s by that pipeline (its warning), so they are refused here.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local model folder only: never reach the hub

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

SAMPLE_RATE = 16000
CHUNK_FRAMES = 3000  # 30 s of 10 ms log-mel frames: Whisper's encoder input
MAX_CHUNK_SECONDS = 30.0


class PeerRequestError(ValueError):
    """A request the runner cannot serve (its message names the field or file)."""


def read_audio(path: str) -> np.ndarray:
    """float32 samples in [-1, 1) of a 16 kHz mono file (the same scaling as faster-whisper's decoder)."""
    data, rate = sf.read(path, dtype="float32", always_2d=True)
    if rate != SAMPLE_RATE or data.shape[1] != 1:
        raise PeerRequestError(f"{path}: {rate} Hz x {data.shape[1]} channels; expected 16000 Hz mono")
    return np.ascontiguousarray(data[:, 0])


def whisper_features(extractor, audio: np.ndarray) -> tuple[np.ndarray, int]:
    """faster-whisper's encoder input for a clip under 30 s and its real frame count.

    The extractor pads the audio by 160 samples and drops the STFT's last frame; ``generate_segments`` then
    takes ``content_frames = frames - 1`` of that and ``pad_or_trim``s the window to 3000 frames (the batched
    pipeline does the same with ``[..., :-1]``).
    """
    from faster_whisper.audio import pad_or_trim

    mel = extractor(audio)  # (n_mels, frames), audio padded by 160 samples inside
    content = mel[:, : mel.shape[-1] - 1]
    return pad_or_trim(content).astype(np.float32), int(content.shape[-1])


def _model(request: dict):
    import ctranslate2

    return ctranslate2.models.Whisper(
        request["model"],
        device="cpu",
        compute_type=request.get("compute_type", "float32"),
        intra_threads=int(request.get("threads", 1)),
    )


def _storage(batch: np.ndarray):
    import ctranslate2

    return ctranslate2.StorageView.from_array(np.ascontiguousarray(batch, dtype=np.float32))


def _load_features(paths: list[str]) -> list[np.ndarray]:
    arrays = []
    for path in paths:
        x = np.load(path)
        if x.ndim == 3 and x.shape[0] == 1:
            x = x[0]
        if x.ndim != 2:
            raise PeerRequestError(f"{path}: features of shape {x.shape}; expected (n_mels, frames)")
        arrays.append(x)
    return arrays


# ------------------------------------------------------------------------------------------- subcommands


def cmd_features(request: dict) -> dict:
    from faster_whisper.feature_extractor import FeatureExtractor

    extractor = FeatureExtractor(feature_size=int(request.get("n_mels", 80)))
    out_dir = Path(request["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    paths, frames = [], []
    for i, audio_path in enumerate(request["audio"]):
        audio = read_audio(audio_path)
        if len(audio) > MAX_CHUNK_SECONDS * SAMPLE_RATE:
            raise PeerRequestError(f"{audio_path}: {len(audio) / SAMPLE_RATE:.1f} s; clips must be <= 30 s")
        features, real = whisper_features(extractor, audio)
        path = out_dir / f"features_{i:05d}.npy"
        np.save(path, features)
        paths.append(str(path))
        frames.append(real)
    return {"features": paths, "frames": frames}


def cmd_encode(request: dict) -> dict:
    model = _model(request)
    out_dir = Path(request["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, features in enumerate(_load_features(request["features"])):
        encoded = np.array(model.encode(_storage(features[None]), to_cpu=True), dtype=np.float32)
        path = out_dir / f"encoded_{i:05d}.npy"
        np.save(path, encoded[0])
        paths.append(str(path))
    return {"encoded": paths}


def cmd_generate(request: dict) -> dict:
    model = _model(request)
    features = _load_features(request["features"])
    prompts = request.get("prompts") or [request["prompt"]] * len(features)
    if len(prompts) != len(features):
        raise PeerRequestError(f"{len(prompts)} prompts for {len(features)} feature files")
    tokens, scores = [], []
    for x, prompt in zip(features, prompts):
        result = model.generate(
            _storage(x[None]),
            [list(map(int, prompt))],
            beam_size=1,
            max_length=int(request.get("max_length", 448)),
            suppress_blank=bool(request.get("suppress_blank", True)),
            suppress_tokens=list(map(int, request.get("suppress_tokens", [-1]))),
            return_scores=True,
            return_no_speech_prob=True,
        )[0]
        tokens.append([int(t) for t in result.sequences_ids[0]])
        scores.append({"score": float(result.scores[0]), "no_speech_prob": float(result.no_speech_prob)})
    return {"tokens": tokens, "scores": scores}


def _transcribe_options(request: dict) -> dict:
    """Greedy decoding, one pass per clip: the comparison fastaed's greedy search is held to."""
    return dict(
        language=request.get("language"),
        task=request.get("task", "transcribe"),
        beam_size=1,
        temperature=0.0,
        vad_filter=False,
        condition_on_previous_text=False,
        without_timestamps=True,
    )


def _one_by_one(model, audio_paths: list[str], request: dict) -> list[dict]:
    options = _transcribe_options(request)
    out = []
    for path in audio_paths:
        start = time.perf_counter()
        audio = read_audio(path)
        segments, _ = model.transcribe(
            audio, no_speech_threshold=None, compression_ratio_threshold=None, **options
        )
        segments = list(segments)  # the generator does the work
        seconds = time.perf_counter() - start
        out.append(
            {
                "text": "".join(s.text for s in segments).strip(),
                "tokens": [int(t) for s in segments for t in s.tokens],
                "seconds": seconds,
                "audio_seconds": len(audio) / SAMPLE_RATE,
            }
        )
    return out


def _batched(pipeline, audio_paths: list[str], batch_size: int, request: dict) -> list[dict]:
    """Each batch of clips laid end to end, one ``clip_timestamps`` entry per clip: one batch row per clip."""
    options = _transcribe_options(request)
    frames_per_second = pipeline.model.frames_per_second
    out: list[dict] = []
    for first in range(0, len(audio_paths), batch_size):
        start = time.perf_counter()
        clips = [read_audio(p) for p in audio_paths[first : first + batch_size]]
        bounds, position = [], 0
        for path, clip in zip(audio_paths[first:], clips):
            if len(clip) > MAX_CHUNK_SECONDS * SAMPLE_RATE:
                raise PeerRequestError(f"{path}: longer than 30 s; the batched pipeline would cut it")
            bounds.append((position, position + len(clip)))
            position += len(clip)
        # seconds with a quarter sample added: the pipeline's int(seconds * 16000) gives back these samples
        stamps = [{"start": (s + 0.25) / SAMPLE_RATE, "end": (e + 0.25) / SAMPLE_RATE} for s, e in bounds]
        by_seek = {int(s / SAMPLE_RATE * frames_per_second): i for i, (s, _) in enumerate(bounds)}
        if len(by_seek) != len(bounds):
            raise PeerRequestError("two clips start within one frame of each other")
        segments, _ = pipeline.transcribe(
            np.concatenate(clips), clip_timestamps=stamps, batch_size=batch_size, **options
        )
        texts: list[list[str]] = [[] for _ in clips]
        tokens: list[list[int]] = [[] for _ in clips]
        for segment in segments:
            i = by_seek[segment.seek]
            texts[i].append(segment.text)
            tokens[i].extend(int(t) for t in segment.tokens)
        seconds = time.perf_counter() - start
        for clip, text, ids in zip(clips, texts, tokens):
            out.append(
                {
                    "text": "".join(text).strip(),
                    "tokens": ids,
                    "seconds": seconds / len(clips),  # the batch's time shared out
                    "audio_seconds": len(clip) / SAMPLE_RATE,
                }
            )
    return out


def cmd_transcribe(request: dict) -> dict:
    from faster_whisper import BatchedInferencePipeline, WhisperModel

    threads = int(request.get("threads", 1))
    batch_size = int(request.get("batch_size", 1))
    audio_paths = list(request["audio"])
    if not audio_paths:
        raise PeerRequestError("no audio given")
    start = time.perf_counter()
    model = WhisperModel(
        request["model"],
        device="cpu",
        compute_type=request.get("compute_type", "float32"),
        cpu_threads=threads,
        local_files_only=True,
    )
    load_seconds = time.perf_counter() - start

    def run(paths: list[str]) -> list[dict]:
        if batch_size == 1:
            return _one_by_one(model, paths, request)
        return _batched(BatchedInferencePipeline(model), paths, batch_size, request)

    warmup = audio_paths[: int(request.get("warmup", 1))]
    start = time.perf_counter()
    if warmup:
        run(warmup)
    warmup_seconds = time.perf_counter() - start
    start = time.perf_counter()
    clips = run(audio_paths)
    wall = time.perf_counter() - start
    audio_seconds = sum(c["audio_seconds"] for c in clips)
    return {
        "clips": clips,
        "audio_seconds": audio_seconds,
        "wall_seconds": wall,
        "rtfx": audio_seconds / wall if wall > 0 else None,
        "load_seconds": load_seconds,
        "warmup_seconds": warmup_seconds,
        "warmup_clips": len(warmup),
        "batch_size": batch_size,
        "threads": threads,
        "compute_type": request.get("compute_type", "float32"),
    }


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MiB (Linux reports ``ru_maxrss`` in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _segment_dict(segment) -> dict:
    out = {
        "id": segment.id, "seek": segment.seek, "start": segment.start, "end": segment.end,
        "text": segment.text, "tokens": [int(t) for t in segment.tokens], "temperature": segment.temperature,
        "avg_logprob": segment.avg_logprob, "compression_ratio": segment.compression_ratio,
        "no_speech_prob": segment.no_speech_prob,
    }  # fmt: skip
    if segment.words is not None:
        out["words"] = [
            {"word": w.word, "start": w.start, "end": w.end, "probability": w.probability}
            for w in segment.words
        ]
    return out


def cmd_longform(request: dict) -> dict:
    from faster_whisper import BatchedInferencePipeline, WhisperModel

    threads = int(request.get("threads", 1))
    mode = request.get("mode", "sequential")
    if mode not in ("sequential", "batched"):
        raise PeerRequestError(f"mode {mode!r}: expected sequential or batched")
    audio_paths = list(request["audio"])
    if not audio_paths:
        raise PeerRequestError("no audio given")
    temperature = request.get("temperature", 0.0)
    temperature = [float(t) for t in temperature] if isinstance(temperature, list) else float(temperature)
    options = dict(
        language=request.get("language"),
        task=request.get("task", "transcribe"),
        beam_size=1,
        temperature=temperature,
        condition_on_previous_text=bool(request.get("condition_on_previous_text", True)),
        word_timestamps=bool(request.get("word_timestamps", False)),
    )
    start = time.perf_counter()
    model = WhisperModel(
        request["model"],
        device="cpu",
        compute_type=request.get("compute_type", "float32"),
        cpu_threads=threads,
        local_files_only=True,
    )
    batch_size = int(request.get("batch_size", 8))
    if mode == "batched":
        pipeline = BatchedInferencePipeline(model)

        def transcribe(audio: np.ndarray):
            return pipeline.transcribe(audio, batch_size=batch_size, **options)  # its default VAD
    else:

        def transcribe(audio: np.ndarray):
            return model.transcribe(audio, vad_filter=False, without_timestamps=False, **options)

    load_seconds = time.perf_counter() - start

    def one(path: str) -> dict:
        begin = time.perf_counter()
        audio = read_audio(path)
        segments, info = transcribe(audio)
        segments = [_segment_dict(s) for s in segments]  # the generator does the work
        return {
            "audio": path,
            "text": "".join(s["text"] for s in segments),
            "language": info.language,
            "segments": segments,
            "seconds": time.perf_counter() - begin,
            "audio_seconds": len(audio) / SAMPLE_RATE,
        }

    start = time.perf_counter()
    for path in request.get("warmup_audio") or []:
        one(path)
    warmup_seconds = time.perf_counter() - start
    start = time.perf_counter()
    files = [one(path) for path in audio_paths]
    wall = time.perf_counter() - start
    audio_seconds = sum(f["audio_seconds"] for f in files)
    return {
        "files": files,
        "audio_seconds": audio_seconds,
        "wall_seconds": wall,
        "rtfx": audio_seconds / wall if wall > 0 else None,
        "peak_rss_mb": peak_rss_mb(),
        "load_seconds": load_seconds,
        "warmup_seconds": warmup_seconds,
        "mode": mode,
        "batch_size": batch_size if mode == "batched" else 1,
        "threads": threads,
        "compute_type": request.get("compute_type", "float32"),
    }


def cmd_versions(request: dict) -> dict:
    import ctranslate2
    import faster_whisper

    return {"faster_whisper": faster_whisper.__version__, "ctranslate2": ctranslate2.__version__}


COMMANDS = {
    "features": cmd_features,
    "encode": cmd_encode,
    "generate": cmd_generate,
    "transcribe": cmd_transcribe,
    "longform": cmd_longform,
    "versions": cmd_versions,
}


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
        print(f"faster_whisper_runner {args.command}: {missing}", file=sys.stderr)
        return 2
    tmp = args.response.with_suffix(".tmp")
    tmp.write_text(json.dumps(response), encoding="utf-8")
    tmp.replace(args.response)
    return 0


if __name__ == "__main__":
    sys.exit(main())
