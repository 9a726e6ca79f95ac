#!/usr/bin/env python3
"""Fixtures for sft/tests/canny.rs: OpenCV's cv2.Canny on small crops of the sample's images.

For each image: the RGB input (resized to 64 x 48 with PIL's bicubic, so the fixtures stay
small; the resize is not under test) as `<name>.png`, and OpenCV's edges as
`<name>.<low>-<high>.rgb.png` (Canny of the RGB array, what ControlNet's annotator does) and
`<name>.<low>-<high>.gray.png` (Canny of the grayscale conversion, saved as
`<name>.gray-input.png`). Needs numpy, pillow and
opencv-python-headless. Recorded: the OpenCV version in versions.txt.

Usage: canny-oracle.py OUT_DIR
"""
import os
import sys

import cv2
import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGES = ["coco-107438.jpg", "coco-114174.jpg", "skimage-camera.png", "skimage-astronaut.png"]
THRESHOLDS = [(100, 200), (50, 150)]


def main(out):
    os.makedirs(out, exist_ok=True)
    for name in IMAGES:
        img = Image.open(os.path.join(ROOT, "sample", "pairs", name)).convert("RGB").resize((64, 48), Image.BICUBIC)
        stem = os.path.splitext(name)[0]
        img.save(os.path.join(out, f"{stem}.png"))
        rgb = np.asarray(img)
        img.convert("L").save(os.path.join(out, f"{stem}.gray-input.png"))
        gray = np.asarray(img.convert("L"))
        for lo, hi in THRESHOLDS:
            Image.fromarray(cv2.Canny(rgb, lo, hi)).save(os.path.join(out, f"{stem}.{lo}-{hi}.rgb.png"))
            Image.fromarray(cv2.Canny(gray, lo, hi)).save(os.path.join(out, f"{stem}.{lo}-{hi}.gray.png"))
    with open(os.path.join(out, "versions.txt"), "w") as f:
        f.write(f"opencv-python-headless {cv2.__version__}\nnumpy {np.__version__}\n")


if __name__ == "__main__":
    main(sys.argv[1])
