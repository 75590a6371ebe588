//! Process-wide counters, rendered in Prometheus' text format by `GET /metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::store::Backlog;

/// Upper bounds (seconds) of the escalation-lag histogram's buckets.
const LAG_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
];

#[derive(Debug, Default)]
pub struct Metrics {
    executed: AtomicU64,
    cancelled: AtomicU64,
    lag: Histogram,
}

#[derive(Debug, Default)]
struct Histogram {
    /// One count per bucket in `LAG_BUCKETS`, then one for +Inf.
    buckets: [AtomicU64; LAG_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Metrics {
    /// An escalation executed `lag_ms` after it was due.
    pub fn executed(&self, lag_ms: i64) {
        self.executed.fetch_add(1, Ordering::Relaxed);
        let seconds = lag_ms.max(0) as f64 / 1000.0;
        let bucket = LAG_BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(LAG_BUCKETS.len());
        self.lag.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.lag
            .sum_micros
            .fetch_add(lag_ms.max(0) as u64 * 1000, Ordering::Relaxed);
        self.lag.count.fetch_add(1, Ordering::Relaxed);
    }

    /// A due escalation was cancelled because its incident had stopped escalating.
    pub fn cancelled(&self) {
        self.cancelled.fetch_add(1, Ordering::Relaxed);
    }

    /// The text exposition format, with the pending gauge from `backlog` when it could be read.
    pub fn render(&self, backlog: Option<Backlog>) -> String {
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        };
        counter(
            &mut out,
            "klaxon_escalations_executed_total",
            "Escalations executed by this process.",
            self.executed.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "klaxon_escalations_cancelled_total",
            "Due escalations this process cancelled because their incident stopped escalating.",
            self.cancelled.load(Ordering::Relaxed),
        );
        if let Some(backlog) = backlog {
            let _ = writeln!(
                out,
                "# HELP klaxon_escalations_pending Escalations waiting to run (all instances).\n\
                 # TYPE klaxon_escalations_pending gauge\nklaxon_escalations_pending {}\n\
                 # HELP klaxon_escalations_overdue Pending escalations already due.\n\
                 # TYPE klaxon_escalations_overdue gauge\nklaxon_escalations_overdue {}",
                backlog.pending, backlog.overdue
            );
        }
        let name = "klaxon_escalation_lag_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} executed_at minus scheduled_at of executed escalations.\n# TYPE {name} histogram"
        );
        let mut cumulative = 0;
        for (index, bound) in LAG_BUCKETS.iter().enumerate() {
            cumulative += self.lag.buckets[index].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        cumulative += self.lag.buckets[LAG_BUCKETS.len()].load(Ordering::Relaxed);
        let sum = self.lag.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let count = self.lag.count.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "{name}_bucket{{le=\"+Inf\"}} {cumulative}\n{name}_sum {sum}\n{name}_count {count}"
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_gauges_and_cumulative_buckets() {
        let metrics = Metrics::default();
        metrics.executed(3);
        metrics.executed(40);
        metrics.executed(120_000);
        metrics.cancelled();
        let text = metrics.render(Some(Backlog {
            pending: 7,
            overdue: 2,
        }));
        assert!(
            text.contains("klaxon_escalations_executed_total 3\n"),
            "{text}"
        );
        assert!(text.contains("klaxon_escalations_cancelled_total 1\n"));
        assert!(text.contains("klaxon_escalations_pending 7\n"));
        assert!(text.contains("klaxon_escalations_overdue 2\n"));
        assert!(text.contains("klaxon_escalation_lag_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(text.contains("klaxon_escalation_lag_seconds_bucket{le=\"0.05\"} 2\n"));
        assert!(text.contains("klaxon_escalation_lag_seconds_bucket{le=\"30\"} 2\n"));
        assert!(text.contains("klaxon_escalation_lag_seconds_bucket{le=\"+Inf\"} 3\n"));
        assert!(text.contains("klaxon_escalation_lag_seconds_count 3\n"));
    }
}
