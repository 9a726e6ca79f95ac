#!/usr/bin/env python3
"""Ground truth for cm3's PTB tokenisation: pycocoevalcap 1.2's own PTBTokenizer (Stanford CoreNLP
3.4.1's jar, `-preserveLines -lowerCase`, then its PUNCTUATIONS removed) run once on every caption
of a COCO captions file.

Usage: python3 bench/captions/ptb_oracle.py CAPTIONS_JSON OUT.json.gz
       (needs `pip install pycocoevalcap==1.2` and a Java runtime)

Writes gzip JSON: {"source": ..., "count": n, "captions": [[annotation_id, image_id, raw, tokenized],
...]} in annotation-id order. All captions go to the jar in one run, one caption per key, exactly as COCOEvalCap does.
"""
import gzip
import json
import sys

from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer


def main():
    src, out = sys.argv[1], sys.argv[2]
    with open(src) as f:
        anns = sorted(json.load(f)["annotations"], key=lambda a: a["id"])
    # One key per caption keeps the raw/tokenised pairing unambiguous.
    tokenized = PTBTokenizer().tokenize({a["id"]: [{"caption": a["caption"]}] for a in anns})
    rows = [[a["id"], a["image_id"], a["caption"], tokenized[a["id"]][0]] for a in anns]
    doc = {"source": src.split("/")[-1], "tool": "pycocoevalcap 1.2 PTBTokenizer", "count": len(rows), "captions": rows}
    with gzip.GzipFile(out, "wb", mtime=0) as f:
        f.write(json.dumps(doc, separators=(",", ":")).encode())
    print(f"{len(rows)} captions -> {out}")


if __name__ == "__main__":
    main()
