#!/usr/bin/env python3
"""ref_forward.py — an independent numpy forward pass for Llama / Mistral / Qwen2 checkpoints, the reference that
kvscope's C engine is checked against (tests/check_forward.c via tests/tools/make_forward_fixtures.py).

It is written from the Hugging Face modeling equations (modeling_llama.py / modeling_qwen2.py and
modeling_rope_utils.py), not from the C code:

    h   = embed_tokens[ids]
    per layer:  a = h + o_proj(attn(rope(q_proj(n)), rope(k_proj(n)), v_proj(n))),   n = RMSNorm(h)
                h = a + down_proj(silu(gate_proj(m)) * up_proj(m)),                  m = RMSNorm(a)
    logits = lm_head(RMSNorm(h))

with RMSNorm(x) = w * x / sqrt(mean(x^2) + eps), rotate-half RoPE (cos/sin of position * inv_freq, the default,
linear or llama3 frequency scaling), grouped-query attention (each KV head serves n_heads / n_kv_heads query
heads), a causal mask, and the sliding window of Mistral / Qwen2 (key j is visible to query i when
i - window < j <= i; Qwen2 applies it only to layers >= max_window_layers or as `layer_types` says).
Everything is float32, as HF computes these models on CPU.

Checkpoints:
  * a GGUF file, read with the `gguf` package and dequantized with gguf.quants; the llama converter's Q/K row
    permutation (pairwise RoPE layout) is undone here to get back HF's rotate-half layout;
  * a Hugging Face directory: config.json + model.safetensors or sharded model.safetensors.index.json, read
    with a small numpy safetensors reader (F32, F16, BF16).

    python3 tests/tools/ref_forward.py MODEL --ids 1,2,3 [--greedy 16]
    from ref_forward import load_model;  m = load_model(path);  m.last_logits(ids);  m.greedy(ids, 32)

Needs numpy and gguf (pip install gguf).
"""
import argparse
import json
import math
import os
import struct

import numpy as np

F32 = np.float32


# ---- configuration ---------------------------------------------------------------------------------------------

class Config:
    """The hyper-parameters the forward pass needs, under HF config.json names."""

    def __init__(self, **kw):
        self.arch = kw["arch"]  # "llama", "mistral" or "qwen2"
        self.n_layers = kw["num_hidden_layers"]
        self.hidden = kw["hidden_size"]
        self.n_heads = kw["num_attention_heads"]
        self.n_kv_heads = kw.get("num_key_value_heads") or self.n_heads
        self.head_dim = kw.get("head_dim") or self.hidden // self.n_heads
        self.eps = kw["rms_norm_eps"]
        self.rope_theta = kw["rope_theta"]
        self.rope_scaling = kw.get("rope_scaling")
        self.tie = kw.get("tie_word_embeddings", False)
        self.window_layers = kw.get("window_layers", set())  # layers that use the sliding window
        self.window = kw.get("sliding_window") or 0
        self.max_pos = kw.get("max_position_embeddings")


def config_from_hf(c):
    arch = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "mistral", "Qwen2ForCausalLM": "qwen2"}[
        c["architectures"][0]]
    rope = dict(c.get("rope_parameters") or {})  # transformers >= 5
    theta = c.get("rope_theta", rope.get("rope_theta", 10000.0))
    scaling = c.get("rope_scaling") or (rope if rope.get("rope_type", "default") != "default" else None)
    n_layers = c["num_hidden_layers"]
    window_layers = set()
    if arch == "mistral" and c.get("sliding_window"):
        window_layers = set(range(n_layers))
    if arch == "qwen2" and c.get("use_sliding_window") and c.get("sliding_window"):
        if c.get("layer_types"):
            window_layers = {i for i, t in enumerate(c["layer_types"]) if t == "sliding_attention"}
        else:
            window_layers = set(range(c.get("max_window_layers", 28), n_layers))
    return Config(arch=arch, num_hidden_layers=n_layers, hidden_size=c["hidden_size"],
                  num_attention_heads=c["num_attention_heads"], num_key_value_heads=c.get("num_key_value_heads"),
                  head_dim=c.get("head_dim"), rms_norm_eps=c["rms_norm_eps"], rope_theta=theta,
                  rope_scaling=scaling, tie_word_embeddings=c.get("tie_word_embeddings", False),
                  window_layers=window_layers, sliding_window=c.get("sliding_window") if window_layers else 0,
                  max_position_embeddings=c.get("max_position_embeddings"))


def rope_inv_freq(cfg):
    """modeling_rope_utils: _compute_default_rope_parameters, then linear or llama3 scaling (float32)."""
    d = cfg.head_dim
    inv = (1.0 / (F32(cfg.rope_theta) ** (np.arange(0, d, 2, dtype=np.int64).astype(F32) / F32(d)))).astype(F32)
    s = cfg.rope_scaling
    kind = (s or {}).get("rope_type", (s or {}).get("type", "default"))
    if kind == "linear":
        inv = (inv / F32(s["factor"])).astype(F32)
    elif kind == "llama3":
        factor, lo, hi = s["factor"], s["low_freq_factor"], s["high_freq_factor"]
        old = s["original_max_position_embeddings"]
        low_wavelen, high_wavelen = old / lo, old / hi
        wavelen = (2 * math.pi / inv).astype(F32)
        scaled = np.where(wavelen > low_wavelen, inv / F32(factor), inv).astype(F32)
        smooth = ((old / wavelen - lo) / (hi - lo)).astype(F32)
        smoothed = ((1 - smooth) * scaled / F32(factor) + smooth * scaled).astype(F32)
        medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
        inv = np.where(medium, smoothed, scaled).astype(F32)
    elif kind != "default":
        raise ValueError(f"rope type {kind} not supported")
    return inv


# ---- weights -----------------------------------------------------------------------------------------------------

def _bf16_to_f32(raw):
    return (raw.astype(np.uint32) << 16).view(F32)


def read_safetensors(path):
    """{name: float32 array} from one .safetensors file."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        a, b = t["data_offsets"]
        buf = np.frombuffer(data[a:b], dtype={"F32": "<f4", "F16": "<f2", "BF16": "<u2"}[t["dtype"]])
        arr = _bf16_to_f32(buf) if t["dtype"] == "BF16" else buf.astype(F32)
        out[name] = arr.reshape(t["shape"])
    return out


def load_hf(model_dir):
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = config_from_hf(json.load(f))
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    w = {}
    for fn in files:
        w.update(read_safetensors(os.path.join(model_dir, fn)))
    return cfg, w


GGUF_NAMES = {  # GGUF tensor name (per layer: blk.N.<x>) -> HF name
    "token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
    "attn_norm.weight": "input_layernorm.weight", "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight", "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight", "attn_output.weight": "self_attn.o_proj.weight",
    "attn_q.bias": "self_attn.q_proj.bias", "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.bias": "self_attn.v_proj.bias",
    "ffn_gate.weight": "mlp.gate_proj.weight", "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}


def _unpermute(w, n_head):
    """Undo llama.cpp convert_hf_to_gguf's `permute` (HF rotate-half rows -> interleaved pairs)."""
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def load_gguf(path):
    from gguf import GGUFReader
    from gguf.quants import dequantize

    r = GGUFReader(path)

    def val(key, default=None):
        f = r.fields.get(key)
        return default if f is None else f.contents()

    arch = val("general.architecture")
    if arch not in ("llama", "qwen2"):
        raise ValueError(f"{path}: architecture {arch} not supported")
    a = arch
    n_layers = val(f"{a}.block_count")
    cfg_kw = dict(arch=arch, num_hidden_layers=n_layers, hidden_size=val(f"{a}.embedding_length"),
                  num_attention_heads=val(f"{a}.attention.head_count"),
                  num_key_value_heads=val(f"{a}.attention.head_count_kv"),
                  head_dim=val(f"{a}.attention.key_length"), rms_norm_eps=val(f"{a}.attention.layer_norm_rms_epsilon"),
                  rope_theta=val(f"{a}.rope.freq_base", 10000.0), max_position_embeddings=val(f"{a}.context_length"))
    stype = val(f"{a}.rope.scaling.type")
    if stype == "linear":
        cfg_kw["rope_scaling"] = {"rope_type": "linear", "factor": val(f"{a}.rope.scaling.factor")}
    elif stype not in (None, "none"):
        raise ValueError(f"{path}: rope scaling {stype} not supported")
    w = {}
    for t in r.tensors:
        arr = dequantize(t.data, t.tensor_type).astype(F32).reshape(tuple(int(x) for x in reversed(t.shape)))
        name = t.name
        if name.startswith("blk."):
            _, i, rest = name.split(".", 2)
            hf = f"model.layers.{i}.{GGUF_NAMES[rest]}"
        else:
            hf = GGUF_NAMES[name]
        w[hf] = arr
    if "rope_freqs.weight" in w:
        raise ValueError(f"{path}: rope_freqs tensors are not supported by this reference")
    cfg_kw["tie_word_embeddings"] = "lm_head.weight" not in w
    cfg = Config(**cfg_kw)
    if arch == "llama":
        for i in range(n_layers):
            q, k = f"model.layers.{i}.self_attn.q_proj.weight", f"model.layers.{i}.self_attn.k_proj.weight"
            w[q] = _unpermute(w[q], cfg.n_heads)
            w[k] = _unpermute(w[k], cfg.n_kv_heads)
    return cfg, w


# ---- the model ---------------------------------------------------------------------------------------------------

def rms_norm(x, w, eps):
    var = np.mean(x * x, axis=-1, keepdims=True, dtype=F32)
    return (w * (x / np.sqrt(var + F32(eps)))).astype(F32)


def silu(x):
    return (x / (F32(1) + np.exp(-x))).astype(F32)


def rotate_half(x):
    h = x.shape[-1] // 2
    return np.concatenate([-x[..., h:], x[..., :h]], axis=-1)


class Model:
    def __init__(self, cfg, weights):
        self.cfg = cfg
        self.w = weights
        self.inv_freq = rope_inv_freq(cfg)
        if cfg.tie or "lm_head.weight" not in weights:
            self.w["lm_head.weight"] = weights["model.embed_tokens.weight"]

    def _lin(self, x, name, bias=True):
        y = x @ self.w[name + ".weight"].T
        b = self.w.get(name + ".bias") if bias else None
        return (y + b if b is not None else y).astype(F32)

    def _rope(self, x, positions):
        """x (heads, T, d) at absolute positions (T,)."""
        freqs = positions.astype(F32)[:, None] * self.inv_freq[None, :]
        emb = np.concatenate([freqs, freqs], axis=-1)
        return (x * np.cos(emb) + rotate_half(x) * np.sin(emb)).astype(F32)

    def _attention(self, layer, x, cache, pos0):
        """x (T, hidden) of positions pos0.. ; cache[layer] = (K, V) of shape (Hk, P, d), extended in place."""
        c = self.cfg
        p = f"model.layers.{layer}.self_attn."
        T = x.shape[0]
        positions = np.arange(pos0, pos0 + T)
        q = self._lin(x, p + "q_proj").reshape(T, c.n_heads, c.head_dim).transpose(1, 0, 2)
        k = self._lin(x, p + "k_proj").reshape(T, c.n_kv_heads, c.head_dim).transpose(1, 0, 2)
        v = self._lin(x, p + "v_proj").reshape(T, c.n_kv_heads, c.head_dim).transpose(1, 0, 2)
        q, k = self._rope(q, positions), self._rope(k, positions)
        if layer in cache:
            k = np.concatenate([cache[layer][0], k], axis=1)
            v = np.concatenate([cache[layer][1], v], axis=1)
        cache[layer] = (k, v)
        P = k.shape[1]  # keys at positions 0 .. P-1
        key_pos = np.arange(P)
        visible = key_pos[None, :] <= positions[:, None]
        if layer in c.window_layers:
            visible &= key_pos[None, :] > positions[:, None] - c.window
        G = c.n_heads // c.n_kv_heads
        kk = np.repeat(k, G, axis=0)  # repeat_kv: query head h uses KV head h // G
        vv = np.repeat(v, G, axis=0)
        scores = (q @ kk.transpose(0, 2, 1)) * F32(1.0 / math.sqrt(c.head_dim))
        scores = np.where(visible[None], scores, F32(-np.inf))
        scores = scores - scores.max(axis=-1, keepdims=True)
        probs = np.exp(scores)
        probs = (probs / probs.sum(axis=-1, keepdims=True)).astype(F32)
        out = (probs @ vv).transpose(1, 0, 2).reshape(T, c.n_heads * c.head_dim)
        return self._lin(out, p + "o_proj")

    def forward(self, ids, cache, pos0):
        """Hidden states -> logits of the last position for tokens ids at positions pos0.., extending cache."""
        c = self.cfg
        h = self.w["model.embed_tokens.weight"][np.asarray(ids)].astype(F32)
        for i in range(c.n_layers):
            p = f"model.layers.{i}."
            h = h + self._attention(i, rms_norm(h, self.w[p + "input_layernorm.weight"], c.eps), cache, pos0)
            m = rms_norm(h, self.w[p + "post_attention_layernorm.weight"], c.eps)
            h = h + self._lin(silu(self._lin(m, p + "mlp.gate_proj")) * self._lin(m, p + "mlp.up_proj"),
                              p + "mlp.down_proj")
        last = rms_norm(h[-1:], self.w["model.norm.weight"], c.eps)
        return (last @ self.w["lm_head.weight"].T)[0].astype(F32)

    def last_logits(self, ids):
        return self.forward(ids, {}, 0)

    def greedy(self, ids, n_new):
        """n_new greedy tokens after ids (EOS is not special here: exactly n_new tokens)."""
        cache = {}
        logits = self.forward(ids, cache, 0)
        out, pos = [], len(ids)
        for _ in range(n_new):
            tok = int(np.argmax(logits))
            out.append(tok)
            logits = self.forward([tok], cache, pos)
            pos += 1
        return out


def load_model(path):
    cfg, w = load_gguf(path) if path.endswith(".gguf") else load_hf(path)
    return Model(cfg, w)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", help="a .gguf file or a Hugging Face model directory")
    ap.add_argument("--ids", required=True, help="comma-separated prompt token ids")
    ap.add_argument("--greedy", type=int, default=0, help="also print this many greedy tokens")
    a = ap.parse_args()
    m = load_model(a.model)
    ids = [int(x) for x in a.ids.split(",")]
    logits = m.last_logits(ids)
    top = np.argsort(-logits)[:5]
    print("top-5 last-position logits:", ", ".join(f"{int(i)}:{logits[i]:.4f}" for i in top))
    if a.greedy:
        print("greedy:", m.greedy(ids, a.greedy))


if __name__ == "__main__":
    main()
