# What bench/learn.sh and bench/sft.sh share; sourced, not run. Uses the caller's OUT and CM3.

# bench_out NAME MARKER: empty OUT for a new run (refusing a non-empty folder that lacks MARKER,
# i.e. that this benchmark did not write), the logs/ eval/ bin/ folders, and a snapshot of CM3
# inside it, so that a rebuild during the run (cargo replaces the file) cannot mix two versions
# of cm3 in one measurement. Sets OUT (absolute), CM3_SOURCE and CM3 (the snapshot).
bench_out() {
  local name=$1 marker=$2
  if [ -e "$OUT" ] && [ -n "$(ls -A "$OUT")" ]; then
    [ -f "$OUT/$marker" ] || { echo "$name: $OUT exists and is not a $name output; refusing to overwrite" >&2; exit 2; }
    rm -rf "$OUT"
  fi
  mkdir -p "$OUT/logs" "$OUT/eval" "$OUT/bin"
  touch "$OUT/$marker"
  OUT="$(cd "$OUT" && pwd)"
  ln -f "$CM3" "$OUT/bin/cm3" 2>/dev/null || cp "$CM3" "$OUT/bin/cm3"
  CM3_SOURCE="$CM3"
  CM3="$OUT/bin/cm3"
  : > "$OUT/timing.tsv"
  : > "$OUT/failures.tsv"
}

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
# try LOG CMD...: run a command, output to logs/LOG; a failure is recorded and the script goes on.
try() {
  local log="$OUT/logs/$1"; shift
  mkdir -p "$(dirname "$log")"
  if "$@" </dev/null >"$log.out" 2>"$log.err"; then return 0; fi
  printf '%s\t%s\n' "$*" "$log.err" >> "$OUT/failures.tsv"
  echo "  FAILED: $(tail -n 3 "$log.err" | tr '\n' ' ')" >&2
  return 1
}
# stage NAME START: record and print the seconds since START.
stage() { printf '%s\t%s\n' "$1" "$(since "$2")" >> "$OUT/timing.tsv"; echo "   $1: $(since "$2") s"; }
