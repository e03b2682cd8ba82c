//! The one place parsed flags become plain configs, as ripgrep's low-level
//! args become its high-level ones: `cli` is what clap reads; the agent,
//! audit, cluster and render layers take only what is built here, and never
//! see a flag struct.

use crate::agent_config::{AgentConfig, WatchConfig};
use crate::audit::AuditConfig;
use crate::cli::{
    AgentArgs, AgentPodFlags, AuditArgs, ClusterFlags, Filters, KubeFlags, TargetFlags, WatchArgs,
};
use crate::cluster::{Connection, PodOptions, Scope, Selection};

/// `trace`'s filters (and the `agent` subcommand's), with the watch flags
/// when the agent aggregates.
pub fn agent(f: &Filters, watch: Option<&crate::cli::WatchFlags>) -> AgentConfig {
    AgentConfig {
        ops: crate::agent_config::normalized(&f.probe.ops),
        map_type: f.map_type.clone(),
        key: f.key.clone(),
        sample_every: f.sample,
        max_events_per_sec: f.max_events_per_sec,
        duration: f.probe.duration,
        stack: f.stack,
        max_key_bytes: f.max_key_bytes,
        track_writers: f.probe.track_writers,
        watch: watch.map(watch_config),
    }
}

/// The hidden `agent` subcommand: what an agent pod was asked to do.
pub fn agent_subcommand(a: &AgentArgs) -> AgentConfig {
    agent(&a.filters, a.watch.then_some(&a.watch_flags))
}

/// `watch`: aggregates of the chosen operations, no per-event filters.
pub fn watch(args: &WatchArgs) -> AgentConfig {
    AgentConfig::for_watch(
        &args.probe.ops,
        args.probe.duration,
        args.probe.track_writers,
        watch_config(&args.watch),
    )
}

fn watch_config(w: &crate::cli::WatchFlags) -> WatchConfig {
    WatchConfig {
        interval: w.interval,
        top: w.top,
        top_maps: w.top_maps,
        hot_keys_size: w.hot_keys_size,
        by_pc: w.by_pc,
        max_overhead: w.max_overhead,
    }
}

pub fn audit(a: &AuditArgs) -> AuditConfig {
    AuditConfig {
        duration: a.duration,
        policy: a.policy.clone(),
        fail_on: a.fail_on.clone(),
        alert_webhook: a.alert_webhook.clone(),
        top: a.top,
        max_overhead: a.max_overhead,
    }
}

pub fn scope(c: &ClusterFlags) -> Scope {
    scope_of(&c.kube, &c.targets, &c.agent_pods)
}

fn scope_of(kube: &KubeFlags, targets: &TargetFlags, pods: &AgentPodFlags) -> Scope {
    Scope {
        connection: connection(kube),
        selection: selection(targets),
        pods: PodOptions {
            image: pods.image.clone(),
            agent_namespace: pods.namespace.agent_namespace.clone(),
            privileged: pods.privileged,
            keep: pods.keep,
            pod_running_timeout: pods.pod_running_timeout,
        },
    }
}

pub fn connection(k: &KubeFlags) -> Connection {
    Connection {
        kubeconfig: k.kubeconfig.clone(),
        contexts: k.contexts.clone(),
        all_contexts: k.all_contexts,
        cluster: k.cluster.clone(),
        user: k.user.clone(),
        as_user: k.as_user.clone(),
        as_groups: k.as_groups.clone(),
        request_timeout: k.request_timeout,
    }
}

pub fn selection(t: &TargetFlags) -> Selection {
    Selection {
        targets: t.targets.clone(),
        selector: t.selector.clone(),
        namespace: t.namespace.clone(),
        all_namespaces: t.all_namespaces,
        container: t.container.clone(),
    }
}

/// `check pod/NAME`: the one pod, in its namespace, maybe one container.
pub fn check_scope(a: &crate::cli::CheckArgs) -> Scope {
    let targets = TargetFlags {
        targets: vec![a.target.clone()],
        namespace: a.namespace.clone(),
        container: a.container.clone(),
        ..Default::default()
    };
    scope_of(&a.kube, &targets, &a.agent_pods)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use crate::protocol::Op;
    use clap::Parser;
    use std::time::Duration;

    fn parse(argv: &[&str]) -> Command {
        let mut all = vec!["kubectl-mapguard"];
        all.extend(argv);
        Cli::try_parse_from(all).unwrap().command
    }

    /// What an agent pod runs is what the user asked for: the config survives
    /// the trip through the agent's argv.
    #[test]
    fn agent_pods_are_asked_for_the_same_run() {
        let Command::Trace(t) = parse(&[
            "trace",
            "deploy/web",
            "--ops",
            "clear,delete,delete",
            "--map-type",
            "map\\[string\\]",
            "--key",
            "^user:",
            "--sample",
            "3",
            "--duration",
            "1m30s",
            "--max-events-per-sec",
            "50",
            "--max-key-bytes",
            "9",
            "--stack",
            "--track-writers",
        ]) else {
            panic!("not trace")
        };
        let mut sent = agent(&t.filters, None);
        sent.watch = Some(WatchConfig {
            interval: Duration::from_millis(1500),
            top: 7,
            top_maps: 3,
            hot_keys_size: 99,
            by_pc: true,
            max_overhead: Some(crate::agent_config::Percent::parse("2.5%").unwrap()),
        });
        let mut argv = vec!["agent", "--container-id", "x"];
        let flags = sent.to_argv();
        argv.extend(flags.iter().map(String::as_str));
        let Command::Agent(a) = parse(&argv) else {
            panic!("not agent")
        };
        let got = agent_subcommand(&a);
        assert_eq!(got.ops, [Op::Delete, Op::Clear]);
        assert_eq!(format!("{got:?}"), format!("{sent:?}"));
        assert_eq!(t.cluster.targets.targets, ["deploy/web"]);
    }

    #[test]
    fn a_late_agent_ends_with_the_run() {
        let Command::Watch(w) = parse(&["watch", "pod/a", "--duration", "10s"]) else {
            panic!("not watch")
        };
        let late = watch(&w).ending_in(Duration::from_secs(4));
        assert_eq!(late.duration, Some(Duration::from_secs(4)));
        let argv = late.to_argv();
        let at = argv.iter().position(|a| a == "--duration").unwrap();
        assert_eq!(argv[at + 1], "4000ms");
    }
}
