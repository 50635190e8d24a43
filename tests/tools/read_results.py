#!/usr/bin/env python3
"""read_results.py - read a kvscope result file with h5py and pandas alone (no kvscope), check its layout,
and print a summary: the run's attributes, the score table (rows = length, columns = task) and the mean
compression per layer.

    python3 tests/tools/read_results.py results/model_RULER_SnapKV.h5 [--csv samples.csv]

Exits non-zero when the file does not follow the layout documented in src/results/results.h.
Needs: pip install h5py pandas.
"""
import argparse
import json
import sys

import h5py
import pandas as pd


def read_table(group):
    """A group of equal-length 1-D column datasets -> DataFrame (strings decoded as UTF-8)."""
    columns = {}
    for name, ds in group.items():
        columns[name] = ds.asstr()[()] if ds.dtype.kind in "SO" else ds[()]
    lengths = {name: len(v) for name, v in columns.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"/{group.name}: columns differ in length: {lengths}")
    return pd.DataFrame(columns)


def decode(value):
    return value.decode("utf-8") if isinstance(value, bytes) else value


def check(attrs, samples, layers):
    """The invariants kvscope guarantees; raises ValueError on the first broken one."""
    if attrs.get("kvscope_format") != "kvscope-results":
        raise ValueError("not a kvscope result file (kvscope_format attribute)")
    if int(attrs.get("format_version", 0)) != 1:
        raise ValueError(f"unexpected format_version {attrs.get('format_version')}")
    keys = ["task", "length", "index"]
    if samples.duplicated(keys).any():
        raise ValueError("a (task, length, index) appears twice in /samples")
    for text in samples["answers"]:
        if not isinstance(json.loads(text), list):
            raise ValueError(f"answers is not a JSON array: {text!r}")
    if len(layers):
        if not layers["sample"].between(0, len(samples) - 1).all():
            raise ValueError("/layers/sample points outside /samples")
        owner = samples.iloc[layers["sample"].to_numpy()][keys].reset_index(drop=True)
        if not owner.equals(layers[keys].reset_index(drop=True)):
            raise ValueError("/layers keys do not match the /samples rows they point to")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("path")
    ap.add_argument("--csv", help="also write /samples as CSV")
    args = ap.parse_args()
    with h5py.File(args.path, "r") as f:
        attrs = {k: decode(f.attrs[k]) for k in f.attrs}
        samples = read_table(f["samples"])
        layers = read_table(f["layers"])
    try:
        check(attrs, samples, layers)
    except ValueError as e:
        print(f"{args.path}: {e}", file=sys.stderr)
        return 1
    label = " / ".join(str(attrs.get(k, "")) for k in ("model", "benchmark", "method"))
    print(f"{args.path}: {label}: {len(samples)} samples, {len(layers)} layer rows, "
          f"{attrs.get('sessions')} session(s), wall {float(attrs.get('wall_seconds', 0)):.1f} s")
    if len(samples):
        table = samples.pivot_table(index="length", columns="task", values="score", aggfunc="mean")
        table["Avg"] = samples.groupby("length")["score"].mean()
        print(table.round(2).to_string())
    if len(layers):
        kept = layers[layers["kv_head"] == -1].groupby("layer")[["budget", "kept", "attn_mass_kept"]].mean()
        if len(kept):
            print(kept.round(3).to_string())
    if args.csv:
        samples.to_csv(args.csv, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
