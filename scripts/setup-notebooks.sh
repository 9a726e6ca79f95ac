#!/usr/bin/env bash
# A Python environment that runs the notebooks headless: Jupyter's nbconvert and kernel, numpy,
# pyarrow (reads cm3's Parquet shards) and matplotlib, pinned. Created once in
# ${CM3_NOTEBOOK_VENV:-~/.cache/cm3-notebooks}; prints the venv's bin directory.
set -euo pipefail
venv="${CM3_NOTEBOOK_VENV:-$HOME/.cache/cm3-notebooks}"
mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
flock 9
if [ ! -x "$venv/bin/jupyter-nbconvert" ]; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    nbconvert==7.16.6 ipykernel==6.29.5 numpy==2.2.6 pyarrow==21.0.0 matplotlib==3.10.3 >&2
fi
echo "$venv/bin"
