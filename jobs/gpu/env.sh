# jobs/gpu/env.sh — sourced by the GPU-machine scripts (run_gpu.sh, run_methods.sh): unpacks the .debs in
# .gpudeps (from jobs/gpu/fetch_debs.sh), if any, into the private prefix $P (never into /; kept in /tmp between
# runs), points pkg-config at it, finds NCCL, and sets RUNTIME_LIBS (the library path the programs need).
P="${P:-/tmp/ks-prefix}"
declare -F say > /dev/null || say() { echo "[gpu-env $(date +%T)] $*"; }
if ls .gpudeps/*.deb > /dev/null 2>&1; then
  rm -rf "$P" && mkdir -p "$P/bin"
  for f in .gpudeps/*.deb; do dpkg -x "$f" "$P"; done
  # The .pc files say /usr; point them at the prefix.
  find "$P" -name '*.pc' -exec sed -i "s|=/usr|=$P/usr|g" {} +
elif [ -d "$P/usr" ]; then
  say "no .gpudeps here; reusing the prefix an earlier call unpacked in $P"
else
  say "no .gpudeps/*.deb (jobs/gpu/fetch_debs.sh makes them on a machine with apt); using the system only"
  mkdir -p "$P/bin"
fi
L="$P/usr/lib/x86_64-linux-gnu"
# Debian selects OpenBLAS's variant through update-alternatives, which dpkg -x does not run: use the pthread
# variant's own .pc and library directly.
export PKG_CONFIG_PATH="$L/pkgconfig:$L/openblas-pthread/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
RUNTIME_LIBS="$L:$L/openblas-pthread"
if ! command -v pkg-config > /dev/null && [ -x "$P/usr/bin/pkgconf" ]; then
  printf '#!/bin/sh\nLD_LIBRARY_PATH=%s exec %s "$@"\n' "$L" "$P/usr/bin/pkgconf" > "$P/bin/pkg-config"
  chmod +x "$P/bin/pkg-config"
  export PATH="$P/bin:$PATH"
fi
# NCCL: the CUDA image may have it only inside PyTorch's environment (nvidia-nccl wheel, libnccl.so.2).
if [ ! -e /usr/include/nccl.h ] && [ ! -e /usr/local/cuda/include/nccl.h ] && [ -z "${NCCL_ROOT:-}" ]; then
  inc=$(find /usr /opt -name nccl.h -path '*nccl*' 2> /dev/null | head -1)
  lib=$(find /usr /opt -name 'libnccl.so*' 2> /dev/null | head -1)
  if [ -n "$inc" ] && [ -n "$lib" ]; then
    mkdir -p "$P/nccl/lib" && ln -sfn "$(dirname "$inc")" "$P/nccl/include"
    ln -sf "$lib" "$P/nccl/lib/libnccl.so" && ln -sf "$lib" "$P/nccl/lib/libnccl.so.2"
    export NCCL_ROOT="$P/nccl"
    RUNTIME_LIBS="$RUNTIME_LIBS:$P/nccl/lib"
    say "NCCL from $lib"
  else
    say "NCCL not found on this machine (configure will say so)"
  fi
fi

