//! What librdkafka reports about brokers, turned into readiness and lag.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use rdkafka::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaErrorCode;

use crate::admin::Health;
use crate::metrics::Metrics;

/// A client context that marks the data plane not ready while no broker is reachable,
/// ready again once one is, and records the input topic's high watermarks.
#[derive(Clone)]
pub struct ClientHealth {
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    /// The input topic, whose watermarks feed the lag gauge (`None` for producers).
    input_topic: Option<String>,
    /// Whether partitions are restored and assigned: readiness waits for it.
    started: Arc<AtomicBool>,
    /// Whether this client last saw its brokers down.
    down: Arc<AtomicBool>,
}

impl ClientHealth {
    /// A context reporting into `health` and `metrics`.
    pub fn new(
        health: Arc<Health>,
        metrics: Arc<Metrics>,
        input_topic: Option<String>,
        started: Arc<AtomicBool>,
    ) -> Self {
        Self { health, metrics, input_topic, started, down: Arc::new(AtomicBool::new(false)) }
    }
}

impl ClientContext for ClientHealth {
    fn error(&self, error: KafkaError, reason: &str) {
        match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::AllBrokersDown) => {
                self.down.store(true, Relaxed);
                self.health.set_not_ready(&format!("no broker reachable: {reason}"));
                tracing::warn!(%reason, "no broker reachable; retrying");
            }
            Some(RDKafkaErrorCode::BrokerTransportFailure) => {
                tracing::warn!(%reason, "broker connection lost; retrying");
            }
            _ => tracing::error!(%error, %reason, "Kafka client error"),
        }
    }

    fn stats(&self, stats: Statistics) {
        let up = stats.brokers.values().any(|b| b.state == "UP");
        if up && self.down.swap(false, Relaxed) && self.started.load(Relaxed) {
            self.health.set_ready();
            tracing::info!("broker reachable again");
        }
        let Some(topic) = self.input_topic.as_deref().and_then(|t| stats.topics.get(t)) else {
            return;
        };
        for (&p, partition) in &topic.partitions {
            if let Some(slot) = u32::try_from(p).ok().and_then(|p| self.metrics.partition(p))
                && partition.hi_offset >= 0
            {
                slot.high_watermark.store(partition.hi_offset, Relaxed);
            }
        }
    }
}

impl rdkafka::consumer::ConsumerContext for ClientHealth {}
