//! Preflight, before anything is created: one SelfSubjectAccessReview per
//! permission the run will use, then a server-side dry run of each agent pod
//! through the admission chain (Pod Security, SCC, policy engines).

use super::contexts::Ctx;
use super::targets::{Kind, Spec};
use anyhow::{anyhow, Result};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permission {
    /// None: cluster-wide (all namespaces).
    pub namespace: Option<String>,
    pub verb: &'static str,
    pub group: &'static str,
    pub resource: &'static str,
    pub subresource: &'static str,
}

impl Permission {
    fn new(
        ns: &Option<String>,
        verb: &'static str,
        group: &'static str,
        resource: &'static str,
    ) -> Self {
        Permission {
            namespace: ns.clone(),
            verb,
            group,
            resource,
            subresource: "",
        }
    }

    pub fn resource_text(&self) -> String {
        let mut r = self.resource.to_string();
        if !self.subresource.is_empty() {
            r = format!("{r}/{}", self.subresource);
        }
        if !self.group.is_empty() {
            r = format!("{r}.{}", self.group);
        }
        r
    }
}

/// What `trace`/`watch` will do: read and follow the targets in `target_ns`,
/// run agent pods in `agent_ns` (create, watch them start, read their logs,
/// delete them).
pub fn for_run(
    specs: &[Spec],
    target_ns: &Option<String>,
    agent_ns: &str,
    follow: bool,
) -> Vec<Permission> {
    let mut out: Vec<Permission> = Vec::new();
    let mut add = |p: Permission| {
        if !out.contains(&p) {
            out.push(p);
        }
    };
    for spec in specs {
        match spec {
            Spec::Named(Kind::Pod, _) => add(Permission::new(target_ns, "get", "", "pods")),
            Spec::Named(kind, _) => {
                let (group, resource) = kind.resource();
                add(Permission::new(target_ns, "get", group, resource));
                add(Permission::new(target_ns, "list", "", "pods"));
            }
            Spec::Selector(_) => add(Permission::new(target_ns, "list", "", "pods")),
        }
    }
    // The run follows its targets (new replicas, restarts): a watch of their pods.
    if follow && !specs.is_empty() {
        add(Permission::new(target_ns, "list", "", "pods"));
        add(Permission::new(target_ns, "watch", "", "pods"));
    }
    let agent_ns = Some(agent_ns.to_string());
    // list + watch: waiting for an agent pod to run is a watch of it.
    for verb in ["create", "get", "list", "watch", "delete"] {
        add(Permission::new(&agent_ns, verb, "", "pods"));
    }
    add(Permission {
        subresource: "log",
        ..Permission::new(&agent_ns, "get", "", "pods")
    });
    out
}

/// What `cleanup` will do: find agent pods by label and delete them.
pub fn for_cleanup(ns: &Option<String>) -> Vec<Permission> {
    vec![
        Permission::new(ns, "list", "", "pods"),
        Permission::new(ns, "delete", "", "pods"),
    ]
}

/// Every permission the preflight of `trace`, `watch` and `cleanup` can ask for, with the
/// targets in `target_ns` (None: all namespaces) and the agent pods in `agent_ns`: what
/// manifests/rbac.yaml must grant (tests/krew_index.rs holds it to that). `cleanup -A`'s
/// cluster-wide list and delete are left out, as the manifests leave them out.
pub fn every_permission(target_ns: &Option<String>, agent_ns: &str) -> Vec<Permission> {
    // The match makes a new target kind a compile error right beside this list.
    let kinds = [
        Kind::Pod,
        Kind::Deployment,
        Kind::StatefulSet,
        Kind::DaemonSet,
    ]
    .map(|k| match k {
        Kind::Pod | Kind::Deployment | Kind::StatefulSet | Kind::DaemonSet => k,
    });
    let mut specs: Vec<Spec> = kinds
        .into_iter()
        .map(|k| Spec::Named(k, String::new()))
        .collect();
    specs.push(Spec::Selector(String::new()));
    let mut out = for_run(&specs, target_ns, agent_ns, true);
    for p in for_cleanup(&Some(agent_ns.to_string())) {
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

pub struct Denied {
    pub context: String,
    pub permission: Permission,
    pub reason: String,
}

/// Asks the API server about each permission; returns the ones denied.
pub async fn review(ctx: &Ctx, permissions: &[Permission]) -> Result<Vec<Denied>> {
    let api: Api<SelfSubjectAccessReview> = Api::all(ctx.client.clone());
    let mut denied = Vec::new();
    for p in permissions {
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    namespace: p.namespace.clone(),
                    verb: Some(p.verb.to_string()),
                    group: Some(p.group.to_string()),
                    resource: Some(p.resource.to_string()),
                    subresource: (!p.subresource.is_empty()).then(|| p.subresource.to_string()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let answer = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| super::targets::api_error(ctx, "selfsubjectaccessreviews", e))?;
        let status = answer.status.unwrap_or_default();
        if !status.allowed {
            denied.push(Denied {
                context: ctx.name.clone(),
                permission: p.clone(),
                reason: status
                    .reason
                    .or(status.evaluation_error)
                    .unwrap_or_default(),
            });
        }
    }
    Ok(denied)
}

/// The missing permissions in one line, for an error that must stand on
/// its own (a CI report holds the error, not stderr's table).
pub fn denied_list(denied: &[Denied]) -> String {
    let items: Vec<String> = denied
        .iter()
        .map(|d| {
            format!(
                "{} {} in {} (context {})",
                d.permission.verb,
                d.permission.resource_text(),
                d.permission
                    .namespace
                    .as_deref()
                    .map_or("all namespaces".to_string(), |ns| format!("namespace {ns}")),
                d.context
            )
        })
        .collect();
    items.join(", ")
}

/// The table of missing permissions, for stderr.
pub fn denied_table(denied: &[Denied]) -> String {
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::NOTHING);
    table.set_header(["CONTEXT", "NAMESPACE", "VERB", "RESOURCE", "REASON"]);
    for d in denied {
        table.add_row([
            d.context.clone(),
            d.permission
                .namespace
                .clone()
                .unwrap_or_else(|| "(all)".into()),
            d.permission.verb.to_string(),
            d.permission.resource_text(),
            if d.reason.is_empty() {
                "-".into()
            } else {
                d.reason.clone()
            },
        ]);
    }
    table.to_string()
}

/// A server-side dry-run create: the whole admission chain runs, nothing is
/// stored. The error, if any, says what to change.
pub async fn dry_run(ctx: &Ctx, pod: &Pod, privileged: bool) -> Result<()> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let params = PostParams {
        dry_run: true,
        field_manager: Some(super::agent_pod::MANAGER.into()),
    };
    match api.create(&params, pod).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) => Err(anyhow!(
            "context {}: the agent pod was rejected in namespace {ns}: {}; {}",
            ctx.name,
            s.message,
            admission_fix(&s.message, s.code, &ns, privileged)
        )),
        Err(e) => Err(super::targets::api_error(ctx, "pods (dry run)", e)),
    }
}

/// The namespace label or flag that fixes an admission rejection.
pub fn admission_fix(message: &str, code: u16, ns: &str, privileged: bool) -> String {
    let m = message.to_ascii_lowercase();
    if code == 404 && m.contains("namespace") {
        "create it with `kubectl apply -f manifests/namespace.yaml` (namespace mapguard), or pass --agent-namespace with a namespace that exists".to_string()
    } else if m.contains("podsecurity") || m.contains("pod-security") {
        format!(
            "agent pods need hostPID and the {} capabilities: label the namespace with `kubectl label namespace {ns} pod-security.kubernetes.io/enforce=privileged --overwrite` (see manifests/namespace.yaml) or pass --agent-namespace with a privileged namespace",
            super::agent_pod::AGENT_CAPABILITIES.join("/")
        )
    } else if m.contains("securitycontextconstraints")
        || m.contains("unable to validate against any security context constraint")
    {
        format!(
            "OpenShift: allow the privileged SCC for the namespace's default service account: `oc adm policy add-scc-to-user privileged -z default -n {ns}`"
        )
    } else if !privileged && m.contains("capabilit") {
        "a policy refuses the added capabilities: ask for an exception for namespace, or try --privileged where privileged pods are allowed".to_string()
    } else if code == 403 {
        "ask a cluster admin which admission policy refused it (kubectl describe of the policy named above)".to_string()
    } else {
        "check the message above".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_checks_exactly_what_it_uses() {
        let specs = [
            Spec::Named(Kind::Deployment, "web".into()),
            Spec::Named(Kind::Pod, "p".into()),
            Spec::Selector("a=b".into()),
        ];
        let ns = Some("shop".to_string());
        let got = |follow| -> Vec<(Option<String>, &str, String)> {
            for_run(&specs, &ns, "mapguard", follow)
                .into_iter()
                .map(|p| (p.namespace.clone(), p.verb, p.resource_text()))
                .collect()
        };
        let shop = || Some("shop".to_string());
        let mg = || Some("mapguard".to_string());
        let agent_pods = [
            (mg(), "create", "pods".to_string()),
            (mg(), "get", "pods".into()),
            (mg(), "list", "pods".into()),
            (mg(), "watch", "pods".into()),
            (mg(), "delete", "pods".into()),
            (mg(), "get", "pods/log".into()),
        ];
        let targets = [
            (shop(), "get", "deployments.apps".to_string()),
            (shop(), "list", "pods".into()),
            (shop(), "get", "pods".into()),
        ];
        // `check pod/NAME` does not follow its target.
        assert_eq!(got(false), [&targets[..], &agent_pods[..]].concat());
        let watch = [(shop(), "watch", "pods".to_string())];
        assert_eq!(
            got(true),
            [&targets[..], &watch[..], &agent_pods[..]].concat()
        );
    }

    #[test]
    fn admission_rejections_name_their_fix() {
        let psa = "pods \"x\" is forbidden: violates PodSecurity \"baseline:latest\": host namespaces (hostPID=true)";
        assert!(admission_fix(psa, 403, "mapguard", false).contains(
            "kubectl label namespace mapguard pod-security.kubernetes.io/enforce=privileged"
        ));
        assert!(
            admission_fix("namespaces \"mapguard\" not found", 404, "mapguard", false)
                .contains("manifests/namespace.yaml")
        );
        assert!(admission_fix(
            "unable to validate against any security context constraint",
            403,
            "m",
            false
        )
        .contains("add-scc-to-user privileged"));
    }
}
