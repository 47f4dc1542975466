"""reuse_freed_memory: a freed large tensor stays in the process's heap for the next one of its size."""

import subprocess
import sys

import pytest

# Free heap bytes (glibc's mallinfo2().fordblks) after a 64 MB tensor is freed, printed by a fresh process.
PROBE = """
import ctypes, sys, torch
from fastaed.util.heap import reuse_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
                 "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
applied = reuse_freed_memory() if sys.argv[1] == "reuse" else False
x = torch.ones(16 << 20)  # 64 MB
del x
print(int(applied), libc.mallinfo2().fordblks)
"""


def _free_heap_after_free(mode: str) -> tuple[bool, int]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    applied, free = out.stdout.split()
    return applied == "1", int(free)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_freed_large_tensor_stays_in_the_heap_for_reuse():
    try:
        applied, kept = _free_heap_after_free("reuse")
        _, default_kept = _free_heap_after_free("default")
    except (subprocess.CalledProcessError, AttributeError) as err:  # not glibc >= 2.33 (no mallinfo2)
        pytest.skip(f"no glibc mallinfo2: {err}")
    assert applied
    assert kept >= 64 << 20, kept  # the freed tensor is free memory of the heap, ready for the next one
    assert default_kept < 64 << 20, default_kept  # glibc's default returned it to the kernel (munmap)
