#!/usr/bin/env bash
# Benchmark: `cm3 index` (flat and HNSW) against FAISS IndexFlatIP / IndexHNSWFlat (pip faiss-cpu)
# on the same vectors, machine and thread count: real SIFT (4,800 x 128, normalised) and seeded
# clustered 512-d unit vectors (100,000; 1,000,000 with SETS=sift,100k,1m). 1,000 queries, k=10.
# Prints build time, queries/s, recall@10 and peak memory, then the ratios against the targets:
# flat >= 0.8x FAISS IndexFlatIP queries/s; hnsw >= 1.0x IndexHNSWFlat at recall@10 >= 0.95; the
# HNSW build <= 1.5x FAISS's time and <= 1.2x its peak memory, at recall@10 within 0.005.
# Env: SETS=sift,100k  THREADS=2  M=32  EFC=200  EF=64,128,256  CM3=<binary>  CM3_BENCH_HOME
# NO_HNSW_FOR=1m (sets whose HNSW builds are skipped; NO_HNSW_FOR= builds them all).
# ORDERS=1 (HNSW builds per library, each on another seeded order of the vectors; recall@10 is
# compared as the mean over them: one build is one draw: at efSearch 128 on 100k, 0.7545 to 0.7695 for cm3 across six orders).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH_HOME="${CM3_BENCH_HOME:-$HOME/.cache/cm3-bench}"
PY="$BENCH_HOME/venv/bin/python"
if [ ! -x "$PY" ]; then python3 -m venv "$BENCH_HOME/venv"; fi
"$PY" -c "import numpy, faiss" 2>/dev/null || "$PY" -m pip install --quiet numpy faiss-cpu
if [ -z "${CM3:-}" ]; then
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/cm3-target}"
  (cd "$ROOT" && cargo build --release -p cm3 >&2)
  CM3="$CARGO_TARGET_DIR/release/cm3"
fi
WORK="$(mktemp -d "${TMPDIR:-/tmp}/cm3-index-bench.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
"$PY" "$ROOT/bench/index_vs_faiss.py" --cm3 "$CM3" --sets "${SETS:-sift,100k}" --threads "${THREADS:-2}" \
  --m "${M:-32}" --ef-construction "${EFC:-200}" --ef-search "${EF:-64,128,256}" --work "$WORK" \
  --no-hnsw-for "${NO_HNSW_FOR-1m}" --orders "${ORDERS:-1}"
