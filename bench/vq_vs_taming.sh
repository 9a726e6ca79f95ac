#!/usr/bin/env bash
# VQ image tokenizer encode throughput, cm3 (Burn) against taming-transformers (PyTorch CPU), issue
# 23: taming's vqgan_gumbel_f8 architecture with random weights, 256² images -> 32 x 32 codes, the
# same batch and threads on both sides. Prints images/s of each (median over REPS timed batches)
# and the ratio cm3 / taming. Target: >= 1.0 on flex. BACKEND=wgpu measures cm3 on the wgpu
# backend (Mesa's lavapipe here: a software device, reported, not targeted).
#
#   [BATCH=4] [REPS=5] [THREADS=2] [BACKEND=flex|wgpu] [PYTHON=<python with torch>] bash bench/vq_vs_taming.sh
#
# PYTHON needs torch; taming-transformers-rom1504 (--no-deps) and einops are installed into it
# when missing. Default: ~/.cache/cm3-bench/torch2-venv (torch 2.15; bench/train_vs_torch.sh makes it).
set -euo pipefail
cd "$(dirname "$0")/.."
BATCH="${BATCH:-4}" REPS="${REPS:-5}" THREADS="${THREADS:-2}" BACKEND="${BACKEND:-flex}"
PYTHON="${PYTHON:-$HOME/.cache/cm3-bench/torch2-venv/bin/python}"
"$PYTHON" -c 'import torch' || { echo "vq_vs_taming: $PYTHON has no torch; set PYTHON" >&2; exit 2; }
if ! "$PYTHON" -c 'import einops, taming.modules.diffusionmodules.model' 2>/dev/null; then
  "$PYTHON" -m pip install -q --no-deps taming-transformers-rom1504==0.0.6
  "$PYTHON" -m pip install -q einops
fi
features=()
[ "$BACKEND" = wgpu ] && features=(--features wgpu)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/cm3-target}"
cargo bench -q -p cm3-model "${features[@]}" --bench vq_encode --no-run >&2
ours=$(RAYON_NUM_THREADS="$THREADS" cargo bench -q -p cm3-model "${features[@]}" --bench vq_encode -- "$BATCH" "$REPS" "$BACKEND" | awk '/images_per_s/ {print $2}')
theirs=$("$PYTHON" bench/vq_taming.py "$BATCH" "$REPS" "$THREADS" | awk '/images_per_s/ {print $2}')
python3 -c "
ours, theirs = $ours, $theirs
print(f'vqgan_gumbel_f8 encode, 256², batch $BATCH, $THREADS threads: cm3 ($BACKEND) {ours:.3f} images/s, taming (PyTorch) {theirs:.3f} images/s, ratio {ours / theirs:.2f}x')"
