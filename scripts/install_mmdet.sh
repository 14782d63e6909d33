#!/usr/bin/env bash
# Install the optional mmdet extra into .venv: mmengine 0.10.7, mmdet 3.3.0 and mmcv 2.1.0 with its C++ ops.
#
# mmcv has no wheels for current torch, so it is built from its sdist with two fixes (see
# ../shared/reference/deps.md section 4): torch >= 2.14 headers need C++20 (mmcv forces C++17), and mmcv's
# setup.py imports pkg_resources (setuptools < 70, no build isolation). The build takes about 14 minutes
# on 2 cores; the wheel is cached (keyed by the torch version it was built against) so a second install
# takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
TORCH=$($PY -c 'import torch; print(torch.__version__.split("+")[0])')
CACHE=${FNA_ZOO_CACHE:-$HOME/.cache/fna_zoo}/wheels/torch-$TORCH
MMCV=2.1.0

# NOTE: mmengine imports pkg_resources at run time (mmdet:: config paths), which setuptools >= 81 dropped;
# torch declares setuptools >= 77. 77..80 satisfies both, so a later `make venv` leaves it in place.
RUNTIME_SETUPTOOLS="setuptools>=77,<81"
$PY -m pip install -q "$RUNTIME_SETUPTOOLS" wheel ninja "mmengine==0.10.7"
wheel=$(ls "$CACHE"/mmcv-$MMCV-*.whl 2>/dev/null | head -n 1 || true)
if [ -z "$wheel" ]; then
    echo "building mmcv $MMCV from source against torch $TORCH (about 14 minutes on 2 cores)..."
    $PY -m pip install -q "setuptools<70"  # mmcv's setup.py itself needs the old pkg_resources (tested recipe)
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    # NOTE: pip prepares the sdist's metadata even for a download; in an isolated build environment that
    # gets the newest setuptools, which has no pkg_resources for mmcv's setup.py, so use the venv's (< 70).
    $PY -m pip download -q --no-deps --no-build-isolation --no-binary :all: "mmcv==$MMCV" -d "$tmp"
    tar xzf "$tmp/mmcv-$MMCV.tar.gz" -C "$tmp"
    sed -i "s/'-std=c++17'/'-std=c++20'/g" "$tmp/mmcv-$MMCV/setup.py"
    MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS=${MAX_JOBS:-2} \
        $PY -m pip wheel -q --no-build-isolation --no-deps "$tmp/mmcv-$MMCV" -w "$tmp/wheel"
    mkdir -p "$CACHE"
    built=$(ls "$tmp"/wheel/mmcv-*.whl)
    cp "$built" "$CACHE/.$(basename "$built").tmp" && mv "$CACHE/.$(basename "$built").tmp" "$CACHE/$(basename "$built")"
    wheel="$CACHE/$(basename "$built")"
fi
$PY -m pip install -q "$wheel" "mmdet==3.3.0" "$RUNTIME_SETUPTOOLS"
$PY -c 'import mmcv, mmdet, mmengine; from mmcv.ops import batched_nms; print("mmdet extra:", mmdet.__version__, "mmcv", mmcv.__version__, "mmengine", mmengine.__version__)'
