"""``fastaed serve``: OpenAI's audio API over a fastaed checkpoint, on Starlette + uvicorn.

Why Starlette and not FastAPI: five routes whose multipart fields we validate ourselves (to answer with
OpenAI's error shape, naming the field), so FastAPI's pydantic layer would add a dependency and a second
error format for nothing; Starlette is what FastAPI is built on, and uvicorn is the standard ASGI server.

Routes:

* ``POST /v1/audio/transcriptions`` and ``/v1/audio/translations``: OpenAI's multipart fields (``file``,
  ``model``, ``language``, ``prompt``, ``response_format`` json | text | srt | vtt | verbose_json,
  ``temperature``, ``timestamp_granularities[]``); a Canary/fastaed model also takes its own prompt fields
  (``source_lang``, ``target_lang``, ``pnc``). Any audio length: a recording longer than the model's window
  is cut at its pauses (``fastaed.decode.chunked``). Every chunk of every request goes through one
  :class:`~fastaed.serve.scheduler.BatchScheduler`.
* ``GET /health``, ``GET /v1/models``, ``GET /metrics`` (Prometheus text).

Errors are OpenAI's JSON shape ``{"error": {"message", "type", "param", "code"}}``: 400 for a bad field or
an upload that is not audio, 401 without the ``--api-key`` bearer token, 413 past the upload limit, 429 with
``Retry-After`` when the queue is full. A client that disconnects frees its queued chunks. Nothing a client
sends names a path on the server: the upload is decoded from memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from fastaed.data.audio import load_audio
from fastaed.data.errors import BadInputError
from fastaed.data.manifest import Utterance
from fastaed.data.whisper_tokenizer import WhisperTokenizer
from fastaed.decode.chunked import ChunkedDecoder
from fastaed.decode.segments import FileTranscript
from fastaed.decode.transcribe import Transcriber
from fastaed.decode.writers import render
from fastaed.serve.metrics import Metrics
from fastaed.serve.scheduler import BatchScheduler, Job, QueueFull, SchedulerConfig

RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
GRANULARITIES = ("segment", "word")


@dataclass(frozen=True)
class ServeConfig:
    model_id: str
    api_key: str | None = None
    max_upload_mb: float = 25.0  # OpenAI's own limit
    chunk_s: float = 30.0


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.headers = status, message, param, headers or {}

    def response(self) -> JSONResponse:
        kind = {401: "authentication_error", 429: "rate_limit_error"}.get(
            self.status, "invalid_request_error"
        )
        body = {"error": {"message": self.message, "type": kind, "param": self.param, "code": None}}
        return JSONResponse(body, status_code=self.status, headers=self.headers)


class Server:
    """The model, its scheduler and counters; :meth:`app` is the ASGI application."""

    def __init__(self, transcriber: Transcriber, config: ServeConfig, scheduler: SchedulerConfig):
        self.tr, self.config = transcriber, config
        self.decoder = ChunkedDecoder(transcriber, config.chunk_s)
        self.scheduler = BatchScheduler(
            self.decoder, scheduler, on_batch=lambda b: self.metrics.batch(b.rows, b.seconds)
        )
        self.metrics = Metrics(lambda: self.scheduler.waiting)
        # One thread cuts uploads into chunks (the voice-activity detector briefly sets torch's thread count).
        self.prepare_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fastaed-prepare")
        self.started = int(time.time())
        self._numbers = iter(range(1 << 62))

    def app(self) -> Starlette:
        @contextlib.asynccontextmanager
        async def lifespan(_app: Starlette):
            yield
            self.scheduler.close()  # uvicorn has drained in-flight requests by now
            self.prepare_pool.shutdown(wait=True)

        routes = [
            Route("/v1/audio/transcriptions", self._endpoint("transcribe"), methods=["POST"]),
            Route("/v1/audio/translations", self._endpoint("translate"), methods=["POST"]),
            Route("/health", self.health, methods=["GET"]),
            Route("/v1/models", self.models, methods=["GET"]),
            Route("/metrics", self.prometheus, methods=["GET"]),
        ]
        return Starlette(routes=routes, lifespan=lifespan)

    # ---- small routes --------------------------------------------------------------------------------
    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "model": self.config.model_id, "queue": self.scheduler.waiting})

    async def models(self, request: Request) -> Response:
        if (err := self._unauthorised(request)) is not None:
            return err.response()
        model = {
            "id": self.config.model_id,
            "object": "model",
            "created": self.started,
            "owned_by": "fastaed",
        }
        return JSONResponse({"object": "list", "data": [model]})

    async def prometheus(self, request: Request) -> Response:
        return PlainTextResponse(self.metrics.render(), media_type="text/plain; version=0.0.4")

    # ---- transcription ---------------------------------------------------------------------------------
    def _endpoint(self, task: str):
        name = "transcriptions" if task == "transcribe" else "translations"

        async def handle(request: Request) -> Response:
            start = time.monotonic()
            try:
                response, audio_s = await self._transcribe(request, task)
            except ApiError as err:
                self.metrics.request(name, err.status, time.monotonic() - start)
                return err.response()
            except asyncio.CancelledError:  # the client went away: its work is already cancelled
                self.metrics.request(name, 499, time.monotonic() - start)
                raise
            self.metrics.request(name, 200, time.monotonic() - start, audio_s)
            return response

        return handle

    def _unauthorised(self, request: Request) -> ApiError | None:
        key = self.config.api_key
        if key and request.headers.get("authorization", "") != f"Bearer {key}":
            return ApiError(401, "missing or wrong API key: send 'Authorization: Bearer KEY'")
        return None

    async def _transcribe(self, request: Request, task: str) -> tuple[Response, float]:
        if (err := self._unauthorised(request)) is not None:
            raise err
        limit = int(self.config.max_upload_mb * 1024 * 1024)
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit + 64 * 1024:
            raise ApiError(
                413,
                f"upload of {int(declared)} bytes is over the {self.config.max_upload_mb:g} MB limit",
                "file",
            )
        try:
            async with request.form(max_files=1, max_fields=32) as form:
                upload = form.get("file")
                if not isinstance(upload, UploadFile):
                    raise ApiError(400, "'file' is required: the audio file to transcribe", "file")
                data = await upload.read()
                name = upload.filename or "upload"
                fields = {k: v for k, v in form.multi_items() if isinstance(v, str)}
                granularities = form.getlist("timestamp_granularities[]") + form.getlist(
                    "timestamp_granularities"
                )
        except ApiError:
            raise
        except Exception as e:  # a malformed multipart body
            raise ApiError(400, f"could not read the multipart form: {e}") from None
        if len(data) > limit:
            raise ApiError(
                413, f"upload of {len(data)} bytes is over the {self.config.max_upload_mb:g} MB limit", "file"
            )
        if not data:
            raise ApiError(400, f"'file' ({name}) is empty", "file")
        options = self._options(fields, [g for g in granularities if isinstance(g, str)], task)
        try:
            wave = await run_in_threadpool(load_audio, name, data=data)
        except BadInputError as e:
            raise ApiError(
                400, f"'file' ({name}) is not audio this server can decode: {e.detail}", "file"
            ) from None
        utt = options["utterance"]
        loop = asyncio.get_running_loop()
        timed = options["format"] in ("srt", "vtt", "verbose_json")  # json/text: no word alignment needed
        prepare = functools.partial(self.decoder.prepare, next(self._numbers), utt, wave, timed=timed)
        pending = await loop.run_in_executor(self.prepare_pool, prepare)
        try:
            job = self.scheduler.submit(pending, word_timestamps=options["words"])
        except QueueFull as e:
            raise ApiError(429, str(e), headers={"Retry-After": str(round(e.retry_after_s))}) from None
        result = await self._wait(request, job)
        return self._render(result, options, task), pending.duration

    async def _wait(self, request: Request, job: Job) -> FileTranscript:
        """The job's transcript; if the client disconnects first, its chunks are dropped."""
        future = asyncio.wrap_future(job.future)
        while True:
            done, _ = await asyncio.wait({future}, timeout=0.2)
            if done:
                return future.result()
            if await request.is_disconnected():
                self.scheduler.cancel(job)
                raise asyncio.CancelledError

    def _options(self, fields: dict[str, str], granularities: list[str], task: str) -> dict[str, Any]:
        """Validated request options and the utterance that carries the prompt."""
        fmt = fields.get("response_format", "json")
        if fmt not in RESPONSE_FORMATS:
            raise ApiError(
                400,
                f"response_format {fmt!r}: expected one of {', '.join(RESPONSE_FORMATS)}",
                "response_format",
            )
        bad = [g for g in granularities if g not in GRANULARITIES]
        if bad:
            raise ApiError(
                400,
                f"timestamp_granularities[] {bad[0]!r}: expected segment and/or word",
                "timestamp_granularities[]",
            )
        words = "word" in granularities
        if granularities and fmt != "verbose_json":
            raise ApiError(
                400,
                "timestamp_granularities[] needs response_format verbose_json",
                "timestamp_granularities[]",
            )
        if words and not self.decoder.can_time_words:
            raise ApiError(
                400,
                f"word timestamps need a Whisper model or a CTC head; this is a {self.tr.family} model",
                "timestamp_granularities[]",
            )
        temperature = fields.get("temperature", "0")
        try:
            t = float(temperature)
        except ValueError:
            raise ApiError(400, f"temperature {temperature!r} is not a number", "temperature") from None
        if t != 0.0:
            raise ApiError(
                400,
                f"temperature {t:g}: this server decodes greedily (temperature 0) so that "
                "requests can share batches",
                "temperature",
            )
        if fields.get("prompt"):
            raise ApiError(
                400,
                "prompt: conditioning on a text prompt is not served (rows with different "
                "prompts cannot share a batch); send the request without it",
                "prompt",
            )
        return {"format": fmt, "words": words, "utterance": self._utterance(fields, task)}

    def _utterance(self, fields: dict[str, str], task: str) -> Utterance:
        whisper = isinstance(self.tr.tokenizer, WhisperTokenizer)
        lang = fields.get("language") or fields.get("source_lang") or "en"
        if task == "translate":
            target = "en"
        elif whisper:
            target = lang
        else:
            target = fields.get("target_lang") or lang
        pnc = fields.get("pnc", "yes")
        if pnc not in ("yes", "no"):
            raise ApiError(400, f"pnc {pnc!r}: expected yes or no", "pnc")
        utt = Utterance("upload", 0.0, "", source_lang=lang, target_lang=target, task=task, pnc=pnc == "yes")
        try:
            self.tr.check_prompt(utt, pnc="prompt")
        except BadInputError as e:
            param = {"source_lang": "language"}.get(e.field or "", e.field)
            raise ApiError(400, f"{param}: {e.detail}", param) from None
        except ValueError as e:
            raise ApiError(400, str(e), "language") from None
        return utt

    def _render(self, result: FileTranscript, options: dict[str, Any], task: str) -> Response:
        fmt = options["format"]
        text = result.text.strip()
        if fmt == "json":
            return JSONResponse({"text": text})
        if fmt == "text":
            return PlainTextResponse(text + "\n")
        if fmt in ("srt", "vtt"):
            return PlainTextResponse(render(result, fmt), media_type="text/plain; charset=utf-8")
        doc = result.to_verbose_json()
        doc.pop("audio_filepath", None)
        doc["text"] = text
        if not options["words"]:
            doc.pop("words", None)
            for s in doc["segments"]:
                s.pop("words", None)
        return JSONResponse(doc)
