"""A synthetic cm3 dataset directory for the augment benchmark (not committed).

N pairs in shards of --shard-rows: `pairs/<shard>.parquet` (the columns later stages read: id,
caption, sha256, split), `embeddings/<shard>/{ids,image,text,doc}.npy` (float16 unit vectors,
clustered like CLIP embeddings: image = cluster centre + noise, text = image + noise,
doc = normalise(image + text)), and `manifest.json` recording the ingest and embed stages with the
given text encoder, as `cm3 embed` would. One pair in five shares its image with the previous pair
(COCO's several captions per image), exercising the duplicate rule.

    python bench/make_augment_dataset.py OUT --n 100000 --text-model MODEL.onnx [--seed 0]
"""
import argparse
import hashlib
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

WORDS = (
    "a the man woman dog cat bus train plane kite boat bird horse child people street table plate "
    "pizza sandwich cake field beach wave surfboard skateboard bike motorcycle truck car tree sky "
    "snow mountain river city building room kitchen bed couch window red blue green white black "
    "large small young old two three standing sitting riding holding eating playing walking next "
    "to on in of with near under top front side group tall grassy sunny busy"
).split()


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def sha_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--shard-rows", type=int, default=10_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--clusters", type=int, default=1_000)
    ap.add_argument("--text-model", required=True)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    centres = unit(rng.normal(size=(a.clusters, a.dim)).astype(np.float32))
    os.makedirs(os.path.join(a.out, "pairs"), exist_ok=True)
    os.makedirs(os.path.join(a.out, "embeddings"), exist_ok=True)
    text_sha = sha_file(a.text_model)
    ingest, embed = {}, {}
    for s, start in enumerate(range(0, a.n, a.shard_rows)):
        n = min(a.shard_rows, a.n - start)
        name = f"synthetic-{s:05d}"
        ids = rng.integers(1, 2**63, size=n, dtype=np.uint64)
        shas = [hashlib.sha256(f"{a.seed}-{start + i}".encode()).hexdigest() for i in range(n)]
        for i in range(1, n):
            if (start + i) % 5 == 1:
                shas[i] = shas[i - 1]
        lens = rng.integers(6, 16, size=n)
        captions = [" ".join(rng.choice(WORDS, size=k)) for k in lens]
        table = pa.table({
            "id": pa.array(ids, pa.uint64()),
            "caption": pa.array(captions, pa.string()),
            "sha256": pa.array(shas, pa.string()),
            "split": pa.array(["train"] * n, pa.string()),
        })
        rel = f"pairs/{name}.parquet"
        pq.write_table(table, os.path.join(a.out, rel))
        ingest[name] = {"file": rel, "input": "synthetic", "chunk": s, "rows": n,
                        "bytes": os.path.getsize(os.path.join(a.out, rel)),
                        "sha256": sha_file(os.path.join(a.out, rel))}
        c = centres[rng.integers(0, a.clusters, size=n)]
        image = unit(c + 0.35 * rng.normal(size=(n, a.dim)).astype(np.float32) / np.sqrt(a.dim) * 4)
        text = unit(image + 0.5 * rng.normal(size=(n, a.dim)).astype(np.float32) / np.sqrt(a.dim) * 4)
        doc = unit(image + text)
        d = os.path.join(a.out, "embeddings", name)
        os.makedirs(d, exist_ok=True)
        h, size = hashlib.sha256(), 0
        for fname, arr in (("ids.npy", ids), ("image.npy", image.astype(np.float16)),
                           ("text.npy", text.astype(np.float16)), ("doc.npy", doc.astype(np.float16))):
            np.save(os.path.join(d, fname), arr)
            with open(os.path.join(d, fname), "rb") as f:
                b = f.read()
            h.update(b)
            size += len(b)
        embed[name] = {"file": f"embeddings/{name}", "input": name, "chunk": s, "rows": n,
                       "bytes": size, "sha256": h.hexdigest()}

    def stage(config, shards, inputs):
        return {"config": config, "tool_version": "synthetic", "inputs": inputs, "shards": shards,
                "totals": {"shards": len(shards), "rows": sum(v["rows"] for v in shards.values()),
                           "rejects": 0, "bytes": sum(v["bytes"] for v in shards.values())}}

    manifest = {"format_version": 1, "stages": {
        "ingest": stage({"synthetic": True}, ingest, {}),
        "embed": stage({"image_model_sha256": "synthetic", "text_model_sha256": text_sha,
                        "image_size": 224, "context_length": 77, "dtype": "float16",
                        "jpeg_decoder": "none"}, embed,
                       {"text_model": {"path": os.path.abspath(a.text_model), "format": "onnx",
                                       "fingerprint": text_sha}}),
    }}
    with open(os.path.join(a.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
    print(f"wrote {a.n} synthetic pairs in {len(ingest)} shards to {a.out}")


if __name__ == "__main__":
    main()
