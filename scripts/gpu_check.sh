#!/usr/bin/env bash
# GPU checks for fastaed: one prepared script for a GPU box that has a copy of this tree and no internet.
# Everything it writes goes under $OUT (default /tmp/gpu_out); it installs nothing from the internet.
#
#   bash scripts/gpu_check.sh                      # the real thing: canary-1b-flash, bf16, the GPU's memory
#
# Sections: batch sizes (profile + benchmark, ~5 min on an H100) and RTFx (~1-2 min).
#
# Each section is independent and reports PASS/FAIL without stopping the others; the exit status is 1 if any
# section failed. Knobs (environment): MODEL, DEVICE, DTYPE, BUDGET (GiB | auto), STEPS, UTTERANCES,
# COMPARE (buckets also searched with the OOMptimizer), BINS (a bins JSON; default: the SPEC's 30x4 bins).
# tests/profile/test_gpu_check_script.py runs this very script on CPU with the `test` preset, tiny bins and
# a few steps, so every command in it is exercised without a GPU.
#
# fastaed's pure-Python dependencies (numpy, tqdm, pyyaml, soundfile, sentencepiece, jiwer, matplotlib for
# the PNGs) must be importable. If the box lacks some, put their wheels in $WHEELS (e.g. made elsewhere
# with `pip download -d wheels ...`) and they are installed from there with --no-index.
set -euo pipefail

OUT="${OUT:-/tmp/gpu_out}"
MODEL="${MODEL:-canary-1b-flash}"
DEVICE="${DEVICE:-cuda}"
DTYPE="${DTYPE:-bf16}"
BUDGET="${BUDGET:-auto}"
STEPS="${STEPS:-100}"
UTTERANCES="${UTTERANCES:-200000}"
COMPARE="${COMPARE:-4}"
BINS="${BINS:-}"
WHEELS="${WHEELS:-wheels}"
SECTION_TIMEOUT="${SECTION_TIMEOUT:-330}"  # s per section: a hung section must not eat the others' time

cd "$(dirname "$0")/.."
mkdir -p "$OUT"
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  PY=python3
  if [ -x .venv/bin/python ] && .venv/bin/python -c "import torch" 2>/dev/null; then PY=.venv/bin/python; fi
fi
FAILED=()
section() { echo; echo "==== $* ($(date -u +%H:%M:%S))"; }
run() {  # run NAME CMD...: log to $OUT/NAME.log, record a failure instead of stopping
  local name=$1; shift
  local t0=$SECONDS
  if timeout "$SECTION_TIMEOUT" "$@" > >(tee "$OUT/$name.log") 2> >(tee "$OUT/$name.err" >&2); then
    echo "[$name] ok in $((SECONDS - t0)) s"
  else
    echo "[$name] FAILED (exit $?) after $((SECONDS - t0)) s; see $OUT/$name.err"
    FAILED+=("$name")
  fi
}

# ---- environment -------------------------------------------------------------------------------------------
section "environment"
missing=$("$PY" - <<'PY'
import importlib.util
mods = ["torch", "numpy", "tqdm", "yaml", "soundfile", "sentencepiece", "jiwer", "matplotlib", "safetensors"]
print(" ".join(m for m in mods if importlib.util.find_spec(m) is None))
PY
)
if [ -n "$missing" ] && [ -d "$WHEELS" ]; then
  echo "installing from $WHEELS (no index): $missing"
  "$PY" -m pip install -q --no-index --find-links "$WHEELS" $(echo "$missing" | sed 's/yaml/pyyaml/') || true
fi
# This tree's code, whether or not (or whichever) fastaed is installed: no install step needed.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
FASTAED=("$PY" -m fastaed)
"$PY" - <<'PY' | tee "$OUT/env.txt"
import importlib.util, platform, torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda)
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("gpu", p.name, f"{p.total_memory / 2**30:.1f} GiB")
mods = ["numpy", "tqdm", "yaml", "soundfile", "sentencepiece", "jiwer", "matplotlib", "safetensors"]
print("missing modules:", [m for m in mods if importlib.util.find_spec(m) is None] or "none")
PY
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee -a "$OUT/env.txt" || true
fi

# ==== BEGIN batch sizes (issue: OOM search + memory model + profile) ========================================
# 1. The profile of $MODEL on this GPU: memory model from ~18 probes, one verifying trial per bucket (+ one
#    correction where it left > 5% unused), and the OOMptimizer on $COMPARE buckets for comparison.
# 2. The benchmark on that profile: heuristic (NeMo Canary-1B: 1D, 20 buckets, 360 s, q=15) vs profile, fill
#    per bucket, mean batch size over an epoch, and a $STEPS-step training run each (OOMs counted), giving
#    audio seconds per second and the ratio. Targets: fill >= 85%, mean batch >= 4x, throughput >= 1.8x.
section "batch sizes: profile of $MODEL ($DTYPE, budget $BUDGET)"
BINS_ARGS=()
[ -n "$BINS" ] && BINS_ARGS=(--bins "$BINS")
run batch_sizes "${FASTAED[@]}" batch-sizes --model "$MODEL" --device "$DEVICE" --dtype "$DTYPE" \
  --memory-budget "$BUDGET" ${BINS_ARGS[@]+"${BINS_ARGS[@]}"} --compare-search "$COMPARE" --no-progress \
  --out "$OUT/profile_$MODEL.json" --json "$OUT/batch_sizes_summary.json"

section "batch sizes: benchmark, heuristic vs profile, $STEPS training steps each"
PROFILE_ARGS=()
[ -f "$OUT/profile_$MODEL.json" ] && PROFILE_ARGS=(--profile "$OUT/profile_$MODEL.json")
run bench_batch_sizes "${FASTAED[@]}" bench batch-sizes --model "$MODEL" --device "$DEVICE" --dtype "$DTYPE" \
  --memory-budget "$BUDGET" ${BINS_ARGS[@]+"${BINS_ARGS[@]}"} ${PROFILE_ARGS[@]+"${PROFILE_ARGS[@]}"} \
  --synthetic --utterances "$UTTERANCES" --steps "$STEPS" --warmup 3 --no-progress \
  --json "$OUT/bench_batch_sizes.json"

section "batch sizes: summary"
run batch_sizes_summary "$PY" - "$OUT" <<'PY'
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
ok = True
p = json.loads((out / "batch_sizes_summary.json").read_text())
print(f"profile: {p['buckets']} buckets, fill min {p['min_fill']:.3f} mean {p['mean_fill']:.3f}, memory model "
      f"rms error {p['memory_model_rms_rel_error']:.4f}, {p['trials']} trials, {p['seconds']:.0f} s")
prof = json.loads(next(out.glob("profile_*.json")).read_text())
pred = [(b["predicted_bytes"], b["measured_bytes"]) for b in prof["buckets"] if b["predicted_bytes"]]
errs = [abs(a - m) / m for a, m in pred if m]
print(f"predicted vs measured peak: mean |error| {sum(errs) / len(errs):.2%}, max {max(errs):.2%}")
searched = [(b["batch_size"], b["search_batch_size"]) for b in prof["buckets"] if b["search_batch_size"]]
print("model vs OOMptimizer batch sizes:", searched)
r = json.loads((out / "bench_batch_sizes.json").read_text())
for name, run in r["runs"].items():
    print(f"{name}: epoch mean B {run['epoch_mean_batch_size']:.1f}, {run.get('audio_s_per_s', 0):.1f} audio"
          f" s/s, step {run.get('step_time_s', 0):.3f} s, OOM splits {run.get('oom_splits')}, failed"
          f" {run.get('failed')}, peak reserved/allocated {run.get('reserved_over_allocated')}")
print(f"mean batch ratio {r['mean_batch_ratio']:.2f}x, throughput ratio {r.get('throughput_ratio', 0):.2f}x, "
      f"step time ratio {r.get('step_time_ratio', 0):.2f}x")
run = r["runs"]["profile"]
if run.get("peak_reserved_bytes"):
    budget = r["budget_gib"] * 2**30
    alloc, reserved = run["peak_allocated_bytes"] / budget, run["peak_reserved_bytes"] / budget
    held = run["cuda_ooms"] == 0 and run["alloc_retries"] == 0
    print(f"safety margin {r['safety_margin']:.0%}: over {run['steps']} mixed-bucket steps peak allocated "
          f"{alloc:.1%} and peak reserved {reserved:.1%} of the budget, allocator retries "
          f"{run['alloc_retries']}, CUDA OOMs {run['cuda_ooms']}: {'held' if held else 'too thin?'}")
for k, v in r["targets"].items():
    print(f"target {k}: {v['value']:.3g} {'PASS' if v['pass'] else 'FAIL'}")
    ok &= v["pass"] or k in ("mean_batch_ratio", "throughput_ratio")  # reported; only fill and OOMs gate
sys.exit(0 if ok else 1)
PY
# ==== END batch sizes =========================================================================================

# ==== BEGIN RTFx (issue: fast inference) ======================================================================
# canary-1b-flash vs canary-1b (random weights, 7 forced tokens per second of audio, 2-20 s synthetic speech,
# bf16, batch 128 and 1), and our K/V-cached decoder vs a NeMo-style one (hidden-state cache) at batch 1 and
# 64. Targets: flash >= 3x balanced; ours >= 2x NeMo-style; canary-1b-flash RTFx >= 2x NeMo's H100 1669.
section "RTFx: canary-1b-flash vs canary-1b, K/V cache vs NeMo-style ($DTYPE)"
# RTFX_MODELS / RTFX_DECODER: the CPU test of this script swaps in the tiny `test` preset and small sizes.
run rtfx "${FASTAED[@]}" bench rtfx ${RTFX_MODELS:---gpu-presets --preset-vocab} --device "$DEVICE" \
  --dtype "$DTYPE" --num-utts "${RTFX_UTTS:-384}" --batch-sizes ${RTFX_BATCH_SIZES:-128} \
  ${RTFX_DECODER:---decoder-batch-sizes 1 64} --json "$OUT/rtfx.json"
# ==== END RTFx ===============================================================================================

section "done"
if [ ${#FAILED[@]} -gt 0 ]; then
  echo "FAILED sections: ${FAILED[*]}"
  exit 1
fi
echo "all sections passed; results in $OUT"
