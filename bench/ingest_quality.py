#!/usr/bin/env python3
"""PSNR of one ingest's images against another's, matched by key.

Reads the `pairs/*.parquet` shards of two datasets made from the same input with
different settings (e.g. `--jpeg-codec rust` and `--jpeg-codec rust-dct`), decodes each
stored image with Pillow and prints the PSNR (8-bit RGB, all channels) of every pair of
images in summary: the median, the worst, how many fall under a threshold, and the PSNR
over all pixels together. With --by-size it also groups by the original shorter side.

    ingest_quality.py REFERENCE_DATASET OTHER_DATASET [--under 40] [--by-size]

Needs pyarrow, numpy and Pillow (the bench venv has them).
"""

import argparse
import glob
import io
import math
import sys

import numpy as np
import pyarrow.parquet as pq
from PIL import Image


def load(dataset):
    rows = {}
    files = sorted(glob.glob(f"{dataset}/pairs/*.parquet"))
    if not files:
        sys.exit(f"no pairs/*.parquet in {dataset}")
    for f in files:
        t = pq.read_table(f, columns=["key", "image", "orig_width", "orig_height"]).to_pydict()
        for k, img, w, h in zip(t["key"], t["image"], t["orig_width"], t["orig_height"]):
            rows[k] = (img, min(w, h))
    return rows


def pixels(data):
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float64)


def psnr(mse):
    return float("inf") if mse == 0 else 10 * math.log10(255.0**2 / mse)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("reference")
    ap.add_argument("other")
    ap.add_argument("--under", type=float, default=40.0)
    ap.add_argument("--by-size", action="store_true")
    args = ap.parse_args()
    ref, other = load(args.reference), load(args.other)
    keys = sorted(set(ref) & set(other))
    if not keys:
        sys.exit("no keys in common")
    scores, sq_sum, n_px, groups = [], 0.0, 0, {}
    for k in keys:
        a, b = pixels(ref[k][0]), pixels(other[k][0])
        if a.shape != b.shape:
            sys.exit(f"{k}: shapes differ {a.shape} vs {b.shape}")
        se = float(((a - b) ** 2).sum())
        sq_sum += se
        n_px += a.size
        p = psnr(se / a.size)
        scores.append((p, k))
        groups.setdefault(ref[k][1] // 256 * 256, []).append(p)
    scores.sort()
    values = [p for p, _ in scores]
    under = sum(1 for p in values if p < args.under)
    print(f"images {len(keys)} (only in reference {len(set(ref) - set(other))}, only in other {len(set(other) - set(ref))})")
    print(f"median {float(np.median(values)):.2f} dB, worst {values[0]:.2f} dB ({scores[0][1]}), "
          f"under {args.under:g} dB: {under}, over all pixels {psnr(sq_sum / n_px):.2f} dB")
    if args.by_size:
        for lo in sorted(groups):
            g = groups[lo]
            print(f"  shorter side {lo}-{lo + 255}: {len(g)} images, median {float(np.median(g)):.2f} dB, "
                  f"worst {min(g):.2f} dB, under {args.under:g}: {sum(1 for p in g if p < args.under)}")


if __name__ == "__main__":
    main()
