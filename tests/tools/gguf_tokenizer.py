"""gguf_tokenizer.py — a Hugging Face `tokenizers.Tokenizer` built from the vocabulary embedded in a GGUF file.

This is the Python reference for kvscope's C GGUF tokenizer (src/tokenizer/gguf_vocab.c): both read the same
`tokenizer.ggml.*` keys and build the same pipeline, so the ids the C code produces can be checked against
the `tokenizers` package. Other test tools import it to tokenize their prompts:

    from gguf_tokenizer import load_gguf_tokenizer, gguf_tokenizer_info
    tok = load_gguf_tokenizer("SmolLM2-135M-Instruct.Q4_1.gguf")
    ids = tok.encode("Hello", add_special_tokens=True).ids
    info = gguf_tokenizer_info(path)   # {"bos_id", "eos_id", "add_bos", "chat_template", "model", "pre"}

Pipelines (they mirror what the Hugging Face tokenizer.json of each model family holds):
  all models: added tokens = token_type CONTROL and UNKNOWN (special) and USER_DEFINED (not special).
  model "gpt2" (byte-level BPE, merges given): pre-tokenizer chosen by `tokenizer.ggml.pre`:
      llama-bpe / llama3 / llama-v3 : Split(Llama-3 regex, isolated) + ByteLevel(use_regex=False), ignore_merges
      qwen2                         : NFC normaliser, Split(Qwen2 regex, isolated) + ByteLevel(use_regex=False)
      smollm                        : Digits(individual) + ByteLevel(use_regex=True) (the GPT-2 regex)
      anything else (gpt2 ...)      : ByteLevel(use_regex=True)
    decoder ByteLevel; BOS prepended by encode(add_special_tokens=True) when tokenizer.ggml.add_bos_token
    (default: true for the Llama-3 pre-tokenizer, false otherwise).
  model "llama" (SentencePiece BPE with scores): merges derived from the scores (a pair (a, b) merges when a+b
    is a NORMAL token; higher scores first, the splits of one token by (left id, right id)), byte fallback, normaliser
    Prepend("▁") (when tokenizer.ggml.add_space_prefix, default true) + Replace(" ", "▁"), decoder
    Replace/ByteFallback/Fuse/Strip; add_bos default true.

Requires: pip install tokenizers gguf
"""
import sys

from gguf import GGUFReader
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

# tokenizer.ggml.token_type values (llama.cpp `llama_token_type`).
TOKEN_NORMAL, TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNUSED, TOKEN_BYTE = 1, 2, 3, 4, 5, 6

LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3_PRES = ("llama-bpe", "llama3", "llama-v3")


def _field(reader, key):
    return reader.fields.get(key)


def _scalar(reader, key, default=None):
    f = _field(reader, key)
    if f is None:
        return default
    part = f.parts[f.data[0]]
    if f.types[0].name == "STRING":
        return bytes(part).decode("utf-8")
    return part.tolist()[0]


def _array(reader, key):
    f = _field(reader, key)
    if f is None:
        return None
    if f.types[-1].name == "STRING":
        return [bytes(f.parts[i]).decode("utf-8") for i in f.data]
    return [f.parts[i].tolist()[0] for i in f.data]


def gguf_tokenizer_info(gguf_path):
    """The tokenizer metadata of a GGUF file that is not part of the `tokenizers` pipeline."""
    return _info(GGUFReader(gguf_path))


def _info(r):
    model = _scalar(r, "tokenizer.ggml.model")
    pre = _scalar(r, "tokenizer.ggml.pre", "default")
    add_bos_default = model == "llama" or (model == "gpt2" and pre in LLAMA3_PRES)
    return {
        "model": model,
        "pre": pre,
        "bos_id": _scalar(r, "tokenizer.ggml.bos_token_id"),
        "eos_id": _scalar(r, "tokenizer.ggml.eos_token_id"),
        "add_bos": bool(_scalar(r, "tokenizer.ggml.add_bos_token", add_bos_default)),
        "chat_template": _scalar(r, "tokenizer.chat_template"),
    }


def _merges_from_scores(tokens, scores, types):
    """SentencePiece BPE as merges, ordered as transformers' SentencePieceExtractor does (and
    src/tokenizer/gguf_vocab.c): merged NORMAL tokens by score (descending, ties by id), the splits (a, b) of one
    token — both halves in the vocabulary — by (id of a, id of b)."""
    vocab = {}
    for i, t in enumerate(tokens):
        vocab.setdefault(t, i)
    order = sorted((i for i in range(len(tokens)) if types[i] == TOKEN_NORMAL), key=lambda i: (-scores[i], i))
    merges = []
    for i in order:
        t = tokens[i]
        splits = [(vocab[t[:k]], vocab[t[k:]], t[:k], t[k:]) for k in range(1, len(t))
                  if t[:k] in vocab and t[k:] in vocab]
        merges += [(a, b) for _, _, a, b in sorted(splits)]
    return merges


def _byte_level_pre(pre):
    if pre in LLAMA3_PRES or pre == "qwen2":
        regex = LLAMA3_REGEX if pre in LLAMA3_PRES else QWEN2_REGEX
        return pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    if pre == "smollm":
        return pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ])
    return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)


def load_gguf_tokenizer(gguf_path):
    """A tokenizers.Tokenizer equivalent to the GGUF's embedded vocabulary (see the module comment)."""
    r = GGUFReader(gguf_path)  # parsing the whole file takes seconds: read it once
    info = _info(r)
    tokens = _array(r, "tokenizer.ggml.tokens")
    if tokens is None:
        raise ValueError(f"{gguf_path}: no tokenizer.ggml.tokens")
    types = _array(r, "tokenizer.ggml.token_type") or [TOKEN_NORMAL] * len(tokens)
    vocab = {}
    for i, t in enumerate(tokens):
        vocab.setdefault(t, i)

    if info["model"] == "gpt2":
        merges = [tuple(m.split(" ", 1)) for m in _array(r, "tokenizer.ggml.merges")]
        tok = Tokenizer(models.BPE(vocab, merges, dropout=None, unk_token=None, fuse_unk=False,
                                   byte_fallback=False, ignore_merges=info["pre"] in LLAMA3_PRES))
        if info["pre"] == "qwen2":
            tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = _byte_level_pre(info["pre"])
        tok.decoder = decoders.ByteLevel()
    elif info["model"] == "llama":
        scores = _array(r, "tokenizer.ggml.scores") or [0.0] * len(tokens)
        unk_id = _scalar(r, "tokenizer.ggml.unknown_token_id", 0)
        tok = Tokenizer(models.BPE(vocab, _merges_from_scores(tokens, scores, types), dropout=None,
                                   unk_token=tokens[unk_id], fuse_unk=True, byte_fallback=True))
        prefix = bool(_scalar(r, "tokenizer.ggml.add_space_prefix", True))
        steps = [normalizers.Prepend("\u2581")] if prefix else []
        tok.normalizer = normalizers.Sequence(steps + [normalizers.Replace(" ", "\u2581")])
        tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(),
                                         decoders.Fuse(), decoders.Strip(" ", int(prefix), 0)])
    else:
        raise ValueError(f"{gguf_path}: tokenizer.ggml.model '{info['model']}' is not supported")

    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for i, t in enumerate(tokens) if types[i] in (TOKEN_CONTROL, TOKEN_UNKNOWN)])
    tok.add_tokens([AddedToken(t, special=False, normalized=False)
                    for i, t in enumerate(tokens) if types[i] == TOKEN_USER_DEFINED])
    if info["add_bos"] and info["bos_id"] is not None:
        bos = tokens[info["bos_id"]]
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                           special_tokens=[(bos, info["bos_id"])])
    return tok


if __name__ == "__main__":
    t = load_gguf_tokenizer(sys.argv[1])
    for text in sys.argv[2:]:
        print(t.encode(text, add_special_tokens=True).ids)
