//! The Prometheus side of `watch --metrics-addr`: the exposition as the real
//! `promtool` reads it, the series cap, label escaping, the HTTP server, and
//! the Grafana dashboard's queries against the metrics actually written.
//!
//! `promtool` comes from Debian's `prometheus` package. Without it the tests
//! that need it skip loudly, or fail when `MAPGUARD_REQUIRE_BPF=1` (CI).

use kubectl_mapguard::metrics_server::MetricsServer;
use kubectl_mapguard::protocol::{
    Frame, HotKey, LatencyBucket, LatencyHistogram, Op, OpCounts, Stats, StatsRow,
};
use kubectl_mapguard::render::prometheus::{self, Renderer};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

fn frame(func: &str, line: u32) -> Option<Frame> {
    Some(Frame {
        func: func.into(),
        file: "/src/app/cache.go".into(),
        line,
    })
}

#[allow(clippy::too_many_arguments)]
fn row(
    pid: u32,
    map_type: Option<&str>,
    caller: Option<Frame>,
    op: Op,
    count: u64,
    map_len: u64,
) -> StatsRow {
    StatsRow {
        pid,
        map_type: map_type.map(str::to_string),
        caller,
        via: None,
        op,
        count,
        rate: count as f64 / 10.0,
        map_len,
        pc: None,
        estimate: Default::default(),
    }
}

fn hist(pid: u32, map_type: Option<&str>, buckets: &[(u64, u64)], sum_ns: u64) -> LatencyHistogram {
    LatencyHistogram {
        pid,
        map_type: map_type.map(str::to_string),
        count: buckets.iter().map(|b| b.1).sum(),
        sum_ns,
        buckets: buckets
            .iter()
            .map(|&(le_ns, count)| LatencyBucket { le_ns, count })
            .collect(),
    }
}

/// Two processes, several map types and callers, one caller seen at two
/// lines, an unknown type and caller, untracked rows, and delete histograms.
fn realistic() -> Stats {
    let (a, b) = (4242, 977);
    let rows = vec![
        row(
            a,
            Some("map[string]*cache.entry"),
            frame("app/cache.(*LRU).evict", 88),
            Op::Delete,
            12_000,
            4096,
        ),
        row(
            a,
            Some("map[string]*cache.entry"),
            frame("app/cache.(*LRU).evict", 95),
            Op::Delete,
            500,
            4000,
        ),
        row(
            a,
            Some("map[string]*cache.entry"),
            frame("app/cache.(*LRU).Put", 41),
            Op::Assign,
            15_000,
            4100,
        ),
        row(
            a,
            Some("map[uint64]struct {}"),
            frame("app/session.(*Store).Expire", 130),
            Op::Delete,
            3_000,
            900,
        ),
        row(
            a,
            Some("map[uint64]struct {}"),
            frame("app/session.(*Store).Add", 70),
            Op::Assign,
            3_100,
            905,
        ),
        row(
            a,
            Some("map[uint64]struct {}"),
            frame("app/session.(*Store).Reset", 150),
            Op::Clear,
            4,
            1000,
        ),
        row(
            b,
            Some("map[string]int"),
            frame("main.count[...]", 12),
            Op::Assign,
            800,
            64,
        ),
        row(
            b,
            Some("map[string]int"),
            frame("main.prune", 30),
            Op::Delete,
            200,
            60,
        ),
        row(b, None, None, Op::Delete, 7, 3),
    ];
    let ops = OpCounts {
        delete: 12_000 + 500 + 3_000 + 200 + 7 + 93, // 93 in untracked rows
        assign: 15_000 + 3_100 + 800 + 11,
        clear: 4,
    };
    Stats {
        ts: 1_700_000_000_000_000_000,
        interval_ms: 2000,
        ops,
        rows,
        rows_untracked: 3,
        hot_keys: vec![HotKey {
            pid: a,
            map: "0xc000123450".into(),
            map_type: Some("map[string]*cache.entry".into()),
            key: Some("user:1".into()),
            key_truncated: false,
            key_hash: "9f86d081".into(),
            deletes: 40,
            assigns: 41,
            observed_fraction: None,
        }],
        hot_keys_maps_omitted: 0,
        map_keys: Vec::new(),
        hot_keys_evicted: 17,
        concurrent_writes: 2,
        delete_latency: vec![
            hist(
                a,
                Some("map[string]*cache.entry"),
                &[(256, 9000), (512, 3000), (1024, 450), (8192, 50)],
                4_100_000,
            ),
            hist(
                a,
                Some("map[uint64]struct {}"),
                &[(128, 2990), (2048, 10)],
                410_000,
            ),
            hist(b, Some("map[string]int"), &[(512, 200)], 70_000),
            hist(b, None, &[(65536, 7)], 300_000),
        ],
        drops: 5,
        estimation: Default::default(),
    }
}

// ---- a small reader of the text format, to check what was written ----

#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn parse(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (name, rest) = match line.find(['{', ' ']) {
            Some(i) => line.split_at(i),
            None => panic!("bad line {line:?}"),
        };
        let mut labels = BTreeMap::new();
        let mut rest = rest;
        if let Some(r) = rest.strip_prefix('{') {
            let mut chars = r.char_indices().peekable();
            let end;
            loop {
                let (i, c) = chars.next().expect("unterminated labels");
                if c == '}' {
                    end = i + 1;
                    break;
                }
                if c == ',' {
                    continue;
                }
                let start = i;
                let mut eq = i;
                for (j, c) in chars.by_ref() {
                    if c == '=' {
                        eq = j;
                        break;
                    }
                }
                let lname = r[start..eq].to_string();
                assert_eq!(chars.next().map(|x| x.1), Some('"'), "{line}");
                let mut value = String::new();
                loop {
                    let (_, c) = chars.next().expect("unterminated value");
                    match c {
                        '"' => break,
                        '\\' => match chars.next().unwrap().1 {
                            'n' => value.push('\n'),
                            '\\' => value.push('\\'),
                            '"' => value.push('"'),
                            other => panic!("bad escape \\{other} in {line:?}"),
                        },
                        c => value.push(c),
                    }
                }
                assert!(
                    labels.insert(lname, value).is_none(),
                    "repeated label: {line}"
                );
            }
            rest = &r[end..];
        }
        let value = rest
            .trim()
            .parse::<f64>()
            .unwrap_or_else(|_| panic!("{line:?}"));
        out.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    out
}

fn op_sum(samples: &[Sample], op: &str) -> u64 {
    samples
        .iter()
        .filter(|s| s.name == "go_map_ops_total" && s.labels["op"] == op)
        .map(|s| s.value as u64)
        .sum()
}

// ---- promtool ----

fn promtool() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("promtool"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        let msg = "promtool not found (Debian package `prometheus`: apt-get install -y prometheus)";
        if std::env::var("MAPGUARD_REQUIRE_BPF").as_deref() == Ok("1") {
            panic!("{msg}; MAPGUARD_REQUIRE_BPF=1 makes this a failure");
        }
        eprintln!("SKIPPED: {msg}");
    }
    found
}

/// `promtool ARGS` with `stdin`: (success, stdout + stderr).
fn run(promtool: &Path, args: &[&str], stdin: &str) -> (bool, String) {
    let mut child = Command::new(promtool)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn promtool_check_metrics(promtool: &Path, text: &str) {
    let (ok, out) = run(promtool, &["check", "metrics"], text);
    assert!(
        ok && out.trim().is_empty(),
        "promtool check metrics: {out}\n--- exposition ---\n{text}"
    );
}

// ---- the exposition ----

#[test]
fn realistic_stats_pass_promtool() {
    if let Ok(path) = std::env::var("MAPGUARD_DUMP_EXPOSITION") {
        let text = prometheus::exposition(&realistic(), &[("pod", "cart-7d9f")], 6);
        std::fs::write(path, text).unwrap();
    }
    let stats = realistic();
    let extra = [
        ("context", "prod-eu"),
        ("namespace", "shop"),
        ("pod", "cart-7d9f"),
    ];
    let text = prometheus::exposition(&stats, &extra, 1000);
    let samples = parse(&text);

    // Exact per-op sums, untracked operations under "other".
    assert_eq!(op_sum(&samples, "delete"), stats.ops.delete);
    assert_eq!(op_sum(&samples, "assign"), stats.ops.assign);
    assert_eq!(op_sum(&samples, "clear"), stats.ops.clear);
    let other_delete = samples
        .iter()
        .find(|s| {
            s.name == "go_map_ops_total"
                && s.labels["op"] == "delete"
                && s.labels["caller"] == "other"
        })
        .unwrap();
    assert_eq!(other_delete.value, 93.0);
    // One caller at two lines is one series; unknown type and caller say so.
    let evict: Vec<_> = samples
        .iter()
        .filter(|s| s.labels.get("caller").map(String::as_str) == Some("app/cache.(*LRU).evict"))
        .filter(|s| s.name == "go_map_ops_total")
        .collect();
    assert_eq!(evict.len(), 1);
    assert_eq!(evict[0].value, 12_500.0);
    assert_eq!(evict[0].labels["pid"], "4242");
    assert!(samples.iter().any(|s| s.name == "go_map_ops_total"
        && s.labels["map_type"] == "unknown"
        && s.labels["caller"] == "unknown"
        && s.labels["pid"] == "977"));
    // Extra labels on every sample.
    for s in &samples {
        assert_eq!(s.labels["pod"], "cart-7d9f", "{s:?}");
        assert_eq!(s.labels["context"], "prod-eu", "{s:?}");
    }
    // Histograms: cumulative, in seconds, same bounds everywhere, +Inf = count.
    let buckets: Vec<_> = samples
        .iter()
        .filter(|s| s.name == "go_map_delete_duration_seconds_bucket")
        .collect();
    let mut per_hist: BTreeMap<(String, String), Vec<(String, f64)>> = BTreeMap::new();
    for b in &buckets {
        per_hist
            .entry((b.labels["map_type"].clone(), b.labels["pid"].clone()))
            .or_default()
            .push((b.labels["le"].clone(), b.value));
    }
    assert_eq!(per_hist.len(), 4);
    let les: BTreeSet<Vec<String>> = per_hist
        .values()
        .map(|v| v.iter().map(|(le, _)| le.clone()).collect())
        .collect();
    assert_eq!(les.len(), 1, "every histogram has the same le set");
    for (key, v) in &per_hist {
        assert!(
            v.windows(2).all(|w| w[0].1 <= w[1].1),
            "{key:?} not cumulative"
        );
        assert_eq!(v.last().unwrap().0, "+Inf");
    }
    let cache = &per_hist[&("map[string]*cache.entry".to_string(), "4242".to_string())];
    let at = |le: &str| cache.iter().find(|(l, _)| l == le).unwrap().1;
    assert_eq!(at("0.000000128"), 0.0);
    assert_eq!(at("0.000000256"), 9000.0);
    assert_eq!(at("0.000001024"), 12_450.0);
    assert_eq!(at("+Inf"), 12_500.0);
    assert!(text.contains(
        "go_map_delete_duration_seconds_sum{context=\"prod-eu\",namespace=\"shop\",pod=\"cart-7d9f\",map_type=\"map[string]*cache.entry\",pid=\"4242\"} 0.0041\n"
    ));
    // The plain counters.
    let value = |name: &str| samples.iter().find(|s| s.name == name).unwrap().value;
    assert_eq!(value("go_map_concurrent_writes_total"), 2.0);
    assert_eq!(value("mapguard_events_dropped_total"), 5.0);
    assert_eq!(value("mapguard_hot_keys_evicted_total"), 17.0);
    let len = samples
        .iter()
        .find(|s| s.name == "go_map_length" && s.labels["caller"] == "app/cache.(*LRU).evict")
        .unwrap();
    assert_eq!(len.value, 4096.0);

    if let Some(promtool) = promtool() {
        promtool_check_metrics(&promtool, &text);
        // Also without extra labels, and with the cap biting.
        promtool_check_metrics(&promtool, &prometheus::exposition(&stats, &[], 1000));
        promtool_check_metrics(&promtool, &prometheus::exposition(&stats, &extra, 2));
        promtool_check_metrics(
            &promtool,
            &prometheus::exposition(&Stats::default(), &[], 10),
        );
    }
}

#[test]
fn the_cap_folds_into_other_with_exact_sums() {
    let stats = realistic();
    for cap in [0, 1, 3, 5, 8, 1000] {
        let text = prometheus::exposition(&stats, &[], cap);
        let samples = parse(&text);
        let named: Vec<_> = samples
            .iter()
            .filter(|s| s.name == "go_map_ops_total" && s.labels["caller"] != "other")
            .collect();
        // 9 rows, two of them one series: 8 distinct series.
        assert_eq!(named.len(), cap.min(8), "cap {cap}:\n{text}");
        assert_eq!(op_sum(&samples, "delete"), stats.ops.delete, "cap {cap}");
        assert_eq!(op_sum(&samples, "assign"), stats.ops.assign, "cap {cap}");
        assert_eq!(op_sum(&samples, "clear"), stats.ops.clear, "cap {cap}");
        let others = samples
            .iter()
            .filter(|s| s.name == "go_map_ops_total" && s.labels["caller"] == "other")
            .count();
        assert_eq!(others, 3, "one other series per op, cap {cap}");
        let folded = samples
            .iter()
            .find(|s| s.name == "mapguard_series_folded")
            .unwrap();
        assert_eq!(folded.value as usize, 8 - cap.min(8));
        // Lengths only for series under the cap: never more than the cap.
        let lengths = samples.iter().filter(|s| s.name == "go_map_length").count();
        assert!(lengths <= cap, "cap {cap}: {lengths} length series");
    }
    // The busiest series are the ones kept.
    let samples = parse(&prometheus::exposition(&stats, &[], 2));
    let kept: BTreeSet<(&str, &str)> = samples
        .iter()
        .filter(|s| s.name == "go_map_ops_total" && s.labels["caller"] != "other")
        .map(|s| (s.labels["op"].as_str(), s.labels["caller"].as_str()))
        .collect();
    assert_eq!(
        kept,
        BTreeSet::from([
            ("assign", "app/cache.(*LRU).Put"),
            ("delete", "app/cache.(*LRU).evict")
        ])
    );
}

#[test]
fn other_never_goes_down_between_scrapes() {
    let mut renderer = Renderer::new(3);
    let mut stats = realistic();
    let mut last_other = [0u64; 3];
    for round in 0..5u64 {
        // Every row grows, the small ones fastest, so the busiest change.
        for (i, r) in stats.rows.iter_mut().enumerate() {
            r.count += (i as u64 + 1) * 1000 * round;
        }
        stats.ops = OpCounts::default();
        for r in &stats.rows {
            stats.ops.add(r.op, r.count);
        }
        stats.ops.delete += 93;
        let samples = parse(&renderer.render(&stats, &[]));
        for (i, op) in ["delete", "assign", "clear"].into_iter().enumerate() {
            let other = samples
                .iter()
                .find(|s| {
                    s.name == "go_map_ops_total"
                        && s.labels["op"] == op
                        && s.labels["caller"] == "other"
                })
                .unwrap()
                .value as u64;
            assert!(
                other >= last_other[i],
                "round {round}: {op} other went down"
            );
            last_other[i] = other;
            assert_eq!(op_sum(&samples, op), stats.ops.get(Op::parse(op).unwrap()));
        }
    }
}

#[test]
fn label_values_are_escaped() {
    let mut stats = realistic();
    let nasty_type = "map[string]\"quoted\" \\back\\slash\nnewline";
    let nasty_caller = "main.(*T).f\\\"}";
    stats.rows[0].map_type = Some(nasty_type.into());
    stats.rows[0].caller = frame(nasty_caller, 1);
    stats.delete_latency[0].map_type = Some(nasty_type.into());
    let extra = [("pod", "p\"o\\d\n")];
    let text = prometheus::exposition(&stats, &extra, 1000);
    assert!(text.contains(
        "map_type=\"map[string]\\\"quoted\\\" \\\\back\\\\slash\\nnewline\",caller=\"main.(*T).f\\\\\\\"}\""
    ), "{text}");
    // Every sample is one line, and reads back to the original values.
    let samples = parse(&text);
    assert!(samples.iter().all(|s| s.labels["pod"] == "p\"o\\d\n"));
    let row = samples
        .iter()
        .find(|s| s.name == "go_map_ops_total" && s.labels["map_type"] == nasty_type)
        .unwrap();
    assert_eq!(row.labels["caller"], nasty_caller);
    assert!(samples
        .iter()
        .any(|s| s.name == "go_map_delete_duration_seconds_count"
            && s.labels["map_type"] == nasty_type));
    if let Some(promtool) = promtool() {
        promtool_check_metrics(&promtool, &text);
    }
}

// ---- the server ----

fn http(addr: std::net::SocketAddr, request: &str) -> (String, BTreeMap<String, String>, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("a full response");
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().to_string();
    let headers = lines
        .map(|l| {
            let (k, v) = l.split_once(": ").unwrap();
            (k.to_ascii_lowercase(), v.to_string())
        })
        .collect();
    (status, headers, body.to_string())
}

#[test]
fn server_serves_the_published_exposition() {
    let server = MetricsServer::start("127.0.0.1:0").unwrap();
    let addr = server.local_addr();
    assert!(addr.ip().is_loopback() && addr.port() != 0);
    let text = prometheus::exposition(&realistic(), &[("pod", "cart-7d9f")], 1000);
    server.publish(text.clone());

    let get = "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: */*\r\n\r\n";
    let (status, headers, body) = http(addr, get);
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(
        headers["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    assert_eq!(headers["content-length"], text.len().to_string());
    assert_eq!(body, text);

    // A new publication replaces the old.
    server.publish("go_map_concurrent_writes_total 9\n".into());
    let (_, _, body) = http(addr, get);
    assert_eq!(body, "go_map_concurrent_writes_total 9\n");

    let (status, _, _) = http(addr, "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    let (status, headers, body) = http(addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(headers["content-type"].starts_with("text/html"));
    assert!(body.contains("/metrics"));

    // Bad requests get an answer and leave the server up.
    let (status, _, _) = http(addr, "\u{1}\u{2}junk\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 400 Bad Request");
    {
        // Half a request, then gone.
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /met").unwrap();
    }
    let _silent = TcpStream::connect(addr).unwrap();
    let (status, _, body) = http(addr, get);
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(body, "go_map_concurrent_writes_total 9\n");

    // Another server cannot take the same address, and says what to do.
    let err = MetricsServer::start(&addr.to_string()).err().unwrap();
    assert!(
        err.to_string().contains("pick another --metrics-addr"),
        "{err}"
    );
}

// ---- the Grafana dashboard ----

fn dashboard() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/grafana-dashboard.json");
    let text = std::fs::read_to_string(&path).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr", Value::String(s)) => out.push(s.clone()),
                    _ => exprs(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

/// Identifiers in a PromQL expression that name this tool's metrics.
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    for c in expr.chars().chain([' ']) {
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            word.push(c);
        } else {
            if word.starts_with("go_map_") || word.starts_with("mapguard_") {
                out.push(word.clone());
            }
            word.clear();
        }
    }
    out
}

#[test]
fn dashboard_queries_what_the_exposition_writes() {
    let d = dashboard();
    assert!(d["schemaVersion"].as_u64().unwrap() >= 36);
    assert_eq!(d["__inputs"][0]["name"], "DS_PROMETHEUS");
    let panels = d["panels"].as_array().unwrap();
    assert!(panels.len() >= 6);
    for p in panels {
        assert_eq!(p["datasource"]["uid"], "${DS_PROMETHEUS}", "{}", p["title"]);
    }

    let written: BTreeSet<String> = parse(&prometheus::exposition(&realistic(), &[], 1000))
        .into_iter()
        .map(|s| s.name)
        .collect();
    let mut all = Vec::new();
    exprs(&d, &mut all);
    assert!(all.len() >= 6);
    let mut used = BTreeSet::new();
    for e in &all {
        let names = metric_names(e);
        assert!(!names.is_empty(), "{e} queries none of mapguard's metrics");
        for n in names {
            assert!(
                written.contains(&n),
                "{e} queries {n}, which is not written"
            );
            used.insert(n);
        }
    }
    for needed in [
        "go_map_ops_total",
        "go_map_delete_duration_seconds_bucket",
        "go_map_concurrent_writes_total",
        "mapguard_events_dropped_total",
        "mapguard_hot_keys_evicted_total",
    ] {
        assert!(used.contains(needed), "no panel shows {needed}");
    }
    let all_text = all.join("\n");
    assert!(all_text.contains("histogram_quantile(0.5,"));
    assert!(all_text.contains("histogram_quantile(0.99,"));

    // The queries parse as PromQL: promtool checks them as recording rules,
    // with Grafana's variables given values.
    if let Some(promtool) = promtool() {
        let mut rules = String::from("groups:\n- name: dashboard\n  rules:\n");
        for (i, e) in all.iter().enumerate() {
            let e = e
                .replace("$__rate_interval", "1m")
                .replace("$__range", "1h")
                .replace("$map_type", ".*");
            let quoted = serde_json::to_string(&e).unwrap();
            rules.push_str(&format!(
                "  - record: mapguard:panel{i}\n    expr: {quoted}\n"
            ));
        }
        let dir = std::env::temp_dir().join(format!("mapguard-dash-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("rules.yml");
        std::fs::write(&file, &rules).unwrap();
        let (ok, out) = run(&promtool, &["check", "rules", file.to_str().unwrap()], "");
        let _ = std::fs::remove_dir_all(&dir);
        assert!(ok, "promtool check rules: {out}\n{rules}");
    }
}
