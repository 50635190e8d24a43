# shellcheck shell=bash
# jobs/gpu/env.sh — sourced by the GPU-machine scripts (run_gpu.sh, run_methods.sh, run_smollm2.sh,
# ab_bench.sh, profile_decode.sh) and usable on its own (`source jobs/gpu/env.sh`) before a CUDA build:
#   - when $KS_DEBS_DIR (default `debs`, relative to the repository root) holds .deb files, as
#     jobs/gpu/fetch_debs.sh downloads them, unpacks them into the private prefix $KS_PREFIX (default
#     /tmp/ks-prefix; never into /, no root needed) and points pkg-config at it; without .debs it reuses a
#     prefix unpacked earlier, else the system's packages alone are used;
#   - finds NCCL where the system lacks it in the standard places (e.g. only inside a PyTorch environment's
#     nvidia-nccl wheel) and sets NCCL_ROOT;
#   - sets RUNTIME_LIBS, the library path the programs built this way need (the scripts add it to
#     LD_LIBRARY_PATH).
KS_DEBS_DIR="${KS_DEBS_DIR:-debs}"
KS_PREFIX="${KS_PREFIX:-/tmp/ks-prefix}"
declare -F say > /dev/null || say() { echo "[gpu-env $(date +%T)] $*"; }
if ls "$KS_DEBS_DIR"/*.deb > /dev/null 2>&1; then
  rm -rf "$KS_PREFIX" && mkdir -p "$KS_PREFIX/bin"
  for f in "$KS_DEBS_DIR"/*.deb; do dpkg -x "$f" "$KS_PREFIX"; done
  # The .pc files say /usr; point them at the prefix.
  find "$KS_PREFIX" -name '*.pc' -exec sed -i "s|=/usr|=$KS_PREFIX/usr|g" {} +
elif [ -d "$KS_PREFIX/usr" ]; then
  say "no .debs in $KS_DEBS_DIR; using the prefix unpacked earlier in $KS_PREFIX"
else
  say "no .debs in $KS_DEBS_DIR (KS_DEBS_DIR); using the system's packages only"
  mkdir -p "$KS_PREFIX/bin"
fi
L="$KS_PREFIX/usr/lib/x86_64-linux-gnu"
# Debian selects OpenBLAS's variant through update-alternatives, which dpkg -x does not run: use the pthread
# variant's own .pc and library directly.
export PKG_CONFIG_PATH="$L/pkgconfig:$L/openblas-pthread/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
RUNTIME_LIBS="$L:$L/openblas-pthread"
if ! command -v pkg-config > /dev/null && [ -x "$KS_PREFIX/usr/bin/pkgconf" ]; then
  printf '#!/bin/sh\nLD_LIBRARY_PATH=%s exec %s "$@"\n' "$L" "$KS_PREFIX/usr/bin/pkgconf" > "$KS_PREFIX/bin/pkg-config"
  chmod +x "$KS_PREFIX/bin/pkg-config"
  export PATH="$KS_PREFIX/bin:$PATH"
fi
# NCCL: a CUDA image may have it only inside PyTorch's environment (nvidia-nccl wheel, libnccl.so.2).
if [ ! -e /usr/include/nccl.h ] && [ ! -e /usr/local/cuda/include/nccl.h ] && [ -z "${NCCL_ROOT:-}" ]; then
  inc=$(find /usr /opt -name nccl.h -path '*nccl*' 2> /dev/null | head -1)
  lib=$(find /usr /opt -name 'libnccl.so*' 2> /dev/null | head -1)
  if [ -n "$inc" ] && [ -n "$lib" ]; then
    mkdir -p "$KS_PREFIX/nccl/lib" && ln -sfn "$(dirname "$inc")" "$KS_PREFIX/nccl/include"
    ln -sf "$lib" "$KS_PREFIX/nccl/lib/libnccl.so" && ln -sf "$lib" "$KS_PREFIX/nccl/lib/libnccl.so.2"
    export NCCL_ROOT="$KS_PREFIX/nccl"
    RUNTIME_LIBS="$RUNTIME_LIBS:$KS_PREFIX/nccl/lib"
    say "NCCL from $lib"
  else
    say "NCCL not found on this machine (configure will say so)"
  fi
fi
