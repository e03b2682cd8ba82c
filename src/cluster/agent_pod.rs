//! The agent pod: one per node that hosts a target, running the hidden
//! `agent` subcommand of this same binary. Building it and reading its status
//! are pure functions, so both are tested without a cluster.

use super::targets::Container;
use k8s_openapi::api::core::v1::{
    Capabilities, Container as PodContainer, Pod, PodSpec, ResourceRequirements, SecurityContext,
    Toleration,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::ObjectMeta;
use std::collections::BTreeMap;
use std::time::Duration;

/// How agent pods are made.
#[derive(Debug, Clone)]
pub struct PodOptions {
    pub image: String,
    pub agent_namespace: String,
    /// A privileged pod instead of BPF, PERFMON and SYS_PTRACE.
    pub privileged: bool,
    /// Leave the pods when done.
    pub keep: bool,
    pub pod_running_timeout: Duration,
}

pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGER: &str = "kubectl-mapguard";
pub const SESSION: &str = "mapguard.dev/session";
/// Where manifests/Containerfile puts the binary.
pub const AGENT_BIN: &str = "/usr/local/bin/kubectl-mapguard";
/// What an agent pod adds to an empty capability set (without `--privileged`).
pub const AGENT_CAPABILITIES: [&str; 3] = ["BPF", "PERFMON", "SYS_PTRACE"];
/// An agent pod without `--duration` stops after this (activeDeadlineSeconds
/// must be set for a SIGKILLed CLI to leave nothing running).
pub const UNBOUNDED_DEADLINE: Duration = Duration::from_secs(3600);

/// The label selector of every agent pod this tool makes.
pub fn managed_selector() -> String {
    format!("{MANAGED_BY}={MANAGER}")
}

pub struct PodPlan<'a> {
    pub session: &'a str,
    pub node: &'a str,
    /// 0 for the node's first agent pod of the run; agents for replicas and
    /// restarts that come later count up.
    pub nth: usize,
    pub targets: &'a [Container],
    /// `agent` flags after the container ids (filters, watch mode).
    pub agent_args: &'a [String],
    pub deadline: Duration,
    pub user: &'a str,
}

/// A DNS-1123 name that says whose and which node's pod it is.
pub fn pod_name(session: &str, node: &str, nth: usize) -> String {
    let suffix = if nth == 0 {
        String::new()
    } else {
        format!("-{nth}")
    };
    let mut node: String = node
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    node.truncate(63 - "mapguard--".len() - session.len() - suffix.len());
    let name = format!("mapguard-{session}-{}", node.trim_end_matches('-'));
    format!("{}{suffix}", name.trim_end_matches('-'))
}

pub fn build(plan: &PodPlan, flags: &PodOptions) -> Pod {
    let mut command = vec![AGENT_BIN.to_string(), "agent".to_string()];
    for t in plan.targets {
        command.push("--container-id".into());
        command.push(t.container_id.clone());
    }
    command.extend(plan.agent_args.iter().cloned());

    let labels = BTreeMap::from([
        (MANAGED_BY.to_string(), MANAGER.to_string()),
        (
            "app.kubernetes.io/name".to_string(),
            "mapguard-agent".to_string(),
        ),
        (SESSION.to_string(), plan.session.to_string()),
    ]);
    let targets: Vec<String> = plan
        .targets
        .iter()
        .map(|t| format!("{}/{}/{}", t.namespace, t.pod, t.container))
        .collect();
    let annotations = BTreeMap::from([
        ("mapguard.dev/user".to_string(), plan.user.to_string()),
        ("mapguard.dev/targets".to_string(), targets.join(",")),
        // A sidecar would delay the agent and outlive it.
        ("sidecar.istio.io/inject".to_string(), "false".to_string()),
    ]);

    let security = if flags.privileged {
        SecurityContext {
            privileged: Some(true),
            ..Default::default()
        }
    } else {
        SecurityContext {
            // Uprobes and ring buffers (BPF, PERFMON), reading the targets'
            // binaries through /proc/PID/root (SYS_PTRACE). Not SYS_RESOURCE:
            // kernels since 5.11 charge BPF memory to the memory cgroup, and
            // a runtime whose bounding set lacks it refuses to start the pod.
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: Some(AGENT_CAPABILITIES.map(String::from).to_vec()),
            }),
            privileged: Some(false),
            allow_privilege_escalation: Some(false),
            run_as_user: Some(0),
            read_only_root_filesystem: Some(true),
            ..Default::default()
        }
    };
    let quantity = |s: &str| Quantity(s.to_string());
    let container = PodContainer {
        name: "agent".into(),
        image: Some(flags.image.clone()),
        command: Some(command),
        security_context: Some(security),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_string(), quantity("100m")),
                ("memory".to_string(), quantity("64Mi")),
            ])),
            limits: Some(BTreeMap::from([
                ("cpu".to_string(), quantity("1")),
                ("memory".to_string(), quantity("512Mi")),
            ])),
            ..Default::default()
        }),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Default::default()
    };
    Pod {
        metadata: ObjectMeta {
            name: Some(pod_name(plan.session, plan.node, plan.nth)),
            namespace: Some(flags.agent_namespace.clone()),
            labels: Some(labels),
            annotations: Some(annotations),
            // No ownerReferences to the targets: deleting them must never be
            // a side effect of ours, nor ours of theirs.
            ..Default::default()
        },
        spec: Some(PodSpec {
            // Set directly: the kubernetes.io/hostname label is not always the node name.
            node_name: Some(plan.node.to_string()),
            host_pid: Some(true),
            restart_policy: Some("Never".into()),
            active_deadline_seconds: Some(plan.deadline.as_secs().max(1) as i64),
            termination_grace_period_seconds: Some(5),
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            tolerations: Some(vec![Toleration {
                operator: Some("Exists".into()),
                ..Default::default()
            }]),
            containers: vec![container],
            ..Default::default()
        }),
        status: None,
    }
}

/// What an agent pod is doing, read from its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodState {
    /// Not running yet; the reason, for progress lines.
    Starting(String),
    Running,
    /// Ran and ended (its logs tell how).
    Ended {
        exit_code: Option<i32>,
        reason: String,
    },
    /// Will never run: what to tell the user.
    Failed(String),
}

pub fn state(pod: &Pod) -> PodState {
    let status = pod.status.clone().unwrap_or_default();
    let phase = status.phase.clone().unwrap_or_else(|| "Pending".into());
    let image = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.clone())
        .unwrap_or_default();
    let container = status.container_statuses.clone().unwrap_or_default();
    let terminated = container
        .iter()
        .find_map(|c| c.state.as_ref().and_then(|s| s.terminated.clone()));
    match phase.as_str() {
        "Running" => return PodState::Running,
        "Succeeded" | "Failed" => {
            let exit_code = terminated.as_ref().map(|t| t.exit_code);
            let mut reason = terminated
                .as_ref()
                .and_then(|t| t.reason.clone())
                .or(status.reason.clone())
                .unwrap_or(phase);
            // A container that never started has no log: the runtime's
            // message is all there is (e.g. a capability the runtime lacks).
            if matches!(reason.as_str(), "StartError" | "ContainerCannotRun") {
                if let Some(m) = terminated.and_then(|t| t.message) {
                    reason = format!("{reason}: {}", m.trim());
                }
            }
            return PodState::Ended { exit_code, reason };
        }
        _ => {}
    }
    for c in &container {
        let Some(waiting) = c.state.as_ref().and_then(|s| s.waiting.as_ref()) else {
            continue;
        };
        let reason = waiting.reason.clone().unwrap_or_default();
        let message = waiting.message.clone().unwrap_or_default();
        match reason.as_str() {
            "ErrImagePull" | "ImagePullBackOff" | "InvalidImageName" | "ErrImageNeverPull" => {
                return PodState::Failed(format!(
                    "cannot pull image {image} ({reason}: {message}); pass --image with an image the node can pull (build it from manifests/Containerfile)"
                ))
            }
            "CreateContainerConfigError" | "CreateContainerError" | "RunContainerError" => {
                return PodState::Failed(format!("cannot start its container ({reason}: {message})"))
            }
            "" | "ContainerCreating" | "PodInitializing" => {}
            _ => return PodState::Starting(format!("{reason} {message}").trim().to_string()),
        }
    }
    for cond in status.conditions.iter().flatten() {
        if cond.type_ == "PodScheduled" && cond.status == "False" {
            let message = cond.message.clone().unwrap_or_default();
            return PodState::Failed(format!(
                "cannot be scheduled ({}: {message}); the node may be full, cordoned or gone",
                cond.reason.clone().unwrap_or_default()
            ));
        }
    }
    PodState::Starting(
        container
            .iter()
            .find_map(|c| c.state.as_ref()?.waiting.as_ref()?.reason.clone())
            .unwrap_or_else(|| phase.clone()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus,
        PodCondition, PodStatus,
    };

    fn flags(privileged: bool) -> PodOptions {
        PodOptions {
            image: "img:v1".into(),
            agent_namespace: "mapguard".into(),
            privileged,
            keep: false,
            pod_running_timeout: Duration::from_secs(60),
        }
    }

    fn target(id: &str) -> Container {
        Container {
            namespace: "default".into(),
            pod: format!("web-{id}"),
            container: "app".into(),
            node: "node-a".into(),
            container_id: id.into(),
        }
    }

    #[test]
    fn the_agent_pod_is_least_privilege_and_bounded() {
        let targets = [target("aaa"), target("bbb")];
        let args = vec!["--ops".to_string(), "delete".to_string()];
        let plan = PodPlan {
            session: "1a2b3c4d",
            node: "Node_A.example.com",
            nth: 0,
            targets: &targets,
            agent_args: &args,
            deadline: Duration::from_secs(90),
            user: "alice",
        };
        let pod = build(&plan, &flags(false));
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(
            pod.metadata.name.as_deref(),
            Some("mapguard-1a2b3c4d-node-a-example-com")
        );
        assert_eq!(spec.node_name.as_deref(), Some("Node_A.example.com"));
        assert_eq!(spec.host_pid, Some(true));
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        assert_eq!(spec.active_deadline_seconds, Some(90));
        assert_eq!(
            spec.tolerations.as_ref().unwrap()[0].operator.as_deref(),
            Some("Exists")
        );
        let c = &spec.containers[0];
        assert_eq!(
            c.command.as_ref().unwrap(),
            &[
                AGENT_BIN,
                "agent",
                "--container-id",
                "aaa",
                "--container-id",
                "bbb",
                "--ops",
                "delete"
            ]
        );
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.privileged, Some(false));
        let caps = sc.capabilities.as_ref().unwrap();
        assert_eq!(caps.drop.as_ref().unwrap(), &["ALL"]);
        assert_eq!(
            caps.add.as_ref().unwrap(),
            &["BPF", "PERFMON", "SYS_PTRACE"]
        );
        assert!(c.resources.as_ref().unwrap().limits.is_some());
        let labels = pod.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[MANAGED_BY], MANAGER);
        assert_eq!(labels[SESSION], "1a2b3c4d");
        let ann = pod.metadata.annotations.as_ref().unwrap();
        assert_eq!(
            ann["mapguard.dev/targets"],
            "default/web-aaa/app,default/web-bbb/app"
        );
        assert_eq!(ann["sidecar.istio.io/inject"], "false");
        assert!(pod.metadata.owner_references.is_none());

        let privileged = build(&plan, &flags(true));
        let sc = privileged.spec.unwrap().containers[0]
            .security_context
            .clone()
            .unwrap();
        assert_eq!(sc.privileged, Some(true));
        assert!(sc.capabilities.is_none());
    }

    #[test]
    fn long_node_names_still_make_valid_pod_names() {
        assert_eq!(pod_name("s", "n", 2), "mapguard-s-n-2");
        assert!(pod_name("1a2b3c4d", &"x".repeat(200), 12).len() <= 63);
        let name = pod_name("1a2b3c4d", &"x".repeat(200), 0);
        assert!(name.len() <= 63, "{name}");
        assert_eq!(pod_name("s", "n-", 0), "mapguard-s-n");
    }

    fn with_status(status: PodStatus) -> Pod {
        let mut pod = build(
            &PodPlan {
                session: "s",
                node: "n",
                nth: 0,
                targets: &[],
                agent_args: &[],
                deadline: Duration::from_secs(1),
                user: "u",
            },
            &flags(false),
        );
        pod.status = Some(status);
        pod
    }

    fn waiting(reason: &str, message: &str) -> PodStatus {
        PodStatus {
            phase: Some("Pending".into()),
            container_statuses: Some(vec![ContainerStatus {
                name: "agent".into(),
                state: Some(ContainerState {
                    waiting: Some(ContainerStateWaiting {
                        reason: Some(reason.into()),
                        message: Some(message.into()),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }
    }

    #[test]
    fn pod_status_is_diagnosed() {
        let s = state(&with_status(waiting("ErrImagePull", "not found")));
        assert!(
            matches!(&s, PodState::Failed(m) if m.contains("cannot pull image img:v1") && m.contains("--image")),
            "{s:?}"
        );
        assert_eq!(
            state(&with_status(waiting("ContainerCreating", ""))),
            PodState::Starting("ContainerCreating".into())
        );
        let unschedulable = PodStatus {
            phase: Some("Pending".into()),
            conditions: Some(vec![PodCondition {
                type_: "PodScheduled".into(),
                status: "False".into(),
                reason: Some("Unschedulable".into()),
                message: Some("0/2 nodes are available".into()),
                ..Default::default()
            }]),
            ..Default::default()
        };
        let s = state(&with_status(unschedulable));
        assert!(
            matches!(&s, PodState::Failed(m) if m.contains("cannot be scheduled") && m.contains("0/2 nodes")),
            "{s:?}"
        );
        let mut crashed = waiting("x", "y");
        crashed.phase = Some("Failed".into());
        crashed.container_statuses.as_mut().unwrap()[0].state = Some(ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: 2,
                reason: Some("Error".into()),
                ..Default::default()
            }),
            ..Default::default()
        });
        assert_eq!(
            state(&with_status(crashed)),
            PodState::Ended {
                exit_code: Some(2),
                reason: "Error".into()
            }
        );
        assert_eq!(
            state(&with_status(PodStatus {
                phase: Some("Running".into()),
                ..Default::default()
            })),
            PodState::Running
        );
    }
}
