//! The node agent, for real: `kubectl-mapguard agent --container-id ID` must find the host
//! processes of a container from /proc/PID/cgroup, trace them, and keep following the container:
//! a process started in it later (a container restart) is attached too.
//!
//! What is real: the kernel cgroups (the tests create cgroups named exactly as containerd with
//! the systemd driver, `.../cri-containerd-<64 hex>.scope`, and as the cgroupfs driver,
//! `.../kubepods/<64 hex>`, and move real maptruth processes into them), the uprobes and the
//! Go programs. What is not: there is no container runtime, no kubelet and no namespaces, so the
//! "container" shares the host's mount and pid namespaces (the agent sees host pids directly).
//!
//! Needs root, BPF and a writable cgroup hierarchy (cgroup v2 preferred, e.g. /sys/fs/cgroup or
//! /sys/fs/cgroup/unified; a named v1 hierarchy otherwise). Skips loudly without them, fails under
//! `MAPGUARD_REQUIRE_BPF=1`.

mod common;

use common::*;
use serde_json::Value;
use std::collections::hash_map::RandomState;
use std::ffi::OsStr;
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const TIMEOUT: Duration = Duration::from_secs(120);

/// A cgroup hierarchy we can create cgroups in: (mount point, is cgroup v2).
fn cgroup_root() -> Option<(PathBuf, bool)> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mut v1: Option<PathBuf> = None;
    let mut v2: Vec<PathBuf> = Vec::new();
    for line in info.lines() {
        let (pre, post) = line.split_once(" - ")?;
        let mnt = PathBuf::from(pre.split(' ').nth(4)?);
        let mut post = post.split(' ');
        let fstype = post.next()?;
        let opts = post.nth(1).unwrap_or("");
        match fstype {
            "cgroup2" => v2.push(mnt),
            "cgroup"
                if v1.is_none() && opts.split(',').any(|o| o == "name=systemd" || o == "pids") =>
            {
                v1 = Some(mnt)
            }
            _ => {}
        }
    }
    // Prefer the unified hierarchy at /sys/fs/cgroup, then any cgroup2 mount.
    v2.sort_by_key(|p| p != Path::new("/sys/fs/cgroup"));
    v2.into_iter()
        .next()
        .map(|p| (p, true))
        .or(v1.map(|p| (p, false)))
}

fn container_id() -> String {
    let mut id = String::new();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    for i in 0..4u64 {
        let mut h = RandomState::new().build_hasher();
        h.write_u64(nanos ^ i);
        h.write_u32(std::process::id());
        id.push_str(&format!("{:016x}", h.finish()));
    }
    id
}

/// Cgroups created by a test; on drop (also when the test fails) moves any process still in
/// them back to the hierarchy's root, kills the processes the test started, and removes them.
struct CgroupGuard {
    root: PathBuf,
    /// Every directory of the path, outermost first (parents may be shared with another test,
    /// so they are removed only when empty).
    dirs: Vec<PathBuf>,
    leaf: PathBuf,
}

impl CgroupGuard {
    fn create(root: &Path, rel: &str) -> std::io::Result<CgroupGuard> {
        let mut dirs = Vec::new();
        let mut cur = root.to_path_buf();
        for part in rel.split('/') {
            cur = cur.join(part);
            dirs.push(cur.clone());
        }
        std::fs::create_dir_all(&cur)?;
        Ok(CgroupGuard {
            root: root.to_path_buf(),
            dirs,
            leaf: cur,
        })
    }

    fn add(&self, pid: u32) {
        std::fs::write(self.leaf.join("cgroup.procs"), pid.to_string())
            .unwrap_or_else(|e| panic!("moving pid {pid} into {}: {e}", self.leaf.display()));
    }
}

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        for _ in 0..50 {
            let procs = std::fs::read_to_string(self.leaf.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.split_whitespace() {
                let _ = std::fs::write(self.root.join("cgroup.procs"), pid);
            }
            if !self.leaf.exists() || std::fs::remove_dir(&self.leaf).is_ok() {
                for d in self.dirs.iter().rev().skip(1) {
                    let _ = std::fs::remove_dir(d); // fails while another test uses it
                }
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("WARNING: could not remove cgroup {}", self.leaf.display());
    }
}

fn proc_cgroup(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default()
}

fn lines_of_pid(lines: &[Value], pid: u32) -> Vec<Value> {
    lines
        .iter()
        .filter(|l| {
            l.get("pid").and_then(Value::as_u64) == Some(pid as u64) || kind_is(l, "summary")
        })
        .cloned()
        .collect()
}

/// After the BPF check: a fresh container id, its cgroup at `rel(id)` and maptruth built, with
/// whether the hierarchy is cgroup v2; None (after a loud SKIP) when the test cannot run.
fn container(
    test: &str,
    v: &Variant,
    rel: impl FnOnce(&str) -> String,
) -> Option<(CgroupGuard, String, PathBuf, bool)> {
    if !bpf_available_or_skip(test) {
        return None;
    }
    let Some((root, is_v2)) = cgroup_root() else {
        skip(&format!("{test}: no cgroup hierarchy mounted"));
        return None;
    };
    let bin = maptruth(v)?;
    let id = container_id();
    match CgroupGuard::create(&root, &rel(&id)) {
        Ok(cg) => Some((cg, id, bin, is_v2)),
        Err(e) => {
            skip(&format!(
                "{test}: cannot create a cgroup under {}: {e}",
                root.display()
            ));
            None
        }
    }
}

/// The whole story for one cgroup naming style: a process in the container before the agent
/// starts, one started after it (restart), one outside the container (ignored).
fn agent_follows_container(v: &Variant, style: &str) {
    let test = format!("agent_container {style} [{}]", v.name);
    let Some((cg, id, bin, is_v2)) = container(&test, v, |id| match style {
        "systemd" => format!("mapguard-test.slice/cri-containerd-{id}.scope"),
        "cgroupfs" => format!("mapguard-test/kubepods/{id}"),
        _ => unreachable!(),
    }) else {
        return;
    };
    eprintln!("{test}: cgroup {} (v2: {is_v2})", cg.leaf.display());
    let tmp = TempDir::new(&format!("agent-{style}-{}", v.name));

    // Outside the container: must be ignored.
    let outsider = GoProc::spawn(
        &bin,
        &[tmp.join("outsider").as_os_str(), OsStr::new("hold")],
    );

    // In the container before the agent starts.
    let truth1 = tmp.join("truth1.jsonl");
    let mut p1 = GoProc::spawn(&bin, &[truth1.as_os_str(), OsStr::new("wait")]);
    cg.add(p1.pid());
    assert!(
        proc_cgroup(p1.pid()).contains(&id),
        "pid {} not in the cgroup",
        p1.pid()
    );

    let mut agent = Mapguard::spawn(&["agent", "--container-id", &id]);
    let pid1 = p1.pid() as u64;
    agent.wait_for_pid("attached (first process)", "attached", pid1, TIMEOUT);
    p1.trigger();
    assert!(p1.wait(TIMEOUT).success(), "first maptruth failed");
    agent.wait_for_pid("detached (first process)", "detached", pid1, TIMEOUT);

    // The container "restarts": a new process appears in the same cgroup.
    let truth2 = tmp.join("truth2.jsonl");
    let mut p2 = GoProc::spawn(&bin, &[truth2.as_os_str(), OsStr::new("wait")]);
    cg.add(p2.pid());
    let pid2 = p2.pid() as u64;
    agent.wait_for_pid("attached (restarted process)", "attached", pid2, TIMEOUT);
    p2.trigger();
    assert!(p2.wait(TIMEOUT).success(), "second maptruth failed");
    agent.wait_for_pid("detached (restarted process)", "detached", pid2, TIMEOUT);

    // An agent runs until told to stop; it then ends with its summary and exit 0.
    agent.signal("INT");
    let (status, lines, stderr) = agent.finish(TIMEOUT);
    assert!(
        status.success(),
        "{test}: agent exited {status} after SIGINT\nstderr:\n{stderr}"
    );
    assert_protocol_v1(&lines);

    let outsider_pid = outsider.pid() as u64;
    assert!(
        !lines
            .iter()
            .any(|l| l.get("pid").and_then(Value::as_u64) == Some(outsider_pid)),
        "{test}: the agent traced pid {outsider_pid}, which is not in the container"
    );
    drop(outsider);

    assert_attached(v, &lines, pid1);
    assert_attached(v, &lines, pid2);
    let t1 = read_truth(&truth1);
    let t2 = read_truth(&truth2);
    assert_events_match_truth(v, &lines_of_pid(&lines, p1.pid()), &t1);
    assert_events_match_truth(v, &lines_of_pid(&lines, p2.pid()), &t2);
    assert_summary_exact(v, &lines);
    for e in events(&lines) {
        let pid = e.get("pid").and_then(Value::as_u64);
        assert!(
            pid == Some(pid1) || pid == Some(pid2),
            "{test}: event of another pid: {e}"
        );
    }
    drop(cg);
}

#[test]
fn containerd_systemd_cgroup_swiss() {
    agent_follows_container(&variant("go1.25"), "systemd");
}

#[test]
fn cgroupfs_kubepods_classic() {
    agent_follows_container(&variant("go1.22"), "cgroupfs");
}

#[test]
fn containerd_systemd_cgroup_stripped_pie() {
    agent_follows_container(&variant("go1.25-pie-stripped"), "systemd");
}

/// A container whose entrypoint is a shell that later execs the Go server (`sh -c '...; exec
/// ./server'`): the agent first sees a shell, and must look again once the same pid runs Go.
#[test]
fn entrypoint_shell_that_execs_go_is_traced() {
    let v = variant("go1.25");
    let test = "entrypoint_shell_that_execs_go_is_traced";
    let Some((cg, id, bin, _)) = container(test, &v, |id| {
        format!("mapguard-test.slice/cri-containerd-{id}.scope")
    }) else {
        return;
    };
    let tmp = TempDir::new(test);
    let truth = tmp.join("truth.jsonl");
    // The shell waits until the agent has seen it, then becomes maptruth (same pid).
    let ready = tmp.join("agent-saw-the-shell");
    let script = format!(
        "while [ ! -e '{}' ]; do sleep 0.05; done; exec \"$0\" \"$@\"",
        ready.display()
    );
    let mut p = GoProc::spawn(
        Path::new("/bin/sh"),
        &[
            OsStr::new("-c"),
            OsStr::new(&script),
            bin.as_os_str(),
            truth.as_os_str(),
            OsStr::new("wait"),
        ],
    );
    cg.add(p.pid());
    let mut agent = Mapguard::spawn(&["agent", "--container-id", &id]);
    // The agent scans once a second: after 2.5 s it has rejected the shell.
    std::thread::sleep(Duration::from_millis(2500));
    std::fs::write(&ready, b"").unwrap();
    let pid = p.pid() as u64;
    agent.wait_for_pid("attached after exec", "attached", pid, TIMEOUT);
    p.trigger();
    assert!(p.wait(TIMEOUT).success(), "maptruth failed");
    agent.signal("INT");
    let (status, lines, stderr) = agent.finish(TIMEOUT);
    assert!(status.success(), "{stderr}");
    assert_events_match_truth(&v, &lines_of_pid(&lines, p.pid()), &read_truth(&truth));
    drop(cg);
}
