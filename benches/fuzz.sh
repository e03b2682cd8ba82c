#!/usr/bin/env bash
# Fuzzes the two parsers of untrusted input with cargo-fuzz (libFuzzer):
#   gobin       kubectl_mapguard::gobin::GoBinary::from_bytes and every accessor
#   json_lines  kubectl_mapguard::protocol::Line::from_json, plus a to_json round trip
#
#   benches/fuzz.sh [SECONDS]     SECONDS per target, default 60
#
# Installs cargo-fuzz when missing, (re)creates the seed corpora under
# fuzz/corpus/ (gitignored; the coverage found by earlier runs is kept there),
# runs each target for SECONDS and prints one line per target. Exits non-zero
# when a target crashed (panic, overflow, timeout or memory blow-up); the
# input is then in fuzz/artifacts/<target>/: minimize it with
#   RUSTC_BOOTSTRAP=1 cargo fuzz tmin -s none <target> <artifact>
# and keep it in tests/fuzz_inputs/<target>/ (replayed by tests/fuzz_regressions.rs).
#
# cargo-fuzz needs nightly features; the stable toolchain is told to allow
# them with RUSTC_BOOTSTRAP=1. Meant for the benchmark script, not for CI.
#
# Seeds: tests/fuzz_inputs/<target>/ (tiny synthetic Go executables from
# fuzz/seeds/tiny_go_elf.py, garbled ELF headers, protocol lines), plus, when
# the tools are there:
#   - tests/go/gobinprobe built with Go 1.22.10 (plain) and 1.25.5 (-s -w) from
#     $MAPGUARD_GO_DIR (default /opt/mapguard-go); -max_len is set to the
#     largest of them,
#   - real JSON lines from `kubectl-mapguard trace -o json` and
#     `watch -o json` on the demo (needs root and BPF; $MAPGUARD_BIN, default
#     target/release/kubectl-mapguard, is not built here).
#
# Environment: FUZZ_TARGETS (default "gobin json_lines"), GOCACHE (default
# /tmp/gocache-f), MAPGUARD_GO_DIR, MAPGUARD_BIN, MAPGUARD_DEMO (a built demo).
set -uo pipefail

secs=${1:-60}
case $secs in '' | *[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;; esac
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root" || exit 2
export RUSTC_BOOTSTRAP=1
export PATH="$HOME/.cargo/bin:$PATH"
export GOCACHE=${GOCACHE:-/tmp/gocache-f} GOTOOLCHAIN=local GOFLAGS=-mod=mod
targets=${FUZZ_TARGETS:-gobin json_lines}
go_dir=${MAPGUARD_GO_DIR:-/opt/mapguard-go}
mapguard=${MAPGUARD_BIN:-$root/target/release/kubectl-mapguard}
logs=$root/fuzz/target/fuzz-logs
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$logs"

note() { echo "fuzz: $*" >&2; }

if ! cargo fuzz --version >/dev/null 2>&1; then
    note "installing cargo-fuzz"
    cargo install cargo-fuzz --locked >&2 || { note "cargo install cargo-fuzz failed"; exit 2; }
fi

# ---- seeds ---------------------------------------------------------------
seed_gobin() {
    local dir=fuzz/corpus/gobin
    mkdir -p "$dir"
    cp tests/fuzz_inputs/gobin/* "$dir"/
    python3 fuzz/seeds/tiny_go_elf.py "$dir" || note "tiny_go_elf.py failed; committed tiny seeds only"
    local spec ver flags out go
    for spec in "1.22.10:" "1.25.5:-s -w"; do
        ver=${spec%%:*}
        flags=${spec#*:}
        go=$go_dir/$ver/go/bin/go
        out=$dir/real-gobinprobe-go$ver${flags:+-stripped}
        [ -s "$out" ] && continue
        if [ ! -x "$go" ]; then
            note "no Go $ver at $go: no real-binary seed for it"
            continue
        fi
        (cd tests/go/gobinprobe && "$go" build -trimpath -ldflags="$flags" -o "$work/probe" .) >&2 &&
            mv "$work/probe" "$out" || note "building gobinprobe with Go $ver failed"
    done
}

find_go() {
    local g
    for g in "$go_dir"/*/go/bin/go; do [ -x "$g" ] && { echo "$g"; return; }; done
    command -v go
}

# Up to 30 lines of each kind from a JSON-lines file, one file per line.
split_lines() {
    awk -v dir="$2" -v tag="$3" '
        match($0, /"kind":"[a-z_]+"/) {
            k = substr($0, RSTART + 8, RLENGTH - 9)
            if (++n[k] <= 30) { f = dir "/real-" tag "-" k "-" n[k]; printf "%s", $0 > f; close(f) }
        }' "$1"
}

seed_json_lines() {
    local dir=fuzz/corpus/json_lines demo=${MAPGUARD_DEMO:-/tmp/mapguard-demo} go
    mkdir -p "$dir"
    cp tests/fuzz_inputs/json_lines/* "$dir"/
    if ls "$dir"/real-trace-* >/dev/null 2>&1; then
        return # real lines from an earlier run are still there
    fi
    if [ ! -x "$mapguard" ]; then
        note "no $mapguard: seeding json_lines with tests/fuzz_inputs only"
        return
    fi
    if [ ! -x "$demo" ]; then
        demo=$work/demo
        go=$(find_go)
        if [ -z "$go" ] || ! (cd examples/demo && "$go" build -o "$demo" .) >&2; then
            note "cannot build examples/demo: seeding json_lines with tests/fuzz_inputs only"
            return
        fi
    fi
    timeout 60 "$mapguard" trace -o json -- "$demo" 1s >"$work/trace.jsonl" 2>"$work/trace.err" ||
        note "trace failed (needs root and BPF): $(tail -1 "$work/trace.err")"
    timeout 60 "$mapguard" watch -o json --interval 500ms -- "$demo" 1s >"$work/watch.jsonl" 2>"$work/watch.err" ||
        note "watch failed (needs root and BPF): $(tail -1 "$work/watch.err")"
    split_lines "$work/trace.jsonl" "$dir" trace
    split_lines "$work/watch.jsonl" "$dir" watch
}

# ---- run -----------------------------------------------------------------
note "building the fuzz targets"
if ! cargo fuzz build -s none >"$logs/build.log" 2>&1; then
    tail -30 "$logs/build.log" >&2
    note "cargo fuzz build failed (log: $logs/build.log)"
    exit 2
fi

status=0
for t in $targets; do
    case $t in
    gobin)
        seed_gobin
        max_len=$(find fuzz/corpus/gobin -type f -printf '%s\n' | sort -n | tail -1)
        [ "${max_len:-0}" -ge 65536 ] || max_len=65536
        # len_control=0: mutate the large seeds whole from the start instead
        # of growing the mutation length from a few bytes.
        extra=(-max_len="$max_len" -len_control=0 -timeout=10)
        ;;
    json_lines)
        seed_json_lines
        extra=(-max_len=16384 -timeout=5)
        ;;
    *) note "unknown target $t"; exit 2 ;;
    esac
    # Mutants of the real binaries are megabytes each and libFuzzer holds the
    # whole corpus in memory: they are not kept from one run to the next
    # (the real seeds are), and a corpus still large is merged down to what
    # adds coverage.
    find "fuzz/corpus/$t" -type f -size +1M ! -name 'real-*' -delete
    if [ "$(du -sm "fuzz/corpus/$t" | cut -f1)" -gt 256 ]; then
        note "minimizing fuzz/corpus/$t ($(du -sh "fuzz/corpus/$t" | cut -f1))"
        cargo fuzz cmin -s none "$t" "fuzz/corpus/$t" -- "${extra[@]}" >"$logs/$t.cmin.log" 2>&1 ||
            note "cargo fuzz cmin failed (log: $logs/$t.cmin.log)"
    fi
    mkdir -p "fuzz/artifacts/$t"
    before=$(find "fuzz/artifacts/$t" -type f | wc -l)
    log=$logs/$t.log
    cargo fuzz run -s none "$t" "fuzz/corpus/$t" -- \
        -max_total_time="$secs" -dict="fuzz/$t.dict" -print_final_stats=1 \
        -rss_limit_mb=2048 "${extra[@]}" >"$log" 2>&1
    rc=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    corpus=$(find "fuzz/corpus/$t" -type f | wc -l)
    after=$(find "fuzz/artifacts/$t" -type f | wc -l)
    if [ "$rc" -ne 0 ] || [ "$after" -gt "$before" ]; then
        artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
        echo "fuzz $t: ${runs:-?} execs in ${secs}s (${rate:-?}/s), corpus $corpus, crashes found: yes (${artifact:-exit $rc}; log $log)"
        status=1
    else
        echo "fuzz $t: ${runs:-?} execs in ${secs}s (${rate:-?}/s), corpus $corpus, crashes found: no"
    fi
done
exit $status
