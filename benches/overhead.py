#!/usr/bin/env python3
"""Measures what mapguard costs, in one run, and writes BENCHMARKS.md.

Run through benches/overhead.sh (it builds everything first). Sections:
  1. ns per map operation of a delete loop and an assign loop (benches/go/mapbench)
     under: no probe, the bare count-only uprobe at mapguard's instructions
     (`kubectl-mapguard bench-bare-probe`), `watch` (default; hot keys off; a
     small hot-key table), `trace -o json > /dev/null`, and the bpftrace
     one-liner a user would write; median of several runs, ratios to the bare
     uprobe. Then where the time goes: the kernel's own count of BPF program
     time per hit (kernel.bpf_stats_enabled) for each probe setup.
  2. trace throughput end to end, with the loss accounting checked.
  3. attach time on large real Go binaries (the toolchain's own), stripped and not.
  4. agent RSS during the throughput run and during a watch over 1M distinct keys.
  5. a short fuzz run (benches/fuzz.sh), when present.
Numbers are measurements of this machine on this run; nothing here is asserted.
"""

import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAPGUARD = os.path.join(ROOT, "target", "release", "kubectl-mapguard")
GO_DIR = os.environ.get("MAPGUARD_GO_DIR", "/opt/mapguard-go")
GO_VERSION = os.environ.get("BENCH_GO_VERSION", "1.25.5")
RUNS = int(os.environ.get("BENCH_RUNS", "5"))
N = int(os.environ.get("BENCH_OPS", "200000"))
WORK = os.environ.get("BENCH_WORK", "/tmp/mapguard-bench")

RESULT_RE = re.compile(r"mapbench: (\w+) (\d+) ops in (\d+) ns")


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def go_bin():
    return os.path.join(GO_DIR, GO_VERSION, "go", "bin", "go")


def go_env():
    return dict(os.environ, GOCACHE=os.path.join(WORK, "gocache"), GOPATH=os.path.join(WORK, "gopath"),
                GOFLAGS="-mod=mod", GOTOOLCHAIN="local", CGO_ENABLED="0")


def build_mapbench():
    os.makedirs(WORK, exist_ok=True)
    out = os.path.join(WORK, "mapbench")
    sh([go_bin(), "build", "-o", out, "."], cwd=os.path.join(ROOT, "benches", "go", "mapbench"), env=go_env())
    return out


# Large real Go binaries that may be on the machine (google-cloud-sdk ships
# anthoscli, ~127 MB); BENCH_LARGE_BINARIES (colon-separated) adds others.
LARGE_BINARIES = ["/usr/lib/google-cloud-sdk/bin/anthoscli"] + \
    [p for p in os.environ.get("BENCH_LARGE_BINARIES", "").split(":") if p]


def build_bigbin(mb=100):
    """A ~100 MB Go binary: benches/go/bigbin with a generated embedded asset."""
    src = os.path.join(WORK, "bigbin-src")
    shutil.rmtree(src, ignore_errors=True)
    shutil.copytree(os.path.join(ROOT, "benches", "go", "bigbin"), src)
    with open(os.path.join(src, "blob.bin"), "wb") as f:
        for _ in range(mb):
            f.write(os.urandom(1 << 20))
    out = os.path.join(WORK, "bigbin")
    sh([go_bin(), "build", "-o", out, "."], cwd=src, env=go_env())
    shutil.rmtree(src, ignore_errors=True)
    return out


def ns_per_op(stderr):
    m = RESULT_RE.search(stderr)
    if not m:
        raise RuntimeError("no mapbench result in output:\n" + stderr[-2000:])
    return int(m.group(3)) / int(m.group(2))


def mode_cmd(mode, loop, bench, n):
    target = [bench, loop, str(n)]
    fn = "runtime.mapassign_faststr" if loop == "assign" else "runtime.mapdelete_faststr"
    if mode == "no probe":
        cmd = target
    elif mode == "bare uprobe":
        cmd = [MAPGUARD, "bench-bare-probe", "--"] + target
    elif mode.startswith("mapguard watch"):
        cmd = [MAPGUARD, "watch", "-o", "json", "--interval", "60s"] + mode.split()[2:] + ["--"] + target
    elif mode == "mapguard trace -o json":
        cmd = [MAPGUARD, "trace", "-o", "json", "--"] + target
    elif mode == "bpftrace one-liner":
        prog = 'uprobe:%s:%s { @[str(reg("cx"), reg("di"))] = count(); }' % (bench, fn)
        cmd = ["bpftrace", "-e", prog, "-c", " ".join(target)]
    else:
        raise ValueError(mode)
    return cmd


def run_mode(mode, loop, bench):
    cmd = mode_cmd(mode, loop, bench, N)
    p = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                       preexec_fn=lambda: os.setpgrp())
    if p.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (cmd[:4], p.returncode, p.stderr[-1500:]))
    return ns_per_op(p.stderr)


# delete/assign: every key new (the worst case for the hot-key table);
# hotdelete: 1024 keys over and over (what a hot map looks like).
LOOPS = ("delete", "assign", "hotdelete")
WATCH_MODES = ["mapguard watch", "mapguard watch --hot-keys-size 0", "mapguard watch --hot-keys-size 1024"]
MODES = ["no probe", "bare uprobe"] + WATCH_MODES + ["mapguard trace -o json", "bpftrace one-liner"]
# The BPF programs whose time the kernel counts: mapguard's and the bare probe's.
PROGS = ("map_op_multi", "map_op", "count_hit")


def overhead(bench):
    have_bpftrace = shutil.which("bpftrace") is not None
    modes = [m for m in MODES if have_bpftrace or m != "bpftrace one-liner"]
    results = {}
    for loop in LOOPS:
        samples = {m: [] for m in modes}
        for r in range(RUNS):
            for m in modes:  # interleaved, so drift hits every mode alike
                samples[m].append(run_mode(m, loop, bench))
            print("  %s run %d/%d done" % (loop, r + 1, RUNS), file=sys.stderr)
        results[loop] = {m: statistics.median(v) for m, v in samples.items()}
        results[loop + "_samples"] = samples
    return modes, results


def prog_time(mode, loop, bench, n):
    """(run_cnt, run_time_ns) of the probe's BPF program over one run, from the
    kernel's own accounting, read while the agent lives (its program goes with it)."""
    p = subprocess.Popen(mode_cmd(mode, loop, bench, n), stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, preexec_fn=lambda: os.setpgrp())
    last = (0, 0)
    while p.poll() is None:
        out = subprocess.run(["bpftool", "prog", "show", "-j"], capture_output=True, text=True).stdout
        try:
            progs = json.loads(out or "[]")
        except ValueError:
            progs = []
        seen = [(q.get("run_cnt", 0), q.get("run_time_ns", 0)) for q in progs
                if q.get("name") in PROGS and q.get("run_cnt")]
        if seen:
            last = max(seen)
        time.sleep(0.1)
    return last


def where_time_goes(bench, modes):
    """ns of BPF program time per hit, per mode and loop; None without bpftool."""
    if not shutil.which("bpftool"):
        return None
    stats_file = "/proc/sys/kernel/bpf_stats_enabled"
    with open(stats_file) as f:
        before = f.read().strip()
    out = {}
    try:
        with open(stats_file, "w") as f:
            f.write("1")
        for loop in LOOPS:
            for mode in modes:
                if mode in ("no probe", "bpftrace one-liner"):
                    continue
                cnt, ns = prog_time(mode, loop, bench, 10 * N if loop == "hotdelete" else 5 * N)
                out[(mode, loop)] = ns / cnt if cnt else None
    finally:
        with open(stats_file, "w") as f:
            f.write(before)
    return out


class RssSampler:
    """Peak VmRSS of a process, sampled every 20 ms."""

    def __init__(self, pid):
        self.pid, self.peak, self.stop = pid, 0, False
        self.t = threading.Thread(target=self.loop, daemon=True)
        self.t.start()

    def loop(self):
        while not self.stop:
            try:
                with open("/proc/%d/status" % self.pid) as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            self.peak = max(self.peak, int(line.split()[1]))
            except OSError:
                return
            time.sleep(0.02)

    def done(self):
        self.stop = True
        self.t.join()
        return self.peak


def run_agent(args):
    p = subprocess.Popen([MAPGUARD] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rss = RssSampler(p.pid)
    out, err = p.communicate()
    peak = rss.done()
    if p.returncode != 0:
        raise RuntimeError("%s failed: %s" % (args[:3], err[-1500:]))
    lines = [json.loads(l) for l in out.splitlines() if l.startswith("{")]
    return lines, peak, err


def throughput(bench):
    lines, peak, _ = run_agent(["trace", "-o", "json", "--", bench, "churn", "3"])
    s = lines[-1]
    assert s["kind"] == "summary", s
    total = sum(s["ops"].values())
    events = sum(1 for l in lines if l["kind"] == "event")
    accounted = s["events_emitted"] + s["drops"] + s["sampled_out"] + s["rate_limited"] + s["filtered_out"]
    secs = s["duration_ms"] / 1000.0
    return {
        "kernel_ops": total,
        "events_received": events,
        "events_emitted": s["events_emitted"],
        "drops": s["drops"],
        "accounted": accounted,
        "exact": accounted == total and events == s["events_emitted"],
        "events_per_sec": s["events_emitted"] / secs,
        "ops_per_sec": total / secs,
        "rss_kib": peak,
    }


def watch_distinct(bench):
    lines, peak, _ = run_agent(["watch", "-o", "json", "--interval", "1s", "--", bench, "distinct", "1000000"])
    stats = [l for l in lines if l["kind"] == "stats"][-1]
    return {"rss_kib": peak, "hot_keys_evicted": stats["hot_keys_evicted"], "assigns": stats["ops"]["assign"]}


def attach_times():
    tool = os.path.join(GO_DIR, GO_VERSION, "go", "pkg", "tool", "linux_amd64")
    cases = []
    for name in ("compile", "link"):
        src = os.path.join(tool, name)
        if not os.path.exists(src):
            continue
        cases.append((name, src))
        stripped = os.path.join(WORK, name + "-stripped")
        subprocess.run(["objcopy", "--strip-all", src, stripped], check=True)
        cases.append((name + " (objcopy --strip-all)", stripped))
    gobin = go_bin()
    cases.append(("go", gobin))
    cases.append(("bigbin (100 MB embedded asset)", build_bigbin()))
    for path in LARGE_BINARIES:
        if os.path.exists(path):
            cases.append((os.path.basename(path) + " (found on this machine)", path))
    out = []
    for label, path in cases:
        times = []
        for _ in range(3):
            start = time.monotonic()
            p = subprocess.Popen([MAPGUARD, "trace", "-o", "json", "--", path, "version"],
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            for line in p.stdout:
                if '"kind":"attached"' in line:
                    times.append(time.monotonic() - start)
                    break
            p.stdout.read()
            p.wait()
        out.append((label, os.path.getsize(path), statistics.median(times) if times else None))
    return out


def fuzz():
    script = os.path.join(ROOT, "benches", "fuzz.sh")
    if not os.path.exists(script):
        return "benches/fuzz.sh not present"
    p = subprocess.run(["bash", script, os.environ.get("BENCH_FUZZ_SECONDS", "30")], capture_output=True, text=True)
    tail = "\n".join(p.stdout.strip().splitlines()[-6:])
    return ("exit %d\n" % p.returncode) + tail


def machine():
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    bpftrace = subprocess.run(["bpftrace", "--version"], capture_output=True, text=True).stdout.strip() if shutil.which("bpftrace") else "absent"
    gov = sh([go_bin(), "version"]).stdout.strip()
    return {"cpu": model, "cores": os.cpu_count(), "kernel": platform.release(), "go": gov,
            "bpftrace": bpftrace, "commit": commit, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def main():
    bench = build_mapbench()
    m = machine()
    print("overhead (%d ops per run, %d runs per mode)..." % (N, RUNS), file=sys.stderr)
    modes, res = overhead(bench)
    print("BPF program time per hit...", file=sys.stderr)
    prog = where_time_goes(bench, modes)
    print("throughput...", file=sys.stderr)
    thr = throughput(bench)
    print("watch over 1M distinct keys...", file=sys.stderr)
    wd = watch_distinct(bench)
    print("attach times...", file=sys.stderr)
    att = attach_times()
    print("fuzz...", file=sys.stderr)
    fz = fuzz()

    md = []
    md.append("# BENCHMARKS\n")
    md.append("Written by `benches/overhead.sh` in one run; every ratio compares numbers from that run. "
              "Medians of %d interleaved runs of %d operations each.\n" % (RUNS, N))
    md.append("Machine: %s, %d cores; kernel %s; %s; %s; mapguard %s; %s.\n"
              % (m["cpu"], m["cores"], m["kernel"], m["go"], m["bpftrace"], m["commit"], m["date"]))
    md.append("## Cost per map operation\n")
    md.append("String keys (`runtime.mapdelete_faststr` / `runtime.mapassign_faststr`), go %s. "
              "The bare uprobe counts hits and nothing else, at mapguard's own probe instructions: the "
              "physical limit of a uprobe here.\n" % GO_VERSION)
    md.append("`delete` and `assign` touch every key once (each is new to the hot-key table: its worst "
              "case); `hotdelete` cycles over 1024 keys, as a hot map does. `watch` keeps exact counts per "
              "(map type, caller, op) and, unless `--hot-keys-size 0`, per key in a 65,536-key table "
              "(`--hot-keys-size 1024`: a table small enough to stay in cache).\n")
    md.append("| mode | " + " | ".join("%s ns/op | × bare" % l for l in LOOPS) + " |")
    md.append("|---|" + "---:|---:|" * len(LOOPS))
    for mode in modes:
        cells = []
        for l in LOOPS:
            v, b = res[l][mode], res[l]["bare uprobe"]
            cells.append("%.0f | %.2f" % (v, v / b))
        md.append("| %s | %s |" % (mode, " | ".join(cells)))
    md.append("")
    md.append("Goal: `watch` at most 1.25× the bare uprobe:\n")
    for w in WATCH_MODES:
        worst = max(res[l][w] / res[l]["bare uprobe"] for l in LOOPS)
        md.append("- `%s`: %s (worst loop %.2f×)" % (w[len("mapguard "):], "met" if worst <= 1.25 else "MISSED", worst))
    md.append("")
    if "bpftrace one-liner" in modes:
        md.append("Goal: at least 25× cheaper than bpftrace. bpftrace one-liner ÷ mapguard watch: " + ", ".join(
            "%s %.1f×" % (l, res[l]["bpftrace one-liner"] / res[l]["mapguard watch"]) for l in LOOPS) +
            ". The ceiling, bpftrace ÷ the bare uprobe (what a probe doing nothing would reach): " + ", ".join(
            "%s %.1f×" % (l, res[l]["bpftrace one-liner"] / res[l]["bare uprobe"]) for l in LOOPS) + ".\n")
    if prog:
        md.append("### Where the time goes\n")
        md.append("BPF program time per hit, as the kernel counts it (`kernel.bpf_stats_enabled`; the "
                  "accounting itself adds a few ns to every row alike), next to the whole cost per operation "
                  "above. The uprobe itself (trap, lookup of the probe, return) is the bare uprobe's ns/op less "
                  "no probe's and less its program's time.\n")
        md.append("| mode | " + " | ".join("%s ns/hit" % l for l in LOOPS) + " |")
        md.append("|---|" + "---:|" * len(LOOPS))
        for mode in modes:
            if mode in ("no probe", "bpftrace one-liner"):
                continue
            md.append("| %s | %s |" % (mode, " | ".join(
                "%.0f" % prog[(mode, l)] if prog.get((mode, l)) else "n/a" for l in LOOPS)))
        md.append("| uprobe itself (derived) | %s |" % " | ".join(
            "%.0f" % (res[l]["bare uprobe"] - res[l]["no probe"] - (prog.get(("bare uprobe", l)) or 0))
            for l in LOOPS))
        md.append("")
    md.append("## trace throughput\n")
    md.append("`trace -o json > pipe` on `mapbench churn 3` (assign + delete as fast as the program can):\n")
    md.append("| kernel ops | events emitted | events received | drops | emitted+dropped+sampled+limited+filtered | exact | events/s | RSS |")
    md.append("|---:|---:|---:|---:|---:|---|---:|---:|")
    md.append("| %d | %d | %d | %d | %d | %s | %.0f | %.1f MiB |" % (
        thr["kernel_ops"], thr["events_emitted"], thr["events_received"], thr["drops"], thr["accounted"],
        "yes" if thr["exact"] else "NO", thr["events_per_sec"], thr["rss_kib"] / 1024.0))
    md.append("")
    md.append("## watch memory\n")
    md.append("`watch` over 1,000,000 distinct keys with the default 65,536-key hot-key table: peak RSS %.1f MiB, "
              "`hot_keys_evicted` %d (operations of keys the table turned away, and keys it pushed out: "
              "counted and shown), %d assigns counted.\n"
              % (wd["rss_kib"] / 1024.0, wd["hot_keys_evicted"], wd["assigns"]))
    md.append("## Attach time\n")
    md.append("From starting `kubectl-mapguard trace -o json -- BIN version` to its `attached` line (median of 3):\n")
    md.append("| binary | size | attach |")
    md.append("|---|---:|---:|")
    for label, size, t in att:
        md.append("| %s | %.1f MB | %s |" % (label, size / 1e6, "%.0f ms" % (t * 1000) if t else "n/a"))
    md.append("")
    big = [(size, t) for _, size, t in att if t and size >= 100e6]
    if big:
        worst = max(t for _, t in big)
        md.append("Goal: at most 300 ms for a 100 MB binary: %s (slowest binary of 100 MB or more: %.0f ms).\n"
                  % ("met" if worst <= 0.3 else "MISSED", worst * 1000))
    perf = subprocess.run(["perf", "stat", "-e", "instructions", "true"], capture_output=True, text=True)
    if "not supported" in perf.stderr or perf.returncode != 0:
        md.append("`perf stat -e instructions` is not supported on this machine (no PMU in the VM), so "
                  "there is no per-instruction breakdown; the kernel's BPF time per hit above stands in for it.\n")
    md.append("## Fuzzing (short run)\n")
    md.append("```\n%s\n```\n" % fz)
    with open(os.path.join(ROOT, "BENCHMARKS.md"), "w") as f:
        f.write("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
