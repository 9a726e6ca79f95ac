#!/usr/bin/env python3
"""pycocoevalcap 1.2 as COCOEvalCap.evaluate() runs it (pycocotools COCO + loadRes, params
image_id = the results' images, PTBTokenizer, then the scorers), with METEOR and SPICE left out:
Bleu(4), Rouge(), Cider() only. Prints one JSON object: corpus scores, per-image CIDEr, and
seconds (load = reading both files, tokenize = the two jar runs, each scorer, total).

Usage: python3 bench/captions/pycoco_scores.py PREDICTIONS.json REFERENCES.json [--per-image]
"""
import contextlib
import io
import json
import sys
import time

from pycocotools.coco import COCO
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer


def main():
    pred_path, ref_path = sys.argv[1], sys.argv[2]
    seconds = {}
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco = COCO(ref_path)
        coco_res = coco.loadRes(pred_path)
    img_ids = coco_res.getImgIds()
    gts = {i: coco.imgToAnns[i] for i in img_ids}
    res = {i: coco_res.imgToAnns[i] for i in img_ids}
    t1 = time.perf_counter()
    seconds["load"] = t1 - t0
    tokenizer = PTBTokenizer()
    gts, res = tokenizer.tokenize(gts), tokenizer.tokenize(res)
    t2 = time.perf_counter()
    seconds["tokenize"] = t2 - t1
    corpus, per_image = {}, {}
    for scorer, names in [(Bleu(4), ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4"]), (Rouge(), ["ROUGE_L"]), (Cider(), ["CIDEr"])]:
        t = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):  # Bleu prints its counts
            score, scores = scorer.compute_score(gts, res)
        seconds[scorer.method()] = time.perf_counter() - t
        if len(names) == 1:
            score, scores = [score], [scores]
        for name, s, ss in zip(names, score, scores):
            corpus[name] = float(s)
            for i, v in zip(gts.keys(), ss):
                per_image.setdefault(str(i), {})[name] = float(v)
    seconds["total"] = time.perf_counter() - t0
    out = {"corpus": corpus, "images": len(img_ids), "seconds": seconds}
    if "--per-image" in sys.argv:
        out["per_image"] = per_image
    json.dump(out, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
