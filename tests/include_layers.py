#!/usr/bin/env python3
"""Fails when the source folders include each other in a cycle.

Each folder under src/ (and mpi/, kernels/cpu, kernels/cuda) is a node; `#include "x/..."` in a file of folder A
adds the edge A -> x. Layers must point one way, so the graph must have no cycle: on one, this prints every
cycle with a file:line that makes each edge, and exits 1. Usage: include_layers.py [REPO_ROOT]
"""
import os
import re
import sys

INCLUDE = re.compile(r'^\s*#\s*include\s+"([A-Za-z0-9_]+)/[^"]+"')
EXTS = (".c", ".h", ".cu", ".cuh")


def folders(root):
    """Folder name as includes spell it (the part before the first '/') -> its path."""
    out = {}
    for base in ("src", "kernels"):
        for name in sorted(os.listdir(os.path.join(root, base))):
            if os.path.isdir(os.path.join(root, base, name)):
                out[name] = os.path.join(root, base, name)
    out["mpi"] = os.path.join(root, "mpi")
    return out


def edges(root):
    """(A, B) -> first 'file:line' where folder A includes folder B (A != B)."""
    nodes = folders(root)
    found = {}
    for name, path in nodes.items():
        for dirpath, _, files in os.walk(path):
            if os.sep + "bench" in dirpath[len(path):]:  # kernel benchmark programs are not part of the build
                continue
            for f in sorted(files):
                if not f.endswith(EXTS):
                    continue
                full = os.path.join(dirpath, f)
                with open(full, encoding="utf-8", errors="replace") as fh:
                    for lineno, line in enumerate(fh, 1):
                        m = INCLUDE.match(line)
                        if m and m.group(1) in nodes and m.group(1) != name:
                            found.setdefault((name, m.group(1)), f"{os.path.relpath(full, root)}:{lineno}")
    return found


def cycles(found):
    """Every elementary cycle, each listed once from its smallest node."""
    graph = {}
    for a, b in found:
        graph.setdefault(a, set()).add(b)
    result = []

    def walk(start, node, path):
        for nxt in sorted(graph.get(node, ())):
            if nxt == start:
                result.append(path + [start])
            elif nxt > start and nxt not in path:
                walk(start, nxt, path + [nxt])

    for start in sorted(graph):
        walk(start, start, [start])
    return result


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..")
    found = edges(root)
    loops = cycles(found)
    for loop in loops:
        print("include cycle: " + " -> ".join(loop))
        for a, b in zip(loop, loop[1:]):
            print(f"  {a} -> {b}: {found[(a, b)]}")
    if loops:
        print(f"{len(loops)} include cycle(s) between source folders; layers must point one way")
        return 1
    print(f"no include cycle among {len({a for a, _ in found} | {b for _, b in found})} source folders "
          f"({len(found)} folder-to-folder edges)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
