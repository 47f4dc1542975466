"""`fastaed serve` (issue 26) against real clients: the `openai` package and curl, on the loopback address.

Texts equal `fastaed transcribe` on the same files; every response format has OpenAI's shape; bad uploads
and fields get OpenAI-style 4xx errors naming the problem; the API key is enforced; a full queue answers
429 with Retry-After; chunks of concurrent requests share batches; a short request is served before the
rest of a long one; /health, /v1/models and /metrics answer.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
import soundfile as sf
import torch
import uvicorn

from fastaed.data.manifest import Utterance, read_manifest
from fastaed.decode.transcribe import DecodeConfig, Transcriber, utterances_from_audio
from fastaed.formats.whisper_import import import_whisper
from fastaed.serve.app import ServeConfig, Server
from fastaed.serve.scheduler import SchedulerConfig
from tests import whisper_fixtures as wf
from tests.decode.test_longform import _joined_real_file

KEY = "test-key"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Running:
    """A server in a background thread of this process (uvicorn on 127.0.0.1:port)."""

    def __init__(self, server: Server):
        self.server = server
        self.port = _free_port()
        config = uvicorn.Config(server.app(), host="127.0.0.1", port=self.port, log_level="warning")
        self.uvicorn = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.uvicorn.run, daemon=True)
        self.thread.start()
        deadline = time.time() + 30
        while not self.uvicorn.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("the server did not start")
            time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.uvicorn.should_exit = True
        self.thread.join(30)


@pytest.fixture(scope="module")
def tiny_en(tmp_path_factory) -> Path:
    return import_whisper(wf.real_whisper("tiny.en"), tmp_path_factory.mktemp("tiny") / "ckpt")


@pytest.fixture(scope="module")
def clips() -> list[Path]:
    return [Path(u.audio_filepath) for u in read_manifest(wf.real_check_manifest())][:6]


@pytest.fixture(scope="module")
def running(tiny_en):
    tr = Transcriber(tiny_en, DecodeConfig(progress=False, batch_size=16))
    server = Server(tr, ServeConfig("whisper-tiny.en", api_key=KEY, max_upload_mb=8.0),
                    SchedulerConfig(max_batch=16, max_wait_s=0.05))  # fmt: skip
    batches: list[int] = []
    inner = server.scheduler.on_batch
    server.scheduler.on_batch = lambda b: (batches.append(b.rows), inner(b))
    run = Running(server)
    run.batches = batches
    yield run
    run.stop()


@pytest.fixture(scope="module")
def client(running) -> openai.OpenAI:
    return openai.OpenAI(base_url=running.url + "/v1", api_key=KEY, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def reference(tiny_en, clips) -> dict[str, str]:
    """`fastaed transcribe`'s texts of the clips (the same code path as the command)."""
    tr = Transcriber(tiny_en, DecodeConfig(progress=False))
    utts = utterances_from_audio(clips, source_lang="en", target_lang="en", task="transcribe", pnc=True)
    return {t.utterance.audio_filepath: t.text for t in tr.run(utts, pnc="prompt").transcripts}


def test_openai_client_gets_fastaeds_text_for_every_clip(client, clips, reference):
    for path in clips:
        with open(path, "rb") as f:
            got = client.audio.transcriptions.create(model="whisper-tiny.en", file=f)
        assert got.text == reference[str(path)]


def test_concurrent_requests_share_batches_and_get_their_own_text(client, running, clips, reference):
    before = len(running.batches)

    def one(path: Path) -> str:
        with open(path, "rb") as f:
            return client.audio.transcriptions.create(model="x", file=f, response_format="text")

    with ThreadPoolExecutor(len(clips)) as pool:
        texts = list(pool.map(one, clips))
    assert [t.strip() for t in texts] == [reference[str(p)] for p in clips]
    assert max(running.batches[before:]) > 1  # requests that came together were decoded together


def test_verbose_json_has_segments_and_words(client, clips):
    with open(clips[0], "rb") as f:
        got = client.audio.transcriptions.create(
            model="x", file=f, response_format="verbose_json", timestamp_granularities=["word", "segment"]
        )
    assert got.segments and got.words and got.duration == pytest.approx(sf.info(clips[0]).duration, abs=0.01)
    assert all(0 <= w.start <= w.end <= got.duration + 0.5 for w in got.words)


def test_curl_gets_subtitles(running, clips):
    for fmt, head in (("srt", "1\n00:00:"), ("vtt", "WEBVTT\n\n")):
        out = subprocess.run(
            ["curl", "-sS", "-f", "-H", f"Authorization: Bearer {KEY}", "-F", f"file=@{clips[1]}",
             "-F", "model=whisper-tiny.en", "-F", f"response_format={fmt}",
             running.url + "/v1/audio/transcriptions"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith(head) and "-->" in out.stdout


def _post(running, files=None, data=None, key=KEY, path="/v1/audio/transcriptions") -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(running.url + path, files=files, data=data, headers=headers, timeout=120)


@pytest.mark.parametrize(
    ("files", "data", "status", "param", "says"),
    [
        ({"file": ("notes.txt", b"hello, this is not audio")}, {}, 400, "file", "not audio"),
        ({"file": ("empty.wav", b"")}, {}, 400, "file", "empty"),
        (None, {"model": "x"}, 400, "file", "required"),
        ({"file": ("a.wav", b"RIFF....")}, {"response_format": "xml"}, 400, "response_format", "xml"),
        ({"file": ("a.wav", b"RIFF....")}, {"temperature": "hot"}, 400, "temperature", "number"),
        ({"file": ("a.wav", b"RIFF....")}, {"language": "de"}, 400, "language", "de"),
        ({"file": ("big.wav", b"\0" * (8 * 1024 * 1024 + 1))}, {}, 413, "file", "limit"),
    ],
)
def test_bad_requests_get_openai_style_errors(running, files, data, status, param, says):
    r = _post(running, files=files, data=data)
    assert r.status_code == status
    err = r.json()["error"]
    assert err["param"] == param and says in err["message"] and "/" not in err["message"].split(":")[0]


def test_translation_on_an_english_only_model_is_refused(running, clips):
    with open(clips[0], "rb") as f:
        r = _post(running, files={"file": ("a.wav", f.read())}, path="/v1/audio/translations")
    assert r.status_code == 400 and "translate" in r.json()["error"]["message"]


def test_the_api_key_is_required(running, clips):
    assert _post(running, files={"file": ("a.wav", b"x")}, key=None).status_code == 401
    assert _post(running, files={"file": ("a.wav", b"x")}, key="wrong").status_code == 401
    assert httpx.get(running.url + "/health").status_code == 200  # health is open to load balancers


def test_health_models_and_metrics(running, client):
    assert httpx.get(running.url + "/health").json()["status"] == "ok"
    assert [m.id for m in client.models.list()] == ["whisper-tiny.en"]
    text = httpx.get(running.url + "/metrics").text
    assert 'fastaed_requests_total{endpoint="transcriptions",status="200"}' in text
    assert "fastaed_batch_rows_bucket" in text and "fastaed_queue_depth" in text


def test_a_full_queue_answers_429_with_retry_after(tiny_en, clips):
    tr = Transcriber(tiny_en, DecodeConfig(progress=False))
    run = Running(Server(tr, ServeConfig("m"), SchedulerConfig(max_batch=1, max_queue=1, max_wait_s=0.3)))
    try:
        data = clips[0].read_bytes()

        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=120) as http:
                posts = [http.post(run.url + "/v1/audio/transcriptions", files={"file": ("a.wav", data)})
                         for _ in range(4)]  # fmt: skip
                return await asyncio.gather(*posts)

        codes = sorted(r.status_code for r in asyncio.run(burst()))
        assert codes[0] == 200 and codes[-1] == 429
        refused = next(r for r in asyncio.run(burst()) if r.status_code == 429)
        assert (
            int(refused.headers["Retry-After"]) >= 1 and refused.json()["error"]["type"] == "rate_limit_error"
        )
        assert httpx.get(run.url + "/health").status_code == 200  # still healthy
    finally:
        run.stop()


def test_a_short_request_is_not_served_after_a_long_one(running, client, clips, tmp_path):
    long_path, _ = _joined_real_file(tmp_path / "long.wav")  # ~70 s: three chunks
    wave, rate = sf.read(long_path, dtype="float32")
    longer = tmp_path / "longer.flac"
    sf.write(longer, np.concatenate([wave] * 6), rate)  # ~7 min: about ten chunks, three batches
    done: dict[str, float] = {}

    def send(name: str, path: Path) -> None:
        with open(path, "rb") as f:
            client.audio.transcriptions.create(model="x", file=f)
        done[name] = time.monotonic()

    slow = threading.Thread(target=send, args=("long", longer))
    slow.start()
    time.sleep(1.0)  # the long file is being decoded
    send("short", clips[1])
    slow.join()
    assert done["short"] < done["long"]


def test_cancelled_jobs_leave_the_queue(running, clips):
    server = running.server
    wave, _ = sf.read(clips[0], dtype="float32")
    utt = Utterance("x", 0.0, "", source_lang="en", target_lang="en", task="transcribe", pnc=True)
    pending = server.decoder.prepare(10**9, utt, torch.from_numpy(wave))
    with server.scheduler._lock:  # hold the worker so the job stays queued
        job = server.scheduler.submit(pending)
        server.scheduler.cancel(job)
        assert server.scheduler.waiting == 0
    assert job.future.cancelled()


def test_metrics_are_prometheus_text(running):
    for line in httpx.get(running.url + "/metrics").text.splitlines():
        assert line.startswith("#") or len(line.rsplit(" ", 1)) == 2, line
    json.loads(httpx.get(running.url + "/health").text)
