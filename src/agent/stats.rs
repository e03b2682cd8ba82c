//! `stats` lines for `watch`: the kernel's exact aggregates, named.
//!
//! Rows, hot keys and latency histograms are read whole from BPF maps each
//! interval; rates are the difference to the previous read. Nothing here is
//! derived from events, so sampling or ring-buffer loss cannot skew it.

use super::budget::Scales;
use super::decode::{format_key, Process};
use super::probes::{key_kind_from_raw, op_from_raw, Counters, HotKeyRaw, Probes};
use super::skel::types::{self, hot_meta};
use crate::estimate::OpEstimates;
use crate::protocol::{
    Estimation, Frame, HotKey, LatencyBucket, LatencyHistogram, MapKeys, Op, RowEstimate, Sampling,
    Stats, StatsRow,
};
use std::collections::HashMap;
use std::time::Instant;

/// One key of the table, named as the protocol prints it.
fn hot_key(proc: &mut Process, k: &HotKeyRaw, v: &hot_meta) -> HotKey {
    let (map_type, key_type) = proc.map_type(v.pid, v.maptype);
    let n = (v.key_captured as usize).min(v.key.len());
    HotKey {
        pid: v.pid,
        map: format!("0x{:x}", v.map),
        map_type,
        key: format_key(
            key_kind_from_raw(v.key_kind),
            v.go_kind,
            key_type,
            &v.key[..n],
        ),
        key_truncated: (n as u32) < v.key_len,
        key_hash: format!("0x{:016x}", v.hash),
        deletes: k.deletes,
        assigns: k.assigns,
        observed_fraction: None,
    }
}

pub struct StatsBuilder {
    top: usize,
    top_maps: usize,
    by_pc: bool,
    prev: HashMap<(u32, u32, u64, u64), u64>,
    last: Instant,
}

/// The kernel counts per caller pc; a row is what it shows: one per pid,
/// map type, caller function, file:line and op. Counts and rates add up; the
/// map length and `via` are those of the busiest pc.
fn by_line(rows: Vec<StatsRow>) -> Vec<StatsRow> {
    let mut out: Vec<StatsRow> = Vec::with_capacity(rows.len());
    let mut at: HashMap<(u32, Option<String>, Option<Frame>, Op), usize> = HashMap::new();
    for r in rows {
        let key = (r.pid, r.map_type.clone(), r.caller.clone(), r.op);
        match at.get(&key) {
            Some(&i) => {
                let o = &mut out[i];
                if r.count > o.count {
                    o.map_len = r.map_len;
                    o.via = r.via;
                }
                o.count += r.count;
                o.rate += r.rate;
            }
            None => {
                at.insert(key, out.len());
                out.push(r);
            }
        }
    }
    out
}

impl StatsBuilder {
    pub fn new(top: usize, top_maps: u32, by_pc: bool) -> StatsBuilder {
        StatsBuilder {
            top,
            top_maps: top_maps as usize,
            by_pc,
            prev: HashMap::new(),
            last: Instant::now(),
        }
    }

    pub fn snapshot(
        &mut self,
        probes: &Probes<'_>,
        counters: &Counters,
        procs: &mut HashMap<u32, Process>,
        ts: u64,
    ) -> Stats {
        let elapsed = self.last.elapsed();
        self.last = Instant::now();
        let secs = elapsed.as_secs_f64().max(1e-9);

        let mut rows = Vec::new();
        let mut prev = HashMap::new();
        for (k, v) in probes.rows() {
            let id = (k.pid, k.op, k.maptype, k.caller);
            let before = self.prev.get(&id).copied().unwrap_or(0);
            prev.insert(id, v.count);
            let (Some(op), Some(proc)) =
                (op_from_raw(types::op(k.op as u8)), procs.get_mut(&k.pid))
            else {
                continue;
            };
            let (caller, via) = proc.caller_and_via(k.pid, k.caller, v.via);
            rows.push(StatsRow {
                pid: k.pid,
                map_type: proc.map_type(k.pid, k.maptype).0,
                caller,
                via,
                op,
                count: v.count,
                rate: v.count.saturating_sub(before) as f64 / secs,
                map_len: v.map_len,
                pc: self.by_pc.then(|| format!("0x{:x}", k.caller)),
                estimate: RowEstimate::default(),
            });
        }
        self.prev = prev;
        if !self.by_pc {
            rows = by_line(rows);
        }
        rows.sort_by(|a, b| b.count.cmp(&a.count).then(a.op.cmp(&b.op)));

        // Every key the table holds counts toward its map's key totals, but
        // only the top ones of the busiest maps are named: a full table is
        // 65,536 keys, and a service that makes a map per request has
        // thousands of maps in it. A map is its address and its type: the
        // GC gives a freed map's address to the next map, of any type.
        // One sort and no allocation per map: this runs every interval, on
        // the cores the target runs on.
        let mut raw: Vec<HotKeyRaw> = probes
            .hot_keys()
            .into_iter()
            .filter(|k| procs.contains_key(&k.pid))
            .collect();
        raw.sort_unstable_by_key(|k| (k.pid, k.map, k.maptype, std::cmp::Reverse(k.total())));
        let mut maps: Vec<(&[HotKeyRaw], u64)> = raw
            .chunk_by(|a, b| (a.pid, a.map, a.maptype) == (b.pid, b.map, b.maptype))
            .map(|keys| (keys, keys.iter().map(HotKeyRaw::total).sum()))
            .collect();
        let busiest = self.top_maps.min(maps.len());
        if busiest < maps.len() {
            // Ties go to the lower address, so a line names the same maps
            // whichever order the table held them in.
            let by_ops = |a: &(&[HotKeyRaw], u64), b: &(&[HotKeyRaw], u64)| {
                let id = |k: &HotKeyRaw| (k.pid, k.map, k.maptype);
                b.1.cmp(&a.1).then(id(&a.0[0]).cmp(&id(&b.0[0])))
            };
            maps.select_nth_unstable_by(busiest, by_ops);
        }
        let hot_keys_maps_omitted = (maps.len() - busiest) as u64;
        let mut map_keys = Vec::with_capacity(busiest);
        let mut hot_keys: Vec<HotKey> = Vec::new();
        let mut folded: HashMap<(u32, u64), MapKeys> = HashMap::new();
        for (i, &(keys, _)) in maps.iter().enumerate() {
            let k0 = &keys[0];
            let Some(proc) = procs.get_mut(&k0.pid) else {
                continue;
            };
            if i >= busiest {
                let m = folded
                    .entry((k0.pid, k0.maptype))
                    .or_insert_with(|| MapKeys {
                        pid: k0.pid,
                        map: "other".into(),
                        map_type: proc.map_type(k0.pid, k0.maptype).0,
                        keys: 0,
                        keys_deleted: 0,
                        maps: 0,
                    });
                m.keys += keys.len() as u64;
                m.keys_deleted += deleted(keys);
                m.maps += 1;
                continue;
            }
            map_keys.push(MapKeys {
                pid: k0.pid,
                map: format!("0x{:x}", k0.map),
                map_type: proc.map_type(k0.pid, k0.maptype).0,
                keys: keys.len() as u64,
                keys_deleted: deleted(keys),
                maps: 1,
            });
            // Keys come most operations first. Keys tied with the last one
            // shown are named too, so the order among equals is by the
            // printed key, as it always was.
            let cut = keys
                .get(self.top.saturating_sub(1))
                .map_or(0, HotKeyRaw::total);
            let mut named: Vec<HotKey> = keys
                .iter()
                .take_while(|k| self.top > 0 && k.total() >= cut)
                .filter_map(|k| Some(hot_key(proc, k, &probes.hot_key_meta(k)?)))
                .collect();
            named.sort_by(|a, b| {
                (b.deletes + b.assigns)
                    .cmp(&(a.deletes + a.assigns))
                    .then(a.key.cmp(&b.key))
            });
            named.truncate(self.top);
            hot_keys.extend(named);
        }
        map_keys.extend(folded.into_values());
        map_keys.sort_by(|a, b| (a.pid, &a.map, &a.map_type).cmp(&(b.pid, &b.map, &b.map_type)));
        hot_keys.sort_by(|a, b| (b.deletes + b.assigns).cmp(&(a.deletes + a.assigns)));

        let mut delete_latency: Vec<LatencyHistogram> = probes
            .latencies()
            .into_iter()
            .filter_map(|(k, v)| {
                let proc = procs.get_mut(&k.pid)?;
                Some(LatencyHistogram {
                    pid: k.pid,
                    map_type: proc.map_type(k.pid, k.maptype).0,
                    count: v.count,
                    sum_ns: v.sum_ns,
                    buckets: v
                        .buckets
                        .iter()
                        .enumerate()
                        .filter(|(_, &c)| c > 0)
                        // Bucket i holds [2^i, 2^(i+1)) ns.
                        .map(|(i, &count)| LatencyBucket {
                            le_ns: 1u64 << (i + 1),
                            count,
                        })
                        .collect(),
                })
            })
            .collect();
        delete_latency.sort_by(|a, b| b.count.cmp(&a.count));

        Stats {
            ts,
            interval_ms: elapsed.as_millis() as u64,
            ops: counters.ops.clone(),
            rows,
            rows_untracked: counters.rows_untracked,
            hot_keys,
            hot_keys_maps_omitted,
            map_keys,
            hot_keys_evicted: counters.hot_keys_evicted,
            concurrent_writes: counters.concurrent_writes,
            delete_latency,
            drops: counters.dropped,
            estimation: Estimation::default(),
        }
    }
}

/// Keys of one map deleted at least once.
fn deleted(raw: &[HotKeyRaw]) -> u64 {
    raw.iter().filter(|k| k.deletes > 0).count() as u64
}

/// `--max-overhead`: turns a stats line of observed counts into estimates,
/// each process's by its own scales. Hot keys, concurrent writes and
/// latencies stay what the windows saw, with the fraction beside them.
pub fn estimate(stats: &mut Stats, scales: &HashMap<u32, Scales>, sampling: Vec<Sampling>) {
    let scale_of = |pid: u32| scales.get(&pid).copied();
    for r in stats.rows.iter_mut() {
        let Some(s) = scale_of(r.pid) else {
            continue;
        };
        let e = s.run.estimate(r.count);
        r.estimate = RowEstimate {
            estimated: true,
            count_observed: Some(r.count),
            count_interval: Some(e.interval()),
            observed_fraction: Some(s.run.known_fraction()),
        };
        r.count = e.count();
        // Where the share is not known, the rate stays what was seen: a floor.
        if let Some(f) = s.interval.known_fraction() {
            r.rate = (r.rate / f).max(0.0);
        }
    }
    stats
        .rows
        .sort_by(|a, b| b.count.cmp(&a.count).then(a.op.cmp(&b.op)));
    for k in stats.hot_keys.iter_mut() {
        k.observed_fraction = scale_of(k.pid).map(|s| s.run.known_fraction());
    }
    let ops = op_estimates(scales);
    stats.ops = ops.counts();
    stats.estimation = ops.estimation(sampling);
}

/// Every process's operations, estimated and added up.
pub fn op_estimates(scales: &HashMap<u32, Scales>) -> OpEstimates {
    let mut total = OpEstimates::default();
    for s in scales.values() {
        let mut one = OpEstimates::default();
        for op in Op::ALL {
            *one.get_mut(op) = s.run.estimate(s.observed[op_index(op)]);
        }
        total.add(&one);
    }
    total
}

/// The slot counters' index of an op: the program's enum op.
fn op_index(op: Op) -> usize {
    usize::from(super::probes::op_raw(op).0)
}
