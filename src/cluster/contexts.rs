//! Kube contexts: the kubeconfig as kubectl reads it, and one client per
//! context the user picked.

use anyhow::{anyhow, bail, Result};
use http_body_util::BodyExt;
use kube::config::{KubeConfigOptions, Kubeconfig, KubeconfigError};
use kube::{Client, Config};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Which kubeconfig, contexts and identity to use (kubectl's own flags).
#[derive(Debug, Clone, Default)]
pub struct Connection {
    /// Else `KUBECONFIG`, else ~/.kube/config.
    pub kubeconfig: Option<PathBuf>,
    /// Empty: the current context.
    pub contexts: Vec<String>,
    pub all_contexts: bool,
    pub cluster: Option<String>,
    pub user: Option<String>,
    pub as_user: Option<String>,
    pub as_groups: Vec<String>,
    /// For each request that is not a stream.
    pub request_timeout: Option<Duration>,
}

/// One cluster to work in.
pub struct Ctx {
    pub name: String,
    pub client: Client,
    /// The context's namespace, else "default": where targets are looked up without -n.
    pub default_namespace: String,
}

/// Where the kubeconfig comes from, in kubectl's order.
#[derive(Debug, PartialEq)]
enum Source {
    /// `--kubeconfig`: this one file, which must exist.
    Flag(PathBuf),
    /// `KUBECONFIG`: its files merged; missing ones are skipped.
    Env(Vec<PathBuf>),
    /// Neither: ~/.kube/config.
    Default,
}

fn source(flag: Option<&Path>, env: Option<OsString>) -> Source {
    if let Some(path) = flag {
        return Source::Flag(path.to_path_buf());
    }
    let mut paths: Vec<PathBuf> = Vec::new();
    for p in env.iter().flat_map(std::env::split_paths) {
        // client-go drops empty entries and repeats.
        if !p.as_os_str().is_empty() && !paths.contains(&p) {
            paths.push(p);
        }
    }
    if paths.is_empty() {
        Source::Default
    } else {
        Source::Env(paths)
    }
}

/// What went wrong reading one kubeconfig file, naming it once (kube's own
/// message quotes the path twice over).
fn file_error(path: &Path, e: KubeconfigError) -> String {
    let path = path.display();
    match e {
        KubeconfigError::ReadConfig(io, _) if io.kind() == std::io::ErrorKind::NotFound => {
            format!("the kubeconfig {path} does not exist")
        }
        KubeconfigError::ReadConfig(io, _) => format!("cannot read the kubeconfig {path}: {io}"),
        KubeconfigError::Parse(e) => format!("the kubeconfig {path} is not valid YAML: {e}"),
        KubeconfigError::KindMismatch | KubeconfigError::ApiVersionMismatch => {
            format!("cannot merge the kubeconfig {path} with the files before it: {e}")
        }
        e => format!("cannot read the kubeconfig {path}: {e}"),
    }
}

/// `KUBECONFIG`'s files merged as kubectl merges them: the first file to set
/// a value or a named cluster, context or user wins, and a file that does not
/// exist is skipped (only none at all is an error).
fn merge_files(paths: &[PathBuf]) -> Result<Kubeconfig, String> {
    let mut merged: Option<Kubeconfig> = None;
    for path in paths {
        let mut next = match Kubeconfig::read_from(path) {
            Ok(k) => k,
            Err(KubeconfigError::ReadConfig(io, _))
                if io.kind() == std::io::ErrorKind::NotFound =>
            {
                continue
            }
            Err(e) => return Err(file_error(path, e)),
        };
        // client-go treats `current-context: ""` as unset, so a later file's
        // current context still applies; kube's merge would keep the "".
        if next.current_context.as_deref() == Some("") {
            next.current_context = None;
        }
        merged = Some(match merged {
            None => next,
            Some(m) => m.merge(next).map_err(|e| file_error(path, e))?,
        });
    }
    merged.ok_or_else(|| {
        let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        format!(
            "none of the kubeconfig files in KUBECONFIG exists ({})",
            names.join(", ")
        )
    })
}

/// Reads the kubeconfig like kubectl: `--kubeconfig`, else `KUBECONFIG`,
/// else ~/.kube/config. `offer_local`: the verb also traces on this machine.
fn read_kubeconfig(flags: &Connection, offer_local: bool) -> Result<Kubeconfig> {
    let read = match source(
        flags.kubeconfig.as_deref(),
        std::env::var_os("KUBECONFIG"),
    ) {
        Source::Flag(path) => Kubeconfig::read_from(&path)
            .map_err(|e| format!("{} (--kubeconfig)", file_error(&path, e))),
        Source::Env(paths) => merge_files(&paths),
        Source::Default => match std::env::home_dir() {
            Some(home) => {
                let path = home.join(".kube").join("config");
                Kubeconfig::read_from(&path).map_err(|e| match e {
                    KubeconfigError::ReadConfig(io, _)
                        if io.kind() == std::io::ErrorKind::NotFound =>
                    {
                        format!(
                            "no kubeconfig: KUBECONFIG is not set and {} does not exist",
                            path.display()
                        )
                    }
                    e => file_error(&path, e),
                })
            }
            None => Err(
                "no kubeconfig: KUBECONFIG is not set and there is no home directory for ~/.kube/config"
                    .into(),
            ),
        },
    };
    read.map_err(|why| {
        let local = if offer_local {
            " (or use --pid / -- CMD to trace on this machine)"
        } else {
            ""
        };
        anyhow!("{why}; point --kubeconfig or KUBECONFIG at a valid kubeconfig{local}")
    })
}

/// The context names to use: `--context` as given, every context with
/// `--all-contexts`, else the current one.
fn pick_contexts(kubeconfig: &Kubeconfig, flags: &Connection) -> Result<Vec<String>> {
    let known: Vec<&str> = kubeconfig
        .contexts
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    if flags.all_contexts {
        if known.is_empty() {
            bail!("--all-contexts: the kubeconfig has no contexts");
        }
        return Ok(known.iter().map(|s| s.to_string()).collect());
    }
    if flags.contexts.is_empty() {
        return match &kubeconfig.current_context {
            Some(c) if !c.is_empty() => Ok(vec![c.clone()]),
            _ => bail!(
                "the kubeconfig has no current context: pass --context NAME (known: {})",
                known.join(", ")
            ),
        };
    }
    let mut picked = Vec::new();
    for c in &flags.contexts {
        if !known.contains(&c.as_str()) {
            bail!(
                "context {c:?} is not in the kubeconfig (known: {})",
                known.join(", ")
            );
        }
        if !picked.contains(c) {
            picked.push(c.clone());
        }
    }
    Ok(picked)
}

/// `--cluster` and `--user` must name entries of the kubeconfig, as kubectl
/// requires; kube would fall back to no credentials for an unknown user.
fn check_overrides(kubeconfig: &Kubeconfig, flags: &Connection) -> Result<()> {
    if let Some(cluster) = &flags.cluster {
        let known: Vec<&str> = kubeconfig
            .clusters
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        if !known.contains(&cluster.as_str()) {
            bail!(
                "cluster {cluster:?} does not exist in the kubeconfig: --cluster takes one of its clusters (known: {})",
                known.join(", ")
            );
        }
    }
    if let Some(user) = &flags.user {
        let known: Vec<&str> = kubeconfig
            .auth_infos
            .iter()
            .map(|u| u.name.as_str())
            .collect();
        if !known.contains(&user.as_str()) {
            bail!(
                "auth info {user:?} does not exist in the kubeconfig: --user takes one of its users (known: {})",
                known.join(", ")
            );
        }
    }
    Ok(())
}

/// kube's message for a context it cannot load, as one line that says what
/// to fix.
fn context_error(kubeconfig: &Kubeconfig, name: &str, e: KubeconfigError) -> anyhow::Error {
    match e {
        KubeconfigError::LoadClusterOfContext(cluster) => {
            let known: Vec<&str> = kubeconfig
                .clusters
                .iter()
                .map(|c| c.name.as_str())
                .collect();
            anyhow!(
                "context {name:?} uses cluster {cluster:?}, which does not exist in the kubeconfig (known: {}): fix the context or pass --cluster",
                known.join(", ")
            )
        }
        e => anyhow!("context {name:?}: {e}"),
    }
}

/// The error and what caused it, as one line (kube's `Display` stops at
/// "client error (Connect)").
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let s = cause.to_string();
        if !text.contains(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        next = cause.source();
    }
    text
}

/// Whether an API server's answer is one: every reply of a Kubernetes API
/// server, errors included, is a JSON object.
fn is_api_response(body: &[u8]) -> bool {
    matches!(
        serde_json::from_slice::<serde_json::Value>(body),
        Ok(serde_json::Value::Object(_))
    )
}

/// The start of a body that is not an API response, to show what answered.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.char_indices().nth(80) {
        Some((cut, _)) => format!("{:?}…", &flat[..cut]),
        None => format!("{flat:?}"),
    }
}

/// Asks the server its version, as kubectl's discovery does before its first
/// request, so that a server that is not a Kubernetes API server (a web page,
/// a proxy's error page) is named as such with its URL, rather than failing
/// later as a response kube cannot parse.
async fn probe_server(name: &str, url: &str, client: &Client) -> Result<()> {
    let request = http::Request::get("/version")
        .header(http::header::ACCEPT, "application/json")
        .body(kube::client::Body::from(Vec::new()))?;
    let response = client.send(request).await.map_err(|e| {
        // kube's own wrapper names its enum variant ("ServiceError: "), not the cause.
        let why = match &e {
            kube::Error::Service(inner) => chain(inner.as_ref()),
            kube::Error::HyperError(inner) => chain(inner),
            e => chain(e),
        };
        anyhow!(
            "context {name}: cannot reach the API server at {url}: {why}; check the kubeconfig's server and your network"
        )
    })?;
    let status = response.status();
    let kind = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| format!(", {v}"))
        .unwrap_or_default();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| {
            anyhow!(
                "context {name}: the server at {url} broke off its answer to GET /version (HTTP {status}): {}",
                chain(&e)
            )
        })?
        .to_bytes();
    if !is_api_response(&body) {
        bail!(
            "context {name}: the server at {url} answered GET /version with HTTP {status}{kind} and a body that is not a Kubernetes API response ({}); check that the kubeconfig's server for this context is the API server's address",
            excerpt(&body)
        );
    }
    Ok(())
}

/// A client per picked context. `offer_local`: the verb also traces on this
/// machine (`--pid`, `-- CMD`), so a missing kubeconfig says so.
pub async fn connect(flags: &Connection, offer_local: bool) -> Result<Vec<Ctx>> {
    let kubeconfig = read_kubeconfig(flags, offer_local)?;
    check_overrides(&kubeconfig, flags)?;
    let mut out = Vec::new();
    for name in pick_contexts(&kubeconfig, flags)? {
        let options = KubeConfigOptions {
            context: Some(name.clone()),
            cluster: flags.cluster.clone(),
            user: flags.user.clone(),
        };
        let mut config = Config::from_custom_kubeconfig(kubeconfig.clone(), &options)
            .await
            .map_err(|e| context_error(&kubeconfig, &name, e))?;
        if let Some(user) = &flags.as_user {
            config.auth_info.impersonate = Some(user.clone());
        }
        if !flags.as_groups.is_empty() {
            config.auth_info.impersonate_groups = Some(flags.as_groups.clone());
        }
        if let Some(t) = flags.request_timeout {
            config.connect_timeout = Some(t);
        }
        // Log streams are quiet for as long as the traced maps are: no read
        // timeout. Requests that are not streams get --request-timeout.
        config.read_timeout = None;
        let default_namespace = config.default_namespace.clone();
        let url = config.cluster_url.to_string();
        let client = Client::try_from(config).map_err(|e| anyhow!("context {name}: {e}"))?;
        let probe = probe_server(&name, url.trim_end_matches('/'), &client);
        match flags.request_timeout {
            Some(t) if !t.is_zero() => tokio::time::timeout(t, probe).await.map_err(|_| {
                anyhow!("context {name}: the API server at {url} did not answer within --request-timeout {t:?}")
            })??,
            _ => probe.await?,
        }
        out.push(Ctx {
            name,
            client,
            default_namespace,
        });
    }
    Ok(out)
}
#[cfg(test)]
mod tests {
    use super::*;

    fn kubeconfig(current: &str) -> Kubeconfig {
        let yaml = format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: {current}\nclusters:\n- name: a\n  cluster: {{server: 'http://127.0.0.1:1'}}\ncontexts:\n- name: one\n  context: {{cluster: a}}\n- name: two\n  context: {{cluster: a}}\nusers: []\n"
        );
        Kubeconfig::from_yaml(&yaml).unwrap()
    }

    #[test]
    fn contexts_are_picked_like_kubectl() {
        let k = kubeconfig("two");
        let flags = |contexts: &[&str], all| Connection {
            contexts: contexts.iter().map(|s| s.to_string()).collect(),
            all_contexts: all,
            ..Default::default()
        };
        assert_eq!(pick_contexts(&k, &flags(&[], false)).unwrap(), ["two"]);
        assert_eq!(
            pick_contexts(&k, &flags(&[], true)).unwrap(),
            ["one", "two"]
        );
        assert_eq!(
            pick_contexts(&k, &flags(&["one", "one"], false)).unwrap(),
            ["one"]
        );
        let err = pick_contexts(&k, &flags(&["three"], false)).unwrap_err();
        assert!(err.to_string().contains("known: one, two"), "{err}");
        assert!(pick_contexts(&kubeconfig("''"), &flags(&[], false)).is_err());
    }

    fn write(dir: &Path, file: &str, yaml: &str) -> PathBuf {
        let path = dir.join(file);
        std::fs::write(&path, yaml).unwrap();
        path
    }

    /// One cluster, context and user all called `name`, on `server`.
    fn one(name: &str, server: &str, current: Option<&str>) -> String {
        let current = current
            .map(|c| format!("current-context: '{c}'\n"))
            .unwrap_or_default();
        format!(
            "apiVersion: v1\nkind: Config\n{current}clusters:\n- name: {name}\n  cluster: {{server: '{server}'}}\ncontexts:\n- name: {name}\n  context: {{cluster: {name}, user: {name}}}\nusers:\n- name: {name}\n  user: {{token: t}}\n"
        )
    }

    fn server_of(k: &Kubeconfig, cluster: &str) -> String {
        k.clusters
            .iter()
            .find(|c| c.name == cluster)
            .and_then(|c| c.cluster.as_ref())
            .and_then(|c| c.server.clone())
            .unwrap()
    }

    #[test]
    fn kubeconfig_comes_from_the_flag_then_kubeconfig_then_home() {
        let flag = Path::new("/k/flag");
        assert_eq!(
            source(Some(flag), Some("/k/a:/k/b".into())),
            Source::Flag(flag.into())
        );
        // Empty entries and repeats are dropped, as client-go does.
        assert_eq!(
            source(None, Some("/k/a::/k/b:/k/a".into())),
            Source::Env(vec!["/k/a".into(), "/k/b".into()])
        );
        assert_eq!(source(None, Some("".into())), Source::Default);
        assert_eq!(source(None, Some(":".into())), Source::Default);
        assert_eq!(source(None, None), Source::Default);
    }

    #[test]
    fn kubeconfig_files_merge_like_kubectl_and_missing_ones_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // No current context in the first file: the second's applies, the
        // third's does not; the first file's `shared` cluster wins.
        let first = write(
            d,
            "first",
            "clusters:\n- name: a\n  cluster: {server: 'https://a'}\n- name: shared\n  cluster: {server: 'https://first'}\ncontexts:\n- name: a\n  context: {cluster: a}\n",
        );
        let second = write(
            d,
            "second",
            &one("b", "https://b", Some("b")).replace(
                "clusters:\n",
                "clusters:\n- name: shared\n  cluster: {server: 'https://second'}\n",
            ),
        );
        let third = write(d, "third", &one("c", "https://c", Some("c")));
        let missing = d.join("missing");
        let k = merge_files(&[
            first.clone(),
            missing.clone(),
            second.clone(),
            third.clone(),
        ])
        .unwrap();
        assert_eq!(k.current_context.as_deref(), Some("b"));
        assert_eq!(server_of(&k, "shared"), "https://first");
        let names: Vec<&str> = k.contexts.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);

        // `current-context: ""` is unset for client-go: the next file's applies.
        let blank = write(d, "blank", &one("x", "https://x", Some("")));
        let k = merge_files(&[blank, third.clone()]).unwrap();
        assert_eq!(k.current_context.as_deref(), Some("c"));

        // A missing file alone is the same as the good one alone.
        let k = merge_files(&[third.clone(), missing.clone()]).unwrap();
        assert_eq!(k.current_context.as_deref(), Some("c"));

        let err = merge_files(&[missing.clone(), d.join("gone")]).unwrap_err();
        assert!(
            err.contains("none of the kubeconfig files in KUBECONFIG exists")
                && err.contains(&missing.display().to_string()),
            "{err}"
        );
        // A file that exists but cannot be used is still an error, named once.
        let bad = write(d, "bad", "clusters: [unclosed\n");
        let err = merge_files(&[third, bad.clone()]).unwrap_err();
        assert!(
            err.starts_with(&format!(
                "the kubeconfig {} is not valid YAML",
                bad.display()
            )),
            "{err}"
        );
        assert!(!err.contains("\"'") && !err.contains("'\""), "{err}");
    }

    #[test]
    fn an_explicit_kubeconfig_must_exist_and_the_local_hint_is_only_offered_where_it_applies() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.yaml");
        let flags = Connection {
            kubeconfig: Some(missing.clone()),
            ..Default::default()
        };
        let err = read_kubeconfig(&flags, false).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "the kubeconfig {} does not exist (--kubeconfig); point --kubeconfig or KUBECONFIG at a valid kubeconfig",
                missing.display()
            )
        );
        let err = read_kubeconfig(&flags, true).unwrap_err().to_string();
        assert!(
            err.ends_with("(or use --pid / -- CMD to trace on this machine)"),
            "{err}"
        );
    }

    #[test]
    fn unknown_cluster_and_user_overrides_are_errors_like_kubectl() {
        let k = Kubeconfig::from_yaml(&one("a", "https://a", Some("a"))).unwrap();
        let flags = |cluster: Option<&str>, user: Option<&str>| Connection {
            cluster: cluster.map(String::from),
            user: user.map(String::from),
            ..Default::default()
        };
        assert!(check_overrides(&k, &flags(Some("a"), Some("a"))).is_ok());
        assert!(check_overrides(&k, &flags(None, None)).is_ok());
        let err = check_overrides(&k, &flags(None, Some("nope"))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "auth info \"nope\" does not exist in the kubeconfig: --user takes one of its users (known: a)"
        );
        let err = check_overrides(&k, &flags(Some("nope"), None)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cluster \"nope\" does not exist in the kubeconfig: --cluster takes one of its clusters (known: a)"
        );
    }

    #[test]
    fn a_context_whose_cluster_is_missing_says_which() {
        let k = kubeconfig("one");
        let err = context_error(
            &k,
            "one",
            KubeconfigError::LoadClusterOfContext("gone".into()),
        );
        assert_eq!(
            err.to_string(),
            "context \"one\" uses cluster \"gone\", which does not exist in the kubeconfig (known: a): fix the context or pass --cluster"
        );
    }

    #[test]
    fn only_json_objects_are_api_responses() {
        assert!(is_api_response(br#"{"major":"1","minor":"35"}"#));
        assert!(is_api_response(
            br#"{"kind":"Status","apiVersion":"v1","status":"Failure","code":401}"#
        ));
        assert!(!is_api_response(
            b"<html><body>Welcome to nginx!</body></html>"
        ));
        assert!(!is_api_response(b""));
        assert!(!is_api_response(b"[1,2]"));
        assert_eq!(
            excerpt(b"<html>\n  <body>hi</body>\n</html>"),
            r#""<html> <body>hi</body> </html>""#
        );
        let long = "x".repeat(200);
        assert_eq!(excerpt(long.as_bytes()), format!("{:?}…", "x".repeat(80)));
    }
}
