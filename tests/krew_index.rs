//! The krew plugin manifest (krew-index/mapguard.yaml) against krew's rules,
//! the release archive that .ci/package builds (when dist/ holds one), and the
//! cluster manifests in manifests/: the users' RBAC grants exactly what the
//! CLI's preflight checks, and the agent namespace enforces Pod Security
//! `privileged`.
//!
//! Each checker returns the list of problems it found, so the `rejects_*`
//! tests below can feed it a broken copy of the real file and show that the
//! check does fail.
//!
//! Hashing uses the `sha256sum` command and archive listing `tar -tzf`.

mod common;

use regex::Regex;
use serde::Deserialize;
use serde_yaml_ng::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

const MANIFEST: &str = "krew-index/mapguard.yaml";
const CRATE_VERSION: &str = env!("CARGO_PKG_VERSION");
const ALL_ZERO_SHA: &str = "0000000000000000000000000000000000000000000000000000000000000000";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Fails with every problem a checker found in `file`.
fn no_problems(file: &str, problems: Vec<String>) {
    assert!(problems.is_empty(), "{file}:\n  {}", problems.join("\n  "));
}

fn read(rel: &str) -> String {
    let path = root().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Every non-empty document of a (possibly multi-document) YAML text.
fn docs(text: &str) -> Result<Vec<Value>, String> {
    let mut out = Vec::new();
    for de in serde_yaml_ng::Deserializer::from_str(text) {
        let v = Value::deserialize(de).map_err(|e| format!("not valid YAML: {e}"))?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Ok(out)
}

fn show(v: &Value) -> String {
    serde_yaml_ng::to_string(v)
        .map(|s| s.trim_end().replace('\n', " "))
        .unwrap_or_else(|_| format!("{v:?}"))
}

fn nonempty_str(v: Option<&Value>) -> Option<&str> {
    v.and_then(Value::as_str).filter(|s| !s.trim().is_empty())
}

fn file_stem(rel: &str) -> &str {
    Path::new(rel).file_stem().and_then(|s| s.to_str()).unwrap()
}

// ---------------------------------------------------------------- krew ----

/// semver.org's regular expression, with krew's leading `v`.
fn semver_v() -> Regex {
    Regex::new(
        r"^v(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$",
    )
    .unwrap()
}

/// The platform's `selector.matchLabels`, when it is a mapping of strings.
fn match_labels(platform: &Value) -> Option<BTreeMap<String, String>> {
    let labels = platform.get("selector")?.get("matchLabels")?.as_mapping()?;
    labels
        .iter()
        .map(|(k, v)| Some((k.as_str()?.to_string(), v.as_str()?.to_string())))
        .collect()
}

/// Two selectors overlap (one machine could match both) when every key they
/// both name has the same value: {os: linux} overlaps {os: linux, arch: amd64}.
fn overlap(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> bool {
    a.iter().all(|(k, v)| b.get(k).is_none_or(|w| w == v))
}

/// Problems with a krew plugin manifest named `stem`.yaml for a crate at
/// `crate_version`. Empty when krew would accept it (and it meets ours).
fn krew_problems(text: &str, stem: &str, crate_version: &str) -> Vec<String> {
    let mut p = Vec::new();
    let doc = match docs(text) {
        Ok(d) if d.len() == 1 => d.into_iter().next().unwrap(),
        Ok(d) => return vec![format!("{} YAML documents, want exactly 1", d.len())],
        Err(e) => return vec![e],
    };
    if doc.get("apiVersion").and_then(Value::as_str)
        != Some("krew.googlecontainertools.github.com/v1alpha2")
    {
        p.push("apiVersion is not krew.googlecontainertools.github.com/v1alpha2".into());
    }
    if doc.get("kind").and_then(Value::as_str) != Some("Plugin") {
        p.push("kind is not Plugin".into());
    }
    match doc
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
    {
        Some(name) if name == stem => {}
        other => p.push(format!(
            "metadata.name {other:?} differs from the file name {stem:?}"
        )),
    }
    let Some(spec) = doc.get("spec") else {
        p.push("no spec".into());
        return p;
    };

    match spec.get("version").and_then(Value::as_str) {
        Some(v) if semver_v().is_match(v) => {
            if v != format!("v{crate_version}") {
                p.push(format!(
                    "spec.version {v} is not Cargo.toml's v{crate_version}"
                ));
            }
        }
        other => p.push(format!(
            "spec.version {other:?} is not semver with a leading v"
        )),
    }
    match nonempty_str(spec.get("homepage")) {
        Some(h) if h.starts_with("https://") => {}
        other => p.push(format!("homepage {other:?} is not an https URL")),
    }
    match spec.get("shortDescription").and_then(Value::as_str) {
        None => p.push("no shortDescription".into()),
        Some(s) if s.trim().is_empty() => p.push("shortDescription is empty".into()),
        Some(s) if s.contains(['\n', '\r']) => {
            p.push(format!("shortDescription is not one line: {s:?}"))
        }
        Some(s) if s.chars().count() >= 80 => p.push(format!(
            "shortDescription is {} chars, want < 80",
            s.chars().count()
        )),
        Some(_) => {}
    }
    if nonempty_str(spec.get("description")).is_none() {
        p.push("no description".into());
    }
    // Not a krew rule, but ours: the caveats must name what the agent pods need.
    match nonempty_str(spec.get("caveats")) {
        None => p.push("no caveats".into()),
        Some(c) => {
            for word in ["hostPID", "BPF", "PERFMON", "SYS_PTRACE", "privileged"] {
                if !c.contains(word) {
                    p.push(format!("caveats do not mention {word}"));
                }
            }
        }
    }

    let platforms = match spec.get("platforms").and_then(Value::as_sequence) {
        Some(s) if !s.is_empty() => s,
        _ => {
            p.push("no spec.platforms".into());
            return p;
        }
    };
    let hex64 = Regex::new("^[0-9a-f]{64}$").unwrap();
    let version = spec.get("version").and_then(Value::as_str).unwrap_or("");
    let mut selectors: Vec<BTreeMap<String, String>> = Vec::new();
    for (i, plat) in platforms.iter().enumerate() {
        let at = format!("platforms[{i}]");
        let labels = match plat.get("selector").and_then(Value::as_mapping) {
            None => {
                p.push(format!("{at}: no selector"));
                None
            }
            Some(sel) => {
                for key in sel.keys() {
                    if key.as_str() != Some("matchLabels") {
                        p.push(format!(
                            "{at}: selector key {} (only matchLabels)",
                            show(key)
                        ));
                    }
                }
                match match_labels(plat) {
                    None => {
                        p.push(format!(
                            "{at}: selector.matchLabels is not a map of strings"
                        ));
                        None
                    }
                    Some(l) if l.is_empty() => {
                        p.push(format!("{at}: selector.matchLabels is empty"));
                        None
                    }
                    Some(l) => {
                        for (k, v) in &l {
                            if k != "os" && k != "arch" {
                                p.push(format!("{at}: matchLabels key {k:?} (only os, arch)"));
                            }
                            if v.is_empty()
                                || v.chars()
                                    .any(|c| !c.is_ascii_lowercase() && !c.is_ascii_digit())
                            {
                                p.push(format!("{at}: matchLabels {k}={v:?} is not lowercase"));
                            }
                        }
                        Some(l)
                    }
                }
            }
        };
        let uri = plat.get("uri").and_then(Value::as_str);
        match uri {
            Some(u)
                if u.starts_with("https://") && (u.ends_with(".tar.gz") || u.ends_with(".zip")) => {
            }
            other => p.push(format!(
                "{at}: uri {other:?} is not an https .tar.gz or .zip"
            )),
        }
        // Our naming (.ci/package): kubectl-mapguard_<version>_<os>_<arch>.tar.gz.
        if let (Some(u), Some(l)) = (uri, &labels) {
            if let (Some(os), Some(arch)) = (l.get("os"), l.get("arch")) {
                let asset = format!("/kubectl-mapguard_{version}_{os}_{arch}.tar.gz");
                if !u.ends_with(&asset) {
                    p.push(format!("{at}: uri {u} does not end in {asset}"));
                }
            }
        }
        match plat.get("sha256") {
            Some(Value::String(s)) if s == ALL_ZERO_SHA => {
                p.push(format!("{at}: sha256 is the placeholder: run .ci/package"))
            }
            Some(Value::String(s)) if hex64.is_match(s) => {}
            Some(other) => p.push(format!(
                "{at}: sha256 {} is not a string of 64 lowercase hex digits",
                show(other)
            )),
            None => p.push(format!("{at}: no sha256")),
        }
        let bin = nonempty_str(plat.get("bin"));
        if bin.is_none() {
            p.push(format!("{at}: no bin"));
        }
        if let Some(files) = plat.get("files") {
            let Some(files) = files.as_sequence() else {
                p.push(format!("{at}: files is not a list"));
                continue;
            };
            let mut from = BTreeSet::new();
            for f in files {
                match (nonempty_str(f.get("from")), nonempty_str(f.get("to"))) {
                    (Some(a), Some(_)) => {
                        from.insert(a);
                    }
                    _ => p.push(format!("{at}: files entry {} lacks from/to", show(f))),
                }
            }
            // With a files list, krew installs only what it names.
            for needed in bin.into_iter().chain(["LICENSE"]) {
                if !from.contains(needed) && !from.contains("*") {
                    p.push(format!("{at}: files does not install {needed}"));
                }
            }
        }
        if let Some(l) = labels {
            for (j, other) in selectors.iter().enumerate() {
                if overlap(&l, other) {
                    p.push(format!(
                        "{at}: selector {l:?} overlaps platforms[{j}]'s {other:?}"
                    ));
                }
            }
            selectors.push(l);
        }
    }
    p
}

fn sha256_of(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("running sha256sum: {e}"));
    assert!(
        out.status.success(),
        "sha256sum {}: {:?}",
        path.display(),
        out
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// Problems with a release archive: its digest differs from the manifest's,
/// or it lacks LICENSE or the bin (at its top level, where krew looks).
fn archive_problems(path: &Path, sha256: &str, bin: &str) -> Vec<String> {
    let mut p = Vec::new();
    let got = sha256_of(path);
    if got != sha256 {
        p.push(format!(
            "{}: sha256 {got}, manifest says {sha256}",
            path.display()
        ));
    }
    let out = Command::new("tar")
        .arg("-tzf")
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("running tar: {e}"));
    if !out.status.success() {
        p.push(format!(
            "{}: tar -tzf failed: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
        return p;
    }
    let listing = String::from_utf8_lossy(&out.stdout);
    let names: BTreeSet<&str> = listing
        .lines()
        .map(|l| l.trim_start_matches("./"))
        .collect();
    for needed in ["LICENSE", bin] {
        if !names.contains(needed) {
            p.push(format!("{}: no {needed} in {names:?}", path.display()));
        }
    }
    p
}

#[test]
fn krew_manifest_follows_krew_rules() {
    no_problems(
        MANIFEST,
        krew_problems(&read(MANIFEST), file_stem(MANIFEST), CRATE_VERSION),
    );
}

#[test]
fn dist_archives_match_the_manifest() {
    let doc = docs(&read(MANIFEST)).unwrap().remove(0);
    let version = doc["spec"]["version"].as_str().unwrap().to_string();
    let dist = root().join("dist");
    if !dist.is_dir() {
        common::not_run("archive check: no dist/ (run .ci/package to build the release archive)");
        return;
    }
    let mut checked = 0;
    let mut problems = Vec::new();
    for plat in doc["spec"]["platforms"].as_sequence().unwrap() {
        // .ci/package names archives by os and arch; anything else is
        // krew_manifest_follows_krew_rules' business.
        let l = match_labels(plat).unwrap_or_default();
        let (Some(os), Some(arch)) = (l.get("os"), l.get("arch")) else {
            common::not_run(&format!("archive check of selector {l:?}: not one os/arch"));
            continue;
        };
        let path = dist.join(format!("kubectl-mapguard_{version}_{os}_{arch}.tar.gz"));
        if !path.exists() {
            common::not_run(&format!(
                "archive check of {os}/{arch}: no {}",
                path.display()
            ));
            continue;
        }
        let sha = plat["sha256"].as_str().unwrap_or_default();
        let bin = plat["bin"].as_str().unwrap_or("kubectl-mapguard");
        problems.extend(archive_problems(&path, sha, bin));
        checked += 1;
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    eprintln!("checked {checked} archive(s) in dist/ against {MANIFEST}");
}

// ------------------------------------------------------------ manifests ---

type Grants = BTreeSet<(String, String, String)>; // (apiGroup, resource, verb)

/// The agent namespace rbac.yaml's Role is for (the CLI's default `--agent-namespace`).
const AGENT_NS: &str = "mapguard";

/// What the CLI's preflight checks, one SelfSubjectAccessReview each, as the library lists it:
/// the targets' permissions cluster-wide in the ClusterRole, the agent pods' in the Role.
fn expected_rbac() -> BTreeMap<(String, String, String), Grants> {
    let mut m: BTreeMap<(String, String, String), Grants> = BTreeMap::new();
    for p in kubectl_mapguard::cluster::access::every_permission(&None, AGENT_NS) {
        let role = match p.namespace.as_deref() {
            None => ("ClusterRole", "mapguard-target-reader", ""),
            Some(AGENT_NS) => ("Role", "mapguard-agent-runner", AGENT_NS),
            Some(other) => panic!("a permission in namespace {other}: {p:?}"),
        };
        let resource = if p.subresource.is_empty() {
            p.resource.to_string()
        } else {
            format!("{}/{}", p.resource, p.subresource)
        };
        m.entry((role.0.into(), role.1.into(), role.2.into()))
            .or_default()
            .insert((p.group.to_string(), resource, p.verb.to_string()));
    }
    m
}

fn strs(v: Option<&Value>) -> Option<Vec<String>> {
    v?.as_sequence()?
        .iter()
        .map(|s| s.as_str().map(str::to_string))
        .collect()
}

/// Problems with rbac.yaml: its Roles/ClusterRoles must grant exactly the
/// preflight's permissions, and its bindings must point at them.
fn rbac_problems(text: &str) -> Vec<String> {
    let mut p = Vec::new();
    let docs = match docs(text) {
        Ok(d) => d,
        Err(e) => return vec![e],
    };
    let expected = expected_rbac();
    let mut found: BTreeMap<(String, String, String), Grants> = BTreeMap::new();
    let mut bindings = Vec::new();
    for d in &docs {
        if d.get("apiVersion").and_then(Value::as_str) != Some("rbac.authorization.k8s.io/v1") {
            p.push(format!(
                "apiVersion of {} is not rbac.authorization.k8s.io/v1",
                show(&d["metadata"])
            ));
        }
        let kind = d["kind"].as_str().unwrap_or("").to_string();
        let name = d["metadata"]["name"].as_str().unwrap_or("").to_string();
        let ns = d["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_string();
        match kind.as_str() {
            "ClusterRole" | "Role" => {
                if d.get("aggregationRule").is_some() {
                    p.push(format!("{kind} {name} has an aggregationRule"));
                }
                let mut g = Grants::new();
                for (i, rule) in d["rules"].as_sequence().into_iter().flatten().enumerate() {
                    let at = format!("{kind} {name} rules[{i}]");
                    for key in rule.as_mapping().into_iter().flat_map(|m| m.keys()) {
                        if !matches!(key.as_str(), Some("apiGroups" | "resources" | "verbs")) {
                            p.push(format!("{at}: unexpected {}", show(key)));
                        }
                    }
                    let (Some(groups), Some(resources), Some(verbs)) = (
                        strs(rule.get("apiGroups")),
                        strs(rule.get("resources")),
                        strs(rule.get("verbs")),
                    ) else {
                        p.push(format!(
                            "{at}: apiGroups, resources and verbs must be lists of strings"
                        ));
                        continue;
                    };
                    for gr in &groups {
                        for r in &resources {
                            for v in &verbs {
                                g.insert((gr.clone(), r.clone(), v.clone()));
                            }
                        }
                    }
                }
                if found.insert((kind.clone(), name.clone(), ns), g).is_some() {
                    p.push(format!("{kind} {name} defined twice"));
                }
            }
            "ClusterRoleBinding" | "RoleBinding" => bindings.push((kind, name, ns, d)),
            other => p.push(format!("unexpected kind {other:?} ({name})")),
        }
    }
    for (key, want) in &expected {
        match found.get(key) {
            None => p.push(format!("no {} {} (namespace {:?})", key.0, key.1, key.2)),
            Some(got) => {
                for extra in got.difference(want) {
                    p.push(format!(
                        "{} {} grants more than the preflight checks: {extra:?}",
                        key.0, key.1
                    ));
                }
                for missing in want.difference(got) {
                    p.push(format!("{} {} lacks {missing:?}", key.0, key.1));
                }
            }
        }
    }
    for key in found.keys().filter(|k| !expected.contains_key(*k)) {
        p.push(format!(
            "unexpected {} {} (namespace {:?})",
            key.0, key.1, key.2
        ));
    }
    // One example binding per role, each with at least one subject.
    for (role_kind, role, ns) in expected.keys() {
        let binding_kind = if role_kind == "Role" {
            "RoleBinding"
        } else {
            "ClusterRoleBinding"
        };
        let n = bindings
            .iter()
            .filter(|(k, _, bns, d)| {
                k == binding_kind
                    && bns == ns
                    && d["roleRef"]["kind"].as_str() == Some(role_kind)
                    && d["roleRef"]["name"].as_str() == Some(role)
                    && d["roleRef"]["apiGroup"].as_str() == Some("rbac.authorization.k8s.io")
                    && d["subjects"].as_sequence().is_some_and(|s| !s.is_empty())
            })
            .count();
        if n != 1 {
            p.push(format!(
                "{n} {binding_kind}s of {role_kind} {role} with subjects, want 1"
            ));
        }
    }
    if bindings.len() != expected.len() {
        p.push(format!(
            "{} bindings, want {}",
            bindings.len(),
            expected.len()
        ));
    }
    p
}

const PSA_MODES: [&str; 3] = ["enforce", "audit", "warn"];

fn namespace_problems(text: &str) -> Vec<String> {
    let mut p = Vec::new();
    let docs = match docs(text) {
        Ok(d) => d,
        Err(e) => return vec![e],
    };
    let [ns] = docs.as_slice() else {
        return vec![format!("{} documents, want one Namespace", docs.len())];
    };
    if ns["apiVersion"].as_str() != Some("v1") || ns["kind"].as_str() != Some("Namespace") {
        p.push("not a v1 Namespace".into());
    }
    if ns["metadata"]["name"].as_str() != Some("mapguard") {
        p.push(format!(
            "name {} is not mapguard",
            show(&ns["metadata"]["name"])
        ));
    }
    for mode in PSA_MODES {
        let label = format!("pod-security.kubernetes.io/{mode}");
        let v = ns["metadata"]["labels"]
            .get(label.as_str())
            .and_then(Value::as_str);
        if v != Some("privileged") {
            p.push(format!("label {label} is {v:?}, want privileged"));
        }
    }
    p
}

#[test]
fn rbac_grants_exactly_what_the_preflight_checks() {
    let file = "manifests/rbac.yaml";
    no_problems(file, rbac_problems(&read(file)));
}

#[test]
fn agent_namespace_enforces_privileged() {
    let file = "manifests/namespace.yaml";
    no_problems(file, namespace_problems(&read(file)));
}

/// Every object in manifests/*.yaml deserializes as its Kubernetes type (what
/// `kubectl apply --dry-run=client` would check, without needing a server).
#[test]
fn manifests_parse_as_kubernetes_objects() {
    use k8s_openapi::api::{apps::v1 as apps, core::v1 as core, rbac::v1 as rbac};
    fn typed<T: serde::de::DeserializeOwned>(file: &str, d: &Value) {
        if let Err(e) = serde_yaml_ng::from_value::<T>(d.clone()) {
            panic!(
                "{file}: {} {}: {e}",
                show(&d["kind"]),
                show(&d["metadata"]["name"])
            );
        }
    }
    let mut kinds = BTreeMap::<String, usize>::new();
    for file in [
        "manifests/rbac.yaml",
        "manifests/namespace.yaml",
        "manifests/demo.yaml",
    ] {
        for d in docs(&read(file)).unwrap() {
            let kind = d["kind"].as_str().unwrap_or_default().to_string();
            match kind.as_str() {
                "ClusterRole" => typed::<rbac::ClusterRole>(file, &d),
                "Role" => typed::<rbac::Role>(file, &d),
                "ClusterRoleBinding" => typed::<rbac::ClusterRoleBinding>(file, &d),
                "RoleBinding" => typed::<rbac::RoleBinding>(file, &d),
                "Namespace" => typed::<core::Namespace>(file, &d),
                "Deployment" => {
                    typed::<apps::Deployment>(file, &d);
                    assert_eq!(d["metadata"]["name"].as_str(), Some("map-churn"), "{file}");
                    assert_eq!(
                        d["metadata"]["namespace"].as_str(),
                        Some("default"),
                        "{file}"
                    );
                    assert_eq!(d["spec"]["replicas"].as_u64(), Some(2), "{file}");
                    let want = d["spec"]["selector"]["matchLabels"]
                        .as_mapping()
                        .expect("matchLabels");
                    let have = &d["spec"]["template"]["metadata"]["labels"];
                    for (k, v) in want {
                        assert_eq!(
                            have.get(k),
                            Some(v),
                            "{file}: template lacks selector label {k:?}"
                        );
                    }
                }
                other => panic!("{file}: unexpected kind {other:?}"),
            }
            *kinds.entry(kind).or_default() += 1;
        }
    }
    let want: BTreeMap<String, usize> = [
        ("ClusterRole", 1),
        ("ClusterRoleBinding", 1),
        ("Deployment", 1),
        ("Namespace", 1),
        ("Role", 1),
        ("RoleBinding", 1),
    ]
    .into_iter()
    .map(|(k, n)| (k.to_string(), n))
    .collect();
    assert_eq!(kinds, want);
}

// ------------------------------------- each check fails when it should ---

/// The real manifest with `from` replaced by `to` (which must occur).
fn broken(text: &str, from: &str, to: &str) -> String {
    assert!(
        text.contains(from),
        "test setup: {from:?} not in the manifest"
    );
    text.replacen(from, to, 1)
}

fn assert_problem(problems: &[String], needle: &str) {
    assert!(
        problems.iter().any(|p| p.contains(needle)),
        "expected a problem containing {needle:?}, got {problems:#?}"
    );
}

fn krew_text() -> String {
    read(MANIFEST)
}

fn krew_broken(from: &str, to: &str) -> Vec<String> {
    krew_problems(&broken(&krew_text(), from, to), "mapguard", CRATE_VERSION)
}

/// The (first) sha256 line of the manifest.
fn sha_line(text: &str) -> String {
    text.lines()
        .find(|l| l.trim_start().starts_with("sha256:"))
        .unwrap()
        .to_string()
}

/// The manifest with `from` replaced by `to` has a problem that says `want`.
fn krew_rejects(from: &str, to: &str, want: &str) {
    assert_problem(&krew_broken(from, to), want);
}

#[test]
fn rejects_name_version_and_descriptions() {
    let t = krew_text();
    assert_problem(
        &krew_problems(&t, "other", CRATE_VERSION),
        "differs from the file name",
    );
    assert_problem(
        &krew_problems(&t, "mapguard", "9.9.9"),
        "is not Cargo.toml's v9.9.9",
    );
    let v = format!("version: v{CRATE_VERSION}");
    for bad in [
        format!("version: {CRATE_VERSION}"),
        "version: v1.0".into(),
        "version: v01.0.0".into(),
        "version: vlatest".into(),
    ] {
        krew_rejects(&v, &bad, "is not semver with a leading v");
    }
    assert!(semver_v().is_match("v1.2.3-rc.1+build.5"));
    krew_rejects(
        "shortDescription: ",
        "shortDescription: |\n    two\n    lines\n  x: ",
        "not one line",
    );
    krew_rejects(
        "shortDescription: ",
        &format!("shortDescription: {} ", "x".repeat(80)),
        "want < 80",
    );
    krew_rejects(
        "shortDescription: ",
        "shortDescription: ''\n  y: ",
        "shortDescription is empty",
    );
    krew_rejects("  description: |", "  descriptionx: |", "no description");
    krew_rejects("  caveats: |", "  caveatsx: |", "no caveats");
    let no_ptrace = krew_text().replace("SYS_PTRACE", "SYS_TRACE");
    assert_problem(
        &krew_problems(&no_ptrace, "mapguard", CRATE_VERSION),
        "caveats do not mention SYS_PTRACE",
    );
    krew_rejects("kind: Plugin", "kind: Plugins", "kind is not Plugin");
}

#[test]
fn rejects_bad_platform_fields() {
    let t = krew_text();
    let sha = sha_line(&t);
    // The value upper-cased; an all-digit value gets an `A` in front instead.
    let value = sha.split('"').nth(1).expect("sha256 is quoted");
    let mut upper_value = value.to_ascii_uppercase();
    if upper_value == value {
        upper_value.replace_range(0..1, "A");
    }
    let upper = sha.replace(value, &upper_value);
    krew_rejects(&sha, &upper, "64 lowercase hex");
    krew_rejects(&sha, "      sha256: abc", "64 lowercase hex");
    krew_rejects(
        &sha,
        "      sha256: 1234567890123456789012345678901234567890123456789012345678901234",
        "64 lowercase hex",
    );
    krew_rejects(
        &sha,
        &format!("      sha256: \"{ALL_ZERO_SHA}\""),
        "placeholder",
    );
    krew_rejects(".tar.gz\n", ".tgz\n", "is not an https .tar.gz or .zip");
    krew_rejects(
        "_linux_amd64.tar.gz",
        "_linux_arm64.tar.gz",
        "does not end in",
    );
    krew_rejects("      bin: kubectl-mapguard", "      bin: ''", "no bin");
    krew_rejects(
        "          os: linux",
        "          os: linux\n          distro: debian",
        "matchLabels key \"distro\"",
    );
    krew_rejects(
        "          os: linux",
        "          os: Linux",
        "is not lowercase",
    );
    krew_rejects(
        "        matchLabels:",
        "        matchExpressions: []\n        matchLabels:",
        "only matchLabels",
    );
    krew_rejects(
        "        - from: LICENSE\n          to: .\n",
        "",
        "files does not install LICENSE",
    );
}

#[test]
fn rejects_overlapping_selectors() {
    let t = krew_text();
    let one = |os: &str, arch: Option<&str>| {
        let arch = arch
            .map(|a| format!("\n          arch: {a}"))
            .unwrap_or_default();
        let asset = format!("kubectl-mapguard_v{CRATE_VERSION}_{os}_x.zip");
        format!(
            "    - selector:\n        matchLabels:\n          os: {os}{arch}\n      uri: https://example.com/{asset}\n      sha256: \"{}\"\n      bin: kubectl-mapguard\n",
            "ab".repeat(32)
        )
    };
    let with = |extra: String| {
        krew_problems(
            &format!("{}\n{extra}", t.trim_end()),
            "mapguard",
            CRATE_VERSION,
        )
    };
    // {os: linux} overlaps {os: linux, arch: amd64}; so does the same pair again.
    assert_problem(&with(one("linux", None)), "overlaps platforms[0]");
    let dup = with(one("linux", Some("amd64")));
    assert_problem(&dup, "overlaps platforms[0]");
    // Different arch or os: no overlap (only the naming check speaks up).
    for (os, arch) in [
        ("linux", Some("arm64")),
        ("darwin", Some("arm64")),
        ("darwin", None),
    ] {
        let p = with(one(os, arch));
        assert!(
            !p.iter().any(|p| p.contains("overlaps")),
            "{os}/{arch:?}: {p:#?}"
        );
    }
    let m = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    assert!(overlap(
        &m(&[("os", "linux")]),
        &m(&[("os", "linux"), ("arch", "amd64")])
    ));
    assert!(overlap(&m(&[("arch", "amd64")]), &m(&[("os", "darwin")]))); // no shared key
    assert!(!overlap(
        &m(&[("os", "linux"), ("arch", "amd64")]),
        &m(&[("os", "linux"), ("arch", "arm64")])
    ));
}

#[test]
fn rejects_archives_that_do_not_match() {
    let dir = std::env::temp_dir().join(format!("mapguard-krew-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("in")).unwrap();
    std::fs::write(dir.join("in/kubectl-mapguard"), "#!/bin/sh\n").unwrap();
    std::fs::write(dir.join("in/LICENSE"), "Apache\n").unwrap();
    let pack = |name: &str, files: &[&str]| -> PathBuf {
        let out = dir.join(name);
        let st = Command::new("tar")
            .arg("-czf")
            .arg(&out)
            .arg("-C")
            .arg(dir.join("in"))
            .args(files)
            .status()
            .unwrap();
        assert!(st.success());
        out
    };
    let good = pack("good.tar.gz", &["kubectl-mapguard", "LICENSE"]);
    let sum = sha256_of(&good);
    assert!(archive_problems(&good, &sum, "kubectl-mapguard").is_empty());
    assert_problem(
        &archive_problems(&good, &"0".repeat(64), "kubectl-mapguard"),
        "manifest says",
    );
    assert_problem(
        &archive_problems(&good, &sum, "kubectl-other"),
        "no kubectl-other",
    );
    let no_license = pack("nolicense.tar.gz", &["kubectl-mapguard"]);
    assert_problem(
        &archive_problems(&no_license, &sha256_of(&no_license), "kubectl-mapguard"),
        "no LICENSE",
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn rejects_rbac_that_is_not_exactly_the_preflight() {
    let t = read("manifests/rbac.yaml");
    // (text, its replacement, a problem the broken copy must have)
    for (from, to, want) in [
        (
            r#"verbs: ["get", "list", "watch"]"#,
            r#"verbs: ["get", "list", "watch", "patch"]"#,
            "grants more",
        ),
        (
            r#"verbs: ["get", "list", "watch"]"#,
            r#"verbs: ["get", "list"]"#,
            "lacks",
        ),
        (
            r#"verbs: ["create", "get", "list", "watch", "delete"]"#,
            r#"verbs: ["*"]"#,
            "grants more",
        ),
        (
            r#"verbs: ["create", "get", "list", "watch", "delete"]"#,
            r#"verbs: ["create", "get", "list", "delete"]"#,
            "lacks",
        ),
        (
            r#"resources: ["pods/log"]"#,
            r#"resources: ["pods/log", "pods/exec"]"#,
            "grants more",
        ),
        (
            r#"apiGroups: ["apps"]"#,
            r#"apiGroups: ["apps", "extensions"]"#,
            "grants more",
        ),
        (
            r#"resources: ["pods"]"#,
            r#"resources: ["pods", "secrets"]"#,
            "grants more",
        ),
        (
            "  namespace: mapguard\n",
            "  namespace: default\n",
            "no Role mapguard-agent-runner",
        ),
        (
            "kind: Role\n",
            "kind: ClusterRole\n",
            "unexpected ClusterRole",
        ),
        (
            "    verbs: [\"get\"]\n",
            "    verbs: [\"get\"]\n    resourceNames: [\"x\"]\n",
            "unexpected resourceNames",
        ),
        (
            "  name: mapguard-target-reader\nsubjects:",
            "  name: mapguard-agent-runner\nsubjects:",
            "ClusterRoleBindings of ClusterRole",
        ),
    ] {
        assert_problem(&rbac_problems(&broken(&t, from, to)), want);
    }
}

#[test]
fn rejects_a_namespace_that_is_not_privileged() {
    let t = read("manifests/namespace.yaml");
    for mode in PSA_MODES {
        let label = format!("pod-security.kubernetes.io/{mode}: privileged");
        let p = namespace_problems(&broken(
            &t,
            &label,
            &label.replace("privileged", "baseline"),
        ));
        assert_problem(&p, &format!("{mode} is Some(\"baseline\")"));
    }
    assert_problem(
        &namespace_problems(&broken(
            &t,
            "    pod-security.kubernetes.io/enforce: privileged\n",
            "",
        )),
        "enforce is None",
    );
    assert_problem(
        &namespace_problems(&broken(&t, "name: mapguard", "name: tracing")),
        "is not mapguard",
    );
}
