//! The reconciler's Prometheus metrics (`hatchway_reconcile_*`,
//! `hatchway_leader`), registered in the operator's registry beside the
//! build info and process metrics (`router::metrics::Metrics::operator`).

use std::time::Instant;

use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry};

/// What the reconciler records.
#[derive(Clone)]
pub struct ReconcileMetrics {
    /// Time one reconcile took, whatever its outcome.
    pub duration: Histogram,
    /// Reconciles that failed, by reason (`api`).
    pub errors: IntCounterVec,
    /// 1 while this replica holds the leader Lease (and reconciles).
    pub leader: IntGauge,
}

impl ReconcileMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn new(registry: &Registry) -> Self {
        let duration = Histogram::with_opts(
            HistogramOpts::new(
                "hatchway_reconcile_duration_seconds",
                "Time one reconcile of a Container took.",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
        )
        .expect("valid metric");
        let errors = IntCounterVec::new(
            Opts::new(
                "hatchway_reconcile_errors_total",
                "Reconciles that failed, by reason.",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let leader = IntGauge::new(
            "hatchway_leader",
            "1 while this replica holds the leader Lease and reconciles.",
        )
        .expect("valid metric");
        for collector in [
            Box::new(duration.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(errors.clone()),
            Box::new(leader.clone()),
        ] {
            registry.register(collector).expect("metric names are unique");
        }
        // Every reason at zero from the start: a dashboard's rate() of a
        // series that does not exist yet shows nothing, not 0 (and misses
        // the first error).
        for reason in ["api", "finalizer"] {
            errors.with_label_values(&[reason]);
        }
        Self {
            duration,
            errors,
            leader,
        }
    }

    /// Sets `hatchway_leader` to 1 until the guard drops (the Lease lost,
    /// or shutdown).
    pub fn leading(&self) -> LeaderGuard {
        self.leader.set(1);
        LeaderGuard(self.leader.clone())
    }

    /// Times a reconcile until the guard drops (on every path out,
    /// errors and panics included).
    pub fn time(&self) -> DurationGuard {
        DurationGuard {
            histogram: self.duration.clone(),
            start: Instant::now(),
        }
    }
}

/// Sets `hatchway_leader` back to 0 when dropped.
pub struct LeaderGuard(IntGauge);

impl Drop for LeaderGuard {
    fn drop(&mut self) {
        self.0.set(0);
    }
}

/// Observes the time since it was made into the histogram when dropped.
pub struct DurationGuard {
    histogram: Histogram,
    start: Instant,
}

impl Drop for DurationGuard {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reconcile_is_timed_even_when_it_fails() {
        let registry = Registry::new();
        let metrics = ReconcileMetrics::new(&registry);
        {
            let _timer = metrics.time();
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        metrics.errors.with_label_values(&["api"]).inc();
        metrics.leader.set(1);
        assert_eq!(metrics.duration.get_sample_count(), 1);
        assert!(metrics.duration.get_sample_sum() >= 0.002);
        let names: Vec<String> = registry.gather().iter().map(|f| f.name().to_owned()).collect();
        assert_eq!(
            names,
            [
                "hatchway_leader",
                "hatchway_reconcile_duration_seconds",
                "hatchway_reconcile_errors_total"
            ]
        );
    }
}
