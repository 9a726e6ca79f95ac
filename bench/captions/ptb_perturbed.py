#!/usr/bin/env python3
"""Ground truth for cm3's PTB tokenisation on perturbed COCO captions: 3,000 val2017 captions
(seeded choice) with 1-4 insertions each of punctuation, quotes, contractions, abbreviations,
numbers, URLs and Unicode punctuation, 30% upper-cased; run through pycocoevalcap 1.2's
PTBTokenizer in one call.

Usage: python3 bench/captions/ptb_perturbed.py captions_val2017.json OUT.json.gz
Writes gzip JSON {"seed": 7, "pairs": [[raw, tokenized], ...]}.
"""
import gzip
import json
import random
import sys

from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

INSERTS = list(".,;:!?'\"()[]{}&$%#@*/-_+=<>~^|\\`") + [
    "'s", "n't", "...", "--", " - ", "U.S.", " St.", " Dr. ", "a.m.", "3/4", " 1,000 ", "5.5", "http://x.com/a",
    "www.a.org", "e-mail", " I.", " A ", " The ", "\u00e9", "\u2014", "\u201c", "\u201d", "\u2019", "\u00bd", "\u00a0",
    "\t", "etc.", "Inc.", "no. 5", "co. ltd",
]


def main():
    src, out = sys.argv[1], sys.argv[2]
    rng = random.Random(7)
    with open(src) as f:
        captions = [a["caption"] for a in json.load(f)["annotations"]]
    cases = []
    for _ in range(3000):
        chars = list(rng.choice(captions))
        for _ in range(rng.randint(1, 4)):
            chars.insert(rng.randint(0, len(chars)), rng.choice(INSERTS))
        text = "".join(chars)
        cases.append(text.upper() if rng.random() < 0.3 else text)
    tokenized = PTBTokenizer().tokenize({i: [{"caption": c}] for i, c in enumerate(cases)})
    pairs = [[c, tokenized[i][0]] for i, c in enumerate(cases)]
    with gzip.GzipFile(out, "wb", mtime=0) as f:
        f.write(json.dumps({"seed": 7, "tool": "pycocoevalcap 1.2 PTBTokenizer, one call", "pairs": pairs},
                           separators=(",", ":")).encode())
    print(f"{len(pairs)} captions -> {out}")


if __name__ == "__main__":
    main()
