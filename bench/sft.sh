#!/usr/bin/env bash
# "Does SFT teach?": on the learning benchmark's synthetic shapes (bench/learn.sh), take its
# pretrained run, fine-tune it (`cm3 sft build` + `cm3 train --init-from`, the SFT stage) on
# VQA-style questions about new images of the same kind ("What colour is the shape?", "What shape
# is it?"; bench/learn/vqa_shapes.py), and measure VQA accuracy on the learning benchmark's
# held-out images (`cm3 eval vqa`: Table 5's template "Question: q Answer: <mask>.", greedy)
# before and after. Target: after SFT >= 80% (chance: colour 1/6, shape 1/3), and above the
# pretrained model asked with the same template.
#   1. data     vqa_shapes.py train: SFT_PAIRS new images at the benchmark's image size, two
#               questions each (phrasings drawn from two per attribute), none equal to a
#               pretraining or held-out image (their pixels are excluded); vqa_shapes.py heldout:
#               the held-out pairs, one colour and one shape question each (the first phrasing)
#   2. before   cm3 eval vqa with LEARN_OUT/runs/retrieval
#   3. sft data cm3 sft build --from LEARN_OUT/runs/retrieval --task vqa2=SFT_OUT/vqa-train
#   4. train    cm3 train --init-from LEARN_OUT/runs/retrieval, preset "sft", SFT_STEPS steps
#   5. after    cm3 eval vqa with the SFT run; then the report (bench/learn/sft_report.py)
#
# Usage (from anywhere), after bench/learn.sh:
#   bash bench/sft.sh                                   # LEARN_OUT=target/learn
#   LEARN_OUT=/tmp/learn SFT_OUT=/tmp/sft CM3=/path/to/cm3 bash bench/sft.sh
# Knobs (environment): LEARN_OUT (a finished bench/learn.sh output, target/learn), SFT_OUT
# (LEARN_OUT/sft), CM3 (CARGO_TARGET_DIR/release/cm3), SFT_PAIRS (training images, 1200),
# SFT_STEPS (1000), SFT_LR (3e-3, the pretraining's), SFT_BATCH (4), SFT_SEED (0),
# SFT_OUTPUT_RATE (1.0: the share of SFT examples whose answer is the masked span), SFT_LOSS
# (sequence, the paper's; output_only: the ablation scoring only the answers and their ends).
# Writes SFT_OUT/table.md (printed at the end), results.json (every number and every answer),
# vqa-train/ and vqa-heldout/ (the VQA v2 folders), eval/before and eval/after (what
# `cm3 eval vqa` wrote: answers.jsonl, predictions.json, report.json), ds/ (the SFT dataset),
# run/ (the SFT run), sft.toml, train.toml, sft-build.json, train.json, timing.tsv, logs/,
# failures.tsv (commands that failed; the script goes on and exits 1 at the end if there are any).
# Needs: python3 (standard library only).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
target="${CARGO_TARGET_DIR:-target}"
[[ "$target" == /* ]] || target="$root/$target"
# CM3, LEARN_OUT and SFT_OUT given relative are taken from the caller's directory.
CM3="${CM3:-$target/release/cm3}"
if [[ "$CM3" == */* ]]; then CM3="$(cd "$(dirname "$CM3")" 2>/dev/null && pwd)/$(basename "$CM3")"; else CM3="$(command -v "$CM3" || true)"; fi
[ -n "$CM3" ] && [ -x "$CM3" ] || { echo "sft.sh: no cm3 binary at ${CM3:-?} (cargo build --release -p cm3, or set CM3=...)" >&2; exit 2; }
LEARN="${LEARN_OUT:-$root/target/learn}"
[[ "$LEARN" == /* ]] || LEARN="$PWD/$LEARN"
OUT="${SFT_OUT:-$LEARN/sft}"
[[ "$OUT" == /* ]] || OUT="$PWD/$OUT"
command -v python3 >/dev/null || { echo "sft.sh: needs python3 (standard library only)" >&2; exit 2; }
cd "$root"
PAIRS="${SFT_PAIRS:-1200}"
STEPS="${SFT_STEPS:-1000}"
LR="${SFT_LR:-3e-3}"
BATCH="${SFT_BATCH:-4}"
SEED="${SFT_SEED:-0}"
# Share of the SFT examples whose answer is the masked span (`cm3 sft build`'s output_rate; its
# default is 0.5). Here 1: every example teaches the answer in the form the evaluation asks; at
# 0.5 this budget learned the form too slowly (300 steps at 1e-3: 14% against 39% with 1).
OUTPUT_RATE="${SFT_OUTPUT_RATE:-1.0}"
LOSS="${SFT_LOSS:-sequence}"
py=(python3)

# The pretrained run and the held-out pairs of a finished learning benchmark.
PRE="$LEARN/runs/retrieval"
[ -f "$PRE/config.json" ] && [ -d "$PRE/checkpoints" ] ||
  { echo "sft.sh: $PRE is not a cm3 run (no config.json / checkpoints/); run bench/learn.sh first or set LEARN_OUT" >&2; exit 2; }
[ -f "$LEARN/data/heldout.json" ] ||
  { echo "sft.sh: no $LEARN/data/heldout.json (not a bench/learn.sh output?)" >&2; exit 2; }
IMAGE_SIZE="$("${py[@]}" -c 'import json, sys; print(int(json.load(open(sys.argv[1]))["image_size"]))' "$LEARN/settings.json" 2>/dev/null)" ||
  { echo "sft.sh: cannot read image_size from $LEARN/settings.json" >&2; exit 2; }

# ---------------------------------------------------------------------------------------------
# Every cm3 command line of the benchmark, in one place (adjust here when the CLI changes).
# ---------------------------------------------------------------------------------------------
cm3_eval_vqa()  { "$CM3" eval vqa --run "$1" --questions "$2/questions.json" --annotations "$2/annotations.json" \
                    --images "$2/images" --out "$3" --json; }                                    # run vqa-folder out
cm3_sft_build() { "$CM3" sft build "$1" --from "$2" --task "vqa2=$3" --config "$4" --json; }    # out from vqa-folder config
cm3_train_sft() { "$CM3" train --init-from "$1" --data "$2" --config "$3" --out "$4" --steps "$STEPS" --no-progress --json; }  # init ds config run
# ---------------------------------------------------------------------------------------------

# shellcheck source=bench/lib.sh
source "$root/bench/lib.sh"
bench_out sft.sh .sft-bench

cat > "$OUT/settings.json" <<EOF
{"cm3": "$CM3_SOURCE", "learn_out": "$LEARN", "pretrained_run": "$PRE", "pairs": $PAIRS,
 "steps": $STEPS, "lr": $LR, "batch": $BATCH, "seed": $SEED, "output_rate": $OUTPUT_RATE, "loss": "$LOSS", "image_size": $IMAGE_SIZE,
 "started": "$(date -u +%FT%TZ)", "cm3_version": "$("$CM3" --version 2>/dev/null || echo unknown)",
 "commit": "$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"}
EOF
start_all=$(now)

echo "── [1/5] data: $PAIRS SFT images ($IMAGE_SIZE px, two questions each), the held-out pairs as questions"
t=$(now)
# --exclude: the pretraining and held-out images are redrawn and kept out of the SFT images.
if ! "${py[@]}" bench/learn/vqa_shapes.py train "$OUT/vqa-train" --pairs "$PAIRS" --seed "$SEED" \
       --size "$IMAGE_SIZE" --exclude "$LEARN/data" ||
   ! "${py[@]}" bench/learn/vqa_shapes.py heldout "$LEARN/data" "$OUT/vqa-heldout"; then
  echo "sft.sh: writing the VQA folders failed; nothing else can run" >&2
  exit 1
fi
stage data "$t"

echo "── [2/5] before: cm3 eval vqa with the pretrained run"
t=$(now)
try eval-before cm3_eval_vqa "$PRE" "$OUT/vqa-heldout" "$OUT/eval/before" || true
stage eval-before "$t"

echo "── [3/5] cm3 sft build --task vqa2 from the pretrained run"
t=$(now)
cat > "$OUT/sft.toml" <<EOF
epochs = 1
seed = $SEED
output_rate = $OUTPUT_RATE
EOF
built=0
if try sft-build cm3_sft_build "$OUT/ds" "$PRE" "$OUT/vqa-train" "$OUT/sft.toml"; then
  cp "$OUT/logs/sft-build.out" "$OUT/sft-build.json"
  built=1
fi
stage sft-build "$t"

echo "── [4/5] cm3 train --init-from the pretrained run, $STEPS steps (batch $BATCH, lr $LR)"
t=$(now)
cat > "$OUT/train.toml" <<EOF
preset = "sft"
batch_size = $BATCH
batch_tokens = 0
lr = $LR
warmup_steps = 20
save_every = $STEPS
eval_every = $STEPS
eval_batches = 4
keep_checkpoints = 1
seed = $SEED
loss = "$LOSS"
EOF
trained=0
if [ "$built" = 1 ]; then
  if try train cm3_train_sft "$PRE" "$OUT/ds" "$OUT/train.toml" "$OUT/run"; then
    cp "$OUT/logs/train.out" "$OUT/train.json"
    trained=1
  fi
else
  echo "   skipped: no SFT dataset (cm3 sft build failed)"
fi
stage train "$t"

echo "── [5/5] after: cm3 eval vqa with the SFT run; report"
t=$(now)
if [ "$trained" = 1 ]; then
  try eval-after cm3_eval_vqa "$OUT/run" "$OUT/vqa-heldout" "$OUT/eval/after" || true
else
  echo "   skipped: no SFT run"
fi
stage eval-after "$t"
printf '%s\t%s\n' total "$(since "$start_all")" >> "$OUT/timing.tsv"
"${py[@]}" bench/learn/sft_report.py "$OUT"
if [ -s "$OUT/failures.tsv" ]; then
  echo "sft.sh: $(wc -l < "$OUT/failures.tsv") command(s) failed, listed in $OUT/failures.tsv" >&2
  exit 1
fi
