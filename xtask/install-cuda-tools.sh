#!/usr/bin/env bash
# Installs the CUDA 13 compile-only toolchain that `cargo xtask kernels` uses (NVRTC, ptxas,
# cuobjdump, nvdisasm) from pip into .venv-cuda/ at the repository root. No GPU or driver
# needed. Idempotent: a venv that already has every package at the pinned version is left as is.
#
# Usage: xtask/install-cuda-tools.sh        (then: cargo xtask kernels)
# xtask finds the toolchain itself; to use another one set MIXTRAL_CUDA_ROOT to a folder with
# lib/libnvrtc.so.13 and bin/ptxas.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv-cuda"
python="${PYTHON:-python3}"

# Pinned: NVRTC and ptxas 13.0 (the CUDA version xtask's cudarc feature `cuda-13000` targets).
# cuobjdump/nvdisasm are the 13.2 wheels the design notes checked (they read 13.0 cubins);
# --no-deps keeps pip from touching the 13.0 packages while installing them.
with_deps=(nvidia-cuda-nvrtc==13.0.88 nvidia-cuda-nvcc==13.0.88 nvidia-cuda-runtime==13.0.96)
no_deps=(nvidia-cuda-cuobjdump==13.2.86 nvidia-cuda-nvdisasm==13.2.86)

if [[ ! -x "$venv/bin/pip" ]]; then
    "$python" -m venv "$venv"
fi

installed() {
    local spec name version
    for spec in "$@"; do
        name="${spec%%==*}" version="${spec##*==}"
        [[ "$("$venv/bin/pip" show "$name" 2>/dev/null | sed -n 's/^Version: //p')" == "$version" ]] ||
            return 1
    done
}

if ! installed "${with_deps[@]}"; then
    "$venv/bin/pip" install --quiet --disable-pip-version-check "${with_deps[@]}"
fi
if ! installed "${no_deps[@]}"; then
    "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps "${no_deps[@]}"
fi

cu13="$(ls -d "$venv"/lib/python3*/site-packages/nvidia/cu13 | tail -n 1)"
for f in lib/libnvrtc.so.13 lib/libnvrtc-builtins.so.13.0 bin/ptxas bin/cuobjdump; do
    [[ -e "$cu13/$f" ]] || { echo "install-cuda-tools: $cu13/$f is missing" >&2; exit 1; }
done
echo "CUDA tools ready in $cu13"
