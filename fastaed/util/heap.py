"""Keep freed memory for reuse: CPU inference allocates the same large tensors batch after batch.

glibc's malloc serves every allocation above its mmap threshold (at most 32 MiB) with a fresh ``mmap`` and
returns it to the kernel on ``free``; the next tensor of that size then page-faults through every 4 KiB
page, and the kernel zeroes each one. Batched Whisper decoding lives above that size (tiny.en at batch 16:
a (16, 1500, 384) float32 activation is 37 MB, the MLP's hidden 147 MB), so most of its element-wise work
was page faults: filling a fresh 37 MB tensor took 16.8 ms, filling it again 1.5 ms, and int8 batch-16
decoding ran ~1.5x faster with freed memory kept (2 cores; ``bench whisper`` records the end-to-end cells).

:func:`reuse_freed_memory` makes this process serve large requests from its heap and keep up to
:data:`KEEP_FREE_BYTES` of freed memory there instead of giving it back. The cost: the process keeps its
peak working set (what a GPU caching allocator does too), so it is applied to inference only, where the
batch shapes repeat, not to training.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

# mallopt(3) parameters (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
# Freed memory at the top of the heap kept before trimming: 1 GiB covers Whisper base's batch-16 encoder.
KEEP_FREE_BYTES = 1 << 30

_applied = False


def reuse_freed_memory() -> bool:
    """Serve large allocations from the heap and keep freed memory for reuse (glibc only; once per
    process). False where the C library is not glibc (musl, macOS, Windows): nothing changes there."""
    global _applied
    if _applied:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # Order matters: no new mmap'd chunks first, then a trim threshold that keeps the freed heap.
    _applied = bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, KEEP_FREE_BYTES))
    return _applied
