//! Shared helpers for the end-to-end tests: the Go toolchain matrix, building the Go test
//! programs with each toolchain, running `kubectl-mapguard` with a timeout, and comparing what it
//! saw with what the Go program says it did (its "truth file").
//!
//! Std, serde_json and tempfile. Environment:
//! - `MAPGUARD_GO_DIR` — where the toolchains live (`<dir>/<version>/go/bin/go`), default
//!   `/opt/mapguard-go`.
//! - `MAPGUARD_REQUIRE_BPF=1` — (CI) every skip becomes a failure: missing toolchain, no BPF.
//!   Without it each skip is printed past cargo test's capture and appended to
//!   target/test-skips.log.
//! - `MAPGUARD_KEEP_TMP` — keep the scratch directories under target/e2e-tmp.
#![allow(dead_code)]

/// One test function per (variant, property), so a failure names both:
/// `variant_tests! { go1_22 => "go1.22": [prop_a, prop_b]; ... }` calls `prop(&variant)`.
#[allow(unused_macros)]
macro_rules! variant_tests {
    ($($modname:ident => $variant:literal : [$($prop:ident),* $(,)?]);* $(;)?) => {$(
        mod $modname {
            $(
                #[test]
                fn $prop() {
                    super::$prop(&super::common::variant($variant));
                }
            )*
        }
    )*};
}

use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, UNIX_EPOCH};

/// One Go build configuration of the test matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Variant {
    /// "go1.22", "go1.24-noswissmap", "go1.25-pie-stripped"; also the folder name of its builds.
    pub name: &'static str,
    /// Toolchain version, e.g. "1.22.10" (`<go_root_dir>/<version>/go/bin/go`).
    pub version: &'static str,
    /// `GOEXPERIMENT` for the build, e.g. `Some("noswissmap")`.
    pub goexperiment: Option<&'static str>,
    /// Built with `-ldflags=-s -w` (no .symtab, no DWARF; .gopclntab stays).
    pub stripped: bool,
    /// Built with `-buildmode=pie`.
    pub pie: bool,
    /// Built with cgo (CGO_ENABLED=1, external linking): C code comes before
    /// Go's in .text. Programs opt in with a file that imports "C".
    pub cgo: bool,
}

impl Variant {
    /// "go1.22.10": what the tool must report as `go_version`.
    pub fn go_version(&self) -> String {
        format!("go{}", self.version)
    }

    /// (major, minor), e.g. (1, 22).
    pub fn minor(&self) -> (u32, u32) {
        let mut it = self
            .version
            .split('.')
            .map(|p| p.parse::<u32>().unwrap_or(0));
        (it.next().unwrap_or(0), it.next().unwrap_or(0))
    }

    /// Whether maps in this build are swiss tables (Go >= 1.24 without noswissmap).
    pub fn swiss(&self) -> bool {
        self.minor() >= (1, 24) && self.goexperiment != Some("noswissmap")
    }

    /// `map_impl` the tool must report in `attached`.
    pub fn map_impl(&self) -> &'static str {
        if self.swiss() {
            "swiss"
        } else {
            "classic"
        }
    }
}

const fn v(
    name: &'static str,
    version: &'static str,
    goexperiment: Option<&'static str>,
    stripped: bool,
    pie: bool,
) -> Variant {
    Variant {
        name,
        version,
        goexperiment,
        stripped,
        pie,
        cgo: false,
    }
}

const fn with_cgo(v: Variant) -> Variant {
    Variant { cgo: true, ..v }
}

/// The matrix: every toolchain, a classic-map 1.24 build, stripped, PIE and stripped PIE builds,
/// and stripped cgo builds of the releases whose function table no longer says where Go's code
/// starts (1.26+: a stripped cgo build must be read from the module data).
pub fn variants() -> Vec<Variant> {
    vec![
        v("go1.21", "1.21.13", None, false, false),
        v("go1.22", "1.22.10", None, false, false),
        v("go1.23", "1.23.9", None, false, false),
        v("go1.24", "1.24.11", None, false, false),
        v(
            "go1.24-noswissmap",
            "1.24.11",
            Some("noswissmap"),
            false,
            false,
        ),
        v("go1.25", "1.25.5", None, false, false),
        v("go1.26", "1.26.6", None, false, false),
        v("go1.27", "1.27.3", None, false, false),
        v("go1.22-stripped", "1.22.10", None, true, false),
        v("go1.26-stripped", "1.26.6", None, true, false),
        v("go1.22-pie", "1.22.10", None, false, true),
        v("go1.25-pie-stripped", "1.25.5", None, true, true),
        with_cgo(v("go1.26-cgo-stripped", "1.26.6", None, true, false)),
        with_cgo(v("go1.27-cgo-pie-stripped", "1.27.3", None, true, true)),
    ]
}

/// The variant of that name; panics on a typo.
pub fn variant(name: &str) -> Variant {
    variants()
        .into_iter()
        .find(|v| v.name == name)
        .unwrap_or_else(|| panic!("no variant named {name:?} in tests/common variants()"))
}

/// Where the toolchains live: `$MAPGUARD_GO_DIR` or `/opt/mapguard-go`.
pub fn go_root_dir() -> PathBuf {
    std::env::var_os("MAPGUARD_GO_DIR")
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/mapguard-go"))
}

/// The `go` binary of a variant's toolchain.
pub fn go_binary(variant: &Variant) -> PathBuf {
    go_root_dir()
        .join(variant.version)
        .join("go")
        .join("bin")
        .join("go")
}

/// `MAPGUARD_REQUIRE_BPF=1`: skipping is failing (CI).
pub fn require_bpf() -> bool {
    matches!(
        std::env::var("MAPGUARD_REQUIRE_BPF").as_deref(),
        Ok("1") | Ok("true") | Ok("yes")
    )
}

/// Where every skip outside CI is written down, one line each, since a passing test's output is
/// hidden by cargo test.
pub fn skip_log() -> PathBuf {
    target_dir().join("test-skips.log")
}

/// Skip loudly, or fail when skips are not allowed. libtest captures `eprintln!` of a passing
/// test, so the banner goes past it (see [`banner`]) and into [`skip_log`].
pub fn skip(why: &str) {
    if require_bpf() {
        panic!("MAPGUARD_REQUIRE_BPF=1 but this test would be skipped: {why}");
    }
    banner("SKIP", why);
}

/// A check this run leaves out by design (nothing is missing: e.g. no release archive was
/// built), said as loudly as a skip but never a failure.
pub fn not_run(why: &str) {
    banner("NOT RUN", why);
}

fn banner(what: &str, why: &str) {
    let test = std::thread::current()
        .name()
        .unwrap_or("(unnamed test)")
        .to_string();
    let log = skip_log();
    let _ = std::fs::create_dir_all(log.parent().unwrap_or(Path::new(".")));
    let logged = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .and_then(|mut f| writeln!(f, "{what} {} {test}: {why}", env!("CARGO_CRATE_NAME")));
    let note = match logged {
        Ok(()) => format!("(listed in {})", log.display()),
        Err(e) => format!("(could not append to {}: {e})", log.display()),
    };
    // The process's own stderr handle: libtest's capture only takes the print macros.
    let _ = write!(
        std::io::stderr().lock(),
        "\n==================== {what} {test}: {why}\n==================== {note}\n\n"
    );
}

/// The package root (where Cargo.toml is).
pub fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `target/` of this package (honours `CARGO_TARGET_DIR` when set at run time).
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR").filter(|s| !s.is_empty()) {
        Some(d) => {
            let d = PathBuf::from(d);
            if d.is_absolute() {
                d
            } else {
                manifest_dir().join(d)
            }
        }
        None => manifest_dir().join("target"),
    }
}

/// A fresh scratch directory under target/e2e-tmp, removed on drop unless `MAPGUARD_KEEP_TMP`
/// is set (to look at what a failed test left).
pub struct TempDir(tempfile::TempDir);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let parent = target_dir().join("e2e-tmp");
        std::fs::create_dir_all(&parent)
            .unwrap_or_else(|e| panic!("mkdir {}: {e}", parent.display()));
        let dir = tempfile::Builder::new()
            .prefix(&format!("{tag}-"))
            .disable_cleanup(std::env::var_os("MAPGUARD_KEEP_TMP").is_some())
            .tempdir_in(&parent)
            .unwrap_or_else(|e| panic!("mkdir under {}: {e}", parent.display()));
        // Readable and writable by anyone: some tests run the tool as uid 65534. (Set after
        // creation: a mode given to mkdir is cut by the umask.)
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
            .unwrap_or_else(|e| panic!("chmod 0777 {}: {e}", dir.path().display()));
        TempDir(dir)
    }
    pub fn path(&self) -> &Path {
        self.0.path()
    }
    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.0.path().join(p)
    }
}

static BUILD_LOCK: Mutex<()> = Mutex::new(());

/// Newest mtime (ns) and a digest of names and sizes of every file under `dir`.
fn source_stamp(dir: &Path) -> String {
    fn walk(dir: &Path, out: &mut Vec<(String, u64, u128)>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(md) = e.metadata() else { continue };
            if md.is_dir() {
                walk(&p, out);
            } else {
                let mtime = md
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map(|d| d.as_nanos())
                    .unwrap_or(0);
                out.push((p.to_string_lossy().into_owned(), md.len(), mtime));
            }
        }
    }
    let mut files = Vec::new();
    walk(dir, &mut files);
    files.sort();
    files
        .iter()
        .map(|(p, len, m)| format!("{p}:{len}:{m}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Builds `program_dir` (e.g. `tests/go/maptruth`, relative to the package root, or absolute)
/// with the variant's toolchain into `target/go-bins/<variant>/<program>`, cached by the sources'
/// names, sizes and mtimes plus the build flags. `None` (after a loud SKIP) when the toolchain is
/// missing; panics instead under `MAPGUARD_REQUIRE_BPF=1`. A failing build always panics.
pub fn build_go(variant: &Variant, program_dir: &Path) -> Option<PathBuf> {
    let src = if program_dir.is_absolute() {
        program_dir.to_path_buf()
    } else {
        manifest_dir().join(program_dir)
    };
    let program = src
        .file_name()
        .and_then(OsStr::to_str)
        .unwrap_or_else(|| panic!("bad Go program dir {}", src.display()))
        .to_string();
    let go = go_binary(variant);
    if !go.is_file() {
        skip(&format!(
            "Go toolchain {} not found at {} (set MAPGUARD_GO_DIR, or run .ci/run)",
            variant.version,
            go.display()
        ));
        return None;
    }
    let mut flags: Vec<String> = vec!["build".into()];
    if variant.pie {
        flags.push("-buildmode=pie".into());
    }
    if variant.stripped {
        flags.push("-ldflags=-s -w".into());
    }
    let stamp = format!(
        "go={}\nflags={:?}\nexperiment={:?}\ncgo={}\n{}",
        go.display(),
        flags,
        variant.goexperiment,
        variant.cgo,
        source_stamp(&src)
    );

    let out_dir = target_dir().join("go-bins").join(variant.name);
    let out = out_dir.join(&program);
    let stamp_path = out_dir.join(format!("{program}.stamp"));

    let _guard = BUILD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if out.is_file() && std::fs::read_to_string(&stamp_path).ok().as_deref() == Some(&stamp) {
        return Some(out);
    }
    std::fs::create_dir_all(&out_dir)
        .unwrap_or_else(|e| panic!("mkdir {}: {e}", out_dir.display()));
    let cache = target_dir().join("go-cache");
    let gopath = target_dir().join("go-path");
    let _ = std::fs::create_dir_all(&cache);
    let _ = std::fs::create_dir_all(&gopath);

    static N: AtomicUsize = AtomicUsize::new(0);
    let tmp = out_dir.join(format!(
        ".{program}.tmp.{}.{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let mut cmd = Command::new(&go);
    cmd.args(&flags)
        .arg("-o")
        .arg(&tmp)
        .arg(".")
        .current_dir(&src)
        .env("GOCACHE", &cache)
        .env("GOPATH", &gopath)
        .env("GOMODCACHE", gopath.join("pkg").join("mod"))
        .env("GOFLAGS", "-mod=mod")
        .env("GOTOOLCHAIN", "local")
        .env("GOPROXY", "off")
        .env("GOSUMDB", "off")
        .env("GOWORK", "off")
        .env("GOENV", "off")
        .env("CGO_ENABLED", if variant.cgo { "1" } else { "0" })
        .env("GOOS", "linux")
        .env_remove("GOARCH")
        .env_remove("GOROOT")
        .env_remove("GOAMD64");
    match variant.goexperiment {
        Some(e) => cmd.env("GOEXPERIMENT", e),
        None => cmd.env_remove("GOEXPERIMENT"),
    };
    let started = Instant::now();
    let res = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", go.display()));
    if !res.status.success() {
        let _ = std::fs::remove_file(&tmp);
        panic!(
            "go build of {} with {} failed ({}):\n{}{}",
            src.display(),
            variant.name,
            res.status,
            String::from_utf8_lossy(&res.stdout),
            String::from_utf8_lossy(&res.stderr)
        );
    }
    std::fs::rename(&tmp, &out).unwrap_or_else(|e| panic!("rename to {}: {e}", out.display()));
    let stamp_tmp = out_dir.join(format!(".{program}.stamp.tmp.{}", std::process::id()));
    std::fs::write(&stamp_tmp, &stamp).expect("write build stamp");
    std::fs::rename(&stamp_tmp, &stamp_path).expect("rename build stamp");
    eprintln!(
        "built {} for {} in {:.1}s",
        out.display(),
        variant.name,
        started.elapsed().as_secs_f64()
    );
    Some(out)
}

/// Runs `cmd` to its end with `input` on its stdin: (status, stdout, stderr). The input is
/// written from a thread, so a command that answers before reading it all cannot deadlock.
pub fn run_with_input(mut cmd: Command, input: &str) -> (ExitStatus, String, String) {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_string();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    writer
        .join()
        .expect("stdin writer")
        .unwrap_or_else(|e| panic!("write to {what}: {e}"));
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The tool under test.
pub fn mapguard_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kubectl-mapguard"))
}

fn cap_eff() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("CapEff:"))?;
    u64::from_str_radix(line["CapEff:".len()..].trim(), 16).ok()
}

/// true when this process may load BPF programs and attach uprobes (root, or CAP_BPF +
/// CAP_PERFMON, or CAP_SYS_ADMIN). When false: panics under `MAPGUARD_REQUIRE_BPF=1`, else prints
/// a loud SKIP and returns false.
pub fn bpf_available_or_skip(test: &str) -> bool {
    const CAP_SYS_ADMIN: u64 = 1 << 21;
    const CAP_PERFMON: u64 = 1 << 38;
    const CAP_BPF: u64 = 1 << 39;
    let caps = cap_eff().unwrap_or(0);
    let ok = cfg!(target_os = "linux")
        && (caps & CAP_SYS_ADMIN != 0 || (caps & CAP_BPF != 0 && caps & CAP_PERFMON != 0));
    if !ok {
        skip(&format!(
            "{test}: needs root or CAP_BPF+CAP_PERFMON to load BPF (CapEff={caps:#x})"
        ));
    }
    ok
}

/// Checks for BPF, then builds `program_dir` (e.g. `tests/go/sameline`) for the variant; None
/// (after a loud SKIP) when the test must skip.
pub fn traceable(v: &Variant, test: &str, program_dir: &str) -> Option<PathBuf> {
    if !bpf_available_or_skip(&format!("{test} [{}]", v.name)) {
        return None;
    }
    build_go(v, Path::new(program_dir))
}

/// Shares one run per (what, variant) between the tests that only read it; a failed run is
/// remembered, so the other tests of that variant fail at once instead of re-running (and
/// perhaps re-hanging) it. None when BPF is missing (a loud SKIP) or `make` skipped.
pub fn shared_run<T: Send + Sync + 'static>(
    what: &'static str,
    v: &Variant,
    make: impl FnOnce() -> Option<T> + std::panic::UnwindSafe,
) -> Option<Arc<T>> {
    // One map for every T (a static is not per instantiation), hence `Any`.
    type Shared = Arc<dyn std::any::Any + Send + Sync>;
    type Slot = Arc<Mutex<Option<Result<Option<Shared>, String>>>>;
    static RUNS: OnceLock<Mutex<HashMap<(&'static str, &'static str), Slot>>> = OnceLock::new();
    if !bpf_available_or_skip(&format!("{what} [{}]", v.name)) {
        return None;
    }
    let slot = RUNS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry((what, v.name))
        .or_default()
        .clone();
    let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
    if slot.is_none() {
        let res = std::panic::catch_unwind(|| make().map(|r| Arc::new(r) as Shared));
        *slot = Some(res.map_err(|e| {
            e.downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".into())
        }));
    }
    match slot.as_ref().unwrap() {
        Ok(run) => run.clone().map(|r| {
            r.downcast::<T>()
                .unwrap_or_else(|_| panic!("shared run `{what}` made with another type"))
        }),
        Err(msg) => panic!("{}: the shared `{what}` run failed:\n{msg}", v.name),
    }
}

/// Runs `kubectl-mapguard ARGS`, parses stdout as JSON lines (panics on a line that is not
/// JSON: stdout carries data only), returns (status, lines, stderr). Killed after `timeout`,
/// which fails the test.
pub fn run_mapguard(args: &[&str], timeout: Duration) -> (ExitStatus, Vec<Value>, String) {
    Mapguard::spawn(args).finish(timeout)
}

/// Like [`run_mapguard`] but returns stdout as text (for `-o table`).
pub fn run_mapguard_raw(args: &[&str], timeout: Duration) -> (ExitStatus, String, String) {
    Mapguard::spawn_cmd(mapguard_command(args), false).finish_raw(timeout)
}

/// The tool's command with a clean environment for errors (no backtraces requested, so a panic
/// shows its tell-tale `RUST_BACKTRACE` note).
pub fn mapguard_command(args: &[&str]) -> Command {
    let mut cmd = Command::new(mapguard_bin());
    cmd.args(args)
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .env("NO_COLOR", "1");
    cmd
}

/// A running `kubectl-mapguard` whose stdout lines are collected as they come.
pub struct Mapguard {
    child: Child,
    rx: Receiver<String>,
    stderr: Arc<Mutex<String>>,
    stderr_thread: Option<std::thread::JoinHandle<()>>,
    /// Lines parsed so far (in order).
    pub lines: Vec<Value>,
    raw: Vec<String>,
    parse_json: bool,
    args: String,
}

impl Mapguard {
    pub fn spawn(args: &[&str]) -> Mapguard {
        Self::spawn_cmd(mapguard_command(args), true)
    }

    pub fn spawn_cmd(mut cmd: Command, parse_json: bool) -> Mapguard {
        let args = format!("{cmd:?}");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {args}: {e}"));
        let stdout = child.stdout.take().unwrap();
        let mut stderr_pipe = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                match line {
                    Ok(l) => {
                        if tx.send(l).is_err() {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let st = stderr.clone();
        let stderr_thread = std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            loop {
                match stderr_pipe.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => st
                        .lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n])),
                }
            }
        });
        Mapguard {
            child,
            rx,
            stderr,
            stderr_thread: Some(stderr_thread),
            lines: Vec::new(),
            raw: Vec::new(),
            parse_json,
            args,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the tool wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn take_line(&mut self, l: String) -> Option<Value> {
        self.raw.push(l.clone());
        if !self.parse_json || l.trim().is_empty() {
            return None;
        }
        match serde_json::from_str::<Value>(&l) {
            Ok(v) => {
                self.lines.push(v.clone());
                Some(v)
            }
            Err(e) => {
                let _ = self.child.kill();
                panic!(
                    "{}: stdout line is not JSON ({e}): {l:?}\nstderr:\n{}",
                    self.args,
                    self.stderr()
                )
            }
        }
    }

    /// Waits for a line matching `pred` (lines before it are kept in `self.lines`). Panics on
    /// timeout or when stdout closes first.
    pub fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = self.next_line(what, timeout, deadline) {
                if pred(&v) {
                    return v;
                }
            }
        }
    }

    /// Waits for the `kind` line (e.g. "attached") of process `pid`; `what` names it on timeout.
    pub fn wait_for_pid(&mut self, what: &str, kind: &str, pid: u64, timeout: Duration) -> Value {
        self.wait_for(what, timeout, |l| {
            kind_is(l, kind) && l.get("pid").and_then(Value::as_u64) == Some(pid)
        })
    }

    /// Waits until `done` holds for the lines read so far. Panics on timeout or when stdout
    /// closes first.
    pub fn wait_until(&mut self, what: &str, timeout: Duration, done: impl Fn(&[Value]) -> bool) {
        let deadline = Instant::now() + timeout;
        while !done(&self.lines) {
            self.next_line(what, timeout, deadline);
        }
    }

    fn next_line(&mut self, what: &str, timeout: Duration, deadline: Instant) -> Option<Value> {
        let left = deadline.saturating_duration_since(Instant::now());
        let why = match self.rx.recv_timeout(left) {
            Ok(l) => return self.take_line(l),
            Err(RecvTimeoutError::Timeout) => {
                format!("no {what} line within {timeout:?}; lines so far")
            }
            Err(RecvTimeoutError::Disconnected) => {
                format!("stdout closed before a {what} line; lines")
            }
        };
        kill_if_running(&mut self.child);
        panic!(
            "{}: {why}:\n{}\nstderr:\n{}",
            self.args,
            tail(&self.raw, 40),
            self.stderr()
        );
    }

    /// Sends a signal (e.g. "INT", "TERM") with kill(1).
    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .arg("-s")
            .arg(sig)
            .arg(self.child.id().to_string())
            .status();
    }

    /// Waits for exit (kills and panics after `timeout`).
    fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        match wait_or_kill(&mut self.child, timeout) {
            Some(st) => st,
            None => {
                let raw = self.drain_raw();
                panic!(
                    "{}: still running after {timeout:?}, killed; stdout tail:\n{}\nstderr:\n{}",
                    self.args,
                    tail(&raw, 40),
                    self.stderr()
                );
            }
        }
    }

    /// Every stdout line read so far plus the rest until EOF (bounded wait: a grandchild may
    /// hold the pipe).
    fn drain_raw(&mut self) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(l) => {
                    self.take_line(l);
                }
                Err(_) => break,
            }
        }
        if let Some(t) = self.stderr_thread.take() {
            // The stderr reader ends at EOF; don't hang if a grandchild keeps it open.
            let deadline = Instant::now() + Duration::from_secs(5);
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
        self.raw.clone()
    }

    /// Waits for the tool to end by itself; returns (status, stdout text, stderr).
    pub fn finish_raw(mut self, timeout: Duration) -> (ExitStatus, String, String) {
        let status = self.wait_exit(timeout);
        let stdout = self.drain_raw().join("\n");
        (status, stdout, self.stderr())
    }

    /// Waits for the tool to end by itself; returns (status, all lines, stderr).
    pub fn finish(mut self, timeout: Duration) -> (ExitStatus, Vec<Value>, String) {
        let status = self.wait_exit(timeout);
        self.drain_raw();
        let lines = std::mem::take(&mut self.lines);
        (status, lines, self.stderr())
    }
}

impl Drop for Mapguard {
    fn drop(&mut self) {
        kill_if_running(&mut self.child);
    }
}

/// The child's exit status, or None once `timeout` passed (it is killed and reaped then).
pub fn wait_or_kill(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return Some(st);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// So that no test leaves a process behind, whatever it panicked on.
pub fn kill_if_running(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// The last `n` lines, each cut at 1500 bytes, for a failure message that stays readable.
pub fn tail<T: std::fmt::Display>(lines: &[T], n: usize) -> String {
    let start = lines.len().saturating_sub(n);
    let mut s = String::new();
    if start > 0 {
        s.push_str(&format!("... ({start} earlier lines)\n"));
    }
    for l in &lines[start..] {
        let t = l.to_string();
        let mut cut = t.len().min(1500);
        while !t.is_char_boundary(cut) {
            cut -= 1;
        }
        s.push_str(&t[..cut]);
        if cut < t.len() {
            s.push_str(" ...(cut)");
        }
        s.push('\n');
    }
    s
}

// ---------------------------------------------------------------------------------------------
// A traced Go program run to its end.

/// One finished `kubectl-mapguard VERB ... -- PROGRAM [TRUTH] ARGS` run.
pub struct Run {
    pub status: ExitStatus,
    pub lines: Vec<Value>,
    pub stderr: String,
    /// The program's truth file (empty for programs that write none).
    pub truth: Vec<Value>,
    /// pid of the program (from its `attached` line).
    pub pid: u64,
    pub args: String,
}

impl Run {
    /// What ran and how it ended, for a failure message.
    pub fn ctx(&self) -> String {
        format!(
            "`kubectl-mapguard {}` exited {}\nstdout tail:\n{}\nstderr:\n{}",
            self.args,
            self.status,
            tail(&self.lines, 12),
            stderr_tail(&self.stderr)
        )
    }
}

/// The last 40 lines of a stderr.
pub fn stderr_tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    let start = lines.len().saturating_sub(40);
    lines[start..].join("\n")
}

/// Runs `kubectl-mapguard ARGS -- PROGRAM [TRUTH] PROG_ARGS` to its end (killed after
/// `timeout`, with `env` added); with `truth`, the program gets a truth file path as its first
/// argument and must have written it. Checks the protocol and that one process was attached.
pub fn run_program_t(
    v: &Variant,
    test: &str,
    args: &[&str],
    program_dir: &str,
    truth: bool,
    prog_args: &[&str],
    timeout: Duration,
    env: &[(&str, &str)],
) -> Option<Run> {
    let bin = traceable(v, test, program_dir)?;
    let tmp = TempDir::new(&format!("{test}-{}", v.name));
    let truth_path = tmp.join("truth.jsonl");
    let mut argv: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    argv.push("--".into());
    argv.push(bin.to_string_lossy().into_owned());
    if truth {
        argv.push(truth_path.to_string_lossy().into_owned());
    }
    argv.extend(prog_args.iter().map(|s| s.to_string()));
    let a: Vec<&str> = argv.iter().map(String::as_str).collect();
    let mut cmd = mapguard_command(&a);
    cmd.envs(env.iter().copied());
    let (status, lines, stderr) = if args.windows(2).any(|w| w == ["-o", "yaml"]) {
        let (status, out, stderr) = Mapguard::spawn_cmd(cmd, false).finish_raw(timeout);
        (status, yaml_docs(&out), stderr)
    } else {
        Mapguard::spawn_cmd(cmd, true).finish(timeout)
    };
    let args = argv.join(" ");
    let truth = if truth {
        assert!(
            truth_path.exists(),
            "{}: {program_dir} wrote no truth file; did it run to its end?\n\
             `kubectl-mapguard {args}` exited {status}\nstdout tail:\n{}\nstderr:\n{}",
            v.name,
            tail(&lines, 12),
            stderr_tail(&stderr)
        );
        read_truth(&truth_path)
    } else {
        Vec::new()
    };
    assert_protocol_v1(&lines);
    let attached = of_kind(&lines, "attached");
    assert_eq!(
        attached.len(),
        1,
        "{}: one traced process, one attached line\n`kubectl-mapguard {args}` exited {status}\n\
         stdout tail:\n{}\nstderr:\n{}",
        v.name,
        tail(&lines, 12),
        stderr_tail(&stderr)
    );
    let pid = attached[0]
        .get("pid")
        .and_then(Value::as_u64)
        .expect("attached.pid");
    Some(Run {
        status,
        lines,
        stderr,
        truth,
        pid,
        args,
    })
}

// ---------------------------------------------------------------------------------------------
// maptruth: the Go program that writes down every map operation it performs.

/// `tests/go/maptruth` built for the variant (None = skipped).
pub fn maptruth(variant: &Variant) -> Option<PathBuf> {
    build_go(variant, Path::new("tests/go/maptruth"))
}

/// A Go test program started directly by the test (not by the tool), e.g. `maptruth TRUTH wait`,
/// which blocks until [`GoProc::trigger`] writes a line to its stdin. Killed on drop.
pub struct GoProc {
    pub child: Child,
    stdin: Option<ChildStdin>,
}

impl GoProc {
    pub fn spawn(bin: &Path, args: &[&OsStr]) -> GoProc {
        let mut child = Command::new(bin)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        let stdin = child.stdin.take();
        GoProc { child, stdin }
    }
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
    /// Releases a `wait` scenario: it reads one line from stdin, then runs its workload.
    pub fn trigger(&mut self) {
        let mut stdin = self.stdin.take().expect("trigger once");
        stdin
            .write_all(b"go\n")
            .expect("write trigger to maptruth stdin");
        drop(stdin);
    }
    /// Waits for exit (kills and panics after `timeout`).
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        wait_or_kill(&mut self.child, timeout).unwrap_or_else(|| {
            panic!(
                "Go program {} did not exit within {timeout:?}",
                self.child.id()
            )
        })
    }
}

impl Drop for GoProc {
    fn drop(&mut self) {
        kill_if_running(&mut self.child);
    }
}

/// One line of a truth file:
/// `{"op","map_type","func","line","goid","key"?,"len"}`.
pub fn read_truth(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read truth file {}: {e}", path.display()));
    let recs: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("truth line {l:?}: {e}")))
        .collect();
    assert!(!recs.is_empty(), "truth file {} is empty", path.display());
    recs
}

/// The string at JSON pointer `ptr`, or "" when there is none.
pub fn str_at<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

pub fn kind_is(v: &Value, kind: &str) -> bool {
    v.get("kind").and_then(Value::as_str) == Some(kind)
}

pub fn of_kind<'a>(lines: &'a [Value], kind: &str) -> Vec<&'a Value> {
    lines.iter().filter(|v| kind_is(v, kind)).collect()
}

pub fn events(lines: &[Value]) -> Vec<&Value> {
    of_kind(lines, "event")
}

pub fn caller_func(ev: &Value) -> &str {
    ev.pointer("/caller/func")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// Events whose caller is in package main (the Go program's own operations).
pub fn main_events<'a>(lines: &'a [Value]) -> Vec<&'a Value> {
    events(lines)
        .into_iter()
        .filter(|e| caller_func(e).starts_with("main."))
        .collect()
}

/// The one `summary` line, which must be the last line.
pub fn summary(lines: &[Value]) -> &Value {
    let sums = of_kind(lines, "summary");
    assert_eq!(
        sums.len(),
        1,
        "expected exactly one summary line, got {}",
        sums.len()
    );
    assert!(
        kind_is(lines.last().unwrap(), "summary"),
        "summary must be the last line, last is {}",
        lines.last().unwrap()
    );
    sums[0]
}

pub fn summary_op(sum: &Value, op: &str) -> u64 {
    sum.pointer(&format!("/ops/{op}"))
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("summary has no ops.{op}: {sum}"))
}

/// Every line has `"v": 1` and a `kind`.
pub fn assert_protocol_v1(lines: &[Value]) {
    for l in lines {
        assert_eq!(
            l.get("v").and_then(Value::as_u64),
            Some(1),
            "line without v=1: {l}"
        );
        assert!(
            l.get("kind").and_then(Value::as_str).is_some(),
            "line without kind: {l}"
        );
    }
}

/// Identity of one map operation for comparing multisets.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpKey {
    pub op: String,
    pub map_type: Option<String>,
    pub func: String,
    pub line: u64,
    pub goid: Option<u64>,
    pub key: Option<String>,
}

fn s(v: &Value, p: &str) -> Option<String> {
    v.pointer(p).and_then(Value::as_str).map(str::to_string)
}

pub fn truth_key(t: &Value, with_type: bool) -> OpKey {
    OpKey {
        op: s(t, "/op").expect("truth op"),
        map_type: if with_type { s(t, "/map_type") } else { None },
        func: s(t, "/func").expect("truth func"),
        line: t.get("line").and_then(Value::as_u64).expect("truth line"),
        goid: t.get("goid").and_then(Value::as_u64),
        key: s(t, "/key"),
    }
}

pub fn event_key(e: &Value, with_type: bool) -> OpKey {
    OpKey {
        op: s(e, "/op").unwrap_or_default(),
        map_type: if with_type { s(e, "/map_type") } else { None },
        func: caller_func(e).to_string(),
        line: e
            .pointer("/caller/line")
            .and_then(Value::as_u64)
            .unwrap_or(0),
        goid: e.get("goid").and_then(Value::as_u64),
        key: s(e, "/key"),
    }
}

pub fn multiset<K: Ord, I: IntoIterator<Item = K>>(it: I) -> BTreeMap<K, i64> {
    let mut m = BTreeMap::new();
    for k in it {
        *m.entry(k).or_insert(0) += 1;
    }
    m
}

/// Panics with a readable diff unless `got` == `want` (as multisets).
pub fn assert_same_multiset(what: &str, got: &BTreeMap<OpKey, i64>, want: &BTreeMap<OpKey, i64>) {
    if got == want {
        return;
    }
    let mut missing = Vec::new();
    let mut extra = Vec::new();
    let mut n_missing = 0;
    let mut n_extra = 0;
    for (k, &w) in want {
        let g = got.get(k).copied().unwrap_or(0);
        if g < w {
            n_missing += w - g;
            missing.push(format!("  {}x {k:?}", w - g));
        }
    }
    for (k, &g) in got {
        let w = want.get(k).copied().unwrap_or(0);
        if g > w {
            n_extra += g - w;
            extra.push(format!("  {}x {k:?}", g - w));
        }
    }
    missing.truncate(25);
    extra.truncate(25);
    panic!(
        "{what}: {} ops expected, {} seen; {n_missing} missing from the tool's output, {n_extra} \
         unexpected\nmissing (first kinds):\n{}\nunexpected (first kinds):\n{}",
        want.values().sum::<i64>(),
        got.values().sum::<i64>(),
        missing.join("\n"),
        extra.join("\n")
    );
}

/// Every `main.*` event the tool emitted is one the program really did: contained in the truth
/// as multisets (for sampled or rate-limited runs, which emit only part of the truth).
pub fn assert_emitted_are_real(what: &str, lines: &[Value], truth: &[Value], with_type: bool) {
    let want = multiset(truth.iter().map(|t| truth_key(t, with_type)));
    let got = multiset(main_events(lines).iter().map(|e| event_key(e, with_type)));
    for (k, &g) in &got {
        let w = want.get(k).copied().unwrap_or(0);
        assert!(g <= w, "{what}: event {k:?} x{g}, truth has {w}");
    }
}

/// The main check: the tool's events with a `main.*` caller are exactly the truth file's
/// records: (op, caller.func, caller.line, goid, key, map_type) as multisets, in every build
/// stripped ones included; caller.file is maptruth's main.go; no concurrent writes.
pub fn assert_events_match_truth(variant: &Variant, lines: &[Value], truth: &[Value]) {
    let evs = main_events(lines);
    for e in &evs {
        let file = str_at(e, "/caller/file");
        assert!(
            file.ends_with("maptruth/main.go"),
            "{}: caller.file should end with maptruth/main.go: {e}",
            variant.name
        );
        assert_eq!(
            e.get("concurrent_write").and_then(Value::as_bool),
            Some(false),
            "{}: maptruth never writes one map from two goroutines: {e}",
            variant.name
        );
        assert!(
            e.get("goid").map(|g| g.is_u64()).unwrap_or(false),
            "{}: goid must be known for {}: {e}",
            variant.name,
            variant.go_version()
        );
        // Type names come from the runtime's type data, which stripping keeps.
        assert!(
            e.get("map_type").and_then(Value::as_str).is_some(),
            "{}: map_type must be known: {e}",
            variant.name
        );
    }
    // Exact without map_type, then with it too.
    for with_type in [false, true] {
        let got = multiset(evs.iter().map(|e| event_key(e, with_type)));
        let want = multiset(truth.iter().map(|t| truth_key(t, with_type)));
        let what = if with_type { " with map_type" } else { "" };
        assert_same_multiset(
            &format!("{} main.* events{what} vs truth", variant.name),
            &got,
            &want,
        );
    }
}

/// map_len (entries before the operation) matches the truth's `len`, per (op, line, goid, key).
pub fn assert_map_len_matches_truth(variant: &Variant, lines: &[Value], truth: &[Value]) {
    let got = multiset(main_events(lines).into_iter().map(|e| {
        (
            event_key(e, false),
            e.get("map_len").and_then(Value::as_u64),
        )
    }));
    let want = multiset(
        truth
            .iter()
            .map(|t| (truth_key(t, false), t.get("len").and_then(Value::as_u64))),
    );
    assert_counts_eq(
        &format!("{}: map_len differs from the truth's len", variant.name),
        &got,
        &want,
    );
}

/// Panics with the first 20 of `want`'s entries that `got` counts differently, unless the two
/// are equal.
pub fn assert_counts_eq<K: Ord + std::fmt::Debug>(
    what: &str,
    got: &BTreeMap<K, i64>,
    want: &BTreeMap<K, i64>,
) {
    if got == want {
        return;
    }
    let diff: Vec<String> = want
        .iter()
        .filter(|(k, w)| got.get(k) != Some(w))
        .take(20)
        .map(|(k, w)| {
            format!(
                "  want {w}x {k:?}, got {}",
                got.get(k).copied().unwrap_or(0)
            )
        })
        .collect();
    panic!("{what}:\n{}", diff.join("\n"));
}

/// summary.ops equals the number of events received per op (no drops, no sampling), drops == 0,
/// events_emitted == number of event lines.
pub fn assert_summary_exact(variant: &Variant, lines: &[Value]) {
    let sum = summary(lines);
    let evs = events(lines);
    for op in ["delete", "assign", "clear"] {
        let n = evs
            .iter()
            .filter(|e| e.get("op").and_then(Value::as_str) == Some(op))
            .count();
        assert_eq!(
            summary_op(sum, op),
            n as u64,
            "{}: summary.ops.{op} must equal the {op} events received: {sum}",
            variant.name
        );
    }
    assert_eq!(
        sum.get("drops").and_then(Value::as_u64),
        Some(0),
        "{}: drops: {sum}",
        variant.name
    );
    assert_eq!(
        sum.get("events_emitted").and_then(Value::as_u64),
        Some(evs.len() as u64),
        "{}: events_emitted vs event lines: {sum}",
        variant.name
    );
}

/// Counts per op in a truth file.
pub fn truth_counts(truth: &[Value]) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for t in truth {
        *m.entry(s(t, "/op").unwrap()).or_insert(0) += 1;
    }
    m
}

/// The `attached` line for `pid`: version, map layout, probes.
pub fn assert_attached(variant: &Variant, lines: &[Value], pid: u64) {
    let att: Vec<&Value> = of_kind(lines, "attached")
        .into_iter()
        .filter(|a| a.get("pid").and_then(Value::as_u64) == Some(pid))
        .collect();
    assert_eq!(
        att.len(),
        1,
        "{}: one attached line for pid {pid}, got {att:?}",
        variant.name
    );
    let a = att[0];
    assert_eq!(
        a.get("go_version").and_then(Value::as_str),
        Some(variant.go_version().as_str()),
        "{}: go_version: {a}",
        variant.name
    );
    assert_eq!(
        a.get("map_impl").and_then(Value::as_str),
        Some(variant.map_impl()),
        "{}: map_impl: {a}",
        variant.name
    );
    let probes = a
        .get("probes")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    assert!(
        !probes.is_empty(),
        "{}: attached without probes: {a}",
        variant.name
    );
    // The first event of that pid comes after its attached line.
    let ai = lines.iter().position(|l| std::ptr::eq(l, a)).unwrap();
    if let Some(ei) = lines
        .iter()
        .position(|l| kind_is(l, "event") && l.get("pid").and_then(Value::as_u64) == Some(pid))
    {
        assert!(
            ai < ei,
            "{}: an event of pid {pid} came before its attached line",
            variant.name
        );
    }
}

// ---------------------------------------------------------------------------------------------
// podwork (tests/go/podwork), the target of the cluster tests: N assigns of keys `TAG-i`, then
// deletes of the first N/2.

/// What podwork with this tag and N does: (op, key), sorted.
pub fn podwork_expected_ops(tag: &str, n: usize) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = (0..n)
        .map(|i| ("assign".to_string(), format!("{tag}-{i}")))
        .chain((0..n / 2).map(|i| ("delete".to_string(), format!("{tag}-{i}"))))
        .collect();
    v.sort();
    v
}

/// (op, key) of these events per pod, sorted like [`podwork_expected_ops`].
pub fn ops_by_pod<'a>(
    events: impl IntoIterator<Item = &'a Value>,
) -> BTreeMap<String, Vec<(String, String)>> {
    let mut out: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for e in events {
        out.entry(e["pod"].as_str().unwrap_or("?").to_string())
            .or_default()
            .push((
                e["op"].as_str().unwrap().to_string(),
                e["key"].as_str().unwrap_or("").to_string(),
            ));
    }
    for v in out.values_mut() {
        v.sort();
    }
    out
}

/// The sum of a `stats` line's row counts for `op` by caller `func`.
pub fn row_count(stats: &Value, func: &str, op: &str) -> u64 {
    stats["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["op"] == op && r["caller"]["func"] == func)
        .map(|r| r["count"].as_u64().unwrap())
        .sum()
}

// ---------------------------------------------------------------------------------------------
// Helpers added for tests/watch_local.rs (watch, concurrent writes, metrics).

/// A TCP port on 127.0.0.1 that was free a moment ago: bound to port 0, read back, released.
/// (Another process may take it before the tool binds it; tests that race for it are rare.)
pub fn free_local_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let port = l.local_addr().expect("local_addr").port();
    drop(l);
    port
}

/// An HTTP/1.1 response: status code, header lines (lower-cased names kept as sent), body
/// (chunked transfer encoding decoded).
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// `GET path` over a plain std TcpStream (no HTTP client crate), `Connection: close`.
pub fn http_get(addr: &str, path: &str, timeout: Duration) -> std::io::Result<HttpResponse> {
    use std::io::{Error, ErrorKind};
    use std::net::{TcpStream, ToSocketAddrs};
    let sa = addr
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| Error::new(ErrorKind::InvalidInput, format!("bad address {addr}")))?;
    let mut s = TcpStream::connect_timeout(&sa, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/plain\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| Error::new(ErrorKind::InvalidData, "no end of HTTP headers"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut body = raw[split + 4..].to_vec();
    let mut head_lines = head.lines();
    let status_line = head_lines.next().unwrap_or("");
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidData,
                format!("status line {status_line:?}"),
            )
        })?;
    let headers: Vec<(String, String)> = head_lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked")
    });
    if chunked {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
                break;
            };
            let size_txt = String::from_utf8_lossy(&rest[..eol]).into_owned();
            let size = usize::from_str_radix(size_txt.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| Error::new(ErrorKind::InvalidData, "bad chunk size"))?;
            rest = &rest[eol + 2..];
            if size == 0 || rest.len() < size {
                break;
            }
            out.extend_from_slice(&rest[..size]);
            rest = &rest[(size + 2).min(rest.len())..];
        }
        body = out;
    }
    Ok(HttpResponse {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// `name` along $PATH (and the usual system directories), if it is there.
pub fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into());
    let found = path
        .split(':')
        .filter(|d| !d.is_empty())
        .chain(["/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin"])
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file());
    found
}

/// Lines of a JSON-lines truth file whose `"kind"` is `kind` (tests/go/{hotkeys,mutexwriters,
/// recursion} write `key`, `caller`, `total`, ... lines).
pub fn truth_of_kind<'a>(truth: &'a [Value], kind: &str) -> Vec<&'a Value> {
    truth.iter().filter(|t| kind_is(t, kind)).collect()
}

/// The `stats` lines, in order.
pub fn stats_lines(lines: &[Value]) -> Vec<&Value> {
    of_kind(lines, "stats")
}

/// The last `stats` line (watch emits a final one after `detached`, right before `summary`).
pub fn final_stats(lines: &[Value]) -> &Value {
    of_kind(lines, "stats")
        .last()
        .copied()
        .unwrap_or_else(|| panic!("no stats line among {} lines", lines.len()))
}

/// `-o yaml`'s stdout: YAML documents, each after `---`, read back as the JSON lines they are.
pub fn yaml_docs(out: &str) -> Vec<Value> {
    assert!(
        out.is_empty() || out.starts_with("---\n"),
        "YAML documents start with ---:\n{}",
        &out[..out.len().min(300)]
    );
    serde_yaml_ng::Deserializer::from_str(out)
        .map(|d| {
            <Value as serde::Deserialize>::deserialize(d)
                .unwrap_or_else(|e| panic!("not YAML ({e}):\n{}", &out[..out.len().min(300)]))
        })
        .collect()
}

/// Every probe point of `bin` holds, in the running process `pid`, the byte
/// the binary has there: no breakpoint left behind.
pub fn assert_code_as_built(bin: &std::path::Path, pid: u32) {
    use std::os::unix::fs::FileExt;
    let (status, out, err) = run_mapguard_raw(
        &["check", bin.to_str().unwrap(), "-o", "json"],
        Duration::from_secs(30),
    );
    assert!(status.success(), "{err}");
    let check: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(check["pie"], false, "addresses are link addresses: {check}");
    let file = std::fs::File::open(bin).unwrap();
    let mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    let hex =
        |v: &Value| u64::from_str_radix(v.as_str().unwrap().trim_start_matches("0x"), 16).unwrap();
    let probes = check["probes"].as_array().unwrap();
    assert!(probes.len() >= 5, "{check}");
    for probe in probes {
        let (mut built, mut live) = ([0u8], [0u8]);
        file.read_exact_at(&mut built, hex(&probe["file_offset"]))
            .unwrap();
        mem.read_exact_at(&mut live, hex(&probe["address"]))
            .unwrap();
        assert_eq!(
            live, built,
            "{} in pid {pid} still holds {:#04x} where the binary has {:#04x}",
            probe["function"], live[0], built[0]
        );
    }
}
