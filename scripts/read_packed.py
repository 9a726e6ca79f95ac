"""Read one packed training sequence of a cm3 dataset and print it, text detokenised.

Usage: python3 read_packed.py <dataset> [train|val] [sequence number]

Needs only numpy. The files are Megatron-LM indexed datasets (packed/<split>.idx + .bin, int32
tokens); the vocabulary layout is tokenizer/vocab.json and the text tokenizer tokenizer.json
(byte-level BPE: each token's characters map back to bytes through GPT-2's byte table).
Documents of any number of text and image parts (`cm3 sft build`'s) print the same way: each
image as `[N image tokens]`, the parts separated by `<break>`.
"""
import json
import os
import sys

import numpy as np


def read_index(path):
    with open(path, "rb") as f:
        data = f.read()
    assert data[:9] == b"MMIDIDX\x00\x00", "not an indexed dataset"
    version, dtype, n, m = (np.frombuffer(data, "<u8", 1, 9)[0], data[17],
                            int(np.frombuffer(data, "<u8", 1, 18)[0]), int(np.frombuffer(data, "<u8", 1, 26)[0]))
    assert version == 1 and dtype == 4, "expected version 1, int32 tokens"
    lengths = np.frombuffer(data, "<i4", n, 34)
    pointers = np.frombuffer(data, "<i8", n, 34 + 4 * n)
    return lengths, pointers


def byte_decoder():
    # GPT-2's bytes_to_unicode, inverted.
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def main():
    dataset, split = sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "train"
    k = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    lengths, pointers = read_index(f"{dataset}/packed/{split}.idx")
    tokens = np.memmap(f"{dataset}/packed/{split}.bin", dtype="<i4", mode="r")
    seq = tokens[pointers[k] // 4: pointers[k] // 4 + lengths[k]]
    layout = json.load(open(f"{dataset}/tokenizer/vocab.json"))
    # Relative to the dataset, or absolute (an SFT directory names the pretrained dataset's).
    tok = json.load(open(os.path.join(dataset, layout["text"]["tokenizer"]["path"])))
    id_to_token = {i: t for t, i in tok["model"]["vocab"].items()}
    id_to_token.update({a["id"]: a["content"] for a in tok["added_tokens"]})
    specials = set(layout["text"]["specials"].values())
    offset, codes = layout["image"]["offset"], layout["image"]["codes"]
    decode = byte_decoder()
    out, text = [], bytearray()

    def flush():
        if text:
            out.append(text.decode("utf-8", "replace"))
            text.clear()

    image_run = 0
    for t in (int(x) for x in seq):
        if offset <= t < offset + codes:
            image_run += 1
            continue
        if image_run:
            flush()
            out.append(f"[{image_run} image tokens]")
            image_run = 0
        if t in specials:
            flush()
            name = id_to_token[t]
            if name == "<pad>" and out and out[-1].startswith("[") and out[-1].endswith("<pad>]"):
                out[-1] = f"[{int(out[-1][1:].split()[0]) + 1} <pad>]"
            elif name == "<pad>":
                out.append("[1 <pad>]")
            else:
                out.append(name)
        else:
            text.extend(decode[c] for c in id_to_token[t])
    flush()
    if image_run:
        out.append(f"[{image_run} image tokens]")
    print(" ".join(out))


if __name__ == "__main__":
    main()
