#!/usr/bin/env python3
"""One-off maintenance script: (re)build sample/pairs/ from the shared data folder.

Not used by tests or CI (those read only sample/pairs/, never ../shared).
Standard library only. Usage, from the repo root:

    python3 sample/make_sample.py [--shared ../shared/data]

It copies image files byte-for-byte and writes, per image, a <stem>.txt
caption (one line) and a <stem>.json metadata sidecar. The licence table in
sample/SOURCE.md is printed to stdout for pasting.
"""

import argparse
import json
import shutil
import struct
from pathlib import Path

COCO_LICENSES = {
    "Attribution License": "CC-BY-2.0",
    "Attribution-ShareAlike License": "CC-BY-SA-2.0",
}

# skimage 0.26.0 skimage/data/_fetchers.py docstrings.
SKIMAGE = {
    "astronaut": (
        "public-domain",
        "https://flic.kr/p/r9qvLn",
        "scikit-image 0.26.0 skimage/data/astronaut.png: Eileen Collins, NASA Great Images database "
        "<https://flic.kr/p/r9qvLn>; 'No known copyright restrictions, released into the public domain.'",
    ),
    "chelsea": (
        "CC0-1.0",
        "https://creativecommons.org/publicdomain/zero/1.0/",
        "scikit-image 0.26.0 skimage/data/chelsea.png: Chelsea the cat; "
        "'No copyright restrictions. CC0 by the photographer (Stefan van der Walt).'",
    ),
    "coffee": (
        "CC0-1.0",
        "https://creativecommons.org/publicdomain/zero/1.0/",
        "scikit-image 0.26.0 skimage/data/coffee.png: coffee cup, courtesy of Pikolo Espresso Bar; "
        "'No copyright restrictions. CC0 by the photographer (Rachel Michetti).'",
    ),
    "rocket": (
        "public-domain",
        "http://arstechnica.com/tech-policy/2015/03/elon-musk-puts-spacex-photos-into-the-public-domain/",
        "scikit-image 0.26.0 skimage/data/rocket.jpg: DSCOVR launch on Falcon 9, SpaceX Photos "
        "<https://www.flickr.com/photos/spacexphotos/16511594820/in/photostream/>; "
        "'captured by SpaceX and released in the public domain'",
    ),
    "horse": (
        "CC0-1.0",
        "https://creativecommons.org/publicdomain/zero/1.0/",
        "scikit-image 0.26.0 skimage/data/horse.png: openclipart "
        "<http://openclipart.org/detail/158377/horse-by-marauder>; "
        "'No copyright restrictions. CC0 given by owner (Andreas Preuss (marauder)).'",
    ),
    "camera": (
        "CC0-1.0",
        "https://creativecommons.org/publicdomain/zero/1.0/",
        "scikit-image 0.26.0 skimage/data/camera.png: gray-level camera image; "
        "'No copyright restrictions. CC0 by the photographer (Lav Varshney).'",
    ),
}


def image_size(path: Path):
    """(width, height) from a PNG IHDR or a JPEG SOFn marker."""
    data = path.read_bytes()
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        w, h = struct.unpack(">II", data[16:24])
        return w, h
    if data[:2] == b"\xff\xd8":
        i = 2
        while i < len(data):
            if data[i] != 0xFF:
                i += 1
                continue
            marker = data[i + 1]
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
                i += 1 if marker == 0xFF else 2
                continue
            seglen = struct.unpack(">H", data[i + 2 : i + 4])[0]
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                h, w = struct.unpack(">HH", data[i + 5 : i + 9])
                return w, h
            i += 2 + seglen
    raise ValueError(f"unknown image format: {path}")


def write_pair(out: Path, stem: str, src: Path, caption: str, meta: dict):
    ext = src.suffix.lower()
    dst = out / f"{stem}{ext}"
    shutil.copyfile(src, dst)
    w, h = image_size(dst)
    meta["width"], meta["height"] = w, h
    (out / f"{stem}.txt").write_text(caption.strip() + "\n", encoding="utf-8")
    (out / f"{stem}.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return dst.name


def main():
    here = Path(__file__).resolve().parent
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=str(here.parent.parent / "shared" / "data"))
    args = ap.parse_args()
    shared = Path(args.shared)
    out = here / "pairs"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    table = []

    coco = shared / "coco_mini_train"
    caps = {}
    for line in (coco / "pairs.jsonl").read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        caps.setdefault(r["image_id"], []).append((r["caption_id"], r["caption"]))
    for line in (coco / "images.jsonl").read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        lic = COCO_LICENSES.get(r["license_name"])
        if lic is None:
            continue
        iid = r["image_id"]
        c = sorted(caps[iid])
        assert [x[0] for x in c] == sorted(r["caption_ids"]), iid
        meta = {
            "license": lic,
            "license_url": r["license_url"],
            "url": r["flickr_url"],
            "source_dataset": "MS-COCO 2017 train",
            "image_id": iid,
            "captions": [x[1] for x in c],
            "caption_ids": [x[0] for x in c],
        }
        name = write_pair(out, f"coco-{iid}", coco / r["file"], c[0][1], meta)
        assert (meta["width"], meta["height"]) == (r["width"], r["height"]), iid
        table.append((name, lic, r["flickr_url"]))

    sk = shared / "clip_notebook_skimage_pairs"
    pairs = {p["name"]: p for p in json.loads((sk / "pairs.json").read_text(encoding="utf-8"))}
    for name, (lic, lic_url, desc) in SKIMAGE.items():
        p = pairs[name]
        meta = {
            "license": lic,
            "license_url": lic_url,
            "url": desc,
            "source_dataset": "scikit-image 0.26.0 data",
            "image_id": None,
            "captions": [p["caption"]],
            "caption_ids": [],
        }
        fname = write_pair(out, f"skimage-{name}", sk / p["image"], p["caption"], meta)
        table.append((fname, lic, desc.split(": ", 1)[1]))

    print("| file | licence | attribution / source |")
    print("| --- | --- | --- |")
    for f, lic, url in table:
        print(f"| {f} | {lic} | {url} |")


if __name__ == "__main__":
    main()
