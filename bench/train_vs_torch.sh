#!/usr/bin/env bash
# Training throughput, cm3 (Burn, flex CPU backend) against PyTorch on CPU: the same decoder
# (OPT without biases, dropout or LayerNorm parameters, tied embeddings), the same batch of
# random tokens, forward + backward + global clipping + AdamW step, the same number of threads.
# CM3=<binary> runs a given cm3 (e.g. the release build) instead of building the dev profile.
# Prints tokens/s of each (median over the timed steps) and the ratio.
#
#   LAYERS=4 D=256 HEADS=8 SEQ=512 BATCH=8 VOCAB=8192 STEPS=12 THREADS=2 bash bench/train_vs_torch.sh
#
# PyTorch: TORCH_PYTHON=<python> uses an interpreter that already has torch and transformers;
# otherwise they come from PyPI into ~/.cache/cm3-bench/torch2-venv (torch 2.15.0, transformers
# 5.25.0) on first use. The peer is a current PyTorch on purpose: torch 1.12.1 (the oracle
# fixture's) links MKL 2020, which runs its generic (`def`) sgemm kernels on AMD CPUs (measured
# on an AMD EPYC: 1,262 tokens/s against torch 2.15's 3,569 at sequence 512). cm3 is the
# dev-profile binary, whose dependencies (Burn, where the arithmetic runs) are built with
# opt-level 3, unless CM3 names another.
set -euo pipefail
cd "$(dirname "$0")/.."
LAYERS="${LAYERS:-4}" D="${D:-256}" HEADS="${HEADS:-8}" SEQ="${SEQ:-512}" BATCH="${BATCH:-8}"
VOCAB="${VOCAB:-8192}" STEPS="${STEPS:-12}" THREADS="${THREADS:-2}"
if [ -n "${TORCH_PYTHON:-}" ]; then
  torch_py="$TORCH_PYTHON"
else
  venv="$HOME/.cache/cm3-bench/torch2-venv"
  if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q torch==2.15.0 transformers==5.25.0 safetensors numpy
  fi
  torch_py="$venv/bin/python"
fi
if [ -z "${CM3:-}" ]; then
  cargo build -q -p cm3
  CM3="${CARGO_TARGET_DIR:-target}/debug/cm3"
fi
cm3="$CM3"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$torch_py" bench/make_packed.py "$work/data" $((BATCH * STEPS)) $((SEQ + 1)) "$VOCAB"
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
theirs="$("$torch_py" bench/torch_train.py "$LAYERS" "$D" "$HEADS" "$SEQ" "$BATCH" "$VOCAB" "$STEPS" "$THREADS")"
echo "model: $LAYERS layers, d $D, $HEADS heads, sequence $SEQ, batch $BATCH, vocabulary $VOCAB; $THREADS threads"
echo "cm3 (Burn flex): $ours tokens/s"
echo "PyTorch $("$torch_py" -c 'import torch; print(torch.__version__)'): $theirs tokens/s"
python3 -c "print(f'ratio cm3 / PyTorch: {$ours / $theirs:.2f}x')"
