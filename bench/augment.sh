#!/usr/bin/env bash
# Benchmark: `cm3 augment` over N synthetic pairs (default 100,000; clustered 512-d embeddings,
# random captions) with a flat and an HNSW memory bank. No peer tool does this stage; the script
# prints pairs/s and where the time goes (text encoding for query dropout, which runs in its own
# thread beside the searches, vs search and selection). The text encoder is CLIP ViT-B/32's text
# transformer with random weights (bench/make_clip_b32.py --text: the real model's cost), or the
# repository's tiny test model with TEXT=tiny (to see the retrieval cost alone).
# Env: N=100000  KINDS=flat,hnsw  TEXT=clip|tiny  CM3=<binary>  CM3_BENCH_HOME.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
N="${N:-100000}"; KINDS="${KINDS:-flat,hnsw}"; TEXT="${TEXT:-clip}"
BENCH_HOME="${CM3_BENCH_HOME:-$HOME/.cache/cm3-bench}"
PY="$BENCH_HOME/venv/bin/python"
log() { printf '[bench] %s\n' "$*" >&2; }
if [ ! -x "$PY" ]; then python3 -m venv "$BENCH_HOME/venv"; fi
"$PY" -c "import numpy, onnx, pyarrow" 2>/dev/null || "$PY" -m pip install --quiet numpy onnx pyarrow
bash "$ROOT/scripts/setup-onnxruntime.sh" >&2
if [ -z "${CM3:-}" ]; then
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/cm3-target}"
  log "building cm3 (release)"
  (cd "$ROOT" && cargo build --release -p cm3 >&2)
  CM3="$CARGO_TARGET_DIR/release/cm3"
fi
if [ "$TEXT" = tiny ]; then
  MODEL="$ROOT/embed/tests/fixtures/tiny_clip/text_dynamic"
else
  MODEL="$BENCH_HOME/clip-text-b32-random"
  [ -f "$MODEL/model.onnx" ] || "$PY" "$ROOT/bench/make_clip_b32.py" "$MODEL" --text >&2
fi
WORK="$(mktemp -d "${TMPDIR:-/tmp}/cm3-augment-bench.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
printf '%-6s %8s %9s %9s %10s %12s %10s %10s %8s %9s\n' kind pairs index_s augment_s pairs/s text_enc_s search_s select_s io_s widened
for kind in ${KINDS//,/ }; do
  ds="$WORK/ds-$kind"
  "$PY" "$ROOT/bench/make_augment_dataset.py" "$ds" --n "$N" --text-model "$MODEL/model.onnx" >&2
  t0=$(date +%s.%N)
  "$CM3" -q index build "$ds" --kind "$kind" --no-progress
  t1=$(date +%s.%N)
  "$CM3" -q augment "$ds" --json --no-progress > "$WORK/report-$kind.json"
  "$PY" - "$WORK/report-$kind.json" "$kind" "$(echo "$t1 - $t0" | bc)" <<'PYEOF'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"{sys.argv[2]:<6} {r['rows']:>8} {float(sys.argv[3]):>9.1f} {r['seconds']:>9.1f} {r['rows'] / r['seconds']:>10.0f} "
      f"{r['text_encode_seconds']:>12.1f} {r['search_seconds']:>10.1f} {r['select_seconds']:>10.1f} {r['io_seconds']:>8.1f} {r['widened']:>9}")
print(f"       {r['neighbours']} documents, {r['pairs_short']} pairs short; query dropout removed "
      f"{100 * r['dropped_tokens'] / max(1, r['query_tokens']):.1f}% of {r['query_tokens']} tokens", file=sys.stderr)
PYEOF
  rm -rf "$ds"
done
