#!/usr/bin/env python3
"""Time img2dataset's Resizer over every .jpg in a folder with a pool of P processes.

Each task does what img2dataset's Downloader does after a download: wrap the file's
bytes in io.BytesIO and call `resizer(img_stream, None)`; here the bytes are read from
the local file (the read is timed). Resizer settings = img2dataset defaults except
resize_mode: image_size=256, resize_mode="center_crop", resize_only_if_bigger=False,
upscale_interpolation="lanczos", downscale_interpolation="area", encode_quality=95,
encode_format="jpg" (checked against img2dataset 1.47.0, img2dataset/resizer.py).

Timing covers only the processing (submit -> last result): interpreter start-up,
imports, pool creation and Resizer construction happen before, and every worker has
finished its initializer (and one warm-up resize) before the clock starts.
The encoded output is discarded unless --out is given (then written as <key>.jpg, the
way img2dataset's "files" output format would, and the write is timed).

Prints one JSON line: {"tool":"img2dataset","images":n,"seconds":s,"images_per_s":r,...}
Exits non-zero if any image fails to resize.
"""

import argparse
import io
import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

_RESIZER = None
_OUT = None


def _make_resizer(size, quality):
    from img2dataset.resizer import Resizer

    return Resizer(
        image_size=size,
        resize_mode="center_crop",
        resize_only_if_bigger=False,
        upscale_interpolation="lanczos",
        downscale_interpolation="area",
        encode_quality=quality,
        encode_format="jpg",
        skip_reencode=False,
        disable_all_reencoding=False,
        min_image_size=0,
        max_image_area=float("inf"),
        max_aspect_ratio=float("inf"),
        blurrer=None,
    )


def _init(size, quality, out, warmup_path, ready):
    global _RESIZER, _OUT
    _RESIZER = _make_resizer(size, quality)
    _OUT = out
    # Warm up the code paths (cv2 / albumentations lazy imports) outside the timed region.
    with open(warmup_path, "rb") as f:
        _RESIZER(io.BytesIO(f.read()), None)
    ready.put(os.getpid())


def _process(path):
    with open(path, "rb") as f:
        img_stream = io.BytesIO(f.read())
    img_str, width, height, _ow, _oh, err = _RESIZER(img_stream, None)
    if err is not None:
        return path, 0, None, err
    if _OUT is not None:
        with open(os.path.join(_OUT, os.path.basename(path)), "wb") as f:
            f.write(img_str)
    return path, len(img_str), (width, height), None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("input_dir")
    ap.add_argument("-p", "--processes", type=int, default=2)
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--quality", type=int, default=95)
    ap.add_argument("--chunksize", type=int, default=16)
    ap.add_argument("--out", default=None, help="also write the resized JPEGs here")
    args = ap.parse_args()

    files = sorted(str(p) for p in Path(args.input_dir).iterdir() if p.suffix.lower() == ".jpg")
    if not files:
        sys.exit(f"no .jpg files in {args.input_dir}")
    if args.out:
        os.makedirs(args.out, exist_ok=True)

    import img2dataset  # noqa: F401  (fail early, and report the version)
    from importlib.metadata import version

    ctx = mp.get_context("fork")
    ready = ctx.Queue()
    pool = ctx.Pool(
        args.processes,
        initializer=_init,
        initargs=(args.image_size, args.quality, args.out, files[0], ready),
    )
    for _ in range(args.processes):
        ready.get(timeout=300)

    t0 = time.perf_counter()
    n_ok, out_bytes, errors, bad_size = 0, 0, [], 0
    for path, nbytes, wh, err in pool.imap_unordered(_process, files, chunksize=args.chunksize):
        if err is not None:
            errors.append((path, err))
            continue
        n_ok += 1
        out_bytes += nbytes
        if wh != (args.image_size, args.image_size):
            bad_size += 1
    seconds = time.perf_counter() - t0
    pool.close()
    pool.join()

    print(
        json.dumps(
            {
                "tool": "img2dataset",
                "version": version("img2dataset"),
                "images": n_ok,
                "seconds": round(seconds, 4),
                "images_per_s": round(n_ok / seconds, 2),
                "processes": args.processes,
                "failed": len(errors),
                "not_square": bad_size,
                "out_mb": round(out_bytes / 1e6, 2),
            }
        )
    )
    for path, err in errors[:5]:
        print(f"failed: {path}: {err}", file=sys.stderr)
    if errors or bad_size:
        sys.exit(1)


if __name__ == "__main__":
    main()
