#!/usr/bin/env bash
# Checks maptruth's own line bookkeeping against the compiler: every (func, line) maptruth
# writes into its truth file must be the file:line `go tool objdump` shows for a CALL to a
# runtime map function (mapassign*, mapdelete*, mapclear) in that function, and vice versa.
# Not part of `cargo test` (the e2e tests compare the tool with the truth file; this script
# checks the truth file itself, for whoever edits main.go).
#
#   tests/go/maptruth/check_lines.sh [GO_DIR]    (default /opt/mapguard-go)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
godir="${1:-${MAPGUARD_GO_DIR:-/opt/mapguard-go}}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export GOCACHE="$work/cache" GOPATH="$work/gopath" GOFLAGS=-mod=mod GOTOOLCHAIN=local GOPROXY=off CGO_ENABLED=0
status=0
for ver in 1.21.13 1.22.10 1.23.9 1.24.11 1.24.11:noswissmap 1.25.5 1.26.6 1.27.3; do
  exp=""
  case "$ver" in *:*) exp="${ver#*:}"; ver="${ver%%:*}";; esac
  go="$godir/$ver/go/bin/go"
  if [ ! -x "$go" ]; then echo "skip $ver: no $go"; continue; fi
  bin="$work/maptruth-$ver$exp"
  (cd "$here" && GOEXPERIMENT="$exp" "$go" build -o "$bin" .)
  "$bin" "$work/truth.json"
  # func line  (from the truth file)
  sed -E 's/.*"func":"([^"]+)","line":([0-9]+).*/\1 \2/' "$work/truth.json" | sort -u > "$work/want"
  # func line  (from the disassembly: CALLs of runtime.map{assign,delete,clear}* inside main.*)
  "$go" tool objdump -s '^main\.' "$bin" | awk '
    /^TEXT / { fn = $2; sub(/\(SB\)$/, "", fn); next }
    /CALL runtime\.map(assign|delete|clear)/ { split($1, a, ":"); print fn, a[2] }' | sort -u > "$work/got"
  if diff -u "$work/got" "$work/want" > "$work/diff"; then
    echo "ok   go$ver${exp:+ GOEXPERIMENT=$exp}: $(wc -l < "$work/want") (func, line) pairs, $(wc -l < "$work/truth.json") ops"
  else
    echo "FAIL go$ver${exp:+ GOEXPERIMENT=$exp}: objdump (-) vs truth file (+):"; cat "$work/diff"; status=1
  fi
done
exit $status
