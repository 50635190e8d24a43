#!/usr/bin/env python3
"""Writes tiny random Hugging Face-style models (config.json + safetensors) for the loader and forward tests.

    python3 tests/tools/make_synthetic.py [OUT_DIR]      # default: tests/fixtures/models

Creates, deterministically (fixed seeds, numpy only; safetensors written by hand):
  tiny_llama/   LlamaForCausalLM: 3 layers, hidden 64, 4 heads / 2 KV heads (GQA), head_dim 16 (explicit),
                ffn 96, vocab 300, llama3 rope_scaling (original_max_position_embeddings 64 so the three
                frequency bands all occur), untied lm_head, bf16, sharded in 2 files +
                model.safetensors.index.json, eos_token_id a list.
  tiny_qwen2/   Qwen2ForCausalLM: 2 layers, hidden 64, 4 heads / 2 KV heads, head_dim absent (= 16), ffn 96,
                vocab 300, q/k/v biases, use_sliding_window true with sliding_window 8 and max_window_layers 0
                (every layer slides), tied embeddings (no lm_head tensor), f16, one model.safetensors.
  <name>.samples.json  a few stored weight values per model ({tensor: [[index..., value], ...]}) decoded here
                independently of kvscope, for tests/check_model.c.
"""
import json
import os
import struct
import sys

import numpy as np

HIDDEN, FFN, VOCAB, HEADS, KV_HEADS, HEAD_DIM = 64, 96, 300, 4, 2, 16


def to_bf16_bits(x):
    """float32 -> bf16 bit patterns, round to nearest even (as torch's .to(torch.bfloat16))."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def encode(x, dtype):
    """(raw bytes, decoded float32 values) of array x stored as dtype."""
    if dtype == "BF16":
        bits = to_bf16_bits(x)
        return bits.tobytes(), (bits.astype(np.uint32) << 16).view(np.float32).reshape(x.shape)
    if dtype == "F16":
        h = x.astype(np.float16)
        return h.tobytes(), h.astype(np.float32)
    f = x.astype(np.float32)
    return f.tobytes(), f


def write_safetensors(path, tensors, dtype):
    """tensors: list of (name, float array). Returns {name: decoded float32 array}."""
    header, blobs, decoded, off = {}, [], {}, 0
    for name, x in tensors:
        raw, dec = encode(x, dtype)
        header[name] = {"dtype": dtype, "shape": list(x.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        decoded[name] = dec
        off += len(raw)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)  # the safetensors convention: data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    return decoded


def layer_tensors(rng, l, bias):
    def lin(out_f, in_f):
        return rng.standard_normal((out_f, in_f)).astype(np.float32) / np.sqrt(in_f)

    def norm():
        return (1.0 + 0.1 * rng.standard_normal(HIDDEN)).astype(np.float32)

    p = f"model.layers.{l}."
    t = [(p + "input_layernorm.weight", norm()),
         (p + "self_attn.q_proj.weight", lin(HEADS * HEAD_DIM, HIDDEN)),
         (p + "self_attn.k_proj.weight", lin(KV_HEADS * HEAD_DIM, HIDDEN)),
         (p + "self_attn.v_proj.weight", lin(KV_HEADS * HEAD_DIM, HIDDEN)),
         (p + "self_attn.o_proj.weight", lin(HIDDEN, HEADS * HEAD_DIM))]
    if bias:
        t += [(p + "self_attn.q_proj.bias", 0.1 * rng.standard_normal(HEADS * HEAD_DIM).astype(np.float32)),
              (p + "self_attn.k_proj.bias", 0.1 * rng.standard_normal(KV_HEADS * HEAD_DIM).astype(np.float32)),
              (p + "self_attn.v_proj.bias", 0.1 * rng.standard_normal(KV_HEADS * HEAD_DIM).astype(np.float32))]
    t += [(p + "post_attention_layernorm.weight", norm()),
          (p + "mlp.gate_proj.weight", lin(FFN, HIDDEN)),
          (p + "mlp.up_proj.weight", lin(FFN, HIDDEN)),
          (p + "mlp.down_proj.weight", lin(HIDDEN, FFN))]
    return t


def samples(decoded, names, rng):
    """A few (index..., value) triples per tensor: first, last and two random elements."""
    out = {}
    for n in names:
        a = decoded[n]
        idx = [tuple(0 for _ in a.shape), tuple(s - 1 for s in a.shape)]
        idx += [tuple(int(rng.integers(0, s)) for s in a.shape) for _ in range(2)]
        out[n] = [list(i) + [float(a[i])] for i in idx]
    return out


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=1)
        f.write("\n")


def make_llama(out):
    rng = np.random.default_rng(20240601)
    d = os.path.join(out, "tiny_llama")
    os.makedirs(d, exist_ok=True)
    n_layers = 3
    write_json(os.path.join(d, "config.json"), {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": HIDDEN,
        "intermediate_size": FFN, "num_hidden_layers": n_layers, "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS, "head_dim": HEAD_DIM, "vocab_size": VOCAB,
        "max_position_embeddings": 512, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 64},
        "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": [2, 3], "hidden_act": "silu",
        "attention_bias": False, "mlp_bias": False, "torch_dtype": "bfloat16"})
    embed = (0.5 * rng.standard_normal((VOCAB, HIDDEN))).astype(np.float32)
    shard1 = [("model.embed_tokens.weight", embed)] + layer_tensors(rng, 0, False) + layer_tensors(rng, 1, False)
    shard2 = layer_tensors(rng, 2, False) + [
        ("model.norm.weight", (1.0 + 0.1 * rng.standard_normal(HIDDEN)).astype(np.float32)),
        ("lm_head.weight", (rng.standard_normal((VOCAB, HIDDEN)) / np.sqrt(HIDDEN)).astype(np.float32))]
    files = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    decoded, weight_map = {}, {}
    for fname, tensors in zip(files, [shard1, shard2]):
        decoded.update(write_safetensors(os.path.join(d, fname), tensors, "BF16"))
        weight_map.update({n: fname for n, _ in tensors})
    total = sum(v.size * 2 for v in decoded.values())
    write_json(os.path.join(d, "model.safetensors.index.json"),
               {"metadata": {"total_size": total}, "weight_map": weight_map})
    names = ["model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight",
             "model.layers.2.self_attn.k_proj.weight", "model.layers.1.mlp.down_proj.weight",
             "model.layers.2.post_attention_layernorm.weight", "model.norm.weight", "lm_head.weight"]
    write_json(os.path.join(out, "tiny_llama.samples.json"), samples(decoded, names, rng))


def make_qwen2(out):
    rng = np.random.default_rng(20240602)
    d = os.path.join(out, "tiny_qwen2")
    os.makedirs(d, exist_ok=True)
    n_layers = 2
    write_json(os.path.join(d, "config.json"), {
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": HIDDEN,
        "intermediate_size": FFN, "num_hidden_layers": n_layers, "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS, "vocab_size": VOCAB, "max_position_embeddings": 512,
        "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "rope_scaling": None, "use_sliding_window": True,
        "sliding_window": 8, "max_window_layers": 0, "tie_word_embeddings": True, "bos_token_id": None,
        "eos_token_id": 1, "hidden_act": "silu", "torch_dtype": "float16"})
    tensors = [("model.embed_tokens.weight", (0.5 * rng.standard_normal((VOCAB, HIDDEN))).astype(np.float32))]
    for l in range(n_layers):
        tensors += layer_tensors(rng, l, True)
    tensors.append(("model.norm.weight", (1.0 + 0.1 * rng.standard_normal(HIDDEN)).astype(np.float32)))
    decoded = write_safetensors(os.path.join(d, "model.safetensors"), tensors, "F16")
    names = ["model.embed_tokens.weight", "model.layers.1.self_attn.q_proj.bias",
             "model.layers.0.self_attn.k_proj.bias", "model.layers.1.mlp.gate_proj.weight", "model.norm.weight"]
    write_json(os.path.join(out, "tiny_qwen2.samples.json"), samples(decoded, names, rng))


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "..", "fixtures", "models")
    os.makedirs(out, exist_ok=True)
    make_llama(out)
    make_qwen2(out)


if __name__ == "__main__":
    main()
