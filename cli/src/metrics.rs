//! `pubsubd`'s Prometheus endpoint, shared by every role: `--metrics-listen`, served
//! by `metrics-exporter-prometheus` at `/metrics`.

use std::net::SocketAddr;

use anyhow::Context;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

/// The default metrics address: Prometheus exporters' customary 9464, on loopback
/// (deployments that are scraped from outside set `0.0.0.0:9464`).
pub const DEFAULT_METRICS_ADDRESS: &str = "127.0.0.1:9464";

/// Histogram buckets of every `_seconds` series: 100 µs to 30 s.
const SECONDS_BUCKETS: [f64; 17] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// The metrics flag of a role.
#[derive(Debug, Clone, clap::Args)]
pub struct MetricsArgs {
    /// Serve Prometheus metrics over HTTP at /metrics on this address; `off` serves
    /// none.
    #[arg(long, env = "PUBSUB_METRICS_LISTEN", default_value = DEFAULT_METRICS_ADDRESS)]
    pub metrics_listen: String,
}

impl MetricsArgs {
    /// Starts the endpoint. A malformed address is an error; an address in use (a
    /// second role on one host with the default) is logged and the role runs on
    /// without metrics.
    pub fn install(&self) -> anyhow::Result<()> {
        if self.metrics_listen == "off" {
            return Ok(());
        }
        let address: SocketAddr = self.metrics_listen.parse().with_context(|| {
            format!(
                "--metrics-listen {:?} is not an address like 127.0.0.1:9464 (or off)",
                self.metrics_listen
            )
        })?;
        let builder = PrometheusBuilder::new()
            .with_http_listener(address)
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS_BUCKETS)
            .context("histogram buckets")?;
        match builder.install() {
            Ok(()) => tracing::info!(address = %address, "metrics served at /metrics"),
            Err(e) => {
                tracing::warn!(address = %address, error = %e, "cannot serve metrics; running without them")
            }
        }
        Ok(())
    }
}
