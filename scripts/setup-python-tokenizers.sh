#!/usr/bin/env bash
# Installs Hugging Face's Python `tokenizers` (from PyPI) into a cache folder, for the test that
# loads cm3's tokenizer.json with it and compares the ids. Prints the folder to put on PYTHONPATH.
set -euo pipefail
version=0.22.2
dir="${CM3_PY_TOKENIZERS_DIR:-$HOME/.cache/cm3-py/tokenizers-$version}"
mkdir -p "$(dirname "$dir")"
exec 9>"$dir.lock"
flock 9
if [ ! -d "$dir/tokenizers" ]; then
  tmp="$dir.tmp.$$"
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps \
    --target "$tmp" "tokenizers==$version" >&2
  rm -rf "$dir"
  mv "$tmp" "$dir"
fi
echo "$dir"
