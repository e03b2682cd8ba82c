//! Targets: `pod/NAME`, `deploy/NAME`, `sts/NAME`, `ds/NAME`, `-l SELECTOR`,
//! resolved to the running containers they mean.

use super::contexts::Ctx;
use anyhow::{anyhow, bail, Result};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, ListParams};

/// Which pods to trace, as the command line named them.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// pod/NAME, deploy/NAME, sts/NAME, ds/NAME.
    pub targets: Vec<String>,
    pub selector: Option<String>,
    /// Else the context's.
    pub namespace: Option<String>,
    pub all_namespaces: bool,
    /// Else every container of each pod.
    pub container: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Pod,
    Deployment,
    StatefulSet,
    DaemonSet,
}

impl Kind {
    /// The API group and resource, as RBAC names them.
    pub fn resource(self) -> (&'static str, &'static str) {
        match self {
            Kind::Pod => ("", "pods"),
            Kind::Deployment => ("apps", "deployments"),
            Kind::StatefulSet => ("apps", "statefulsets"),
            Kind::DaemonSet => ("apps", "daemonsets"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spec {
    Named(Kind, String),
    Selector(String),
}

/// Parses what the user typed, kubectl's aliases included; a bare NAME is a pod.
pub fn parse(flags: &Selection) -> Result<Vec<Spec>> {
    let mut specs = Vec::new();
    for t in &flags.targets {
        let (kind, name) = match t.split_once('/') {
            None => (Kind::Pod, t.as_str()),
            Some((kind, name)) => {
                let kind = match kind.to_ascii_lowercase().as_str() {
                    "pod" | "pods" | "po" => Kind::Pod,
                    "deploy" | "deployment" | "deployments" | "deployment.apps" => Kind::Deployment,
                    "sts" | "statefulset" | "statefulsets" | "statefulset.apps" => Kind::StatefulSet,
                    "ds" | "daemonset" | "daemonsets" | "daemonset.apps" => Kind::DaemonSet,
                    other => bail!(
                        "unknown target kind {other:?} in {t:?}: use pod/NAME, deploy/NAME, sts/NAME or ds/NAME"
                    ),
                };
                (kind, name)
            }
        };
        if name.is_empty() || name.contains('/') {
            bail!("bad target {t:?}: use pod/NAME, deploy/NAME, sts/NAME or ds/NAME");
        }
        specs.push(Spec::Named(kind, name.to_string()));
    }
    if let Some(sel) = &flags.selector {
        if sel.trim().is_empty() {
            bail!("-l needs a label selector, e.g. -l app=web");
        }
        specs.push(Spec::Selector(sel.clone()));
    }
    if flags.all_namespaces && specs.iter().any(|s| matches!(s, Spec::Named(..))) {
        bail!("-A works with -l SELECTOR only: named targets need their namespace (-n NS)");
    }
    Ok(specs)
}

/// One container to trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub node: String,
    /// Without the runtime prefix, as the agent matches it in /proc/PID/cgroup.
    pub container_id: String,
}

/// The namespace the targets live in: `-n`, else the context's; None for -A.
pub fn namespace_of(flags: &Selection, ctx: &Ctx) -> Option<String> {
    if flags.all_namespaces {
        None
    } else {
        Some(
            flags
                .namespace
                .clone()
                .unwrap_or_else(|| ctx.default_namespace.clone()),
        )
    }
}

/// How one target's pods are found: [`resolve`] lists them once at the
/// start, and a run follows the same query to see pods that come later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// None: every namespace (`-A`).
    pub namespace: Option<String>,
    pub by: By,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum By {
    Name(String),
    Labels(String),
}

/// The running containers the targets mean in one context, the queries
/// that find them, and why anything the targets name is left out (a pod or
/// container not running, a workload with no pods), one line each: a run
/// that has nothing left must say why in its own error, not only on stderr.
pub async fn resolve(
    ctx: &Ctx,
    flags: &Selection,
    specs: &[Spec],
) -> Result<(Vec<Container>, Vec<Query>, Vec<String>)> {
    let ns = namespace_of(flags, ctx);
    let pods_api: Api<Pod> = match &ns {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    let nsname = ns.clone().unwrap_or_default();
    let mut pods: Vec<Pod> = Vec::new();
    let mut queries = Vec::new();
    let mut left_out = Vec::new();
    for spec in specs {
        let by = match spec {
            Spec::Named(Kind::Pod, name) => By::Name(name.clone()),
            Spec::Named(kind, name) => {
                By::Labels(workload_selector(ctx, &nsname, *kind, name).await?)
            }
            Spec::Selector(sel) => By::Labels(sel.clone()),
        };
        let (found, what) = match spec {
            Spec::Named(Kind::Pod, name) => {
                let pod = pods_api
                    .get_opt(name)
                    .await
                    .map_err(|e| api_error(ctx, &format!("pod/{name}"), e))?
                    .ok_or_else(|| {
                        anyhow!(
                            "pod/{name} not found in namespace {nsname} (context {}); check -n",
                            ctx.name
                        )
                    })?;
                (vec![pod], format!("pod/{name}"))
            }
            Spec::Named(kind, name) => {
                let By::Labels(selector) = &by else {
                    unreachable!("workloads are found by their selector")
                };
                let list = pods_api
                    .list(&ListParams::default().labels(selector))
                    .await
                    .map_err(|e| api_error(ctx, "pods", e))?;
                let short = match kind {
                    Kind::Deployment => "deploy",
                    Kind::StatefulSet => "sts",
                    _ => "ds",
                };
                (list.items, format!("{short}/{name}"))
            }
            Spec::Selector(sel) => {
                let list = pods_api
                    .list(&ListParams::default().labels(sel))
                    .await
                    .map_err(|e| api_error(ctx, "pods", e))?;
                (list.items, format!("-l {sel}"))
            }
        };
        if found.is_empty() {
            left_out.push(format!("{what}: no pods (context {})", ctx.name));
        }
        pods.extend(found);
        queries.push(Query {
            namespace: ns.clone(),
            by,
        });
    }
    let mut out: Vec<Container> = Vec::new();
    for pod in &pods {
        let (running, skipped) = running_containers(pod, flags.container.as_deref());
        for why in skipped {
            left_out.push(format!("skipping {why} (context {})", ctx.name));
        }
        for c in running {
            if !out.contains(&c) {
                out.push(c);
            }
        }
    }
    Ok((out, queries, left_out))
}

/// A workload's pod selector, as a label selector string.
async fn workload_selector(ctx: &Ctx, ns: &str, kind: Kind, name: &str) -> Result<String> {
    let selector = match kind {
        Kind::Deployment => {
            fetch::<Deployment>(ctx, ns, kind, name)
                .await?
                .spec
                .selector
        }
        Kind::StatefulSet => {
            fetch::<StatefulSet>(ctx, ns, kind, name)
                .await?
                .spec
                .selector
        }
        Kind::DaemonSet => fetch::<DaemonSet>(ctx, ns, kind, name).await?.spec.selector,
        Kind::Pod => unreachable!("pods are fetched by name"),
    };
    let text = selector_string(&selector);
    if text.is_empty() {
        // An empty selector would mean every pod of the namespace.
        bail!(
            "{}/{name} has an empty pod selector; refusing to trace every pod in {ns}",
            kind.resource().1
        );
    }
    Ok(text)
}

async fn fetch<K>(ctx: &Ctx, ns: &str, kind: Kind, name: &str) -> Result<K>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let what = format!("{}/{name}", kind.resource().1);
    Api::<K>::namespaced(ctx.client.clone(), ns)
        .get_opt(name)
        .await
        .map_err(|e| api_error(ctx, &what, e))?
        .ok_or_else(|| {
            anyhow!(
                "{what} not found in namespace {ns} (context {}); check -n",
                ctx.name
            )
        })
}

/// A LabelSelector as the `labelSelector` query string.
pub fn selector_string(sel: &LabelSelector) -> String {
    let mut parts: Vec<String> = Vec::new();
    for (k, v) in sel.match_labels.iter().flatten() {
        parts.push(format!("{k}={v}"));
    }
    for e in sel.match_expressions.iter().flatten() {
        let values = e.values.clone().unwrap_or_default().join(",");
        parts.push(match e.operator.as_str() {
            "In" => format!("{} in ({values})", e.key),
            "NotIn" => format!("{} notin ({values})", e.key),
            "Exists" => e.key.clone(),
            "DoesNotExist" => format!("!{}", e.key),
            other => format!("{} {other} ({values})", e.key),
        });
    }
    parts.join(",")
}

/// The pod's running containers (optionally only `only`), and what was
/// skipped and why.
pub fn running_containers(pod: &Pod, only: Option<&str>) -> (Vec<Container>, Vec<String>) {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let status = pod.status.clone().unwrap_or_default();
    let phase = status.phase.clone().unwrap_or_else(|| "Unknown".into());
    let skip = |why: String| (Vec::new(), vec![format!("pod {ns}/{name}: {why}")]);
    if pod.metadata.deletion_timestamp.is_some() {
        return skip("it is being deleted".into());
    }
    if phase != "Running" {
        return skip(format!("phase {phase}, not Running"));
    }
    let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else {
        return skip("not scheduled to a node".into());
    };
    let statuses = status.container_statuses.unwrap_or_default();
    if let Some(c) = only {
        if !statuses.iter().any(|s| s.name == c) {
            let names: Vec<&str> = statuses.iter().map(|s| s.name.as_str()).collect();
            return skip(format!("no container {c:?} (it has {})", names.join(", ")));
        }
    }
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    for s in statuses.iter().filter(|s| only.is_none_or(|c| s.name == c)) {
        let running = s
            .state
            .as_ref()
            .and_then(|st| st.running.as_ref())
            .is_some();
        match (&s.container_id, running) {
            (Some(id), true) if !id.is_empty() => out.push(Container {
                namespace: ns.clone(),
                pod: name.clone(),
                container: s.name.clone(),
                node: node.clone(),
                container_id: crate::cluster::container_id(id).to_string(),
            }),
            _ => skipped.push(format!(
                "container {} of pod {ns}/{name}: not running",
                s.name
            )),
        }
    }
    (out, skipped)
}

pub fn api_error(ctx: &Ctx, what: &str, e: kube::Error) -> anyhow::Error {
    match e {
        kube::Error::Api(s) if s.code == 403 => anyhow!(
            "context {}: not allowed to read {what}: {}; ask for the permissions in manifests/rbac.yaml",
            ctx.name,
            s.message
        ),
        kube::Error::Api(s) => anyhow!("context {}: {what}: {} ({})", ctx.name, s.message, s.code),
        other => anyhow!(
            "context {}: cannot reach the API server ({other}); check the kubeconfig's server and your network",
            ctx.name
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn flags(targets: &[&str], selector: Option<&str>, all: bool) -> Selection {
        Selection {
            targets: targets.iter().map(|s| s.to_string()).collect(),
            selector: selector.map(str::to_string),
            all_namespaces: all,
            ..Default::default()
        }
    }

    #[test]
    fn targets_read_like_kubectl() {
        let specs = parse(&flags(
            &["deploy/web", "po/a", "b", "sts/db", "ds/agent"],
            Some("x=y"),
            false,
        ))
        .unwrap();
        assert_eq!(
            specs,
            [
                Spec::Named(Kind::Deployment, "web".into()),
                Spec::Named(Kind::Pod, "a".into()),
                Spec::Named(Kind::Pod, "b".into()),
                Spec::Named(Kind::StatefulSet, "db".into()),
                Spec::Named(Kind::DaemonSet, "agent".into()),
                Spec::Selector("x=y".into()),
            ]
        );
        for bad in ["svc/web", "deploy/", "pod/a/b"] {
            assert!(parse(&flags(&[bad], None, false)).is_err(), "{bad}");
        }
        assert!(parse(&flags(&["pod/a"], None, true)).is_err());
        assert!(parse(&flags(&[], Some("app=web"), true)).is_ok());
    }

    #[test]
    fn selectors_become_query_strings() {
        let sel = LabelSelector {
            match_labels: Some([("app".to_string(), "web".to_string())].into()),
            match_expressions: Some(vec![
                LabelSelectorRequirement {
                    key: "tier".into(),
                    operator: "In".into(),
                    values: Some(vec!["a".into(), "b".into()]),
                },
                LabelSelectorRequirement {
                    key: "canary".into(),
                    operator: "DoesNotExist".into(),
                    values: None,
                },
            ]),
        };
        assert_eq!(selector_string(&sel), "app=web,tier in (a,b),!canary");
    }
}
