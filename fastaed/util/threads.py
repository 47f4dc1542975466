"""OpenMP threads that wait by sleeping, not spinning: fastaed entry points set this before torch loads."""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping

# OpenMP threads that wait by sleeping, not spinning (set before torch loads libgomp, which reads it once).
# torch's CPU ops run as OpenMP parallel regions with a barrier at the end of each; libgomp's default waits
# there by spinning ~300k iterations before it sleeps. On a machine whose cores other processes also use,
# the thread that arrives first burns its time slice spinning while its partner waits for a core, so every
# region costs a scheduler slice: the many small steps of `fastaed batch-sizes` then took ~50x their quiet
# time under load 4-8 on 2 cores (perf: ~80% of the profile's CPU time inside libgomp's spin loop) and a
# training step ~18x. Sleeping waits cost nothing measurable on a quiet machine (a tiny-flash training step
# 0.73 vs 0.74 s) and under load leave the cores to whoever has work, so every stage slows only by its fair
# share of the cores. A user's own OMP_WAIT_POLICY or GOMP_SPINCOUNT is kept.
OMP_WAIT_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}


def set_thread_wait_policy(environ: MutableMapping[str, str] = os.environ) -> bool:
    """Make OpenMP threads sleep when they wait (see OMP_WAIT_ENV); False when the user chose a policy or
    torch is already imported (its OpenMP runtime has read the environment: this process keeps its own)."""
    if "OMP_WAIT_POLICY" in environ or "GOMP_SPINCOUNT" in environ:
        return False
    environ.update(OMP_WAIT_ENV)  # also inherited by data-loader workers and any subprocess
    return "torch" not in sys.modules
