//! What a benchmark measured, printed for people or as JSON for scripts.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency the histograms track: one minute, in microseconds.
const LATENCY_MAX_US: u64 = 60_000_000;

/// A latency histogram in microseconds (3 significant digits).
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).expect("static histogram bounds are valid")
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Serialize)]
pub struct Latency {
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

impl Latency {
    /// Percentiles of a microsecond histogram; `None` if it is empty.
    pub fn of(histogram: &Histogram<u64>) -> Option<Latency> {
        if histogram.is_empty() {
            return None;
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Some(Latency {
            p50_ms: ms(histogram.value_at_quantile(0.5)),
            p90_ms: ms(histogram.value_at_quantile(0.9)),
            p99_ms: ms(histogram.value_at_quantile(0.99)),
            p999_ms: ms(histogram.value_at_quantile(0.999)),
            max_ms: ms(histogram.max()),
        })
    }
}

/// The result of one benchmark run.
#[derive(Debug, Serialize)]
pub struct Report {
    /// produce, consume or e2e.
    pub benchmark: &'static str,
    /// Records processed.
    pub records: u64,
    /// Value bytes processed.
    pub bytes: u64,
    /// Wall time of the run, seconds.
    pub elapsed_s: f64,
    /// Records per second.
    pub records_per_s: f64,
    /// Megabytes (10^6) of values per second.
    pub mb_per_s: f64,
    /// Latency percentiles, where measured.
    pub latency: Option<Latency>,
    /// `bench subscribe --vs-consume`: the same topic read by `bench consume` right
    /// after, and this run's throughput as a fraction of it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vs_consume: Option<VsConsume>,
}

/// A subscribe run against a plain consume of the same topic.
#[derive(Debug, Serialize)]
pub struct VsConsume {
    /// Records per second of the consume run.
    pub consume_records_per_s: f64,
    /// Subscribe records per second over consume records per second.
    pub ratio: f64,
}

impl Report {
    /// Computes rates from counts and the elapsed time.
    pub fn new(
        benchmark: &'static str,
        records: u64,
        bytes: u64,
        elapsed: Duration,
        latency: Option<Latency>,
    ) -> Report {
        let secs = elapsed.as_secs_f64().max(1e-9);
        Report {
            benchmark,
            records,
            bytes,
            elapsed_s: secs,
            records_per_s: records as f64 / secs,
            mb_per_s: bytes as f64 / secs / 1e6,
            latency,
            vs_consume: None,
        }
    }

    /// The report as a few human-readable lines.
    pub fn to_text(&self) -> String {
        let mut text = format!(
            "{}: {} records, {:.1} MB in {:.2} s: {:.0} records/s, {:.1} MB/s\n",
            self.benchmark,
            self.records,
            self.bytes as f64 / 1e6,
            self.elapsed_s,
            self.records_per_s,
            self.mb_per_s
        );
        if let Some(vs) = &self.vs_consume {
            text.push_str(&format!(
                "vs consume: {:.0} records/s; subscribe / consume {:.2}\n",
                vs.consume_records_per_s, vs.ratio
            ));
        }
        if let Some(l) = &self.latency {
            text.push_str(&format!(
                "latency ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}\n",
                l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms
            ));
        }
        text
    }
}

/// A progress line on stderr, redrawn at most a few times a second.
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    /// A bar for `total` records when `show` is set, else nothing.
    pub fn new(total: u64, show: bool, what: &str) -> Progress {
        let bar = show.then(|| {
            let bar = indicatif::ProgressBar::new(total);
            let style = indicatif::ProgressStyle::with_template(
                "{msg} {wide_bar} {pos}/{len} {per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
            bar.set_style(style);
            bar.set_message(what.to_string());
            bar
        });
        Progress { bar }
    }

    /// Moves the bar to `done`.
    pub fn set(&self, done: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(done);
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_percentiles_are_computed() {
        let mut histogram = latency_histogram();
        for us in 1..=1000 {
            histogram.record(us).unwrap();
        }
        let latency = Latency::of(&histogram).unwrap();
        assert!((latency.p50_ms - 0.5).abs() < 0.01);
        assert!((latency.max_ms - 1.0).abs() < 0.01);
        let report = Report::new(
            "produce",
            1000,
            100_000,
            Duration::from_secs(2),
            Some(latency),
        );
        assert_eq!(report.records_per_s, 500.0);
        assert_eq!(report.mb_per_s, 0.05);
        assert!(report.to_text().contains("p99.9"));
        assert!(
            serde_json::to_string(&report)
                .unwrap()
                .contains("\"records_per_s\":500.0")
        );
    }
}
