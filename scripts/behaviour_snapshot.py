"""Record what fastaed *does* through its CLI, so a refactor can be shown to change nothing.

    python scripts/behaviour_snapshot.py OUT.json [--workdir DIR]

Trains the `test` preset (with a dev set, CTC, SpecAugment, checkpoints) and the `tiny-flash` preset on a
tiny tone corpus for a few steps, then transcribes with the trained `test` model (greedy and beam search,
n-best) and evaluates it. Writes per-step losses and batch hashes, dev WER/CER, every hypothesis and the
eval numbers to OUT.json. Two snapshots of one commit are identical; compare before/after with
``diff <(jq -S . a.json) <(jq -S . b.json)`` or ``python scripts/behaviour_snapshot.py --compare A B``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Fields that are measurements of the machine, not behaviour.
TIMING = {"audio_s_per_s", "tokens_per_s", "peak_mem_mb", "step_time_s", "data_time_s", "lr_time", "rtfx"}


def run(*args: str, cwd: Path) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    subprocess.run([sys.executable, "-m", "fastaed", *args], cwd=cwd, env=env, check=True)


def train_steps(run_dir: Path) -> list[dict]:
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return strip_timing(records)


def snapshot(workdir: Path) -> dict:
    sys.path.insert(0, str(REPO))
    from fastaed.testing import train_tiny_tokenizer, write_tiny_corpus

    manifest = write_tiny_corpus(workdir / "data", num=12)
    train_tiny_tokenizer(workdir / "tokenizer")
    data = [f"data.train_manifests=[{manifest}]", f"data.tokenizer={workdir / 'tokenizer'}"]
    out: dict = {}
    test_run = workdir / "run-test"
    run(
        "train", "--config", str(REPO / "configs/train_test.yaml"), *data, f"data.dev_manifest={manifest}",
        f"runtime.out_dir={test_run}", "optim.max_steps=160", "optim.lr=3e-3", "runtime.eval_every=80",
        "runtime.ckpt_every=80",
        "--resume", "none", cwd=workdir,
    )  # fmt: skip
    out["train_test"] = train_steps(test_run)
    flash_run = workdir / "run-flash"
    run(
        "train", "--config", str(REPO / "configs/train_tiny_flash.yaml"), *data, "data.dev_manifest=null",
        f"runtime.out_dir={flash_run}", "optim.max_steps=6", "runtime.ckpt_every=0", "runtime.threads=1",
        "sampler.max_duration=8.0", "sampler.num_buckets=3", "sampler.num_subbuckets=2",
        "runtime.progress=false", "--resume", "none", cwd=workdir,
    )  # fmt: skip
    out["train_flash"] = train_steps(flash_run)
    audio = sorted(str(p) for p in (workdir / "data" / "audio").glob("*.wav"))
    # The barely trained `test` model mostly ends at once; the 6-step tiny-flash one runs to its limits.
    for model, run_dir in (("test", test_run), ("flash", flash_run)):
        for name, extra in (
            ("greedy", []),
            ("beam", ["--beam-size", "3", "--nbest", "2", "--length-penalty", "0.6"]),
            ("greedy_b1", ["--batch-size", "1"]),
        ):
            hyps = workdir / f"hyps-{model}-{name}.jsonl"
            run("transcribe", str(run_dir), *audio, "--out", str(hyps), "--no-progress", *extra, cwd=workdir)
            out[f"transcribe_{model}_{name}"] = [json.loads(x) for x in hyps.read_text().splitlines()]
    hyps = workdir / "hyps-manifest.jsonl"
    run(
        "transcribe",
        str(test_run),
        "--manifest",
        str(manifest),
        "--out",
        str(hyps),
        "--no-progress",
        cwd=workdir,
    )
    out["transcribe_manifest"] = [json.loads(x) for x in hyps.read_text().splitlines()]
    ev = workdir / "eval.json"
    run("eval", str(test_run), "--manifest", str(manifest), "--json", str(ev), "--no-progress", cwd=workdir)
    out["eval"] = strip_timing(json.loads(ev.read_text()))
    return out


def strip_timing(obj):
    if isinstance(obj, dict):
        return {
            k: strip_timing(v)
            for k, v in obj.items()
            if k not in TIMING and "seconds" not in k and "time" not in k and "machine" not in k
        }
    if isinstance(obj, list):
        return [strip_timing(v) for v in obj]
    return obj


def paths_relative(obj, root: str):
    if isinstance(obj, dict):
        return {k.replace(root, "<work>"): paths_relative(v, root) for k, v in obj.items()}
    if isinstance(obj, list):
        return [paths_relative(v, root) for v in obj]
    if isinstance(obj, str):
        return obj.replace(root, "<work>")
    return obj


def compare(a: Path, b: Path) -> int:
    left, right = json.loads(a.read_text()), json.loads(b.read_text())
    bad = 0
    for key in sorted(set(left) | set(right)):
        if left.get(key) != right.get(key):
            bad += 1
            print(f"DIFFERENT: {key}")
        else:
            print(f"identical: {key} ({len(left[key])} records)")
    return 1 if bad else 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out", type=Path, nargs="?")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--compare", type=Path, nargs=2, default=None)
    args = parser.parse_args()
    if args.compare:
        return compare(*args.compare)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = (args.workdir or Path(tmp)).resolve()
        result = paths_relative(snapshot(workdir), str(workdir))
    args.out.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
