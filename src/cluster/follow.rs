//! Following the targets of a run, as `stern` follows logs: a replica that
//! appears after the start, or a target container that restarts (a new
//! container id), is sent on so the run can give it an agent of its own.

use super::targets::{self, By, Container, Query};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Api;
use tokio::sync::mpsc::UnboundedSender;

/// Watches one query's pods until the receiver is gone, sending every
/// running target container it sees (the run drops the ones it knows).
pub async fn watch_targets(
    ci: usize,
    client: kube::Client,
    context: String,
    query: Query,
    only: Option<String>,
    tx: UnboundedSender<(usize, Container)>,
) {
    let api: Api<Pod> = match &query.namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    };
    let config = match &query.by {
        By::Name(name) => watcher::Config::default().fields(&format!("metadata.name={name}")),
        By::Labels(sel) => watcher::Config::default().labels(sel),
    };
    // The backoff spaces out the re-lists after an error, and so the lines.
    let mut events = watcher::watcher(api, config).default_backoff().boxed();
    while let Some(event) = events.next().await {
        let pod = match event {
            Ok(Event::Apply(pod) | Event::InitApply(pod)) => pod,
            Ok(_) => continue,
            Err(e) => {
                eprintln!(
                    "following the targets (context {context}): {e}; retrying, replicas that start meanwhile are picked up when it recovers"
                );
                continue;
            }
        };
        for c in targets::running_containers(&pod, only.as_deref()).0 {
            if tx.send((ci, c)).is_err() {
                return;
            }
        }
    }
}
