#!/usr/bin/env python3
"""Measures what mapguard costs, in one run, and writes BENCHMARKS.md.

Run through benches/overhead.sh (it builds everything first). Sections:
  1. ns per map operation of a delete loop and an assign loop (benches/go/mapbench)
     under: no probe, the bare count-only uprobe at mapguard's instructions
     (`kubectl-mapguard bench-bare-probe`), `watch` (default; hot keys off; a
     small hot-key table), `trace -o json > /dev/null`, and the bpftrace
     one-liner a user would write; median of several runs, ratios to the bare
     uprobe. Then where the time goes: the kernel's own count of BPF program
     time per hit (kernel.bpf_stats_enabled) for each probe setup, and the
     whole cost split into the loop's own code, trap, program and user reads
     by perf's cpu-clock samples of the loop's thread.
  2. trace throughput end to end, with the loss accounting checked.
  3. attach time on large real Go binaries (the toolchain's own), stripped and not.
  4. agent RSS during the throughput run and during a watch over 1M distinct keys.
  5. a short fuzz run (benches/fuzz.sh), when present.
  6. a real service (benches/go/httpsvc under wrk): requests/s, p50 and p99
     latency under no probe, `watch`, `watch --hot-keys-size 0`,
     `watch --max-overhead 1` and bpftrace, ratios to no probe; the tool's
     counts of the service's maps against the service's own.
  7. bounded-overhead mode (`watch --max-overhead`) on `mapbench churn` and
     `mapbench deletefor` (string-key deletes only): slowdown, and the
     estimated counts against the program's own.
Numbers are measurements of this machine on this run; nothing here is asserted.

BENCH_ONLY=service,bounded (any of cost, throughput, memory, attach, fuzz, service,
bounded; default all) runs only those sections and writes
BENCH_OUT (default $BENCH_WORK/BENCHMARKS.partial.md) instead of BENCHMARKS.md,
so a partial run never stands in for the whole one.
"""

import json
import os
import platform
import re
import shutil
import signal
import socket
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
SETUP_RE = re.compile(r"mapbench: setup (\d+) assigns")

SECTIONS = ("cost", "throughput", "memory", "attach", "fuzz", "service", "bounded")
ONLY = [x for x in os.environ.get("BENCH_ONLY", "").replace(" ", "").split(",") if x]
if set(ONLY) - set(SECTIONS):
    sys.exit("BENCH_ONLY: unknown section(s) %s; the sections are %s"
             % (",".join(sorted(set(ONLY) - set(SECTIONS))), ",".join(SECTIONS)))
RUN = set(ONLY or SECTIONS)
OUT = os.path.join(ROOT, "BENCHMARKS.md") if not ONLY else \
    os.environ.get("BENCH_OUT", os.path.join(WORK, "BENCHMARKS.partial.md"))


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
    elif mode == READS_FLOOR:
        cmd = [MAPGUARD, "bench-bare-probe", "--user-reads", "3", "--"] + target
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
# The bare probe reading three words of the process's stack per hit: watch
# reads the process's memory three times an operation (map header, return
# address, key), and no probe that does can cost less than this.
READS_FLOOR = "bare uprobe + 3 user reads"
MODES = ["no probe", "bare uprobe", READS_FLOOR] + WATCH_MODES + ["mapguard trace -o json", "bpftrace one-liner"]
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


# Where a hit's time goes, from the CPU's point of view: perf's cpu-clock
# samples of the loop's own thread (comm mapbench), each put in one part by
# its call chain. The modes that tell the parts apart: the bare uprobe (trap
# and a trivial program), the same with the three reads, and watch.
SPLIT_MODES = ("bare uprobe", READS_FLOOR, "mapguard watch")
SPLIT_PARTS = ("the loop's own code", "trap", "program", "user reads")
READ_FRAMES = {"bpf_probe_read_user", "copy_from_user_nofault", "bpf_copy_from_user"}


def probe_return_offsets(bench):
    """File offsets of the instructions mapguard's probes return to (each
    probed `push rbp` is one byte): a timer tick that falls while the trap has
    interrupts off is taken there, on the way back, and is the trap's."""
    out = subprocess.run([MAPGUARD, "check", "-o", "json", bench], capture_output=True, text=True).stdout
    return {int(p["file_offset"], 16) + 1 for p in json.loads(out)["probes"]}


def classify_samples(script, skid):
    """Counts of perf script samples (`-F ip,sym`, blank-line separated) by part."""
    counts = dict.fromkeys(SPLIT_PARTS, 0)
    for block in script.split("\n\n"):
        frames = [l.split(None, 1) for l in block.strip().splitlines()]
        if not frames:
            continue
        ip = int(frames[0][0], 16)
        syms = {f[1] for f in frames if len(f) > 1}
        if ip < 1 << 63:
            part = "trap" if ip in skid else "the loop's own code"
        elif syms & READ_FRAMES:
            part = "user reads"
        elif "uprobe_prog_run" in syms or any(x.startswith("bpf_prog_") for x in syms):
            part = "program"
        else:
            part = "trap"
        counts[part] += 1
    return counts


def time_split(bench, res):
    """ns per operation by part, per (mode, loop); None without perf."""
    if not shutil.which("perf"):
        return None
    skid = probe_return_offsets(bench)
    data = os.path.join(WORK, "split.perf")
    out = {}
    for loop in LOOPS:
        for mode in SPLIT_MODES:
            cmd = mode_cmd(mode, loop, bench, 5 * N)
            p = subprocess.run(["perf", "record", "-q", "-a", "-g", "-e", "cpu-clock", "-c", "50000",
                                "-o", data, "--"] + cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True)
            if p.returncode != 0:
                print("perf record failed: %s" % p.stderr[-500:], file=sys.stderr)
                return None
            script = subprocess.run(["perf", "script", "-i", data, "--comm", "mapbench", "-F", "ip,sym"],
                                    capture_output=True, text=True).stdout
            counts = classify_samples(script, skid)
            total = sum(counts.values())
            if total:
                out[(mode, loop)] = {k: res[loop][mode] * v / total for k, v in counts.items()}
    os.unlink(data)
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


# ---- 6. a real service --------------------------------------------------

SVC_SECONDS = int(os.environ.get("BENCH_SERVICE_SECONDS", "10"))
SVC_THREADS, SVC_CONNS = 2, 32
SVC_PORT = int(os.environ.get("BENCH_SERVICE_PORT", "18080"))
SVC_LUA = os.path.join(ROOT, "benches", "go", "httpsvc", "load.lua")
MAX_OVERHEAD_MODE = "mapguard watch --max-overhead 1"
SVC_MODES = ["no probe", "mapguard watch", "mapguard watch --hot-keys-size 0", MAX_OVERHEAD_MODE,
             "bpftrace one-liner"]
# The service's maps, as mapguard names their types (httpsvc reports the same).
SVC_MAP_TYPES = ("map[string]*main.session", "map[string]main.cacheEntry")
NOT_AVAILABLE = "not available in this build"
_max_overhead = []


def max_overhead_available():
    """Whether this build's `watch` takes --max-overhead (it is asked, not assumed)."""
    if not _max_overhead:
        h = subprocess.run([MAPGUARD, "watch", "--help"], capture_output=True, text=True)
        _max_overhead.append("--max-overhead" in h.stdout)
    return _max_overhead[0]


def mode_available(mode):
    return "--max-overhead" not in mode or max_overhead_available()


def build_go(name):
    out = os.path.join(WORK, name)
    sh([go_bin(), "build", "-o", out, "."], cwd=os.path.join(ROOT, "benches", "go", name), env=go_env())
    return out


def pinned(cpu, cmd):
    """The service gets CPU 0 and wrk CPU 1 (on 2+ cores), so load and service do not
    take each other's time; the probe's agent is not pinned."""
    if os.cpu_count() >= 2 and shutil.which("taskset"):
        return ["taskset", "-c", str(cpu)] + cmd
    return cmd


def wait_port(port, proc, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError("httpsvc exited with %d before it listened" % proc.returncode)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError("httpsvc did not listen on port %d" % port)


class Probe:
    """A probe on a running pid, started and read until it is live; stdout and
    stderr are drained in the background so the pipes never fill."""

    def __init__(self, cmd, ready):
        self.cmd = cmd
        self.p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  preexec_fn=lambda: os.setpgrp())
        self.out, self.err = [], []
        t = threading.Thread(target=self.drain, args=(self.p.stderr, self.err), daemon=True)
        t.start()
        for line in self.p.stdout:
            self.out.append(line)
            if ready(line):
                break
        else:
            self.p.wait()
            raise RuntimeError("%s ended before it was live (%d): %s"
                               % (" ".join(cmd[:6]), self.p.returncode, "".join(self.err)[-1500:]))
        self.t = threading.Thread(target=self.drain, args=(self.p.stdout, self.out), daemon=True)
        self.t.start()

    @staticmethod
    def drain(f, into):
        for line in f:
            into.append(line)

    def finish(self, sig=None, timeout=60):
        if sig is not None:
            self.p.send_signal(sig)
        self.p.wait(timeout=timeout)
        self.t.join()
        return self.p.returncode


def json_lines(text_lines):
    out = []
    for l in text_lines:
        if l.startswith("{"):
            try:
                out.append(json.loads(l))
            except ValueError:
                pass
    return out


def kind(line):
    # The JSON lines contract says "kind"; "type" is taken too.
    return line.get("kind", line.get("type"))


def last_of(lines, k):
    found = [l for l in lines if kind(l) == k]
    return found[-1] if found else None


LAT_RE = re.compile(r"^\s*(50|99)%\s+([\d.]+)(us|ms|s)\s*$", re.M)
RPS_RE = re.compile(r"^Requests/sec:\s+([\d.]+)", re.M)
UNIT = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def parse_wrk(out):
    rps = RPS_RE.search(out)
    lat = {q: float(v) * UNIT[u] for q, v, u in LAT_RE.findall(out)}
    if not rps or "50" not in lat or "99" not in lat:
        raise RuntimeError("no wrk result in output:\n" + out[-2000:])
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: (.*)", out)
    done = re.search(r"^\s*(\d+) requests in", out, re.M)
    return {"rps": float(rps.group(1)), "p50_ms": lat["50"], "p99_ms": lat["99"],
            "requests": int(done.group(1)) if done else 0,
            "non2xx": int(bad.group(1)) if bad else 0, "socket_errors": sock.group(1) if sock else None}


def svc_probe(mode, svc, pid):
    if mode == "bpftrace one-liner":
        prog = ('uprobe:%s:runtime.mapassign_faststr,uprobe:%s:runtime.mapdelete_faststr '
                '{ @[str(reg("cx"), reg("di"))] = count(); }' % (svc, svc))
        return Probe(["bpftrace", "-p", str(pid), "-e", prog], lambda l: l.startswith("Attaching"))
    extra = mode.split()[2:]
    cmd = [MAPGUARD, "watch"] + extra + ["-o", "json", "--pid", str(pid)]
    return Probe(cmd, lambda l: '"kind":"attached"' in l or '"type":"attached"' in l)


def svc_run(mode, svc):
    counts_file = os.path.join(WORK, "httpsvc-counts.json")
    if os.path.exists(counts_file):
        os.remove(counts_file)
    server = subprocess.Popen(pinned(0, [svc, "-port", str(SVC_PORT), "-counts", counts_file]),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              preexec_fn=lambda: os.setpgrp())
    probe = None
    try:
        wait_port(SVC_PORT, server)
        if mode != "no probe":
            probe = svc_probe(mode, svc, server.pid)
        wrk = sh(pinned(1, ["wrk", "-t%d" % SVC_THREADS, "-c%d" % SVC_CONNS, "-d%ds" % SVC_SECONDS,
                            "--latency", "-s", SVC_LUA, "http://127.0.0.1:%d/" % SVC_PORT]))
        res = parse_wrk(wrk.stdout)
        server.send_signal(signal.SIGTERM)
        if server.wait(timeout=30) != 0:
            raise RuntimeError("httpsvc exited with %d" % server.returncode)
        with open(counts_file) as f:
            res["truth"] = json.load(f)
        if probe is not None:
            # watch ends by itself once its pid is gone; bpftrace is told to.
            rc = probe.finish(signal.SIGINT if mode == "bpftrace one-liner" else None)
            if rc != 0:
                raise RuntimeError("%s exited with %d: %s" % (mode, rc, "".join(probe.err)[-1500:]))
            if mode != "bpftrace one-liner":
                lines = json_lines(probe.out)
                res["stats"], res["summary"] = last_of(lines, "stats"), last_of(lines, "summary")
                if res["summary"] is None:
                    raise RuntimeError("%s printed no summary: %s" % (mode, "".join(probe.err)[-1500:]))
            probe = None
        return res
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        if probe is not None and probe.p.poll() is None:
            probe.p.kill()
            probe.p.wait()


def scaled_rows(stats, summary, types):
    """The tool's counts of maps of these types, per op, from the last stats rows.
    Under --max-overhead a row's count is its estimate when it says so (it then
    has `count_observed`); rows that hold only what was observed are scaled by the
    summary's estimate over its observed count of the same op."""
    rows = (stats or {}).get("rows", [])
    own = {op: sum(r["count"] for r in rows if r["op"] == op and r.get("map_type") in types)
           for op in ("delete", "assign")}
    if not summary.get("estimated") or any("count_observed" in r for r in rows):
        return own
    observed = summary.get("ops_observed") or {}
    out = {}
    for op, n in own.items():
        all_rows = sum(r["count"] for r in rows if r["op"] == op)
        est, obs = summary["ops"].get(op, 0), observed.get(op, 0)
        if obs and abs(all_rows - obs) < abs(all_rows - est):
            out[op] = n * est / obs
        else:
            out[op] = n
    return out


def rows_interval(stats, summary, types, op, count):
    """The 95% interval of `count`, the tool's count of these map types' `op`,
    from its rows' intervals (variances added, as the tool adds estimates);
    None when exact, hi None when a row is open above. Rows that hold only
    what was observed get the summary's interval scaled to them."""
    if not summary.get("estimated"):
        return None
    rows = [r for r in (stats or {}).get("rows", []) if r["op"] == op and r.get("map_type") in types]
    if any("count_interval" in r for r in rows):
        var, floor = 0.0, 0
        for r in rows:
            lo, hi = r.get("count_interval") or (r["count"], r["count"])
            if hi is None:
                return (sum(r.get("count_observed", r["count"]) for r in rows), None)
            var += ((hi - r["count"]) / 1.96) ** 2
            floor += r.get("count_observed", r["count"])
        sd = var ** 0.5
        return (max(floor, round(count - 1.96 * sd)), round(count + 1.96 * sd))
    iv = (summary.get("ops_interval") or {}).get(op)
    est = summary["ops"].get(op, 0)
    if not iv or not est:
        return None
    return (round(iv[0] * count / est), None if iv[1] is None else round(iv[1] * count / est))


def interval_text(iv):
    return "n/a (exact)" if iv is None else "%d–%s" % (iv[0], "∞" if iv[1] is None else iv[1])


def in_interval(iv, truth):
    """[lo, hi] with hi null (nothing bounds it yet) as unbounded above."""
    return iv[0] <= truth and (iv[1] is None or truth <= iv[1])


def service():
    svc = build_go("httpsvc")
    modes = [m for m in SVC_MODES if shutil.which("bpftrace") or m != "bpftrace one-liner"]
    runs = {m: [] for m in modes}
    for r in range(RUNS):
        for m in modes:  # interleaved, a fresh service each run
            if mode_available(m):
                runs[m].append(svc_run(m, svc))
                time.sleep(0.5)
        print("  service run %d/%d done" % (r + 1, RUNS), file=sys.stderr)
    paired = service_paired(svc) if mode_available(MAX_OVERHEAD_MODE) else []
    return modes, runs, paired


PAIRED_SVC_SECONDS = 8


def service_paired(svc):
    """`--max-overhead 1` against its neighbours on one service: wrk runs of
    PAIRED_SVC_SECONDS, untraced and traced by turns (the probe attached and
    calibrated before its run starts, stopped after it), each traced run's
    req/s and p99 against the mean of the untraced runs either side. Fresh
    services differ from run to run by more than the 2% this is about."""
    counts_file = os.path.join(WORK, "httpsvc-paired-counts.json")
    server = subprocess.Popen(pinned(0, [svc, "-port", str(SVC_PORT), "-counts", counts_file]),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              preexec_fn=lambda: os.setpgrp())

    def load(seconds):
        cpu0 = task_cpu_ns(server.pid)
        r = parse_wrk(sh(pinned(1, ["wrk", "-t%d" % SVC_THREADS, "-c%d" % SVC_CONNS, "-d%ds" % seconds,
                                    "--latency", "-s", SVC_LUA,
                                    "http://127.0.0.1:%d/" % SVC_PORT])).stdout)
        # The service's own CPU per request: steal time and the agent's
        # CPU are not in it, so it shows what the probes cost each request
        # under the VM's noise in req/s.
        r["cpu_per_req"] = (task_cpu_ns(server.pid) - cpu0) / max(r["requests"], 1)
        return r
    pairs = []
    try:
        wait_port(SVC_PORT, server)
        load(2)  # warm: sessions and cache filled
        before = load(PAIRED_SVC_SECONDS)
        for _ in range(2 * RUNS + 1):
            probe = svc_probe(MAX_OVERHEAD_MODE, svc, server.pid)
            try:
                time.sleep(1.5)  # calibrated and windowing
                cpu0, woke0 = agent_use(probe.p.pid)
                on = load(PAIRED_SVC_SECONDS)
                cpu1, woke1 = agent_use(probe.p.pid)
            finally:
                rc = probe.finish(signal.SIGINT)
            if rc not in (0, 130):
                raise RuntimeError("%s exited with %d: %s" % (MAX_OVERHEAD_MODE, rc, "".join(probe.err)[-1500:]))
            after = load(PAIRED_SVC_SECONDS)
            pair = {k: on[k] / ((before[k] + after[k]) / 2) for k in ("rps", "p50_ms", "p99_ms", "cpu_per_req")}
            # Two untraced runs side by side: the noise the ratios above sit in.
            pair["untraced"] = {k: after[k] / before[k] for k in ("rps", "p50_ms", "p99_ms", "cpu_per_req")}
            pair["agent_pct"] = 100.0 * (cpu1 - cpu0) / 1e9 / PAIRED_SVC_SECONDS
            pair["agent_wakeups"] = (woke1 - woke0) / PAIRED_SVC_SECONDS
            pairs.append(pair)
            before = after
    finally:
        server.kill()
        server.wait()
    return pairs


def task_cpu_ns(pid):
    """CPU ns a process has run, all its threads (schedstat: exact, and
    without the time the hypervisor stole)."""
    total = 0
    for task in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/schedstat" % (pid, task)) as f:
                total += int(f.read().split()[0])
        except FileNotFoundError:
            pass  # a thread that just ended
    return total


def agent_use(pid):
    """The agent's CPU ns so far and how often it has slept and woken: what
    it costs the machine beside what its probes cost the target."""
    cpu = task_cpu_ns(pid)
    woke = 0
    for task in os.listdir("/proc/%d/task" % pid):
        with open("/proc/%d/task/%s/status" % (pid, task)) as f:
            woke += sum(int(l.split()[1]) for l in f if l.startswith("voluntary_ctxt_switches"))
    return cpu, woke


def fraction_text(known, n):
    """The median of the observed fractions that were known, and how many were not."""
    if n == 0:
        return "1 (exact)"
    if not known:
        return "unknown"
    return "%.4f%s" % (statistics.median(known), "" if len(known) == n else " (%d unknown)" % (n - len(known)))


def pct_err(est, truth):
    return 100.0 * (est - truth) / truth if truth else (0.0 if est == 0 else float("inf"))


def md_service(modes, runs, paired):
    md = ["## Real service\n"]
    md.append("`benches/go/httpsvc` (net/http; a session store `map[string]*main.session`: login assigns, "
              "get reads and updates, logout deletes; a cache `map[string]main.cacheEntry` with expiry: put "
              "assigns and evicts, fetch deletes expired entries; each behind a mutex) under "
              "`wrk -t%d -c%d -d%ds --latency` with `benches/go/httpsvc/load.lua` (login, 3 reads, logout, "
              "put, 2 fetches per session). %s A fresh service per run; the probe attaches to it by `--pid` "
              "before the load starts. Medians of %d interleaved runs.\n"
              % (SVC_THREADS, SVC_CONNS, SVC_SECONDS,
                 "The service is pinned to CPU 0 (so GOMAXPROCS is 1) and wrk to CPU 1; the probe's agent is "
                 "not pinned." if os.cpu_count() >= 2 else "Nothing is pinned (one core).", RUNS))
    md.append("| mode | req/s | × no probe | p50 | × no probe | p99 | × no probe |")
    md.append("|---|---:|---:|---:|---:|---:|---:|")
    med = {}
    for m in modes:
        if not runs[m]:
            continue
        med[m] = {k: statistics.median(r[k] for r in runs[m]) for k in ("rps", "p50_ms", "p99_ms")}
    base = med.get("no probe")
    for m in modes:
        label = m[len("mapguard "):] if m.startswith("mapguard ") else m
        if m not in med:
            md.append("| `%s` | %s | | | | | |" % (label, NOT_AVAILABLE))
            continue
        v = med[m]
        md.append("| `%s` | %.0f | %.3f | %.2f ms | %.2f | %.2f ms | %.2f |" % (
            label, v["rps"], v["rps"] / base["rps"], v["p50_ms"], v["p50_ms"] / base["p50_ms"],
            v["p99_ms"], v["p99_ms"] / base["p99_ms"]))
    md.append("")
    bad = sum(r["non2xx"] for rs in runs.values() for r in rs)
    sock = [r["socket_errors"] for rs in runs.values() for r in rs if r["socket_errors"]]
    md.append("Non-2xx answers, all runs together: %d (404s of reads that find no session: the first 24 "
              "reads of each wrk thread per run come before its first login, and a read now and then "
              "overtakes its login on another connection)%s.\n"
              % (bad, "; wrk socket errors: " + "; ".join(sock) if sock else "; no socket errors"))
    if paired:
        md.append("Paired, on one service: `--max-overhead 1` in %d wrk runs of %d s, each between two untraced "
                  "runs of the same service under the same load (the probe attached and calibrated before its "
                  "run, stopped after); each traced run against the mean of its neighbours. Fresh services "
                  "differ by more than the 2%% in question, as the table above shows.\n"
                  % (len(paired), PAIRED_SVC_SECONDS))
        md.append("| mode | req/s × untraced, median | range | p50 ×, median | p99 ×, median | range | "
                  "service CPU per request ×, median | range |")
        md.append("|---|---:|---:|---:|---:|---:|---:|---:|")
        r = [x["rps"] for x in paired]
        p50 = [x["p50_ms"] for x in paired]
        p99 = [x["p99_ms"] for x in paired]
        cpr = [x["cpu_per_req"] for x in paired]
        md.append("| `watch --max-overhead 1` | %.3f | %.3f–%.3f | %.2f | %.2f | %.2f–%.2f | %.3f | %.3f–%.3f |" % (
            statistics.median(r), min(r), max(r), statistics.median(p50), statistics.median(p99),
            min(p99), max(p99), statistics.median(cpr), min(cpr), max(cpr)))
        u = {k: [x["untraced"][k] for x in paired] for k in ("rps", "p50_ms", "p99_ms", "cpu_per_req")}
        md.append("| untraced ÷ the untraced run before it (the noise) | %.3f | %.3f–%.3f | %.2f | %.2f | %.2f–%.2f "
                  "| %.3f | %.3f–%.3f |\n"
                  % (statistics.median(u["rps"]), min(u["rps"]), max(u["rps"]), statistics.median(u["p50_ms"]),
                     statistics.median(u["p99_ms"]), min(u["p99_ms"]), max(u["p99_ms"]),
                     statistics.median(u["cpu_per_req"]), min(u["cpu_per_req"]), max(u["cpu_per_req"])))
        md.append("The service's CPU per request is its threads' CPU time (schedstat, which leaves out time "
                  "the hypervisor stole) over the requests wrk completed: what the probes cost each request, "
                  "beside the req/s that the VM's noise moves by the last row's range.\n")
        md.append("The agent itself, during the traced runs (not in the books: the bound is on what probing "
                  "costs the target): %.2f%% of a core and %.0f wakeups/s (medians), on whichever core the "
                  "scheduler gives it; on this 2-core machine that is often the service's.\n"
                  % (statistics.median(x["agent_pct"] for x in paired),
                     statistics.median(x["agent_wakeups"] for x in paired)))
        rr, pr = statistics.median(r), statistics.median(p99)
        md.append("Goal: under `--max-overhead 1` at least 98%% of the untraced req/s and p99 within 5%%: %s "
                  "(%.1f%% of the req/s, p99 %.2f×, paired medians).\n"
                  % ("met" if rr >= 0.98 and pr <= 1.05 else "MISSED", 100 * rr, pr))
    else:
        md.append("Goal: under `--max-overhead 1` at least 98%% of the untraced req/s and p99 within 5%%: "
                  "`--max-overhead` is %s.\n" % NOT_AVAILABLE)
    md.append("### Counts against the service's own\n")
    md.append("httpsvc counts every assign and delete statement on its two maps and prints the counts when "
              "it is stopped. The tool's count of them is the sum of its last `stats` rows of those two map "
              "types (scaled by the summary's estimate ÷ observed where the rows hold only what was "
              "observed). \"All maps\" is the summary's `ops`: net/http and net/url write maps of their own "
              "(headers, query values), so it is larger than the service's. Worst run of %d shown.\n" % RUNS)
    md.append("| mode | op | service's own (last run) | tool (last run) | its 95% interval | truth inside | "
              "worst error | all maps, tool (last run) | observed fraction | overhead_pct |")
    md.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for m in modes:
        if m in ("no probe", "bpftrace one-liner"):
            continue
        label = m[len("mapguard "):]
        if not runs[m]:
            md.append("| `%s` | | %s | | | | | | | |" % (label, NOT_AVAILABLE))
            continue
        for op in ("delete", "assign"):
            errs, last, inside, have_iv = [], None, 0, 0
            for r in runs[m]:
                tool = scaled_rows(r["stats"], r["summary"], SVC_MAP_TYPES)[op]
                errs.append(pct_err(tool, r["truth"][op]))
                iv = rows_interval(r["stats"], r["summary"], SVC_MAP_TYPES, op, tool)
                if iv is not None:
                    have_iv += 1
                    inside += in_interval(iv, r["truth"][op])
                last = (r["truth"][op], tool, r["summary"], iv)
            s = last[2]
            samp = (s.get("sampling") or [{}])[0]
            fr = s.get("observed_fraction", 1.0) if "observed_fraction" in s else None
            md.append("| `%s` | %s | %d | %.0f | %s | %s | %+.2f%% | %d%s | %s | %s |" % (
                label, op, last[0], last[1], interval_text(last[3]),
                "%d/%d" % (inside, len(runs[m])) if have_iv else "n/a (exact)",
                max(errs, key=abs), s["ops"][op],
                " (estimated)" if s.get("estimated") else "",
                fraction_text([fr] if fr is not None else [], 1) if "observed_fraction" in s else "1 (exact)",
                "%.2f" % samp["overhead_pct"] if "overhead_pct" in samp else "n/a"))
    md.append("")
    return md


# ---- 7. bounded-overhead mode -------------------------------------------

BOUNDED_SECONDS = int(os.environ.get("BENCH_BOUNDED_SECONDS", "5"))
BOUNDED_PROGRAMS = ("churn", "deletefor")
BOUNDED_MODES = ["no probe", "mapguard watch", "mapguard watch --max-overhead 1", "mapguard watch --max-overhead 2"]


def bounded_run(mode, prog, bench):
    target = [bench, prog, str(BOUNDED_SECONDS)]
    cmd = target if mode == "no probe" else \
        [MAPGUARD, "watch"] + mode.split()[2:] + ["-o", "json", "--"] + target
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       preexec_fn=lambda: os.setpgrp())
    if p.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (cmd[:6], p.returncode, p.stderr[-1500:]))
    m = RESULT_RE.search(p.stderr)
    if not m:
        raise RuntimeError("no mapbench result in output:\n" + p.stderr[-2000:])
    n = int(m.group(2))
    res = {"ns_per_op": int(m.group(3)) / n}
    if prog == "churn":  # 1024 assigns then 1024 deletes, over and over
        res["truth"] = {"delete": n // 2, "assign": n // 2}
    else:
        setup = SETUP_RE.search(p.stderr)
        res["truth"] = {"delete": n, "assign": int(setup.group(1))}
    if mode != "no probe":
        res["summary"] = last_of(json_lines(p.stdout.splitlines()), "summary")
        if res["summary"] is None:
            raise RuntimeError("%s printed no summary" % mode)
    return res


def bounded(bench):
    runs = {(p, m): [] for p in BOUNDED_PROGRAMS for m in BOUNDED_MODES}
    for r in range(RUNS):
        for p in BOUNDED_PROGRAMS:
            for m in BOUNDED_MODES:  # interleaved
                if mode_available(m):
                    runs[(p, m)].append(bounded_run(m, p, bench))
        print("  bounded run %d/%d done" % (r + 1, RUNS), file=sys.stderr)
    paired = {p: bounded_paired(p, bench) for p in BOUNDED_PROGRAMS}
    return runs, paired


PAIRED_OFF_S = 3.0
PAIRED_ON_S = 5


def bounded_paired(prog, bench):
    """Slowdown read from one long run of the loop: stretches with the probe
    (`watch ... --pid`) between stretches without, each with-probe stretch
    against the mean of its two neighbours. Back-to-back runs of the same
    untraced loop differ by up to 30% on a shared VM; neighbouring seconds of one
    run do not. The loop is pinned to the last CPU; the agent is not."""
    modes = [m for m in BOUNDED_MODES[1:] if mode_available(m)]
    if not modes:
        return {}
    cpu = (os.cpu_count() or 1) - 1
    loop = subprocess.Popen(pinned(cpu, [bench, prog, "100000"]), stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=dict(os.environ, MAPBENCH_TICKS="1"),
                            preexec_fn=lambda: os.setpgrp())
    ticks = []

    def read():
        for line in loop.stdout:
            f = line.split()
            if len(f) == 3 and f[0] == "tick":
                ticks.append((time.monotonic(), int(f[2])))
    threading.Thread(target=read, daemon=True).start()

    def rate(t0, t1):
        s = [t for t in ticks if t0 <= t[0] <= t1]
        return (s[-1][1] - s[0][1]) / (s[-1][0] - s[0][0]) if len(s) >= 3 else None

    def off():
        t0 = time.monotonic()
        time.sleep(PAIRED_OFF_S)
        return rate(t0 + 0.5, t0 + PAIRED_OFF_S - 0.1)

    out = {m: [] for m in modes}
    try:
        time.sleep(1.0)
        before = off()
        for c in range(RUNS + 1):
            for m in modes:
                t0 = time.monotonic()
                p = subprocess.run([MAPGUARD, "watch"] + m.split()[2:] +
                                   ["-o", "json", "--interval", "1s", "--duration", "%ds" % PAIRED_ON_S,
                                    "--pid", str(loop.pid)], capture_output=True, text=True)
                t1 = time.monotonic()
                if p.returncode != 0:
                    raise RuntimeError("%s --pid failed (%d): %s" % (m, p.returncode, p.stderr[-1500:]))
                # Past the attach and calibration, short of the detach.
                on = rate(t0 + 1.5, t1 - 0.6)
                after = off()
                if None in (before, on, after):
                    raise RuntimeError("mapbench %s printed too few ticks" % prog)
                summary = last_of(json_lines(p.stdout.splitlines()), "summary") or {}
                said = [s["overhead_pct"] for s in summary.get("sampling") or [] if "overhead_pct" in s]
                out[m].append({"slowdown": (before + after) / 2 / on, "said": said[0] if said else None})
                before = after
    finally:
        os.killpg(loop.pid, signal.SIGKILL)
        loop.wait()
    return out


def md_bounded(bnd):
    runs, paired = bnd
    md = ["## Bounded-overhead mode\n"]
    md.append("`watch --max-overhead PCT` turns the probes on and off in windows so that their estimated CPU "
              "stays within PCT%% of the target's own, and estimates the counts from what it saw. Two "
              "programs of benches/go/mapbench, %d s each: `churn` (1024 string-key assigns then 1024 "
              "deletes, over and over) and `deletefor` (string-key deletes only: 65,536 keys put in once, "
              "then deletes of 65,536 absent keys, over and over). `watch` without the flag (every operation "
              "probed, exact) is there for scale.\n" % BOUNDED_SECONDS)
    md.append("Slowdown, paired: one long run of each loop, pinned to one CPU, with %d s stretches under the "
              "probe (`watch ... --pid`, its first 1.5 s of attaching and calibrating left out) between %.0f s "
              "stretches without; each stretch's ops/s against the mean of its two neighbours'. Back-to-back "
              "runs of the same untraced loop differed by up to 30%% on this shared VM, so a slowdown of a "
              "few percent is only read this way. \"Tool said\": the summary's `overhead_pct`, its own "
              "account of what the probes cost the process over the run. %d stretches per mode, interleaved.\n"
              % (PAIRED_ON_S, PAIRED_OFF_S, RUNS + 1))
    md.append("| program | mode | slowdown, median | range | tool said (median) |")
    md.append("|---|---|---:|---:|---:|")
    slow = {}
    for p in BOUNDED_PROGRAMS:
        for m in BOUNDED_MODES[1:]:
            label = m[len("mapguard "):]
            rs = (paired.get(p) or {}).get(m) or []
            if not rs:
                md.append("| %s | `%s` | %s | | |" % (p, label, NOT_AVAILABLE))
                continue
            sd = [r["slowdown"] for r in rs]
            said = [r["said"] for r in rs if r["said"] is not None]
            slow[(p, m)] = statistics.median(sd)
            md.append("| %s | `%s` | %.3f× | %.3f–%.3f | %s |" % (
                p, label, slow[(p, m)], min(sd), max(sd),
                "%.2f%%" % statistics.median(said) if said else "n/a (exact)"))
    md.append("")
    md.append("Estimates against the program's own count (mapbench counts its operations; `deletefor`'s "
              "assigns are its 65,536 setup assigns; the Go runtime's own few map writes at start are in the "
              "tool's count, not in mapbench's). Error: median run (worst run); \"in [lo, hi]\": runs whose "
              "truth is inside the summary's `ops_interval`; observed fraction and the tool's `overhead_pct`: "
              "medians; \"unknown\" where the share observed could not be known (the windows' own CPU lost "
              "in their probes' cost), the estimate then open above. %d runs of `mapbench ... %d`, each "
              "launched by the tool (`watch ... -- CMD`).\n" % (RUNS, BOUNDED_SECONDS))
    md.append("| program | mode | op | estimate | truth | error | in [lo, hi] | observed fraction | overhead_pct |")
    md.append("|---|---|---|---:|---:|---:|---:|---:|---:|")
    for p in BOUNDED_PROGRAMS:
        for m in BOUNDED_MODES[1:]:
            label = m[len("mapguard "):]
            rs = runs[(p, m)]
            if not rs:
                md.append("| %s | `%s` | | %s | | | | | |" % (p, label, NOT_AVAILABLE))
                continue
            for op in ("delete", "assign"):
                open_above = [((r["summary"].get("ops_interval") or {}).get(op) or [0, 0])[1] is None
                              for r in rs]
                if all(open_above):
                    # The count is only what was seen: no error to speak of.
                    seen = statistics.median(r["summary"]["ops"][op] for r in rs)
                    md.append("| %s | `%s` | %s | ≥%d (open above) | %d | n/a | %d/%d | %s | %s |" % (
                        p, label, op, seen, statistics.median(r["truth"][op] for r in rs), len(rs), len(rs),
                        fraction_text([f for r in rs for f in [r["summary"].get("observed_fraction")]
                                       if f is not None], len(rs)),
                        "%.2f" % statistics.median(s["overhead_pct"] for r in rs
                                                   for s in (r["summary"].get("sampling") or [])[:1])))
                    continue
                errs = [pct_err(r["summary"]["ops"][op], r["truth"][op]) for r in rs]
                mid = sorted(range(len(rs)), key=lambda i: errs[i])[len(rs) // 2]
                inside, have_iv = 0, 0
                for r in rs:
                    iv = (r["summary"].get("ops_interval") or {}).get(op)
                    if iv:
                        have_iv += 1
                        inside += in_interval(iv, r["truth"][op])
                fr = [r["summary"]["observed_fraction"] for r in rs if "observed_fraction" in r["summary"]]
                known = [f for f in fr if f is not None]
                ov = [s["overhead_pct"] for r in rs for s in (r["summary"].get("sampling") or [])[:1]
                      if "overhead_pct" in s]
                md.append("| %s | `%s` | %s | %d | %d | %+.2f%% (%+.2f%%) | %s | %s | %s |" % (
                    p, label, op, rs[mid]["summary"]["ops"][op], rs[mid]["truth"][op], errs[mid],
                    max(errs, key=abs), "%d/%d" % (inside, len(rs)) if have_iv else "n/a (exact)",
                    fraction_text(known, len(fr)),
                    "%.2f" % statistics.median(ov) if ov else "n/a"))
    md.append("")
    goal = "Goal: `deletefor` (string-key deletes only) under `--max-overhead 2` at most 1.06× untraced per " \
           "delete, and every run's delete estimate within 5% of the truth: "
    key = ("deletefor", "mapguard watch --max-overhead 2")
    if runs[key] and key in slow:
        worst = max((pct_err(r["summary"]["ops"]["delete"], r["truth"]["delete"]) for r in runs[key]), key=abs)
        bounded = all((r["summary"].get("ops_interval") or {}).get("delete", [0, None])[1] is not None
                      for r in runs[key])
        md.append(goal + "%s (%.3f× paired; %s).\n" % (
            "met" if slow[key] <= 1.06 and abs(worst) <= 5 and bounded else "MISSED", slow[key],
            "worst error %+.2f%%" % worst if bounded else
            "the estimate is open above, the count only what was seen: with no PMU the process's own CPU in a "
            "window is lost in what its probes cost"))
    else:
        md.append(goal + "`--max-overhead` is %s.\n" % NOT_AVAILABLE)
    return md


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
    wrk = "wrk absent"
    if shutil.which("wrk"):  # `wrk --version` prints its usage and exits 1
        v = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
        wrk = ((v.stdout or v.stderr).splitlines() or ["wrk"])[0].split(" [")[0]
    return {"cpu": model, "cores": os.cpu_count(), "kernel": platform.release(), "go": gov,
            "bpftrace": bpftrace, "wrk": wrk, "commit": commit,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def md_cost(modes, res, prog, split):
    md = []
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
    floor = {l: res[l][READS_FLOOR] / res[l]["bare uprobe"] for l in LOOPS}
    md.append("Why: `watch` reads the traced process's memory three times an operation (the map's header for "
              "its length and the runtime's write flag, the return address for the caller, the key for the "
              "hot-key table; `--hot-keys-size 0` skips the key). The bare uprobe reading three words of the "
              "process's own stack per hit, memory the process has just touched, is already %s the bare "
              "uprobe: no probe that reads what `watch` reads can cost less here. `watch` ÷ that floor: %s.\n"
              % (", ".join("%.2f× (%s)" % (floor[l], l) for l in LOOPS),
                 ", ".join("%.2f× (%s)" % (res[l]["mapguard watch"] / res[l][READS_FLOOR], l) for l in LOOPS)))
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
    if split:
        md.append("The same cost split by what the CPU was doing: perf's cpu-clock samples (every 50 µs) of the "
                  "loop's own thread, in a run of %d operations each, put in a part by their call chain and "
                  "scaled to the ns/op above. Trap: the exception, finding the probe, emulating the "
                  "instruction and the way back (a tick that falls while the trap has interrupts off is taken "
                  "on the instruction it returns to, and counted here); program: the BPF program and its "
                  "dispatch, but for its reads of the process's memory (`bpf_probe_read_user`); the loop's "
                  "own code: the Go program between hits, slower than with no probe (%s ns/op) because every "
                  "trap leaves its caches and predictors cold.\n"
                  % (5 * N, "/".join("%.0f" % res[l]["no probe"] for l in LOOPS)))
        md.append("| mode | loop | " + " | ".join(SPLIT_PARTS) + " | per read |")
        md.append("|---|---|" + "---:|" * (len(SPLIT_PARTS) + 1))
        for mode in SPLIT_MODES:
            for l in LOOPS:
                parts = split.get((mode, l))
                if not parts:
                    continue
                # Both read three times an operation (watch: header, return address, key).
                reads = 3 if mode in (READS_FLOOR, "mapguard watch") else 0
                md.append("| %s | %s | %s | %s |" % (mode, l, " | ".join("%.0f" % parts[k] for k in SPLIT_PARTS),
                          "%.0f" % (parts["user reads"] / reads) if reads else "n/a"))
        md.append("")
    return md


def md_throughput(thr):
    md = []
    md.append("## trace throughput\n")
    md.append("`trace -o json > pipe` on `mapbench churn 3` (assign + delete as fast as the program can):\n")
    md.append("| kernel ops | events emitted | events received | drops | emitted+dropped+sampled+limited+filtered | exact | events/s | RSS |")
    md.append("|---:|---:|---:|---:|---:|---|---:|---:|")
    md.append("| %d | %d | %d | %d | %d | %s | %.0f | %.1f MiB |" % (
        thr["kernel_ops"], thr["events_emitted"], thr["events_received"], thr["drops"], thr["accounted"],
        "yes" if thr["exact"] else "NO", thr["events_per_sec"], thr["rss_kib"] / 1024.0))
    md.append("")
    return md


def md_memory(wd):
    md = []
    md.append("## watch memory\n")
    md.append("`watch` over 1,000,000 distinct keys with the default 65,536-key hot-key table: peak RSS %.1f MiB, "
              "`hot_keys_evicted` %d (operations of keys the table turned away, and keys it pushed out: "
              "counted and shown), %d assigns counted.\n"
              % (wd["rss_kib"] / 1024.0, wd["hot_keys_evicted"], wd["assigns"]))
    return md


def md_attach(att):
    md = []
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
    return md


def main():
    bench = build_mapbench()
    m = machine()
    if "cost" in RUN:
        print("overhead (%d ops per run, %d runs per mode)..." % (N, RUNS), file=sys.stderr)
        modes, res = overhead(bench)
        print("BPF program time per hit...", file=sys.stderr)
        prog = where_time_goes(bench, modes)
        print("where a hit's time goes (perf)...", file=sys.stderr)
        split = time_split(bench, res)
    if "throughput" in RUN:
        print("throughput...", file=sys.stderr)
        thr = throughput(bench)
    if "memory" in RUN:
        print("watch over 1M distinct keys...", file=sys.stderr)
        wd = watch_distinct(bench)
    if "attach" in RUN:
        print("attach times...", file=sys.stderr)
        att = attach_times()
    if "fuzz" in RUN:
        print("fuzz...", file=sys.stderr)
        fz = fuzz()
    svc = None
    if "service" in RUN:
        if shutil.which("wrk"):
            print("real service (%d s per run, %d runs per mode)..." % (SVC_SECONDS, RUNS), file=sys.stderr)
            svc = service()
        else:
            print("real service: wrk is not installed (apt-get install -y wrk); skipped", file=sys.stderr)
    if "bounded" in RUN:
        print("bounded-overhead mode (%d s per run, %d runs per mode)..." % (BOUNDED_SECONDS, RUNS),
              file=sys.stderr)
        bnd = bounded(bench)

    md = []
    md.append("# BENCHMARKS\n")
    md.append("Written by `benches/overhead.sh` in one run; every ratio compares numbers from that run. "
              "Medians of %d interleaved runs (of %d operations each in the cost tables).\n" % (RUNS, N))
    if ONLY:
        md.append("**Partial run** (BENCH_ONLY=%s): not a BENCHMARKS.md.\n" % ",".join(ONLY))
    md.append("Machine: %s, %d cores; kernel %s; %s; %s; %s; mapguard %s; %s.\n"
              % (m["cpu"], m["cores"], m["kernel"], m["go"], m["bpftrace"], m["wrk"], m["commit"], m["date"]))
    if "cost" in RUN:
        md += md_cost(modes, res, prog, split)
    if "throughput" in RUN:
        md += md_throughput(thr)
    if "memory" in RUN:
        md += md_memory(wd)
    if "attach" in RUN:
        md += md_attach(att)
    if "service" in RUN:
        md += md_service(*svc) if svc else ["## Real service\n", "wrk is not installed here; not measured.\n"]
    if "bounded" in RUN:
        md += md_bounded(bnd)
    if "fuzz" in RUN:
        md.append("## Fuzzing (short run)\n")
        md.append("```\n%s\n```\n" % fz)
    with open(OUT, "w") as f:
        f.write("\n".join(md))
    print("\n".join(md))
    print("wrote %s" % OUT, file=sys.stderr)


if __name__ == "__main__":
    main()
