#!/usr/bin/env bash
# jobs/gpu/fetch_debs.sh — run HERE (a Debian machine with apt), before jobs/gpu/run_gpu.sh is sent to a GPU
# machine that cannot reach any package registry and lacks some -dev packages. Downloads the .debs into
# ./.gpudeps (git-ignored through .git/info/exclude); copy that folder to the GPU machine with the tree and
# run_gpu.sh unpacks it into a private prefix there (never into /).
#   bash jobs/gpu/fetch_debs.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx '/.gpudeps/' .git/info/exclude 2>/dev/null || echo '/.gpudeps/' >> .git/info/exclude
mkdir -p .gpudeps
PKGS="libyaml-dev libyaml-0-2 check libsubunit-dev libsubunit0 libcjson-dev libcjson1 libutf8proc-dev libutf8proc2
      libpcre2-dev libpcre2-8-0 libpcre2-16-0 libpcre2-32-0 libpcre2-posix3 libopenblas-dev libopenblas-pthread-dev
      libopenblas0-pthread libopenblas0 libgfortran5 pkgconf pkgconf-bin libpkgconf3"
[ -n "$(ls .gpudeps/*.deb 2>/dev/null)" ] || apt-get update -qq
# apt-get download writes into the current directory; as root it warns that _apt cannot sandbox it.
(cd .gpudeps && apt-get download $PKGS 2>&1 | grep -v '^W: Download is performed unsandboxed' || true)
ls .gpudeps/*.deb | wc -l | xargs echo "[fetch_debs] .debs in .gpudeps:"
