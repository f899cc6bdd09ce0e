//! Following the operator's partition assignment on the control topic.
//!
//! The latest assignment message for the shard says which partitions each pod owns. A
//! data plane started with `--control-topic` waits for one, owns the partitions listed
//! for its `--pod-id`, and watches for newer ones: when its own partitions change it
//! drains and exits, and its restart takes the new assignment.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gameshard_crds::control::{ASSIGNMENT_KEY, Assignment};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::admin::Health;

/// How long reading the control topic to its end may take.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the assignment could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The client failed.
    #[error("--control-topic: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The topic could not be read to its end in time.
    #[error("--control-topic: read {topic} to offset {read} of {end} within {READ_TIMEOUT:?}")]
    Incomplete {
        /// The control topic.
        topic: String,
        /// Offset reached.
        read: i64,
        /// Offset to reach.
        end: i64,
    },
}

/// Reads the control topic's partition 0 from its start to its current end; returns the
/// latest assignment of `shard` on it and the offset reading stopped at. A read that does
/// not reach the end is an error, never an older assignment: the watch that follows
/// starts at the end, and would miss what lies between.
pub fn latest(
    consumer: &BaseConsumer,
    topic: &str,
    shard: &str,
) -> Result<(Option<Assignment>, i64), ControlError> {
    let (low, high) = consumer.fetch_watermarks(topic, 0, Duration::from_secs(10))?;
    if high <= low {
        return Ok((None, high));
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(low))?;
    consumer.assign(&tpl)?;
    let deadline = Instant::now() + READ_TIMEOUT;
    let mut found = None;
    let mut next = low;
    while next < high {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ControlError::Incomplete {
                topic: topic.to_owned(),
                read: next,
                end: high,
            });
        }
        let Some(message) = consumer.poll(left.min(Duration::from_secs(1))) else { continue };
        let m = message?;
        // Offsets may have gaps where compaction removed records.
        next = m.offset() + 1;
        if let Some(a) = parse(&m, shard) {
            found = Some(a);
        }
    }
    Ok((found, high))
}

fn parse(m: &impl Message, shard: &str) -> Option<Assignment> {
    if m.key() != Some(ASSIGNMENT_KEY) {
        return None;
    }
    match serde_json::from_slice::<Assignment>(m.payload()?) {
        Ok(a) if a.shard == shard => Some(a),
        Ok(_) => None,
        Err(error) => {
            tracing::warn!(offset = m.offset(), %error, "skipping an unreadable assignment");
            None
        }
    }
}

/// Waits for an assignment of `shard`, reporting not-ready meanwhile; returns it with
/// the offset after it. `None` if `stop` was set first.
pub fn wait(
    config: &ClientConfig,
    topic: &str,
    shard: &str,
    health: &Health,
    stop: &AtomicBool,
) -> Result<Option<(Assignment, i64)>, ControlError> {
    let consumer: BaseConsumer = config.create()?;
    loop {
        match latest(&consumer, topic, shard) {
            Ok((Some(a), next)) => return Ok(Some((a, next))),
            Ok((None, _)) => {
                health.set_not_ready("waiting for the operator's partition assignment");
            }
            Err(error) => {
                tracing::warn!(%error, "cannot read the partition assignment; retrying");
                health.set_not_ready(&error.to_string());
            }
        }
        for _ in 0..10 {
            if stop.load(Relaxed) {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Watches the control topic from offset `from` (past the assignment in force) and sets
/// `stop` once a newer assignment changes the partitions of `pod`.
pub fn watch(
    config: &ClientConfig,
    topic: &str,
    shard: String,
    pod: String,
    (current, from): (Assignment, i64),
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<()>, ControlError> {
    let consumer: BaseConsumer = config.create()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(from))?;
    consumer.assign(&tpl)?;
    let mine = current.partitions_of(&pod);
    let handle = std::thread::Builder::new()
        .name("gs-control".into())
        .spawn(move || {
            while !stop.load(Relaxed) {
                let Some(Ok(m)) = consumer.poll(Duration::from_millis(500)) else { continue };
                let Some(next) = parse(&m, &shard) else { continue };
                if next.epoch <= current.epoch {
                    continue;
                }
                if next.partitions_of(&pod) == mine {
                    tracing::info!(
                        epoch = next.epoch,
                        "new assignment leaves this pod's partitions as they are"
                    );
                    continue;
                }
                tracing::info!(
                    epoch = next.epoch,
                    partitions = ?next.partitions_of(&pod),
                    "this pod's partitions changed; draining to restart with them"
                );
                stop.store(true, Relaxed);
            }
        })
        .map_err(|e| {
            ControlError::Kafka(rdkafka::error::KafkaError::Subscription(e.to_string()))
        })?;
    Ok(handle)
}
