"""An independent check of the CPU meter: the peak growth of the process's resident memory during a step.

:func:`rss_peaks` runs real training steps in a fresh Python process and reads the kernel's count of the
pages it holds, not the allocator: before each measured step the peak resident size (``VmHWM``) is reset
(``/proc/self/clear_refs``), and the step's peak is ``VmHWM`` after it minus the resident size before it,
plus the weights, buffers and AdamW state counted by storage (resident before the step began).

glibc would otherwise keep freed memory in its heap and reuse it, so the resident size would follow
malloc's cache rather than what is alive (the CPU analog of CUDA's reserved vs allocated memory). The
child runs with ``MALLOC_MMAP_THRESHOLD_`` at 16 KiB: every larger block gets its own mapping, returned to
the kernel when freed. Each measured step follows an unmeasured step of the same shape, so one-off caches
(the mel filterbank, kernel set-ups) are not charged to it. Linux only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

MMAP_THRESHOLD = 16 << 10  # bytes: blocks above it are mapped on their own and unmapped when freed


def _status_bytes(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024  # reported in kB
    raise RuntimeError(f"{key} not in /proc/self/status")


def _measure(doc: dict[str, Any]) -> list[int]:
    """In the child: build the step as the profiler does, then the peak of each (B, shape) in ``doc``."""
    import torch

    from fastaed.model import ModelConfig, build_model
    from fastaed.train.profile.cpu_meter import resident_bytes
    from fastaed.train.profile.memory import Shape, SyntheticStep

    torch.manual_seed(doc["seed"])
    step = SyntheticStep(build_model(ModelConfig.from_dict(doc["model"])), "cpu", seed=doc["seed"])
    step.warm_up(Shape(0.5, 8))
    out = []
    for b, duration, out_len in doc["trials"]:
        shape = Shape(float(duration), int(out_len))
        step(step.batch(b, shape))
        before = _status_bytes("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current resident size
        step(step.batch(b, shape))
        out.append(resident_bytes(step) + _status_bytes("VmHWM") - before)
    return out


def rss_peaks(model_config: Any, trials: Sequence[tuple[int, float, int]], seed: int = 0) -> list[int]:
    """Peak bytes of one step per (batch size, duration s, U) in ``trials``, by resident memory growth."""
    doc = {"model": model_config.to_dict(), "trials": [list(t) for t in trials], "seed": seed}
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD)}
    done = subprocess.run(
        [sys.executable, "-m", "fastaed.train.profile.rss"],
        input=json.dumps(doc), capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"resident-memory measurement failed:\n{done.stderr[-2000:]}")
    return [int(v) for v in json.loads(done.stdout.strip().splitlines()[-1])]


if __name__ == "__main__":
    print(json.dumps(_measure(json.loads(sys.stdin.read()))))
