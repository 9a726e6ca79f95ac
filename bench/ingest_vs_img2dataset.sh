#!/usr/bin/env bash
# Benchmark: `cm3 ingest` vs img2dataset's Resizer on the same local images.
#
# Same input (N JPEGs of varied sizes generated from sample/pairs/), same work
# (decode -> shorter side to 256 -> center crop 256x256 -> JPEG q95), same number of
# processes/threads P. Each tool runs RUNS times, in turn (img2dataset, cm3, img2dataset, ...);
# the BEST (highest images/s) run of each is compared, and the median ratio of neighbouring
# runs is printed too. Target: cm3 >= TARGET x img2dataset.
#
# Environment (all optional):
#   CM3             path to the cm3 binary (default: cargo build --release -p cm3
#                   --features $CM3_FEATURES into $CARGO_TARGET_DIR, default $HOME/.cache/cm3-target)
#   CM3_FEATURES    cargo features of that build (default turbojpeg; CM3_FEATURES= builds the
#                   pure-Rust default, whose JPEG codec is rust)
#   CM3_INGEST_ARGS extra arguments appended to `cm3 ingest ...` (e.g. --jpeg-codec rust-scaled)
#   SKIP_CM3=1      run only the img2dataset half
#   N=2400 P=2 RUNS=3 TARGET=2.0 SEED=0
#   CM3_BENCH_HOME  venv + image cache (default $HOME/.cache/cm3-bench)
#   IMG2DATASET_VERSION=1.47.0
#
# img2dataset is installed (once) into $CM3_BENCH_HOME/venv, never into the repo.
# Exit status is non-zero only on errors, not when the target is missed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH="$ROOT/bench"
N="${N:-2400}"
P="${P:-2}"
RUNS="${RUNS:-3}"
TARGET="${TARGET:-2.0}"
SEED="${SEED:-0}"
BENCH_HOME="${CM3_BENCH_HOME:-$HOME/.cache/cm3-bench}"
VENV="$BENCH_HOME/venv"
PY="$VENV/bin/python"
IMG2DATASET_VERSION="${IMG2DATASET_VERSION:-1.47.0}"
IMG_DIR="$BENCH_HOME/images-$N"

# albumentations (an img2dataset dependency) otherwise checks PyPI for updates on import.
export NO_ALBUMENTATIONS_UPDATE=1

log() { printf '[bench] %s\n' "$*" >&2; }

# 1. venv with img2dataset + Pillow (idempotent).
mkdir -p "$BENCH_HOME"
if ! "$PY" -c "import img2dataset.resizer, PIL" >/dev/null 2>&1; then
  log "installing img2dataset==$IMG2DATASET_VERSION + Pillow into $VENV"
  if [ ! -x "$PY" ]; then
    python3 -m venv "$VENV" || {
      log "python3 -m venv failed (on Debian/Ubuntu: apt-get install python3-venv)"
      exit 1
    }
  fi
  "$PY" -m pip install --quiet --upgrade pip
  "$PY" -m pip install --quiet "img2dataset==$IMG2DATASET_VERSION" pillow
  "$PY" -c "import img2dataset.resizer, PIL"
fi
log "img2dataset $("$PY" -c 'from importlib.metadata import version as v; print(v("img2dataset"))')," \
  "opencv $("$PY" -c 'import cv2; print(cv2.__version__)'), Python $("$PY" -c 'import platform; print(platform.python_version())')"

# 2. Input images (cached; generated into a temp dir and renamed, so never half-made).
if [ ! -f "$IMG_DIR/.complete" ]; then
  log "generating $N images into $IMG_DIR"
  rm -rf "$IMG_DIR" "$IMG_DIR.tmp.$$"
  "$PY" "$BENCH/make_images.py" "$IMG_DIR.tmp.$$" -n "$N" --seed "$SEED"
  echo "n=$N seed=$SEED" >"$IMG_DIR.tmp.$$/.complete"
  mv "$IMG_DIR.tmp.$$" "$IMG_DIR"
fi
n_jpg=$(find "$IMG_DIR" -maxdepth 1 -name '*.jpg' | wc -l)
[ "$n_jpg" -eq "$N" ] || { log "expected $N jpg in $IMG_DIR, found $n_jpg (delete it to regenerate)"; exit 1; }
log "input: $n_jpg JPEGs, $(du -sh "$IMG_DIR" | cut -f1) in $IMG_DIR"
# Warm the page cache so neither tool pays for the first cold read.
cat "$IMG_DIR"/*.jpg >/dev/null

best() { "$PY" -c 'import sys; print(max(float(x) for x in sys.argv[1:]))' "$@"; }

# 3. The cm3 binary (its runs below: wall clock of the whole process, start-up included).
if [ "${SKIP_CM3:-0}" != "1" ]; then
CM3_FEATURES="${CM3_FEATURES-turbojpeg}"
if [ -z "${CM3:-}" ]; then
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/cm3-target}"
  # The `turbojpeg` feature (libjpeg-turbo, DCT-scaled decoding) is what a user who cares about
  # ingest speed builds; it needs cmake and nasm.
  if [ -n "$CM3_FEATURES" ] && { ! command -v cmake >/dev/null || ! command -v nasm >/dev/null; }; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      log "installing cmake and nasm (apt-get) for the turbojpeg feature"
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cmake nasm >/dev/null
    else
      log "cmake and nasm are needed for --features turbojpeg; install them or set CM3"
      exit 1
    fi
  fi
  log "building cm3 (cargo build --release -p cm3 --features '$CM3_FEATURES', CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
  (cd "$ROOT" && cargo build --release -p cm3 --features "$CM3_FEATURES")
  CM3="$CARGO_TARGET_DIR/release/cm3"
fi
[ -x "$CM3" ] || { log "cm3 binary not found: $CM3"; exit 1; }
fi

# 4. Both tools in turn, RUNS times each (img2dataset, cm3, img2dataset, cm3, ...), so that both
# see the same machine: on a shared machine the speed of either drifts by 10% over minutes.
i2d_run() {
  local line
  line=$("$PY" "$BENCH/img2dataset_resize.py" "$IMG_DIR" --processes "$P")
  log "img2dataset run $1: $line"
  i2d_rates+=("$("$PY" -c 'import json,sys; print(json.loads(sys.argv[1])["images_per_s"])' "$line")")
}
cm3_run() {
  local out t0 t1 rate
  out=$(mktemp -d "${TMPDIR:-/tmp}/cm3-bench-out.XXXXXX")
  t0=$(date +%s.%N)
  # shellcheck disable=SC2086
  if ! "$CM3" ingest --input "$IMG_DIR" --format folder --out "$out" --threads "$P" ${CM3_INGEST_ARGS:-} \
      >"$out.log" 2>&1; then
    log "cm3 ingest failed (run $1); last lines of its output:"
    tail -n 20 "$out.log" >&2
    rm -rf "$out" "$out.log"
    exit 1
  fi
  t1=$(date +%s.%N)
  rm -rf "$out" "$out.log"
  rate=$("$PY" -c 'import sys; print(round(int(sys.argv[1]) / (float(sys.argv[3]) - float(sys.argv[2])), 2))' "$N" "$t0" "$t1")
  log "cm3 run $1: $rate images/s"
  cm3_rates+=("$rate")
}
i2d_rates=()
cm3_rates=()
for r in $(seq 1 "$RUNS"); do
  i2d_run "$r"
  [ "${SKIP_CM3:-0}" = "1" ] || cm3_run "$r"
done
I2D=$(best "${i2d_rates[@]}")
printf 'img2dataset: %s images/s (best of %s, %s processes; runs: %s)\n' "$I2D" "$RUNS" "$P" "${i2d_rates[*]}"
if [ "${SKIP_CM3:-0}" = "1" ]; then
  exit 0
fi

CM3_RATE=$(best "${cm3_rates[@]}")
printf 'cm3:         %s images/s (best of %s, %s threads; runs: %s)\n' "$CM3_RATE" "$RUNS" "$P" "${cm3_rates[*]}"
# The ratio of each pair of neighbouring runs too: robust to the machine's drift.
"$PY" - "${i2d_rates[*]}" "${cm3_rates[*]}" <<'EOF'
import statistics, sys
i2d, cm3 = ([float(x) for x in a.split()] for a in sys.argv[1:])
pairs = [c / i for c, i in zip(cm3, i2d)]
print("pair ratios: " + " ".join(f"{p:.2f}" for p in pairs) + f" (median {statistics.median(pairs):.2f}x)")
EOF

"$PY" - "$CM3_RATE" "$I2D" "$TARGET" <<'EOF'
import sys
cm3, i2d, target = map(float, sys.argv[1:])
ratio = cm3 / i2d
print(f"ratio cm3/img2dataset: {ratio:.2f}x")
print(f"{'PASS' if ratio >= target else 'FAIL'}: target >= {target:.1f}x")
EOF
