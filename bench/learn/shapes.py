#!/usr/bin/env python3
"""Caption-image pairs with a known, learnable relation: one flat coloured shape on white.

Every image is SIZE x SIZE pixels (128 by default: what `cm3 build --preset demo` ingests), white,
with one axis-aligned shape in one of six colours:

    colours  red, orange, yellow, green, blue, purple   (PALETTE: RGB values far apart)
    shapes   circle, square, triangle (upright, base = height)

Its half-extent is drawn uniformly from [--min-half, --max-half] pixels and its centre uniformly
among the positions that keep it inside the image with a 4-pixel margin; no anti-aliasing, so
every pixel is either the background or the shape's exact colour. The caption names the colour
and the shape through one of TEMPLATES (chosen uniformly). No template puts "a"/"an" right
before the colour word ("an orange ..." would give the colour away when it is masked), so the
text-infill prompts hide the colour completely.

Writes, into OUT:

    train/<key>.png, .txt, .json   --pairs training pairs (a folder `cm3 ingest` reads: image,
                                   caption sidecar, metadata with the attributes and a CC0
                                   licence); colour and shape drawn uniformly at random
    heldout/<key>.png              --heldout pairs that are NOT ingested: colour i mod 6 and shape
                                   (i + i div 6) mod 3, so every 18 cover the 18 combinations;
                                   none equals a training image
    heldout.json                   per held-out pair: key, image, caption, colour, shape, size,
                                   centre, and the infill prompt (the caption with the colour
                                   word replaced by <mask>)
    heldout.tsv                    key, image path, caption, infill prompt (for shell loops)
    generator.json                 the settings, palette and templates

Deterministic for a seed (Python's `random.Random`, training and held-out streams apart). Needs
only the Python standard library (PNGs are written by pngio.py with zlib).

Usage: shapes.py OUT [--pairs 2400] [--heldout 18] [--seed 0] [--size 128]
"""
import argparse
import json
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pngio import write_png  # noqa: E402

PALETTE = {
    "red": (215, 25, 35),
    "orange": (255, 125, 0),
    "yellow": (245, 220, 0),
    "green": (0, 155, 60),
    "blue": (25, 70, 225),
    "purple": (140, 35, 180),
}
COLOURS = list(PALETTE)
SHAPES = ["circle", "square", "triangle"]
BACKGROUND = (255, 255, 255)
TEMPLATES = [
    "{c} {s}",
    "the {c} {s}",
    "{c} {s} on white",
    "a photo of the {c} {s}",
    "a drawing of one {c} {s}",
    "a {s} coloured {c}",
    "a {s} in {c} on a white background",
    "one {c} {s}, flat colour",
]
MARGIN = 4


def draw(size, colour, shape, half, cx, cy):
    """The RGB bytes of one image: `shape` of half-extent `half` centred at (cx, cy)."""
    bg, fg = bytes(BACKGROUND), bytes(PALETTE[colour])
    blank = bg * size
    rows = []
    top = cy - half
    for y in range(size):
        yc = y + 0.5
        x0 = x1 = 0
        if top <= yc < cy + half:
            if shape == "square":
                x0, x1 = cx - half, cx + half
            elif shape == "circle":
                dy = yc - cy
                w = (half * half - dy * dy) ** 0.5 if abs(dy) < half else 0.0
                # pixel centres x + 0.5 inside the circle
                x0, x1 = int(-(-(cx - w - 0.5) // 1)), int((cx + w - 0.5) // 1) + 1
            else:  # triangle: apex at the top, base 2 * half at the bottom
                w = half * (yc - top) / (2 * half)
                x0, x1 = int(-(-(cx - w - 0.5) // 1)), int((cx + w - 0.5) // 1) + 1
        x0, x1 = max(0, x0), min(size, x1)
        if x1 > x0:
            rows.append(bg * x0 + fg * (x1 - x0) + bg * (size - x1))
        else:
            rows.append(blank)
    return b"".join(rows)


def caption(template, colour, shape):
    return TEMPLATES[template].format(c=colour, s=shape)


def infill_prompt(template, shape):
    return TEMPLATES[template].format(c="<mask>", s=shape)


def attributes(rng, size, min_half, max_half, colour=None, shape=None):
    half = rng.randint(min_half, max_half)
    lo, hi = half + MARGIN, size - half - MARGIN
    return {
        "colour": colour or rng.choice(COLOURS),
        "shape": shape or rng.choice(SHAPES),
        "half": half,
        "cx": rng.randint(lo, hi),
        "cy": rng.randint(lo, hi),
        "template": rng.randrange(len(TEMPLATES)),
    }


def key_of(a):
    return (a["colour"], a["shape"], a["half"], a["cx"], a["cy"])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--pairs", type=int, default=2400)
    ap.add_argument("--heldout", type=int, default=18)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--min-half", type=int, default=None, help="default: size * 3 / 16 (24 at 128)")
    ap.add_argument("--max-half", type=int, default=None, help="default: size * 5 / 16 (40 at 128)")
    a = ap.parse_args()
    min_half = a.min_half or a.size * 3 // 16
    max_half = a.max_half or a.size * 5 // 16
    if not 2 <= min_half <= max_half or a.size < 2 * (max_half + MARGIN):
        sys.exit(f"half-extents {min_half}..{max_half} do not fit {a.size} px")
    train_dir, held_dir = os.path.join(a.out, "train"), os.path.join(a.out, "heldout")
    os.makedirs(train_dir, exist_ok=True)
    os.makedirs(held_dir, exist_ok=True)

    rng = random.Random(f"shapes-train-{a.seed}")
    seen = set()
    for i in range(a.pairs):
        at = attributes(rng, a.size, min_half, max_half)
        seen.add(key_of(at))
        key = f"shape-{i:05d}"
        write_png(os.path.join(train_dir, key + ".png"), a.size, a.size,
                  draw(a.size, at["colour"], at["shape"], at["half"], at["cx"], at["cy"]))
        with open(os.path.join(train_dir, key + ".txt"), "w") as f:
            f.write(caption(at["template"], at["colour"], at["shape"]) + "\n")
        with open(os.path.join(train_dir, key + ".json"), "w") as f:
            json.dump({"license": "CC0-1.0", **at}, f)
            f.write("\n")

    rng = random.Random(f"shapes-heldout-{a.seed}")
    held = []
    for i in range(a.heldout):
        colour, shape = COLOURS[i % 6], SHAPES[(i + i // 6) % 3]
        while True:
            at = attributes(rng, a.size, min_half, max_half, colour, shape)
            if key_of(at) not in seen:
                break
        seen.add(key_of(at))
        key = f"held-{i:04d}"
        image = os.path.join(held_dir, key + ".png")
        write_png(image, a.size, a.size, draw(a.size, colour, shape, at["half"], at["cx"], at["cy"]))
        held.append({
            "key": key,
            "image": os.path.abspath(image),
            "caption": caption(at["template"], colour, shape),
            "infill": infill_prompt(at["template"], shape),
            **at,
        })
    with open(os.path.join(a.out, "heldout.json"), "w") as f:
        json.dump(held, f, indent=1)
        f.write("\n")
    with open(os.path.join(a.out, "heldout.tsv"), "w") as f:
        for h in held:
            f.write(f"{h['key']}\t{h['image']}\t{h['caption']}\t{h['infill']}\n")
    with open(os.path.join(a.out, "generator.json"), "w") as f:
        json.dump({
            "pairs": a.pairs, "heldout": a.heldout, "seed": a.seed, "size": a.size,
            "half_extent": [min_half, max_half], "margin": MARGIN, "palette": PALETTE,
            "background": BACKGROUND, "shapes": SHAPES, "templates": TEMPLATES,
        }, f, indent=1)
        f.write("\n")
    print(f"shapes: {a.pairs} training pairs in {train_dir}, {a.heldout} held out in {held_dir}")


if __name__ == "__main__":
    main()
