#!/usr/bin/env bash
# The checks and figures that only a CUDA GPU gives, in one run (a lent GPU is held for minutes):
#   tests   the GPU-marked tests: compiled Triton kernels vs the torch reference, the merge stages on
#           CUDA vs the CPU, the key scores on CUDA vs float64, CUDA-graph decode vs eager
#   kernels scripts/bench_kernels.py (outer merge at F=32 P=196 D=3584, inner merge at 1000 tokens)
#   scores  scripts/bench_key_scores.py on CUDA (last layer vs an ordinary layer, bf16 and float32)
#   keytests, sweep  the key-score kernel alone: its CUDA tests in every product mode; its tiles and modes timed
#   bench   holitom bench --device cuda --dtype bfloat16 on the 7B and 0.5B architectures, layer-trimmed
#           with the full-depth projection
#   train   scripts/train_default_model.py --device cuda: several recipes side by side (a batch-1 model this
#           small leaves the GPU mostly idle), each for TRAIN_MINUTES; logs and checkpoints in $OUT/train_*
# Each step has its own time limit and log ($OUT/<step>.log, default ./gpu_out); a failing step does not
# stop the next. Usage, from the repository root on a machine with a GPU:
#     bash scripts/gpu_check.sh [step ...]        # default: tests kernels scores bench
# Python packages missing there (PyAV, say) can be put as wheels in ./.whl first.
set -u
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 HOLITOM_CACHE=${HOLITOM_CACHE:-/tmp/holitom_cache}

install() {
  if ls .whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || return 1
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  fi
  "$PY" -c "import holitom.plugins_trt" 2>/dev/null && return 0
  "$PY" -m pip install -q --no-index --no-deps --no-build-isolation -e . && return 0
  # No editable install there: the package-dir mapping of pyproject.toml by links, the tree on the path.
  for d in export runtime plugins_trt calibration; do ln -sfn "../$d" "holitom/$d"; done
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
  "$PY" -c "import holitom.export, holitom.runtime, holitom.plugins_trt"
}

run_step() {  # name limit command...
  local name=$1 limit=$2 start rc
  shift 2
  start=$(date +%s)
  timeout "$limit" bash -c "$*" >"$OUT/$name.log" 2>&1  # the steps are exported functions
  rc=$?
  echo "== $name: exit $rc after $(($(date +%s) - start)) s (log $OUT/$name.log)"
  tail -n "${TAIL:-12}" "$OUT/$name.log"
}

tests() {
  "$PY" -m pytest -q -rs -p no:cacheprovider -m gpu \
    tests/plugins_trt/test_kernels_cuda.py tests/merge/test_cuda.py tests/models/test_vision_scores.py \
    tests/runtime/test_cuda_graph_decode.py
}

kernels() { "$PY" scripts/bench_kernels.py --repeats 30 --profile && "$PY" scripts/bench_kernels.py --dtype float32 --repeats 30; }

keytests() {  # the key-score kernel's CUDA tests only (every product mode) and the vision tower's scores on CUDA
  "$PY" -m pytest -q -rs -p no:cacheprovider -m gpu tests/plugins_trt/test_kernels_cuda.py tests/models/test_vision_scores.py -k "key or scores"
}

sweep() {  # SWEEP_DTYPES: which dtypes (default both)
  local dtype
  for dtype in ${SWEEP_DTYPES:-bfloat16 float32}; do
    "$PY" scripts/bench_key_scores.py --device cuda --dtype "$dtype" --sweep --warmup 3 --repeats 10 || return 1
  done
}

scores() {
  "$PY" scripts/bench_key_scores.py --device cuda --dtype bfloat16 --warmup 3 --repeats 20 &&
    "$PY" scripts/bench_key_scores.py --device cuda --dtype float32 --warmup 3 --repeats 20
}

bench() {
  local common=(--device cuda --dtype bfloat16 --backends transformers,torch --repeats 5 --decode-tokens 32 --no-memory
    --vision-layers 2 --text-layers 2)
  # bench.json beside the logs; the plots stay behind (a lent machine returns few files)
  "$PY" -m holitom.cli bench --model llava-ov-7b --vocab-size 32768 --methods vanilla,holitom --ratios 0.1 "${common[@]}" --out /tmp/bench_7b &&
    cp /tmp/bench_7b/bench.json "$OUT/bench_7b.json"
  # the decode step eager instead of a CUDA graph: an A/B of the graph's decode speed
  "$PY" -m holitom.cli bench --model llava-ov-7b --vocab-size 32768 --methods vanilla "${common[@]}" --no-cuda-graph --no-projection --no-flops
  "$PY" -m holitom.cli bench --model llava-ov-0.5b --methods vanilla,holitom --ratios 0.1 "${common[@]}" --out /tmp/bench_05b &&
    cp /tmp/bench_05b/bench.json "$OUT/bench_05b.json"
}

train() {  # recipes side by side; each writes $OUT/train_<name>.log and its checkpoint $OUT/train_<name>/
  local m=${TRAIN_MINUTES:-6} common=(--device "${TRAIN_DEVICE:-cuda}" --workers 4 --train-tower --aux-balance --eval-every 1000)
  local -A recipes=(
    [mix]="--train-clips 1400 --val-clips 140"
    [mix_uniform]="--train-clips 1400 --val-clips 140 --tower-uniform-attention --lr 1e-3"
    [shape]="--types attribute,static --max-objects 1 --subset-sizes 1 --full-share 0 --eval-frames 1 --tower-uniform-attention --train-clips 600 --val-clips 40"
    [temporal]="--types motion,count,appear --train-clips 900 --val-clips 60"
  )
  local name pids=()
  for name in ${TRAIN_RECIPES:-mix mix_uniform shape temporal}; do
    # shellcheck disable=SC2086
    "$PY" scripts/train_default_model.py --out "$OUT/train_$name" --minutes "$m" "${common[@]}" ${recipes[$name]} ${TRAIN_EXTRA:-} >"$OUT/train_$name.log" 2>&1 &
    pids+=($!)
  done
  local rc=0 pid
  for pid in "${pids[@]}"; do wait "$pid" || rc=1; done
  for name in ${TRAIN_RECIPES:-mix mix_uniform shape temporal}; do echo "-- $name"; grep -E "ms per step|val accuracy|every question" "$OUT/train_$name.log" | tail -n 4; done
  return $rc
}

export PY OUT
export -f tests keytests kernels sweep scores bench train
install >/tmp/gpu_check_install.log 2>&1 || { echo "install failed:"; cat /tmp/gpu_check_install.log; exit 1; }
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv,noheader
"$PY" -c "import torch, triton, transformers; print('torch', torch.__version__, 'triton', triton.__version__, 'transformers', transformers.__version__)"
steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(tests kernels scores bench)
for s in "${steps[@]}"; do
  case $s in
    tests) run_step tests "${TESTS_LIMIT:-200}" tests ;;
    keytests) run_step keytests "${KEYTESTS_LIMIT:-60}" keytests ;;
    sweep) run_step sweep "${SWEEP_LIMIT:-120}" sweep ;;
    kernels) run_step kernels "${KERNELS_LIMIT:-90}" kernels ;;
    scores) run_step scores "${SCORES_LIMIT:-60}" scores ;;
    bench) run_step bench "${BENCH_LIMIT:-240}" bench ;;
    train) run_step train "${TRAIN_LIMIT:-600}" train ;;
    *) echo "unknown step $s (tests, keytests, kernels, sweep, scores, bench, train)"; exit 2 ;;
  esac
done
