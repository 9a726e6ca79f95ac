#!/usr/bin/env python3
"""Fixture of the val2017 leave-one-out comparison: the image order of the captions file, and
pycocoevalcap's corpus scores and per-image CIDEr (from pycoco_scores.py --per-image) in that order.

Usage: python3 bench/captions/loo_fixture.py captions_val2017.json PYCOCO.json OUT.json.gz
"""
import gzip
import json
import sys


def main():
    src, scores_path, out = sys.argv[1:4]
    with open(src) as f:
        order = [img["id"] for img in json.load(f)["images"]]
    with open(scores_path) as f:
        scores = json.load(f)
    doc = {
        "tool": "pycocoevalcap 1.2 (PTBTokenizer, Bleu(4), Rouge(), Cider()) via bench/captions/pycoco_scores.py",
        "input": "captions_val2017.json; candidate = lowest annotation id of each image, references = the rest",
        "image_order": order,
        "corpus": scores["corpus"],
        "cider": [scores["per_image"][str(i)]["CIDEr"] for i in order],
    }
    with gzip.GzipFile(out, "wb", mtime=0) as f:
        f.write(json.dumps(doc, separators=(",", ":")).encode())
    print(f"{len(order)} images -> {out}")


if __name__ == "__main__":
    main()
