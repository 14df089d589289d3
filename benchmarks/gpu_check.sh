#!/usr/bin/env bash
# GPU check for cnn_flax (issue 15): one call on a GPU machine measures, in priority order,
#   speed     ResNet-50, EfficientNet-B0, MobileNet v2 and v3-large bf16 training against torch
#             eager / channels_last / torch.compile, the depthwise implementations side by side
#   compile   cold and warm (persistent cache) compile times of the train step, every family
#   flags     XLA flag variants for ResNet-50
#   profile   a profiler trace of ResNet-50 and EfficientNet-B0 steps
#   data      ResNet-50 trained from JPEG files through an input pipeline, end to end
#   tests     the parity and bf16 tests on the device
# within a total time budget: every stage has its own timeout, a stage that would start with
# less than its minimum left is skipped (and said so), and the results written so far are
# always in $OUT, so a stage that hangs costs its timeout, not the run.
#
#   OUT=/some/dir bash benchmarks/gpu_check.sh                    # on the GPU machine
#   GPU_CHECK_DRY_RUN=1 OUT=/tmp/gc bash benchmarks/gpu_check.sh  # every stage, tiny, on a CPU
#
# Settings (environment): GPU_CHECK_STAGES (default "speed compile flags profile data tests"),
# GPU_CHECK_BUDGET_S (total seconds, default 480), GPU_CHECK_BATCH (default 256),
# GPU_CHECK_RESULTS_MD (file the results section is appended to at the end, default
# benchmarks/RESULTS.md; never in a dry run).
#
# $OUT receives at most four files (the device tool returns at most 8): gpu_results.md (the
# tables, rewritten after every stage), summary.txt (one line per stage), logs.tar.gz (every
# log) and traces.tar.gz (the profiler traces; summarise them on a machine with TensorFlow:
# `tar xzf traces.tar.gz && python -m cnn_flax.perf.profile traces/resnet50`).
#
# The GPU machine has no TensorFlow and no network: a stub that refuses `import tensorflow` is
# put first on PYTHONPATH, so the CPU dry run fails wherever the GPU run would. The real-data
# stage therefore uses torchvision's DataLoader there (--data-loader=torch, labelled as such).
set -u -o pipefail

cd "$(dirname "$0")/.."
REPO="$PWD"
OUT="${OUT:-/tmp/cnn_flax_gpu_check}"
DRY="${GPU_CHECK_DRY_RUN:-0}"
WORK="$(mktemp -d)"
mkdir -p "$OUT" "$WORK/logs" "$WORK/traces"
RESULTS="$OUT/gpu_results.md"
SUMMARY="$OUT/summary.txt"
: >"$SUMMARY"
START=$SECONDS

# --- environment --------------------------------------------------------------------------------
for mod in tensorflow tensorflow_datasets; do
  mkdir -p "$WORK/stub/$mod"
  echo "raise ImportError('gpu_check: $mod is not installed on the GPU machine')" \
    >"$WORK/stub/$mod/__init__.py"
done
export PYTHONPATH="$WORK/stub:$REPO${PYTHONPATH:+:$PYTHONPATH}"
export TF_CPP_MIN_LOG_LEVEL=2 PYTHONUNBUFFERED=1
# Every benchmark process shares one fresh persistent cache: the compile stage uses its own
# empty directories, and the speed stages' compile times are then cold ones.
export CNN_FLAX_CACHE_DIR="$WORK/jax_cache"

if [ "$DRY" = "1" ]; then
  export JAX_PLATFORMS=cpu
  # Tiny stand-ins: the CIFAR ResNet-20 for ResNet-50 and MobileNet v3-small (the smallest
  # depthwise model to compile) for the others, at 32 px, and one flag set: every stage's code
  # path runs on a small CPU in a few minutes.
  RESNET="${GPU_CHECK_RESNET:-resnet20}"
  EFFNET="${GPU_CHECK_EFFNET:-mobilenet_v3_small}"
  MOBILE="${GPU_CHECK_MOBILE:-mobilenet_v3_small}"
  FAMILIES="${GPU_CHECK_FAMILIES:-resnet20}"
  FLAG_SETS=("--xla_cpu_use_thunk_runtime=true")
  SIZE="--batch-size=2 --resolution=32"
  TIMING="--steps=2 --windows=1 --warmup=1"
  TORCH_VARIANTS="eager,channels_last"  # torch.compile takes minutes on 2 CPU cores
  DTYPE=float32
  BUDGET_S="${GPU_CHECK_BUDGET_S:-1500}"
  SCALE=4  # stage timeouts x4 on a shared 2-core CPU
  JPEGS_PER_CLASS=8
else
  export JAX_PLATFORMS="${JAX_PLATFORMS:-}"
  RESNET=resnet50
  EFFNET=efficientnet_b0
  MOBILE="mobilenet_v2 mobilenet_v3_large"
  # The first variant of every registered family (a new family is picked up by itself), plus
  # the models the speed stage times.
  FAMILIES="$(python -c 'from cnn_flax.models import list_models, model_info
first = {}
for name in list_models():
    first.setdefault(model_info(name).family, name)
print(" ".join(first.values()))') resnet50 mobilenet_v2 efficientnet_b0"
  SIZE="--batch-size=${GPU_CHECK_BATCH:-256}"
  TIMING="--steps=20 --windows=5 --warmup=3"
  TORCH_VARIANTS="eager,channels_last,compile"
  DTYPE=bfloat16
  BUDGET_S="${GPU_CHECK_BUDGET_S:-480}"
  SCALE=1
  JPEGS_PER_CLASS=100
  FLAG_SETS=(
    "--xla_gpu_enable_latency_hiding_scheduler=true"
    "--xla_gpu_experimental_enable_conv_fusion=true"
    "--xla_gpu_autotune_level=0"
    "--xla_gpu_enable_command_buffer="
    "--xla_gpu_force_conv_nhwc=true"
  )
fi
STAGES="${GPU_CHECK_STAGES:-speed compile flags profile data tests}"
COMMON="--mode=train --dtype=$DTYPE $SIZE $TIMING"

left() { echo $((BUDGET_S - (SECONDS - START))); }
note() { echo "$*" | tee -a "$SUMMARY"; }
want() { [[ " $STAGES " == *" $1 "* ]]; }

# run NAME MIN_S TIMEOUT_S CMD...: one step of a stage under its own timeout, skipped when less
# than MIN_S of the budget is left; its log is $WORK/logs/NAME.log.
run() {
  local name=$1 min=$(($2 * SCALE)) limit=$(($3 * SCALE)) t0=$SECONDS rc
  shift 3
  local t
  t=$(left)
  if [ "$t" -lt "$min" ]; then
    note "$name: skipped, ${t}s of the ${BUDGET_S}s budget left (needs ${min}s)"
    return 0
  fi
  [ "$limit" -gt "$t" ] && limit=$t
  echo "\$ $*" >"$WORK/logs/$name.log"
  timeout --kill-after=10 "$limit" "$@" >>"$WORK/logs/$name.log" 2>&1
  rc=$?
  local what
  what=$(grep -E '^(.*: compiled in|throughput:|ratio:|real data|waiting for data|\| .*\((hit|miss)\)|[0-9]+ (passed|failed))' \
    "$WORK/logs/$name.log" | awk '!seen[$0]++' | tr '\n' ';' | cut -c1-400)
  [ "$rc" = 124 ] || [ "$rc" = 137 ] && what="TIMED OUT after ${limit}s; $what"
  note "$name: exit $rc in $((SECONDS - t0))s; $what"
  render
  return 0
}

bench() {  # bench NAME MIN TIMEOUT [benchmark args...]: a speed row into $WORK/speed.md
  local name=$1 min=$2 limit=$3
  shift 3
  run "$name" "$min" "$limit" python -m cnn_flax.benchmark $COMMON --markdown="$WORK/speed.md" "$@"
}

table() {  # table FILE: the rows of FILE's tables under one header (each run wrote its own)
  awk 'NR<=2 || !/^\| model \||^\|---/' "$1" | grep -v '^$'
}

render() {  # rewrites $OUT/gpu_results.md and $OUT/logs.tar.gz from what has run so far
  {
    echo "# cnn_flax GPU check, $(date -u +%F) (dry run: $DRY)"
    echo
    echo '```'
    cat "$WORK/env.txt" 2>/dev/null
    echo '```'
    echo
    echo "Benchmark arguments: \`$COMMON\`; torch variants $TORCH_VARIANTS."
    for part in speed:"Training speed" flags:"XLA flag variants ($RESNET)" \
      compile:"Compile times (train step, cold = empty persistent cache, warm = cache hit)"; do
      local file="$WORK/${part%%:*}.md"
      [ -f "$file" ] || continue
      echo
      echo "## ${part#*:}"
      echo
      table "$file"
    done
    echo
    echo "## Stages"
    echo
    echo '```'
    cat "$SUMMARY"
    echo '```'
  } >"$RESULTS"
  tar -C "$WORK" -czf "$OUT/logs.tar.gz" logs
}

note "gpu_check $(date -u +%FT%TZ) dry_run=$DRY stages=[$STAGES] budget=${BUDGET_S}s"
{
  python - <<'PY' 2>&1
import jax
print("jax", jax.__version__, "devices:", [d.device_kind for d in jax.devices()])
for name in ("flax", "optax", "ml_collections", "torch", "torchvision", "tensorflow"):
    try:
        module = __import__(name)
        print(name, getattr(module, "__version__", "?"))
    except ImportError as err:
        print(name, "unavailable:", err)
PY
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
} >"$WORK/env.txt"
cat "$WORK/env.txt" | tee -a "$SUMMARY"
render

# --- speed: the targets of issue 15 ----------------------------------------------------------------
if want speed; then
  # The compile time is printed as soon as it is known, so a stage that times out still says
  # whether it got past compiling.
  bench "${RESNET}_model" 60 180 --model="$RESNET" --conv=model --compare=torch \
    --torch-variants="$TORCH_VARIANTS"
  bench "${EFFNET}_shift" 60 180 --model="$EFFNET" --conv=shift --compare=torch \
    --torch-variants="$TORCH_VARIANTS"
  for m in $MOBILE; do
    [ "$m" = "$EFFNET" ] && continue
    bench "${m}_shift" 60 180 --model="$m" --conv=shift --compare=torch \
      --torch-variants="$TORCH_VARIANTS"
  done
  # XLA's grouped convolutions for the same models (the depthwise implementations compared;
  # no torch, the rows above have it). Last: EfficientNet-B0 this way printed nothing within
  # 150 s on the H200 before. The "cpu" preset is not run: its lax.scan loops suit CPU caches.
  all_dw=$(echo "$EFFNET $MOBILE" | tr ' ' '\n' | sort -u | paste -sd, -)
  bench depthwise_model 60 150 --model="$all_dw" --conv=model
fi

# --- compile: every family, cold and warm ----------------------------------------------------------
if want compile; then
  # One process per model: a model that hangs costs its own timeout, not the others' rows.
  for m in $(echo $FAMILIES | tr ' ' '\n' | awk '!seen[$0]++'); do
    run "compile_$m" 25 90 python -m cnn_flax.benchmark --mode=train --dtype=$DTYPE $SIZE \
      --compile-only --model="$m" --markdown="$WORK/compile.md"
  done
fi

# --- flags: XLA options that may help ResNet-50 (names checked against jaxlib's flag list) ------
if want flags; then
  i=0
  for flags in "${FLAG_SETS[@]}"; do
    i=$((i + 1))
    # The row's conv column cannot show the flag: the stage summary line and the log name it.
    XLA_FLAGS="$flags" run "flags_$i" 45 120 python -m cnn_flax.benchmark $COMMON \
      --model="$RESNET" --conv=model --markdown="$WORK/flags.md"
    # The table ends in blank lines: label the one row that has no label yet.
    sed -i "/XLA_FLAGS/!s#^| $RESNET | train |#| $RESNET (XLA_FLAGS=$flags) | train |#" \
      "$WORK/flags.md" 2>/dev/null
    render
  done
fi

# --- profile: one trace each ------------------------------------------------------------------------
if want profile; then
  run profile 45 150 python -m cnn_flax.benchmark $COMMON --model="$RESNET,$EFFNET" \
    --conv=model --profile="$WORK/traces"
  (cd "$WORK" && find traces -name '*.xplane.pb' | tar -czf "$OUT/traces.tar.gz" -T -)
  ls -l "$OUT/traces.tar.gz" >>"$SUMMARY"
fi

# --- data: the same step fed from JPEG files --------------------------------------------------------
if want data; then
  loader=cnn_flax
  python -c "import tensorflow" 2>/dev/null || loader=torch
  run make_jpegs 30 120 python -m cnn_flax.data.make_fake_images --out="$WORK/jpegs" \
    --classes=10 --per-class="$JPEGS_PER_CLASS"
  bench "${RESNET}_real_data" 60 180 --model="$RESNET" --conv=model \
    --data="folder:$WORK/jpegs" --data-dir="$WORK/jpeg_index" --data-loader=$loader
fi

# --- tests: parity in float32 (highest matmul precision, no TF32) and the bf16 forward ---------------
if want tests; then
  if [ "$DRY" = "1" ]; then K=(-k "resnet18 and not keeps_float32"); else K=(); fi
  JAX_DEFAULT_MATMUL_PRECISION=highest run tests 45 150 python -m pytest -q -p no:cacheprovider \
    tests/convert/test_parity.py tests/models/test_precision.py tests/models/test_depthwise.py \
    "${K[@]}"
fi

note "done in $((SECONDS - START)) s"
render
if [ "$DRY" != "1" ]; then
  target="${GPU_CHECK_RESULTS_MD:-$REPO/benchmarks/RESULTS.md}"
  { echo; echo "## GPU check $(date -u +%F) (benchmarks/gpu_check.sh)"; echo;
    sed '1,2d; s/^## /### /' "$RESULTS"; } >>"$target"
  note "appended the results to $target"
fi
rm -rf "$WORK"
cat "$RESULTS"
