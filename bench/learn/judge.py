#!/usr/bin/env python3
"""The learning benchmark's judge: reads colour and shape back from pixels and from text.

Image (a PNG written by `cm3 generate t2i` or `cm3 tokenizer decode-image`, or a generated
shape itself):
  1. Only the inside is read: the generator keeps every shape MARGIN (4 of 128) pixels from the
     edges, where the VQ decoder draws frame artefacts. The background is the dominant colour
     (the per-channel median of the pixels in the most populated bin of a 8 x 8 x 8 colour
     histogram; not assumed white: a bad model may draw anything, and the background always
     covers most of the image). Foreground: pixels farther than FG_DISTANCE (RGB, Euclidean)
     from it.
  2. Colour: every foreground pixel votes for its nearest reference colour, the six of the
     palette plus three neutral ones (black, grey, white). The colour is the palette colour with
     the most votes, unless a neutral one has more (then None: the colour was lost), or the
     foreground is under MIN_FOREGROUND of the image (None: nothing drawn).
  3. Shape: the largest 4-connected component of the pixels that voted for that colour (of all
     foreground pixels when the colour is None); its fill ratio, component pixels over the area
     of its bounding box, is about 1 for a square, pi/4 = 0.785 for a circle and 1/2 for an
     upright triangle: square above SQUARE_FILL, circle above CIRCLE_FILL, triangle below.
Text (a caption from `cm3 generate i2t`, a span from `cm3 generate infill`): the colour and shape
words it names (whole words, case-insensitive; plurals count).

A judgement is right when it names the right attribute and no other (a caption naming two
colours is wrong). On the generator's own images the judge is exact (`judge.py selftest`); on the
VQ tokenizer's reconstructions of held-out images it measures what the tokenizer keeps, which
bounds what text-to-image can reach.

Usage:
  judge.py image FILE...            one JSON line per file: colour, shape, fill, foreground
  judge.py text "caption"...        one JSON line per text: colours, shapes named
  judge.py selftest HELDOUT_JSON    judge the held-out originals; exits 1 unless all are right
Standard library only.
"""
import json
import os
import re
import sys
from collections import Counter, deque

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pngio import read_png  # noqa: E402
from shapes import COLOURS, MARGIN, PALETTE, SHAPES  # noqa: E402

FG_DISTANCE = 80.0
MIN_FOREGROUND = 0.01
SQUARE_FILL = 0.89
CIRCLE_FILL = 0.64
NEUTRALS = {"black": (0, 0, 0), "grey": (128, 128, 128), "white": (255, 255, 255)}
REFERENCES = list(PALETTE.items()) + list(NEUTRALS.items())


def _median(v):
    v = sorted(v)
    return v[len(v) // 2]


def judge_pixels(width, height, rgb):
    n = width * height
    m = MARGIN * width // 128
    inner = [y * width + x for y in range(m, height - m) for x in range(m, width - m)]
    bins = Counter((rgb[3 * i] >> 5, rgb[3 * i + 1] >> 5, rgb[3 * i + 2] >> 5) for i in inner)
    top = bins.most_common(1)[0][0]
    in_top = [i for i in inner if (rgb[3 * i] >> 5, rgb[3 * i + 1] >> 5, rgb[3 * i + 2] >> 5) == top]
    bg = tuple(_median([rgb[3 * i + c] for i in in_top]) for c in range(3))
    fg_d2 = FG_DISTANCE * FG_DISTANCE
    votes = {}
    cache = {}
    for i in inner:
        p = rgb[3 * i:3 * i + 3]
        r, g, b = p[0], p[1], p[2]
        if (r - bg[0]) ** 2 + (g - bg[1]) ** 2 + (b - bg[2]) ** 2 <= fg_d2:
            continue
        name = cache.get(p)
        if name is None:
            name = min(REFERENCES, key=lambda ref: (r - ref[1][0]) ** 2 + (g - ref[1][1]) ** 2
                       + (b - ref[1][2]) ** 2)[0]
            cache[p] = name
        votes[i] = name
    counts = Counter(votes.values())
    foreground = len(votes) / len(inner)
    colour = None
    if foreground >= MIN_FOREGROUND:
        best = max(COLOURS, key=lambda c: counts.get(c, 0))
        neutral = max((counts.get(k, 0) for k in NEUTRALS), default=0)
        if counts.get(best, 0) > neutral:
            colour = best
    member = {i for i, v in votes.items() if colour is None or v == colour}
    # largest 4-connected component
    best_comp, seen = [], set()
    for start in member:
        if start in seen:
            continue
        comp, queue = [], deque([start])
        seen.add(start)
        while queue:
            i = queue.popleft()
            comp.append(i)
            x, y = i % width, i // width
            for j, ok in ((i - 1, x > 0), (i + 1, x < width - 1), (i - width, y > 0),
                          (i + width, y < height - 1)):
                if ok and j in member and j not in seen:
                    seen.add(j)
                    queue.append(j)
        if len(comp) > len(best_comp):
            best_comp = comp
    shape, fill = None, None
    if best_comp and foreground >= MIN_FOREGROUND:
        xs = [i % width for i in best_comp]
        ys = [i // width for i in best_comp]
        area = (max(xs) - min(xs) + 1) * (max(ys) - min(ys) + 1)
        fill = len(best_comp) / area
        shape = "square" if fill >= SQUARE_FILL else "circle" if fill >= CIRCLE_FILL else "triangle"
    return {
        "colour": colour,
        "shape": shape,
        "fill": fill,
        "foreground": foreground,
        "background": list(bg),
        "votes": dict(counts),
    }


def judge_image(path):
    w, h, rgb = read_png(path)
    return judge_pixels(w, h, rgb)


WORD = re.compile(r"[a-z]+")
SHAPE_WORDS = {s: s for s in SHAPES}
SHAPE_WORDS.update({s + "s": s for s in SHAPES})


def judge_text(text):
    words = WORD.findall(text.lower())
    colours = sorted({w for w in words if w in PALETTE})
    shapes = sorted({SHAPE_WORDS[w] for w in words if w in SHAPE_WORDS})
    return {"colours": colours, "shapes": shapes}


def right(named, truth):
    """Named exactly the true attribute (a list of names, or one name or None)."""
    if isinstance(named, list):
        return named == [truth]
    return named == truth


def psnr(path_a, path_b):
    """PSNR in dB between two PNGs of one size (8-bit)."""
    wa, ha, a = read_png(path_a)
    wb, hb, b = read_png(path_b)
    if (wa, ha) != (wb, hb):
        raise ValueError(f"{path_a} is {wa}x{ha}, {path_b} is {wb}x{hb}")
    mse = sum((x - y) ** 2 for x, y in zip(a, b)) / len(a)
    if mse == 0:
        return float("inf")
    import math
    return 10 * math.log10(255 * 255 / mse)


def main():
    if len(sys.argv) < 3 or sys.argv[1] not in ("image", "text", "selftest"):
        sys.exit(__doc__)
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "image":
        for p in args:
            print(json.dumps({"file": p, **judge_image(p)}))
    elif cmd == "text":
        for t in args:
            print(json.dumps({"text": t, **judge_text(t)}))
    else:
        held = json.load(open(args[0]))
        bad = 0
        for h in held:
            j = judge_image(h["image"])
            t = judge_text(h["caption"])
            ok = (j["colour"] == h["colour"] and j["shape"] == h["shape"]
                  and right(t["colours"], h["colour"]) and right(t["shapes"], h["shape"]))
            bad += not ok
            if not ok:
                print(f"judge wrong on {h['key']}: {h['colour']} {h['shape']} judged {j} / {t}")
        print(f"judge selftest: {len(held) - bad} of {len(held)} held-out originals right")
        sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
