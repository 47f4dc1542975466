"""The server's counters, rendered in Prometheus' text format (``GET /metrics``).

Thread-safe: request handlers (event loop) and the decoder thread both record.
"""

from __future__ import annotations

import bisect
import threading
from collections import Counter
from collections.abc import Callable, Sequence

LATENCY_BUCKETS_S = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


class Histogram:
    def __init__(self, bounds: Sequence[float]):
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def lines(self, name: str) -> list[str]:
        out, running = [], 0
        for bound, count in zip(self.bounds, self.counts):
            running += count
            out.append(f'{name}_bucket{{le="{bound:g}"}} {running}')
        out.append(f'{name}_bucket{{le="+Inf"}} {sum(self.counts)}')
        out.append(f"{name}_sum {self.sum:.6f}")
        out.append(f"{name}_count {sum(self.counts)}")
        return out


class Metrics:
    def __init__(self, queue_depth: Callable[[], int]):
        self._lock = threading.Lock()
        self._queue_depth = queue_depth
        self.requests: Counter[tuple[str, int]] = Counter()  # (endpoint, status) -> count
        self.audio_seconds = 0.0
        self.latency = Histogram(LATENCY_BUCKETS_S)
        self.batch_rows = Histogram(BATCH_BUCKETS)
        self.batches = 0
        self.decode_seconds = 0.0

    def request(self, endpoint: str, status: int, latency_s: float, audio_s: float = 0.0) -> None:
        with self._lock:
            self.requests[(endpoint, status)] += 1
            self.audio_seconds += audio_s
            if status == 200:
                self.latency.observe(latency_s)

    def batch(self, rows: int, seconds: float) -> None:
        with self._lock:
            self.batches += 1
            self.batch_rows.observe(rows)
            self.decode_seconds += seconds

    def render(self) -> str:
        with self._lock:
            lines = [
                "# HELP fastaed_requests_total Requests answered, by endpoint and HTTP status.",
                "# TYPE fastaed_requests_total counter",
            ]
            for (endpoint, status), n in sorted(self.requests.items()):
                lines.append(f'fastaed_requests_total{{endpoint="{endpoint}",status="{status}"}} {n}')
            lines += [
                "# HELP fastaed_audio_seconds_total Seconds of audio transcribed.",
                "# TYPE fastaed_audio_seconds_total counter",
                f"fastaed_audio_seconds_total {self.audio_seconds:.3f}",
                "# HELP fastaed_queue_depth Chunks waiting to be decoded.",
                "# TYPE fastaed_queue_depth gauge",
                f"fastaed_queue_depth {self._queue_depth()}",
                "# HELP fastaed_batches_total Batches decoded.",
                "# TYPE fastaed_batches_total counter",
                f"fastaed_batches_total {self.batches}",
                "# HELP fastaed_decode_seconds_total Seconds the decoder thread spent on batches.",
                "# TYPE fastaed_decode_seconds_total counter",
                f"fastaed_decode_seconds_total {self.decode_seconds:.3f}",
                "# HELP fastaed_batch_rows Chunks per decoded batch.",
                "# TYPE fastaed_batch_rows histogram",
                *self.batch_rows.lines("fastaed_batch_rows"),
                "# HELP fastaed_request_latency_seconds Time from a request's arrival to its answer (200s).",
                "# TYPE fastaed_request_latency_seconds histogram",
                *self.latency.lines("fastaed_request_latency_seconds"),
            ]
        return "\n".join(lines) + "\n"
