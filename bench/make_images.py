#!/usr/bin/env python3
"""Generate a benchmark image folder from the embedded sample (sample/pairs/).

Writes N JPEG files (quality 90) of varied sizes into OUT_DIR as <key>.jpg, each with
a <key>.txt caption copied from its source pair. Deterministic for a given seed.

Sizes: shorter side uniform in [--min-side, --max-side] (default 200..1200), aspect
ratio (width/height) log-uniform in [0.5, 2.0]. Each image is a random crop of its
source at that aspect ratio (covering 60-100% of the largest such crop), resized with
bicubic filtering (so most are upscaled: the sample images are <= 640 px). Grayscale
sources stay grayscale JPEGs; RGBA sources are composited on white.

Needs Pillow (the bench venv has it). Usage:
    make_images.py OUT_DIR [-n 2400] [--seed 0] [--sample-dir sample/pairs]
"""

import argparse
import math
import random
import sys
from pathlib import Path

from PIL import Image


def load_sources(sample_dir: Path):
    sources = []
    for p in sorted(sample_dir.iterdir()):
        if p.suffix.lower() not in (".jpg", ".jpeg", ".png"):
            continue
        txt = p.with_suffix(".txt")
        caption = txt.read_text(encoding="utf-8").strip() if txt.exists() else ""
        im = Image.open(p)
        im.load()
        if im.mode in ("RGBA", "LA", "P"):
            im = im.convert("RGBA")
            bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
            im = Image.alpha_composite(bg, im).convert("RGB")
        elif im.mode not in ("RGB", "L"):
            im = im.convert("RGB")
        sources.append((p.name, im, caption))
    if not sources:
        sys.exit(f"no images in {sample_dir}")
    return sources


def main():
    here = Path(__file__).resolve().parent
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir")
    ap.add_argument("-n", "--count", type=int, default=2400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--min-side", type=int, default=200)
    ap.add_argument("--max-side", type=int, default=1200)
    ap.add_argument("--quality", type=int, default=90)
    ap.add_argument("--sample-dir", default=str(here.parent / "sample" / "pairs"))
    args = ap.parse_args()

    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sources = load_sources(Path(args.sample_dir))
    rng = random.Random(args.seed)
    width = max(6, len(str(args.count - 1)))
    total_bytes = 0
    for i in range(args.count):
        name, src, caption = sources[i % len(sources)]
        short = rng.randint(args.min_side, args.max_side)
        aspect = math.exp(rng.uniform(math.log(0.5), math.log(2.0)))  # w / h
        if aspect >= 1.0:
            tw, th = round(short * aspect), short
        else:
            tw, th = short, round(short / aspect)
        # Largest crop of the source with aspect tw/th, scaled by 60..100 %, at a random spot.
        sw, sh = src.size
        cw, ch = (sw, sw * th / tw) if sw * th / tw <= sh else (sh * tw / th, sh)
        f = rng.uniform(0.6, 1.0)
        cw, ch = cw * f, ch * f
        x0 = rng.uniform(0, sw - cw)
        y0 = rng.uniform(0, sh - ch)
        im = src.resize((tw, th), Image.Resampling.BICUBIC, box=(x0, y0, x0 + cw, y0 + ch))
        key = f"{i:0{width}d}"
        jpg = out / f"{key}.jpg"
        im.save(jpg, "JPEG", quality=args.quality)
        (out / f"{key}.txt").write_text(caption + "\n", encoding="utf-8")
        total_bytes += jpg.stat().st_size
        if (i + 1) % 500 == 0:
            print(f"  {i + 1}/{args.count} images", file=sys.stderr)
    print(
        f"wrote {args.count} jpg+txt pairs from {len(sources)} sources to {out} "
        f"({total_bytes / 1e6:.1f} MB of JPEG)",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
