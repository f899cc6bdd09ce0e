//! The IO thread's side of Kafka: partitions restored from their latest snapshot,
//! assigned to a consumer at the snapshot's offset (no consumer-group rebalancing), and
//! polled.

use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use gameshard_engine::{Game, RecordMeta, World};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, Timestamp};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use super::ClientHealth;
use super::snapshots::{Reader, RestoreError};
use crate::clock;
use crate::metrics::Metrics;
use crate::source::{Polled, Record, Source};

/// How long restoring one partition may take before the data plane gives up.
pub const RESTORE_TIMEOUT: Duration = Duration::from_mins(1);

/// Why partitions could not be restored or assigned.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A client could not be created or assigned.
    #[error("Kafka consumer: {0}")]
    Kafka(#[from] KafkaError),
    /// A snapshot could not be read.
    #[error(transparent)]
    Restore(#[from] RestoreError),
}

/// A partition ready to be owned: its world and where its records resume.
pub struct Restored<W> {
    /// The partition.
    pub partition: u32,
    /// Offset of its next record (`None`: from the earliest one).
    pub next_offset: Option<i64>,
    /// Its world at that offset.
    pub world: W,
    /// Unix time (ms) of the snapshot it was restored from.
    pub snapshot_ms: Option<i64>,
}

/// Restores `partitions` from their latest snapshots on `snapshot_topic` (or starts them
/// empty from the earliest offset when there is no snapshot topic or no snapshot).
pub fn restore<G: Game>(
    game: &G,
    reader: &ClientConfig,
    snapshot_topic: Option<&str>,
    partitions: &[u32],
    metrics: &Metrics,
) -> Result<Vec<Restored<G::World>>, SourceError> {
    let consumer: Option<BaseConsumer> = snapshot_topic.map(|_| reader.create()).transpose()?;
    let mut restored = Vec::with_capacity(partitions.len());
    for &partition in partitions {
        let started = Instant::now();
        let mut world = game.world();
        let latest = match (&consumer, snapshot_topic) {
            (Some(consumer), Some(topic)) => {
                Reader::new(consumer, topic, RESTORE_TIMEOUT).latest(partition)?
            }
            _ => None,
        };
        let stats = metrics.partition(partition);
        let mut snapshot_ms = None;
        let next_offset = if let Some((manifest, bytes)) = latest {
            match world.restore(&bytes) {
                Ok(()) => {
                    tracing::info!(
                        partition,
                        next_offset = manifest.next_offset,
                        entities = world.entities(),
                        bytes = bytes.len(),
                        ms = started.elapsed().as_millis() as u64,
                        "partition restored from its snapshot"
                    );
                    if let Some(stats) = stats {
                        stats.snapshot.store(manifest.next_offset, Relaxed);
                        stats.snapshot_unix_ms.store(manifest.created_ms, Relaxed);
                    }
                    snapshot_ms = Some(manifest.created_ms);
                    Some(manifest.next_offset)
                }
                Err(error) => {
                    // The checksum matched, so the bytes are what was written: a world
                    // that cannot read its own snapshot is a bug to fix, not to skip.
                    tracing::error!(partition, %error, "snapshot does not restore; replaying from the earliest offset");
                    world = game.world();
                    None
                }
            }
        } else {
            tracing::info!(partition, "no snapshot; replaying from the earliest offset");
            None
        };
        if let Some(stats) = stats {
            if next_offset.is_none() {
                stats.snapshot_unix_ms.store(clock::unix_ms(), Relaxed);
            }
            // Owned from here on, as /status tells once the data plane is ready, even
            // before the state machine has taken the partition.
            stats.processed.store(next_offset.unwrap_or(0), Relaxed);
            stats.owned.store(true, Relaxed);
        }
        restored.push(Restored { partition, next_offset, world, snapshot_ms });
    }
    Ok(restored)
}

/// The consumer the IO thread polls.
pub struct KafkaSource<W> {
    consumer: BaseConsumer<ClientHealth>,
    /// Partitions to announce to the pipeline before their first record.
    pending: VecDeque<Restored<W>>,
    /// The current record's value, copied out of librdkafka's buffer.
    payload: Vec<u8>,
    epoch: Instant,
    errors_logged: Instant,
}

impl<W> KafkaSource<W> {
    /// A consumer of `topic` assigned to the `restored` partitions at their offsets.
    pub fn new(
        config: &ClientConfig,
        context: ClientHealth,
        topic: &str,
        restored: Vec<Restored<W>>,
        epoch: Instant,
        metrics: &Metrics,
    ) -> Result<Self, SourceError> {
        let consumer: BaseConsumer<ClientHealth> = config.create_with_context(context)?;
        let mut tpl = TopicPartitionList::new();
        for r in &restored {
            let offset = r.next_offset.map_or(Offset::Beginning, Offset::Offset);
            tpl.add_partition_offset(topic, r.partition as i32, offset)?;
        }
        consumer.assign(&tpl)?;
        // The group's committed offsets, for `/status` until this process commits its own.
        if let Ok(committed) = consumer.committed(Duration::from_secs(5)) {
            for e in committed.elements_for_topic(topic) {
                if let (Offset::Offset(offset), Some(stats)) =
                    (e.offset(), metrics.partition(e.partition() as u32))
                {
                    stats.committed.store(offset, Relaxed);
                }
            }
        }
        Ok(Self {
            consumer,
            pending: restored.into(),
            payload: Vec::with_capacity(64 * 1024),
            epoch,
            errors_logged: Instant::now().checked_sub(Duration::from_mins(1)).unwrap(),
        })
    }
}

impl<W: Send + 'static> Source<W> for KafkaSource<W> {
    fn poll(&mut self, wait: Duration) -> Polled<'_, W> {
        if let Some(r) = self.pending.pop_front() {
            return Polled::Assign {
                partition: r.partition,
                next_offset: r.next_offset.unwrap_or(0),
                world: r.world,
                snapshot_ms: r.snapshot_ms,
            };
        }
        match self.consumer.poll(wait) {
            None => Polled::Idle,
            Some(Ok(m)) => {
                let arrival_ns = self.epoch.elapsed().as_nanos() as u64;
                let timestamp_ms = match m.timestamp() {
                    Timestamp::CreateTime(ms) | Timestamp::LogAppendTime(ms) => ms,
                    Timestamp::NotAvailable => clock::unix_ms(),
                };
                self.payload.clear();
                self.payload.extend_from_slice(m.payload().unwrap_or_default());
                let meta = RecordMeta {
                    partition: m.partition() as u32,
                    offset: m.offset(),
                    timestamp_ms,
                    arrival_ns,
                };
                Polled::Record(Record { meta, payload: &self.payload })
            }
            Some(Err(error)) => {
                if self.errors_logged.elapsed() > Duration::from_secs(5) {
                    self.errors_logged = Instant::now();
                    tracing::warn!(%error, "consumer error; retrying");
                }
                Polled::Idle
            }
        }
    }
}
