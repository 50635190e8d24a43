#!/usr/bin/env python3
"""Stand-ins for RULER's QA sources, with the original files' shape and size, for timing `kvscope prepare`.

RULER's qa_1 reads the SQuAD v2.0 dev set (dev-v2.0.json: 35 articles, ~1,200 paragraphs, ~5,900 answerable
questions) and qa_2 the HotpotQA dev distractor set (hotpot_dev_distractor_v1.json: 7,405 questions with 10
paragraphs each). Neither ships with kvscope. This script writes files of the same structure and similar
size from the Paul Graham essays and the word lists, so the full RULER.yaml (720 samples) can be timed here.
The questions are meaningless; use the real files for evaluations.

    python3 tests/tools/make_qa_standins.py --data data --out /tmp/qa
        -> /tmp/qa/squad_standin.json, /tmp/qa/hotpotqa_standin.json
"""
import argparse
import glob
import json
import os
import random
import re


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="data", help="data folder with haystack/ and wordlists/")
    ap.add_argument("--out", required=True, help="folder for the two JSON files")
    a = ap.parse_args()
    rng = random.Random(0)
    essays = " ".join(open(f, encoding="utf-8").read() for f in sorted(glob.glob(os.path.join(a.data, "haystack/paul_graham_essays/*.txt"))))
    words = re.sub(r"\s+", " ", essays).split(" ")
    nouns = [w.strip() for w in open(os.path.join(a.data, "wordlists/nounlist.txt")) if w.strip()]
    verbs = [w.strip() for w in open(os.path.join(a.data, "wordlists/verblist.txt")) if w.strip()]

    def paragraph(n_words):
        start = rng.randrange(len(words) - n_words)
        return " ".join(words[start:start + n_words])

    def question(par):
        w = par.split(" ")
        k = rng.randrange(len(w) - 3)
        return f"Which word follows '{w[k]} {w[k + 1]}'?", w[k + 2]

    # SQuAD v2.0 dev shape: data[].paragraphs[].{context, qas[].{question, answers[].text, is_impossible}}
    data = []
    for art in range(35):
        paras = []
        for _ in range(34):
            ctx = paragraph(rng.randint(80, 160))
            qas = []
            for q in range(5):
                text, ans = question(ctx)
                qas.append({"question": text, "id": f"{art}-{len(paras)}-{q}", "answers": [{"text": ans, "answer_start": 0}] * 3,
                            "is_impossible": q == 4})
            paras.append({"context": ctx, "qas": qas})
        data.append({"title": f"Article {art}", "paragraphs": paras})
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "squad_standin.json"), "w") as f:
        json.dump({"version": "v2.0", "data": data}, f)

    # HotpotQA dev distractor shape: [{question, answer, context: [[title, [sentences]] x 10]}]
    entries = []
    for i in range(7405):
        ctx = []
        for d in range(10):
            sents = [" ".join(rng.choice(nouns) if k % 3 else rng.choice(verbs) for k in range(rng.randint(8, 20))) + ". "
                     for _ in range(rng.randint(3, 6))]
            ctx.append([f"Title {i}-{d}", sents])
        entries.append({"_id": str(i), "question": f"What is the first word of Title {i}-0?", "answer": ctx[0][1][0].split(" ")[0],
                        "type": "bridge", "level": "medium", "supporting_facts": [], "context": ctx})
    with open(os.path.join(a.out, "hotpotqa_standin.json"), "w") as f:
        json.dump(entries, f)


if __name__ == "__main__":
    main()
