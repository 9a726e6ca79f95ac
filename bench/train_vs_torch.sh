#!/usr/bin/env bash
# Training throughput, cm3 (Burn, flex CPU backend) against PyTorch on CPU: the same decoder
# (OPT without biases, dropout or LayerNorm parameters, tied embeddings), the same batch of
# random tokens, forward + backward + global clipping + AdamW step, the same number of threads.
# CM3=<binary> runs a given cm3 (e.g. the release build) instead of building the dev profile.
# Prints tokens/s of each (median over the timed steps) and the ratio.
#
#   LAYERS=4 D=256 HEADS=8 SEQ=512 BATCH=8 VOCAB=8192 STEPS=12 THREADS=2 bash bench/train_vs_torch.sh
#
# PyTorch comes from PyPI into ~/.cache/cm3-bench/torch-venv (torch 1.12.1, transformers 4.36.2,
# as for the model's oracle fixture) on first use. cm3 is the dev-profile binary, whose
# dependencies (Burn, where the arithmetic runs) are built with opt-level 3.
set -euo pipefail
cd "$(dirname "$0")/.."
LAYERS="${LAYERS:-4}" D="${D:-256}" HEADS="${HEADS:-8}" SEQ="${SEQ:-512}" BATCH="${BATCH:-8}"
VOCAB="${VOCAB:-8192}" STEPS="${STEPS:-12}" THREADS="${THREADS:-2}"
venv="$HOME/.cache/cm3-bench/torch-venv"
if [ ! -x "$venv/bin/python" ]; then
  # torch 1.12.1 has wheels up to Python 3.10: the first interpreter that runs (pyenv's shim
  # for python3.10 exists but fails where 3.10 is not the selected version).
  py=python3
  for c in python3.10 "$HOME"/.pyenv/versions/3.10*/bin/python; do
    if "$c" -c '' 2>/dev/null; then py="$c"; break; fi
  done
  "$py" -m venv "$venv"
  "$venv/bin/pip" install -q torch==1.12.1 'numpy<2'
  "$venv/bin/pip" install -q transformers==4.36.2 safetensors
fi
if [ -z "${CM3:-}" ]; then
  cargo build -q -p cm3
  CM3="${CARGO_TARGET_DIR:-target}/debug/cm3"
fi
cm3="$CM3"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$venv/bin/python" bench/make_packed.py "$work/data" $((BATCH * STEPS)) $((SEQ + 1)) "$VOCAB"
cat > "$work/bench.toml" <<TOML
preset = "tiny"
batch_size = $BATCH
batch_tokens = 0
steps = $STEPS
warmup_steps = 1
eval_every = 0
save_every = $STEPS
[model]
n_layers = $LAYERS
d_model = $D
n_heads = $HEADS
ffn_dim = $((4 * D))
max_seq_len = $((SEQ + 1))
TOML
# The packed sequences hold SEQ + 1 tokens: SEQ inputs and SEQ shifted targets, as PyTorch's.
RAYON_NUM_THREADS="$THREADS" "$cm3" -q train --data "$work/data" --config "$work/bench.toml" \
  --out "$work/run" --no-progress >/dev/null
ours="$(python3 -c "
import json, statistics, sys
r = [json.loads(l)['tokens_per_s'] for l in open('$work/run/metrics.jsonl') if 'tokens_per_s' in l]
r = r[2:] if len(r) > 4 else r
print(f'{statistics.median(r) * $SEQ / ($SEQ + 1):.1f}')")"
theirs="$("$venv/bin/python" bench/torch_train.py "$LAYERS" "$D" "$HEADS" "$SEQ" "$BATCH" "$VOCAB" "$STEPS" "$THREADS")"
echo "model: $LAYERS layers, d $D, $HEADS heads, sequence $SEQ, batch $BATCH, vocabulary $VOCAB; $THREADS threads"
echo "cm3 (Burn flex): $ours tokens/s"
echo "PyTorch:         $theirs tokens/s"
python3 -c "print(f'ratio cm3 / PyTorch: {$ours / $theirs:.2f}x')"
