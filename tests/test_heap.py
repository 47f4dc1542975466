"""reuse_freed_memory: a freed large tensor stays in the process's heap for the next one of its size."""

import ctypes
import subprocess
import sys

import pytest


def _glibc_with_mallinfo2() -> bool:
    """glibc >= 2.33 (what the probe reads the heap with)."""
    try:
        return sys.platform.startswith("linux") and hasattr(ctypes.CDLL("libc.so.6"), "mallinfo2")
    except OSError:  # no libc.so.6: not glibc
        return False


# In one fresh process: free heap bytes (glibc's mallinfo2().fordblks) after a 64 MB tensor is freed, with
# glibc's defaults, then again after reuse_freed_memory().
PROBE = """
import ctypes, torch
from fastaed.util.heap import reuse_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
                 "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2

def free_after_a_64mb_tensor():
    x = torch.ones(16 << 20)
    del x
    return libc.mallinfo2().fordblks

default = free_after_a_64mb_tensor()
applied = reuse_freed_memory()
print(default, int(applied), free_after_a_64mb_tensor())
"""


@pytest.mark.skipif(not _glibc_with_mallinfo2(), reason="glibc >= 2.33's malloc")
def test_freed_large_tensor_stays_in_the_heap_for_reuse():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    default_kept, applied, kept = (int(x) for x in out.stdout.split())
    assert default_kept < 64 << 20, default_kept  # glibc's default returned it to the kernel (munmap)
    assert applied == 1
    assert kept >= 64 << 20, kept  # now the freed tensor is free memory of the heap, ready for the next one
