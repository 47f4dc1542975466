"""The CLI sets how OpenMP threads wait before torch loads its OpenMP runtime (fastaed/util/threads.py): they
sleep (on a busy machine spinning made `fastaed batch-sizes` ~50x slower), except in decoding commands, which
spin briefly first (sleeping cost batch-1 decoding ~20% on a quiet machine)."""

import subprocess
import sys

from fastaed.cli.main import OMP_WAIT_ENV, set_thread_wait_policy
from fastaed.util.threads import DECODE_WAIT_ENV, wait_policy_for

# main() with build_parser replaced by a probe: the policy as the subcommand imports (and torch) would see it.
PROBE = """
import os, sys
from fastaed.cli import main as m
def probe():
    print(os.environ.get("OMP_WAIT_POLICY"), os.environ.get("GOMP_SPINCOUNT"), "torch" in sys.modules)
    sys.exit(0)
m.build_parser = probe
m.main(sys.argv[1:])
"""


def _probe(env_extra: dict[str, str], *argv: str) -> str:
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(env_extra)
    cmd = [sys.executable, "-c", PROBE, *argv]
    return subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout.strip()


def test_cli_sets_passive_wait_before_torch_loads():
    assert _probe({}) == "PASSIVE None False"
    assert _probe({}, "batch-sizes", "--help") == "PASSIVE None False"


def test_cli_decoding_commands_spin_briefly_before_torch_loads():
    assert _probe({}, "transcribe", "a.wav") == "None 20000 False"
    assert _probe({}, "bench", "whisper", "--model", "base") == "None 20000 False"


def test_cli_keeps_the_users_policy():
    assert _probe({"OMP_WAIT_POLICY": "ACTIVE"}) == "ACTIVE None False"
    assert _probe({"GOMP_SPINCOUNT": "7"}, "eval") == "None 7 False"


def test_decoding_commands_are_told_apart_from_training_and_other_benchmarks():
    for argv in (
        ["eval", "--manifest", "m.jsonl"],
        ["serve", "ckpt"],
        ["bench", "nemo"],
        ["bench", "breakdown"],
    ):
        assert wait_policy_for(argv) == DECODE_WAIT_ENV, argv
    for argv in ([], ["train", "--config", "c.yaml"], ["bench", "finetune"], ["adapt", "x"], ["bench"]):
        assert wait_policy_for(argv) == OMP_WAIT_ENV, argv


def test_set_thread_wait_policy_leaves_a_chosen_policy_alone():
    env: dict[str, str] = {}
    set_thread_wait_policy(env)
    assert env == OMP_WAIT_ENV == {"OMP_WAIT_POLICY": "PASSIVE"}
    for chosen in ({"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "10000"}):
        env = dict(chosen)
        assert set_thread_wait_policy(env) is False
        assert env == chosen
