#!/usr/bin/env python3
"""same_results.py - whether kvscope runs wrote the same results: every sample's prediction, generated-token count
and score, and every per-layer statistics row (in any order), against a reference run. Each run is a result
directory holding one .h5 file.

    python3 tests/tools/same_results.py LABEL REFERENCE_DIR OTHER_DIR [OTHER_DIR ...]

Prints one `ok:` line, or exits non-zero naming the first run that differs. Needs: pip install h5py.
"""
import glob
import os
import sys

import h5py


def load(run_dir):
    (path,) = glob.glob(f"{run_dir}/*.h5")
    with h5py.File(path, "r") as f:
        s = {k: (d.asstr()[()] if d.dtype.kind in "SO" else d[()]).tolist() for k, d in f["samples"].items()}
        l = {k: (d.asstr()[()] if d.dtype.kind in "SO" else d[()]).tolist() for k, d in f["layers"].items()}
    key = lambda i: (s["task"][i], s["length"][i], s["index"][i])
    samples = {key(i): (s["prediction"][i], s["generated_tokens"][i], s["score"][i]) for i in range(len(s["task"]))}
    drop = {"sample"}  # the row number in /samples, which follows the commit order
    cols = sorted(c for c in l if c not in drop)
    layers = sorted(tuple(l[c][i] for c in cols) for i in range(len(l["task"])))
    return samples, layers


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    label, ref_dir, others = sys.argv[1], sys.argv[2], sys.argv[3:]
    ref = load(ref_dir)
    assert len(ref[0]) > 0, f"{label}: the reference run {ref_dir} wrote no samples"
    names = [os.path.basename(os.path.normpath(d)) for d in others]
    for name, d in zip(names, others):
        other = load(d)
        assert other[0] == ref[0], f"{label} {name}: samples differ from the reference:\n{other[0]}\nvs\n{ref[0]}"
        assert other[1] == ref[1], f"{label} {name}: per-layer statistics differ from the reference"
    print(f"ok: {label}: {len(ref[0])} samples and {len(ref[1])} layer rows equal for "
          f"{os.path.basename(os.path.normpath(ref_dir))} and {', '.join(names)}")


if __name__ == "__main__":
    main()
