#!/usr/bin/env bash
# GPU check for cnn_flax: the tests that matter on an accelerator, then the side-by-side
# benchmark against torchvision. Finishes within about 8 minutes on one GPU.
#
#   OUT=/some/dir bash benchmarks/gpu_check.sh            # on the GPU machine
#   GPU_CHECK_DRY_RUN=1 OUT=/tmp/gc bash benchmarks/gpu_check.sh   # tiny settings, any CPU
#
# The GPU machine has jax, flax, optax, chex, orbax and torch/torchvision but no TensorFlow and
# no network, so a stub that refuses `import tensorflow` is put first on PYTHONPATH: anything
# that would import TensorFlow fails here too, on the CPU dry run, not only on the GPU.
#
# Writes $OUT/gpu_results.md (the tables), $OUT/logs/*.log and $OUT/summary.txt.
set -u -o pipefail

cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/cnn_flax_gpu_check}"
mkdir -p "$OUT/logs"
DRY="${GPU_CHECK_DRY_RUN:-0}"
START=$SECONDS
RESULTS="$OUT/gpu_results.md"
SUMMARY="$OUT/summary.txt"
: >"$SUMMARY"

# --- no TensorFlow -------------------------------------------------------------------------------
STUB="$(mktemp -d)"
for mod in tensorflow tensorflow_datasets; do
  mkdir -p "$STUB/$mod"
  echo "raise ImportError('gpu_check: $mod is not installed on the GPU machine')" \
    >"$STUB/$mod/__init__.py"
done
export PYTHONPATH="$STUB:$PWD${PYTHONPATH:+:$PYTHONPATH}"
# A fresh compilation cache, so the first benchmark run really compiles and the rerun at the end
# measures a cache hit.
export CNN_FLAX_CACHE_DIR="${CNN_FLAX_CACHE_DIR:-$STUB/jax_cache}"
export TF_CPP_MIN_LOG_LEVEL=2

if [ "$DRY" = "1" ]; then
  export JAX_PLATFORMS=cpu
  # A shared 2-core CPU is much slower than the GPU: tiny shapes, one model, generous limits.
  MODELS="${GPU_CHECK_MODELS:-resnet18}"
  BENCH_ARGS="--batch-size=2 --resolution=32 --steps=2 --windows=1 --warmup=1"
  TORCH_VARIANTS="${GPU_CHECK_TORCH_VARIANTS:-eager,channels_last}"
  TEST_K="resnet18 and not keeps_float32"  # bf16 training on XLA:CPU is very slow
  TEST_TIMEOUT=600
  RUN_TIMEOUT=600
  BUDGET_S="${GPU_CHECK_BUDGET_S:-1800}"
else
  export JAX_PLATFORMS="${JAX_PLATFORMS:-}"    # empty: jax picks the GPU
  MODELS="${GPU_CHECK_MODELS:-resnet50 mobilenet_v2 efficientnet_b0}"
  BENCH_ARGS="--batch-size=${GPU_CHECK_BATCH:-128} --steps=20 --windows=5 --warmup=3"
  TORCH_VARIANTS="${GPU_CHECK_TORCH_VARIANTS:-eager,channels_last,compile}"
  TEST_K=""
  TEST_TIMEOUT=150
  RUN_TIMEOUT=150
  BUDGET_S="${GPU_CHECK_BUDGET_S:-450}"     # start nothing new after 7.5 min
fi

left() { echo $((BUDGET_S - (SECONDS - START))); }
note() { echo "$*" | tee -a "$SUMMARY"; }

note "gpu_check $(date -u +%FT%TZ) dry_run=$DRY models=[$MODELS] budget=${BUDGET_S}s"
python - <<'PY' 2>&1 | tee -a "$SUMMARY"
import jax
print("jax", jax.__version__, "devices:", [d.device_kind for d in jax.devices()])
try:
    import torch
    print("torch", torch.__version__, "cuda:", torch.cuda.is_available())
except ImportError as err:
    print("torch unavailable:", err)
PY
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >>"$SUMMARY" 2>/dev/null || true

# --- tests ---------------------------------------------------------------------------------------
# Parity in float32 against torchvision and the bf16-vs-float32 forward check, on the device.
# Highest matmul precision: Ampere+ GPUs would otherwise run float32 convolutions in TF32, which
# is not what the 1e-4 parity tolerance is about.
if [ "${GPU_CHECK_SKIP_TESTS:-0}" = "1" ]; then
  note "tests: skipped (GPU_CHECK_SKIP_TESTS=1)"
elif python -c "import pytest" 2>/dev/null; then
  K_ARGS=()
  [ -n "$TEST_K" ] && K_ARGS=(-k "$TEST_K")
  JAX_DEFAULT_MATMUL_PRECISION=highest timeout "$TEST_TIMEOUT" python -m pytest -q -p no:cacheprovider \
    tests/convert/test_parity.py tests/models/test_precision.py "${K_ARGS[@]}" \
    >"$OUT/logs/tests.log" 2>&1
  rc=$?
  note "tests (parity + bf16 forward): exit $rc ($(tail -n 1 "$OUT/logs/tests.log"))"
else
  note "tests: skipped, pytest is not installed"
fi

# --- benchmarks ----------------------------------------------------------------------------------
{
  echo "# cnn_flax GPU check, $(date -u +%F)"
  echo
  echo "Command per row: \`python -m cnn_flax.benchmark --model=NAME --mode=MODE --dtype=bfloat16"\
" $BENCH_ARGS --compare=torch --torch-variants=$TORCH_VARIANTS\`"
  echo
} >"$RESULTS"

bench() {  # bench MODEL MODE VARIANTS -> appends a table to $RESULTS, log in $OUT/logs
  local model=$1 mode=$2 variants=$3 t
  t=$(left)
  if [ "$t" -lt 45 ]; then
    note "$model $mode: skipped, ${t}s of the budget left"
    return 1
  fi
  [ "$t" -gt "$RUN_TIMEOUT" ] && t=$RUN_TIMEOUT
  # shellcheck disable=SC2086
  timeout "$t" python -m cnn_flax.benchmark --model="$model" --mode="$mode" --dtype=bfloat16 \
    $BENCH_ARGS --compare=torch --torch-variants="$variants" --markdown="$OUT/table_$mode.md" \
    >"$OUT/logs/${model}_${mode}.log" 2>&1
  local rc=$?
  note "$model $mode [$variants]: exit $rc, $(grep -E '^(throughput|ratio):' \
    "$OUT/logs/${model}_${mode}.log" | tr '\n' ' ')"
  return $rc
}

for mode in train infer; do
  for model in $MODELS; do
    if ! bench "$model" "$mode" "$TORCH_VARIANTS" && [[ "$TORCH_VARIANTS" == *compile* ]]; then
      # torch.compile is the slow part; keep the comparison without it rather than nothing.
      bench "$model" "$mode" "eager,channels_last" || true
    fi
  done
done

for mode in train infer; do
  if [ -f "$OUT/table_$mode.md" ]; then
    echo "## $mode" >>"$RESULTS"
    # One header, then every row (each run appended its own header).
    awk 'NR<=2 || !/^\| model \||^\|---/' "$OUT/table_$mode.md" | grep -v '^$' >>"$RESULTS"
    echo >>"$RESULTS"
  fi
done

# --- compilation cache: the same configuration again, now served from the cache -----------------
first=$(echo $MODELS | cut -d' ' -f1)
if [ "$(left)" -gt 40 ]; then
  # shellcheck disable=SC2086
  timeout "$(left)" python -m cnn_flax.benchmark --model="$first" --mode=train --dtype=bfloat16 \
    $BENCH_ARGS >"$OUT/logs/${first}_train_cached.log" 2>&1
  cold=$(grep -m1 '^compile time' "$OUT/logs/${first}_train.log" 2>/dev/null)
  warm=$(grep -m1 '^compile time' "$OUT/logs/${first}_train_cached.log")
  note "compilation cache, $first train: first run ${cold:-?}; second run $warm"
  { echo "## compilation cache ($first train)"; echo; echo "- first run: ${cold:-?}";
    echo "- second run (cache hit): $warm"; echo; } >>"$RESULTS"
fi

rm -rf "$STUB"
note "done in $((SECONDS - START)) s"
cat "$RESULTS"
