//! `bench-bare-probe -- CMD` (hidden): the benchmark's baseline. Attaches a
//! count-only program (bpf/bare.bpf.c) at exactly the probe points mapguard
//! uses, runs CMD to its end, and reports the hit count.

use super::launch::{self, HeldChild};
use crate::gobin::GoBinary;
use crate::protocol::Op;
use anyhow::{anyhow, Context, Result};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::UprobeMultiOpts;
use std::mem::MaybeUninit;
use std::time::Duration;

mod skel {
    #![allow(clippy::all, dead_code, non_camel_case_types, unused_imports)]
    include!(concat!(env!("OUT_DIR"), "/bare.skel.rs"));
}

pub struct BareRun {
    pub hits: u64,
    pub exit_status: i32,
}

pub fn run(argv: &[String], ops: &[Op]) -> Result<BareRun> {
    let cmd = argv
        .first()
        .ok_or_else(|| anyhow!("no command given after --"))?;
    let path = launch::resolve_command(cmd).ok_or_else(|| anyhow!("command not found: {cmd}"))?;
    let bin = GoBinary::open(&path)?;
    super::check_permitted()?;
    let offsets: Vec<usize> = bin
        .probe_points()
        .iter()
        .filter(|p| ops.contains(&p.op))
        .map(|p| p.file_offset as usize)
        .collect();
    let mut storage = MaybeUninit::uninit();
    let skel = skel::BareSkelBuilder::default()
        .open(&mut storage)
        .context("opening the bare BPF object")?
        .load()
        .context("loading the bare BPF object")?;
    let mut child = HeldChild::spawn(&path, argv, None)?;
    let opts = UprobeMultiOpts {
        offsets,
        ..Default::default()
    };
    let _link = skel
        .progs
        .count_hit
        .attach_uprobe_multi_with_opts(child.pid as i32, &path, "", opts)
        .map_err(|e| anyhow!("attaching the bare probe: {e}"))?;
    child.release()?;
    let status = loop {
        if let Some(status) = child.try_wait() {
            break status;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let hits = super::probes::percpu_sum(&skel.maps.hits, 0);
    Ok(BareRun {
        hits,
        exit_status: status,
    })
}
