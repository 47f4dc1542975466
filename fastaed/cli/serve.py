"""`fastaed serve`: an OpenAI-compatible transcription server over a checkpoint.

fastaed serve runs/whisper-tiny.en                      # http://127.0.0.1:8000/v1/audio/transcriptions
fastaed serve CKPT --port 9000 --api-key s3cret --max-batch 32
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fastaed.cli.errors import UsageError


def register(sub: argparse._SubParsersAction) -> None:
    from fastaed.cli.config_args import add_config_arguments
    from fastaed.decode.transcribe import DecodeConfig
    from fastaed.serve.scheduler import SchedulerConfig

    p = sub.add_parser(
        "serve",
        help="an OpenAI-compatible transcription server (cross-request dynamic batching)",
        description="POST /v1/audio/transcriptions and /v1/audio/translations (OpenAI's multipart fields and "
        "response formats), GET /health, /v1/models, /metrics. Every request is cut into chunks; chunks of "
        "all requests are decoded together in duration buckets, so a short request never waits behind a "
        "long one. Binds 127.0.0.1 unless --host says otherwise.",
    )
    p.add_argument("checkpoint", type=Path, help="checkpoint folder (or a run folder: its latest checkpoint)")
    p.add_argument("--tokenizer", type=Path, default=None, help="tokenizer folder (default: found from CKPT)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' on API requests")
    p.add_argument("--model-id", default=None, help="the name /v1/models reports (default: the folder name)")
    p.add_argument("--max-upload-mb", type=float, default=25.0, help="largest upload (413 past it)")
    p.add_argument("--chunk-s", type=float, default=30.0, help="longest chunk of a long recording (seconds)")
    p.add_argument(
        "--max-batch",
        type=int,
        default=SchedulerConfig.max_batch,
        help="chunks per batch (1: no batching, one request at a time in arrival order)",
    )
    p.add_argument(
        "--max-batch-s",
        type=float,
        default=SchedulerConfig.max_batch_s,
        help="seconds of model input per batch (a padded Whisper chunk counts its 30 s window); "
        "bounds how long a batch keeps a new request waiting",
    )
    p.add_argument(
        "--max-wait-ms",
        type=float,
        default=SchedulerConfig.max_wait_s * 1000,
        help="how long a lone chunk waits for others to share its batch",
    )
    p.add_argument(
        "--max-queue",
        type=int,
        default=SchedulerConfig.max_queue,
        help="waiting chunks beyond which requests get 429 with Retry-After",
    )
    p.add_argument(
        "--drain-s",
        type=float,
        default=60.0,
        help="on Ctrl-C/SIGTERM: how long in-flight requests may take to finish",
    )
    decoding = p.add_argument_group("decoding")
    add_config_arguments(
        decoding,
        DecodeConfig,
        exclude=("batch_size", "beam_size", "length_penalty", "nbest", "num_workers", "progress"),
    )
    p.set_defaults(func=serve_cmd)


def serve_cmd(args: argparse.Namespace) -> int:
    import uvicorn

    from fastaed.cli.config_args import config_from_args
    from fastaed.cli.decode import _checkpoint
    from fastaed.decode.transcribe import DecodeConfig, Transcriber
    from fastaed.serve.app import ServeConfig, Server
    from fastaed.serve.scheduler import SchedulerConfig

    try:
        scheduler = SchedulerConfig(
            max_batch=args.max_batch,
            max_batch_s=args.max_batch_s,
            max_wait_s=args.max_wait_ms / 1000,
            max_queue=args.max_queue,
        )
    except ValueError as e:
        raise UsageError(str(e)) from None
    if not 0 < args.port < 65536:
        raise UsageError(f"--port {args.port}: expected 1-65535")
    checkpoint = _checkpoint(args.checkpoint)
    decode = config_from_args(DecodeConfig, args, batch_size=max(args.max_batch, 1), progress=False)
    transcriber = Transcriber(checkpoint, decode, args.tokenizer)
    model_id = args.model_id or checkpoint.resolve().name
    config = ServeConfig(model_id, args.api_key, args.max_upload_mb, args.chunk_s)
    server = Server(transcriber, config, scheduler)
    if args.host not in ("127.0.0.1", "localhost", "::1") and not args.api_key:
        print(
            f"warning: listening on {args.host} without --api-key: anyone who reaches it can use it",
            file=sys.stderr,
        )
    print(
        f"fastaed serve: {model_id} ({transcriber.family}, {transcriber.device.type}) on "
        f"http://{args.host}:{args.port}/v1  (batch up to {scheduler.max_batch})",
        flush=True,
    )
    uvicorn.run(
        server.app(),
        host=args.host,
        port=args.port,
        log_level="warning",
        timeout_graceful_shutdown=args.drain_s,
    )
    return 0
