//! The operator's own metrics, in a Prometheus registry served on its admin port.

use prometheus::{
    GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

use crate::autoscaler::{Direction, Reason};

/// Reconcile counters and per-shard gauges.
#[derive(Clone)]
pub struct Metrics {
    /// The registry `/metrics` renders.
    pub registry: Registry,
    reconciliations: IntCounterVec,
    failures: IntCounterVec,
    duration: HistogramVec,
    replicas: IntGaugeVec,
    ready_replicas: IntGaugeVec,
    desired_replicas: IntGaugeVec,
    min_replicas: IntGaugeVec,
    max_replicas: IntGaugeVec,
    scale_decisions: IntCounterVec,
    observed_p99: GaugeVec,
    /// 1 on the replica that holds the leader lease.
    pub leader: IntGauge,
}

/// What the per-shard gauges show for one shard.
#[derive(Clone, Copy, Debug, Default)]
pub struct ShardGauges {
    /// Pods.
    pub replicas: i32,
    /// Ready pods.
    pub ready: i32,
    /// Pods wanted.
    pub desired: i32,
    /// Lower bound.
    pub min: i32,
    /// Upper bound.
    pub max: i32,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric in a new registry.
    pub fn new() -> Self {
        let registry = Registry::new();
        let reconciliations = IntCounterVec::new(
            Opts::new(
                "gameshard_operator_reconciliations_total",
                "Reconciliations of a shard by result.",
            ),
            &["shard_namespace", "shard", "result"],
        )
        .expect("valid metric");
        let failures = IntCounterVec::new(
            Opts::new(
                "gameshard_operator_reconcile_failures_total",
                "Failed reconciliations of a shard by reason.",
            ),
            &["shard_namespace", "shard", "reason"],
        )
        .expect("valid metric");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "gameshard_operator_reconcile_duration_seconds",
                "Time a reconciliation takes.",
            )
            .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
            &[],
        )
        .expect("valid metric");
        let gauge = |name: &str, help: &str| {
            IntGaugeVec::new(Opts::new(name, help), &["shard_namespace", "shard"])
                .expect("valid metric")
        };
        let replicas = gauge("gameshard_operator_replicas", "Data-plane pods of a shard.");
        let ready_replicas =
            gauge("gameshard_operator_ready_replicas", "Ready data-plane pods of a shard.");
        let desired_replicas =
            gauge("gameshard_operator_desired_replicas", "Data-plane pods a shard should have.");
        let min_replicas =
            gauge("gameshard_operator_min_replicas", "Lower bound on a shard's pods.");
        let max_replicas =
            gauge("gameshard_operator_max_replicas", "Upper bound on a shard's pods.");
        let scale_decisions = IntCounterVec::new(
            Opts::new(
                "gameshard_operator_scale_decisions_total",
                "The autoscaler's steps (Auto) and recommendations (Recommend), by direction and reason.",
            ),
            &["shard_namespace", "shard", "direction", "reason"],
        )
        .expect("valid metric");
        let observed_p99 = GaugeVec::new(
            Opts::new(
                "gameshard_operator_observed_p99_seconds",
                "The p99 event latency the autoscaler last acted on.",
            ),
            &["shard_namespace", "shard"],
        )
        .expect("valid metric");
        let leader = IntGauge::new(
            "gameshard_operator_leader",
            "1 while this replica holds the leader lease.",
        )
        .expect("valid metric");
        for c in [
            Box::new(reconciliations.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(failures.clone()),
            Box::new(duration.clone()),
            Box::new(replicas.clone()),
            Box::new(ready_replicas.clone()),
            Box::new(desired_replicas.clone()),
            Box::new(min_replicas.clone()),
            Box::new(max_replicas.clone()),
            Box::new(scale_decisions.clone()),
            Box::new(observed_p99.clone()),
            Box::new(leader.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        Self {
            registry,
            reconciliations,
            failures,
            duration,
            replicas,
            ready_replicas,
            desired_replicas,
            min_replicas,
            max_replicas,
            scale_decisions,
            observed_p99,
            leader,
        }
    }

    /// Counts a reconciliation of shard `namespace/name` that took `seconds` and failed
    /// with `reason`, if it did.
    pub fn reconciled(&self, namespace: &str, name: &str, seconds: f64, failure: Option<&str>) {
        self.duration.with_label_values::<&str>(&[]).observe(seconds);
        let result = if failure.is_some() { "failure" } else { "success" };
        self.reconciliations.with_label_values(&[namespace, name, result]).inc();
        if let Some(reason) = failure {
            self.failures.with_label_values(&[namespace, name, reason]).inc();
        }
    }

    /// Sets the per-shard gauges.
    pub fn shard(&self, namespace: &str, name: &str, g: ShardGauges) {
        let labels = [namespace, name];
        self.replicas.with_label_values(&labels).set(i64::from(g.replicas));
        self.ready_replicas.with_label_values(&labels).set(i64::from(g.ready));
        self.desired_replicas.with_label_values(&labels).set(i64::from(g.desired));
        self.min_replicas.with_label_values(&labels).set(i64::from(g.min));
        self.max_replicas.with_label_values(&labels).set(i64::from(g.max));
    }

    /// Counts one of the autoscaler's steps or recommendations.
    pub fn scale_decision(
        &self,
        namespace: &str,
        name: &str,
        direction: Direction,
        reason: Reason,
    ) {
        self.scale_decisions
            .with_label_values(&[namespace, name, direction.label(), reason.label()])
            .inc();
    }

    /// Sets the p99 the autoscaler acted on, in seconds.
    pub fn observed_p99(&self, namespace: &str, name: &str, seconds: f64) {
        self.observed_p99.with_label_values(&[namespace, name]).set(seconds);
    }

    /// Sets the pods the autoscaler wants.
    pub fn desired_replicas(&self, namespace: &str, name: &str, replicas: i32) {
        self.desired_replicas.with_label_values(&[namespace, name]).set(i64::from(replicas));
    }

    /// Drops the gauges of a deleted shard.
    pub fn forget(&self, namespace: &str, name: &str) {
        let labels = [namespace, name];
        let _ = self.observed_p99.remove_label_values(&labels);
        for direction in [Direction::Up, Direction::Down] {
            for reason in Reason::ALL {
                let _ = self.scale_decisions.remove_label_values(&[
                    namespace,
                    name,
                    direction.label(),
                    reason.label(),
                ]);
            }
        }
        for g in [
            &self.replicas,
            &self.ready_replicas,
            &self.desired_replicas,
            &self.min_replicas,
            &self.max_replicas,
        ] {
            let _ = g.remove_label_values(&labels);
        }
    }

    /// The Prometheus text format of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let encoder = prometheus::TextEncoder::new();
        if let Err(e) = encoder.encode_utf8(&self.registry.gather(), &mut out) {
            out = format!("# encoding failed: {e}\n");
        }
        out
    }
}
