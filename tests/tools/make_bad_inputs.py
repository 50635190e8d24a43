#!/usr/bin/env python3
"""Writes the malformed inputs that tests/cli_errors.sh feeds to the kvscope CLI (standard library only).

usage: make_bad_inputs.py OUT_DIR

Each case is a directory or file under OUT_DIR; cli_errors.sh knows which error each must produce.
"""
import json
import os
import struct
import sys

out = sys.argv[1]
os.makedirs(out, exist_ok=True)

LLAMA_CFG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 16, "intermediate_size": 32,
    "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 8,
    "max_position_embeddings": 64, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": True,
}


def write_safetensors(path, tensors):
    """tensors: name -> (shape, dtype 'F32'); data is zeros."""
    header, blobs, off = {}, [], 0
    for name, shape in tensors.items():
        n = 4
        for s in shape:
            n *= s
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [off, off + n]}
        blobs.append(b"\0" * n)
        off += n
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def case_dir(name, cfg=None):
    d = os.path.join(out, name)
    os.makedirs(d, exist_ok=True)
    if cfg is not None:
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(cfg, f)
    return d


def llama_tensors(cfg, q_rows=None):
    D, F, V, hd = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"], 8
    H, Hk = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    t = {"model.embed_tokens.weight": (V, D), "model.norm.weight": (D,)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        t.update({p + "input_layernorm.weight": (D,), p + "post_attention_layernorm.weight": (D,),
                  p + "self_attn.q_proj.weight": (q_rows or H * hd, D), p + "self_attn.k_proj.weight": (Hk * hd, D),
                  p + "self_attn.v_proj.weight": (Hk * hd, D), p + "self_attn.o_proj.weight": (D, H * hd),
                  p + "mlp.gate_proj.weight": (F, D), p + "mlp.up_proj.weight": (F, D),
                  p + "mlp.down_proj.weight": (D, F)})
    return t


# 1. a model directory without config.json
case_dir("no_config")
write_safetensors(os.path.join(out, "no_config", "model.safetensors"), {"x": (2,)})

# 2. safetensors whose header claims more bytes than the file has
d = case_dir("truncated_header", LLAMA_CFG)
with open(os.path.join(d, "model.safetensors"), "wb") as f:
    f.write(struct.pack("<Q", 4096) + b'{"model.norm.weight": {"dtype"')

# 3. q_proj with the wrong number of rows
d = case_dir("shape_mismatch", LLAMA_CFG)
write_safetensors(os.path.join(d, "model.safetensors"), llama_tensors(LLAMA_CFG, q_rows=12))

# 4. an architecture kvscope does not implement
cfg = dict(LLAMA_CFG, model_type="gpt_neox", architectures=["GPTNeoXForCausalLM"])
d = case_dir("bad_arch", cfg)
write_safetensors(os.path.join(d, "model.safetensors"), llama_tensors(LLAMA_CFG))


# 5. a GGUF v3 whose only tensor has GGML type 16 (IQ2_XXS), which kvscope does not dequantize
def gguf_str(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


kv = [("general.architecture", 8, gguf_str("llama")), ("llama.block_count", 4, struct.pack("<I", 1))]
body = b"GGUF" + struct.pack("<IQQ", 3, 1, len(kv))
for k, t, v in kv:
    body += gguf_str(k) + struct.pack("<I", t) + v
body += gguf_str("token_embd.weight") + struct.pack("<I", 2) + struct.pack("<QQ", 256, 4)
body += struct.pack("<I", 16) + struct.pack("<Q", 0)
body += b"\0" * (-len(body) % 32) + b"\0" * 4096
with open(os.path.join(out, "unknown_quant.gguf"), "wb") as f:
    f.write(body)

# 6. a tokenizer.json whose model type is not BPE
with open(os.path.join(out, "wordpiece_tokenizer.json"), "w") as f:
    json.dump({"version": "1.0", "added_tokens": [], "normalizer": None, "pre_tokenizer": None,
               "post_processor": None, "decoder": None,
               "model": {"type": "WordPiece", "unk_token": "[UNK]", "vocab": {"[UNK]": 0, "a": 1}}}, f)
with open(os.path.join(out, "text.jsonl"), "w") as f:
    f.write('{"text": "a"}\n')
