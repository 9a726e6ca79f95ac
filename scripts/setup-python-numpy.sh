#!/usr/bin/env bash
# Installs numpy (from PyPI) into a cache folder, for the test that runs scripts/read_packed.py
# (the README's reader of packed sequences). Prints the folder to put on PYTHONPATH.
set -euo pipefail
version=2.2.6
dir="${CM3_PY_NUMPY_DIR:-$HOME/.cache/cm3-py/numpy-$version}"
mkdir -p "$(dirname "$dir")"
exec 9>"$dir.lock"
flock 9
if [ ! -d "$dir/numpy" ]; then
  tmp="$dir.tmp.$$"
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps \
    --target "$tmp" "numpy==$version" >&2
  rm -rf "$dir"
  mv "$tmp" "$dir"
fi
echo "$dir"
