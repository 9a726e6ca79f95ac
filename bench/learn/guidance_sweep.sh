#!/usr/bin/env bash
# Guidance swept on a finished learning benchmark (bench/learn.sh): for each CFG scale and
# plausibility constraint, `cm3 generate t2i` on every held-out prompt (zero-shot unless RETRIEVE
# is set), judged by judge.py; prints the share of samples with the right colour and shape.
#
#   LEARN_OUT=<learn.sh output> [RUN=retrieval] [SEED=11] [SAMPLES=8] [RETRIEVE=0] \
#   [SETTINGS="1:0 3:0 3:0.1"] [CM3=<binary>] [OUT=LEARN_OUT/sweep] bash bench/learn/guidance_sweep.sh
#
# SETTINGS: space-separated CFG:MIN_P pairs (`--cfg CFG --min-p MIN_P`; min-p 0 is eq. 2 alone).
# The README's sweep: SETTINGS="1:0 1:0.1 2:0.1 3:0 3:0.05 3:0.1 3:0.2 5:0.1", SEED 11 and 7.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
L="${LEARN_OUT:?set LEARN_OUT to a finished bench/learn.sh output}"
RUN="${RUN:-retrieval}" SEED="${SEED:-11}" SAMPLES="${SAMPLES:-8}" RETRIEVE="${RETRIEVE:-0}"
SETTINGS="${SETTINGS:-1:0 3:0 3:0.1}"
CM3="${CM3:-$L/bin/cm3}"
[ -x "$CM3" ] || CM3="${CARGO_TARGET_DIR:-$root/target}/release/cm3"
[ -x "$CM3" ] || { echo "guidance_sweep: no cm3 binary (set CM3=...)" >&2; exit 2; }
OUT="${OUT:-$L/sweep}"
for s in $SETTINGS; do
  cfg=${s%%:*} mp=${s##*:}
  d="$OUT/$RUN-seed$SEED-cfg$cfg-minp$mp"
  mkdir -p "$d"
  while IFS=$'\t' read -r key _image caption _infill; do
    "$CM3" generate --run "$L/runs/$RUN" --out "$d/$key" --samples "$SAMPLES" --seed "$SEED" \
      --top-p 0.9 --cfg "$cfg" --min-p "$mp" t2i --prompt "$caption" --retrieve "$RETRIEVE" \
      > /dev/null 2> "$d/$key.err" || { echo "guidance_sweep: failed, see $d/$key.err" >&2; exit 1; }
  done < "$L/data/heldout.tsv"
  python3 - "$root/bench/learn" "$L/data/heldout.json" "$d" "$cfg" "$mp" <<'PY'
import glob, json, os, sys
sys.path.insert(0, sys.argv[1])
from judge import judge_image  # noqa: E402
held, d = json.load(open(sys.argv[2])), sys.argv[3]
colour = shape = n = 0
for h in held:
    for p in sorted(glob.glob(os.path.join(d, h["key"], "sample-*.png"))):
        j = judge_image(p)
        n += 1
        colour += j["colour"] == h["colour"]
        shape += j["shape"] == h["shape"]
pct = lambda x: 100 * x / max(n, 1)  # noqa: E731
print(f"cfg {sys.argv[4]} min-p {sys.argv[5]}: colour {colour}/{n} = {pct(colour):.1f}%, "
      f"shape {shape}/{n} = {pct(shape):.1f}%")
PY
done
