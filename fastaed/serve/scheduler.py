"""Cross-request dynamic batching: chunks of every request in duration buckets, batches formed by one thread.

Every request is cut into chunks (``ChunkedDecoder.prepare``: a clip that fits the model's window is one
chunk, a longer recording is cut at its pauses). Chunks wait in duration buckets. One worker thread owns the
model and repeats:

1. wait until a chunk is waiting, then up to ``max_wait_s`` for more to arrive (requests that come together
   are batched together);
2. pick the request served least recently (so a 3 s clip never waits behind the thirty chunks of a
   10-minute file: it is served at the next batch), and its bucket;
3. fill a batch from that bucket, oldest chunks first and from any request, up to ``max_batch`` rows and
   ``max_batch_s`` seconds of work (a padded Whisper row costs its whole 30 s window, so this also bounds
   how long one batch keeps a newcomer waiting);
4. decode it (``ChunkedDecoder.decode_rows``); a request whose chunks are all decoded is finished and its
   future resolved.

``max_batch=1`` turns batching off: one chunk at a time, requests strictly in arrival order (the
one-at-a-time server, on the same code). A request can be cancelled (its client went away): its waiting
chunks leave the queue. ``max_queue`` bounds the waiting chunks: beyond it ``submit`` raises
:class:`QueueFull` (the server answers 429).
"""

from __future__ import annotations

import bisect
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

from fastaed.decode.chunked import ChunkedDecoder, PendingFile
from fastaed.decode.segments import FileTranscript

BUCKET_EDGES_S = (2.0, 5.0, 10.0, 20.0)  # chunk durations; the last bucket holds everything longer


class QueueFull(RuntimeError):
    """Too many chunks are waiting; ``retry_after_s`` estimates when there will be room."""

    def __init__(self, waiting: int, retry_after_s: float):
        super().__init__(f"{waiting} chunks are waiting to be decoded: try again in {retry_after_s:.0f} s")
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class SchedulerConfig:
    max_batch: int = 16  # rows per batch (1: no batching, requests one at a time in arrival order)
    max_batch_s: float = 60.0  # seconds of work per batch (a padded row counts its whole window): two
    # padded Whisper windows keep a newcomer's wait near a second on 2 cores (at 120 s, four: 2.6 s measured)
    max_wait_s: float = 0.01  # how long a lone chunk waits for company
    max_queue: int = 512  # waiting chunks beyond which requests are refused

    def __post_init__(self) -> None:
        if self.max_batch < 1 or self.max_queue < 1 or self.max_batch_s <= 0 or self.max_wait_s < 0:
            raise ValueError(f"scheduler settings out of range: {self}")


@dataclass
class Job:
    """One request's file in the scheduler."""

    pending: PendingFile
    word_timestamps: bool
    future: Future = field(default_factory=Future)
    arrived: float = field(default_factory=time.monotonic)
    last_served: float = 0.0  # when a batch last held one of its chunks (0: never)
    cancelled: bool = False
    number: int = 0


@dataclass(frozen=True)
class BatchRecord:
    """What the metrics keep of a finished batch."""

    rows: int
    audio_s: float
    seconds: float


class BatchScheduler:
    """Owns the decoder: ``submit`` a prepared file, get a future of its transcript."""

    def __init__(
        self,
        decoder: ChunkedDecoder,
        config: SchedulerConfig,
        on_batch: Callable[[BatchRecord], None] | None = None,
    ):
        self.decoder, self.config, self.on_batch = decoder, config, on_batch
        self._buckets: list[deque[tuple[Job, int]]] = [deque() for _ in range(len(BUCKET_EDGES_S) + 1)]
        self._numbers = itertools.count()
        self._lock = threading.Condition()
        self._stop = False
        self._seconds_per_row = 0.5  # running estimate for Retry-After
        self._thread = threading.Thread(target=self._run, name="fastaed-decoder", daemon=True)
        self._thread.start()

    # ---- called from request handlers ---------------------------------------------------------------
    @property
    def waiting(self) -> int:
        with self._lock:
            return sum(len(b) for b in self._buckets)

    def submit(self, pending: PendingFile, word_timestamps: bool = False) -> Job:
        job = Job(pending, word_timestamps)
        if not pending.chunks:  # no speech: nothing to decode
            job.future.set_result(self.decoder.finish(pending, word_timestamps=word_timestamps))
            return job
        with self._lock:
            waiting = sum(len(b) for b in self._buckets)
            if waiting + len(pending.chunks) > self.config.max_queue:
                batches = waiting / self.config.max_batch + 1
                raise QueueFull(waiting, max(1.0, batches * self._seconds_per_row * self.config.max_batch))
            job.number = next(self._numbers)
            for j, piece in enumerate(pending.pieces):
                self._buckets[self._bucket(len(piece))].append((job, j))
            self._lock.notify()
        return job

    def cancel(self, job: Job) -> None:
        """Drop the job's waiting chunks (a batch already running finishes, its result is discarded)."""
        with self._lock:
            job.cancelled = True
            self._drop(job)
        if not job.future.done():
            job.future.cancel()

    def close(self, timeout_s: float = 30.0) -> None:
        """Stop after the chunks already submitted are decoded (the server drains before this)."""
        with self._lock:
            self._stop = True
            self._lock.notify()
        self._thread.join(timeout_s)

    # ---- the worker thread ----------------------------------------------------------------------------
    def _bucket(self, samples: int) -> int:
        return bisect.bisect_left(BUCKET_EDGES_S, samples / self.decoder.sample_rate)

    def _row_work_s(self, samples: int) -> float:
        """Seconds of model input a row costs: its own length, or the whole window for padded input."""
        seconds = samples / self.decoder.sample_rate
        return self.decoder.window_s if self.decoder.padded_input else seconds

    def _next_batch(self) -> list[tuple[Job, int]]:
        """Called with the lock held and at least one chunk waiting."""
        cfg = self.config
        heads = [(b[0][0], i) for i, b in enumerate(self._buckets) if b]  # the oldest chunk of each bucket
        if cfg.max_batch == 1:  # no batching: strictly first come, first served
            job, index = min(heads, key=lambda h: (h[0].arrived, h[0].number))
        else:  # the request served least recently, then the one that came first
            job, index = min(heads, key=lambda h: (h[0].last_served, h[0].arrived, h[0].number))
        bucket = self._buckets[index]
        batch = [bucket.popleft()]  # the chosen request's chunk (the head of its bucket), then the oldest
        work = self._row_work_s(len(batch[0][0].pending.pieces[batch[0][1]]))
        while bucket and len(batch) < cfg.max_batch:
            next_work = self._row_work_s(len(bucket[0][0].pending.pieces[bucket[0][1]]))
            if work + next_work > cfg.max_batch_s:
                break
            batch.append(bucket.popleft())
            work += next_work
        return batch

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._stop and not any(self._buckets):
                    self._lock.wait()
                if not any(self._buckets):
                    return  # stopped and drained
            if self.config.max_wait_s:
                time.sleep(self.config.max_wait_s)  # let requests arriving together share the batch
            with self._lock:
                if not any(self._buckets):
                    continue
                batch = self._next_batch()
            self._decode(batch)

    def _decode(self, batch: list[tuple[Job, int]]) -> None:
        start = time.perf_counter()
        try:
            self.decoder.decode_rows([(job.pending, j) for job, j in batch])
        except Exception as err:  # the model failed: every request in the batch gets the error
            for job in {id(j): j for j, _ in batch}.values():
                self._fail(job, err)
            return
        seconds = time.perf_counter() - start
        self._seconds_per_row = 0.8 * self._seconds_per_row + 0.2 * seconds / len(batch)
        now = time.monotonic()
        audio = sum(len(job.pending.pieces[j]) for job, j in batch) / self.decoder.sample_rate
        if self.on_batch is not None:
            self.on_batch(BatchRecord(len(batch), audio, seconds))
        for job in {id(j): j for j, _ in batch}.values():
            job.last_served = now
            if job.pending.done and not job.cancelled:
                self._resolve(job)

    def _resolve(self, job: Job) -> None:
        try:
            result: FileTranscript = self.decoder.finish(job.pending, word_timestamps=job.word_timestamps)
        except Exception as err:
            self._fail(job, err)
            return
        if not job.future.done():
            job.future.set_result(result)

    def _fail(self, job: Job, err: Exception) -> None:
        with self._lock:
            self._drop(job)
        if not job.future.done():
            job.future.set_exception(err)

    def _drop(self, job: Job) -> None:
        """Take the job's waiting chunks out of every bucket (called with the lock held)."""
        for bucket in self._buckets:
            kept = [(j, k) for j, k in bucket if j is not job]
            bucket.clear()
            bucket.extend(kept)
