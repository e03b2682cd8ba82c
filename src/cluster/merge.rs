//! Many agent pods, one stream: each forwarded line is tagged with where it
//! came from; `watch` tables get one aggregate of every agent's latest stats;
//! the run ends with one summary that adds up every agent's exact counts.

use super::targets::Container;
use crate::protocol::{ErrorLine, Line, LineSink, Source, Stats, Summary};
use std::collections::{HashMap, VecDeque};
use std::io;

/// Raw log lines kept per agent for a crash diagnosis.
const TAIL: usize = 8;

pub struct Agent {
    pub context: String,
    pub node: String,
    /// `namespace/name` of the agent pod.
    pub pod: String,
    pub targets: Vec<Container>,
    pids: HashMap<u32, usize>,
    summary: Option<Summary>,
    stats: Option<Stats>,
    tail: VecDeque<String>,
    /// Event lines that reached us: the summary says how many were sent.
    events_received: u64,
    pub done: bool,
    /// Why it failed: its error line's message.
    pub failure: Option<String>,
}

impl Agent {
    pub fn new(context: &str, node: &str, pod: String, targets: Vec<Container>) -> Self {
        Agent {
            context: context.to_string(),
            node: node.to_string(),
            pod,
            targets,
            pids: HashMap::new(),
            summary: None,
            stats: None,
            tail: VecDeque::new(),
            events_received: 0,
            done: false,
            failure: None,
        }
    }

    fn source(&self, pid: Option<u32>) -> Source {
        let target = match pid.and_then(|p| self.pids.get(&p)) {
            Some(&i) => self.targets.get(i),
            // Lines about the whole agent name its target when it has one only.
            None if self.targets.len() == 1 => self.targets.first(),
            None => None,
        };
        Source {
            context: self.context.clone(),
            node: self.node.clone(),
            namespace: target.map(|t| t.namespace.clone()),
            pod: target.map(|t| t.pod.clone()),
            container: target.map(|t| t.container.clone()),
        }
    }
}

pub struct Merger {
    pub agents: Vec<Agent>,
    /// `watch -o table`: keep stats for one merged view instead of forwarding them.
    merge_stats: bool,
}

fn pid_of(line: &Line) -> Option<u32> {
    match line {
        Line::Attached(a) => Some(a.pid),
        Line::Event(e) => Some(e.pid),
        Line::ConcurrentWrite(c) => Some(c.pid),
        Line::Fatal(f) => Some(f.pid),
        Line::Detached(d) => Some(d.pid),
        Line::Check(c) => c.pid,
        Line::Stats(_) | Line::Summary(_) | Line::Error(_) | Line::Report(_) | Line::Verdict(_) => {
            None
        }
    }
}

impl Merger {
    pub fn new(agents: Vec<Agent>, merge_stats: bool) -> Self {
        Merger {
            agents,
            merge_stats,
        }
    }

    /// An agent that joins a running run (a replica or restart followed); its index.
    pub fn add(&mut self, agent: Agent) -> usize {
        self.agents.push(agent);
        self.agents.len() - 1
    }

    /// One line of an agent pod's log. The agent writes JSON lines on stdout
    /// and plain diagnostics on stderr; a container log interleaves both.
    pub fn on_text(&mut self, i: usize, text: &str, sink: &mut dyn LineSink) -> io::Result<()> {
        let text = text.trim_end();
        if text.is_empty() {
            return Ok(());
        }
        let agent = &mut self.agents[i];
        let line = match Line::from_json(text) {
            Ok(line) => line,
            Err(_) => {
                eprintln!("agent pod {} (node {}): {text}", agent.pod, agent.node);
                if agent.tail.len() == TAIL {
                    agent.tail.pop_front();
                }
                agent.tail.push_back(text.to_string());
                return Ok(());
            }
        };
        match &line {
            Line::Attached(_) | Line::Check(_) => {
                let id = match &line {
                    Line::Attached(a) => a.container_id.clone(),
                    Line::Check(c) => c.container_id.clone(),
                    _ => None,
                };
                let pid = pid_of(&line).unwrap_or_default();
                if let Some(t) = agent
                    .targets
                    .iter()
                    .position(|t| Some(&t.container_id) == id.as_ref())
                {
                    agent.pids.insert(pid, t);
                }
            }
            Line::Summary(s) => {
                let lost = s.events_emitted.saturating_sub(agent.events_received);
                agent.summary = Some(Summary {
                    lost_in_transit: lost,
                    ..s.clone()
                });
                if lost > 0 {
                    // The pod log is not a lossless pipe: the kubelet rotates
                    // it (containerLogMaxSize) and a follower can miss the
                    // lines written around a rotation.
                    let message = format!(
                        "agent pod {} on node {}: {lost} of {} events it sent did not arrive through its pod log (lost around a kubelet log rotation); the summary's counts are exact, the event list is not: use --sample or --max-events-per-sec, or watch",
                        agent.pod, agent.node, s.events_emitted
                    );
                    let source = agent.source(None);
                    sink.tagged(&Line::Error(ErrorLine { message }), &source)?;
                }
                return Ok(());
            }
            Line::Event(_) => agent.events_received += 1,
            Line::Stats(s) => {
                agent.stats = Some(s.clone());
                if self.merge_stats {
                    return Ok(());
                }
            }
            _ => {}
        }
        let source = agent.source(pid_of(&line));
        sink.tagged(&line, &source)
    }

    /// The agent will never run, or died: an error line, and the run goes on.
    pub fn fail(&mut self, i: usize, why: &str, sink: &mut dyn LineSink) -> io::Result<()> {
        let agent = &mut self.agents[i];
        let message = format!("agent pod {} on node {}: {why}", agent.pod, agent.node);
        agent.failure = Some(message.clone());
        agent.done = true;
        let source = agent.source(None);
        sink.tagged(&Line::Error(ErrorLine { message }), &source)?;
        sink.flush()
    }

    /// The agent's log ended. Without a summary it did not finish its run.
    pub fn ended(
        &mut self,
        i: usize,
        exit: Option<i32>,
        reason: &str,
        sink: &mut dyn LineSink,
    ) -> io::Result<()> {
        let agent = &mut self.agents[i];
        agent.done = true;
        if agent.summary.is_some() {
            // A summary and then a failing exit: the agent gave up (e.g. no
            // target could be traced) and said why in its error lines.
            return match exit {
                Some(c) if c != 0 => self.fail(
                    i,
                    &format!("ended with exit code {c} (error lines above)"),
                    sink,
                ),
                _ => Ok(()),
            };
        }
        let code = exit.map_or(String::new(), |c| format!(", exit code {c}"));
        let last = if agent.tail.is_empty() {
            "no log output".to_string()
        } else {
            format!(
                "last log lines: {}",
                Vec::from(agent.tail.clone()).join(" | ")
            )
        };
        let why = format!("ended before its summary ({reason}{code}); {last}");
        self.fail(i, &why, sink)
    }

    /// Target containers of agents that ran but never attached to a process
    /// there (not Go, or no process): an error line each, so no report reads
    /// them as audited. Not an agent failure.
    pub fn untraced(&self, sink: &mut dyn LineSink) -> io::Result<()> {
        for agent in self.agents.iter().filter(|a| a.failure.is_none()) {
            for (i, t) in agent.targets.iter().enumerate() {
                if agent.pids.values().any(|&p| p == i) {
                    continue;
                }
                let message = format!(
                    "no Go process was traced in container {}/{}/{}: is it a Go program? (pick containers with -c)",
                    t.namespace, t.pod, t.container
                );
                let source = Source {
                    context: agent.context.clone(),
                    node: agent.node.clone(),
                    namespace: Some(t.namespace.clone()),
                    pod: Some(t.pod.clone()),
                    container: Some(t.container.clone()),
                };
                sink.tagged(&Line::Error(ErrorLine { message }), &source)?;
            }
        }
        Ok(())
    }

    pub fn all_done(&self) -> bool {
        self.agents.iter().all(|a| a.done)
    }

    pub fn any_failed(&self) -> bool {
        self.agents.iter().any(|a| a.failure.is_some())
    }

    /// Each agent's latest stats with labels naming it, for Prometheus.
    pub fn latest_stats(&self) -> Vec<(&Stats, [(&str, &str); 2])> {
        self.agents
            .iter()
            .filter_map(|a| {
                let s = a.stats.as_ref()?;
                Some((
                    s,
                    [("context", a.context.as_str()), ("node", a.node.as_str())],
                ))
            })
            .collect()
    }

    /// One view of every agent's latest stats: counts added, rows side by side.
    pub fn merged_stats(&self) -> Option<Stats> {
        let mut out: Option<Stats> = None;
        for s in self.agents.iter().filter_map(|a| a.stats.as_ref()) {
            let m = out.get_or_insert_with(Stats::default);
            m.ts = m.ts.max(s.ts);
            m.interval_ms = m.interval_ms.max(s.interval_ms);
            for op in crate::protocol::Op::ALL {
                m.ops.add(op, s.ops.get(op));
            }
            m.rows.extend(s.rows.iter().cloned());
            m.rows_untracked += s.rows_untracked;
            m.hot_keys.extend(s.hot_keys.iter().cloned());
            m.hot_keys_maps_omitted += s.hot_keys_maps_omitted;
            m.map_keys.extend(s.map_keys.iter().cloned());
            m.hot_keys_evicted += s.hot_keys_evicted;
            m.concurrent_writes += s.concurrent_writes;
            m.delete_latency.extend(s.delete_latency.iter().cloned());
            m.drops += s.drops;
        }
        if let Some(m) = out.as_mut() {
            let latest = self.agents.iter().filter_map(|a| a.stats.as_ref());
            (m.ops, m.estimation) =
                crate::estimate::combine(latest.map(|s| (&s.ops, &s.estimation)));
        }
        out
    }

    /// Every agent's summary added up: exact totals for the whole run.
    pub fn summary(&self) -> Summary {
        let mut total = Summary::default();
        for s in self.agents.iter().filter_map(|a| a.summary.as_ref()) {
            for op in crate::protocol::Op::ALL {
                total.ops.add(op, s.ops.get(op));
            }
            total.events_emitted += s.events_emitted;
            total.lost_in_transit += s.lost_in_transit;
            total.drops += s.drops;
            total.sampled_out += s.sampled_out;
            total.rate_limited += s.rate_limited;
            total.filtered_out += s.filtered_out;
            total.read_faults += s.read_faults;
            total.read_fault_causes.add(&s.read_fault_causes);
            total.duration_ms = total.duration_ms.max(s.duration_ms);
        }
        let summaries = self.agents.iter().filter_map(|a| a.summary.as_ref());
        (total.ops, total.estimation) =
            crate::estimate::combine(summaries.map(|s| (&s.ops, &s.estimation)));
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::JsonLines;

    fn target(pod: &str, id: &str) -> Container {
        Container {
            namespace: "default".into(),
            pod: pod.into(),
            container: "app".into(),
            node: "node-a".into(),
            container_id: id.into(),
        }
    }

    /// One agent pod with one target.
    fn one_agent() -> Merger {
        Merger::new(
            vec![Agent::new(
                "c",
                "n",
                "mapguard/x".into(),
                vec![target("p", "i")],
            )],
            false,
        )
    }

    fn run(merger: &mut Merger, lines: &[(usize, &str)]) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        {
            let mut sink = JsonLines::new(&mut out);
            for (i, l) in lines {
                merger.on_text(*i, l, &mut sink).unwrap();
            }
            sink.flush().unwrap();
        }
        String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn lines_are_tagged_with_the_pod_of_their_process() {
        let agents = vec![
            Agent::new(
                "prod",
                "node-a",
                "mapguard/a".into(),
                vec![target("web-1", "aaa"), target("web-2", "bbb")],
            ),
            Agent::new(
                "prod",
                "node-b",
                "mapguard/b".into(),
                vec![target("web-3", "ccc")],
            ),
        ];
        let mut m = Merger::new(agents, false);
        let attached = |pid: u32, id: &str| {
            format!(
                r#"{{"v":1,"kind":"attached","pid":{pid},"exe":"/app","go_version":"go1.25.5","map_impl":"swiss","probes":[],"container_id":"{id}"}}"#
            )
        };
        let event = |pid: u32| {
            format!(
                r#"{{"v":1,"kind":"event","ts":1,"op":"delete","pid":{pid},"tid":{pid},"goid":1,"map":"0x1","map_type":"map[string]int","map_len":1,"key":"k","key_truncated":false,"key_hash":"0x2","caller":null,"concurrent_write":false}}"#
            )
        };
        let summary = r#"{"v":1,"kind":"summary","ops":{"delete":5,"assign":1,"clear":0},"events_emitted":1,"drops":1,"sampled_out":0,"filtered_out":0,"duration_ms":900}"#;
        let lines = [
            (0, attached(10, "aaa")),
            (0, attached(11, "bbb")),
            (1, attached(10, "ccc")),
            (0, event(11)),
            (1, event(10)),
            (0, "error: plain text from the agent's stderr".to_string()),
            (0, summary.to_string()),
            (1, summary.to_string()),
        ];
        let lines: Vec<(usize, &str)> = lines.iter().map(|(i, l)| (*i, l.as_str())).collect();
        let out = run(&mut m, &lines);
        assert_eq!(out.len(), 5, "{out:?}");
        assert_eq!(out[3]["pod"], "web-2");
        assert_eq!(out[3]["node"], "node-a");
        assert_eq!(out[3]["context"], "prod");
        assert_eq!(out[3]["container"], "app");
        assert_eq!(out[4]["pod"], "web-3");
        assert_eq!(out[4]["node"], "node-b");
        assert_eq!(out[4]["v"], 1);
        let total = m.summary();
        assert_eq!(
            (
                total.ops.delete,
                total.ops.assign,
                total.drops,
                total.duration_ms
            ),
            (10, 2, 2, 900)
        );
    }

    #[test]
    fn events_lost_on_the_way_are_counted_and_said() {
        let mut m = one_agent();
        let event = r#"{"v":1,"kind":"event","ts":1,"op":"delete","pid":7,"tid":7,"goid":1,"map":"0x1","map_type":"map[string]int","map_len":1,"key":"k","key_truncated":false,"key_hash":"0x2","caller":null,"concurrent_write":false}"#;
        let summary = r#"{"v":1,"kind":"summary","ops":{"delete":5,"assign":0,"clear":0},"events_emitted":5,"drops":0,"sampled_out":0,"filtered_out":0,"duration_ms":900}"#;
        let out = run(&mut m, &[(0, event), (0, event), (0, summary)]);
        let errors: Vec<_> = out.iter().filter(|l| l["kind"] == "error").collect();
        assert_eq!(errors.len(), 1, "{out:?}");
        let message = errors[0]["message"].as_str().unwrap();
        assert!(message.contains("3 of 5 events"), "{message}");
        assert_eq!(m.summary().lost_in_transit, 3);
        assert_eq!(m.summary().events_emitted, 5);
    }

    #[test]
    fn a_summary_then_a_failing_exit_is_a_failed_agent() {
        let mut m = one_agent();
        let summary = r#"{"v":1,"kind":"summary","ops":{"delete":0,"assign":0,"clear":0},"events_emitted":0,"drops":0,"sampled_out":0,"filtered_out":0,"duration_ms":900}"#;
        let mut out = Vec::new();
        let mut sink = JsonLines::new(&mut out);
        m.on_text(0, summary, &mut sink).unwrap();
        m.ended(0, Some(0), "Completed", &mut sink).unwrap();
        assert!(!m.any_failed(), "exit 0 after a summary is a normal end");
        m.agents[0].done = false;
        m.ended(0, Some(2), "Error", &mut sink).unwrap();
        drop(sink);
        assert!(m.any_failed());
        assert!(String::from_utf8(out).unwrap().contains("exit code 2"));
    }

    #[test]
    fn an_agent_without_a_summary_is_an_error_line() {
        let mut m = one_agent();
        let mut out = Vec::new();
        let mut sink = JsonLines::new(&mut out);
        m.on_text(
            0,
            "mapguard agent: loading BPF: Operation not permitted",
            &mut sink,
        )
        .unwrap();
        m.ended(0, Some(1), "Error", &mut sink).unwrap();
        drop(sink);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains(r#""kind":"error""#)
                && text.contains("exit code 1")
                && text.contains("Operation not permitted"),
            "{text}"
        );
        assert!(text.contains(r#""pod":"p""#), "{text}");
        assert!(m.any_failed() && m.all_done());
    }

    #[test]
    fn watch_tables_see_one_merged_view() {
        let mut m = Merger::new(
            vec![
                Agent::new("c", "a", "mapguard/a".into(), vec![target("p1", "1")]),
                Agent::new("c", "b", "mapguard/b".into(), vec![target("p2", "2")]),
            ],
            true,
        );
        let stats = |n: u64| {
            format!(
                r#"{{"v":1,"kind":"stats","ts":{n},"interval_ms":1000,"ops":{{"delete":{n},"assign":0,"clear":0}},"rows":[],"rows_untracked":0,"hot_keys":[],"hot_keys_evicted":{n},"concurrent_writes":0,"delete_latency":[],"drops":0}}"#
            )
        };
        let (a, b) = (stats(3), stats(4));
        let out = run(&mut m, &[(0, &a), (1, &b)]);
        assert!(out.is_empty(), "stats are merged, not forwarded: {out:?}");
        let merged = m.merged_stats().unwrap();
        assert_eq!(
            (merged.ops.delete, merged.hot_keys_evicted, merged.ts),
            (7, 7, 4)
        );
        assert_eq!(m.latest_stats().len(), 2);
    }
}
