#!/usr/bin/env python3
"""Report of bench/caption_metrics.sh: scores of both, differences, best-of-N seconds, ratio.

Usage: python3 bench/captions/compare.py WORK_DIR RUNS
"""
import json
import os
import sys

METRICS = ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr"]


def wall(path):
    with open(path) as f:
        t0, t1 = map(float, f.read().split())
    return t1 - t0


def main():
    work, runs = sys.argv[1], int(sys.argv[2])
    load = lambda name: json.load(open(os.path.join(work, name)))
    py, cm3 = load("pycoco.1.json"), load("cm3.1.json")
    print(f"{'metric':<8} {'pycocoevalcap':>14} {'cm3':>14} {'|diff|':>10}")
    for m in METRICS:
        a, b = py["corpus"][m], cm3[m]
        print(f"{m:<8} {a:>14.6f} {b:>14.6f} {abs(a - b):>10.2e}")
    ours = {str(x["image_id"]): x for x in cm3["per_image"]}
    for m in METRICS:
        d = max(abs(v[m] - ours[k][m]) for k, v in py["per_image"].items())
        print(f"max per-image |diff| {m}: {d:.2e}")
    py_inner = min(load(f"pycoco.{i}.json")["seconds"]["total"] for i in range(1, runs + 1))
    py_wall = min(wall(os.path.join(work, f"pycoco.{i}.wall")) for i in range(1, runs + 1))
    cm3_wall = min(wall(os.path.join(work, f"cm3.{i}.wall")) for i in range(1, runs + 1))
    parts = load("pycoco.1.json")["seconds"]
    print("pycocoevalcap seconds (run 1): " + ", ".join(f"{k} {v:.3f}" for k, v in parts.items()))
    print(f"seconds, best of {runs}: cm3 process {cm3_wall:.3f}; pycocoevalcap load+tokenise+score "
          f"{py_inner:.3f} (whole process {py_wall:.3f})")
    print(f"ratio pycocoevalcap/cm3: {py_inner / cm3_wall:.1f}x (whole processes {py_wall / cm3_wall:.1f}x); "
          f"target >= 10x: {'met' if py_inner / cm3_wall >= 10 else 'NOT met'}")


if __name__ == "__main__":
    main()
