"""scripts/gpu_check.sh runs end to end on CPU (test preset, tiny bins, 2 steps, tiny RTFx run): every command
the GPU check uses works, its outputs land in $OUT, and its summary passes."""

import json
import os
import subprocess
import sys
from pathlib import Path

from fastaed.sampling.bins import Bins

REPO = Path(__file__).resolve().parents[2]


def test_gpu_check_script_runs_on_cpu(tmp_path):
    bins = tmp_path / "bins.json"
    bins.write_text(Bins(duration_edges=[4.0, 40.0], max_u=[[40, 80], [200, 500]], max_tps=None).to_json())
    out = tmp_path / "out"
    env = dict(os.environ, OUT=str(out), MODEL="test", DEVICE="cpu", DTYPE="fp32", BUDGET="0.3", STEPS="2")
    env |= {"UTTERANCES": "1500", "COMPARE": "2", "BINS": str(bins), "PYTHON": sys.executable}
    env |= {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    env |= {"RTFX_MODELS": "--flash test --balanced test", "RTFX_UTTS": "2", "RTFX_BATCH_SIZES": "2"}
    env |= {"RTFX_DECODER": "--decoder-batch-sizes 1 --decoder-frames 12 --decoder-tokens 4"}
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "gpu_check.sh")], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "all sections passed" in proc.stdout
    assert "==== batch sizes: summary" in proc.stdout and "target min_fill" in proc.stdout
    profile = json.loads((out / "profile_test.json").read_text())
    assert profile["identity"]["model_name"] == "test" and len(profile["batch_sizes"]) == 4
    bench = json.loads((out / "bench_batch_sizes.json").read_text())
    assert bench["runs"]["profile"]["steps"] == 2 and bench["targets"]["profile_run_no_oom"]["pass"]
    rtfx = json.loads((out / "rtfx.json").read_text())
    assert set(rtfx["flash_vs_balanced"]) == {"batch_2"} and rtfx["decoders"][0]["identical_tokens"]
    logs = ("env.txt", "batch_sizes.log", "bench_batch_sizes.log", "batch_sizes_summary.json", "rtfx.log")
    for name in logs:
        assert (out / name).is_file(), name
