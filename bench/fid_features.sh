#!/usr/bin/env bash
# Benchmark: FID feature extraction, images/s, cm3 against pytorch-fid 0.3.0 on the same images
# (the COCO images of shared/data/coco_mini_train, read in place) and the same random-weight
# network (pytorch-fid's InceptionV3 with `scripts/export-inception-onnx.py --random-seed 0`
# weights: the ONNX fixture for cm3, the PyTorch module for pytorch-fid), THREADS threads each.
#   cm3:          InceptionFeatures::features, batch BATCH, ONNX Runtime intra-op THREADS (+ one
#                 decoding thread), through eval/examples/fid.rs (release)
#   pytorch-fid:  get_activations (batch 1: its loader cannot batch mixed sizes; 1 loader
#                 process), torch.set_num_threads(THREADS); and its module alone on pre-resized
#                 batches of 50 (no decoding) for reference
# Median of RUNS runs each; the ratio cm3 / pytorch-fid. Target >= 1.0.
# Env: N=80 (all of the set), RUNS=3, BATCH=50, THREADS=2, IMAGES=<folder>, CM3_BENCH_HOME.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
N="${N:-80}"; RUNS="${RUNS:-3}"; BATCH="${BATCH:-50}"; THREADS="${THREADS:-2}"
IMAGES="${IMAGES:-$ROOT/../shared/data/coco_mini_train/train2017}"
BENCH_HOME="${CM3_BENCH_HOME:-$HOME/.cache/cm3-bench}"
PY="${FID_PYTHON:-$BENCH_HOME/fid-venv/bin/python}"
log() { printf '[bench] %s\n' "$*" >&2; }
[ -d "$IMAGES" ] || { echo "no image folder $IMAGES (set IMAGES)" >&2; exit 2; }
if [ ! -x "$PY" ]; then python3 -m venv "$BENCH_HOME/fid-venv"; fi
"$PY" -c "import torch, pytorch_fid, scipy, onnx, onnxruntime" 2>/dev/null ||
  "$PY" -m pip install --quiet torch torchvision pytorch-fid==0.3.0 scipy numpy pillow onnx onnxruntime==1.31.1
bash "$ROOT/scripts/setup-onnxruntime.sh" >&2
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/cm3-target}"
log "building eval/examples/fid.rs (release)"
(cd "$ROOT" && cargo build --release -p cm3-eval --example fid >&2)
FID="$CARGO_TARGET_DIR/release/examples/fid"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/cm3-fid-bench.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
gzip -dc "$ROOT/eval/tests/fixtures/fid/inception_random.onnx.gz" > "$WORK/inception_random.onnx"
find "$IMAGES" -maxdepth 1 -type f \( -name '*.jpg' -o -name '*.png' \) | sort | head -n "$N" > "$WORK/files.txt"
log "$(wc -l < "$WORK/files.txt") images, $RUNS runs, $THREADS threads"
"$FID" features "$WORK/inception_random.onnx" "$WORK/files.txt" "$BATCH" "$THREADS" "$RUNS" > "$WORK/cm3.jsonl"
"$PY" "$ROOT/bench/fid/pytorch_fid_features.py" "$WORK/files.txt" "$RUNS" "$THREADS" 2>/dev/null > "$WORK/torch.jsonl"
"$PY" - "$WORK/cm3.jsonl" "$WORK/torch.jsonl" <<'PYEOF'
import json, statistics, sys
def med(path, what=None):
    rows = [json.loads(l) for l in open(path) if l.strip()]
    rows = [r for r in rows if what is None or r.get("what") == what]
    return statistics.median(r["images_per_s"] for r in rows), [round(r["images_per_s"], 2) for r in rows]
cm3, cm3_runs = med(sys.argv[1])
pf, pf_runs = med(sys.argv[2], "get_activations")
mod, mod_runs = med(sys.argv[2], "module_batched")
print(f"{'what':<40} {'images/s (median)':>18}  runs")
print(f"{'cm3 (ONNX Runtime, decode+resize)':<40} {cm3:>18.2f}  {cm3_runs}")
print(f"{'pytorch-fid get_activations':<40} {pf:>18.2f}  {pf_runs}")
print(f"{'pytorch-fid module, pre-resized, b=50':<40} {mod:>18.2f}  {mod_runs}")
print(f"ratio cm3 / pytorch-fid get_activations: {cm3 / pf:.2f}x (target >= 1.0)")
print(f"ratio cm3 / pytorch-fid module alone:    {cm3 / mod:.2f}x")
PYEOF
