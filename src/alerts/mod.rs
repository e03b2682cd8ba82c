//! Alerts as the stream goes by: sliding-window rules over `stats` lines
//! (`watch --policy`, `delete-audit`), each firing one line on stderr and,
//! when configured, a webhook post.

pub mod fire;
pub mod webhook;
pub mod windows;

use crate::policy::Policy;
use crate::protocol::{Line, LineSink, Source};
use anyhow::Result;
use std::time::Duration;

/// Passes every line on, and feeds each stats line to the sliding windows,
/// which alert (stderr, and the webhook if any) as rules fire. Used by
/// `delete-audit` and by `watch --policy`.
pub struct Alerting<'a> {
    windows: windows::Windows,
    webhook: Option<&'a crate::alerts::webhook::Webhook>,
    inner: &'a mut dyn LineSink,
}

impl<'a> Alerting<'a> {
    pub fn new(
        policy: &Policy,
        webhook: Option<&'a crate::alerts::webhook::Webhook>,
        inner: &'a mut dyn LineSink,
    ) -> Self {
        Alerting {
            windows: windows::Windows::new(policy),
            webhook,
            inner,
        }
    }

    fn take(&mut self, line: &Line, source: Option<&Source>) {
        if let Line::Stats(s) = line {
            for f in self.windows.feed(s, source) {
                fire::fire(&f, self.webhook);
            }
        }
    }

    pub fn into_fired(self) -> Vec<windows::Firing> {
        self.windows.fired
    }
}

impl LineSink for Alerting<'_> {
    fn line(&mut self, line: &Line) -> std::io::Result<()> {
        self.take(line, None);
        self.inner.line(line)
    }

    fn tagged(&mut self, line: &Line, source: &Source) -> std::io::Result<()> {
        self.take(line, Some(source));
        self.inner.tagged(line, source)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }

    fn stopped_early(&mut self) {
        self.inner.stopped_early()
    }
}

/// `watch --policy FILE [--alert-webhook URL]`: the sliding-window rules.
pub struct WatchAlerts {
    pub policy: Policy,
    pub webhook: Option<crate::alerts::webhook::Webhook>,
}

impl WatchAlerts {
    pub fn new(
        policy: Option<&std::path::Path>,
        webhook: Option<&str>,
    ) -> Result<Option<WatchAlerts>> {
        let Some(path) = policy else {
            if webhook.is_some() {
                anyhow::bail!("--alert-webhook needs --policy with a sliding-window rule (max_deletes, window)");
            }
            return Ok(None);
        };
        let policy = Policy::read(path)?;
        let windowed = policy.window_rules().count();
        if windowed == 0 {
            anyhow::bail!(
                "policy {}: watch alerts on sliding-window rules (max_deletes + window) and this policy has none",
                path.display()
            );
        }
        if windowed < policy.rules.len() {
            eprintln!(
                "watch alerts on the {windowed} sliding-window rule(s); the other rules are for delete-audit"
            );
        }
        let webhook = webhook
            .map(|url| crate::alerts::webhook::Webhook::start(url, Default::default()))
            .transpose()?;
        Ok(Some(WatchAlerts { policy, webhook }))
    }

    /// Runs `f` on `sink`, wrapped (when there are rules) so that they see
    /// every line; then waits a little for the webhook's queued posts.
    pub fn around<T>(
        alerts: Option<WatchAlerts>,
        sink: &mut dyn LineSink,
        f: impl FnOnce(&mut dyn LineSink) -> T,
    ) -> T {
        let Some(a) = alerts else { return f(sink) };
        let out = f(&mut Alerting::new(&a.policy, a.webhook.as_ref(), sink));
        a.finish();
        out
    }

    /// Waits a little for queued posts, and says what was not delivered.
    fn finish(self) {
        if let Some(w) = self.webhook {
            // finish() says on stderr what was not delivered.
            w.finish(Duration::from_secs(10));
        }
    }
}
