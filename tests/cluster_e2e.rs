//! The cluster side end to end: the real binary, over real HTTP, against a
//! Kubernetes API emulator on 127.0.0.1 (tests/kube/emulator.py, built on the
//! third-party kmock), with a kubeconfig pointing at it.
//!
//! The emulator's "kubelet" runs each agent pod's command (the real
//! `kubectl-mapguard agent`, with its real BPF probes) on this machine, and the
//! target pods are real Go processes (tests/go/podwork) in real cgroup v2
//! directories named like containerd's (`cri-containerd-<id>.scope`), so the
//! agent finds them exactly as on a node. The pod log is the agent's output.
//!
//! What the emulator fakes (see the docstring of tests/kube/emulator.py for
//! the full list): admission is a canned rejection, RBAC is a deny list, every
//! "node" is this machine, no scheduler, no image pull, and pod deletion is
//! approximated. tests/cluster_real.rs runs the single-node scenarios on a real
//! Kubernetes; this file keeps what needs several nodes or contexts, and the
//! scripted failures.

mod common;

use common::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const PY_DIR: &str = "/opt/mapguard-py";
const MANAGED: &str = "app.kubernetes.io/managed-by=kubectl-mapguard";
/// podwork's map operations per pod: N assigns, N/2 deletes.
const N: usize = 300;

/// One emulated cluster; stopped (and everything it started killed) on drop.
struct Cluster {
    child: Child,
    port: u16,
}

impl Cluster {
    fn start(dir: &Path, name: &str, scenario: Value) -> Cluster {
        let mut scenario = scenario;
        let log_dir = dir.join(format!("logs-{name}"));
        std::fs::create_dir_all(&log_dir).unwrap();
        let obj = scenario.as_object_mut().unwrap();
        obj.insert("cluster".into(), json!(name));
        obj.insert("agent_bin".into(), json!(mapguard_bin()));
        obj.insert(
            "cgroup_root".into(),
            json!(format!(
                // Relative: under whichever cgroup2 mount the machine has.
                "mapguard-e2e-{}-{name}",
                dir.file_name().unwrap().to_string_lossy()
            )),
        );
        obj.insert("log_dir".into(), json!(log_dir));
        obj.entry("namespaces")
            .or_insert(json!(["default", "mapguard"]));
        obj.entry("nodes").or_insert(json!(["node-a", "node-b"]));
        let file = dir.join(format!("scenario-{name}.json"));
        std::fs::write(&file, serde_json::to_vec_pretty(&scenario).unwrap()).unwrap();
        let mut child = Command::new("python3")
            .arg(manifest_dir().join("tests/kube/emulator.py"))
            .arg("--scenario")
            .arg(&file)
            .arg("--log")
            .arg(dir.join(format!("emulator-{name}.log")))
            .env("PYTHONPATH", PY_DIR)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the emulator");
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let port = serde_json::from_str::<Value>(&first)
            .ok()
            .and_then(|v| v["port"].as_u64())
            .unwrap_or_else(|| panic!("emulator did not print its port: {first:?}"))
            as u16;
        Cluster { child, port }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn get(&self, path: &str) -> Value {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).unwrap();
        let text = String::from_utf8_lossy(&raw).to_string();
        let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
        let body = if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(body)
        } else {
            body.to_string()
        };
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }

    /// Agent pods that exist now.
    fn agent_pods(&self) -> Vec<Value> {
        let v = self.get(&format!(
            "/api/v1/pods?labelSelector={}",
            MANAGED.replace('/', "%2F").replace('=', "%3D")
        ));
        v["items"].as_array().cloned().unwrap_or_default()
    }

    /// Every API request the emulator received.
    fn requests(&self) -> Vec<Value> {
        self.get("/_emulator/requests").as_array().cloned().unwrap()
    }

    /// Agent processes the emulator's kubelet started.
    fn agents(&self) -> Vec<Value> {
        self.get("/_emulator/agents").as_array().cloned().unwrap()
    }

    /// Waits for zero agent pods and zero live agent processes; panics with what is left.
    fn assert_nothing_left(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let pods = self.agent_pods();
            let alive: Vec<Value> = self
                .agents()
                .into_iter()
                .filter(|a| a["alive"] == true)
                .collect();
            if pods.is_empty() && alive.is_empty() {
                return;
            }
            if Instant::now() > deadline {
                panic!("left behind: pods {pods:#?}\nagent processes {alive:#?}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// POSTs to pods: (dry run?, body).
    fn pod_creates(&self) -> Vec<(bool, Value)> {
        self.requests()
            .into_iter()
            .filter(|r| {
                r["method"] == "POST" && r["path"].as_str().unwrap_or("").ends_with("/pods")
            })
            .map(|r| (r["dry_run"] == true, r["body"].clone()))
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&tail[..n]);
        rest = &tail[n..].trim_start_matches("\r\n");
    }
    out
}

/// A kubeconfig with one context per cluster (context name = cluster name).
fn kubeconfig(dir: &Path, clusters: &[(&str, &Cluster)]) -> PathBuf {
    kubeconfig_file(dir, "kubeconfig", clusters)
}

fn kubeconfig_file(dir: &Path, file: &str, clusters: &[(&str, &Cluster)]) -> PathBuf {
    let mut y = String::from("apiVersion: v1\nkind: Config\n");
    y.push_str(&format!("current-context: {}\nclusters:\n", clusters[0].0));
    for (name, c) in clusters {
        y.push_str(&format!(
            "- name: {name}\n  cluster:\n    server: {}\n",
            c.url()
        ));
    }
    y.push_str("contexts:\n");
    for (name, _) in clusters {
        y.push_str(&format!("- name: {name}\n  context:\n    cluster: {name}\n    user: tester\n    namespace: default\n"));
    }
    y.push_str("users:\n- name: tester\n  user:\n    token: test-token\n");
    let path = dir.join(file);
    std::fs::write(&path, y).unwrap();
    path
}

/// Everything a cluster test needs, or None when it must skip.
struct Setup {
    dir: TempDir,
    podwork: PathBuf,
}

fn setup(test: &str) -> Option<Setup> {
    if !bpf_available_or_skip(test) {
        return None;
    }
    let kmock = Command::new("python3")
        .args(["-c", "import kmock"])
        .env("PYTHONPATH", PY_DIR)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !kmock {
        if require_bpf() {
            panic!("{test}: kmock is not installed in {PY_DIR}: run .ci/setup");
        }
        skip(&format!(
            "{test}: kmock not installed in {PY_DIR} (run .ci/setup)"
        ));
        return None;
    }
    let podwork = build_go(&variant("go1.25"), Path::new("tests/go/podwork"))?;
    Some(Setup {
        dir: TempDir::new(test),
        podwork,
    })
}

impl Setup {
    fn trigger(&self, tag: &str) -> PathBuf {
        self.dir.join(format!("go-{tag}"))
    }

    /// A running target pod whose one container runs podwork with keys `<tag>-i`.
    fn pod(&self, name: &str, node: &str, labels: Value, tag: &str) -> Value {
        json!({
            "namespace": "default", "name": name, "node": node, "labels": labels, "phase": "Running",
            "containers": [{"name": "app", "command": [
                self.podwork, self.trigger(tag), tag, N.to_string()
            ]}]
        })
    }

    /// Clusters "a" and "b", each with one pod web-1 (app=web) running podwork.
    fn two_clusters(&self, tag_a: &str, tag_b: &str) -> (Cluster, Cluster) {
        let start = |name: &str, tag: &str| {
            let pods = json!({"pods": [self.pod("web-1", "node-a", json!({"app": "web"}), tag)]});
            Cluster::start(self.dir.path(), name, pods)
        };
        (start("a", tag_a), start("b", tag_b))
    }

    /// Cluster "a": web-1 running podwork on node-a, side-1 running a
    /// program that is not Go (/bin/sleep) on node-b.
    fn web_and_side(&self, tag: &str) -> Cluster {
        let side = json!({"namespace": "default", "name": "side-1", "node": "node-b",
            "labels": {"app": "side"}, "phase": "Running",
            "containers": [{"name": "app", "command": ["/bin/sleep", "1000"]}]});
        let pods = json!({"pods": [self.pod("web-1", "node-a", json!({"app": "web"}), tag), side]});
        Cluster::start(self.dir.path(), "a", pods)
    }

    /// Cluster "a" with web-1 (app=web, podwork with `tag`) and the scenario's `extra`
    /// fields, its kubeconfig, and `trace pod/web-1 -o json` run against it to its end.
    fn trace_web_1(
        &self,
        tag: &str,
        extra: Value,
    ) -> (Cluster, PathBuf, (ExitStatus, Vec<Value>, String)) {
        let mut scenario =
            json!({"pods": [self.pod("web-1", "node-a", json!({"app": "web"}), tag)]});
        for (k, v) in extra.as_object().expect("scenario fields") {
            scenario[k] = v.clone();
        }
        let c = Cluster::start(self.dir.path(), "a", scenario);
        let kc = kubeconfig(self.dir.path(), &[("a", &c)]);
        let run =
            mapguard(&kc, &["trace", "pod/web-1", "-o", "json"]).finish(Duration::from_secs(60));
        (c, kc, run)
    }

    fn go(&self, tags: &[&str]) {
        for t in tags {
            std::fs::write(self.trigger(t), b"go").unwrap();
        }
    }
}

fn mapguard(kubeconfig: &Path, args: &[&str]) -> Mapguard {
    let mut cmd = mapguard_command(args);
    cmd.env("KUBECONFIG", kubeconfig);
    Mapguard::spawn_cmd(cmd, true)
}

fn of<'a>(lines: &'a [Value], kind: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| l["kind"] == kind).collect()
}

/// (op, key) of the events podwork's own functions made, per pod.
fn main_ops(lines: &[Value]) -> BTreeMap<String, Vec<(String, String)>> {
    ops_by_pod(
        of(lines, "event")
            .into_iter()
            .filter(|e| caller_func(e).starts_with("main.")),
    )
}

/// What podwork with this tag does, sorted like `main_ops`.
fn expected_ops(tag: &str) -> Vec<(String, String)> {
    podwork_expected_ops(tag, N)
}

/// Waits until every pod has an `attached` line, in whatever order they come.
fn wait_attached(p: &mut Mapguard, pods: &[&str]) {
    wait_attached_by(p, "pod", pods)
}

/// Waits for an `attached` line with each of these values of `field`.
fn wait_attached_by(p: &mut Mapguard, field: &'static str, values: &[&str]) {
    let mut missing: Vec<String> = values.iter().map(|s| s.to_string()).collect();
    while !missing.is_empty() {
        let want = missing.clone();
        let seen = p.wait_for(
            &format!("attached for {field} {want:?}"),
            Duration::from_secs(60),
            move |v| v["kind"] == "attached" && want.iter().any(|w| v[field] == w.as_str()),
        );
        missing.retain(|m| seen[field] != m.as_str());
    }
}

/// A deployment of three replicas over two nodes (two on node-a): one agent
/// pod per node, every line tagged with its pod, exact operations per pod, a
/// replica that is not running skipped, and nothing left after a normal end.
#[test]
fn a_deployment_across_two_nodes_is_traced_exactly() {
    let Some(s) = setup("a_deployment_across_two_nodes_is_traced_exactly") else {
        return;
    };
    let web = json!({"app": "web"});
    let c = Cluster::start(
        s.dir.path(),
        "a",
        json!({
            "pods": [
                s.pod("web-1", "node-a", web.clone(), "w1"),
                s.pod("web-2", "node-b", web.clone(), "w2"),
                s.pod("web-3", "node-a", web.clone(), "w3"),
                {"namespace": "default", "name": "web-4", "node": "node-b", "labels": web, "phase": "Pending",
                 "containers": [{"name": "app", "command": ["/bin/false"]}]},
                s.pod("db-1", "node-a", json!({"app": "db"}), "d1"),
            ],
            "deployments": [{"namespace": "default", "name": "web", "replicas": 4,
                             "selector": {"matchLabels": {"app": "web"}}}],
        }),
    );
    let kc = kubeconfig(s.dir.path(), &[("a", &c)]);
    let mut p = mapguard(
        &kc,
        &["trace", "deploy/web", "-o", "json", "--duration", "10s"],
    );
    wait_attached(&mut p, &["web-1", "web-2", "web-3"]);
    s.go(&["w1", "w2", "w3", "d1"]);
    let (status, lines, stderr) = p.finish(Duration::from_secs(90));
    assert!(status.success(), "{status:?}\n{stderr}");
    assert!(stderr.contains("skipping pod default/web-4"), "{stderr}");

    let ops = main_ops(&lines);
    assert_eq!(
        ops.keys().collect::<Vec<_>>(),
        ["web-1", "web-2", "web-3"],
        "db-1 is not a target"
    );
    for (pod, tag) in [("web-1", "w1"), ("web-2", "w2"), ("web-3", "w3")] {
        assert!(
            ops[pod] == expected_ops(tag),
            "{pod}: {} ops, want {}",
            ops[pod].len(),
            3 * N / 2
        );
    }
    for e in of(&lines, "event") {
        let node = if e["pod"] == "web-2" {
            "node-b"
        } else {
            "node-a"
        };
        assert_eq!(e["node"], node, "{e}");
        assert_eq!(
            (&e["context"], &e["namespace"], &e["container"]),
            (&json!("a"), &json!("default"), &json!("app"))
        );
    }
    let summary = lines.last().unwrap();
    assert_eq!(
        summary["kind"], "summary",
        "the merged summary is the last line"
    );
    assert_eq!(of(&lines, "summary").len(), 1);
    assert_eq!(
        summary["events_emitted"].as_u64().unwrap(),
        of(&lines, "event").len() as u64
    );
    assert!(summary["ops"]["assign"].as_u64().unwrap() >= 3 * N as u64);

    // Preflight first, then one agent pod per node, then cleanup.
    let creates = c.pod_creates();
    let real: Vec<&Value> = creates
        .iter()
        .filter(|(dry, _)| !dry)
        .map(|(_, b)| b)
        .collect();
    assert_eq!(real.len(), 2, "one agent pod per node");
    let dry = creates.iter().filter(|(dry, _)| *dry).count();
    assert_eq!(dry, 2, "each agent pod was dry-run first");
    let mut nodes: Vec<&str> = real
        .iter()
        .map(|b| b["spec"]["nodeName"].as_str().unwrap())
        .collect();
    nodes.sort();
    assert_eq!(nodes, ["node-a", "node-b"]);
    for b in &real {
        assert_eq!(b["spec"]["hostPID"], true);
        assert_eq!(b["metadata"]["namespace"], "mapguard");
        let ids = b["spec"]["containers"][0]["command"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| *a == "--container-id")
            .count();
        assert_eq!(
            ids,
            if b["spec"]["nodeName"] == "node-a" {
                2
            } else {
                1
            }
        );
    }
    let first_real = c.requests().iter().position(|r| {
        r["method"] == "POST"
            && r["dry_run"] == false
            && r["path"].as_str().unwrap().ends_with("/pods")
    });
    let last_review = c.requests().iter().rposition(|r| {
        r["path"]
            .as_str()
            .unwrap()
            .contains("selfsubjectaccessreviews")
    });
    assert!(
        last_review < first_real,
        "access reviews come before any create"
    );
    c.assert_nothing_left();
}

/// Two kube contexts (two emulated clusters) merged into one stream, each
/// line saying its context; `watch -o json` rows are exact per pod too.
#[test]
fn two_contexts_merge_into_one_stream() {
    let Some(s) = setup("two_contexts_merge_into_one_stream") else {
        return;
    };
    let (a, b) = s.two_clusters("a1", "b1");
    // One file per cluster, merged through KUBECONFIG as kubectl does.
    let ka = kubeconfig_file(s.dir.path(), "kc-a", &[("a", &a)]);
    let kb = kubeconfig_file(s.dir.path(), "kc-b", &[("b", &b)]);
    let kc = std::env::join_paths([ka, kb]).unwrap();
    let mut p = mapguard(
        Path::new(&kc),
        &[
            "watch",
            "-l",
            "app=web",
            "--context",
            "a",
            "--context",
            "b",
            "-o",
            "json",
            "--interval",
            "500ms",
            "--duration",
            "8s",
        ],
    );
    wait_attached_by(&mut p, "context", &["a", "b"]);
    s.go(&["a1", "b1"]);
    let (status, lines, stderr) = p.finish(Duration::from_secs(90));
    assert!(status.success(), "{status:?}\n{stderr}");
    for ctx in ["a", "b"] {
        let last = of(&lines, "stats")
            .into_iter()
            .filter(|l| l["context"] == ctx)
            .next_back()
            .unwrap_or_else(|| panic!("no stats from context {ctx}"));
        assert_eq!(last["pod"], "web-1");
        assert!(last["rows"].is_array(), "{last}");
        assert_eq!(
            row_count(last, "main.put", "assign"),
            N as u64,
            "context {ctx}"
        );
        assert_eq!(
            row_count(last, "main.del", "delete"),
            N as u64 / 2,
            "context {ctx}"
        );
    }
    assert_eq!(of(&lines, "summary").len(), 1);
    a.assert_nothing_left();
    b.assert_nothing_left();
}

/// `--max-overhead` travels to the agent pods, and what comes back says the
/// counts are estimates, per pod, with the pod's process under the bound.
#[test]
fn max_overhead_reaches_the_agents() {
    let Some(s) = setup("max_overhead_reaches_the_agents") else {
        return;
    };
    let pods = json!({"pods": [s.pod("web-1", "node-a", json!({"app": "web"}), "mo")]});
    let c = Cluster::start(s.dir.path(), "a", pods);
    let kc = kubeconfig(s.dir.path(), &[("a", &c)]);
    let mut p = mapguard(
        &kc,
        &[
            "watch",
            "pod/web-1",
            "--max-overhead",
            "2",
            "-o",
            "json",
            "--interval",
            "500ms",
            "--duration",
            "6s",
        ],
    );
    wait_attached(&mut p, &["web-1"]);
    s.go(&["mo"]);
    let (status, lines, stderr) = p.finish(Duration::from_secs(90));
    assert!(status.success(), "{status:?}\n{stderr}");
    let created: Vec<Value> = c
        .pod_creates()
        .into_iter()
        .filter(|(dry, _)| !dry)
        .map(|(_, b)| b)
        .collect();
    assert!(!created.is_empty());
    for body in &created {
        let args = body["spec"]["containers"][0].to_string();
        assert!(args.contains("\"--max-overhead\",\"2\""), "{args}");
    }
    let last = of(&lines, "stats").into_iter().next_back().expect("stats");
    assert_eq!(last["pod"], "web-1");
    assert_eq!(last["estimated"], true, "{last}");
    assert_eq!(last["sampling"][0]["max_overhead_pct"], 2.0, "{last}");
    assert!(last["ops_interval"]["assign"].is_array(), "{last}");
    let summary = of(&lines, "summary");
    assert_eq!(summary.len(), 1);
    assert_eq!(summary[0]["estimated"], true, "{}", summary[0]);
    // podwork idles, then does its 300 assigns in a moment: a budget of 2%
    // of an idle process's CPU may not afford a window that sees them.
    assert!(summary[0]["ops_observed"]["assign"].as_u64().unwrap() <= N as u64 + 100);
    assert!(summary[0]["ops_interval"]["assign"].is_array());
    c.assert_nothing_left();
}

/// Missing permissions: a table of exactly what is missing, exit 2, and not a
/// single pod create (not even a dry run) reached the API server.
#[test]
fn rbac_denied_is_a_table_and_creates_nothing() {
    let Some(s) = setup("rbac_denied_is_a_table_and_creates_nothing") else {
        return;
    };
    let (c, _, (status, lines, stderr)) = s.trace_web_1(
        "r1",
        json!({"rbac_deny": [
            {"verb": "create", "resource": "pods", "namespace": "mapguard"},
            {"verb": "get", "resource": "pods", "subresource": "log"},
        ]}),
    );
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(lines.is_empty(), "stdout carries data only: {lines:?}");
    assert!(stderr.contains("missing 2 permission(s)"), "{stderr}");
    let table: Vec<&str> = stderr.lines().filter(|l| l.contains("mapguard")).collect();
    assert!(
        table
            .iter()
            .any(|l| l.contains("create") && l.contains("pods")),
        "{stderr}"
    );
    assert!(
        table
            .iter()
            .any(|l| l.contains("get") && l.contains("pods/log")),
        "{stderr}"
    );
    assert!(
        c.pod_creates().is_empty(),
        "a create reached the server: {:?}",
        c.pod_creates()
    );
    c.assert_nothing_left();
}

/// An admission rejection (Pod Security) seen by the dry run: one line with the
/// namespace label that fixes it, exit 2, and no real create.
#[test]
fn admission_denied_names_the_fix_and_creates_nothing() {
    let Some(s) = setup("admission_denied_names_the_fix_and_creates_nothing") else {
        return;
    };
    let (c, kc, (status, lines, stderr)) = s.trace_web_1(
        "x1",
        json!({"admission_deny": "pods \"mapguard-x\" is forbidden: violates PodSecurity \"baseline:latest\": host namespaces (hostPID=true), non-default capabilities (container \"agent\" must not include \"BPF\", \"PERFMON\" in securityContext.capabilities.add)"}),
    );
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(lines.is_empty());
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("violates PodSecurity"), "{stderr}");
    assert!(
        errors[0].contains(
            "kubectl label namespace mapguard pod-security.kubernetes.io/enforce=privileged"
        ),
        "{stderr}"
    );
    // An agent namespace that does not exist: the dry run says how to make it.
    let (status, _, stderr) = mapguard(&kc, &["trace", "pod/web-1", "--agent-namespace", "nope"])
        .finish(Duration::from_secs(60));
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("manifests/namespace.yaml"), "{stderr}");
    let creates = c.pod_creates();
    assert!(
        !creates.is_empty() && creates.iter().all(|(dry, _)| *dry),
        "only dry runs: {creates:?}"
    );
    c.assert_nothing_left();
}

fn pending(name: &str, app: &str) -> Value {
    json!({"namespace": "default", "name": name, "node": "node-a", "labels": {"app": app},
           "phase": "Pending", "containers": [{"name": "app", "command": ["/bin/false"]}]})
}

/// A target that is not running is skipped with a line; nothing left means exit 2.
#[test]
fn a_target_that_is_not_running_is_skipped() {
    let Some(s) = setup("a_target_that_is_not_running_is_skipped") else {
        return;
    };
    let c = Cluster::start(
        s.dir.path(),
        "a",
        json!({
            "pods": [
                pending("web-1", "web"), pending("db-0", "db"), pending("logs-x1", "logs"),
                s.pod("web-2", "node-a", json!({"app": "idle"}), "never"),
            ],
            "statefulsets": [{"namespace": "default", "name": "db", "replicas": 1,
                              "selector": {"matchLabels": {"app": "db"}}}],
            "daemonsets": [{"namespace": "default", "name": "logs",
                            "selector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["logs"]}]}}],
        }),
    );
    let kc = kubeconfig(s.dir.path(), &[("a", &c)]);
    // Workloads resolve through their selectors to the (not running) pods.
    for (target, pod) in [("sts/db", "db-0"), ("ds/logs", "logs-x1")] {
        let (status, _, stderr) = mapguard(&kc, &["trace", target]).finish(Duration::from_secs(60));
        assert_eq!(status.code(), Some(2), "{target}: {stderr}");
        assert!(
            stderr.contains(&format!("skipping pod default/{pod}")),
            "{target}: {stderr}"
        );
    }
    // -c names a container the pod does not have.
    let (status, _, stderr) =
        mapguard(&kc, &["trace", "pod/web-2", "-c", "nope"]).finish(Duration::from_secs(60));
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("no container \"nope\" (it has app)"),
        "{stderr}"
    );

    let (status, _, stderr) =
        mapguard(&kc, &["trace", "pod/web-1"]).finish(Duration::from_secs(60));
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("skipping pod default/web-1") && stderr.contains("Pending"),
        "{stderr}"
    );
    assert!(stderr.contains("nothing to trace"), "{stderr}");
    assert!(c.pod_creates().is_empty());

    let (status, _, stderr) = mapguard(&kc, &["trace", "pod/nope"]).finish(Duration::from_secs(60));
    assert_eq!(status.code(), Some(2));
    assert!(
        stderr.contains("pod/nope not found in namespace default"),
        "{stderr}"
    );
}

/// Ctrl-C and SIGTERM: the agents send their summaries, the pods are deleted.
#[test]
fn sigint_and_sigterm_leave_nothing_behind() {
    let Some(s) = setup("sigint_and_sigterm_leave_nothing_behind") else {
        return;
    };
    for sig in ["INT", "TERM"] {
        let tag = format!("s{sig}");
        let c = Cluster::start(
            s.dir.path(),
            &format!("sig{sig}"),
            json!({
                "pods": [s.pod("web-1", "node-a", json!({"app": "web"}), &tag)],
            }),
        );
        let kc = kubeconfig(s.dir.path(), &[("a", &c)]);
        let mut p = mapguard(&kc, &["trace", "pod/web-1", "-o", "json"]);
        wait_attached(&mut p, &["web-1"]);
        s.go(&[&tag]);
        p.wait_for("the last delete", Duration::from_secs(30), move |v| {
            v["kind"] == "event"
                && v["op"] == "delete"
                && v["key"] == format!("{tag}-{}", N / 2 - 1)
        });
        p.signal(sig);
        let (status, lines, stderr) = p.finish(Duration::from_secs(60));
        assert!(status.success(), "SIG{sig}: {status:?}\n{stderr}");
        let summary = lines.last().unwrap();
        assert_eq!(summary["kind"], "summary", "SIG{sig}");
        assert!(
            summary["ops"]["delete"].as_u64().unwrap() >= N as u64 / 2,
            "SIG{sig}: the agent's own summary was merged"
        );
        assert!(
            !lines.iter().any(|l| l["kind"] == "error"),
            "SIG{sig}: {lines:?}"
        );
        c.assert_nothing_left();
    }
}

/// Agent pods that fail: one crashes, one cannot pull its image, one cannot be
/// scheduled, one is killed mid-run. Each is an error line naming why; the
/// healthy agent goes on; exit 2; nothing left. (Targets found with -A.)
#[test]
fn failing_agent_pods_are_diagnosed_and_cleaned_up() {
    let Some(s) = setup("failing_agent_pods_are_diagnosed_and_cleaned_up") else {
        return;
    };
    let web = json!({"app": "web"});
    let c = Cluster::start(
        s.dir.path(),
        "a",
        json!({
            "nodes": ["node-a", "node-b", "node-c", "node-d", "node-e"],
            "pods": [
                s.pod("web-1", "node-a", web.clone(), "f1"),
                s.pod("web-2", "node-b", web.clone(), "f2"),
                s.pod("web-3", "node-c", web.clone(), "f3"),
                s.pod("web-4", "node-d", web.clone(), "f4"),
                s.pod("web-5", "node-e", web, "f5"),
            ],
            "agent_behaviour": {"node-b": "crash", "node-c": "image_pull_error", "node-d": "unschedulable"},
        }),
    );
    let kc = kubeconfig(s.dir.path(), &[("a", &c)]);
    let mut p = mapguard(
        &kc,
        &[
            "trace",
            "-l",
            "app=web",
            "-A",
            "-o",
            "json",
            "--duration",
            "8s",
            "--pod-running-timeout",
            "20s",
        ],
    );
    wait_attached(&mut p, &["web-1", "web-5"]);
    // The agent on node-e dies mid-run (OOM kill, node trouble): SIGKILL, no summary.
    let agent_e = c
        .agents()
        .into_iter()
        .find(|a| a["node"] == "node-e")
        .expect("an agent pod on node-e");
    let pid_e = agent_e["pid"].as_u64().expect("its pid").to_string();
    assert!(Command::new("kill")
        .args(["-KILL", &pid_e])
        .status()
        .unwrap()
        .success());
    s.go(&["f1", "f2", "f3", "f4", "f5"]);
    let (status, lines, stderr) = p.finish(Duration::from_secs(90));
    assert_eq!(status.code(), Some(2), "{stderr}");
    let errors = of(&lines, "error");
    let about = |node: &str| -> String {
        errors
            .iter()
            .filter(|e| e["node"] == node)
            .map(|e| e["message"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
            .join("\n")
    };
    let crash = about("node-b");
    assert!(
        crash.contains("exit code 1") && crash.contains("Operation not permitted"),
        "{crash}"
    );
    assert!(about("node-c").contains("cannot pull image"), "{errors:?}");
    assert!(
        about("node-d").contains("cannot be scheduled"),
        "{errors:?}"
    );
    let died = about("node-e");
    assert!(
        died.contains("ended before its summary") && died.contains("exit code 137"),
        "{died}"
    );
    assert!(about("node-a").is_empty(), "{errors:?}");
    // -o json: stdout has the error lines; stderr says each failed pod's
    // reason too, one line each, for the person watching.
    for node in ["node-b", "node-c", "node-d", "node-e"] {
        let said: Vec<&str> = stderr
            .lines()
            .filter(|l| {
                l.starts_with("error: agent pod ") && l.contains(&format!(" on node {node}: "))
            })
            .collect();
        assert_eq!(said.len(), 1, "{node}: {stderr}");
        assert!(
            about(node).lines().any(|m| said[0].ends_with(m)),
            "{node}: {stderr}"
        );
    }
    assert_eq!(
        main_ops(&lines).get("web-1"),
        Some(&expected_ops("f1")),
        "the healthy agent went on"
    );
    assert_eq!(lines.last().unwrap()["kind"], "summary");
    c.assert_nothing_left();
}

/// A log stream that breaks mid-run (a proxy or an apiserver restart) is an
/// error line and exit 2, never a quiet end that reads as the whole trace.
#[test]
fn a_broken_log_stream_is_an_error_not_an_end() {
    let Some(s) = setup("a_broken_log_stream_is_an_error_not_an_end") else {
        return;
    };
    let web = json!({"app": "web"});
    let c = Cluster::start(
        s.dir.path(),
        "a",
        json!({
            "nodes": ["node-a", "node-b"],
            "pods": [
                s.pod("web-1", "node-a", web.clone(), "b1"),
                s.pod("web-2", "node-b", web, "b2"),
            ],
            "agent_behaviour": {"node-b": "log_break"},
        }),
    );
    let kc = kubeconfig(s.dir.path(), &[("a", &c)]);
    let mut p = mapguard(
        &kc,
        &["trace", "-l", "app=web", "-o", "json", "--duration", "6s"],
    );
    wait_attached(&mut p, &["web-1"]);
    s.go(&["b1", "b2"]);
    let (status, lines, stderr) = p.finish(Duration::from_secs(90));
    assert_eq!(status.code(), Some(2), "{stderr}");
    let broke: Vec<&Value> = of(&lines, "error")
        .into_iter()
        .filter(|e| e["node"] == "node-b")
        .collect();
    assert_eq!(broke.len(), 1, "{lines:?}");
    let message = broke[0]["message"].as_str().unwrap();
    assert!(message.contains("log stream broke"), "{message}");
    assert!(stderr.contains(&format!("error: {message}")), "{stderr}");
    assert!(stderr.contains("1 of 2 agent pods failed"), "{stderr}");
    assert_eq!(
        main_ops(&lines).get("web-1"),
        Some(&expected_ops("b1")),
        "the other agent went on"
    );
    c.assert_nothing_left();
}

/// `--keep` leaves the pods; `cleanup` finds them by label and deletes them.
#[test]
fn keep_then_cleanup_sweeps_by_label() {
    let Some(s) = setup("keep_then_cleanup_sweeps_by_label") else {
        return;
    };
    let c = Cluster::start(
        s.dir.path(),
        "a",
        json!({
            "pods": [s.pod("web-1", "node-a", json!({"app": "web"}), "k1")],
        }),
    );
    let kc = kubeconfig(s.dir.path(), &[("a", &c)]);
    let (status, _, stderr) = mapguard(
        &kc,
        &[
            "trace",
            "pod/web-1",
            "-o",
            "json",
            "--duration",
            "2s",
            "--keep",
        ],
    )
    .finish(Duration::from_secs(60));
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("--keep: left 1 agent pod(s)"), "{stderr}");
    assert_eq!(c.agent_pods().len(), 1, "--keep keeps the pod");

    let mut cmd = mapguard_command(&["cleanup"]);
    cmd.env("KUBECONFIG", &kc);
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.lines().filter(|l| l.contains("deleted")).count(),
        1,
        "{stdout}"
    );
    c.assert_nothing_left();
}

/// `watch -o table` over every context: one view whose totals and rows hold
/// both clusters' pods.
#[test]
fn watch_table_merges_every_agent() {
    let Some(s) = setup("watch_table_merges_every_agent") else {
        return;
    };
    let (a, b) = s.two_clusters("ta", "tb");
    let kc = kubeconfig(s.dir.path(), &[("a", &a), ("b", &b)]);
    let mut cmd = mapguard_command(&[
        "watch",
        "-l",
        "app=web",
        "--all-contexts",
        "--interval",
        "500ms",
        "--duration",
        "8s",
    ]);
    cmd.env("KUBECONFIG", &kc);
    let p = Mapguard::spawn_cmd(cmd, false);
    let deadline = Instant::now() + Duration::from_secs(60);
    while p.stderr().matches("watching pid").count() < 2 {
        assert!(
            Instant::now() < deadline,
            "both agents never attached:\n{}",
            p.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    s.go(&["ta", "tb"]);
    let (status, stdout, stderr) = p.finish_raw(Duration::from_secs(90));
    assert!(status.success(), "{stderr}");
    // The last view: from its totals line to the end.
    let last = &stdout[stdout.rfind(" assigns, ").expect("a table")..];
    let start = stdout[..stdout.len() - last.len()]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let view = &stdout[start..];
    let totals: Vec<u64> = view
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    assert!(
        totals[0] >= N as u64 && totals[1] >= 2 * N as u64,
        "both clusters' counts add up: {view}"
    );
    let put_rows: Vec<&str> = view.lines().filter(|l| l.contains("main.put")).collect();
    assert_eq!(put_rows.len(), 2, "one main.put row per pod: {view}");
    assert!(
        put_rows.iter().all(|r| r.contains(&N.to_string())),
        "{view}"
    );
    a.assert_nothing_left();
    b.assert_nothing_left();
}

/// `delete-audit` on cluster targets: a violation names the pod's container;
/// a container with no Go process makes the audit "could not audit" (exit 2).
#[test]
fn delete_audit_in_a_cluster() {
    let Some(s) = setup("delete_audit_in_a_cluster") else {
        return;
    };
    let c = s.web_and_side("da");
    let kc = kubeconfig(s.dir.path(), &[("a", &c)]);
    let policy = s.dir.join("policy.yaml");
    std::fs::write(
        &policy,
        "rules:\n- name: no-deletes-from-del\n  forbidden_deleters:\n    caller: '^main\\.del$'\n- name: covered\n  coverage: true\n",
    )
    .unwrap();
    let policy = policy.to_str().unwrap();

    let p = mapguard(
        &kc,
        &[
            "delete-audit",
            "pod/web-1",
            "--duration",
            "8s",
            "-o",
            "json",
            "--policy",
            policy,
        ],
    );
    // The agent attaches within its first scan; then the workload runs.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !p.stderr().contains("is running") {
        assert!(Instant::now() < deadline, "{}", p.stderr());
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    s.go(&["da"]);
    let (status, lines, stderr) = p.finish(Duration::from_secs(90));
    assert_eq!(status.code(), Some(1), "{stderr}");
    let verdict = &lines[1];
    assert_eq!(verdict["kind"], "verdict");
    let v = &verdict["violations"][0];
    assert_eq!(
        (&v["rule"], &v["target"]),
        (&json!("no-deletes-from-del"), &json!("default/web-1/app"))
    );
    assert!(
        v["details"][0]
            .as_str()
            .unwrap()
            .contains(&format!("deleted {} times", N / 2)),
        "{v}"
    );
    c.assert_nothing_left();

    let (status, lines, stderr) = mapguard(
        &kc,
        &[
            "delete-audit",
            "-l",
            "app in (web,side)",
            "--duration",
            "4s",
            "-o",
            "json",
            "--policy",
            policy,
        ],
    )
    .finish(Duration::from_secs(90));
    assert_eq!(
        status.code(),
        Some(2),
        "a container without Go is not audited: {stderr}"
    );
    let errors = lines[0]["errors"].to_string();
    assert!(
        errors.contains("no Go process was traced in container default/side-1/app"),
        "{errors}"
    );
    assert_eq!(lines[1]["could_not_audit"], true);
    c.assert_nothing_left();
}

/// `check pod/NAME`: an agent pod reads the container's binary on its node.
#[test]
fn check_a_pod_through_its_agent() {
    let Some(s) = setup("check_a_pod_through_its_agent") else {
        return;
    };
    let c = s.web_and_side("ck");
    let kc = kubeconfig(s.dir.path(), &[("a", &c)]);
    let (status, lines, stderr) =
        mapguard(&kc, &["check", "pod/web-1", "-o", "json"]).finish(Duration::from_secs(60));
    assert!(status.success(), "{stderr}");
    assert_eq!(lines.len(), 1, "{lines:?}");
    let l = &lines[0];
    assert_eq!(
        (&l["kind"], &l["pod"], &l["container"]),
        (&json!("check"), &json!("web-1"), &json!("app"))
    );
    assert_eq!(l["traceable"], true);
    assert_eq!(l["go_version"], "go1.25.5");
    assert_eq!(l["map_impl"], "swiss");
    assert!(l["probes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["function"] == "runtime.mapdelete_faststr"));

    let mut cmd = mapguard_command(&["check", "pod/web-1"]);
    cmd.env("KUBECONFIG", &kc);
    let (status, table, stderr) =
        Mapguard::spawn_cmd(cmd, false).finish_raw(Duration::from_secs(60));
    assert!(status.success(), "{stderr}");
    let row = table
        .lines()
        .find(|l| l.contains("web-1/app"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        row.contains("go1.25.5") && row.contains("swiss") && row.contains("yes"),
        "{table}"
    );
    assert!(table.contains("POD/CONTAINER"), "{table}");

    // --no-headers: the same row, alone; -o yaml: the JSON line as a YAML document.
    let mut cmd = mapguard_command(&["check", "pod/web-1", "--no-headers"]);
    cmd.env("KUBECONFIG", &kc);
    let (status, bare, stderr) =
        Mapguard::spawn_cmd(cmd, false).finish_raw(Duration::from_secs(60));
    assert!(status.success(), "{stderr}");
    let rows: Vec<&str> = bare.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(rows.len(), 1, "{bare}");
    assert!(
        rows[0].contains("web-1/app") && rows[0].contains("go1.25.5"),
        "{bare}"
    );
    let mut cmd = mapguard_command(&["check", "pod/web-1", "-o", "yaml"]);
    cmd.env("KUBECONFIG", &kc);
    let (status, yaml, stderr) =
        Mapguard::spawn_cmd(cmd, false).finish_raw(Duration::from_secs(60));
    assert!(status.success(), "{stderr}");
    assert!(yaml.starts_with("---\n"), "{yaml}");
    let doc: serde_json::Value =
        serde_yaml_ng::from_str(&yaml).unwrap_or_else(|e| panic!("{e}: {yaml}"));
    assert_eq!(doc, *l, "-o yaml and -o json differ");

    let (status, lines, stderr) =
        mapguard(&kc, &["check", "pod/side-1", "-o", "json"]).finish(Duration::from_secs(60));
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert_eq!(lines[0]["traceable"], false);
    assert!(
        lines[0]["reason"]
            .as_str()
            .unwrap()
            .contains("not a Go binary"),
        "{}",
        lines[0]
    );
    assert!(
        stderr.contains("error: not traceable: side-1/app"),
        "{stderr}"
    );
    c.assert_nothing_left();
}

/// Runs the tool with `KUBECONFIG` set to `kubeconfig` (a path or a list of
/// them) to its end: (status, stdout, stderr).
fn mapguard_raw(kubeconfig: &std::ffi::OsStr, args: &[&str]) -> (ExitStatus, String, String) {
    let mut cmd = mapguard_command(args);
    cmd.env("KUBECONFIG", kubeconfig);
    Mapguard::spawn_cmd(cmd, false).finish_raw(Duration::from_secs(60))
}

/// The one `error: ...` line of a run that failed with exit 2.
fn one_error(what: &str, (status, _, stderr): &(ExitStatus, String, String)) -> String {
    assert_eq!(status.code(), Some(2), "{what}: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{what}: one line on stderr, got:\n{stderr}");
    assert!(lines[0].starts_with("error: "), "{what}: {stderr}");
    assert!(!stderr.contains("panicked"), "{what}: {stderr}");
    lines[0].to_string()
}

/// KUBECONFIG as kubectl reads it: a file in the list that does not exist is
/// skipped, in any place; none at all is an error, and so is a missing
/// --kubeconfig. --cluster and --user must name entries of the kubeconfig.
#[test]
fn kubeconfig_lists_and_overrides_read_like_kubectl() {
    let Some(s) = setup("kubeconfig_lists_and_overrides_read_like_kubectl") else {
        return;
    };
    let c = Cluster::start(
        s.dir.path(),
        "a",
        json!({"pods": [pending("web-1", "web")]}),
    );
    let good = kubeconfig(s.dir.path(), &[("a", &c)]);
    let missing = s.dir.join("missing.yaml");
    for list in [[&good, &missing], [&missing, &good]] {
        let kc = std::env::join_paths(list).unwrap();
        let (status, _, stderr) = mapguard_raw(&kc, &["cleanup"]);
        assert!(status.success(), "{kc:?}: {stderr}");
        assert!(stderr.contains("no agent pods found"), "{kc:?}: {stderr}");
    }

    let none = std::env::join_paths([&missing, &s.dir.join("gone.yaml")]).unwrap();
    let line = one_error("no file exists", &mapguard_raw(&none, &["cleanup"]));
    assert!(
        line.contains("none of the kubeconfig files in KUBECONFIG exists")
            && line.contains(&missing.display().to_string()),
        "{line}"
    );
    // cleanup and check cannot trace on this machine: no --pid hint there.
    assert!(!line.contains("--pid"), "{line}");
    let line = one_error(
        "trace, no file",
        &mapguard_raw(&none, &["trace", "pod/web-1"]),
    );
    assert!(line.contains("(or use --pid / -- CMD"), "{line}");
    let line = one_error(
        "check, no file",
        &mapguard_raw(&none, &["check", "pod/web-1"]),
    );
    assert!(!line.contains("--pid"), "{line}");

    // An explicit --kubeconfig that does not exist is an error even when KUBECONFIG is good.
    let flag = missing.to_str().unwrap();
    let line = one_error(
        "--kubeconfig missing",
        &mapguard_raw(good.as_os_str(), &["cleanup", "--kubeconfig", flag]),
    );
    assert_eq!(
        line,
        format!("error: the kubeconfig {flag} does not exist (--kubeconfig); point --kubeconfig or KUBECONFIG at a valid kubeconfig")
    );

    let line = one_error(
        "--user nope",
        &mapguard_raw(good.as_os_str(), &["cleanup", "--user", "nope"]),
    );
    assert!(line.contains("auth info \"nope\" does not exist"), "{line}");
    let line = one_error(
        "--cluster nope",
        &mapguard_raw(good.as_os_str(), &["cleanup", "--cluster", "nope"]),
    );
    assert!(line.contains("cluster \"nope\" does not exist"), "{line}");
    // Existing names are used.
    let (status, _, stderr) = mapguard_raw(
        good.as_os_str(),
        &["cleanup", "--cluster", "a", "--user", "tester"],
    );
    assert!(status.success(), "{stderr}");
    // Nothing was asked of the API server for the runs that failed.
    let asked = c.requests().len();
    one_error(
        "--user nope, trace",
        &mapguard_raw(good.as_os_str(), &["trace", "pod/web-1", "--user", "nope"]),
    );
    assert_eq!(c.requests().len(), asked);
}

/// `check`'s hints name what check takes; a pod that is not running says so.
#[test]
fn check_hints_name_what_check_takes() {
    let Some(s) = setup("check_hints_name_what_check_takes") else {
        return;
    };
    let c = Cluster::start(
        s.dir.path(),
        "a",
        json!({"pods": [pending("web-1", "web")]}),
    );
    let kc = kubeconfig(s.dir.path(), &[("a", &c)]);
    let line = one_error("pod/", &mapguard_raw(kc.as_os_str(), &["check", "pod/"]));
    assert!(line.contains("check takes pod/NAME"), "{line}");
    assert!(!line.contains("deploy/"), "{line}");
    let line = one_error(
        "deploy/x",
        &mapguard_raw(kc.as_os_str(), &["check", "deploy/x"]),
    );
    assert!(
        line.contains("check does not take deploy/NAME") && line.contains("pod/NAME"),
        "{line}"
    );

    let (status, stdout, stderr) = mapguard_raw(kc.as_os_str(), &["check", "pod/web-1"]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stdout.trim().is_empty(), "{stdout}");
    let error = stderr.lines().last().unwrap_or("");
    assert_eq!(
        error,
        "error: pod default/web-1 is Pending: it has no running container to read the Go binary from; check it once it is Running (kubectl get pod web-1 -n default -w)",
        "{stderr}"
    );
    assert!(!stderr.contains("nothing to trace"), "{stderr}");
    assert!(c.pod_creates().is_empty());
}

/// A server that answers, but not as a Kubernetes API server (here a web
/// page): one line naming the URL and what came back, not "cannot reach".
#[test]
fn a_server_that_is_not_an_api_server_is_named() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let body = "<html><body>Welcome to nginx!</body></html>";
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let dir = TempDir::new("not_an_api_server");
    let kc = dir.join("kubeconfig");
    std::fs::write(
        &kc,
        format!("apiVersion: v1\nkind: Config\ncurrent-context: web\nclusters:\n- name: web\n  cluster: {{server: 'http://127.0.0.1:{port}'}}\ncontexts:\n- name: web\n  context: {{cluster: web, user: u}}\nusers:\n- name: u\n  user: {{token: t}}\n"),
    )
    .unwrap();
    for args in [&["cleanup"][..], &["trace", "pod/x"], &["check", "pod/x"]] {
        let line = one_error(&args.join(" "), &mapguard_raw(kc.as_os_str(), args));
        assert_eq!(
            line,
            format!("error: context web: the server at http://127.0.0.1:{port} answered GET /version with HTTP 200 OK, text/html and a body that is not a Kubernetes API response (\"<html><body>Welcome to nginx!</body></html>\"); check that the kubeconfig's server for this context is the API server's address"),
            "{args:?}"
        );
    }
    // Nothing listening: unreachable, said with the URL and the cause.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    std::fs::write(
        &kc,
        format!("apiVersion: v1\nkind: Config\ncurrent-context: web\nclusters:\n- name: web\n  cluster: {{server: 'http://127.0.0.1:{port}'}}\ncontexts:\n- name: web\n  context: {{cluster: web}}\n"),
    )
    .unwrap();
    let line = one_error("closed port", &mapguard_raw(kc.as_os_str(), &["cleanup"]));
    assert!(
        line.starts_with(&format!(
            "error: context web: cannot reach the API server at http://127.0.0.1:{port}: "
        )) && line.contains("Connection refused")
            && !line.contains("ServiceError"),
        "{line}"
    );
}

/// `delete-audit KUBECONFIG ARGS` to its end, stdout as text (JUnit is not JSON).
fn audit_raw(kubeconfig: &Path, args: &[&str]) -> (ExitStatus, String, String) {
    let mut cmd = mapguard_command(args);
    cmd.env("KUBECONFIG", kubeconfig);
    Mapguard::spawn_cmd(cmd, false).finish_raw(Duration::from_secs(90))
}

/// A cluster `delete-audit` with nothing it may audit (its one target is
/// Pending; a permission is missing): the report itself (JSON and JUnit) says
/// why, since a CI system keeps the report and not stderr.
#[test]
fn delete_audit_reports_say_why_nothing_was_audited() {
    let Some(s) = setup("delete_audit_reports_say_why_nothing_was_audited") else {
        return;
    };
    let c = Cluster::start(
        s.dir.path(),
        "a",
        json!({"pods": [pending("web-1", "web")]}),
    );
    let kc = kubeconfig(s.dir.path(), &[("a", &c)]);
    let args = |format| {
        [
            "delete-audit",
            "pod/web-1",
            "--duration",
            "5s",
            "-o",
            format,
        ]
    };
    let pending_why = "skipping pod default/web-1: phase Pending, not Running (context a)";
    let (status, lines, stderr) = mapguard(&kc, &args("json")).finish(Duration::from_secs(90));
    assert_eq!(status.code(), Some(2), "{stderr}");
    let errors = lines[0]["errors"].to_string();
    assert!(errors.contains(pending_why), "{errors}");
    assert!(!errors.contains("see the lines above"), "{errors}");
    let coverage = &lines[1]["violations"][0];
    assert_eq!(coverage["target"], "(all targets)", "{coverage}");
    assert!(
        coverage["details"].to_string().contains(pending_why),
        "{coverage}"
    );
    let (status, xml, stderr) = audit_raw(&kc, &args("junit"));
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        xml.contains("<failure type=\"violation\" message=\"nothing to trace: no running pod matches the targets (skipping pod default/web-1: phase Pending, not Running (context a))"),
        "{xml}"
    );
    assert!(c.pod_creates().is_empty());
    drop(c);

    let c = Cluster::start(
        s.dir.path(),
        "r",
        json!({
            "pods": [s.pod("web-1", "node-a", json!({"app": "web"}), "never")],
            "rbac_deny": [
                {"verb": "create", "resource": "pods", "namespace": "mapguard"},
                {"verb": "get", "resource": "pods", "subresource": "log"},
            ],
        }),
    );
    let kc = kubeconfig(s.dir.path(), &[("a", &c)]);
    let (status, xml, stderr) = audit_raw(&kc, &args("junit"));
    assert_eq!(status.code(), Some(2), "{stderr}");
    for missing in [
        "missing 2 permission(s): ",
        "create pods in namespace mapguard (context a)",
        "get pods/log in namespace mapguard (context a)",
    ] {
        assert!(xml.contains(missing), "{missing}: {xml}");
    }
    assert!(!xml.contains("listed above"), "{xml}");
    assert!(c.pod_creates().is_empty());
    c.assert_nothing_left();
}

/// A cluster `delete-audit` stopped by SIGTERM before its duration: not a
/// pass (exit 2, coverage failed, `interrupted` in the report), and the agent
/// pods are deleted as on any stop.
#[test]
fn an_interrupted_cluster_audit_is_not_a_pass() {
    let Some(s) = setup("an_interrupted_cluster_audit_is_not_a_pass") else {
        return;
    };
    let c = Cluster::start(
        s.dir.path(),
        "a",
        json!({"pods": [s.pod("web-1", "node-a", json!({"app": "web"}), "ia")]}),
    );
    let kc = kubeconfig(s.dir.path(), &[("a", &c)]);
    let p = mapguard(
        &kc,
        &[
            "delete-audit",
            "pod/web-1",
            "--duration",
            "60s",
            "-o",
            "json",
        ],
    );
    // Said at the first line from the agent: it is attached.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !p.stderr().contains("auditing for 60s") {
        assert!(Instant::now() < deadline, "{}", p.stderr());
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    p.signal("TERM");
    let (status, lines, stderr) = p.finish(Duration::from_secs(90));
    assert_eq!(status.code(), Some(2), "{stderr}");
    let (report, verdict) = (&lines[0], &lines[1]);
    assert_eq!(report["interrupted"], true, "{report:#}");
    assert_eq!(report["requested_duration_ms"], 60_000);
    assert!(report["duration_ms"].as_u64().unwrap() < 60_000);
    assert_eq!(verdict["pass"], false);
    let coverage = &verdict["violations"][0];
    assert_eq!(
        (&coverage["rule"], &coverage["target"]),
        (&json!("coverage"), &json!("default/web-1/app")),
        "{verdict:#}"
    );
    assert!(
        coverage["details"][0]
            .as_str()
            .unwrap()
            .contains("of the 60s asked: not a full audit"),
        "{coverage}"
    );
    c.assert_nothing_left();
}
