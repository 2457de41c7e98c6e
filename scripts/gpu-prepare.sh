#!/usr/bin/env bash
# Prepare this checkout for an offline GPU node, in one command, on a machine with network access.
#
# It fills the git-ignored folder offline/ (override: OFFLINE=DIR) with what scripts/gpu-check.sh
# needs that a stock PyTorch image lacks:
#   offline/wheels/        submitit and optuna, and their dependencies, as wheels for the GPU
#                          node's Python (default CPython 3.12, manylinux x86-64; override:
#                          GPU_PYTHON=3.11): pip download only, nothing is installed here;
#   offline/cifar10-jpeg/  the CIFAR-10 JPEG copy (from SHARED_DATA, default ../shared/data);
#   offline/weights/       the CIFAR-10 ResNet-20 checkpoint fitted to that copy.
# Then it prints the folder's size and the checkout's: together they must fit the 64 MiB that
# travel to the GPU machine (carry: ["offline"]), and the script fails if they do not.
#
#   bash scripts/gpu-prepare.sh
#   # on the GPU node, from the checkout:
#   bash scripts/gpu-check.sh          # finds offline/ by itself
set -euo pipefail
cd "$(dirname "$0")/.."

OFFLINE=${OFFLINE:-offline}
GPU_PYTHON=${GPU_PYTHON:-3.12}
SHARED_DATA=${SHARED_DATA:-../shared/data}
LIMIT_MIB=${LIMIT_MIB:-64}
PACKAGES=(submitit optuna)

abi="cp${GPU_PYTHON/./}"
mkdir -p "$OFFLINE/wheels"
echo "gpu-prepare: wheels of ${PACKAGES[*]} for CPython $GPU_PYTHON (manylinux x86-64) -> $OFFLINE/wheels"
python3 -m pip download --quiet --disable-pip-version-check --dest "$OFFLINE/wheels" \
  --only-binary=:all: --implementation cp --python-version "$GPU_PYTHON" --abi "$abi" \
  --abi abi3 --abi none \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform any \
  "${PACKAGES[@]}" 2> >(grep -v "WARNING: Location .* is ignored" >&2)
for pkg in "${PACKAGES[@]}"; do
  if ! ls "$OFFLINE/wheels/" | grep -qi "^${pkg}-.*\.whl$"; then
    echo "gpu-prepare: no $pkg wheel was downloaded" >&2
    exit 1
  fi
done

for item in cifar10-jpeg weights; do
  if [ ! -d "$SHARED_DATA/$item" ]; then
    echo "gpu-prepare: $SHARED_DATA/$item is missing (set SHARED_DATA=<folder holding it>)" >&2
    exit 1
  fi
  rm -rf "${OFFLINE:?}/$item"
  cp -r "$SHARED_DATA/$item" "$OFFLINE/$item"
  chmod -R u+w "$OFFLINE/$item"
done

if ! git check-ignore -q "$OFFLINE/wheels"; then
  echo "gpu-prepare: warning: $OFFLINE/ is not git-ignored; name it in carry by hand" >&2
fi
kib() { du -sk "$@" | awk '{s += $1} END {print s}'; }
folder=$(kib "$OFFLINE")
# the checkout as it travels: tracked and untracked-but-not-ignored files
checkout=$(git ls-files -z --cached --others --exclude-standard | du -sk --files0-from=- -c \
  | tail -n 1 | awk '{print $1}')
total=$((folder + checkout))
ls -1 "$OFFLINE/wheels"
mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }
echo "gpu-prepare: $OFFLINE/ $(mib "$folder") MiB (wheels $(mib "$(kib "$OFFLINE/wheels")"), data" \
  "$(mib "$(kib "$OFFLINE/cifar10-jpeg" "$OFFLINE/weights")")) + checkout $(mib "$checkout") MiB" \
  "= $(mib "$total") MiB (limit $LIMIT_MIB MiB)"
if [ "$total" -gt $((LIMIT_MIB * 1024)) ]; then
  echo "gpu-prepare: over the ${LIMIT_MIB} MiB that travel to the GPU machine" >&2
  exit 1
fi
echo "gpu-prepare: done; carry [\"$OFFLINE\"] and run: bash scripts/gpu-check.sh"
