#!/usr/bin/env python3
"""PyTorch + transformers baseline for `kvscope bench`, on the same GPU and shapes, plus the side-by-side table.

    python3 jobs/bench_torch.py --out torch.json [--lengths 4096,16384,32768,65536,131072] [--decode_steps 16]
    python3 jobs/bench_torch.py --compare torch.json kvscope.json    # prints the Markdown table with the floor

Model: LlamaForCausalLM with random bf16 weights built directly on the GPU (Llama-3.1-8B shape by default, or
--config CONFIG.json), attention through sdpa. Measures
  * prefill seconds for one prompt of each length (logits for the last position only),
  * decode ms/token at each context length (greedy steps on the prefilled cache),
  * peak GPU memory,
  * the prefill attention kernel alone (causal, head_dim 128, 32 q heads / 8 KV heads expanded) through SDPA's
    flash and cuDNN backends, in TFLOP/s,
  * the device's copy bandwidth and bf16 GEMM rate (the ceilings used for the physical floor).
Timings use CUDA events after a warm-up; each figure is the median of --repeat runs.
"""
import argparse
import json
import math
import statistics
import sys
import time

LLAMA31_8B = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336,
    "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
    "vocab_size": 128256, "max_position_embeddings": 131072, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
    "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192},
    "tie_word_embeddings": False,
}


def cuda_time(fn, repeat):
    import torch
    times = []
    for _ in range(repeat):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b) / 1e3)
    return statistics.median(times)


def ceilings(repeat):
    import torch
    n = 1 << 30  # 1 GiB each way
    src = torch.randn(n // 2, dtype=torch.bfloat16, device="cuda")
    dst = torch.empty_like(src)
    dst.copy_(src)
    t = cuda_time(lambda: dst.copy_(src), repeat)
    bw = 2 * n / t
    m = 8192
    a = torch.randn(m, m, dtype=torch.bfloat16, device="cuda")
    b = torch.randn(m, m, dtype=torch.bfloat16, device="cuda")
    a @ b
    t = cuda_time(lambda: a @ b, repeat)
    del src, dst, a, b
    return {"copy_bytes_per_s": bw, "bf16_gemm_flops": 2 * m ** 3 / t}


def attention_kernel(lengths, repeat):
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel
    out = {}
    for L in lengths:
        q = torch.randn(1, 32, L, 128, dtype=torch.bfloat16, device="cuda")
        k = torch.randn(1, 32, L, 128, dtype=torch.bfloat16, device="cuda")
        v = torch.randn(1, 32, L, 128, dtype=torch.bfloat16, device="cuda")
        flops = 4 * 32 * 128 * L * L / 2  # causal: half of QK^T and PV
        for name, be in (("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION)):
            try:
                with sdpa_kernel(be):
                    F.scaled_dot_product_attention(q, k, v, is_causal=True)
                    t = cuda_time(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True), repeat)
                out.setdefault(str(L), {})[name] = flops / t / 1e12
            except Exception as e:  # a backend may not support the shape on this build
                out.setdefault(str(L), {})[name] = None
                print(f"[torch] sdpa {name} at {L}: {e}", file=sys.stderr)
        del q, k, v
    return out


def model_bench(cfg, lengths, decode_steps, repeat):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.cache_utils import DynamicCache
    config = LlamaConfig(**{k: v for k, v in cfg.items() if k not in ("architectures", "model_type")})
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    with torch.device("cuda"):
        torch.set_default_dtype(torch.bfloat16)
        model = LlamaForCausalLM(config).eval()
        torch.set_default_dtype(torch.float32)
    res = {"prefill_s": {}, "decode_ms": {}, "peak_bytes": {}}
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    res["weight_bytes"] = weights
    gen = torch.Generator(device="cuda").manual_seed(1)
    with torch.inference_mode():
        warm = torch.randint(0, cfg["vocab_size"], (1, 1024), device="cuda", generator=gen)
        model(warm, use_cache=True, logits_to_keep=1)
        for L in lengths:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            ids = torch.randint(0, cfg["vocab_size"], (1, L), device="cuda", generator=gen)
            times = []
            for _ in range(repeat):
                cache = DynamicCache()
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                out = model(ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
                b.record()
                torch.cuda.synchronize()
                times.append(a.elapsed_time(b) / 1e3)
            res["prefill_s"][str(L)] = statistics.median(times)
            tok = out.logits[:, -1:].argmax(-1)
            cache = out.past_key_values
            for _ in range(2):  # warm-up steps
                tok = model(tok, past_key_values=cache, use_cache=True).logits[:, -1:].argmax(-1)
            torch.cuda.synchronize()
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            for _ in range(decode_steps):
                tok = model(tok, past_key_values=cache, use_cache=True).logits[:, -1:].argmax(-1)
            b.record()
            torch.cuda.synchronize()
            res["decode_ms"][str(L)] = a.elapsed_time(b) / decode_steps
            res["peak_bytes"][str(L)] = torch.cuda.max_memory_allocated()
            print(f"[torch] L={L}: prefill {res['prefill_s'][str(L)]:.3f} s, decode {res['decode_ms'][str(L)]:.2f} "
                  f"ms/token, peak {res['peak_bytes'][str(L)] / 2**30:.1f} GiB", file=sys.stderr, flush=True)
            del out, cache, ids
    del model
    return res


def floors(cfg, lengths, ceil, weight_bytes):
    """Physical floor: GEMM FLOPs over the measured GEMM rate (+ attention at the same rate) for prefill;
    weights + KV cache bytes over the measured copy bandwidth for decode."""
    D, F, V, Lyr = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"], cfg["num_hidden_layers"]
    H, Hk = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    d = cfg.get("head_dim", D // H)
    per_tok = 2 * Lyr * (D * H * d + 2 * D * Hk * d + H * d * D + 3 * D * F)
    out = {}
    for L in lengths:
        attn = Lyr * 4 * H * d * L * L / 2
        gemm = per_tok * L + 2 * D * V
        kv = Lyr * 2 * Hk * d * L * 2
        out[str(L)] = {"prefill_s": (gemm + attn) / ceil["bf16_gemm_flops"],
                       "decode_ms": (weight_bytes + kv) / ceil["copy_bytes_per_s"] * 1e3}
    return out


def compare(torch_json, ks_json):
    t = json.load(open(torch_json))
    k = json.load(open(ks_json)) if ks_json else {}
    fl = t["floor"]
    print(f"GPU: {t.get('gpu')}; copy {t['ceilings']['copy_bytes_per_s'] / 1e12:.2f} TB/s, "
          f"bf16 GEMM {t['ceilings']['bf16_gemm_flops'] / 1e12:.0f} TFLOP/s (measured in this run); torch "
          f"{t.get('torch')}, transformers {t.get('transformers')}; kvscope prefill chunk {k.get('chunk')}\n")
    print("| context | prefill kvscope (s) | prefill torch (s) | prefill floor (s) | decode kvscope (ms/tok) "
          "| decode torch (ms/tok) | decode floor (ms/tok) | peak kvscope (GiB) | peak torch (GiB) "
          "| budget: weights + KV + 4 GiB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for L in t["lengths"]:
        s = str(L)
        kv, w = _get(k, ("kv_bytes", s)), _get(k, ("weight_bytes",))
        budget = None if kv is None or w is None else (w + kv) / 2 ** 30 + 4
        row = [f"{L // 1024}K", _fmt(_get(k, ("prefill_s", s)), 3), _fmt(_get(t, ("model", "prefill_s", s)), 3),
               _fmt(fl[s]["prefill_s"], 3), _fmt(_get(k, ("decode_ms", s)), 2),
               _fmt(_get(t, ("model", "decode_ms", s)), 2), _fmt(fl[s]["decode_ms"], 2),
               _fmt(_gib(_get(k, ("peak_bytes", s))), 1), _fmt(_gib(_get(t, ("model", "peak_bytes", s))), 1),
               _fmt(budget, 1)]
        print("| " + " | ".join(row) + " |")
    print("\n| context | attention kvscope (TFLOP/s) | torch flash | torch cuDNN |\n|---|---|---|---|")
    for s, r in t["attention"].items():
        print(f"| {int(s) // 1024}K | {_fmt(_get(k, ('attention_tflops', s)), 0)} | {_fmt(r.get('flash'), 0)} "
              f"| {_fmt(r.get('cudnn'), 0)} |")


def _get(d, ks):
    for key in ks:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def _gib(v):
    return None if v is None else v / 2 ** 30


def _fmt(v, nd):
    return "–" if v is None else f"{v:.{nd}f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", help="write results as JSON here")
    ap.add_argument("--config", help="HF config.json for the model shape (default: Llama-3.1-8B)")
    ap.add_argument("--lengths", default="4096,16384,32768,65536,131072")
    ap.add_argument("--attention_lengths", default="4096,16384,32768")
    ap.add_argument("--decode_steps", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--compare", nargs="+", metavar="JSON", help="torch.json [kvscope.json]: print the table")
    a = ap.parse_args()
    if a.compare:
        compare(a.compare[0], a.compare[1] if len(a.compare) > 1 else None)
        return
    import torch
    cfg = json.load(open(a.config)) if a.config else LLAMA31_8B
    lengths = [int(x) for x in a.lengths.split(",")]
    t0 = time.time()
    ceil = ceilings(10)
    print(f"[torch] ceilings: {ceil['copy_bytes_per_s'] / 1e12:.2f} TB/s, "
          f"{ceil['bf16_gemm_flops'] / 1e12:.0f} TFLOP/s", file=sys.stderr, flush=True)
    attn = attention_kernel([int(x) for x in a.attention_lengths.split(",")], a.repeat)
    model = model_bench(cfg, lengths, a.decode_steps, a.repeat)
    res = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
           "transformers": __import__("transformers").__version__, "lengths": lengths, "ceilings": ceil,
           "attention": attn, "model": model, "floor": floors(cfg, lengths, ceil, model["weight_bytes"]),
           "date": time.strftime("%Y-%m-%d"), "wall_s": time.time() - t0}
    if a.out:
        with open(a.out, "w") as f:
            json.dump(res, f, indent=1)
    json.dump(res, sys.stdout, indent=1)


if __name__ == "__main__":
    main()
