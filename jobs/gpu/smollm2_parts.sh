#!/usr/bin/env bash
# jobs/gpu/smollm2_parts.sh — moves the SmolLM2 GGUF (94 MB) to a GPU machine that takes at most 64 MiB per
# transfer: split it here into two parts, send one part per transfer, and reassemble it there under /tmp
# (which keeps the first part until the second arrives).
#
#   here:        bash jobs/gpu/smollm2_parts.sh split      # .smollm2/part.aa, part.ab, SHA256SUMS (git-ignored)
#   first:       send .smollm2/part.aa and SHA256SUMS (with .gpudeps); run_gpu.sh stashes the part
#   second:      send .smollm2/part.ab and SHA256SUMS;  bash jobs/gpu/run_smollm2.sh
#   there:       bash jobs/gpu/smollm2_parts.sh gather     # prints the GGUF path once both parts are there
set -euo pipefail
cd "$(dirname "$0")/../.."
STASH=/tmp/ks-smollm2
case "${1:-}" in
  split)
    gguf=${KS_SMOLLM2_GGUF:-$(bash jobs/smollm2_path.sh)}
    grep -qx '/.smollm2/' .git/info/exclude 2> /dev/null || echo '/.smollm2/' >> .git/info/exclude
    rm -rf .smollm2 && mkdir .smollm2
    # uneven: the first transfer also holds .gpudeps (15 MB), the second only the tree
    head -c 40M "$gguf" > .smollm2/part.aa
    tail -c +$((40 * 1024 * 1024 + 1)) "$gguf" > .smollm2/part.ab
    (cd .smollm2 && sha256sum "$gguf" | sed 's|  .*|  model.gguf|' > SHA256SUMS && ls -l part.*)
    ;;
  gather)
    mkdir -p "$STASH"
    [ -d .smollm2 ] && cp .smollm2/* "$STASH"/ 2> /dev/null || true
    if [ -f "$STASH/part.aa" ] && [ -f "$STASH/part.ab" ] && [ -f "$STASH/SHA256SUMS" ]; then
      cat "$STASH"/part.a? > "$STASH/model.gguf"
      (cd "$STASH" && sha256sum -c --quiet SHA256SUMS) >&2 && echo "$STASH/model.gguf"
    else
      echo "smollm2_parts: $(ls "$STASH" | tr '\n' ' ')— not all parts here yet" >&2
    fi
    ;;
  *) echo "usage: smollm2_parts.sh split|gather" >&2; exit 2 ;;
esac
