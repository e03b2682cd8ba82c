//! `--alert-webhook URL`: posts each firing alert, Slack-compatible JSON, to a
//! URL, from one background thread, so the loop that finds alerts (reading BPF
//! maps or log streams) never waits on the network.
//!
//! [`Webhook::send`] only puts the alert on a bounded queue and returns: no
//! I/O, no JSON, no lock shared with the sender. A full queue drops the alert
//! and counts it. The sender thread posts one alert at a time, each attempt
//! bounded by [`WebhookOptions::timeout`] (look up the host name, connect,
//! TLS, write, read the response's head), and retries after connect errors,
//! timeouts, 5xx and 429 with a doubling backoff (429 and 503
//! `Retry-After: SECONDS` are honoured, capped at
//! [`WebhookOptions::max_backoff`]). Other 4xx, and redirects (never
//! followed), fail at once. [`Webhook::finish`] waits at most its grace for the
//! queue to drain and then gives up on the rest.
//!
//! The body:
//! ```json
//! {"text": "<the alert's line>",
//!  "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "<the line>"}},
//!             {"type": "section", "fields": [{"type": "mrkdwn", "text": "*rule*\nNAME"}, ...]}],
//!  "mapguard": {"rule": "NAME", "text": "<the line>", "fields": {"KEY": "VALUE", ...}}}
//! ```
//! `text` and `blocks` are what a Slack incoming webhook shows (and what
//! Mattermost and Rocket.Chat accept); `mapguard` holds the raw values for a
//! machine receiver (Slack ignores it).
//!
//! Problems go to stderr, one line each and few of them: the first alert that
//! could not be delivered (or the first dropped), then at most one summary line
//! a minute while they keep coming, and a last summary at [`Webhook::finish`].
//! Messages show the URL only up to its host and port: a Slack webhook's path
//! is its secret.
//!
//! HTTP is hyper's (the `client` module); `https://` is rustls's (the ring
//! provider, as kube uses), trusting the platform's CA certificates (as kube
//! does) plus [`WebhookOptions::extra_ca_pem`].

mod client;

use anyhow::{anyhow, Context, Result};
#[cfg(test)]
use client::redact;
use client::{tls_config, Poster, Retry, Target};
use hyper::body::Bytes;
use serde_json::{json, Map, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The least time between two of the sender's stderr lines about failures.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(60);
/// Slack's limits: a section's text, a field's text, fields per section.
const MAX_SECTION_TEXT: usize = 3000;
const MAX_FIELD_TEXT: usize = 2000;
const FIELDS_PER_SECTION: usize = 10;
/// Fields shown in `blocks` (Slack allows 50 blocks); all are in `mapguard`.
const MAX_SHOWN_FIELDS: usize = 40;

/// One firing alert.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alert {
    /// The rule's name.
    pub rule: String,
    /// One line, for a person (line breaks are turned into spaces).
    pub text: String,
    /// Details, in order: map_type, caller, pod, count, window, ...
    pub fields: Vec<(String, String)>,
}

#[derive(Clone, Debug)]
pub struct WebhookOptions {
    /// The bound on one attempt: look up the host name, connect, TLS
    /// handshake, send, and read the response's status line and headers.
    pub timeout: Duration,
    /// Attempts after the first, for retryable failures.
    pub retries: u32,
    /// The wait before the first retry; it doubles for each next one.
    pub backoff: Duration,
    /// The longest wait between two attempts, `Retry-After` included.
    pub max_backoff: Duration,
    /// Alerts waiting to be sent (at least 1); past that they are dropped.
    pub queue: usize,
    /// PEM CA certificates trusted for `https://` besides the platform's
    /// (a private CA; tests). Empty: the platform's only.
    pub extra_ca_pem: Vec<u8>,
}

impl Default for WebhookOptions {
    fn default() -> Self {
        WebhookOptions {
            timeout: Duration::from_secs(3),
            retries: 3,
            backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            queue: 256,
            extra_ca_pem: Vec::new(),
        }
    }
}

/// What happened to the alerts given to [`Webhook::send`]. Every alert is
/// counted once: `queued + dropped_full = delivered + failed + dropped`, where
/// `dropped_full` is the part of `dropped` that never got into the queue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WebhookStats {
    /// Alerts taken into the queue.
    pub queued: u64,
    /// Answered with a 2xx.
    pub delivered: u64,
    /// Given up on: out of retries, or a failure not worth retrying (4xx,
    /// redirect).
    pub failed: u64,
    /// Not sent: the queue was full, or `finish`'s grace ran out first (an
    /// alert still being attempted then is counted here).
    pub dropped: u64,
    /// HTTP attempts made, retries included.
    pub attempts: u64,
}

/// The sender: one background thread and its queue. End it with
/// [`finish`](Webhook::finish); dropped instead, its thread still sends what
/// is queued, then ends, and nothing sums up.
pub struct Webhook {
    tx: SyncSender<Alert>,
    shared: Arc<Shared>,
    worker: JoinHandle<()>,
    shown: String,
}

struct Shared {
    /// Written by `send` only: atomics, so the caller never takes a lock.
    queued: AtomicU64,
    dropped_full: AtomicU64,
    state: Mutex<State>,
    /// Signalled when `done` or `closed` changes.
    changed: Condvar,
}

#[derive(Default)]
struct State {
    delivered: u64,
    failed: u64,
    attempts: u64,
    last_error: Option<String>,
    /// `finish` stopped waiting: the sender abandons what it holds.
    closed: bool,
    /// The sender thread has ended.
    done: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves plain counters.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Webhook {
    /// Validates the URL (`http://` or `https://`; anything else is an error
    /// that says what is accepted), loads the CA certificates for `https://`,
    /// and starts the sender thread.
    pub fn start(url: &str, opts: WebhookOptions) -> Result<Webhook> {
        let target = Target::parse(url)?;
        let tls = target
            .tls
            .then(|| tls_config(&opts.extra_ca_pem))
            .transpose()
            .with_context(|| format!("alert webhook {}: cannot set up TLS", target.shown))?;
        let (tx, rx) = mpsc::sync_channel(opts.queue.max(1));
        let shared = Arc::new(Shared {
            queued: AtomicU64::new(0),
            dropped_full: AtomicU64::new(0),
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        });
        let shown = target.shown.clone();
        let sender = Sender {
            target,
            tls,
            opts,
            shared: shared.clone(),
            report: Report::default(),
        };
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let worker = std::thread::Builder::new()
            .name("alert-webhook".into())
            .spawn(move || {
                // Built on the thread that uses it: a tokio runtime must not
                // be dropped from async code, which may be the caller's.
                let poster = match Poster::new(sender.tls.as_ref()) {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                sender.run(rx, poster)
            })
            .context("alert webhook: cannot start its thread")?;
        ready_rx
            .recv()
            .map_err(|_| anyhow!("its thread ended"))
            .and_then(|r| r.map_err(|e| anyhow!("no runtime for it: {e}")))
            .context("alert webhook: cannot start its thread")?;
        Ok(Webhook {
            tx,
            shared,
            worker,
            shown,
        })
    }

    /// Queues the alert and returns at once; a full queue drops it (counted
    /// in [`WebhookStats::dropped`], reported by the sender thread).
    pub fn send(&self, alert: Alert) {
        match self.tx.try_send(alert) {
            Ok(()) => self.shared.queued.fetch_add(1, Ordering::Relaxed),
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.shared.dropped_full.fetch_add(1, Ordering::Relaxed)
            }
        };
    }

    /// Where alerts go, as shown in messages: `scheme://host[:port]/…`.
    pub fn target(&self) -> &str {
        &self.shown
    }

    /// Stops accepting alerts, waits at most `grace` for the queue to drain,
    /// then abandons the rest (counted as dropped) and returns the counts. A
    /// line on stderr sums up if any alert was not delivered.
    pub fn finish(self, grace: Duration) -> WebhookStats {
        let Webhook {
            tx,
            shared,
            worker,
            shown,
        } = self;
        drop(tx); // the sender drains the queue, then ends
        let deadline = Instant::now() + grace;
        let mut st = shared.lock();
        while !st.done {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            st = shared
                .changed
                .wait_timeout(st, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        st.closed = true;
        shared.changed.notify_all();
        let queued = shared.queued.load(Ordering::Relaxed);
        let dropped_full = shared.dropped_full.load(Ordering::Relaxed);
        let unsent = queued.saturating_sub(st.delivered + st.failed);
        let stats = WebhookStats {
            queued,
            delivered: st.delivered,
            failed: st.failed,
            dropped: dropped_full + unsent,
            attempts: st.attempts,
        };
        let done = st.done;
        let last_error = st.last_error.clone();
        drop(st);
        if done {
            let _ = worker.join();
        } // else it is stuck in an attempt (bounded by the timeout): leave it
        if stats.failed + stats.dropped > 0 {
            let mut line = format!(
                "alert webhook {shown}: {} of {} alerts delivered, {} failed, {} dropped",
                stats.delivered,
                queued + dropped_full,
                stats.failed,
                stats.dropped
            );
            if unsent > 0 {
                line += &format!(" ({unsent} still unsent after {grace:?})");
            }
            if let Some(e) = last_error {
                line += &format!("; last error: {e}");
            }
            eprintln!("{line}");
        }
        stats
    }
}

/// The sender thread's side.
struct Sender {
    target: Target,
    tls: Option<Arc<rustls::ClientConfig>>,
    opts: WebhookOptions,
    shared: Arc<Shared>,
    report: Report,
}

/// Rate-limits the sender's stderr lines.
#[derive(Default)]
struct Report {
    last_line: Option<Instant>,
    failed: u64,
    dropped_seen: u64,
    dropped: u64,
    last_error: Option<String>,
}

impl Sender {
    fn run(mut self, rx: mpsc::Receiver<Alert>, poster: Poster) {
        /// Tells `finish` the thread ended, even by a panic.
        struct Done(Arc<Shared>);
        impl Drop for Done {
            fn drop(&mut self) {
                self.0.lock().done = true;
                self.0.changed.notify_all();
            }
        }
        let _done = Done(self.shared.clone());
        loop {
            match rx.recv_timeout(REPORT_INTERVAL) {
                Ok(alert) => self.deliver(&alert, &poster),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if self.shared.lock().closed {
                break;
            }
            self.note_drops();
            self.report_if_due();
        }
        poster.close();
    }

    fn deliver(&mut self, alert: &Alert, poster: &Poster) {
        let body = Bytes::from(payload(alert).to_string());
        let mut attempt: u32 = 0;
        loop {
            {
                let mut st = self.shared.lock();
                if st.closed {
                    return; // finish counts it as dropped
                }
                st.attempts += 1;
            }
            attempt += 1;
            let err = match poster.post(&self.target, body.clone(), self.opts.timeout) {
                Ok(()) => {
                    let mut st = self.shared.lock();
                    if !st.closed {
                        st.delivered += 1;
                    }
                    return;
                }
                Err(e) => e,
            };
            let wait = match err.retry {
                _ if attempt > self.opts.retries => None,
                Retry::No => None,
                Retry::Yes => Some(self.backoff(attempt)),
                Retry::After(server) => Some(server.max(self.backoff(attempt))),
            };
            let Some(wait) = wait else {
                let tries = if attempt == 1 {
                    String::new()
                } else {
                    format!(" (after {attempt} attempts)")
                };
                self.fail(alert, format!("{}{tries}", err.msg));
                return;
            };
            if self.sleep(wait.min(self.opts.max_backoff)) {
                return; // closed while waiting
            }
        }
    }

    /// The wait after attempt `n` (1-based) failed: `backoff * 2^(n-1)`.
    fn backoff(&self, n: u32) -> Duration {
        let factor = 1u32.checked_shl(n.saturating_sub(1)).unwrap_or(u32::MAX);
        self.opts
            .backoff
            .checked_mul(factor)
            .unwrap_or(Duration::MAX)
            .min(self.opts.max_backoff)
    }

    /// Waits `d` unless `finish` gives up first; true if it did.
    fn sleep(&self, d: Duration) -> bool {
        let st = self.shared.lock();
        let (st, _) = self
            .shared
            .changed
            .wait_timeout_while(st, d, |s| !s.closed)
            .unwrap_or_else(|e| e.into_inner());
        st.closed
    }

    fn fail(&mut self, alert: &Alert, msg: String) {
        {
            let mut st = self.shared.lock();
            if st.closed {
                return;
            }
            st.failed += 1;
            st.last_error = Some(msg.clone());
        }
        if self.report.last_line.is_none() {
            self.line(format!(
                "alert webhook {}: alert {:?} not delivered: {msg} (further failures are summed up)",
                self.target.shown, alert.rule
            ));
        } else {
            self.report.failed += 1;
            self.report.last_error = Some(msg);
        }
    }

    fn note_drops(&mut self) {
        let now = self.shared.dropped_full.load(Ordering::Relaxed);
        let new = now - self.report.dropped_seen;
        if new == 0 {
            return;
        }
        self.report.dropped_seen = now;
        if self.report.last_line.is_none() {
            self.line(format!(
                "alert webhook {}: queue full ({} alerts waiting): {new} alert(s) dropped (further drops are summed up)",
                self.target.shown,
                self.opts.queue.max(1)
            ));
        } else {
            self.report.dropped += new;
        }
    }

    fn report_if_due(&mut self) {
        let r = &self.report;
        let Some(last) = r.last_line else { return };
        if r.failed + r.dropped == 0 || last.elapsed() < REPORT_INTERVAL {
            return;
        }
        let mut line = format!(
            "alert webhook {}: in the last {}s, {} alert(s) not delivered, {} dropped (queue full)",
            self.target.shown,
            last.elapsed().as_secs(),
            r.failed,
            r.dropped
        );
        if let Some(e) = &r.last_error {
            line += &format!("; last error: {e}");
        }
        self.report.failed = 0;
        self.report.dropped = 0;
        self.report.last_error = None;
        self.line(line);
    }

    fn line(&mut self, line: String) {
        eprintln!("{line}");
        self.report.last_line = Some(Instant::now());
    }
}

/// The JSON body for one alert.
pub fn payload(alert: &Alert) -> Value {
    let line = one_line(&alert.text);
    let mut blocks = vec![json!({
        "type": "section",
        "text": {"type": "mrkdwn", "text": truncate(&mrkdwn(&line), MAX_SECTION_TEXT)},
    })];
    let shown: Vec<Value> = std::iter::once(("rule", alert.rule.as_str()))
        .chain(alert.fields.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .take(MAX_SHOWN_FIELDS)
        .map(|(k, v)| {
            let text = format!("*{}*\n{}", mrkdwn(&one_line(k)), mrkdwn(v));
            json!({"type": "mrkdwn", "text": truncate(&text, MAX_FIELD_TEXT)})
        })
        .collect();
    for chunk in shown.chunks(FIELDS_PER_SECTION) {
        blocks.push(json!({"type": "section", "fields": chunk}));
    }
    let fields: Map<String, Value> = alert
        .fields
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    json!({
        "text": truncate(&mrkdwn(&line), MAX_SECTION_TEXT),
        "blocks": blocks,
        "mapguard": {"rule": alert.rule, "text": alert.text, "fields": fields},
    })
}

fn one_line(s: &str) -> String {
    s.split(|c: char| c.is_control())
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Slack's mrkdwn escapes: `&`, `<` and `>` (Go's `<autogenerated>`).
fn mrkdwn(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn truncate(s: &str, max_chars: usize) -> String {
    if s.chars().count() <= max_chars {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max_chars - 1).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let t = Target::parse("https://hooks.slack.com/services/T/B/X?a=1#frag").unwrap();
        assert!(t.tls);
        assert_eq!(
            (
                t.host.as_str(),
                t.port,
                t.host_header.as_str(),
                t.path.as_str()
            ),
            (
                "hooks.slack.com",
                443,
                "hooks.slack.com",
                "/services/T/B/X?a=1"
            )
        );
        assert_eq!(t.shown, "https://hooks.slack.com/…");
        let t = Target::parse("HTTP://127.0.0.1:8080").unwrap();
        assert_eq!(
            (t.tls, t.port, t.host_header.as_str(), t.path.as_str()),
            (false, 8080, "127.0.0.1:8080", "/")
        );
        let t = Target::parse("http://[::1]:9000?x").unwrap();
        assert_eq!(
            (t.host.as_str(), t.host_header.as_str(), t.path.as_str()),
            ("::1", "[::1]:9000", "/?x")
        );
        for bad in [
            "hooks.slack.com/x",
            "ftp://x/y",
            "http://",
            "http:///path",
            "http://u:p@host/",
            "http://host:0/",
            "http://host:99999/",
            "http://ho st/",
            "http://host/a b",
            "http://host/\r\nX: y",
            "http://[::1/",
            "http://hóst/",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn webhook_can_be_shared_between_threads() {
        fn shared<T: Send + Sync>() {}
        shared::<Webhook>();
    }

    #[test]
    fn redirects_show_only_the_host() {
        assert_eq!(
            redact("https://u:p@hooks.example.com:8443/services/SECRET?x"),
            Some("https://hooks.example.com:8443/…".to_string())
        );
        assert_eq!(redact("/services/SECRET"), None);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let sender = Sender {
            target: Target::parse("http://h/").unwrap(),
            tls: None,
            opts: WebhookOptions {
                backoff: Duration::from_millis(100),
                max_backoff: Duration::from_millis(700),
                ..Default::default()
            },
            shared: Arc::new(Shared {
                queued: AtomicU64::new(0),
                dropped_full: AtomicU64::new(0),
                state: Mutex::new(State::default()),
                changed: Condvar::new(),
            }),
            report: Report::default(),
        };
        let ms: Vec<u128> = [1, 2, 3, 4, 40]
            .iter()
            .map(|&n| sender.backoff(n).as_millis())
            .collect();
        assert_eq!(ms, [100, 200, 400, 700, 700]);
    }

    #[test]
    fn payload_escapes_and_limits() {
        let alert = Alert {
            rule: "r".into(),
            text: "a <b> & c\nd".into(),
            fields: (0..12)
                .map(|i| (format!("k{i}"), "<autogenerated>".into()))
                .collect(),
        };
        let p = payload(&alert);
        assert_eq!(p["text"], "a &lt;b&gt; &amp; c d");
        let blocks = p["blocks"].as_array().unwrap();
        assert_eq!(blocks.len(), 3); // text, 10 fields, 3 fields (rule + 12)
        assert_eq!(blocks[1]["fields"].as_array().unwrap().len(), 10);
        assert_eq!(
            blocks[1]["fields"][1]["text"],
            "*k0*\n&lt;autogenerated&gt;"
        );
        assert_eq!(p["mapguard"]["fields"]["k11"], "<autogenerated>");
        assert_eq!(p["mapguard"]["text"], "a <b> & c\nd");
        assert_eq!(truncate("abcdef", 4), "abc…");
    }
}
