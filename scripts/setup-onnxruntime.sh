#!/usr/bin/env bash
# Installs ONNX Runtime for `cm3 embed`: the onnxruntime wheel from PyPI, unpacked into a cache
# folder that cm3 finds by itself (or point ORT_DYLIB_PATH at any libonnxruntime.so).
set -euo pipefail
version=1.31.1
dir="${CM3_ORT_DIR:-$HOME/.cache/cm3-ort/onnxruntime-$version}"
mkdir -p "$(dirname "$dir")"
# One installer at a time (tests may call this concurrently on a fresh machine).
exec 9>"$dir.lock"
flock 9
if compgen -G "$dir/onnxruntime/capi/libonnxruntime.so*" >/dev/null; then
  echo "ONNX Runtime $version is in $dir"
  exit 0
fi
tmp="$dir.tmp.$$"
trap 'rm -rf "$tmp"' EXIT
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps --target "$tmp" "onnxruntime==$version"
rm -rf "$dir"
mv "$tmp" "$dir"
echo "ONNX Runtime $version installed in $dir"
