#!/usr/bin/env bash
# Measures mapguard's cost against no probe, a bare uprobe and bpftrace, in one
# run, and writes BENCHMARKS.md. As root, after .ci/setup:
#   bash benches/overhead.sh
# BENCH_RUNS (default 5), BENCH_OPS (default 200000), BENCH_GO_VERSION (1.25.5),
# BENCH_FUZZ_SECONDS (default 30 per fuzz target), BENCH_SERVICE_SECONDS (wrk
# time per run, default 10), BENCH_BOUNDED_SECONDS (default 5) tune it. The
# real-service section needs wrk (apt-get install -y wrk).
# BENCH_ONLY=service,bounded (sections: cost, throughput, memory, attach, fuzz,
# service, bounded) runs only those and writes $BENCH_OUT (default
# /tmp/mapguard-bench/BENCHMARKS.partial.md) instead of BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
# The real-service section loads its server with wrk.
command -v wrk >/dev/null || apt-get install -y -qq wrk >&2 || true
cargo build --release --bin kubectl-mapguard >&2
# bpftrace keeps its maps in locked memory.
ulimit -l unlimited 2>/dev/null || true
exec python3 benches/overhead.py
