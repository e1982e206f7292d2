#!/usr/bin/env bash
# Device check of the training step on one NVIDIA H200 (at most ~8 minutes), or its CPU path.
#
#   1. bf16-vs-fp32 smoke of one TokenDrift micro-step (170M, L = 256, batch 4; bf16 with
#      XLA attention and with cuDNN flash attention, against float32 at full precision);
#   2. the benchmark of the 170M continuation and TokenDrift steps at length 1024, per-device
#      batch 2 and 8 (no remat) and 32 (remat policy dots_with_no_batch_dims_saveable: the
#      step does not fit in 139 GiB without remat at 32), cuDNN attention, MFU against the
#      dense bf16 peak 989 TFLOP/s and against a measured 8192^3 bf16 matmul, plus the
#      drift + queue share at Q = 1024 and 65536;
#   3. one merged table (printed last; JSON + markdown in $OUT).
#
# The device image has jax, flax, optax, orbax and chex but not grain or ml-collections
# (configs/base.py imports both; transformers is not needed here). Carry them as wheels:
#
#   Once, here (the machine WITHOUT the GPU), in the repository root:
#     echo /.whl/ >> .git/info/exclude
#     bash launch/device_check.sh --fetch-wheels
#   which runs (cp312 manylinux wheels for the device's Python 3.12):
#     python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
#       --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
#       --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl \
#       grain==0.2.18 array_record==0.8.6 portpicker==1.6.0 ml_collections==1.1.0
#   (grain needs array_record and portpicker; their other requirements, absl-py,
#   cloudpickle, etils, numpy, protobuf, psutil and PyYAML, are on the image.)
#
#   Then the device tool's run: command "bash launch/device_check.sh", carry [".whl"],
#   timeout_s 540. The script installs .whl/*.whl into /tmp/site when the folder is there.
#   Results come back from $OUT (smoke.json, bench_small.json, bench_large.json,
#   device_check.json, device_check.md).
#
# CPU path (no GPU; the same stages on the tiny model, seconds to a few minutes):
#     bash launch/device_check.sh --cpu
#
# Environment: PYTHON (default python3), OUT (default ./device_check_out), STAGES (default
# "smoke,small,large"), and per-stage limits SMOKE_S, SMALL_S, LARGE_S in seconds.
set -uo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}
MODE=gpu
case "${1:-}" in
  --cpu) MODE=cpu ;;
  --fetch-wheels) MODE=fetch ;;
  "") ;;
  *) echo "usage: bash launch/device_check.sh [--cpu | --fetch-wheels]" >&2; exit 2 ;;
esac

if [[ $MODE == fetch ]]; then
  exec "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl \
    grain==0.2.18 array_record==0.8.6 portpicker==1.6.0 ml_collections==1.1.0
fi

OUT=${OUT:-$ROOT/device_check_out}
mkdir -p "$OUT"
STAGES=${STAGES:-smoke,small,large}
export PYTHONUNBUFFERED=1
T0=$(date +%s)
stamp() { echo "[device_check +$(( $(date +%s) - T0 ))s] $*"; }

# --- carried wheels ------------------------------------------------------------------------
if compgen -G ".whl/*.whl" > /dev/null; then
  stamp "installing $(ls .whl/*.whl | wc -l) carried wheel(s) into /tmp/site"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || { echo "wheel install failed" >&2; exit 3; }
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
# The project is not pip-installed on the device image (requirements.txt's `-e .`):
# tokendrift_jax and configs import from the repository root instead.
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}

if [[ $MODE == cpu ]]; then
  export JAX_PLATFORMS=cpu
  SIZE=tiny; SMOKE_L=64; SMOKE_B=4; SMOKE_VARIANTS=bfloat16:xla
  LENGTH=128; SMALL_BATCHES=2,8; LARGE_BATCHES=32; STEPS=3; WARMUP=1
  PEAK=(--measure_peak); ATTN=xla
  SMOKE_S=${SMOKE_S:-300}; SMALL_S=${SMALL_S:-600}; LARGE_S=${LARGE_S:-300}
else
  # One GPU: the latency-hiding scheduler is the one XLA flag worth setting (it orders
  # independent work; the collective flags of multi-GPU recipes do nothing here). Let XLA
  # take 94% of the 139 GiB (default 75%) so batch 32 with remat fits.
  export XLA_FLAGS="--xla_gpu_enable_latency_hiding_scheduler=true ${XLA_FLAGS:-}"
  export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.94}
  SIZE=170m; SMOKE_L=256; SMOKE_B=4; SMOKE_VARIANTS=bfloat16:xla,bfloat16:cudnn
  LENGTH=1024; SMALL_BATCHES=2,8; LARGE_BATCHES=32; STEPS=10; WARMUP=2
  PEAK=(--peak_tflops=989 --measure_peak); ATTN=cudnn
  SMOKE_S=${SMOKE_S:-110}; SMALL_S=${SMALL_S:-220}; LARGE_S=${LARGE_S:-100}
fi

# --- preflight -------------------------------------------------------------------------------
stamp "preflight ($MODE)"
if ! "$PY" - <<'EOF'
import jax, jax.numpy as jnp
jnp.zeros(8).block_until_ready()
EOF
then
  if [[ $MODE == gpu ]]; then
    echo "jax failed to start with XLA_FLAGS=$XLA_FLAGS; retrying without them" >&2
    export XLA_FLAGS=""
  fi
fi
PREFLIGHT_HELP="preflight failed: see the error above (grain / ml_collections missing: carry
.whl as this script's header says; a flax too old for nnx.List: carry flax==0.12.8 too)"
"$PY" - <<'EOF' || { echo "$PREFLIGHT_HELP" >&2; exit 3; }
import importlib, os
import jax
versions = {}
for name in ("jax", "jaxlib", "flax", "optax", "orbax.checkpoint", "chex", "grain",
             "ml_collections", "numpy"):
  mod = importlib.import_module(name)
  versions[name] = getattr(mod, "__version__", "?")
print("versions:", versions)
print("devices:", jax.devices(), "| XLA_FLAGS:", os.environ.get("XLA_FLAGS", ""))
from configs import mdlm_drift  # noqa: F401  (grain, ml_collections)
from tokendrift_jax.perf import benchmark, drift_timing, smoke  # noqa: F401
EOF
if [[ $MODE == gpu ]]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv || true
fi

run_stage() {  # name, limit_s, command...
  local name=$1 limit=$2; shift 2
  stamp "stage $name (limit ${limit}s): $*"
  timeout --signal=TERM --kill-after=10 "$limit" "$@"
  local rc=$?
  if [[ $rc == 124 || $rc == 137 ]]; then stamp "stage $name hit its ${limit}s limit"; fi
  stamp "stage $name exit $rc"
  return 0
}

BENCH=("$PY" launch/benchmark.py --config=configs/mdlm_drift.py --size=$SIZE
       --config.model.attention_impl=$ATTN)

if [[ ,$STAGES, == *,smoke,* ]]; then
  run_stage smoke "$SMOKE_S" "${BENCH[@]}" --smoke --length=$SMOKE_L --batch=$SMOKE_B \
    --smoke_variants=$SMOKE_VARIANTS --out="$OUT" --name=smoke
fi
if [[ ,$STAGES, == *,small,* ]]; then
  run_stage small "$SMALL_S" "${BENCH[@]}" --length=$LENGTH --batch=$SMALL_BATCHES \
    --objectives=continuation,drift --steps=$STEPS --warmup=$WARMUP "${PEAK[@]}" \
    --drift_share --out="$OUT" --name=bench_small
fi
if [[ ,$STAGES, == *,large,* ]]; then
  run_stage large "$LARGE_S" "${BENCH[@]}" --length=$LENGTH --batch=$LARGE_BATCHES \
    --objectives=drift,continuation --steps=$STEPS --warmup=$WARMUP "${PEAK[@]}" \
    --config.model.remat=True --config.model.remat_policy=dots_with_no_batch_dims_saveable \
    --out="$OUT" --name=bench_large
fi

stamp "merging"
OUT="$OUT" "$PY" - <<'EOF'
import json, os
from tokendrift_jax.perf import benchmark
out = os.environ["OUT"]
merged = None
for name in ("bench_small", "bench_large"):
  path = os.path.join(out, f"{name}.json")
  if not os.path.exists(path):
    print(f"(no {path})")
    continue
  r = json.load(open(path))
  if merged is None:
    merged = r
  else:
    merged["rows"] += r["rows"]
    merged["drift_share"] = merged.get("drift_share", []) + r.get("drift_share", [])
smoke_path = os.path.join(out, "smoke.json")
if os.path.exists(smoke_path):
  from tokendrift_jax.perf import smoke
  print(smoke.markdown(json.load(open(smoke_path))))
if merged is not None:
  benchmark.write_results(merged, out, "device_check")
  print(benchmark.markdown(merged))
EOF
stamp "done; results in $OUT"
