//! kubectl-mapguard: see Go map deletes, assigns and clears in running processes.
//!
//! Data flows one way: `gobin` (what a Go binary holds) feeds the Linux-only
//! `agent` (BPF probes, process discovery, event decoding), which speaks only
//! the `protocol` (JSON lines). `render` turns that stream into what a person
//! or a machine reads; `cli` and `local` wire it to the command line.
//! `cluster` runs the same agent in pods and merges their streams.

pub mod agent_config;
pub mod alerts;
pub mod audit;
pub mod check;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod duration;
pub mod estimate;
pub mod gobin;
pub mod metrics_server;
pub mod metrics_tee;
pub mod policy;
pub mod protocol;
pub mod render;

#[cfg(target_os = "linux")]
pub mod agent;
#[cfg(target_os = "linux")]
pub mod local;
