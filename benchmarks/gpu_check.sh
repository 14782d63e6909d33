#!/usr/bin/env bash
# The GPU check on a machine with one NVIDIA GPU and no network (PyTorch, torchvision, timm and onnxruntime already
# installed there): install this checkout without dependencies, then run benchmarks/gpu_check.py so that the whole
# run ends within GPU_CHECK_LIMIT_S seconds (default 480 = 8 minutes). Results: benchmarks/results/<gpu>/gpu_check/
# (or --out DIR), gpu_check.log there too (what gpu_check.py prints, no path of this machine in it); every other
# argument goes to gpu_check.py.
#   bash benchmarks/gpu_check.sh [--out DIR] [--sections eager search ...]
set -uo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
limit=${GPU_CHECK_LIMIT_S:-480}
py=${PYTHON:-python3}
echo "gpu_check.sh: $($py -c 'import sys; print(sys.executable, sys.version.split()[0])'); limit ${limit} s"
if $py -m pip install -q --no-deps --no-build-isolation -e . ; then
  export GPU_CHECK_INSTALL='pip install --no-deps --no-build-isolation -e . ok'
else
  echo "gpu_check.sh: pip install -e . failed; gpu_check.py runs from the checkout instead (it puts it on sys.path)"
  export GPU_CHECK_INSTALL='pip install -e . failed; run from the checkout (sys.path)'
fi
used=$(( $(date +%s) - start ))
# NOTE: gpu_check.py starts no row it cannot finish in its budget and stops a running one at the budget; the 45 s
# margin covers the interpreter and CUDA start, and writing the files; `timeout` is the last resort (SIGINT first)
budget=$(( limit - used - 45 ))
exec timeout --signal=INT --kill-after=10 $(( limit - used - 5 )) $py benchmarks/gpu_check.py --budget-s "$budget" "$@"
