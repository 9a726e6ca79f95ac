#!/usr/bin/env python3
"""The learning benchmark's numbers, table and figures, from what bench/learn.sh left in OUT.

  report.py report OUT              judge every output, print the markdown table, write
                                    OUT/table.md, OUT/results.json, OUT/grid.png, OUT/loss.svg
  report.py npy OUT DATASET NAME    write the first --max-seqs validation sequences of DATASET as
                                    int32 .npy chunks OUT/eval/npy/NAME-NNN.npy (for
                                    `cm3 model score`), print their paths
  report.py pad-id DATASET          print the dataset's <pad> id

What each number is:
  validation loss         the last `val_loss` of the run's metrics.jsonl (mean next-token
                          cross-entropy in nats over the targets that are not <pad>)
  unigram baseline        the cross-entropy of the run's validation tokens (not <pad>) under the
                          unigram distribution of its training tokens (add-one smoothed); the
                          training tokens' own unigram entropy is recorded beside it
  loss on shared tokens   `cm3 model score` of both runs on the same validation sequences (those
                          of each packing), so the two runs are compared on equal ground
  i2t / infill            the judged text names the right colour (shape) and no other
  t2i                     the judged image's colour (shape) is right; over every sample
  VQ reconstruction       the held-out images encoded and decoded by the dataset's image
                          tokenizer: judged like t2i samples, and their PSNR
Standard library only.
"""
import array
import glob
import json
import math
import os
import struct
import sys
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from font import LINE, draw_text  # noqa: E402
from judge import judge_image, judge_text, psnr, right  # noqa: E402
from pngio import read_png, write_png  # noqa: E402
from shapes import COLOURS, SHAPES  # noqa: E402

RUNS = [("retrieval", "ds"), ("no-retrieval", "ds-noretr")]
# Zero-shot (the prompt alone), then with two documents retrieved for the prompt at inference.
T2I = [("t2i-cfg1", "t2i CFG 1"), ("t2i-cfg3", "t2i CFG 3"),
       ("t2i-cfg3-eq2", "t2i CFG 3, eq. 2 alone (--min-p 0)"), ("t2i-cdk", "t2i CD-K"),
       ("t2i-ra-cfg1", "t2i +2 retrieved, CFG 1"), ("t2i-ra-cfg3", "t2i +2 retrieved, CFG 3"),
       ("t2i-ra-cdk", "t2i +2 retrieved, CD-K")]


def run_log(out):
    """The seconds of each stage (OUT/timing.tsv) and the commands that failed (failures.tsv)."""
    timing, failures = {}, []
    try:
        with open(os.path.join(out, "timing.tsv")) as f:
            for line in f:
                k, v = line.rstrip("\n").split("\t")
                timing[k] = float(v)
    except OSError:
        pass
    try:
        with open(os.path.join(out, "failures.tsv")) as f:
            failures = [line.rstrip("\n") for line in f if line.strip()]
    except OSError:
        pass
    return timing, failures


def load_json(path, default=None):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


# ---------------------------------------------------------------- packed data


def read_index(path):
    with open(path, "rb") as f:
        data = f.read()
    if data[:9] != b"MMIDIDX\x00\x00":
        raise ValueError(f"{path}: not an indexed dataset")
    version, = struct.unpack_from("<Q", data, 9)
    dtype = data[17]
    n, = struct.unpack_from("<Q", data, 18)
    if version != 1 or dtype != 4:
        raise ValueError(f"{path}: expected version 1, int32 tokens")
    lengths = struct.unpack_from(f"<{n}i", data, 34)
    pointers = struct.unpack_from(f"<{n}q", data, 34 + 4 * n)
    return list(lengths), list(pointers)


def read_sequences(dataset, split, limit=None):
    """The packed sequences of a split, as int32 arrays."""
    idx = os.path.join(dataset, "packed", f"{split}.idx")
    if not os.path.exists(idx):
        return []
    lengths, pointers = read_index(idx)
    out = []
    with open(os.path.join(dataset, "packed", f"{split}.bin"), "rb") as f:
        for n, ptr in list(zip(lengths, pointers))[:limit]:
            f.seek(ptr)
            a = array.array("i")
            a.frombytes(f.read(4 * n))
            if sys.byteorder != "little":
                a.byteswap()
            out.append(a)
    return out


def pad_id(dataset):
    layout = load_json(os.path.join(dataset, "tokenizer", "vocab.json"))
    return int(layout["text"]["specials"]["<pad>"])


def unigram(dataset):
    """Unigram entropy of the training tokens and cross-entropy of the validation tokens under
    it (nats; <pad> left out of both), with token counts and the padding share."""
    pad = pad_id(dataset)
    layout = load_json(os.path.join(dataset, "tokenizer", "vocab.json"))
    vocab = int(layout["size"])
    counts, total, padding = Counter(), 0, 0
    for seq in read_sequences(dataset, "train"):
        counts.update(seq)
        total += len(seq)
    padding = counts.pop(pad, 0)
    n = sum(counts.values())
    if n == 0:
        return None
    entropy = -sum(c / n * math.log(c / n) for c in counts.values())
    val_counts = Counter()
    for seq in read_sequences(dataset, "val"):
        val_counts.update(seq)
    val_counts.pop(pad, None)
    vn = sum(val_counts.values())
    cross = None
    if vn:
        cross = -sum(c * math.log((counts.get(t, 0) + 1) / (n + vocab))
                     for t, c in val_counts.items()) / vn
    return {
        "train_tokens": total,
        "train_padding_fraction": padding / total if total else None,
        "train_unigram_entropy": entropy,
        "val_tokens": vn,
        "val_unigram_cross_entropy": cross,
        "vocab_size": vocab,
    }


def write_npy(path, rows):
    header = "{'descr': '<i4', 'fortran_order': False, 'shape': (%d, %d), }" % (len(rows), len(rows[0]))
    header += " " * (63 - (10 + len(header)) % 64) + "\n"
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode("latin1"))
        for r in rows:
            a = array.array("i", r)
            if sys.byteorder != "little":
                a.byteswap()
            f.write(a.tobytes())


# ---------------------------------------------------------------- judging


def share(hits):
    hits = [h for h in hits if h is not None]
    return {"right": sum(hits), "total": len(hits), "accuracy": sum(hits) / len(hits) if hits else None}


def outputs(gen_dir):
    g = load_json(os.path.join(gen_dir, "generation.json"))
    return None if g is None else g.get("outputs", [])


def judge_run(out, name, held):
    base = os.path.join(out, "eval", name)
    res = {"i2t": {}, "infill": {}, **{k: {} for k, _ in T2I}}
    per_item = []
    missing = []
    acc = {k: {"colour": [], "shape": [], "both": []} for k in res}
    empty_captions = 0
    for h in held:
        item = {"key": h["key"]}
        d = os.path.join(base, h["key"])
        o = outputs(os.path.join(d, "i2t"))
        if o is None:
            missing.append(f"{name}/{h['key']}/i2t")
        else:
            item["i2t"] = [x.get("text", "") for x in o]
            for t in item["i2t"]:
                j = judge_text(t)
                empty_captions += not t.strip()
                c, s = right(j["colours"], h["colour"]), right(j["shapes"], h["shape"])
                acc["i2t"]["colour"].append(c)
                acc["i2t"]["shape"].append(s)
                acc["i2t"]["both"].append(c and s)
        o = outputs(os.path.join(d, "infill"))
        if o is None:
            missing.append(f"{name}/{h['key']}/infill")
        else:
            item["infill"] = [x.get("span", "") for x in o]
            for t in item["infill"]:
                c = right(judge_text(t)["colours"], h["colour"])
                acc["infill"]["colour"].append(c)
                acc["infill"]["both"].append(c)
        for k, _ in T2I:
            o = outputs(os.path.join(d, k))
            if o is None:
                missing.append(f"{name}/{h['key']}/{k}")
                continue
            item[k] = []
            for x in o:
                path = os.path.join(d, k, x["file"])
                j = judge_image(path)
                c, s = j["colour"] == h["colour"], j["shape"] == h["shape"]
                acc[k]["colour"].append(c)
                acc[k]["shape"].append(s)
                acc[k]["both"].append(c and s)
                item[k].append({"file": path, "colour": j["colour"], "shape": j["shape"],
                                "fill": j["fill"], "guidance": x.get("guidance")})
        per_item.append(item)
    for k in res:
        res[k] = {a: share(v) for a, v in acc[k].items() if v}
    res["i2t"]["empty_captions"] = empty_captions
    return res, per_item, missing


def judge_vq(out, held):
    rows, missing, codes = [], [], set()
    for h in held:
        recon = os.path.join(out, "eval", "vq", h["key"] + ".png")
        if not os.path.exists(recon):
            missing.append(f"vq/{h['key']}")
            continue
        j = judge_image(recon)
        c = load_json(os.path.join(out, "eval", "vq", h["key"] + ".codes.json"), [])
        codes.update(c)
        rows.append({"key": h["key"], "file": recon, "colour": j["colour"], "shape": j["shape"],
                     "fill": j["fill"], "psnr_db": psnr(h["image"], recon),
                     "colour_right": j["colour"] == h["colour"], "shape_right": j["shape"] == h["shape"]})
    originals = [judge_image(h["image"]) for h in held]
    finite = [r["psnr_db"] for r in rows if math.isfinite(r["psnr_db"])]
    return {
        "colour": share([r["colour_right"] for r in rows]),
        "shape": share([r["shape_right"] for r in rows]),
        "both": share([r["colour_right"] and r["shape_right"] for r in rows]),
        "psnr_db_mean": sum(finite) / len(finite) if finite else None,
        "distinct_codes": len(codes),
        "originals_right": share([o["colour"] == h["colour"] and o["shape"] == h["shape"]
                                  for o, h in zip(originals, held)]),
        "images": rows,
    }, missing


# ---------------------------------------------------------------- training


def metrics(run_dir):
    train, val = [], []
    try:
        with open(os.path.join(run_dir, "metrics.jsonl")) as f:
            for line in f:
                m = json.loads(line)
                if m.get("loss") is not None:
                    train.append((m["step"], m["loss"], m.get("tokens")))
                if m.get("val_loss") is not None:
                    val.append((m["step"], m["val_loss"]))
    except OSError:
        pass
    return train, val


def shared_scores(out, name):
    res = {}
    for _, ds in RUNS:
        files = sorted(glob.glob(os.path.join(out, "eval", name, f"score-{ds}-*.json")))
        loss, n = 0.0, 0
        for f in files:
            s = load_json(f)
            if s and s.get("scored_targets"):
                loss += s["loss"] * s["scored_targets"]
                n += s["scored_targets"]
        res[ds] = {"loss": loss / n if n else None, "scored_targets": n, "chunks": len(files)}
    return res


# ---------------------------------------------------------------- figures


def loss_svg(path, curves, baselines):
    """curves: name -> (train [(step, loss)], val [(step, loss)], colour)."""
    w, h, left, right_, top, bottom = 720, 420, 60, 170, 20, 40
    pts = [p for c in curves.values() for p in c[0] + c[1]]
    if not pts:
        pts = [(0, 0.0), (1, 1.0)]
    ys = [p[1] for p in pts] + [b[0] for b in baselines.values() if b[0] is not None]
    x0, x1 = 0, max(max(p[0] for p in pts), 1)
    y0, y1 = min(0.0, min(ys)), max(ys) * 1.05 + 1e-9
    sx = lambda x: left + (w - left - right_) * (x - x0) / (x1 - x0)  # noqa: E731
    sy = lambda y: top + (h - top - bottom) * (1 - (y - y0) / (y1 - y0))  # noqa: E731
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">',
           f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<line x1="{left}" y1="{sy(y0)}" x2="{w - right_}" y2="{sy(y0)}" stroke="black"/>',
           f'<line x1="{left}" y1="{top}" x2="{left}" y2="{sy(y0)}" stroke="black"/>']
    for i in range(6):
        y = y0 + (y1 - y0) * i / 5
        out.append(f'<text x="{left - 5}" y="{sy(y) + 4:.1f}" text-anchor="end">{y:.2f}</text>')
    for x in sorted({round(x0 + (x1 - x0) * i / 5) for i in range(6)}):
        out.append(f'<text x="{sx(x):.1f}" y="{h - bottom + 15}" text-anchor="middle">{x}</text>')
    out.append(f'<text x="{(left + w - right_) / 2}" y="{h - 8}" text-anchor="middle">optimiser step</text>')
    out.append(f'<text x="14" y="{(top + h - bottom) / 2}" transform="rotate(-90 14 {(top + h - bottom) / 2})" '
               'text-anchor="middle">loss (nats)</text>')
    legend_y = top + 10
    for name, (train, val, colour) in curves.items():
        if train:
            k = max(1, len(train) // 50)
            smooth = []
            for i in range(len(train)):
                win = train[max(0, i - k + 1):i + 1]
                smooth.append((train[i][0], sum(p[1] for p in win) / len(win)))
            d = " ".join(f"{sx(s):.1f},{sy(v):.1f}" for s, v in smooth)
            out.append(f'<polyline points="{d}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
        for s, v in val:
            out.append(f'<circle cx="{sx(s):.1f}" cy="{sy(v):.1f}" r="3.5" fill="white" stroke="{colour}" stroke-width="2"/>')
        out.append(f'<line x1="{w - right_ + 10}" y1="{legend_y}" x2="{w - right_ + 30}" y2="{legend_y}" stroke="{colour}" stroke-width="2"/>')
        out.append(f'<text x="{w - right_ + 35}" y="{legend_y + 4}">{name}: train</text>')
        out.append(f'<circle cx="{w - right_ + 20}" cy="{legend_y + 16}" r="3.5" fill="white" stroke="{colour}" stroke-width="2"/>')
        out.append(f'<text x="{w - right_ + 35}" y="{legend_y + 20}">{name}: validation</text>')
        legend_y += 40
    for name, (value, colour) in baselines.items():
        if value is None:
            continue
        out.append(f'<line x1="{left}" y1="{sy(value):.1f}" x2="{w - right_}" y2="{sy(value):.1f}" stroke="{colour}" stroke-dasharray="5,4"/>')
        out.append(f'<line x1="{w - right_ + 10}" y1="{legend_y}" x2="{w - right_ + 30}" y2="{legend_y}" stroke="{colour}" stroke-dasharray="5,4"/>')
        out.append(f'<text x="{w - right_ + 35}" y="{legend_y + 4}">{name}</text>')
        legend_y += 20
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def grid_png(path, held, vq, items, max_rows):
    """Rows: held-out prompts; columns: the original, its VQ reconstruction, then one sample of
    each t2i setting of each run. A label line above each row: the prompt and the i2t caption."""
    cols = [("original", None, None), ("VQ recon", None, None)]
    for name, _ in RUNS:
        for k, label in T2I:
            cols.append((f"{'ret' if name == 'retrieval' else 'no ret'} {k[4:]}", name, k))
    cell, pad = 128, 4
    head = LINE + 4
    rows = held[:max_rows]
    cw = pad + len(cols) * (cell + pad)
    row_h = LINE * 2 + 2 + cell + pad
    ch = head + len(rows) * row_h + pad
    canvas = bytearray(b"\xff" * (3 * cw * ch))
    for c, (label, _, _) in enumerate(cols):
        draw_text(canvas, cw, ch, pad + c * (cell + pad), 3, label, max_width=cell)
    vq_files = {r["key"]: r["file"] for r in vq.get("images", [])}
    by_run = {name: {it["key"]: it for it in per_item} for name, per_item in items.items()}
    for r, h in enumerate(rows):
        y = head + r * row_h
        caps = []
        for name, _ in RUNS:
            cap = by_run.get(name, {}).get(h["key"], {}).get("i2t")
            caps.append(f"{'ret' if name == 'retrieval' else 'no ret'}: "
                        + ("(none)" if cap is None else repr(cap[0]) if cap and cap[0] else "(empty)"))
        draw_text(canvas, cw, ch, pad, y, f"prompt: {h['caption']}  ({h['colour']} {h['shape']})", (0, 0, 160))
        draw_text(canvas, cw, ch, pad, y + LINE, "i2t " + "   ".join(caps), (120, 0, 0))
        y += 2 * LINE + 2
        for c, (_, name, k) in enumerate(cols):
            if c == 0:
                f = h["image"]
            elif c == 1:
                f = vq_files.get(h["key"])
            else:
                s = by_run.get(name, {}).get(h["key"], {}).get(k, [])
                f = s[0]["file"] if s else None
            x = pad + c * (cell + pad)
            if not f or not os.path.exists(f):
                draw_text(canvas, cw, ch, x + 40, y + 60, "missing")
                continue
            w, hh, rgb = read_png(f)
            for yy in range(min(hh, cell)):
                src = rgb[3 * yy * w:3 * (yy * w + min(w, cell))]
                o = 3 * ((y + yy) * cw + x)
                canvas[o:o + len(src)] = src
    write_png(path, cw, ch, bytes(canvas))


# ---------------------------------------------------------------- the report


def finite(v):
    """`v` with every non-finite float replaced by None (JSON has no infinities)."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: finite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [finite(x) for x in v]
    return v


def fmt_share(s):
    if not s or s.get("total", 0) == 0:
        return "n/a"
    return f"{100 * s['accuracy']:.0f}% ({s['right']}/{s['total']})"


def fmt(x, digits=3):
    return "n/a" if x is None else f"{x:.{digits}f}"


def report(out):
    held = load_json(os.path.join(out, "data", "heldout.json"), [])
    settings = load_json(os.path.join(out, "settings.json"), {})
    res = {"settings": settings, "runs": {}, "missing": []}
    vq, missing = judge_vq(out, held)
    res["vq"] = vq
    res["missing"] += missing
    items = {}
    curves, baselines = {}, {}
    palette = {"retrieval": "#1f5fbf", "no-retrieval": "#d0701a"}
    for name, ds in RUNS:
        dsp = os.path.join(out, ds)
        run_dir = os.path.join(out, "runs", name)
        judged, per_item, missing = judge_run(out, name, held)
        res["missing"] += missing
        items[name] = per_item
        train, val = metrics(run_dir)
        uni = unigram(dsp) if os.path.exists(os.path.join(dsp, "packed", "train.idx")) else None
        tr = load_json(os.path.join(out, f"train-{name}.json"), {})
        res["runs"][name] = {
            "dataset": dsp,
            "run": run_dir,
            "train_report": tr,
            "steps": train[-1][0] if train else None,
            "tokens_seen": train[-1][2] if train else None,
            "final_train_loss": train[-1][1] if train else None,
            "val_loss": val[-1][1] if val else None,
            "unigram": uni,
            "shared_scores": shared_scores(out, name),
            # `cm3 eval i2t` on the held-out images (pycocoevalcap's caption metrics).
            "caption_metrics": load_json(
                os.path.join(out, "eval", name, "caption-metrics", "report.json"), {}).get("metrics"),
            "judged": judged,
            "items": per_item,
        }
        curves[name] = (train and [(s, l) for s, l, _ in train], val, palette[name])
        if uni:
            baselines[f"{name}: unigram"] = (uni["val_unigram_cross_entropy"], palette[name])
    res["timing"], res["failures"] = run_log(out)

    # the table
    R = res["runs"]
    names = [n for n, _ in RUNS]
    lines = ["| measure | " + " | ".join(f"{'with' if n == 'retrieval' else 'without'} retrieval" for n in names) + " |",
             "|---|" + "---|" * len(names)]

    def row(label, f):
        lines.append(f"| {label} | " + " | ".join(f(R[n]) for n in names) + " |")

    row("training steps (tokens seen)", lambda r: f"{r['steps']} ({r['tokens_seen']:,})" if r["steps"] else "n/a")
    row("padding share of training tokens", lambda r: fmt(r["unigram"] and r["unigram"]["train_padding_fraction"]))
    row("validation loss, nats (own packing)", lambda r: fmt(r["val_loss"]))
    row("unigram baseline on the same tokens", lambda r: fmt(r["unigram"] and r["unigram"]["val_unigram_cross_entropy"]))
    for _, ds in RUNS:
        label = "retrieval-augmented" if ds == "ds" else "plain-pair"
        row(f"loss on shared {label} val sequences", lambda r, ds=ds: fmt(r["shared_scores"][ds]["loss"]))
    row("i2t: right colour named", lambda r: fmt_share(r["judged"]["i2t"].get("colour")))
    row("i2t: right shape named", lambda r: fmt_share(r["judged"]["i2t"].get("shape")))
    row("i2t: empty captions", lambda r: str(r["judged"]["i2t"].get("empty_captions", "n/a")))
    row("i2t, cm3 eval: CIDEr / BLEU-4 / ROUGE-L", lambda r: " / ".join(
        fmt((r["caption_metrics"] or {}).get(m)) for m in ("CIDEr", "Bleu_4", "ROUGE_L")))
    for k, label in T2I:
        row(f"{label}: right colour drawn", lambda r, k=k: fmt_share(r["judged"][k].get("colour")))
        row(f"{label}: right shape drawn", lambda r, k=k: fmt_share(r["judged"][k].get("shape")))
    row("text infill: right colour", lambda r: fmt_share(r["judged"]["infill"].get("colour")))
    table = "\n".join(lines)
    notes = [
        f"Chance: colour 1/{len(COLOURS)} = {100 / len(COLOURS):.0f}%, shape 1/{len(SHAPES)} = {100 / len(SHAPES):.0f}%.",
        f"Image tokenizer on the {len(held)} held-out images (the bound on t2i): PSNR {fmt(vq['psnr_db_mean'], 2)} dB, "
        f"judge right on colour {fmt_share(vq['colour'])}, shape {fmt_share(vq['shape'])}, both {fmt_share(vq['both'])}; "
        f"{vq['distinct_codes']} distinct codes; judge on the originals {fmt_share(vq['originals_right'])}.",
    ]
    targets = []
    met = lambda ok: "n/a" if ok is None else "met" if ok else "missed"  # noqa: E731
    for n in names:
        j = R[n]["judged"]
        colour = lambda k: (j.get(k, {}).get("colour") or {}).get("accuracy")  # noqa: E731
        i2t = colour("i2t")
        parts = [f"i2t colour >= 80% {met(None if i2t is None else i2t >= 0.8)}"]
        for prefix, mode in (("t2i-", "zero-shot"), ("t2i-ra-", "2 retrieved")):
            c1, c3 = colour(prefix + "cfg1"), colour(prefix + "cfg3")
            parts.append(f"t2i {mode} CFG 3 colour >= 80% {met(None if c3 is None else c3 >= 0.8)}, "
                         f"{mode} CFG 3 >= CFG 1 {met(None if c1 is None or c3 is None else c3 >= c1)}")
        targets.append(f"{n}: " + ", ".join(parts))
    res["targets"] = targets
    notes.append("Targets (issue 18): " + "; ".join(targets) + ".")
    if res["timing"]:
        notes.append("Seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in res["timing"].items()) + ".")
    if res["missing"]:
        notes.append(f"Missing outputs ({len(res['missing'])}): " + ", ".join(res["missing"][:10]))
    if res["failures"]:
        notes.append(f"Failed commands ({len(res['failures'])}): see failures.tsv")
    md = table + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    print(md)
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write(md)
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(finite(res), f, indent=1, allow_nan=False)
        f.write("\n")
    loss_svg(os.path.join(out, "loss.svg"), curves, baselines)
    grid_png(os.path.join(out, "grid.png"), held, vq, items, int(settings.get("grid_rows", 12)))
    print(f"wrote {out}/table.md, results.json, grid.png, loss.svg")


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    cmd = sys.argv[1]
    if cmd == "report":
        report(sys.argv[2])
    elif cmd == "pad-id":
        print(pad_id(sys.argv[2]))
    elif cmd == "npy":
        out, dataset, name = sys.argv[2:5]
        opts = dict(zip(sys.argv[5::2], sys.argv[6::2]))
        max_seqs = int(opts.get("--max-seqs", 32))
        chunk = int(opts.get("--chunk", 8))
        seqs = read_sequences(dataset, "val", max_seqs)
        d = os.path.join(out, "eval", "npy")
        os.makedirs(d, exist_ok=True)
        for i in range(0, len(seqs), chunk):
            p = os.path.join(d, f"{name}-{i // chunk:03d}.npy")
            write_npy(p, seqs[i:i + chunk])
            print(p)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
