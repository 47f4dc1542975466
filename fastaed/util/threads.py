"""How torch's OpenMP threads wait: fastaed entry points set it before torch loads (libgomp reads it once)."""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping, Sequence

# Training, profiling, data work: OpenMP threads that wait by sleeping, not spinning. torch's CPU ops run as
# OpenMP parallel regions with a barrier at the end of each; libgomp's default waits there by spinning ~300k
# iterations before it sleeps. On a machine whose cores other processes also use, the thread that arrives
# first burns its time slice spinning while its partner waits for a core, so every region costs a scheduler
# slice: the many small steps of `fastaed batch-sizes` then took ~50x their quiet time under load 4-8 on 2
# cores (perf: ~80% of the profile's CPU time inside libgomp's spin loop) and a training step ~18x. Sleeping
# waits cost nothing measurable there on a quiet machine (a tiny-flash training step 0.73 vs 0.74 s).
OMP_WAIT_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}
WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")  # a user who sets either keeps their own

# Decoding: a short spin, then sleep. A batch-1 decoding step is hundreds of tiny parallel regions, and waking
# a sleeping thread for each cost ~20% of tiny.en's batch-1 speed on a quiet machine (ad hoc, 28 real clips:
# RTFx ~5.0 sleeping vs ~6.0 spinning in fp32, ~7.5 vs ~9.5 int8). 20k iterations (tens of microseconds)
# kept that speed, and with two busy processes on the 2 cores stayed level with sleeping waits in fp32
# (2.6 vs 2.7) where libgomp's default spin fell to 1.4-1.9.
DECODE_WAIT_ENV = {"GOMP_SPINCOUNT": "20000"}
DECODING_COMMANDS = frozenset({
    "transcribe", "eval", "serve", "bench whisper", "bench nemo", "bench breakdown", "bench step-compile",
    "bench rtfx", "bench longform", "bench serve",
})  # fmt: skip


def wait_policy_for(argv: Sequence[str]) -> dict[str, str]:
    """The OpenMP wait settings for the command named by ``argv`` (the words after ``fastaed``)."""
    words = [w for w in argv if not w.startswith("-")][:2]
    decoding = bool(words) and (words[0] in DECODING_COMMANDS or " ".join(words) in DECODING_COMMANDS)
    return DECODE_WAIT_ENV if decoding else OMP_WAIT_ENV


def set_thread_wait_policy(
    environ: MutableMapping[str, str] = os.environ, argv: Sequence[str] | None = None
) -> bool:
    """Set the wait policy of the command in ``argv`` (default: this process's arguments; see
    :func:`wait_policy_for`); False when the user chose a policy or torch is already imported (its OpenMP
    runtime has read the environment: this process keeps its own)."""
    if any(k in environ for k in WAIT_VARIABLES):
        return False
    # Also inherited by data-loader workers and any subprocess.
    environ.update(wait_policy_for(sys.argv[1:] if argv is None else argv))
    return "torch" not in sys.modules


def wait_settings(environ: MutableMapping[str, str] = os.environ) -> dict[str, str | None]:
    """The OpenMP wait variables in effect (benchmarks record them; a peer subprocess inherits them)."""
    return {k: environ.get(k) for k in WAIT_VARIABLES}
