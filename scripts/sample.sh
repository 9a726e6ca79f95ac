#!/usr/bin/env bash
# The main job on the embedded sample: ingest sample/pairs, embed it, index the document vectors,
# search it with a caption, retrieve every pair's documents (cm3 augment), show one pair's, train
# the text and image tokenizers, tokenise every pair, pack the training sequences, and print the
# manifest.
# The embedding uses the small random-weight CLIP-shaped test models (the real CLIP weights are on
# the Hugging Face hub, which this machine cannot reach); on a machine with hub access, drop the
# two --*-model flags to use hf:Qdrant/clip-ViT-B-32-vision and -text.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-target/sample-dataset}"
bash scripts/setup-onnxruntime.sh
cargo build -q -p cm3
cm3="${CARGO_TARGET_DIR:-target}/debug/cm3"
"$cm3" ingest --input sample/pairs --out "$out"
"$cm3" embed "$out" --image-model embed/tests/fixtures/tiny_clip/vision --text-model embed/tests/fixtures/tiny_clip/text
"$cm3" index build "$out"
# The 5 pairs nearest to a caption of the sample (the test models' vectors are random
# projections, so the ranking shows the machinery, not CLIP's judgement).
"$cm3" index search "$out" --text "$(cat sample/pairs/coco-107438.txt)" -k 5 \
  --text-model embed/tests/fixtures/tiny_clip/text
# Each pair's retrieved documents by the paper's rules (relevance <= 0.9, no duplicates, query
# dropout 0.2, 2 by image + 2 by text, 3 sampled), then one pair's.
"$cm3" augment "$out"
"$cm3" inspect "$out" --neighbors "$("$cm3" index search "$out" --text "$(cat sample/pairs/coco-107438.txt)" -k 1 \
  --text-model embed/tests/fixtures/tiny_clip/text --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')"
# The text BPE on the sample's captions (32 captions fill a few hundred of the 56,320 entries;
# cm3 says so).
"$cm3" tokenizer train-text "$out" --overwrite
# A small VQ image tokenizer of our own, trained on the sample's images (100 steps, about a
# minute; the paper's tokenizer is taming's vqgan_gumbel_f8, whose weights are not downloadable
# here: pass its release folder as --image-tokenizer to `cm3 tokenize` where you have it).
"$cm3" tokenizer train-image "$out" --steps 100 --overwrite --no-progress
# Every pair as text ids + 1,024 image ids (256 x 256 -> 32 x 32 codes) in one vocabulary.
"$cm3" tokenize "$out" --rebuild
# Each pair after its retrieved documents, CM3 causal-masked, packed into 4,096-token sequences
# (Megatron-LM indexed datasets in packed/, with meta.json).
"$cm3" pack "$out" --rebuild
"$cm3" inspect "$out"
