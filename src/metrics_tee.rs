//! `--metrics-addr`: what publishes stats to the metrics server, for local
//! and cluster runs alike. One renderer for the whole run keeps each series
//! on the same side of the cardinality cap from scrape to scrape.

use crate::metrics_server::MetricsServer;
use crate::protocol::{Line, LineSink, Stats};
use crate::render::prometheus::Renderer;

/// Label sets of `go_map_ops_total` before the rest fold into caller="other".
pub const MAX_SERIES: usize = 2000;

pub struct Publisher {
    server: MetricsServer,
    renderer: Renderer,
}

impl Publisher {
    pub fn new(server: MetricsServer) -> Publisher {
        Publisher {
            server,
            renderer: Renderer::new(MAX_SERIES),
        }
    }

    /// Starts the server when an address is given (and says where on stderr).
    pub fn serve(addr: Option<&str>) -> anyhow::Result<Option<Publisher>> {
        Ok(crate::metrics_server::serve(addr)?.map(Publisher::new))
    }

    /// The latest stats of every source (an agent pod's labels, or none for
    /// a local run) become the next scrape.
    pub fn publish(&mut self, sources: &[(&Stats, &[(&str, &str)])]) {
        self.server.publish(self.renderer.render_many(sources));
    }
}

/// A local run's sink: passes every line on, and publishes each `stats` line.
pub struct Tee<'a> {
    pub inner: &'a mut dyn LineSink,
    pub publisher: Publisher,
}

impl LineSink for Tee<'_> {
    fn line(&mut self, line: &Line) -> std::io::Result<()> {
        if let Line::Stats(s) = line {
            self.publisher.publish(&[(s, &[])]);
        }
        self.inner.line(line)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
