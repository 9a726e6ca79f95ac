"""The Python side of bench/embed_vs_python.sh, in the style of clip-retrieval.

    python bench/embed_python.py pipeline IMAGE_DIR MODEL.onnx --batch 32   # (b) PIL + onnxruntime
    python bench/embed_python.py model N MODEL.onnx --batch 32              # (c) model alone
    python bench/embed_python.py preprocess IMAGE_DIR --processes 2         # (d) PIL alone

Preprocessing is OpenAI CLIP's: PIL open, convert RGB, resize the shorter side to 224 (BICUBIC),
centre crop 224, /255, normalise. Each prints one JSON line with images/s.
"""
import argparse
import glob
import json
import os
import queue
import threading
import time
from multiprocessing import Pool

import numpy as np
from PIL import Image

MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32).reshape(3, 1, 1)
STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32).reshape(3, 1, 1)


def preprocess(path):
    im = Image.open(path).convert("RGB")
    w, h = im.size
    size = (224, int(224 * h / w)) if w <= h else (int(224 * w / h), 224)
    im = im.resize(size, Image.BICUBIC)
    left, top = int(round((size[0] - 224) / 2.0)), int(round((size[1] - 224) / 2.0))
    im = im.crop((left, top, left + 224, top + 224))
    a = np.asarray(im, dtype=np.float32).transpose(2, 0, 1) / 255.0
    return (a - MEAN) / STD


def session(model):
    import onnxruntime as ort
    return ort.InferenceSession(model, providers=["CPUExecutionProvider"])


def files(d):
    return sorted(glob.glob(os.path.join(d, "*.jpg")))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["pipeline", "model", "preprocess"])
    ap.add_argument("source")
    ap.add_argument("model", nargs="?")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--processes", type=int, default=2)
    a = ap.parse_args()
    if a.mode == "preprocess":
        paths = files(a.source)
        with Pool(a.processes) as pool:
            pool.map(preprocess, paths[: a.processes])  # warm the workers
            t = time.perf_counter()
            for _ in pool.imap(preprocess, paths, chunksize=16):
                pass
            dt = time.perf_counter() - t
        print(json.dumps({"tool": "PIL", "mode": a.mode, "images": len(paths), "seconds": round(dt, 3), "images_per_s": round(len(paths) / dt, 2)}))
        return
    sess = session(a.model)
    if a.mode == "model":
        n = int(a.source)
        x = np.random.default_rng(0).standard_normal((a.batch, 3, 224, 224)).astype(np.float32)
        sess.run(None, {"pixel_values": x[:1]})
        t = time.perf_counter()
        done = 0
        while done < n:
            b = min(a.batch, n - done)
            sess.run(None, {"pixel_values": x[:b]})
            done += b
        dt = time.perf_counter() - t
        print(json.dumps({"tool": "onnxruntime", "mode": a.mode, "images": n, "seconds": round(dt, 3), "images_per_s": round(n / dt, 2)}))
        return
    # pipeline: a preprocessing thread fills batches; the main thread runs the model.
    paths = files(a.source)
    q = queue.Queue(maxsize=2)

    def producer():
        for i in range(0, len(paths), a.batch):
            q.put(np.stack([preprocess(p) for p in paths[i : i + a.batch]]))
        q.put(None)

    sess.run(None, {"pixel_values": np.zeros((1, 3, 224, 224), np.float32)})
    t = time.perf_counter()
    threading.Thread(target=producer, daemon=True).start()
    n = 0
    while (batch := q.get()) is not None:
        emb = sess.run(None, {"pixel_values": batch})[0]
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        n += len(batch)
    dt = time.perf_counter() - t
    print(json.dumps({"tool": "python", "mode": a.mode, "images": n, "seconds": round(dt, 3), "images_per_s": round(n / dt, 2)}))


if __name__ == "__main__":
    main()
