#!/usr/bin/env bash
# Every check that needs CUDA, as one command for a GPU machine, in under 10 minutes on one GPU:
#
#   1. tests/test_cuda_sync.py: hot loops make no host synchronization (sync-debug mode "error");
#   2. bf16 vs fp32 on CUDA: the smoke suite's retrain, finetune, nabla_tau, mnemonic and the
#      L2UL family under --precision fp32 and bf16, paired by scripts/compare_precision.py
#      (test accuracy within 3 points, steps within 3 %); both unlearn an fp32-trained original
#      (--pretrain-precision's default), so that the pair compares the methods' precision;
#   3. a one-seed l2ul-cifar10 (ResNet-18, the paper's recipe and attack, k = 16, the five
#      D_f-only methods; retraining is left out: it is a 200-epoch pretraining per run);
#   4. the benchmarks (pytest-benchmark; GPU throughput, FLOP/s and fraction of the bf16 peak),
#      without the 120-run suite benchmark, which alone takes about 15 minutes.
#
# Each step has its own time limit (seconds, overridable; 560 s in all) so that the whole stays under
# 10 minutes; runs of step 3 are resumable, so a second invocation continues where the
# first one stopped. Numbers are printed at the end and kept under $OUT (default
# results/gpu-check).
#
# Offline GPU nodes: run scripts/gpu-prepare.sh first, on a machine with network access. It fills
# the git-ignored offline/ with the wheels of what a stock PyTorch image lacks (submitit, optuna
# and their dependencies, for CPython 3.12) and the CIFAR-10 JPEG copy; carry offline/ along.
# This script installs the missing packages from offline/wheels with pip --no-index --target
# offline/site (no network), and reads the data from offline/cifar10-jpeg.
#
#   bash scripts/gpu-check.sh                    # offline/ from gpu-prepare.sh
#   BENCH_DATA=data bash scripts/gpu-check.sh    # another folder holding cifar10-jpeg/
set -uo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-results/gpu-check}
OFFLINE=${OFFLINE:-offline}
if [ -z "${BENCH_DATA:-}" ]; then
  if [ -d "$OFFLINE/cifar10-jpeg" ]; then BENCH_DATA=$OFFLINE; else BENCH_DATA=data; fi
fi
export BENCH_DATA
T_TESTS=${T_TESTS:-60}
T_SMOKE=${T_SMOKE:-60}
T_SUITE=${T_SUITE:-210}
T_BENCH=${T_BENCH:-110}
mkdir -p "$OUT"
status=0

# Offline installs: the wheels from gpu-prepare.sh of every distribution this Python lacks,
# without the network and without touching the image's own packages (--target, --no-deps).
if ! python3 -c 'import submitit, optuna' 2>/dev/null; then
  if [ -d "$OFFLINE/wheels" ]; then
    mapfile -t wheels < <(python3 scripts/missing_wheels.py "$OFFLINE/wheels")
    echo "gpu-check: installing ${#wheels[@]} wheel(s) from $OFFLINE/wheels into $OFFLINE/site"
    python3 -m pip install --quiet --disable-pip-version-check --no-index --no-deps \
      --target "$OFFLINE/site" "${wheels[@]}" || echo "gpu-check: offline install failed" >&2
  fi
  export PYTHONPATH="$PWD/$OFFLINE/site${PYTHONPATH:+:$PYTHONPATH}"
  python3 -c 'import submitit, optuna' \
    || echo "gpu-check: submitit/optuna unavailable; local runs need neither" >&2
fi
python3 -c 'import sys, torch; print(f"gpu-check: Python {sys.version.split()[0]}, torch {torch.__version__}")'

if ! python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "gpu-check: no CUDA device here; nothing to check" >&2
  exit 2
fi
python3 -c 'import torch; p = torch.cuda.get_device_properties(0); print(f"gpu-check: {p.name}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}")'
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || true

step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to $OUT/NAME.log
  local name=$1 limit=$2
  shift 2
  local t0=$SECONDS
  echo "== $name (limit ${limit}s)"
  timeout --signal=INT --kill-after=20 "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  echo "$name: exit $rc after $((SECONDS - t0)) s" | tee -a "$OUT/summary.txt"
  tail -n 25 "$OUT/$name.log"
  [ "$rc" -eq 0 ] || status=1
}

: >"$OUT/summary.txt"
step cuda-tests "$T_TESTS" python3 -m pytest -q -p no:cacheprovider \
  tests/test_cuda_sync.py tests/test_runtime.py

SMOKE_METHODS=retrain,finetune,nabla_tau,mnemonic,neggrad,adv_only,mas_only,adv_mas
for prec in fp32 bf16; do
  step "smoke-$prec" "$T_SMOKE" python3 -m bench.run --suite smoke --method "$SMOKE_METHODS" \
    --device cuda --precision "$prec" --out "$OUT/smoke-$prec" --no-progress --no-report
done
step bf16-vs-fp32 60 python3 scripts/compare_precision.py "$OUT/smoke-fp32" "$OUT/smoke-bf16"

if [ -d "$BENCH_DATA/cifar10-jpeg" ]; then
  step l2ul-cifar10-seed0 "$T_SUITE" python3 -m bench.run --suite l2ul-cifar10 --seeds 0 \
    --forget 16 --method neggrad,random_labels,adv_only,mas_only,adv_mas \
    --data-root "$BENCH_DATA" --out "$OUT/l2ul-cifar10" --no-progress
else
  echo "l2ul-cifar10-seed0: skipped, no $BENCH_DATA/cifar10-jpeg" | tee -a "$OUT/summary.txt"
  status=1
fi

step benchmarks "$T_BENCH" python3 -m pytest -q -p no:cacheprovider benchmarks/ \
  -k "not l2ul_cifar10_suite_gpu" --benchmark-columns=mean,stddev,rounds

echo "== summary"
cat "$OUT/summary.txt"
sed -n '/unlearning-bench performance/,$p' "$OUT/benchmarks.log"
exit "$status"
