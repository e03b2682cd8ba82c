//! The cluster side on a real single-node Kubernetes: tests/cluster/up.sh
//! starts etcd, kube-apiserver (RBAC + Node authorizers, Pod Security
//! admission, an audit log), controller-manager, scheduler, containerd and a
//! kubelet, all real. Agent pods run the agent image up.sh builds from this
//! binary, as real containers with exactly the capabilities their spec asks
//! for; targets are real Go programs (tests/go/podwork) in real pods.
//!
//! Every CLI run goes through kubectl's own plugin discovery: the built
//! kubectl, with kubectl-mapguard beside it on PATH, runs `kubectl mapguard`.
//! Each test owns its namespaces, so the tests run side by side and "nothing
//! left" means nothing in that test's agent namespace.
//!
//! Under MAPGUARD_REQUIRE_BPF=1 (CI) a cluster that does not come up fails
//! every test here; elsewhere they skip loudly.

mod common;

use common::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// podwork's map operations per round: N assigns, N/2 deletes.
const N: usize = 300;
const CAP_SYS_PTRACE: u64 = 1 << 19;
const CAP_SYS_ADMIN: u64 = 1 << 21;
const CAP_PERFMON: u64 = 1 << 38;
const CAP_BPF: u64 = 1 << 39;

struct Real {
    kubeconfig: PathBuf,
    /// kubectl and kubectl-mapguard side by side: what PATH gets.
    path_dir: PathBuf,
    agent_image: String,
    podwork_image: String,
    audit_log: PathBuf,
    node: String,
}

/// The cluster, brought up once for every test of this file.
fn real(test: &str) -> Option<&'static Real> {
    static REAL: OnceLock<Result<Real, String>> = OnceLock::new();
    if !bpf_available_or_skip(test) {
        return None;
    }
    match REAL.get_or_init(bring_up) {
        Ok(r) => Some(r),
        Err(why) => {
            skip(&format!("{test}: the real cluster did not start: {why}"));
            None
        }
    }
}

fn bring_up() -> Result<Real, String> {
    let up = manifest_dir().join("tests/cluster/up.sh");
    let out = Command::new("bash")
        .arg(&up)
        .env("MAPGUARD_BIN", mapguard_bin())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("bash {}: {e}", up.display()))?;
    if !out.status.success() {
        return Err(format!("{} exited with {}", up.display(), out.status));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let var = |k: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .map(str::to_string)
            .ok_or_else(|| format!("up.sh printed no {k}= line"))
    };
    let kubeconfig = PathBuf::from(var("KUBECONFIG")?);
    let kubectl = PathBuf::from(var("KUBECTL")?);
    let state = kubeconfig.parent().unwrap().to_path_buf();
    let path_dir = target_dir().join("real-cluster-path");
    std::fs::create_dir_all(&path_dir).map_err(|e| e.to_string())?;
    for (name, to) in [("kubectl", kubectl), ("kubectl-mapguard", mapguard_bin())] {
        let link = path_dir.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&to, &link).map_err(|e| e.to_string())?;
    }
    let podwork = build_go(&variant("go1.25"), Path::new("tests/go/podwork"))
        .ok_or("no go1.25 toolchain for podwork")?;
    let podwork_image = format!("mapguard.local/podwork:{}", &sha256_of(&podwork)[..12]);
    let st = Command::new("bash")
        .arg(manifest_dir().join("tests/cluster/image.sh"))
        .arg(&podwork_image)
        .arg(&podwork)
        .status()
        .map_err(|e| e.to_string())?;
    if !st.success() {
        return Err(format!("image.sh {podwork_image} failed"));
    }
    Ok(Real {
        kubeconfig,
        path_dir,
        agent_image: var("AGENT_IMAGE")?,
        podwork_image,
        audit_log: state.join("audit.log"),
        node: std::env::var("MAPGUARD_NODE_NAME").unwrap_or_else(|_| "mapguard-node".into()),
    })
}

fn sha256_of(p: &Path) -> String {
    let out = Command::new("sha256sum").arg(p).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

impl Real {
    fn path_env(&self) -> String {
        format!(
            "{}:{}",
            self.path_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }

    /// `kubectl ARGS` as the admin; panics when it fails.
    fn kubectl(&self, args: &[&str]) -> String {
        self.kubectl_in(args, None)
    }

    fn kubectl_in(&self, args: &[&str], stdin: Option<&str>) -> String {
        let (st, out, err) = self.kubectl_try(args, stdin);
        assert!(st.success(), "kubectl {args:?}: {st}\n{err}");
        out
    }

    fn kubectl_try(&self, args: &[&str], stdin: Option<&str>) -> (ExitStatus, String, String) {
        let mut cmd = Command::new(self.path_dir.join("kubectl"));
        cmd.args(args).env("KUBECONFIG", &self.kubeconfig);
        run_with_input(cmd, stdin.unwrap_or(""))
    }

    fn apply(&self, yaml: &str) {
        self.kubectl_in(&["apply", "-f", "-"], Some(yaml));
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.kubectl(&a)).unwrap()
    }

    /// `kubectl mapguard ARGS`, found by kubectl's plugin discovery on PATH.
    fn plugin(&self, kubeconfig: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(self.path_dir.join("kubectl"));
        cmd.arg("mapguard")
            .args(args)
            .env("PATH", self.path_env())
            .env("KUBECONFIG", kubeconfig)
            .env_remove("RUST_BACKTRACE")
            .env("NO_COLOR", "1");
        cmd
    }

    fn mapguard(&self, args: &[&str]) -> Mapguard {
        Mapguard::spawn_cmd(self.plugin(&self.kubeconfig, args), true)
    }

    fn mapguard_raw(&self, args: &[&str], timeout: Duration) -> (ExitStatus, String, String) {
        Mapguard::spawn_cmd(self.plugin(&self.kubeconfig, args), false).finish_raw(timeout)
    }

    /// Pods in `ns`, as JSON objects.
    fn pods(&self, ns: &str) -> Vec<Value> {
        self.json(&["get", "pods", "-n", ns])["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Waits until `ns` holds no pod at all; panics with what is left.
    fn assert_no_pods(&self, ns: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let left = self.pods(ns);
            if left.is_empty() {
                return;
            }
            if Instant::now() > deadline {
                let names: Vec<_> = left
                    .iter()
                    .map(|p| format!("{} ({})", p["metadata"]["name"], p["status"]["phase"]))
                    .collect();
                panic!("agent pods left in {ns} after {within:?}: {names:?}");
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Audit log entries written after byte `from`.
    fn audit_since(&self, from: u64) -> Vec<Value> {
        let text = std::fs::read(&self.audit_log).unwrap_or_default();
        String::from_utf8_lossy(&text[(from as usize).min(text.len())..])
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    fn audit_len(&self) -> u64 {
        std::fs::metadata(&self.audit_log)
            .map(|m| m.len())
            .unwrap_or(0)
    }
}

/// A namespace of one test, deleted when the test ends.
struct Ns<'a> {
    r: &'a Real,
    name: String,
}

impl<'a> Ns<'a> {
    /// `level`: the Pod Security `enforce` label (agent namespaces need privileged).
    fn new(r: &'a Real, name: &str, level: &str) -> Ns<'a> {
        let _ = r.kubectl_try(&["delete", "namespace", name, "--wait=true"], None);
        r.apply(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n  labels:\n    pod-security.kubernetes.io/enforce: {level}\n"
        ));
        // Pods cannot be created before the namespace's default ServiceAccount exists.
        let deadline = Instant::now() + Duration::from_secs(60);
        while !r
            .kubectl_try(&["get", "serviceaccount", "default", "-n", name], None)
            .0
            .success()
        {
            assert!(
                Instant::now() < deadline,
                "no default ServiceAccount in {name}"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
        Ns {
            r,
            name: name.to_string(),
        }
    }
}

impl Drop for Ns<'_> {
    fn drop(&mut self) {
        let _ = self
            .r
            .kubectl_try(&["delete", "namespace", &self.name, "--wait=false"], None);
    }
}

/// A Deployment of podwork: each replica's keys are tagged with its pod name.
fn deploy_podwork(r: &Real, ns: &str, name: &str, replicas: u32, n: usize) {
    r.apply(&format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: {ns}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      terminationGracePeriodSeconds: 1
      automountServiceAccountToken: false
      containers:
      - name: work
        image: {image}
        imagePullPolicy: IfNotPresent
        args: ["/tmp/go", "$(POD_NAME)", "{n}"]
        env:
        - name: POD_NAME
          valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}
"#,
        image = r.podwork_image
    ));
    r.kubectl(&[
        "rollout",
        "status",
        &format!("deploy/{name}"),
        "-n",
        ns,
        "--timeout",
        "120s",
    ]);
}

/// One test's world: a target namespace at Pod Security `baseline` (as an
/// application's is), an agent namespace at `agents_level`, and a podwork
/// Deployment `app` of `replicas`, running. Namespaces go when it does.
struct Scene {
    r: &'static Real,
    ns: Ns<'static>,
    agents: Ns<'static>,
    pods: Vec<String>,
}

fn scene(
    test: &str,
    tag: &str,
    app: &str,
    replicas: u32,
    n: usize,
    agents_level: &str,
) -> Option<Scene> {
    let r = real(test)?;
    let ns = Ns::new(r, &format!("mg-{tag}"), "baseline");
    let agents = Ns::new(r, &format!("mg-{tag}-agents"), agents_level);
    deploy_podwork(r, &ns.name, app, replicas, n);
    let pods = running_pods(r, &ns.name, app);
    assert_eq!(pods.len(), replicas as usize, "{pods:?}");
    Some(Scene {
        r,
        ns,
        agents,
        pods,
    })
}

/// Running pods of app=NAME, by name.
fn running_pods(r: &Real, ns: &str, app: &str) -> Vec<String> {
    r.json(&["get", "pods", "-n", ns, "-l", &format!("app={app}")])["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| {
            p["status"]["phase"] == "Running" && p["metadata"]["deletionTimestamp"].is_null()
        })
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

/// Host pids of the podwork processes whose tag (argv[2]) is `pod`.
fn podwork_pids(pod: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let argv: Vec<&[u8]> = cmd.split(|&b| b == 0).collect();
        if argv.len() >= 3 && argv[0].ends_with(b"podwork") && argv[2] == pod.as_bytes() {
            pids.push(pid);
        }
    }
    pids
}

/// Starts one round of podwork in the pod: the trigger file, created in the
/// container's own root through /proc.
fn trigger(pod: &str) {
    let pids = podwork_pids(pod);
    assert_eq!(pids.len(), 1, "one podwork process for {pod}: {pids:?}");
    std::fs::write(format!("/proc/{}/root/tmp/go", pids[0]), b"go").unwrap();
}

/// podwork's own events (caller main.put/main.del), per pod: (op, key), sorted.
fn podwork_ops(lines: &[Value]) -> BTreeMap<String, Vec<(String, String)>> {
    let ours = lines.iter().filter(|l| l["kind"] == "event").filter(|e| {
        let f = caller_func(e);
        if f != "main.put" && f != "main.del" {
            return false;
        }
        let want = if e["op"] == "assign" {
            "main.put"
        } else {
            "main.del"
        };
        assert_eq!(f, want, "caller of {e}");
        true
    });
    ops_by_pod(ours)
}

fn count_podwork_events(lines: &[Value]) -> usize {
    podwork_ops(lines).values().map(Vec::len).sum()
}

/// Waits until `want` podwork events have arrived.
fn wait_events(p: &mut Mapguard, want: usize, within: Duration) {
    p.wait_until("podwork event", within, |lines| {
        count_podwork_events(lines) >= want
    });
}

/// Waits for an `attached` line from each pod.
fn wait_attached(p: &mut Mapguard, pods: &[String]) {
    let mut left: BTreeSet<String> = pods.iter().cloned().collect();
    while !left.is_empty() {
        let l = p.wait_for("attached", Duration::from_secs(120), |l| {
            l["kind"] == "attached"
        });
        left.remove(l["pod"].as_str().unwrap_or_default());
    }
}

fn common_args<'a>(r: &'a Real, ns: &'a str, agents: &'a str) -> Vec<&'a str> {
    vec![
        "-n",
        ns,
        "--agent-namespace",
        agents,
        "--image",
        &r.agent_image,
        "--pod-running-timeout",
        "90s",
    ]
}

/// The pid on this host of the one container of `pod` (found by its id in /proc/PID/cgroup).
fn container_pid(r: &Real, ns: &str, pod: &str) -> u32 {
    let p = r.json(&["get", "pod", pod, "-n", ns]);
    let id = p["status"]["containerStatuses"][0]["containerID"]
        .as_str()
        .expect("a container id")
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if std::fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|c| c.contains(&id)) {
            return pid;
        }
    }
    panic!("no process of container {id} ({ns}/{pod})");
}

fn cap_eff_of(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let v = s.lines().find_map(|l| l.strip_prefix("CapEff:")).unwrap();
    u64::from_str_radix(v.trim(), 16).unwrap()
}

fn assert_exact_trace(r: &Real, ns: &str, lines: &[Value], pods: &[String], rounds: usize) {
    assert_protocol_v1(lines);
    let got = podwork_ops(lines);
    let want: BTreeMap<String, Vec<(String, String)>> = pods
        .iter()
        .map(|p| {
            let mut v = Vec::new();
            for _ in 0..rounds {
                v.extend(podwork_expected_ops(p, N));
            }
            v.sort();
            (p.clone(), v)
        })
        .collect();
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "pods with podwork events"
    );
    for (pod, ops) in &want {
        assert!(
            got[pod] == *ops,
            "{pod}: events differ from podwork's own operations ({} vs {})",
            got[pod].len(),
            ops.len()
        );
    }
    for e in lines.iter().filter(|l| l["kind"] == "event") {
        assert_eq!(e["namespace"], ns, "{e}");
        assert_eq!(e["container"], "work", "{e}");
        assert_eq!(e["node"], r.node.as_str(), "{e}");
        assert!(pods.iter().any(|p| e["pod"] == p.as_str()), "{e}");
    }
    let sum = summary(lines);
    let received = lines.iter().filter(|l| l["kind"] == "event").count() as u64;
    assert_eq!(
        sum["events_emitted"].as_u64(),
        Some(received),
        "summary {sum}"
    );
    assert!(
        summary_op(sum, "assign") >= (pods.len() * rounds * N) as u64,
        "{sum}"
    );
}

// ---------------------------------------------------------------------------------------------

/// (a) + (e): `trace deploy/NAME` over two replicas, exact per pod; the agent
/// runs with exactly its declared capabilities; nothing is left afterwards.
#[test]
fn trace_a_deployment_exactly_with_least_privilege() {
    let Some(s) = scene(
        "trace_a_deployment_exactly_with_least_privilege",
        "trace",
        "podwork",
        2,
        N,
        "privileged",
    ) else {
        return;
    };
    let (r, ns, agents) = (s.r, &s.ns, &s.agents);
    let pods = s.pods.clone();

    let mut args = vec!["trace", "deploy/podwork", "-o", "json"];
    args.extend(common_args(r, &ns.name, &agents.name));
    let mut p = r.mapguard(&args);
    wait_attached(&mut p, &pods);

    // (e) least privilege, read off the running agent.
    let agent_pods = r.pods(&agents.name);
    assert_eq!(agent_pods.len(), 1, "one agent pod for one node");
    let agent = &agent_pods[0];
    let sc = &agent["spec"]["containers"][0]["securityContext"];
    assert_eq!(sc["privileged"], false, "{sc}");
    assert_eq!(agent["spec"]["nodeName"], r.node.as_str());
    let agent_name = agent["metadata"]["name"].as_str().unwrap();
    let caps = cap_eff_of(container_pid(r, &agents.name, agent_name));
    assert_eq!(
        caps,
        CAP_BPF | CAP_PERFMON | CAP_SYS_PTRACE,
        "CapEff of the agent: {caps:#x}"
    );
    assert_eq!(caps & CAP_SYS_ADMIN, 0);

    for pod in &pods {
        trigger(pod);
    }
    wait_events(&mut p, pods.len() * (N + N / 2), Duration::from_secs(60));
    p.signal("INT");
    let (st, lines, err) = p.finish(Duration::from_secs(60));
    assert!(st.success(), "{st}\n{err}");
    assert_exact_trace(r, &ns.name, &lines, &pods, 1);
    r.assert_no_pods(&agents.name, Duration::from_secs(30));
}

/// (b) `watch -o json` with `--metrics-addr`, `delete-audit` with a policy
/// (exit 0, 1 and 2, and JUnit), and `check pod/NAME`, on one replica.
#[test]
fn watch_audit_and_check_a_pod() {
    let Some(s) = scene(
        "watch_audit_and_check_a_pod",
        "watch",
        "web",
        1,
        N,
        "privileged",
    ) else {
        return;
    };
    let (r, ns, agents) = (s.r, &s.ns, &s.agents);
    let pod = s.pods[0].clone();
    let base = common_args(r, &ns.name, &agents.name);

    // watch: exact rows per caller, the same counts on /metrics while it runs.
    let port = free_local_port();
    let addr = format!("127.0.0.1:{port}");
    let mut args = vec![
        "watch",
        "deploy/web",
        "-o",
        "json",
        "--interval",
        "1s",
        "--metrics-addr",
        &addr,
    ];
    args.extend(base.iter().copied());
    let mut p = r.mapguard(&args);
    wait_attached(&mut p, std::slice::from_ref(&pod));
    trigger(&pod);
    let done = |s: &Value| {
        s["kind"] == "stats"
            && row_count(s, "main.put", "assign") == N as u64
            && row_count(s, "main.del", "delete") == (N / 2) as u64
    };
    let stats = p.wait_for("stats with podwork's round", Duration::from_secs(60), done);
    assert_eq!(stats["pod"], pod.as_str(), "{stats}");
    assert_eq!(stats["namespace"], ns.name.as_str());
    // The metrics server publishes on the merged tick: give it two.
    let deadline = Instant::now() + Duration::from_secs(20);
    let want = "caller=\"main.del\"";
    loop {
        let body = http_get(&addr, "/metrics", Duration::from_secs(5))
            .map(|r| r.body)
            .unwrap_or_default();
        let del = body.lines().find(|l| {
            l.starts_with("go_map_ops_total{") && l.contains(&want) && l.contains("op=\"delete\"")
        });
        if let Some(line) = del {
            assert!(line.ends_with(&format!(" {}", N / 2)), "{line}");
            assert!(line.contains(&format!("node=\"{}\"", r.node)), "{line}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no main.del series on /metrics:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    p.signal("INT");
    let (st, lines, err) = p.finish(Duration::from_secs(60));
    assert!(st.success(), "{st}\n{err}");
    assert_eq!(lines.last().unwrap()["kind"], "summary");
    r.assert_no_pods(&agents.name, Duration::from_secs(30));

    // delete-audit: 0 when the policy holds, 1 when it is violated, 2 when
    // nothing could be audited; JUnit names the violated rule.
    let dir = TempDir::new("real-audit");
    let write = |name: &str, yaml: &str| {
        let f = dir.join(name);
        std::fs::write(&f, yaml).unwrap();
        f.to_string_lossy().into_owned()
    };
    let calm = write("calm.yaml", "rules:\n- name: few-deletes\n  max_deletes: 1000\n  window: 1m\n- name: covered\n  coverage: true\n");
    let strict = write("strict.yaml", "rules:\n- name: no-deletes-from-del\n  forbidden_deleters:\n    caller: '^main\\.del$'\n- name: covered\n  coverage: true\n");
    let audit = |policy: &str, output: &str, target: &str| {
        let mut args = vec![
            "delete-audit",
            target,
            "--duration",
            "10s",
            "-o",
            output,
            "--policy",
            policy,
        ];
        args.extend(base.iter().copied());
        let p = Mapguard::spawn_cmd(r.plugin(&r.kubeconfig, &args), false);
        // The workload runs once the agent has attached (its first scan).
        let deadline = Instant::now() + Duration::from_secs(90);
        while !p.stderr().contains("is running") {
            assert!(Instant::now() < deadline, "{}", p.stderr());
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_secs(3));
        if target.starts_with("deploy/") {
            trigger(&pod);
        }
        p.finish_raw(Duration::from_secs(120))
    };
    let (st, out, err) = audit(&calm, "json", "deploy/web");
    assert_eq!(st.code(), Some(0), "{out}\n{err}");
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let verdict = lines.iter().find(|l| l["kind"] == "verdict").unwrap();
    assert_eq!(verdict["pass"], true, "{verdict}");
    let report = lines
        .iter()
        .find(|l| l["kind"] == "report")
        .unwrap()
        .to_string();
    assert!(
        report.contains(&format!("{}/{}/work", ns.name, pod)),
        "{report}"
    );

    let (st, xml, err) = audit(&strict, "junit", "deploy/web");
    assert_eq!(st.code(), Some(1), "{xml}\n{err}");
    assert!(
        xml.contains("<testcase") && xml.contains("no-deletes-from-del"),
        "{xml}"
    );
    assert!(xml.contains(&format!("deleted {} times", N / 2)), "{xml}");
    assert!(xml.contains("<failure"), "{xml}");
    r.assert_no_pods(&agents.name, Duration::from_secs(30));

    let mut args = vec![
        "delete-audit",
        "pod/nope",
        "--duration",
        "5s",
        "-o",
        "json",
        "--policy",
        &calm,
    ];
    args.extend(base.iter().copied());
    let (st, _, err) = r.mapguard_raw(&args, Duration::from_secs(60));
    assert_eq!(st.code(), Some(2), "{err}");
    assert!(err.contains("nope"), "{err}");

    // check pod/NAME: the agent reads the container's binary on the node.
    let mut args = vec!["check", &*pod, "-o", "json"];
    let podref = format!("pod/{pod}");
    args[1] = &podref;
    args.extend(base.iter().copied());
    let (st, out, err) = r.mapguard_raw(&args, Duration::from_secs(120));
    assert!(st.success(), "{err}");
    let l: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        (&l["pod"], &l["container"]),
        (&Value::from(pod.as_str()), &Value::from("work"))
    );
    assert_eq!(l["traceable"], true, "{l}");
    assert_eq!(l["go_version"], "go1.25.5");
    r.assert_no_pods(&agents.name, Duration::from_secs(30));
}

/// `--max-overhead` on a real pod: the agent pod, with no more than BPF,
/// PERFMON and SYS_PTRACE, switches its windows by writing the target's
/// code, every line from it says its counts are estimates, and the target
/// runs on with its code as built once the run is over.
#[test]
fn bounded_watch_of_a_pod() {
    let Some(s) = scene(
        "bounded_watch_of_a_pod",
        "bounded",
        "web",
        1,
        N,
        "privileged",
    ) else {
        return;
    };
    let (r, ns, agents) = (s.r, &s.ns, &s.agents);
    let pod = s.pods[0].clone();
    let mut args = vec![
        "watch",
        "deploy/web",
        "--max-overhead",
        "2",
        "-o",
        "json",
        "--interval",
        "1s",
        "--duration",
        "10s",
    ];
    args.extend(common_args(r, &ns.name, &agents.name));
    let mut p = r.mapguard(&args);
    wait_attached(&mut p, std::slice::from_ref(&pod));
    for _ in 0..10 {
        trigger(&pod);
        std::thread::sleep(Duration::from_millis(300));
    }
    let (st, lines, err) = p.finish(Duration::from_secs(120));
    assert!(st.success(), "{st}\n{err}");
    let stats: Vec<&Value> = lines.iter().filter(|l| l["kind"] == "stats").collect();
    assert!(!stats.is_empty(), "{err}");
    for s in &stats {
        assert_eq!(s["estimated"], true, "{s}");
        assert_eq!(s["pod"], pod.as_str(), "{s}");
    }
    let sampling = &stats.last().unwrap()["sampling"][0];
    assert_eq!(sampling["max_overhead_pct"], 2.0, "{sampling}");
    assert_eq!(sampling["window_switch"], "text", "{sampling}\n{err}");
    assert!(sampling["windows"].as_u64().unwrap() > 0, "{sampling}");
    let summary = lines.last().unwrap();
    assert_eq!(summary["kind"], "summary", "{summary}");
    assert_eq!(summary["estimated"], true, "{summary}");
    r.assert_no_pods(&agents.name, Duration::from_secs(30));
    let podwork = build_go(&variant("go1.25"), Path::new("tests/go/podwork")).unwrap();
    assert_code_as_built(&podwork, container_pid(r, &ns.name, &pod));
}

/// (c) RBAC for real: a ServiceAccount bound to exactly the roles of
/// manifests/rbac.yaml traces; without `create pods` it gets exit 2 and the
/// table, and the apiserver's audit log shows it sent no pod create.
#[test]
fn rbac_of_the_manifests_is_enough_and_checked_first() {
    let Some(r) = real("rbac_of_the_manifests_is_enough_and_checked_first") else {
        return;
    };
    let ns = Ns::new(r, "mg-rbac", "baseline");
    // The agent namespace of the manifests, as a user applies them.
    let manifests = manifest_dir().join("manifests");
    r.kubectl(&[
        "apply",
        "-f",
        manifests.join("namespace.yaml").to_str().unwrap(),
    ]);
    r.kubectl(&["apply", "-f", manifests.join("rbac.yaml").to_str().unwrap()]);
    let sa = "mg-ci";
    r.kubectl(&["create", "serviceaccount", sa, "-n", &ns.name]);
    let subject = format!(
        r#"[{{"op":"add","path":"/subjects/-","value":{{"kind":"ServiceAccount","name":"{sa}","namespace":"{}"}}}}]"#,
        ns.name
    );
    r.kubectl(&[
        "patch",
        "clusterrolebinding",
        "mapguard-target-reader",
        "--type",
        "json",
        "-p",
        &subject,
    ]);
    r.kubectl(&[
        "patch",
        "rolebinding",
        "mapguard-agent-runner",
        "-n",
        "mapguard",
        "--type",
        "json",
        "-p",
        &subject,
    ]);
    let token = r.kubectl(&["create", "token", sa, "-n", &ns.name, "--duration", "1h"]);
    let admin = std::fs::read_to_string(&r.kubeconfig).unwrap();
    let ca = admin
        .lines()
        .find_map(|l| l.trim().strip_prefix("certificate-authority-data: "))
        .unwrap();
    let dir = TempDir::new("real-rbac");
    let kc = dir.join("sa.kubeconfig");
    std::fs::write(
        &kc,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:6443\n    certificate-authority-data: {ca}\nusers:\n- name: {sa}\n  user:\n    token: {}\ncontexts:\n- name: c\n  context: {{cluster: c, user: {sa}}}\ncurrent-context: c\n",
            token.trim()
        ),
    )
    .unwrap();
    deploy_podwork(r, &ns.name, "podwork", 1, N);
    let pods = running_pods(r, &ns.name, "podwork");
    let args = [
        "trace",
        "deploy/podwork",
        "-o",
        "json",
        "-n",
        &ns.name,
        "--image",
        &r.agent_image,
        "--pod-running-timeout",
        "90s",
    ];
    let mut p = Mapguard::spawn_cmd(r.plugin(&kc, &args), true);
    wait_attached(&mut p, &pods);
    trigger(&pods[0]);
    wait_events(&mut p, N + N / 2, Duration::from_secs(60));
    p.signal("TERM");
    let (st, lines, err) = p.finish(Duration::from_secs(60));
    assert!(st.success(), "{st}\n{err}");
    assert_exact_trace(r, &ns.name, &lines, &pods, 1);
    r.assert_no_pods("mapguard", Duration::from_secs(30));

    // The same user without `create pods`: the Role's rule for pods keeps every other verb the
    // preflight checks there.
    let verbs: Vec<&str> = kubectl_mapguard::cluster::access::every_permission(&None, "mapguard")
        .into_iter()
        .filter(|p| p.namespace.is_some() && p.resource == "pods" && p.subresource.is_empty())
        .map(|p| p.verb)
        .filter(|v| *v != "create")
        .collect();
    let patch = json!([{"op": "replace", "path": "/rules/0/verbs", "value": verbs}]).to_string();
    r.kubectl(&[
        "patch",
        "role",
        "mapguard-agent-runner",
        "-n",
        "mapguard",
        "--type",
        "json",
        "-p",
        &patch,
    ]);
    let from = r.audit_len();
    let (st, out, err) =
        Mapguard::spawn_cmd(r.plugin(&kc, &args), false).finish_raw(Duration::from_secs(60));
    r.kubectl(&["apply", "-f", manifests.join("rbac.yaml").to_str().unwrap()]);
    assert_eq!(st.code(), Some(2), "{err}");
    assert!(out.trim().is_empty(), "stdout carries data only: {out}");
    let row = err
        .lines()
        .find(|l| l.contains("create") && l.contains("pods") && l.contains("mapguard"))
        .unwrap_or_else(|| panic!("no missing-permission row for create pods:\n{err}"));
    assert!(!row.contains("pods/log"), "{row}");
    assert!(err.contains("nothing was created"), "{err}");
    let user = format!("system:serviceaccount:{}:{sa}", ns.name);
    let entries = r.audit_since(from);
    assert!(
        entries
            .iter()
            .any(|e| e["user"]["username"] == user.as_str()
                && e["objectRef"]["resource"] == "selfsubjectaccessreviews"),
        "the audit log holds the user's access reviews"
    );
    let creates: Vec<&Value> = entries
        .iter()
        .filter(|e| {
            e["user"]["username"] == user.as_str()
                && e["verb"] == "create"
                && e["objectRef"]["resource"] == "pods"
        })
        .collect();
    assert!(creates.is_empty(), "pod creates sent anyway: {creates:?}");
}

/// (d) Pod Security for real: `baseline` on the agent namespace refuses the
/// agent pod at the dry run (exit 2, the line with the fix, no pod);
/// `privileged` lets it run.
#[test]
fn pod_security_baseline_refuses_privileged_runs() {
    let Some(s) = scene(
        "pod_security_baseline_refuses_privileged_runs",
        "psa",
        "podwork",
        1,
        N,
        "baseline",
    ) else {
        return;
    };
    let (r, ns, agents) = (s.r, &s.ns, &s.agents);
    let pods = s.pods.clone();
    let mut args = vec!["trace", "deploy/podwork", "-o", "json", "--duration", "6s"];
    args.extend(common_args(r, &ns.name, &agents.name));
    let from = r.audit_len();
    let (st, out, err) = r.mapguard_raw(&args, Duration::from_secs(60));
    assert_eq!(st.code(), Some(2), "{err}");
    assert!(out.trim().is_empty(), "{out}");
    let fix = format!(
        "kubectl label namespace {} pod-security.kubernetes.io/enforce=privileged --overwrite",
        agents.name
    );
    let line = err
        .lines()
        .find(|l| l.contains(&fix))
        .unwrap_or_else(|| panic!("no line with the fix:\n{err}"));
    assert!(
        line.contains("baseline"),
        "the real PSA reason is shown: {line}"
    );
    assert!(r.pods(&agents.name).is_empty());
    let real_creates = r
        .audit_since(from)
        .into_iter()
        .filter(|e| {
            e["verb"] == "create"
                && e["objectRef"]["resource"] == "pods"
                && e["objectRef"]["namespace"] == agents.name.as_str()
                && !e["requestURI"].as_str().unwrap_or("").contains("dryRun")
        })
        .count();
    assert_eq!(real_creates, 0, "only dry runs reach the apiserver");

    r.kubectl(&[
        "label",
        "namespace",
        &agents.name,
        "pod-security.kubernetes.io/enforce=privileged",
        "--overwrite",
    ]);
    let mut p = r.mapguard(&args);
    wait_attached(&mut p, &pods);
    let (st, lines, err) = p.finish(Duration::from_secs(90));
    assert!(st.success(), "{err}");
    assert_eq!(lines.last().unwrap()["kind"], "summary");
    r.assert_no_pods(&agents.name, Duration::from_secs(30));

    // --privileged: the same run as a privileged pod (the runtime grants it
    // every capability of its own bounding set).
    args.push("--privileged");
    let mut p = r.mapguard(&args);
    wait_attached(&mut p, &pods);
    let agent = r.pods(&agents.name).remove(0);
    assert_eq!(
        agent["spec"]["containers"][0]["securityContext"]["privileged"],
        true
    );
    let (st, _, err) = p.finish(Duration::from_secs(90));
    assert!(st.success(), "{err}");
    r.assert_no_pods(&agents.name, Duration::from_secs(30));
}

/// (f) Cleanup: SIGINT and SIGTERM delete the agent pod; after SIGKILL of
/// the CLI the pod ends by its activeDeadlineSeconds; `cleanup` sweeps a pod
/// left by `--keep`.
#[test]
fn every_way_out_leaves_no_agent_running() {
    let Some(s) = scene(
        "every_way_out_leaves_no_agent_running",
        "clean",
        "podwork",
        1,
        N,
        "privileged",
    ) else {
        return;
    };
    let (r, ns, agents) = (s.r, &s.ns, &s.agents);
    let pods = s.pods.clone();
    let base = common_args(r, &ns.name, &agents.name);

    for sig in ["INT", "TERM"] {
        let mut args = vec!["trace", "deploy/podwork", "-o", "json"];
        args.extend(base.iter().copied());
        let mut p = r.mapguard(&args);
        wait_attached(&mut p, &pods);
        p.signal(sig);
        let (st, lines, err) = p.finish(Duration::from_secs(60));
        assert!(st.success(), "SIG{sig}: {st}\n{err}");
        assert_eq!(lines.last().unwrap()["kind"], "summary", "SIG{sig}");
        r.assert_no_pods(&agents.name, Duration::from_secs(30));
    }

    // SIGKILL: nobody deletes the pod; its deadline (duration + the
    // running timeout + 30 s) stops it.
    let args = [
        "trace",
        "deploy/podwork",
        "-o",
        "json",
        "--duration",
        "3s",
        "-n",
        &ns.name,
        "--agent-namespace",
        &agents.name,
        "--image",
        &r.agent_image,
        "--pod-running-timeout",
        "5s",
    ];
    let mut p = r.mapguard(&args);
    wait_attached(&mut p, &pods);
    p.signal("KILL");
    let pod = r.pods(&agents.name).remove(0);
    assert_eq!(pod["spec"]["activeDeadlineSeconds"], 38, "{}", pod["spec"]);
    let name = pod["metadata"]["name"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let pod = r.json(&["get", "pod", &name, "-n", &agents.name]);
        let running = pod["status"]["containerStatuses"][0]["state"]["running"].is_object();
        if pod["status"]["phase"] == "Failed" || pod["status"]["phase"] == "Succeeded" {
            assert!(!running, "{}", pod["status"]);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still {}: {}",
            pod["status"]["phase"],
            pod["status"]
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    // --keep leaves the pod; cleanup sweeps it, and the one the kill left.
    let mut args = vec![
        "trace",
        "deploy/podwork",
        "-o",
        "json",
        "--duration",
        "3s",
        "--keep",
    ];
    args.extend(base.iter().copied());
    let (st, _, err) = r.mapguard_raw(&args, Duration::from_secs(120));
    assert!(st.success(), "{err}");
    assert!(err.contains("--keep: left 1 agent pod"), "{err}");
    assert_eq!(r.pods(&agents.name).len(), 2);
    let (st, out, err) = r.mapguard_raw(
        &["cleanup", "--agent-namespace", &agents.name],
        Duration::from_secs(60),
    );
    assert!(st.success(), "{out}\n{err}");
    r.assert_no_pods(&agents.name, Duration::from_secs(30));
}

/// Waits for an `attached` line of `pod` whose pid is not in `not`; its pid.
fn wait_attached_anew(p: &mut Mapguard, pod: &str, not: &[u64]) -> u64 {
    let l = p.wait_for(
        &format!("attached of {pod}"),
        Duration::from_secs(120),
        |l| {
            l["kind"] == "attached"
                && l["pod"] == pod
                && !not.contains(&l["pid"].as_u64().unwrap_or(0))
        },
    );
    l["pid"].as_u64().unwrap()
}

/// (g) A run follows its targets as `stern` follows logs: a target
/// container that restarts (a new container id) and a replica a rollout
/// brings each get an agent pod of their own, and their operations are
/// counted exactly from there on; every agent pod goes at the end.
#[test]
fn a_run_follows_restarts_and_rollouts() {
    let Some(s) = scene(
        "a_run_follows_restarts_and_rollouts",
        "follow",
        "roll",
        1,
        N,
        "privileged",
    ) else {
        return;
    };
    let (r, ns, agents) = (s.r, &s.ns, &s.agents);
    let first = s.pods[0].clone();
    let mut args = vec!["trace", "deploy/roll", "-o", "json"];
    args.extend(common_args(r, &ns.name, &agents.name));
    let mut p = r.mapguard(&args);
    let pid1 = wait_attached_anew(&mut p, &first, &[]);
    trigger(&first);
    wait_events(&mut p, N + N / 2, Duration::from_secs(60));

    // The container dies and the kubelet starts it again: a new container.
    let host_pid = podwork_pids(&first)[0];
    let _ = Command::new("kill")
        .args(["-9", &host_pid.to_string()])
        .status();
    p.wait_for("detached", Duration::from_secs(30), |l| {
        l["kind"] == "detached" && l["pid"] == pid1
    });
    let pid2 = wait_attached_anew(&mut p, &first, &[pid1]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while podwork_pids(&first).is_empty() {
        assert!(Instant::now() < deadline, "podwork did not come back");
        std::thread::sleep(Duration::from_millis(100));
    }
    trigger(&first);
    wait_events(&mut p, 2 * (N + N / 2), Duration::from_secs(60));

    // A rollout replaces the pod: its successor is followed too.
    r.kubectl(&["rollout", "restart", "deploy/roll", "-n", &ns.name]);
    r.kubectl(&[
        "rollout",
        "status",
        "deploy/roll",
        "-n",
        &ns.name,
        "--timeout",
        "120s",
    ]);
    let second = running_pods(r, &ns.name, "roll")
        .into_iter()
        .find(|n| *n != first)
        .expect("a new replica");
    wait_attached_anew(&mut p, &second, &[pid1, pid2]);
    trigger(&second);
    wait_events(&mut p, 3 * (N + N / 2), Duration::from_secs(60));
    p.signal("INT");
    let (st, lines, err) = p.finish(Duration::from_secs(60));
    assert!(st.success(), "{st}\n{err}");
    assert!(
        err.contains(&format!("following {}/{first}/work", ns.name)),
        "{err}"
    );
    assert!(
        err.contains(&format!("following {}/{second}/work", ns.name)),
        "{err}"
    );
    let got = podwork_ops(&lines);
    let twice: Vec<(String, String)> = {
        let mut v = podwork_expected_ops(&first, N);
        v.extend(podwork_expected_ops(&first, N));
        v.sort();
        v
    };
    assert!(
        got[&first] == twice,
        "{first}: {} events",
        got[&first].len()
    );
    assert!(
        got[&second] == podwork_expected_ops(&second, N),
        "{second}: {} events",
        got[&second].len()
    );
    let sum = summary(&lines);
    let received = lines.iter().filter(|l| l["kind"] == "event").count() as u64;
    assert_eq!(sum["events_emitted"].as_u64(), Some(received), "{sum}");
    r.assert_no_pods(&agents.name, Duration::from_secs(30));
}

/// (h) `trace` at a high rate for longer than the kubelet takes to rotate
/// the agent's log (10 MiB): every event sent either arrives or is counted
/// as lost in transit, with an error line that says so.
#[test]
fn high_rate_trace_across_log_rotation_loses_nothing_silently() {
    const BIG: usize = 20_000;
    const ROUNDS: usize = 12;
    let test = "high_rate_trace_across_log_rotation_loses_nothing_silently";
    let Some(s) = scene(test, "rotate", "busy", 1, BIG, "privileged") else {
        return;
    };
    let (r, ns, agents) = (s.r, &s.ns, &s.agents);
    let pod = s.pods[0].clone();
    let mut args = vec!["trace", "deploy/busy", "-o", "json"];
    args.extend(common_args(r, &ns.name, &agents.name));
    let mut p = r.mapguard(&args);
    wait_attached_anew(&mut p, &pod, &[]);
    for round in 1..=ROUNDS {
        trigger(&pod);
        // Each round is ~30,000 events, ~10 MB of log.
        p.wait_until("a round", Duration::from_secs(120), |lines| {
            lines.len() >= round * (BIG + BIG / 2) * 9 / 10
        });
        while podwork_pids(&pod)
            .first()
            .is_some_and(|pid| Path::new(&format!("/proc/{pid}/root/tmp/go")).exists())
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(1500));
    }
    // The log did rotate under the run (else this test shows nothing):
    // the kubelet keeps rotated files beside 0.log.
    let logs = state_dir().join("pod-logs");
    let rotated = std::fs::read_dir(&logs)
        .unwrap()
        .flatten()
        .filter(|d| {
            d.file_name()
                .to_string_lossy()
                .starts_with(&format!("{}_", agents.name))
        })
        .flat_map(|d| {
            std::fs::read_dir(d.path().join("agent"))
                .into_iter()
                .flatten()
                .flatten()
        })
        .filter(|f| f.file_name() != "0.log")
        .count();
    assert!(rotated >= 1, "the agent's log was never rotated");
    p.signal("INT");
    let (st, lines, err) = p.finish(Duration::from_secs(120));
    assert!(st.success(), "{st}\n{err}");
    let sum = summary(&lines);
    let received = lines.iter().filter(|l| l["kind"] == "event").count() as u64;
    let emitted = sum["events_emitted"].as_u64().unwrap();
    let lost = sum["lost_in_transit"].as_u64().unwrap_or(0);
    eprintln!(
        "log rotation run: {emitted} events sent, {received} received, {lost} lost in transit, {} dropped in the ring, {rotated} rotated log files",
        sum["drops"]
    );
    assert_eq!(received + lost, emitted, "{sum}");
    // The kernel's counts stay exact whatever the log did.
    assert!(summary_op(sum, "assign") >= (ROUNDS * BIG) as u64, "{sum}");
    let noted = lines.iter().any(|l| {
        l["kind"] == "error"
            && l["message"]
                .as_str()
                .unwrap_or("")
                .contains("did not arrive")
    });
    assert_eq!(
        noted,
        lost > 0,
        "an error line exactly when lines were lost"
    );
    r.assert_no_pods(&agents.name, Duration::from_secs(30));
}

fn state_dir() -> PathBuf {
    PathBuf::from(
        std::env::var("MAPGUARD_CLUSTER_DIR")
            .unwrap_or_else(|_| "/var/lib/mapguard-cluster".into()),
    )
}

/// An agent pod made by hand, to run the agent where the product never
/// would: without CAP_SYS_PTRACE, or without uprobe_multi. Its log and how it ended.
fn hand_made_agent(
    r: &Real,
    ns: &str,
    name: &str,
    caps: &[&str],
    env: &[(&str, &str)],
    container_ids: &[String],
    duration: &str,
) -> (String, Value) {
    let mut cmd = vec![
        "/usr/local/bin/kubectl-mapguard".to_string(),
        "agent".into(),
        "--duration".into(),
        duration.into(),
    ];
    for id in container_ids {
        cmd.extend(["--container-id".into(), id.clone()]);
    }
    let pod = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "nodeName": r.node, "hostPID": true, "restartPolicy": "Never",
            "automountServiceAccountToken": false,
            "containers": [{
                "name": "agent", "image": r.agent_image, "imagePullPolicy": "IfNotPresent",
                "command": cmd,
                "env": env.iter().map(|(k, v)| serde_json::json!({"name": k, "value": v})).collect::<Vec<_>>(),
                "securityContext": {
                    "capabilities": {"drop": ["ALL"], "add": caps},
                    "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "runAsUser": 0
                }
            }]
        }
    });
    r.kubectl_in(&["apply", "-f", "-"], Some(&pod.to_string()));
    let started = Instant::now();
    loop {
        let p = r.json(&["get", "pod", name, "-n", ns]);
        let phase = p["status"]["phase"].as_str().unwrap_or("").to_string();
        if phase == "Succeeded" || phase == "Failed" {
            let log = r.kubectl(&["logs", name, "-n", ns]);
            let ended = p["status"]["containerStatuses"][0]["state"]["terminated"].clone();
            let _ = r.kubectl_try(&["delete", "pod", name, "-n", ns, "--wait=false"], None);
            return (log, ended);
        }
        assert!(
            started.elapsed() < Duration::from_secs(50),
            "{name} did not end promptly by itself (phase {phase})"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn container_id(r: &Real, ns: &str, pod: &str) -> String {
    r.json(&["get", "pod", pod, "-n", ns])["status"]["containerStatuses"][0]["containerID"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The agent in real containers it is not made for: without CAP_SYS_PTRACE
/// it names that capability and exits non-zero at once; on the perf-event
/// path without CAP_SYS_ADMIN it says so and what to do, in one line; and a
/// process that cannot be attached is an error line while the others go on.
#[test]
fn agent_failures_name_their_cause_and_end_promptly() {
    let Some(s) = scene(
        "agent_failures_name_their_cause_and_end_promptly",
        "fail",
        "w",
        2,
        N,
        "privileged",
    ) else {
        return;
    };
    let (r, ns, agents) = (s.r, &s.ns, &s.agents);
    let pods = s.pods.clone();
    let ids: Vec<String> = pods.iter().map(|p| container_id(r, &ns.name, p)).collect();

    let (log, ended) = hand_made_agent(
        r,
        &agents.name,
        "no-ptrace",
        &["BPF", "PERFMON"],
        &[],
        &ids[..1],
        "40s",
    );
    assert_eq!(ended["exitCode"], 2, "{ended}\n{log}");
    let error = log
        .lines()
        .find(|l| l.contains("\"kind\":\"error\""))
        .unwrap_or_else(|| panic!("no error line:\n{log}"));
    assert!(error.contains("CAP_SYS_PTRACE"), "{error}");
    assert!(!log.contains("run it with sudo"), "{log}");
    assert!(
        log.contains("\"kind\":\"summary\""),
        "a summary before the exit:\n{log}"
    );

    let (log, ended) = hand_made_agent(
        r,
        &agents.name,
        "perf-path",
        &["BPF", "PERFMON", "SYS_PTRACE"],
        &[("MAPGUARD_NO_UPROBE_MULTI", "1")],
        &ids[..1],
        "40s",
    );
    assert_eq!(ended["exitCode"], 2, "{ended}\n{log}");
    let error = log
        .lines()
        .find(|l| l.contains("\"kind\":\"error\""))
        .unwrap_or_else(|| panic!("no error line:\n{log}"));
    assert!(
        error.contains("CAP_SYS_ADMIN")
            && error.contains("--privileged")
            && error.contains("uprobe_multi"),
        "{error}"
    );
    // The fix the line names: with CAP_SYS_ADMIN the perf-event path attaches.
    let (log, ended) = hand_made_agent(
        r,
        &agents.name,
        "perf-path-admin",
        &["BPF", "PERFMON", "SYS_PTRACE", "SYS_ADMIN"],
        &[("MAPGUARD_NO_UPROBE_MULTI", "1")],
        &ids[..1],
        "3s",
    );
    assert_eq!(ended["exitCode"], 0, "{ended}\n{log}");
    assert!(log.contains("\"kind\":\"attached\""), "{log}");

    // One slot for two processes: the second fails to attach, the first is traced.
    let handle = {
        let agents_ns = agents.name.clone();
        let ids = ids.clone();
        std::thread::spawn(move || {
            let caps = ["BPF", "PERFMON", "SYS_PTRACE"];
            let env = [("MAPGUARD_MAX_TARGETS", "1")];
            hand_made_agent(r, &agents_ns, "one-slot", &caps, &env, &ids, "12s")
        })
    };
    // Both podworks run a round once the agent has had time to attach.
    std::thread::sleep(Duration::from_secs(6));
    for p in &pods {
        trigger(p);
    }
    let (log, ended) = handle.join().unwrap();
    assert_eq!(ended["exitCode"], 0, "{ended}\n{log}");
    let lines: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let attached = lines.iter().filter(|l| l["kind"] == "attached").count();
    let errors: Vec<&Value> = lines.iter().filter(|l| l["kind"] == "error").collect();
    assert_eq!(attached, 1, "{log}");
    assert_eq!(errors.len(), 1, "{log}");
    assert!(
        errors[0]["message"]
            .as_str()
            .unwrap()
            .contains("already tracing 1 processes"),
        "{}",
        errors[0]
    );
    let events = lines
        .iter()
        .filter(|l| {
            l["kind"] == "event" && (caller_func(l) == "main.put" || caller_func(l) == "main.del")
        })
        .count();
    assert_eq!(events, N + N / 2, "the attached process is traced exactly");
}
