"""The CLI makes OpenMP threads sleep, not spin, when they wait (fastaed/cli/main.py: OMP_WAIT_ENV), before
torch loads its OpenMP runtime: on a busy machine spinning made `fastaed batch-sizes` ~50x slower."""

import subprocess
import sys

from fastaed.cli.main import OMP_WAIT_ENV, set_thread_wait_policy

# main() with build_parser replaced by a probe: the policy as the subcommand imports (and torch) would see it.
PROBE = """
import os, sys
from fastaed.cli import main as m
def probe():
    print(os.environ.get("OMP_WAIT_POLICY"), "torch" in sys.modules)
    sys.exit(0)
m.build_parser = probe
m.main([])
"""


def _probe(env_extra: dict[str, str]) -> str:
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(env_extra)
    cmd = [sys.executable, "-c", PROBE]
    return subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout.strip()


def test_cli_sets_passive_wait_before_torch_loads():
    assert _probe({}) == "PASSIVE False"


def test_cli_keeps_the_users_policy():
    assert _probe({"OMP_WAIT_POLICY": "ACTIVE"}) == "ACTIVE False"


def test_set_thread_wait_policy_leaves_a_chosen_policy_alone():
    env: dict[str, str] = {}
    set_thread_wait_policy(env)
    assert env == OMP_WAIT_ENV == {"OMP_WAIT_POLICY": "PASSIVE"}
    for chosen in ({"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "10000"}):
        env = dict(chosen)
        assert set_thread_wait_policy(env) is False
        assert env == chosen
