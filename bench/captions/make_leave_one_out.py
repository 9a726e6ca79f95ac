#!/usr/bin/env python3
"""Leave-one-out input from a COCO captions file: for each image the caption with the lowest
annotation id is the candidate (a COCO results list), the others are the references (a COCO
captions file with the same "images" list, minus the candidates).

Usage: python3 bench/captions/make_leave_one_out.py captions_val2017.json OUT_DIR
Writes OUT_DIR/predictions.json and OUT_DIR/references.json.
"""
import json
import os
import sys


def main():
    src, out = sys.argv[1], sys.argv[2]
    with open(src) as f:
        coco = json.load(f)
    first = {}
    for ann in coco["annotations"]:
        best = first.get(ann["image_id"])
        if best is None or ann["id"] < best["id"]:
            first[ann["image_id"]] = ann
    chosen = {a["id"] for a in first.values()}
    predictions = [{"image_id": img["id"], "caption": first[img["id"]]["caption"]}
                   for img in coco["images"] if img["id"] in first]
    references = {
        "info": coco.get("info", {}), "licenses": coco.get("licenses", []), "type": "captions",
        "images": coco["images"],
        "annotations": [a for a in coco["annotations"] if a["id"] not in chosen],
    }
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "predictions.json"), "w") as f:
        json.dump(predictions, f)
    with open(os.path.join(out, "references.json"), "w") as f:
        json.dump(references, f)
    print(f"{len(predictions)} predictions, {len(references['annotations'])} references -> {out}")


if __name__ == "__main__":
    main()
