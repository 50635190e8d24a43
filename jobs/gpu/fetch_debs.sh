#!/usr/bin/env bash
# jobs/gpu/fetch_debs.sh — for a GPU machine that cannot install packages (no network, or no root): on a
# Debian/Ubuntu machine with apt and the same release, downloads the .deb files of the libraries kvscope builds
# against that a CUDA image usually lacks (the list below, plus any package named on the command line) into
# KS_DEBS_DIR (default `debs`, git-ignored). Copy that folder into the repository on the GPU machine (or point
# KS_DEBS_DIR at it there): jobs/gpu/env.sh, which every jobs/gpu script sources, unpacks it into a private
# prefix (never into /) and points pkg-config at it. The GPU machine must already have the CUDA toolkit and
# NCCL, cmake, a C compiler and HDF5 (MPI for runs over several ranks), as CUDA images do; name any it lacks
# as EXTRA packages.
#   bash jobs/gpu/fetch_debs.sh [EXTRA_PACKAGE...]      # KS_DEBS_DIR=/path/to/folder to download elsewhere
set -euo pipefail
cd "$(dirname "$0")/../.."
KS_DEBS_DIR="${KS_DEBS_DIR:-debs}"
mkdir -p "$KS_DEBS_DIR"
PKGS="libyaml-dev libyaml-0-2 check libsubunit-dev libsubunit0 libcjson-dev libcjson1 libutf8proc-dev libutf8proc2
      libpcre2-dev libpcre2-8-0 libpcre2-16-0 libpcre2-32-0 libpcre2-posix3 libopenblas-dev libopenblas-pthread-dev
      libopenblas0-pthread libopenblas0 libgfortran5 pkgconf pkgconf-bin libpkgconf3 $*"
[ -n "$(ls "$KS_DEBS_DIR"/*.deb 2>/dev/null)" ] || apt-get update -qq
# apt-get download writes into the current directory; as root it warns that _apt cannot sandbox it.
(cd "$KS_DEBS_DIR" && apt-get download $PKGS 2>&1 | grep -v '^W: Download is performed unsandboxed' || true)
ls "$KS_DEBS_DIR"/*.deb | wc -l | xargs echo "[fetch_debs] .debs in $KS_DEBS_DIR:"
