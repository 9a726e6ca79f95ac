#!/usr/bin/env bash
# Benchmark: `cm3 embed` against a clip-retrieval-style Python pipeline, on the same images, the
# same ONNX model (CLIP ViT-B/32 architecture, random weights, generated here and not committed)
# and the same machine:
#   (a) cm3 embed <dataset>            (b) PIL + onnxruntime, preprocessing in a thread
#   (c) onnxruntime alone on tensors   (d) preprocessing alone: cm3 vs PIL (same thread count)
# Targets: (a)/(c) >= 0.9, (a)/(b) >= 1.1, (d) cm3/PIL >= 2.0. Best of RUNS runs each.
# Env: N=512 images, RUNS=2, BATCH=32, THREADS=2, CM3=<binary>, CM3_BENCH_HOME (venv + cache).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
N="${N:-512}"; RUNS="${RUNS:-2}"; BATCH="${BATCH:-32}"; THREADS="${THREADS:-2}"
BENCH_HOME="${CM3_BENCH_HOME:-$HOME/.cache/cm3-bench}"
PY="$BENCH_HOME/venv/bin/python"
log() { printf '[bench] %s\n' "$*" >&2; }

# Python side: numpy, Pillow, onnx, onnxruntime (and img2dataset's images for input).
if [ ! -x "$PY" ]; then python3 -m venv "$BENCH_HOME/venv"; fi
"$PY" -c "import numpy, PIL, onnx, onnxruntime, pyarrow" 2>/dev/null \
  || "$PY" -m pip install --quiet numpy pillow onnx onnxruntime==1.31.1 pyarrow
bash "$ROOT/scripts/setup-onnxruntime.sh" >&2

if [ -z "${CM3:-}" ]; then
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/cm3-target}"
  log "building cm3 (release, --features turbojpeg)"
  (cd "$ROOT" && cargo build --release -p cm3 --features turbojpeg >&2)
  CM3="$CARGO_TARGET_DIR/release/cm3"
fi

MODEL="$BENCH_HOME/clip-vit-b32-random"
[ -f "$MODEL/model.onnx" ] || "$PY" "$ROOT/bench/make_clip_b32.py" "$MODEL" >&2

# Input: N pairs ingested from the ingest benchmark's images (made if missing), then the
# normalised 256x256 images exported as files for the Python side.
WORK="$(mktemp -d "${TMPDIR:-/tmp}/cm3-embed-bench.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
SRC="$BENCH_HOME/images-2400"
if [ ! -f "$SRC/.complete" ]; then "$PY" "$ROOT/bench/make_images.py" "$SRC" -n 2400 --seed 0 >&2; touch "$SRC/.complete"; fi
mkdir -p "$WORK/in"
for f in $(ls "$SRC"/*.jpg | head -n "$N"); do b="$(basename "$f" .jpg)"; ln -s "$f" "$WORK/in/$b.jpg"; ln -s "$SRC/$b.txt" "$WORK/in/$b.txt"; done
"$CM3" -q ingest --input "$WORK/in" --format folder --out "$WORK/ds" --no-progress
"$PY" - "$WORK/ds" "$WORK/images" <<'PYEOF'
import glob, os, sys, pyarrow.parquet as pq
ds, out = sys.argv[1:3]; os.makedirs(out, exist_ok=True)
for f in sorted(glob.glob(os.path.join(ds, "pairs", "*.parquet"))):
    t = pq.read_table(f, columns=["id", "image"])
    for i, img in zip(t["id"].to_pylist(), t["image"].to_pylist()):
        open(os.path.join(out, f"{i}.jpg"), "wb").write(img)
PYEOF
cat "$WORK"/images/*.jpg >/dev/null
rate() { "$PY" -c 'import json,sys; print(json.loads(sys.argv[1])["images_per_s"])' "$1"; }
best() { "$PY" -c 'import sys; print(max(float(x) for x in sys.argv[1:]))' "$@"; }

A=(); B=(); C=(); DC=(); DP=()
for r in $(seq 1 "$RUNS"); do
  # cm3's own figure excludes loading the model, as the Python side's does.
  line=$("$CM3" embed "$WORK/ds" --image-model "$MODEL" --text-model "$ROOT/embed/tests/fixtures/tiny_clip/text" \
    --batch-size "$BATCH" --rebuild 2>&1 | grep 'rows/s' | tail -n 1)
  A+=("$(echo "$line" | sed -E 's/.*\(([0-9.]+) rows\/s\).*/\1/')")
  B+=("$(rate "$("$PY" "$ROOT/bench/embed_python.py" pipeline "$WORK/images" "$MODEL/model.onnx" --batch "$BATCH")")")
  C+=("$(rate "$("$PY" "$ROOT/bench/embed_python.py" model "$N" "$MODEL/model.onnx" --batch "$BATCH")")")
  DP+=("$(rate "$("$PY" "$ROOT/bench/embed_python.py" preprocess "$WORK/images" --processes "$THREADS")")")
  line=$(RAYON_NUM_THREADS="$THREADS" "$CM3" embed preprocess "$WORK"/images/*.jpg 2>&1 | tail -n 1)
  DC+=("$(echo "$line" | sed -E 's/.*\(([0-9.]+) images\/s.*/\1/')")
  log "run $r: (a) ${A[-1]} (b) ${B[-1]} (c) ${C[-1]} (d) cm3 ${DC[-1]} PIL ${DP[-1]} images/s"
done
"$PY" - "$(best "${A[@]}")" "$(best "${B[@]}")" "$(best "${C[@]}")" "$(best "${DC[@]}")" "$(best "${DP[@]}")" "$N" <<'PYEOF'
import sys
a, b, c, dc, dp, n = map(float, sys.argv[1:])
print(f"images: {int(n)} (256x256 JPEGs from pairs/), CLIP ViT-B/32 shape, random weights")
print(f"(a) cm3 embed <dataset>            {a:8.2f} images/s (model loading excluded; tiny text model and writing included)")
print(f"(b) PIL + onnxruntime pipeline     {b:8.2f} images/s")
print(f"(c) onnxruntime alone on tensors   {c:8.2f} images/s")
print(f"(d) preprocessing alone: cm3 {dc:.1f} images/s, PIL {dp:.1f} images/s")
for name, ratio, target in [("(a)/(c)", a / c, 0.9), ("(a)/(b)", a / b, 1.1), ("(d) cm3/PIL", dc / dp, 2.0)]:
    print(f"{name:12s} {ratio:5.2f}  {'PASS' if ratio >= target else 'FAIL'} (target >= {target})")
PYEOF
