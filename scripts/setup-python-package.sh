#!/usr/bin/env bash
# Installs one pure PyPI package (no dependencies) into a cache folder for the tests that check
# cm3's files with Python tools (`tokenizers 0.22.2` reads tokenizer.json, `numpy 2.2.6` runs
# scripts/read_packed.py). Prints the folder to put on PYTHONPATH.
# Usage: setup-python-package.sh <package> <version>
set -euo pipefail
package="$1"
version="$2"
dir="${CM3_PY_DIR:-$HOME/.cache/cm3-py}/$package-$version"
mkdir -p "$(dirname "$dir")"
exec 9>"$dir.lock"
flock 9
if [ ! -d "$dir/$package" ]; then
  tmp="$dir.tmp.$$"
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps \
    --target "$tmp" "$package==$version" >&2
  rm -rf "$dir"
  mv "$tmp" "$dir"
fi
echo "$dir"
