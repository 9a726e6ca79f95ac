"""pytorch-fid's side of bench/fid_features.sh: images/s of its feature extraction.

    python bench/fid/pytorch_fid_features.py LIST.txt RUNS THREADS

The network is pytorch-fid's InceptionV3([3]) with the random weights of
`scripts/export-inception-onnx.py --random-seed 0` (the same as the ONNX model cm3 runs). Two
measurements, each printed as one JSON line per run (model building excluded):
- "get_activations": pytorch-fid's own `get_activations(files, model, batch_size=1,
  num_workers=1)`: batch size 1 because its DataLoader cannot stack images of different sizes
  (COCO's), one loader process as with the CLI on a 2-core machine's share;
- "module_batched": the module alone on the same images pre-decoded (ToTensor) and pre-resized to
  299x299 outside the timing, batches of 50: the network's best case, no decoding counted.
"""
import importlib.util
import json
import os
import sys
import time

import torch
import torch.nn.functional as F
import torchvision.transforms as TF
from PIL import Image
from pytorch_fid import fid_score

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def main():
    list_path, runs, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    torch.set_num_threads(threads)
    files = [l for l in open(list_path).read().splitlines() if l]
    spec = importlib.util.spec_from_file_location(
        "export_inception_onnx", os.path.join(ROOT, "scripts", "export-inception-onnx.py"))
    ex = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ex)
    model = ex.build(ex.random_state(0))
    for _ in range(runs):
        t = time.perf_counter()
        act = fid_score.get_activations(files, model, batch_size=1, dims=2048, device="cpu", num_workers=1)
        s = time.perf_counter() - t
        print(json.dumps({"what": "get_activations", "images": len(act), "seconds": s, "images_per_s": len(act) / s}), flush=True)
    tensors = [F.interpolate(TF.ToTensor()(Image.open(f).convert("RGB"))[None], size=(299, 299),
                             mode="bilinear", align_corners=False) for f in files]
    for _ in range(runs):
        t = time.perf_counter()
        with torch.no_grad():
            for i in range(0, len(tensors), 50):
                model(torch.cat(tensors[i:i + 50]))
        s = time.perf_counter() - t
        print(json.dumps({"what": "module_batched", "images": len(tensors), "seconds": s, "images_per_s": len(tensors) / s}), flush=True)


if __name__ == "__main__":
    main()
