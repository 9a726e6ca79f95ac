"""Write a synthetic prepared dataset for training benchmarks: packed/train.{bin,idx} of random
token ids (Megatron-LM MMIDIDX v1, int32), an empty validation split, and packed/meta.json with
a vocabulary layout of the given size. Needs numpy.

Usage: python3 make_packed.py <dataset> <sequences> <seq_len> <vocab>
"""
import json
import os
import sys

import numpy as np


def write_split(prefix, tokens, seq_len):
    n = len(tokens) // seq_len if len(tokens) else 0
    tokens.astype("<i4").tofile(prefix + ".bin")
    idx = bytearray(b"MMIDIDX\x00\x00")
    idx += np.uint64(1).tobytes() + bytes([4])
    idx += np.uint64(n).tobytes() + np.uint64(n + 1).tobytes()
    idx += np.full(n, seq_len, "<i4").tobytes()
    idx += (np.arange(n, dtype="<i8") * seq_len * 4).tobytes()
    idx += np.arange(n + 1, dtype="<i8").tobytes()
    with open(prefix + ".idx", "wb") as f:
        f.write(idx)


OBJECTIVE_VERSION = 2


def main():
    root, n, seq_len, vocab = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    os.makedirs(f"{root}/packed", exist_ok=True)
    rng = np.random.default_rng(0)
    write_split(f"{root}/packed/train", rng.integers(13, vocab, n * seq_len), seq_len)
    write_split(f"{root}/packed/val", np.zeros(0, "<i4"), seq_len)
    specials = {"<pad>": 0, "<eos>": 1, "<break>": 2, "<mask>": 3, "<infill>": 4}
    specials.update({f"<mask:{i}>": 5 + i for i in range(8)})
    text = vocab // 2
    layout = {
        "version": 1,
        "text": {"size": text, "specials": specials,
                 "tokenizer": {"path": "synthetic", "sha256": "0" * 64}},
        "image": {"offset": text, "codes": vocab - text, "grid": 1,
                  "tokenizer": {"path": "synthetic", "sha256": "0" * 64}},
        "size": vocab,
    }
    with open(f"{root}/packed/meta.json", "w") as f:
        # objective_version: what `cm3 train` accepts (pack/src/stage.rs OBJECTIVE_VERSION);
        # without it the data reads as packed under the old objective and is refused.
        json.dump({"format": "synthetic", "objective_version": OBJECTIVE_VERSION,
                   "seq_len": seq_len, "vocab": layout}, f)


if __name__ == "__main__":
    main()
