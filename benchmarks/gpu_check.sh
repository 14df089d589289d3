#!/usr/bin/env bash
# GPU check for cnn_flax (issue 22 item 3): one call that fits a 15-minute device session,
# machine start included (about 9.5 minutes for this script; the start takes a few).
#
# Stages, in order of value; every result is appended to the results file the moment it is
# measured, so a kill at any point keeps everything measured before it:
#   effnet   (a) EfficientNet-B0 bf16 training. If no step time is printed within its cap, the
#                run leaves why: the Python stacks of every thread (faulthandler, on the cap's
#                SIGTERM), a profiler trace stopped shortly before the cap (XLA's compiler
#                passes are in it when the stall is a compile) and the XLA dump of the step
#                (--xla_dump_to); then one retry with XLA:GPU autotuning off.
#   table    (b) the train table: cnn_flax's step and torch.compile (channels_last) of torchvision's
#                model, each in its own process, for resnet50, mobilenet_v2, mobilenet_v3_large,
#                efficientnet_b0 (its cnn_flax row is (a)'s), convnext_tiny and vit_b_16, bf16,
#                GPU_CHECK_BATCH images (default 256).
#   compile  (c) ResNet-50's train step compiled cold (empty persistent cache) and warm.
#   data     (d) ResNet-50 trained from JPEG files end to end against the same step on synthetic
#                data, in one process.
#   tests    (e) the parity and bf16 precision tests on the device (float32 at highest precision).
#
# Time: every step has a cap, and the caps add up to the budget (GPU_CHECK_BUDGET_S, default 570
# s). A step's deadline is the start plus the caps of every step up to it, so time a step leaves
# unused goes to the steps after it, and no step can eat the time of the steps after it; a step
# whose remaining time is under its minimum is skipped and listed. Steps with cap 0 run only on
# such leftover time. `GPU_CHECK_PLAN=1` prints the schedule and exits.
#
#   OUT=/some/dir bash benchmarks/gpu_check.sh                    # on the GPU machine
#   GPU_CHECK_DRY_RUN=1 OUT=/tmp/gc bash benchmarks/gpu_check.sh  # every stage, tiny, on a CPU
#
# Settings (environment): GPU_CHECK_STAGES (default "effnet table compile data tests"),
# GPU_CHECK_BUDGET_S, GPU_CHECK_BATCH, GPU_CHECK_RESULTS_MD (the file every result is appended to;
# default benchmarks/RESULTS.md, and $OUT/RESULTS_dry_run.md in a dry run).
#
# $OUT receives (the device tool returns only $OUT): gpu_results.md (the same section as appended
# to the results file, growing stage by stage), summary.txt (one line per step), logs.tar.gz
# (every log) and effnet_diag.tar.gz (stage (a)'s traces, stacks and XLA dump; read a trace with
# `python -m cnn_flax.perf.profile DIR` on a machine with TensorFlow).
#
# The GPU machine has no TensorFlow and no network: a stub that refuses `import tensorflow` is put
# first on PYTHONPATH, so the CPU dry run fails wherever the GPU run would, and the real-data stage
# uses torchvision's DataLoader (--data-loader=torch, labelled as such).
set -u -o pipefail

cd "$(dirname "$0")/.."
REPO="$PWD"
OUT="${OUT:-/tmp/cnn_flax_gpu_check}"
DRY="${GPU_CHECK_DRY_RUN:-0}"
PY="${GPU_CHECK_PYTHON:-python}"

if [ "$DRY" = "1" ]; then
  # Tiny stand-ins with torchvision counterparts that compile fast (no depthwise convolutions;
  # the steps' code paths are the same), 32 px, batch 2, torch eager channels_last (torch.compile
  # takes minutes on 2 CPU cores): every step runs on a small CPU.
  EFFNET=squeezenet1_1
  TABLE_MODELS="resnet18"
  EXTRA_MODELS=""
  BENCH_RES="--resolution=32"
  BATCH="${GPU_CHECK_BATCH:-2}"
  TIMING="--steps=2 --windows=1 --warmup=1"
  TORCH_VARIANT=channels_last
  DTYPE=float32
  BUDGET_S="${GPU_CHECK_BUDGET_S:-1500}"
  JPEGS_PER_CLASS=4
  TEST_K=(-k "resnet18 and not keeps_float32")
else
  EFFNET=efficientnet_b0
  # By value: the issue's targets (ResNet-50 >= 1.5x, MobileNets >= 1.3x torch.compile) first.
  TABLE_MODELS="resnet50 mobilenet_v2 mobilenet_v3_large"
  EXTRA_MODELS="convnext_tiny vit_b_16"
  BENCH_RES=""
  BATCH="${GPU_CHECK_BATCH:-256}"
  TIMING="--steps=10 --windows=2 --warmup=2"
  TORCH_VARIANT=compile
  DTYPE=bfloat16
  BUDGET_S="${GPU_CHECK_BUDGET_S:-570}"
  JPEGS_PER_CLASS=50
  TEST_K=(-k "resnet50 or mobilenet_v2 or efficientnet_b0 or convnext_tiny or vit_b_16")
fi
STAGES="${GPU_CHECK_STAGES:-effnet table compile data tests}"
if [ "$TORCH_VARIANT" = compile ]; then TORCH_LABEL="torch.compile"; else TORCH_LABEL="eager"; fi
[ "$DTYPE" = bfloat16 ] && TORCH_LABEL+=", bf16 autocast"
COMMON="--mode=train --dtype=$DTYPE --batch-size=$BATCH${BENCH_RES:+ $BENCH_RES} $TIMING"

# --- the schedule: "stage step cap_s min_s" per line, in running order; caps sum to the budget ---
# Caps are fractions of the budget (per mille), so a dry run's larger budget scales them all.
SCHEDULE=""
plan() { SCHEDULE+="$1 $2 $(($3 * BUDGET_S / 1000)) $(($4 * BUDGET_S / 1000))"$'\n'; }
plan env env 30 5
plan effnet "jax_$EFFNET" 170 40
plan effnet "jax_${EFFNET}_autotune0" 70 30
i=0
for m in $TABLE_MODELS; do
  # cnn_flax's row first: it lands even when torch.compile later runs out of time.
  plan table "jax_$m" $((i == 0 ? 75 : 55)) 20
  plan table "torch_$m" 65 20
  i=$((i + 1))
done
plan table "torch_$EFFNET" 60 20
for m in $EXTRA_MODELS; do plan table "jax_$m" 45 20; done
for m in $EXTRA_MODELS; do plan table "torch_$m" 0 20; done  # on time left over only
plan compile compile_resnet 60 20
plan data make_jpegs 15 5
plan data real_data 65 25
used=$(awk '{s += $3} END {print s}' <<<"$SCHEDULE")
# The rest, in seconds (not per mille): the caps add up to the budget exactly.
SCHEDULE+="tests tests $((BUDGET_S - used)) $((20 * BUDGET_S / 1000))"$'\n'

if [ "${GPU_CHECK_PLAN:-0}" = "1" ]; then
  echo "budget ${BUDGET_S}s; stage step cap_s min_s:"
  printf '%s' "$SCHEDULE"
  exit 0
fi

WORK="$(mktemp -d)"
mkdir -p "$OUT" "$WORK/logs" "$WORK/diag"
SECTION="$OUT/gpu_results.md"
SUMMARY="$OUT/summary.txt"
if [ "$DRY" = "1" ]; then
  TARGET="${GPU_CHECK_RESULTS_MD:-$OUT/RESULTS_dry_run.md}"
else
  TARGET="${GPU_CHECK_RESULTS_MD:-$REPO/benchmarks/RESULTS.md}"
fi
: >"$SUMMARY"
: >"$SECTION"
START=$SECONDS

# --- environment --------------------------------------------------------------------------------
for mod in tensorflow tensorflow_datasets; do
  mkdir -p "$WORK/stub/$mod"
  echo "raise ImportError('gpu_check: $mod is not installed on the GPU machine')" \
    >"$WORK/stub/$mod/__init__.py"
done
export PYTHONPATH="$WORK/stub:$REPO${PYTHONPATH:+:$PYTHONPATH}"
export TF_CPP_MIN_LOG_LEVEL=2 PYTHONUNBUFFERED=1
# One fresh persistent cache for every process: compiles in (a) and (b) are cold; (d) reuses (b)'s
# ResNet-50 executable; (c) uses empty caches of its own.
export CNN_FLAX_CACHE_DIR="$WORK/jax_cache"
[ "$DRY" = "1" ] && export JAX_PLATFORMS=cpu

land() { printf '%s\n' "$@" | tee -a "$SECTION" >>"$TARGET"; }  # a result, the moment it exists
note() { echo "$*" | tee -a "$SUMMARY"; }
want() { [[ " $STAGES " == *" $1 "* ]]; }
pack() { tar -C "$WORK" -czf "$OUT/logs.tar.gz" logs 2>/dev/null; }
diag() { tar -C "$WORK" -czf "$OUT/effnet_diag.tar.gz" diag 2>/dev/null; }

# run STEP CMD...: CMD under the step's deadline (see SCHEDULE); returns 0 if it ran to the end,
# 1 if it failed, 2 if it was stopped at its deadline, 3 if skipped. Its log: $WORK/logs/STEP.log;
# $LIMIT is the time it was given.
LIMIT=0
run() {
  local step=$1 deadline=0 cap=0 min=0 s name c m t0=$SECONDS rc
  shift
  while read -r s name c m; do
    [ -n "$s" ] || continue
    deadline=$((deadline + c))
    if [ "$name" = "$step" ]; then cap=$c min=$m && break; fi
  done <<<"$SCHEDULE"
  LIMIT=$((START + deadline - SECONDS))
  local left=$((START + BUDGET_S - SECONDS))
  [ "$LIMIT" -gt "$left" ] && LIMIT=$left
  if [ "$LIMIT" -lt "$min" ] || [ "$LIMIT" -lt 1 ]; then
    note "$step: skipped, ${LIMIT}s left of its schedule (cap ${cap}s, needs ${min}s)"
    return 3
  fi
  echo "\$ $*" >"$WORK/logs/$step.log"
  # bench.py stops its profiler trace shortly before this (epoch seconds).
  GPU_CHECK_DEADLINE=$(($(date +%s) + LIMIT)) timeout --kill-after=10 "$LIMIT" "$@" \
    >>"$WORK/logs/$step.log" 2>&1
  rc=$?
  local what
  what=$(grep -E '(compiled in|^throughput:|^step time:|^ratio:|^real data|passed|failed)' \
    "$WORK/logs/$step.log" | awk '!seen[$0]++' | tr '\n' ';' | cut -c1-300)
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    note "$step: STOPPED at its ${LIMIT}s deadline; $what"
    rc=2
  else
    note "$step: exit $rc in $((SECONDS - t0))s; $what"
    [ "$rc" = 0 ] || rc=1
  fi
  pack
  return $rc
}

# field STEP PATTERN: the first number after PATTERN in STEP's log, or "-".
field() {
  local v
  v=$(grep -m1 -oE "$2 *[0-9.]+" "$WORK/logs/$1.log" 2>/dev/null | grep -oE '[0-9.]+$')
  echo "${v:--}"
}

# jax_row MODEL STEP [benchmark args...]: cnn_flax's train step; lands its row in the table.
jax_row() {
  local model=$1 step=$2 rc
  shift 2
  run "$step" "$PY" "$WORK/bench.py" $COMMON --model="$model" "$@"
  rc=$?
  [ "$rc" = 3 ] && return 3
  local status="ok"
  [ "$rc" = 1 ] && status="failed (exit code; see logs.tar.gz $step.log)"
  [ "$rc" = 2 ] && status="stopped at ${LIMIT}s: $(progress "$step")"
  land "| $model | cnn_flax ($DTYPE, conv: $(conv_of "$step")) | $BATCH | $(field "$step" 'compile time:') | $(field "$step" 'step time:') | $(field "$step" 'throughput:') | $(mfu_of "$step") | | $status |"
  return $rc
}

conv_of() {
  local v
  v=$(grep -m1 -oE 'conv: [a-z_]+' "$WORK/logs/$1.log" 2>/dev/null | cut -d' ' -f2)
  echo "${v:-?}"
}
mfu_of() {
  local v
  v=$(grep -m1 -oE '^MFU: [0-9.]+%' "$WORK/logs/$1.log" 2>/dev/null | cut -d' ' -f2)
  [ -n "$v" ] || v=$(grep -m1 -oE '^achieved: [0-9.]+ GFLOP/s' "$WORK/logs/$1.log" 2>/dev/null |
    cut -d' ' -f2-)
  echo "${v:--}"
}
# progress STEP: how far a stopped run got, from its log.
progress() {
  if grep -q '^throughput:' "$WORK/logs/$1.log"; then echo "timed; stopped in torch or after"
  elif grep -q 'compiled in' "$WORK/logs/$1.log"; then echo "compiled, stopped while stepping"
  elif grep -q '^jax .* on ' "$WORK/logs/$1.log"; then echo "no compile line (building, tracing or compiling)"
  else echo "not started (imports)"
  fi
}

# torch_row MODEL STEP: torch.compile (channels_last) of torchvision's model; lands its row with
# the ratio to cnn_flax's row of the same run.
torch_row() {
  local model=$1 step=$2 rc
  run "$step" "$PY" "$WORK/torch_row.py" "$model" "$DTYPE" "$BATCH" "${BENCH_RES#--resolution=}" \
    "$TORCH_VARIANT" $TIMING
  rc=$?
  [ "$rc" = 3 ] && return 3
  local ours theirs ratio="-" status="ok"
  # The ratio of step times (same batch), not of the rounded img/s figures.
  ours=$(field "jax_$model" 'step time:')
  [ "$ours" = "-" ] && ours=$(field "jax_${model}_autotune0" 'step time:')
  theirs=$(field "$step" 'step time:')
  if [ "$ours" != "-" ] && [ "$theirs" != "-" ]; then
    ratio=$(awk -v a="$ours" -v b="$theirs" 'BEGIN { if (a > 0) printf "%.3f", b / a }')
  fi
  [ "$rc" = 1 ] && status="failed: $(grep -m1 -E 'Error|error' "$WORK/logs/$step.log" | cut -c1-120 | tr '|' '/')"
  [ "$rc" = 2 ] && status="stopped at ${LIMIT}s ($(grep -q 'first call' "$WORK/logs/$step.log" && echo 'compiled' || echo 'while compiling'))"
  land "| $model | torchvision, channels_last, $TORCH_LABEL | $BATCH | $(field "$step" 'first call \(compile \+ 1 step\):') | $theirs | $(field "$step" 'throughput:') | - | $ratio | $status |"
}

# The benchmark with a flight recorder: Python stacks of every thread on SIGTERM (the cap), and
# with GPU_CHECK_TRACE_DIR a profiler trace from start-up, stopped (with the stacks printed) 15%
# of the remaining time, at least 15 s, before the step's deadline, or at exit if that is sooner.
cat >"$WORK/bench.py" <<'PY'
import atexit, faulthandler, os, signal, sys, threading, time

faulthandler.register(signal.SIGTERM, all_threads=True, chain=True)
trace_dir = os.environ.get("GPU_CHECK_TRACE_DIR")
if trace_dir:
    import jax

    # No Python tracer: XLA's and JAX's own events (compiler passes, thunks, kernels) only; with
    # it a CPU dry run's trace was 50 MB.
    options = jax.profiler.ProfileOptions()
    options.python_tracer_level = 0
    jax.profiler.start_trace(trace_dir, profiler_options=options)
    lock = threading.Lock()
    done = []

    def stop(why):
        with lock:
            if done:
                return
            done.append(why)
            print(f"gpu_check: stopping the profiler trace ({why})", flush=True)
            if why == "timer":
                faulthandler.dump_traceback(all_threads=True)
            try:
                jax.profiler.stop_trace()
                print(f"gpu_check: profiler trace written under {trace_dir}", flush=True)
            except Exception as err:  # noqa: BLE001 - a diagnostic must not hide the run
                print(f"gpu_check: profiler trace not written: {err}", flush=True)

    left = float(os.environ["GPU_CHECK_DEADLINE"]) - time.time()
    timer = threading.Timer(max(1.0, left - max(15.0, 0.15 * left)), stop, ("timer",))
    timer.daemon = True
    timer.start()
    atexit.register(stop, "exit")
from cnn_flax.cli.benchmark import main

sys.exit(main(sys.argv[1:]))
PY

cat >"$WORK/torch_row.py" <<'PY'
import faulthandler, signal, sys, time

faulthandler.register(signal.SIGTERM, all_threads=True, chain=True)
from cnn_flax.models import model_info
from cnn_flax.perf import rates, timing, torch_bench

model, dtype, batch, res, variant, *timing_args = sys.argv[1:]
opts = dict(a.lstrip("-").split("=") for a in timing_args)
import torch

info = model_info(model)
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
if device.type == "cuda":
    torch.backends.cudnn.benchmark = True
print(f"torch {torch.__version__} on {torch_bench.torch_device_name()}", flush=True)
net = torch_bench.build_model(info.torchvision, device, channels_last=True)
if variant == "compile":
    net = torch.compile(net)
run_steps = torch_bench.make_runner(
    net, mode="train", dtype=dtype, device=device, batch_size=int(batch),
    resolution=int(res or info.resolution), channels_last=True,
)
start = time.perf_counter()
run_steps(1)
print(f"first call (compile + 1 step): {time.perf_counter() - start:.2f} s", flush=True)
steps, windows = int(opts["steps"]), int(opts["windows"])
seconds = timing.time_windows(run_steps, steps=steps, windows=windows, warmup=int(opts["warmup"]))
step_s = rates.step_time(seconds, steps // windows)
print(f"step time: {step_s * 1e3:.2f} ms", flush=True)
print(f"throughput: {rates.images_per_second(int(batch), step_s):.1f} img/s", flush=True)
PY

# --- header -------------------------------------------------------------------------------------
note "gpu_check $(date -u +%FT%TZ) dry_run=$DRY stages=[$STAGES] budget=${BUDGET_S}s"
run env "$PY" - <<'PY'
from importlib import metadata

import jax

print("jax", jax.__version__, "devices:", [d.device_kind for d in jax.devices()])
for name in ("jaxlib", "flax", "optax", "torch", "torchvision", "tensorflow"):
    try:  # versions without importing (torch takes tens of seconds on a loaded CPU)
        print(name, metadata.version(name))
    except metadata.PackageNotFoundError:
        print(name, "not installed")
PY
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader \
  >>"$WORK/logs/env.log" 2>/dev/null
land "" "## GPU check $(date -u +%F) (benchmarks/gpu_check.sh$([ "$DRY" = 1 ] && echo ', DRY RUN on CPU'))" ""
land '```' "$(grep -v '^\$' "$WORK/logs/env.log")" '```' ""
land "Written step by step as measured (a kill keeps what is above it). cnn_flax: \`python -m"
land "cnn_flax.benchmark $COMMON --model=M\`; torch: torchvision's M, channels_last, $TORCH_LABEL,"
land "the same batch and timing (its \`first call\` column is the compile and one step)."
land ""
TABLE_HEAD="| model | implementation | batch | compile s (torch: first call) | step ms | img/s | MFU or GFLOP/s | ratio cnn_flax / torch | status |
|---|---|---|---|---|---|---|---|---|"

# --- (a) EfficientNet-B0 -------------------------------------------------------------------------
if want effnet; then
  land "### (a) $EFFNET train (printed nothing within 150 s on the H200 before)" "" "$TABLE_HEAD"
  step="jax_$EFFNET"
  mkdir -p "$WORK/diag/xla_dump" "$WORK/diag/trace"
  # The trace stops shortly before the cap: a run still compiling then leaves the XLA passes it
  # spent its time in.
  GPU_CHECK_TRACE_DIR="$WORK/diag/trace" \
    XLA_FLAGS="${XLA_FLAGS:-} --xla_dump_to=$WORK/diag/xla_dump --xla_dump_hlo_as_text --xla_dump_hlo_module_re=train_step" \
    jax_row "$EFFNET" "$step"
  rc=$?
  cp "$WORK/logs/$step.log" "$WORK/diag/" 2>/dev/null
  # A run that finished needs no trace (the benchmark's --profile is for that); keep the dump.
  [ "$rc" = 0 ] && rm -rf "$WORK/diag/trace"
  diag
  if [ "$rc" = 1 ] || [ "$rc" = 2 ]; then
    land "" "$step did not finish: its log (the Python stacks at the cap), the profiler trace" \
      "and the XLA dump are in effnet_diag.tar.gz. Retry with XLA:GPU autotuning off:" "" "$TABLE_HEAD"
    XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_autotune_level=0" jax_row "$EFFNET" "${step}_autotune0"
    cp "$WORK/logs/${step}_autotune0.log" "$WORK/diag/" 2>/dev/null
    diag
  fi
  land ""
fi

# --- (b) the train table against torch.compile -----------------------------------------------------
if want table; then
  land "### (b) Train table, $DTYPE, batch $BATCH" "" "$TABLE_HEAD"
  for m in $TABLE_MODELS; do
    jax_row "$m" "jax_$m"
    torch_row "$m" "torch_$m"
  done
  torch_row "$EFFNET" "torch_$EFFNET"
  for m in $EXTRA_MODELS; do jax_row "$m" "jax_$m"; done
  for m in $EXTRA_MODELS; do torch_row "$m" "torch_$m"; done
  land ""
fi

# --- (c) compile times, cold and warm ------------------------------------------------------------
if want compile; then
  resnet=$(echo $TABLE_MODELS | cut -d' ' -f1)
  run compile_resnet "$PY" -m cnn_flax.benchmark --mode=train --dtype=$DTYPE --batch-size=$BATCH \
    $BENCH_RES --compile-only --model="$resnet" --markdown="$WORK/compile.md"
  rc=$?
  if [ "$rc" != 3 ]; then
    land "### (c) Compile times ($resnet train step; cold = empty persistent cache, warm = hit)" ""
    if [ -s "$WORK/compile.md" ]; then
      land "$(grep -v '^$' "$WORK/compile.md")"
    else
      land "Not measured: $(tail -1 "$SUMMARY")"
    fi
    land ""
  fi
fi

# --- (d) real data end to end against synthetic ------------------------------------------------------
if want data; then
  resnet=$(echo $TABLE_MODELS | cut -d' ' -f1)
  loader=cnn_flax
  "$PY" -c "import tensorflow" 2>/dev/null || loader=torch
  run make_jpegs "$PY" -m cnn_flax.data.make_fake_images --out="$WORK/jpegs" --classes=10 \
    --per-class="$JPEGS_PER_CLASS"
  run real_data "$PY" -m cnn_flax.benchmark $COMMON --model="$resnet" \
    --data="folder:$WORK/jpegs" --data-dir="$WORK/jpeg_index" --data-loader=$loader
  rc=$?
  if [ "$rc" != 3 ]; then
    land "### (d) Real data ($resnet from JPEG files, $loader loader) vs synthetic, one process" ""
    if grep -q '^real data' "$WORK/logs/real_data.log"; then
      while read -r line; do land "- $line"; done < <(grep -E '^(real data|waiting for data)' \
        "$WORK/logs/real_data.log")
    else
      land "- not measured: $(tail -1 "$SUMMARY")"
    fi
    land ""
  fi
fi

# --- (e) parity and precision tests on the device ----------------------------------------------------
if want tests; then
  JAX_DEFAULT_MATMUL_PRECISION=highest run tests "$PY" -m pytest -v -p no:cacheprovider \
    tests/convert/test_parity.py tests/models/test_precision.py "${TEST_K[@]}"
  rc=$?
  if [ "$rc" != 3 ]; then
    log="$WORK/logs/tests.log"
    land "### (e) Parity and bf16 tests (JAX_DEFAULT_MATMUL_PRECISION=highest)" ""
    land "- $(grep -c ' PASSED' "$log") passed, $(grep -c ' FAILED' "$log") failed, $(grep -c ' SKIPPED' "$log") skipped$([ "$rc" = 2 ] && echo ", stopped at ${LIMIT}s")"
    while read -r line; do land "- $line"; done < <(grep ' FAILED' "$log" | cut -c1-160)
    land ""
  fi
fi

note "done in $((SECONDS - START)) s"
land "Steps:" '```' "$(cat "$SUMMARY")" '```' ""
pack
rm -rf "$WORK"
echo "results appended to $TARGET and $SECTION"
