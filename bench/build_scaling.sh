#!/usr/bin/env bash
# Peak memory and speed of every stage of `cm3 build --preset demo` as the dataset grows
# (issue 23: "each stage's peak at 100k within 1.3x its peak at 10k").
#
#   CM3=<release cm3> [SIZES="10000 100000"] [IMAGE_SIZE=64] [OUT=target/build-scaling] \
#     bash bench/build_scaling.sh
#
# For each size: the learning benchmark's generator (bench/learn/shapes.py: flat coloured shapes
# with captions, standard-library Python) writes that many pairs, and `cm3 build --preset demo`
# builds them from scratch (PNG pairs of IMAGE_SIZE pixels, 512-token sequences, as
# bench/learn.sh builds, but with the paper preset's HNSW memory bank: the demo's exact flat
# index makes augment quadratic in the pairs), one stage a process (`cm3 build --only STAGE`), each under
# `/usr/bin/time` for its peak resident memory and seconds. Then a table: per stage, peak MiB at
# each size, the ratio of the largest size's peak to the smallest's, and pairs/s at the largest
# size. Generated data is kept in OUT/data-N and reused.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
SIZES="${SIZES:-10000 100000}"
STAGES="${STAGES:-ingest embed index augment train-text train-image tokenize pack}"
# INPUT=folder (default: the generator's folder of .png/.txt/.json files, which ingest lists
# whole) or wds (the same pairs in WebDataset tars of 10,000, as img2dataset writes them, which
# ingest reads as a stream).
INPUT="${INPUT:-folder}"
IMAGE_SIZE="${IMAGE_SIZE:-64}"
OUT="${OUT:-$root/target/build-scaling}"
if [ -z "${CM3:-}" ]; then
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/cm3-target}"
  cargo build --release -p cm3 >&2
  CM3="$CARGO_TARGET_DIR/release/cm3"
fi
mkdir -p "$OUT"
[ -n "${REPORT_ONLY:-}" ] || cp "$CM3" "$OUT/cm3"   # a rebuild during the run cannot mix two versions
CM3="$OUT/cm3"
bash scripts/setup-onnxruntime.sh >/dev/null
# PART_ROWS=N builds the memory bank in parts of at most N vectors (`cm3 index build
# --part-rows`): the index stage then holds one part in memory.
part_rows_line=""
[ -n "${PART_ROWS:-}" ] && part_rows_line="part_rows = $PART_ROWS"
cat > "$OUT/build.toml" <<EOF
[ingest]
image_format = "png"
image_size = $IMAGE_SIZE
[pack]
seq_len = 512
[index]
$part_rows_line
[index.index]
kind = "hnsw"
m = 32
ef_construction = 200
EOF
# REPORT_ONLY=1: print the table of an earlier run in OUT without building again.
for n in $SIZES; do
  [ -n "${REPORT_ONLY:-}" ] && break
  data="$OUT/data-$n"
  if [ ! -f "$data/generator.json" ]; then
    python3 bench/learn/shapes.py "$data" --pairs "$n" --heldout 18 --seed 0 --size "$IMAGE_SIZE" >&2
  fi
  # What ingest reads: the folder, or the same pairs as WebDataset tars (made once).
  input=(--input "$data/train")
  if [ "$INPUT" = wds ]; then
    [ -f "$data/wds/done" ] || python3 - "$data/train" "$data/wds" <<'PY'
import os, sys, tarfile
src, out = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)
keys = sorted({f.rsplit(".", 1)[0] for f in os.listdir(src)})
for t in range(0, len(keys), 10000):
    with tarfile.open(f"{out}/{t // 10000:05d}.tar", "w") as tar:
        for k in keys[t:t + 10000]:
            for ext in ("png", "txt", "json"):
                if os.path.exists(f"{src}/{k}.{ext}"):
                    tar.add(f"{src}/{k}.{ext}", arcname=f"{k}.{ext}")
open(f"{out}/done", "w").close()
PY
    input=(--input "$data/wds"/*.tar)
  fi
  ds="$OUT/ds-$n"
  rm -rf "$ds"
  # Each stage in its own process (`cm3 build --only`), so that a stage's peak is its own, not
  # what the allocator kept from the stages before it.
  for stage in $STAGES; do
    echo "── $n pairs: $stage" >&2
    args=()
    [ "$stage" = ingest ] && args=("${input[@]}")
    /usr/bin/time -f '%M %e' -o "$OUT/time-$n-$stage.txt" \
      "$CM3" build "$ds" --preset demo --config "$OUT/build.toml" "${args[@]}" --only "$stage" \
      --no-progress --json > "$OUT/build-$n-$stage.json" 2> "$OUT/build-$n-$stage.err"
  done
done
python3 - "$OUT" "$STAGES" "${PART_ROWS:-}" "${PROJECT_PART_ROWS:-1000000}" $SIZES <<'EOF'
import json, sys
out, stages = sys.argv[1], sys.argv[2].split()
part_rows = int(sys.argv[3]) if sys.argv[3] else None
project_part_rows = int(sys.argv[4])
sizes = [int(s) for s in sys.argv[5:]]
lo, hi = sizes[0], sizes[-1]
def measured(n, stage):
    kib, secs = open(f"{out}/time-{n}-{stage}.txt").read().split()
    return int(kib) / 1024, float(secs)
print("| stage | " + " | ".join(f"peak MiB at {n:,}" for n in sizes)
      + f" | peak {hi:,} / {lo:,} | seconds at {hi:,} | pairs/s at {hi:,} |")
print("|---" * (len(sizes) + 4) + "|")
worst, total = 0.0, 0.0
for stage in stages:
    peaks = [measured(n, stage)[0] for n in sizes]
    secs = measured(hi, stage)[1]
    total += secs
    ratio = peaks[-1] / peaks[0]
    worst = max(worst, ratio)
    # The tokenizers train on a bounded sample: a fixed cost, not a rate.
    rate = "(fixed cost)" if stage.startswith("train-") else f"{hi / secs:,.0f}"
    print(f"| {stage} | " + " | ".join(f"{p:,.0f}" for p in peaks)
          + f" | {ratio:.2f}x | {secs:,.1f} | {rate} |")
print(f"\nlargest stage ratio {worst:.2f}x (target <= 1.3x); {total:,.0f} s in all at {hi:,} pairs")

# A stated model, not a measurement: the time of a 100M-pair build from the per-stage seconds
# measured at the largest size, on a Slurm array of N nodes like this one. Stages that take
# --num-workers (ingest, embed, augment, tokenize) split their shards over the nodes; index
# (one memory bank) and pack (one sequence stream) run on one node; the two tokenizers train on
# a bounded sample (fixed cost). Linear in the pairs, except the HNSW bank's insertions and
# searches (index, augment): one graph's are scaled by log(100M) / log(size) as well. A bank in
# parts (PART_ROWS) is projected with parts of PROJECT_PART_ROWS (default 1,000,000, about 2.3 GB
# of 512-d HNSW each): an insertion costs log(part size), and a query visits every part, so
# augment scales by (parts at 100M x log(its part size)) / (parts measured x log(theirs)).
import math
target = 100_000_000
grow = target / hi
secs = {st: measured(hi, st)[1] for st in stages}
split = {"ingest", "embed", "augment", "tokenize"}
fixed = {"train-text", "train-image"}
if part_rows:
    measured_part = min(part_rows, hi)
    insert = math.log(project_part_rows) / math.log(measured_part)
    parts_then, parts_now = math.ceil(target / project_part_rows), math.ceil(hi / part_rows)
    factor = {"index": insert, "augment": parts_then * insert / parts_now}
    how = (f"bank in parts of {project_part_rows:,} ({parts_then:,} parts), measured in parts of "
           f"{part_rows:,} ({parts_now:,} parts)")
else:
    log_grow = math.log(target) / math.log(hi)
    factor = {"index": log_grow, "augment": log_grow}
    how = "bank in one graph"
def projected(st):
    return secs[st] * grow * factor.get(st, 1.0)
print(f"\nprojected {target:,}-pair build (model above; demo settings, {sizes[-1]:,}-pair rates; {how}):")
for nodes in (1, 10, 100, 1000):
    t = sum(secs[st] if st in fixed else projected(st) / (nodes if st in split else 1)
            for st in secs)
    serial = sum(projected(st) for st in secs if st not in split | fixed)
    print(f"  {nodes:>4} node(s): {t / 3600:,.1f} h (of which {serial / 3600:,.1f} h on one node: index and pack)")
EOF
