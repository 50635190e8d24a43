#!/usr/bin/env python3
"""Fails when the source folders include each other in a cycle.

Each folder under src/ (and mpi/, kernels/cpu, kernels/cuda) is a node; `#include "x/..."` in a file of folder A
adds the edge A -> x. The headers lying directly in the other include roots, kernels/ (its node "kernels") and
mpi/, are included by bare name: `#include "kv_args.h"` in folder A adds the edge A -> kernels. Layers must
point one way, so the graph must have no cycle: on one, this prints every cycle with a file:line that makes
each edge, and exits 1. Usage: include_layers.py [REPO_ROOT]
"""
import os
import re
import sys

INCLUDE = re.compile(r'^\s*#\s*include\s+"([A-Za-z0-9_]+)/[^"]+"')
BARE = re.compile(r'^\s*#\s*include\s+"([A-Za-z0-9_.]+)"')
ROOTS = ("kernels", "mpi")  # include roots besides src/ whose own files are included by bare name
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


def bare_headers(root):
    """Header name -> node, for the headers lying directly in an include root (kernels/kv_args.h -> kernels)."""
    out = {}
    for base in ROOTS:
        for f in sorted(os.listdir(os.path.join(root, base))):
            if f.endswith((".h", ".cuh")) and os.path.isfile(os.path.join(root, base, f)):
                out[f] = base
    return out


def walk_files(path, skip_subfolders):
    """The source files of a node's folder (with skip_subfolders, only those directly in it)."""
    for dirpath, dirs, files in os.walk(path):
        if skip_subfolders:
            dirs[:] = []
        for f in sorted(files):
            if f.endswith(EXTS):
                yield dirpath, f


def edges(root):
    """(A, B) -> first 'file:line' where folder A includes folder B (A != B)."""
    nodes = folders(root)
    nodes["kernels"] = os.path.join(root, "kernels")  # its own files only: cpu/ and cuda/ are nodes of their own
    bare = bare_headers(root)
    found = {}
    for name, path in nodes.items():
        for dirpath, f in walk_files(path, name == "kernels"):
            if os.sep + "bench" in dirpath[len(path):]:  # kernel benchmark programs are not part of the build
                continue
            full = os.path.join(dirpath, f)
            with open(full, encoding="utf-8", errors="replace") as fh:
                for lineno, line in enumerate(fh, 1):
                    m = INCLUDE.match(line)
                    b = BARE.match(line)
                    to = m.group(1) if m else bare.get(b.group(1)) if b else None
                    # a bare name is a file of the including folder first (the compiler's rule)
                    if b and os.path.exists(os.path.join(dirpath, b.group(1))):
                        to = None
                    if to in nodes and to != name:
                        found.setdefault((name, to), f"{os.path.relpath(full, root)}:{lineno}")
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
