#!/usr/bin/env bash
# The main job on the embedded sample: `cm3 build --preset demo` runs every stage (ingest →
# embed → index → augment → train the text and image tokenizers → tokenize → pack) on sample/pairs
# into a prepared dataset directory, then we search its memory bank with a caption, show one pair's
# retrieved documents, print the manifest, train the tiny decoder on it for a few steps and
# generate an image from a caption (what the notebooks in notebooks/ look at).
# The demo preset uses cm3's built-in small random-weight CLIP-shaped encoders (the real CLIP
# weights are on the Hugging Face hub, which this machine cannot reach): the retrieval ranks by
# random projections, not by CLIP's judgement. `--preset paper` uses the real ones.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-target/sample-dataset}"
run="${2:-target/sample-run}"
bash scripts/setup-onnxruntime.sh
cargo build -q -p cm3
cm3="${CARGO_TARGET_DIR:-target}/debug/cm3"
"$cm3" build "$out" --preset demo --input sample/pairs
# The 5 pairs nearest to a caption of the sample, and the first one's retrieved documents.
caption="$(cat sample/pairs/coco-107438.txt)"
text_model="$out/models/demo-clip/text"
"$cm3" index search "$out" --text "$caption" -k 5 --text-model "$text_model"
"$cm3" inspect "$out" --neighbors "$("$cm3" index search "$out" --text "$caption" -k 1 \
  --text-model "$text_model" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')"
"$cm3" inspect "$out"
# A few training steps of the tiny decoder (a second run of this script continues it).
if [ -f "$run/config.json" ]; then
  "$cm3" train --resume "$run" --no-progress
else
  "$cm3" train --data "$out" --config tiny --out "$run" --steps 30 --no-progress
fi
# Text → image with CFG 3.0 (a 30-step model draws noise; the point is the machinery).
"$cm3" generate --run "$run" --out "$run/samples" t2i --prompt "$caption" --samples 2
