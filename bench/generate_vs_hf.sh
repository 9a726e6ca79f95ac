#!/usr/bin/env bash
# Text → image sampling throughput, cm3 (Burn flex, its key/value cache) against Hugging Face
# transformers' `generate` (PyTorch CPU, use_cache=True), issue 23: the same OPT weights (the
# bench decoder: 4 layers, d_model 256, vocabulary 8,192, random), 256 tokens per sample after a
# 16-token prompt, top-p 0.9, no guidance, the same threads. For each batch size prints images/s
# of each (median over REPS) and the ratio cm3 / transformers. Target: >= 1.0 at batch 1 and 8.
#
#   [BATCHES="1 8"] [REPS=3] [THREADS=2] [PYTHON=<python with torch + transformers>] bash bench/generate_vs_hf.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BATCHES="${BATCHES:-1 8}" REPS="${REPS:-3}" THREADS="${THREADS:-2}"
PYTHON="${PYTHON:-$HOME/.cache/cm3-bench/torch2-venv/bin/python}"
"$PYTHON" -c 'import torch, transformers' || { echo "generate_vs_hf: $PYTHON lacks torch or transformers; set PYTHON" >&2; exit 2; }
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/cm3-target}"
cargo bench -q -p cm3-generate --bench t2i_vs_hf --no-run >&2
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for b in $BATCHES; do
  theirs=$("$PYTHON" bench/generate_hf.py "$work/opt" "$b" "$REPS" "$THREADS" | awk '/images_per_s/ {print $2}')
  ours=$(RAYON_NUM_THREADS="$THREADS" cargo bench -q -p cm3-generate --bench t2i_vs_hf -- "$work/opt" "$b" "$REPS" | awk '/images_per_s/ {print $2}')
  python3 -c "
ours, theirs = $ours, $theirs
print(f't2i, 256 tokens, batch $b, $THREADS threads: cm3 {ours:.3f} images/s, transformers {theirs:.3f} images/s, ratio {ours / theirs:.2f}x')"
done
