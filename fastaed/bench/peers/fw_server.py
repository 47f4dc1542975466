"""The simplest transcription server a faster-whisper user would write: the peer of ``fastaed bench serve``.

A standalone script for the faster-whisper peer venv (``.venv-whisper``): it imports only the standard
library and faster_whisper (never fastaed).

    .venv-whisper/bin/python fw_server.py --model ~/.cache/fastaed/whisper/tiny.en --port 8001 --threads 2

One ``WhisperModel`` (float32, ``cpu_threads``) behind Python's ``ThreadingHTTPServer``; a lock lets one
request use the model at a time (what a user does with one model: CTranslate2 would otherwise run the
requests' decodes on the same threads in turn anyway, with no batching across them). Decoding: beam 1,
temperature 0 (no fallback), no VAD, faster-whisper's defaults otherwise (timestamps, conditioning on the
previous text), as ``model.transcribe(audio, beam_size=1, temperature=0)`` is written in its README.

* ``POST /transcribe``: the audio file is the raw request body (any format PyAV decodes); answers
  ``{"text": ...}``, or 400 ``{"error": ...}`` for an empty body or one that is not audio.
* ``GET /health``: ``{"status": "ok"}`` once the model is loaded (the server listens only after that).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local model folder only: never reach the hub

from faster_whisper import WhisperModel  # noqa: E402
from faster_whisper.audio import decode_audio  # noqa: E402

MAX_BODY_BYTES = 25 * 1024 * 1024  # OpenAI's (and fastaed serve's) upload limit


def make_handler(model: WhisperModel, lock: threading.Lock) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the load generator's client expects

        def log_message(self, format: str, *args) -> None:  # one line per request would flood stderr
            pass

        def _answer(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/health":
                self._answer(200, {"status": "ok"})
            else:
                self._answer(404, {"error": f"no route {self.path}"})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if self.path != "/transcribe":
                self.rfile.read(length)
                self._answer(404, {"error": f"no route {self.path}"})
                return
            if length > MAX_BODY_BYTES:
                self.close_connection = True  # the body is left unread
                self._answer(413, {"error": f"upload of {length} bytes is over the limit"})
                return
            body = self.rfile.read(length)
            if not body:
                self._answer(400, {"error": "empty upload"})
                return
            try:
                audio = decode_audio(io.BytesIO(body))
            except Exception as e:  # PyAV's errors for what is not audio
                self._answer(400, {"error": f"not audio: {type(e).__name__}"})
                return
            with lock:  # one request at a time on the one model
                segments, _ = model.transcribe(audio, beam_size=1, temperature=0.0, vad_filter=False)
                text = "".join(s.text for s in segments).strip()  # segments is lazy: decode inside the lock
            self._answer(200, {"text": text})

    return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True, help="CTranslate2 Whisper folder")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--threads", type=int, default=2, help="CTranslate2 CPU threads")
    args = parser.parse_args(argv)
    model = WhisperModel(args.model, device="cpu", compute_type="float32", cpu_threads=args.threads)
    server = ThreadingHTTPServer((args.host, args.port), make_handler(model, threading.Lock()))
    server.daemon_threads = True
    print(
        f"fw_server: {args.model} on http://{args.host}:{args.port}/transcribe", file=sys.stderr, flush=True
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
