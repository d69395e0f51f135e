//! Prometheus text-format metrics without a metrics dependency: counters and
//! fixed-bucket latency histograms keyed by method, plus gauges read at scrape time.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 5.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// Request counts and latencies per (method, outcome code).
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, String), u64>>,
    latency: Mutex<BTreeMap<String, Histogram>>,
    proposals: AtomicU64,
    proposed_commands: AtomicU64,
}

impl Metrics {
    /// Records one Raft proposal carrying `commands` commands.
    pub fn proposed(&self, commands: usize) {
        self.proposals.fetch_add(1, Ordering::Relaxed);
        self.proposed_commands
            .fetch_add(commands as u64, Ordering::Relaxed);
    }

    /// Records one finished request.
    pub fn observe(&self, method: &str, code: &str, took: Duration) {
        let secs = took.as_secs_f64();
        if let Ok(mut r) = self.requests.lock() {
            *r.entry((method.to_string(), code.to_string())).or_default() += 1;
        }
        if let Ok(mut l) = self.latency.lock() {
            let h = l.entry(method.to_string()).or_default();
            for (i, b) in BUCKETS.iter().enumerate() {
                if secs <= *b {
                    h.counts[i] += 1;
                }
            }
            h.count += 1;
            h.sum += secs;
        }
    }

    /// Renders every metric, with `gauges` (name, help, value) first.
    pub fn render(&self, gauges: &[(&str, &str, f64)]) -> String {
        let mut out = String::new();
        for (name, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        let proposals = [
            (
                "weir_raft_proposals_total",
                "Raft entries this master proposed for client and executor writes.",
                self.proposals.load(Ordering::Relaxed),
            ),
            (
                "weir_raft_proposed_commands_total",
                "Commands those entries carried (batched when written concurrently).",
                self.proposed_commands.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, value) in proposals {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP weir_requests_total Client API requests by method and status code."
        );
        let _ = writeln!(out, "# TYPE weir_requests_total counter");
        if let Ok(r) = self.requests.lock() {
            for ((method, code), n) in r.iter() {
                let _ = writeln!(
                    out,
                    "weir_requests_total{{method=\"{method}\",code=\"{code}\"}} {n}"
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP weir_request_seconds Client API request latency."
        );
        let _ = writeln!(out, "# TYPE weir_request_seconds histogram");
        if let Ok(l) = self.latency.lock() {
            for (method, h) in l.iter() {
                for (i, b) in BUCKETS.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "weir_request_seconds_bucket{{method=\"{method}\",le=\"{b}\"}} {}",
                        h.counts[i]
                    );
                }
                let _ = writeln!(
                    out,
                    "weir_request_seconds_bucket{{method=\"{method}\",le=\"+Inf\"}} {}",
                    h.count
                );
                let _ = writeln!(
                    out,
                    "weir_request_seconds_sum{{method=\"{method}\"}} {}",
                    h.sum
                );
                let _ = writeln!(
                    out,
                    "weir_request_seconds_count{{method=\"{method}\"}} {}",
                    h.count
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_cumulative_buckets() {
        let m = Metrics::default();
        m.observe("SubmitApp", "ok", Duration::from_millis(3));
        m.observe("SubmitApp", "ok", Duration::from_millis(30));
        m.observe("SubmitApp", "already_exists", Duration::from_micros(100));
        m.proposed(1);
        m.proposed(5);
        let text = m.render(&[("weir_raft_term", "Current term.", 4.0)]);
        assert!(text.contains("weir_raft_term 4"));
        assert!(text.contains("weir_requests_total{method=\"SubmitApp\",code=\"ok\"} 2"));
        assert!(
            text.contains("weir_requests_total{method=\"SubmitApp\",code=\"already_exists\"} 1")
        );
        assert!(text.contains("weir_request_seconds_bucket{method=\"SubmitApp\",le=\"0.005\"} 2"));
        assert!(text.contains("weir_request_seconds_bucket{method=\"SubmitApp\",le=\"0.05\"} 3"));
        assert!(text.contains("weir_request_seconds_count{method=\"SubmitApp\"} 3"));
        assert!(text.contains("weir_raft_proposals_total 2"));
        assert!(text.contains("weir_raft_proposed_commands_total 6"));
    }
}
