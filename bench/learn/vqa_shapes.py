#!/usr/bin/env python3
"""VQA v2-format task folders about the learning benchmark's shapes (for bench/sft.sh).

A folder is what `cm3 sft build --task vqa2=DIR` and `cm3 eval vqa` read:

    DIR/images/<id>.png     the file stem is the decimal image id
    DIR/questions.json      {"questions": [{"question_id", "image_id", "question"}]}
    DIR/annotations.json    {"annotations": [{"question_id", "image_id", "question_type",
                            "answer_type", "multiple_choice_answer", "answers": ten times
                            {"answer", "answer_confidence": "yes", "answer_id": 1..10}}]}

Two questions per image, one about each attribute; all ten answers are the true one.
question_type is "colour" or "shape" (so vqaEval's per-question-type accuracy is per
attribute), answer_type "other". Question id = 10 * image id + (0 colour, 1 shape).

  vqa_shapes.py train OUT --pairs N --seed S --size PX [--exclude LEARN_DATA]...
      N new images drawn by shapes.py (same palette, shapes and extents), image ids 1..N, the
      phrasing of each question drawn from PHRASINGS (seeded). Their own random stream
      ("shapes-sft-S", apart from shapes.py's "shapes-train-S" / "shapes-heldout-S"), and a
      different stream is no guarantee, so: every --exclude data folder's images (train/*.json
      attributes and heldout.json, the shapes.py output) are redrawn at PX and their pixel hashes
      excluded, as is any repeat within the set; an attribute draw that hits one is redrawn.
  vqa_shapes.py heldout LEARN_DATA OUT
      LEARN_DATA/heldout.json as a folder: held-NNNN.png copied to images/<NNNN as int>.png, one
      colour and one shape question each, with the FIRST phrasing of each (the evaluation prompt).
  vqa_shapes.py selftest
      small checks of the above in a temporary folder.
Standard library only.
"""
import argparse
import glob
import hashlib
import json
import os
import random
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pngio import read_png, write_png  # noqa: E402
from shapes import COLOURS, SHAPES, attributes, draw, key_of  # noqa: E402

# The first phrasing of each attribute is the held-out (evaluation) one.
PHRASINGS = {
    "colour": ["What colour is the shape?", "Which colour is it?"],
    "shape": ["What shape is it?", "What shape is drawn?"],
}
KINDS = ["colour", "shape"]


def pixel_hash(size, at):
    return hashlib.sha256(draw(size, at["colour"], at["shape"], at["half"], at["cx"], at["cy"])).hexdigest()


def excluded_hashes(data_dirs, size):
    """Pixel hashes of every image a shapes.py output folder holds (redrawn from its
    attributes at `size`), and how many."""
    out = set()
    for d in data_dirs:
        n = 0
        for f in sorted(glob.glob(os.path.join(d, "train", "*.json"))):
            with open(f) as fh:
                out.add(pixel_hash(size, json.load(fh)))
            n += 1
        held = os.path.join(d, "heldout.json")
        if os.path.exists(held):
            with open(held) as fh:
                for h in json.load(fh):
                    out.add(pixel_hash(size, h))
                    n += 1
        if n == 0:
            sys.exit(f"vqa_shapes: --exclude {d}: no train/*.json nor heldout.json (not a shapes.py output)")
    return out


def entries(image_id, colour, shape, phrase):
    """The question and annotation records of one image; phrase(kind) -> question text."""
    qs, anns = [], []
    for k, kind in enumerate(KINDS):
        answer = colour if kind == "colour" else shape
        qid = 10 * image_id + k
        qs.append({"question_id": qid, "image_id": image_id, "question": phrase(kind)})
        anns.append({
            "question_id": qid, "image_id": image_id, "question_type": kind, "answer_type": "other",
            "multiple_choice_answer": answer,
            "answers": [{"answer": answer, "answer_confidence": "yes", "answer_id": i} for i in range(1, 11)],
        })
    return qs, anns


def write_folder(out, qs, anns, info):
    with open(os.path.join(out, "questions.json"), "w") as f:
        json.dump({"info": info, "task_type": "Open-Ended", "data_type": "shapes", "questions": qs}, f, indent=1)
        f.write("\n")
    with open(os.path.join(out, "annotations.json"), "w") as f:
        json.dump({"info": info, "data_type": "shapes", "annotations": anns}, f, indent=1)
        f.write("\n")


def prepare(out):
    images = os.path.join(out, "images")
    if os.path.isdir(images) and os.listdir(images):
        sys.exit(f"vqa_shapes: {images} is not empty; give a new folder")
    os.makedirs(images, exist_ok=True)
    return images


def train(a):
    if a.pairs < 1:
        sys.exit("vqa_shapes: --pairs must be at least 1")
    min_half, max_half = a.size * 3 // 16, a.size * 5 // 16  # shapes.py's defaults
    seen = excluded_hashes(a.exclude, a.size)
    n_excluded = len(seen)
    images = prepare(a.out)
    rng = random.Random(f"shapes-sft-{a.seed}")
    qs, anns, redrawn = [], [], 0
    for i in range(1, a.pairs + 1):
        for _ in range(1000):
            at = attributes(rng, a.size, min_half, max_half)
            h = pixel_hash(a.size, at)
            if h not in seen:
                break
            redrawn += 1
        else:
            sys.exit("vqa_shapes: could not draw a new image (the attribute space is exhausted)")
        seen.add(h)
        write_png(os.path.join(images, f"{i}.png"), a.size, a.size,
                  draw(a.size, at["colour"], at["shape"], at["half"], at["cx"], at["cy"]))
        q, an = entries(i, at["colour"], at["shape"], lambda kind: rng.choice(PHRASINGS[kind]))
        qs += q
        anns += an
    info = {"generator": "bench/learn/vqa_shapes.py train", "pairs": a.pairs, "seed": a.seed,
            "size": a.size, "excluded": a.exclude, "excluded_images": n_excluded, "redrawn": redrawn}
    write_folder(a.out, qs, anns, info)
    print(f"vqa_shapes: {a.pairs} images, {len(qs)} questions in {a.out} "
          f"({n_excluded} excluded images, {redrawn} draws redrawn)")


def heldout(a):
    with open(os.path.join(a.data, "heldout.json")) as f:
        held = json.load(f)
    images = prepare(a.out)
    qs, anns = [], []
    for h in held:
        n = int(h["key"].rsplit("-", 1)[1])
        src = h["image"] if os.path.exists(h["image"]) else os.path.join(a.data, "heldout", h["key"] + ".png")
        shutil.copyfile(src, os.path.join(images, f"{n}.png"))  # a copy: the source is never touched
        q, an = entries(n, h["colour"], h["shape"], lambda kind: PHRASINGS[kind][0])
        qs += q
        anns += an
    write_folder(a.out, qs, anns, {"generator": "bench/learn/vqa_shapes.py heldout",
                                   "source": os.path.abspath(a.data)})
    print(f"vqa_shapes: {len(held)} held-out images, {len(qs)} questions in {a.out}")


def check_folder(d):
    """The folder is well formed; returns the annotations by question id."""
    qs = json.load(open(os.path.join(d, "questions.json")))["questions"]
    anns = json.load(open(os.path.join(d, "annotations.json")))["annotations"]
    ids = [q["question_id"] for q in qs]
    assert len(set(ids)) == len(ids), "question ids repeat"
    assert sorted(ids) == sorted(a["question_id"] for a in anns), "questions and annotations differ"
    stems = {int(os.path.splitext(f)[0]) for f in os.listdir(os.path.join(d, "images"))}
    assert {q["image_id"] for q in qs} == stems, "image ids and image files differ"
    for an in anns:
        assert [x["answer_id"] for x in an["answers"]] == list(range(1, 11))
        assert {x["answer"] for x in an["answers"]} == {an["multiple_choice_answer"]}
        assert an["multiple_choice_answer"] in (COLOURS if an["question_type"] == "colour" else SHAPES)
    return {a["question_id"]: a for a in anns}


def selftest(_):
    from judge import judge_image
    with tempfile.TemporaryDirectory() as t:
        learn = os.path.join(t, "learn")
        shapes = os.path.join(os.path.dirname(os.path.abspath(__file__)), "shapes.py")
        import subprocess
        subprocess.run([sys.executable, shapes, learn, "--pairs", "40", "--heldout", "6", "--size", "64"],
                       check=True, stdout=subprocess.DEVNULL)
        p = parser()
        main_args = p.parse_args(["train", os.path.join(t, "tr"), "--pairs", "30", "--size", "64", "--exclude", learn])
        main_args.fn(main_args)
        main_args = p.parse_args(["heldout", learn, os.path.join(t, "ho")])
        main_args.fn(main_args)
        learned = excluded_hashes([learn], 64)
        for d in ("tr", "ho"):
            anns = check_folder(os.path.join(t, d))
            for f in os.listdir(os.path.join(t, d, "images")):
                path = os.path.join(t, d, "images", f)
                w, h, rgb = read_png(path)
                assert (hashlib.sha256(rgb).hexdigest() in learned) == (d == "ho"), f"{d}/{f}: overlap wrong"
                i = int(os.path.splitext(f)[0])
                j = judge_image(path)
                assert (j["colour"], j["shape"]) == (anns[10 * i]["multiple_choice_answer"],
                                                     anns[10 * i + 1]["multiple_choice_answer"]), f"{d}/{f}"
        qs = json.load(open(os.path.join(t, "ho", "questions.json")))["questions"]
        assert {q["question"] for q in qs} == {PHRASINGS["colour"][0], PHRASINGS["shape"][0]}
    print("vqa_shapes selftest: ok")


def parser():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="new images and their questions")
    t.add_argument("out")
    t.add_argument("--pairs", type=int, default=1200)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--size", type=int, default=64)
    t.add_argument("--exclude", action="append", default=[], metavar="LEARN_DATA",
                   help="a shapes.py output folder whose images must not be drawn again (repeatable)")
    t.set_defaults(fn=train)
    h = sub.add_parser("heldout", help="the learning benchmark's held-out pairs as questions")
    h.add_argument("data")
    h.add_argument("out")
    h.set_defaults(fn=heldout)
    s = sub.add_parser("selftest")
    s.set_defaults(fn=selftest)
    return ap


def main():
    a = parser().parse_args()
    a.fn(a)


if __name__ == "__main__":
    main()
