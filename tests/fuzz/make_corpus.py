#!/usr/bin/env python3
"""make_corpus.py — seed corpora for the libFuzzer targets in tests/fuzz (docs/fuzzing.md).

    python3 tests/fuzz/make_corpus.py OUT_DIR [--gguf SMOLLM2.gguf]

Writes OUT_DIR/<target>/<seed> for every target (the names of fuzz_<target>.c) and a libFuzzer dictionary
OUT_DIR/<target>.dict (the keys, names and edge values the readers compare against). Seeds come from the
repository's files (tests/fixtures, configs/), from the SmolLM2 GGUF that jobs/setup.sh installs (only its first
16 KB and its metadata with the vocabulary trimmed; skipped with a note when the file is absent), and from
small valid inputs built here. No seed exceeds 40 KB, which keeps libFuzzer's default input length small.
Standard library only. Existing seeds are overwritten; the fuzzer adds its own files next to them.
"""
import argparse
import json
import os
import struct
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")


def write(out, target, name, data):
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def read(path, limit=None):
    with open(path, "rb") as f:
        return f.read(limit) if limit else f.read()


def rng_bytes(n, seed):
    """Deterministic filler bytes (a 32-bit LCG), so seeds are identical from run to run."""
    out, x = bytearray(n), seed or 1
    for i in range(n):
        x = (x * 1103515245 + 12345) & 0xFFFFFFFF
        out[i] = x >> 16 & 0xFF
    return bytes(out)


def write_dict(out, target, tokens):
    """OUT_DIR/<target>.dict for libFuzzer's -dict: one quoted token a line (jobs/fuzz.sh passes it)."""
    def quote(b):
        return '"' + "".join(chr(c) if 0x20 <= c < 0x7F and c not in b'"\\' else "\\x%02x" % c for c in b) + '"'
    tokens = sorted({t.encode() if isinstance(t, str) else t for t in tokens} - {b""})
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, target + ".dict"), "w") as f:
        f.write("".join(quote(t) + "\n" for t in tokens))


def json_tokens(doc):
    """Every key and string value of a JSON document, quoted as they appear in JSON text."""
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield json.dumps(k)
            yield from json_tokens(v)
    elif isinstance(doc, list):
        for v in doc:
            yield from json_tokens(v)
    elif isinstance(doc, str) and len(doc) < 40:
        yield json.dumps(doc)


# Numbers and literals that sit on the edges parsers check: integer and float limits, exponents, NaN-likes.
EDGE_NUMBERS = ["0", "-1", "1e10", "-1e10", "2147483647", "2147483648", "-2147483649", "4294967296",
                "9007199254740993", "1e308", "1e999", "-1e999", "1e-310", "0.5", "-0.0", "1.5e-45", "65536"]
JSON_LITERALS = ["null", "true", "false", "[]", "{}", '""', "[null]", "[[]]"]


# ---- GGUF ---------------------------------------------------------------------------------------------------

U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
SCALAR_FMT = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f", BOOL: "<B", U64: "<Q",
              I64: "<q", F64: "<d"}
# GGML type id: (elements per block, bytes per block)
GGML = {"F32": (0, 1, 4), "F16": (1, 1, 2), "Q4_0": (2, 32, 18), "Q4_1": (3, 32, 20), "Q8_0": (8, 32, 34),
        "BF16": (30, 1, 2)}


def gguf_str(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def gguf_value(t, v):
    if t == STR:
        return gguf_str(v)
    if t == ARR:
        et, items = v
        return struct.pack("<IQ", et, len(items)) + b"".join(gguf_value(et, x) for x in items)
    return struct.pack(SCALAR_FMT[t], v)


def gguf_file(kvs, tensors, alignment=32):
    """kvs: [(key, type, value)]; tensors: [(name, ggml type name, ne (GGML order), data)]."""
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs))
    for key, t, v in kvs:
        head += gguf_str(key) + struct.pack("<I", t) + gguf_value(t, v)
    data = b""
    for name, tname, ne, blob in tensors:
        data += b"\0" * (-len(data) % alignment)
        head += gguf_str(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", n) for n in ne)
        head += struct.pack("<IQ", GGML[tname][0], len(data))
        data += blob
    return head + b"\0" * (-len(head) % alignment) + data


def tensor_blob(tname, ne, seed):
    """Valid data for a tensor: finite block scales (0.01) and deterministic quants/values."""
    _, be, bb = GGML[tname]
    n = 1
    for d in ne:
        n *= d
    if tname == "F32":
        return b"".join(struct.pack("<f", ((i * 7 + seed) % 13 - 6) / 8.0) for i in range(n))
    if tname in ("F16", "BF16"):
        return bytes(b for i in range(n) for b in ((seed + i) % 64, 0x3C if tname == "F16" else 0x3F))
    blocks, scale = n // be, struct.pack("<e", 0.01)
    head = scale + (scale if tname == "Q4_1" else b"")
    return b"".join(head + rng_bytes(bb - len(head), seed * 1000 + i) for i in range(blocks))


def gguf_read_meta(path):
    """The metadata of a GGUF file as [(key, type, value)] (arrays as (elem type, list)), without tensors."""
    data = read(path)
    pos = 24
    _, _, n_tensors, n_kv = struct.unpack_from("<4sIQQ", data, 0)

    def value(t):
        nonlocal pos
        if t == STR:
            (n,) = struct.unpack_from("<Q", data, pos)
            pos += 8 + n
            return data[pos - n:pos]
        if t == ARR:
            et, n = struct.unpack_from("<IQ", data, pos)
            pos += 12
            return (et, [value(et) for _ in range(n)])
        (v,) = struct.unpack_from(SCALAR_FMT[t], data, pos)
        pos += struct.calcsize(SCALAR_FMT[t])
        return v

    kvs = []
    for _ in range(n_kv):
        key = value(STR).decode()
        (t,) = struct.unpack_from("<I", data, pos)
        pos += 4
        kvs.append((key, t, value(t)))
    return kvs


BYTE_LEVEL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + [chr(c) for c in range(0x21, 0x7F)] + [
    "\u0120", "\u0120t", "he", "\u0120the", "ll", "llo", "\u0120w", "or", "ld", "\u0120wor", "\u0120world"]
BYTE_LEVEL_MERGES = ["\u0120 t", "h e", "\u0120t he", "l l", "ll o", "\u0120 w", "o r", "l d", "\u0120w or",
                     "\u0120wor ld"]
CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
          "'<|im_end|>' + '\\n'}}{% endfor %}")


def tiny_gguf(arch="llama", vocab="gpt2", extra_kvs=(), extra_tensors=(), tied=True):
    """A one-layer model (hidden 32, 2 heads of 16, 1 KV head) with a small vocabulary: loads in full."""
    if vocab == "gpt2":
        tokens = BYTE_LEVEL_TOKENS
        types = [3, 3, 3] + [1] * (len(tokens) - 3)
        vocab_kvs = [("tokenizer.ggml.model", STR, "gpt2"), ("tokenizer.ggml.pre", STR, "smollm"),
                     ("tokenizer.ggml.merges", ARR, (STR, BYTE_LEVEL_MERGES)),
                     ("tokenizer.ggml.bos_token_id", U32, 1), ("tokenizer.ggml.eos_token_id", U32, 2),
                     ("tokenizer.chat_template", STR, CHATML)]
    else:  # SentencePiece: merges come from the scores
        pieces = ["\u2581", "\u2581t", "h", "e", "t", "he", "\u2581the", "o", "w", "\u2581w", "r", "l", "d"]
        tokens = ["<unk>", "<s>", "</s>"] + ["<0x%02X>" % b for b in range(256)] + pieces
        types = [2, 3, 3] + [6] * 256 + [1] * len(pieces)
        vocab_kvs = [("tokenizer.ggml.model", STR, "llama"),
                     ("tokenizer.ggml.scores", ARR, (F32, [0.0] * 259 + [-float(i) for i in range(len(pieces))])),
                     ("tokenizer.ggml.bos_token_id", U32, 1), ("tokenizer.ggml.eos_token_id", U32, 2),
                     ("tokenizer.ggml.unknown_token_id", U32, 0), ("tokenizer.ggml.add_bos_token", BOOL, 1)]
    n_vocab = len(tokens)
    kvs = [("general.architecture", STR, arch), ("general.alignment", U32, 32),
           (arch + ".block_count", U32, 1), (arch + ".context_length", U32, 64),
           (arch + ".embedding_length", U32, 32), (arch + ".feed_forward_length", U32, 32),
           (arch + ".attention.head_count", U32, 2), (arch + ".attention.head_count_kv", U32, 1),
           (arch + ".attention.layer_norm_rms_epsilon", F32, 1e-5), (arch + ".rope.freq_base", F32, 10000.0),
           (arch + ".rope.dimension_count", U32, 16),
           ("tokenizer.ggml.tokens", ARR, (STR, tokens)), ("tokenizer.ggml.token_type", ARR, (I32, types))]
    kvs += vocab_kvs + list(extra_kvs)
    spec = [("token_embd.weight", "Q8_0", [32, n_vocab]), ("blk.0.attn_norm.weight", "F32", [32]),
            ("blk.0.attn_q.weight", "Q4_0", [32, 32]), ("blk.0.attn_k.weight", "Q4_1", [32, 16]),
            ("blk.0.attn_v.weight", "F16", [32, 16]), ("blk.0.attn_output.weight", "BF16", [32, 32]),
            ("blk.0.ffn_norm.weight", "F32", [32]), ("blk.0.ffn_gate.weight", "Q8_0", [32, 32]),
            ("blk.0.ffn_up.weight", "F16", [32, 32]), ("blk.0.ffn_down.weight", "Q4_0", [32, 32]),
            ("output_norm.weight", "F32", [32])]
    if arch == "qwen2":
        spec += [("blk.0.attn_q.bias", "F32", [32]), ("blk.0.attn_k.bias", "F32", [16]),
                 ("blk.0.attn_v.bias", "F32", [16])]
    if not tied:
        spec.append(("output.weight", "F16", [32, n_vocab]))
    spec += list(extra_tensors)
    return gguf_file(kvs, [(n, t, ne, tensor_blob(t, ne, i + 1)) for i, (n, t, ne) in enumerate(spec)])


def trim_meta(kvs, n_tokens=400):
    """A GGUF's metadata with its per-token arrays cut to n_tokens entries and merges to those tokens."""
    out, keep = [], set()
    for key, t, v in kvs:
        if key == "tokenizer.ggml.tokens":
            keep = set(v[1][:n_tokens])
    for key, t, v in kvs:
        if t == ARR and key == "tokenizer.ggml.merges":
            v = (v[0], [m for m in v[1] if all(p in keep for p in m.split(b" ")) and
                        m.replace(b" ", b"") in keep][:n_tokens])
        elif t == ARR and len(v[1]) > n_tokens:
            v = (v[0], v[1][:n_tokens])
        if key.endswith("_token_id") and isinstance(v, int) and v >= n_tokens:
            v = 0
        out.append((key, t, v))
    return out


def gguf_seeds(out, smollm2):
    write(out, "gguf", "quant_blocks.gguf", read(os.path.join(FIXTURES, "models", "quant_blocks.gguf")))
    write(out, "gguf", "tiny_llama_bytelevel.gguf", tiny_gguf())
    write(out, "gguf", "tiny_llama_sentencepiece.gguf", tiny_gguf(vocab="llama"))
    write(out, "gguf", "tiny_qwen2_untied.gguf", tiny_gguf("qwen2", tied=False, extra_kvs=[
        ("tokenizer.ggml.pre", STR, "qwen2")]))
    write(out, "gguf", "tiny_llama_rope.gguf", tiny_gguf(extra_kvs=[
        ("llama.rope.scaling.type", STR, "linear"), ("llama.rope.scaling.factor", F32, 2.0),
        ("tokenizer.ggml.eot_token_id", U32, 2)], extra_tensors=[("rope_freqs.weight", "F32", [8])]))
    keys = ["general.architecture", "general.alignment", "tokenizer.ggml.model", "tokenizer.ggml.pre",
            "tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.scores", "tokenizer.ggml.token_type",
            "rope_freqs.weight", "token_embd.weight", "output.weight", "blk.0.attn_q.bias", "llama", "qwen2",
            "gpt2", "llama-bpe", "qwen2", "smollm", "linear", "none"]
    if smollm2:
        write(out, "gguf", "smollm2_prefix.gguf", read(smollm2, 16 * 1024))
        write(out, "gguf", "smollm2_meta.gguf", gguf_file(trim_meta(gguf_read_meta(smollm2)), []))
        keys += [k for k, _, _ in gguf_read_meta(smollm2)]
    # a key as GGUF stores it (u64 length, bytes), and u32/u64 edge values
    write_dict(out, "gguf", [gguf_str(k) for k in keys] + keys + [struct.pack("<Q", v) for v in (
        0, 1 << 32, 1 << 63, (1 << 64) - 1)] + [struct.pack("<I", v) for v in (0xFFFFFFFF, 1 << 31, 13)])


# ---- safetensors and the sharded index -----------------------------------------------------------------------

# The tiny model of tests/fuzz/tiny_model.c (keep in step): name, dtype, shape, shard.
TINY = [("model.embed_tokens.weight", "F16", [16, 8], 1),
        ("model.layers.0.input_layernorm.weight", "F32", [8], 1),
        ("model.layers.0.self_attn.q_proj.weight", "BF16", [8, 8], 1),
        ("model.layers.0.self_attn.k_proj.weight", "BF16", [4, 8], 1),
        ("model.layers.0.self_attn.v_proj.weight", "F16", [4, 8], 1),
        ("model.layers.0.self_attn.o_proj.weight", "F32", [8, 8], 1),
        ("model.layers.0.post_attention_layernorm.weight", "F32", [8], 2),
        ("model.layers.0.mlp.gate_proj.weight", "BF16", [12, 8], 2),
        ("model.layers.0.mlp.up_proj.weight", "F16", [12, 8], 2),
        ("model.layers.0.mlp.down_proj.weight", "F32", [8, 12], 2),
        ("model.norm.weight", "F32", [8], 2)]
SHARDS = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]


def safetensors_file(tensors, metadata=None):
    """tensors: [(name, dtype, shape)] with zero-filled... small deterministic data."""
    header, data = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape in tensors:
        n = 1
        for d in shape:
            n *= d
        nbytes = n * (4 if dtype == "F32" else 2)
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + nbytes]}
        data += bytes((i % 2) * 0x3C for i in range(nbytes))
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + data


def safetensors_header(path):
    """The first 8 + header-length bytes of a safetensors file: its whole header, no data."""
    head = read(path, 8)
    (n,) = struct.unpack("<Q", head)
    return read(path, 8 + n)


def safetensors_seeds(out):
    tiny = [(n, dt, sh) for n, dt, sh, _ in TINY]
    write(out, "safetensors", "tiny.safetensors", safetensors_file(tiny))
    write(out, "safetensors", "tiny_metadata.safetensors", safetensors_file(tiny, {"format": "pt"}))
    write(out, "safetensors", "scalar.safetensors", safetensors_file([("scale", "F32", []), ("v", "BF16", [3])]))
    for rel in ("tiny_qwen2/model.safetensors", "tiny_llama/model-00001-of-00002.safetensors"):
        name = rel.replace("/", "_") + ".header"
        write(out, "safetensors", name, safetensors_header(os.path.join(FIXTURES, "models", rel)))
    weight_map = {n: SHARDS[s - 1] for n, _, _, s in TINY}
    write(out, "safetensors_index", "tiny.index.json",
          json.dumps({"metadata": {"total_size": 1234}, "weight_map": weight_map}, indent=1))
    moved = dict(weight_map, **{"model.norm.weight": SHARDS[0]})
    write(out, "safetensors_index", "wrong_shard.index.json", json.dumps({"weight_map": moved}))
    write(out, "safetensors_index", "tiny_llama.index.json",
          read(os.path.join(FIXTURES, "models", "tiny_llama", "model.safetensors.index.json")))
    names = [json.dumps(n) for n, _, _, _ in TINY]
    st = ['"dtype"', '"shape"', '"data_offsets"', '"__metadata__"', '"F32"', '"F16"', '"BF16"', '"I64"', '"F8_E4M3"']
    write_dict(out, "safetensors", st + names + EDGE_NUMBERS + JSON_LITERALS)
    write_dict(out, "safetensors_index", names + ['"weight_map"', '"metadata"', '"total_size"', '".."', '"/x"'] +
               [json.dumps(f) for f in SHARDS + ["config.json", "model.safetensors.index.json"]] + JSON_LITERALS)


# ---- config.json ---------------------------------------------------------------------------------------------

def config_seeds(out):
    for name in ("tiny_qwen2", "tiny_llama"):
        write(out, "config", name + ".json", read(os.path.join(FIXTURES, "models", name, "config.json")))
    base = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
            "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "vocab_size": 256, "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
            "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": [2, 3], "hidden_act": "silu"}
    variants = {
        "llama3": dict(base, rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                           "high_freq_factor": 4.0, "original_max_position_embeddings": 1024}),
        "linear_type": dict(base, rope_scaling={"type": "linear", "factor": 2.0}),
        "transformers5": dict(base, rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
        "mistral": dict(base, architectures=["MistralForCausalLM"], model_type="mistral", sliding_window=None,
                        head_dim=32, attention_bias=False),
        "qwen2_layer_types": dict(base, architectures=["Qwen2ForCausalLM"], model_type="qwen2",
                                  use_sliding_window=True, sliding_window=16,
                                  layer_types=["full_attention", "sliding_attention"]),
        "qwen2_max_window": dict(base, architectures=["Qwen2ForCausalLM"], model_type="qwen2",
                                 use_sliding_window=True, sliding_window=16, max_window_layers=1),
    }
    tokens = list(EDGE_NUMBERS) + JSON_LITERALS + ['"yes"', '"llama3"', '"linear"', '"default"', '"dynamic"',
                                                   '"rope_type"', '"type"', '"factor"', '"attention_bias"',
                                                   '"mlp_bias"', '"quantization_config"', '"gelu"']
    for name, cfg in variants.items():
        write(out, "config", name + ".json", json.dumps(cfg, indent=1))
        tokens += json_tokens(cfg)
    write_dict(out, "config", tokens)


# ---- tokenizer.json ------------------------------------------------------------------------------------------

TOKENIZER_CONFIG = {"bos_token": "<s>", "eos_token": "</s>", "add_bos_token": True, "add_eos_token": False,
                    "clean_up_tokenization_spaces": True, "chat_template": CHATML}


def tokenizer_seed(tokenizer, text="", config=None):
    seed = json.dumps(tokenizer, ensure_ascii=False).encode()
    if text or config is not None:
        seed += b"\0" + text.encode()
    if config is not None:
        seed += b"\0" + json.dumps(config).encode()
    return seed


def smollm2_tokenizer(kvs, n_tokens=400):
    """A byte-level tokenizer.json from the GGUF's vocabulary, trimmed to its first n_tokens tokens."""
    meta = {k: v for k, t, v in trim_meta(kvs, n_tokens)}
    tokens = [t.decode("utf-8", "replace") for t in meta["tokenizer.ggml.tokens"][1]]
    types = meta["tokenizer.ggml.token_type"][1]
    merges = [m.decode("utf-8", "replace") for m in meta.get("tokenizer.ggml.merges", (STR, []))[1]]
    added = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
              "special": True} for i, t in enumerate(tokens) if types[i] == 3]
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    return {"version": "1.0", "added_tokens": added, "normalizer": None,
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                {"type": "Digits", "individual_digits": True}, byte_level]},
            "post_processor": None, "decoder": byte_level,
            "model": {"type": "BPE", "dropout": None, "unk_token": None, "fuse_unk": False, "byte_fallback": False,
                      "ignore_merges": False, "vocab": {t: i for i, t in enumerate(tokens)}, "merges": merges}}


def tokenizer_seeds(out, smollm2):
    with open(os.path.join(FIXTURES, "tokenizer", "variants.json"), encoding="utf-8") as f:
        variants = json.load(f)
    tokens = list(JSON_LITERALS) + ["-1", "1e10", "2147483648", "\\u0000", "\\ud800", "<0x41>", "\u2581",
                                    '"WordPiece"', '"Unigram"', '"NFC"', '"NFD"', '"Lowercase"', '"Strip"',
                                    '"Fuse"', '"ByteFallback"', '"Digits"', '"Split"', '"Removed"', '"Isolated"']
    tokens += json_tokens(TOKENIZER_CONFIG)
    for v in variants:
        tok, strings = v["tokenizer"], [s["text"] for s in v["strings"]]
        tokens += json_tokens({k: x for k, x in tok.items() if k != "model"})
        tokens += json_tokens({k: x for k, x in tok["model"].items() if k not in ("vocab", "merges")})
        write(out, "tokenizer", v["name"] + ".json", tokenizer_seed(tok))
        write(out, "tokenizer", v["name"] + "_text.json", tokenizer_seed(tok, strings[-1]))
        write(out, "tokenizer", v["name"] + "_config.json", tokenizer_seed(tok, strings[0], TOKENIZER_CONFIG))
    if smollm2:
        tok = smollm2_tokenizer(gguf_read_meta(smollm2))
        write(out, "tokenizer", "smollm2_trimmed.json", tokenizer_seed(tok, "Hello world 2024!"))
        config = dict(TOKENIZER_CONFIG, bos_token="<|im_start|>", eos_token="<|im_end|>", add_bos_token=False)
        write(out, "tokenizer", "smollm2_trimmed_config.json", tokenizer_seed(tok, "What is 1+1?", config))
    write_dict(out, "tokenizer", tokens)


# ---- YAML ----------------------------------------------------------------------------------------------------

# ks_methods[] in src/methods/method.c: the method byte of fuzz_method_config picks index byte % 7.
METHODS = ["fullkv", "h2o", "streamingllm", "snapkv", "l2compress", "pyramidkv", "cakekv"]
METHOD_OPTS = {"h2o": ["heavy_budget=10%", "recent_budget=64", "gqa_reduce=max"],
               "snapkv": ["window_size=16", "pooling=maxpool", "max_capacity_prompt=0.25"],
               "pyramidkv": ["beta=20"], "streamingllm": ["start_size=4"], "cakekv": ["gqa_reduce=sum"]}


def yaml_seeds(out):
    bench = os.path.join(ROOT, "configs", "benchmarks")
    for name in sorted(os.listdir(bench)):
        write(out, "bench_config", name, read(os.path.join(bench, name)))
    write(out, "bench_config", "e2e_ruler.yaml", read(os.path.join(FIXTURES, "eval", "e2e_ruler.yaml")))
    write(out, "bench_config", "longbench_small.yaml",
          "benchmark_name: LongBench\ntask_names: [hotpotqa, trec]\nmax_length: 4096\n"
          "no_template_tasks: all\ntemplate: null\nlongbench_dir: tests/fixtures/longbench\n")
    yaml_edges = ["~", "null", "[]", "{}", "[0, 1]", "- ", ": ", "!!int ", "&a ", "*a", "'", "\"", "yes", "no",
                  "%", "10%", "1000%", "0.0", "1e-310", ".inf", ".nan", "-1", "2147483648", "1e10", "all"]
    write_dict(out, "bench_config", yaml_edges + [line.split(":")[0] for line in read(
        os.path.join(bench, "RULER.yaml")).decode().splitlines() if line and line[0].isalpha()] + [
        "task_names", "length", "num_samples", "build_data", "no_template_tasks", "template", "seed",
        "ruler_variant", "data_dir", "essays_dir", "wordlists_dir", "squad_path", "hotpotqa_path",
        "longbench_dir", "max_length", "LongBench", "RULER", "loom", "niah_single_1", "hotpotqa"])
    methods = os.path.join(ROOT, "configs", "methods")
    knobs = []
    for i, name in enumerate(METHODS):
        yaml = read(os.path.join(methods, name + ".yaml"))
        knobs += [line.split(":")[0] for line in yaml.decode().splitlines() if line and line[0].isalpha()]
        write(out, "method_config", name + ".yaml", bytes([i]) + yaml)
        opts = METHOD_OPTS.get(name)
        if opts:
            write(out, "method_config", name + "_opts.yaml", bytes([i]) + yaml + b"".join(
                b"\0" + o.encode() for o in opts))
    write_dict(out, "method_config", yaml_edges + knobs + [k + "=" for k in knobs] + [
        "mean", "max", "sum", "original", "loom", "avgpool", "maxpool", "true", "false"])


# ---- result-file recipes (fuzz_results.c) -------------------------------------------------------------------

def results_seeds(out):
    # opcodes and operands as fuzz_results.c reads them; attribute/column bytes index its name tables
    recipes = {
        "unchanged": b"",
        "no_config": bytes([0, 0]),                                     # DEL_ATTR config
        "config_array": bytes([1, 0, 0, 2, 3, 3, 0x61, 0x62, 0x63, 1, 0x64, 2, 0x65, 0x66]),  # 3 vlen strings
        "version_string": bytes([1, 11, 1, 20, 0]) + b"1\0",            # format_version as a fixed string
        "sessions_2d": bytes([1, 16, 3, 3, 2, 2]) + bytes(24),           # int32 [2, 3]
        "drop_prediction": bytes([2, 6]),                               # DEL_COL /samples/prediction
        "task_as_double": bytes([3, 0, 7, 2, 3]) + struct.pack("<3d", 1, 2, 3),
        "extend_layers": bytes([4, 14]) + struct.pack(">I", 100),       # /layers/sample to 100 rows
        "layer_sample_far": bytes([5, 14, 0]) + struct.pack("<q", 1 << 40),
        "task_no_nul": bytes([5, 0, 1]) + b"x" * 48,
        "no_layers": bytes([6, 1]),
        "samples_dataset": bytes([7, 0, 3, 0]) + bytes(4),
        "dangling_link": bytes([8, 2, 0]),
        "column_group": bytes([9, 8]),
    }
    for name, recipe in recipes.items():
        write(out, "results", name + ".recipe", recipe)


def smollm2_path(arg):
    if arg:
        return arg if os.path.isfile(arg) else None
    try:
        p = subprocess.run(["bash", os.path.join(ROOT, "jobs", "smollm2_path.sh")], capture_output=True, text=True)
        return p.stdout.strip() if p.returncode == 0 and os.path.isfile(p.stdout.strip()) else None
    except OSError:
        return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", help="corpus root: one folder per target is made in it")
    ap.add_argument("--gguf", help="the SmolLM2 GGUF (default: jobs/smollm2_path.sh)")
    args = ap.parse_args()
    smollm2 = smollm2_path(args.gguf)
    if not smollm2:
        print("make_corpus: SmolLM2 GGUF not found (jobs/setup.sh installs it); its seeds are skipped",
              file=sys.stderr)
    gguf_seeds(args.out, smollm2)
    safetensors_seeds(args.out)
    config_seeds(args.out)
    tokenizer_seeds(args.out, smollm2)
    yaml_seeds(args.out)
    results_seeds(args.out)
    for target in sorted(os.listdir(args.out)):
        d = os.path.join(args.out, target)
        if os.path.isdir(d):
            print("make_corpus: %-18s %3d seeds" % (target, len(os.listdir(d))))


if __name__ == "__main__":
    main()
