#!/usr/bin/env bash
# Benchmark: cm3's caption metrics (BLEU-1..4, ROUGE-L, CIDEr-D with its Rust PTB tokeniser,
# eval/examples/caption_metrics.rs) against pycocoevalcap 1.2 (pip; its Java PTBTokenizer + Bleu,
# Rouge, Cider; METEOR and SPICE not run) on COCO val2017 leave-one-out: 5,000 images, candidate =
# the lowest-id caption of each image, references = the other 20,014.
# Prints both runs' scores, the largest differences (corpus, per-image CIDEr), seconds and the
# ratio. Target: cm3 >= 10x faster. Seconds are the best of RUNS runs: cm3's whole process
# (reading the JSON files included) against pycocoevalcap's load + tokenise + score (its Python
# imports excluded), and its whole process too.
# Needs java on PATH. Env: CAPTIONS=<captions_val2017.json>  RUNS=3  CM3_BENCH_HOME
# BIN=<a built caption_metrics example> (else built here, release, in CARGO_TARGET_DIR).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CAPTIONS="${CAPTIONS:-$ROOT/../shared/data/coco_caption_metrics/captions_val2017.json}"
RUNS="${RUNS:-3}"
BENCH_HOME="${CM3_BENCH_HOME:-$HOME/.cache/cm3-bench}"
PY="$BENCH_HOME/venv/bin/python"
if [ ! -x "$PY" ]; then python3 -m venv "$BENCH_HOME/venv"; fi
"$PY" -c "import pycocoevalcap, pycocotools" 2>/dev/null || "$PY" -m pip install --quiet pycocoevalcap==1.2
command -v java >/dev/null || { echo "java is needed by pycocoevalcap's PTBTokenizer" >&2; exit 1; }
if [ -z "${BIN:-}" ]; then
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/cm3-target}"
  (cd "$ROOT" && cargo build --release -p cm3-eval --example caption_metrics >&2)
  BIN="$CARGO_TARGET_DIR/release/examples/caption_metrics"
fi
WORK="$(mktemp -d "${TMPDIR:-/tmp}/cm3-captions-bench.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
"$PY" "$ROOT/bench/captions/make_leave_one_out.py" "$CAPTIONS" "$WORK" >&2
now() { date +%s.%N; }
for i in $(seq "$RUNS"); do
  t0=$(now); "$PY" "$ROOT/bench/captions/pycoco_scores.py" "$WORK/predictions.json" "$WORK/references.json" \
    --per-image > "$WORK/pycoco.$i.json" 2> "$WORK/pycoco.err"; t1=$(now)
  echo "$t0 $t1" > "$WORK/pycoco.$i.wall"
  t0=$(now); "$BIN" --predictions "$WORK/predictions.json" --references "$WORK/references.json" \
    --per-image > "$WORK/cm3.$i.json"; t1=$(now)
  echo "$t0 $t1" > "$WORK/cm3.$i.wall"
done
"$PY" "$ROOT/bench/captions/compare.py" "$WORK" "$RUNS"
