//! Taking a partition: its latest snapshot read back and restored on the ownership
//! thread, off the pipeline's threads, and the input checked for records that retention
//! deleted before they were processed.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use gameshard_engine::{Game, World};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;

use super::snapshots::{Reader, RestoreError};
use crate::clock;
use crate::metrics::{Metrics, PartitionState};
use crate::source::Acquisition;

/// How long restoring one partition may take before the attempt is given up (and
/// retried).
pub const RESTORE_TIMEOUT: Duration = Duration::from_mins(1);

/// Why a partition could not be restored.
#[derive(Debug, thiserror::Error)]
pub enum TakeError {
    /// A client could not be created or a request failed.
    #[error("Kafka consumer: {0}")]
    Kafka(#[from] KafkaError),
    /// A snapshot could not be read.
    #[error(transparent)]
    Restore(#[from] RestoreError),
}

/// What taking a partition needs to know about it.
#[derive(Clone, Copy, Debug)]
pub struct Take {
    /// The partition.
    pub partition: u32,
    /// Snapshots of older epochs are passed over while a newer one is complete.
    pub min_epoch: u64,
    /// The epoch the partition is owned under from now on.
    pub epoch: u64,
    /// When it comes by a handoff: the former owner's release time.
    pub released_ms: Option<i64>,
}

/// Restores partitions of `game` from the snapshot topic.
pub struct Restorer<G> {
    game: G,
    consumer: BaseConsumer,
    snapshot_topic: Option<String>,
    input_topic: String,
    metrics: Arc<Metrics>,
}

impl<G: Game> Restorer<G> {
    /// A restorer reading with `config` (a consumer that commits nothing).
    pub fn new(
        game: G,
        config: &ClientConfig,
        snapshot_topic: Option<String>,
        input_topic: String,
        metrics: Arc<Metrics>,
    ) -> Result<Self, KafkaError> {
        Ok(Self { game, consumer: config.create()?, snapshot_topic, input_topic, metrics })
    }

    /// The partition's world restored from its latest snapshot (or empty without one),
    /// and where its records resume. Records that retention deleted between the
    /// snapshot and the earliest record left are counted and logged, never skipped
    /// silently: the partition resumes at the earliest record there is.
    pub fn take(&self, take: Take) -> Result<Acquisition<G::World>, TakeError> {
        let Take { partition, min_epoch, epoch, released_ms } = take;
        let started = Instant::now();
        let stats = self.metrics.partition(partition);
        if let Some(stats) = stats {
            stats.set_state(PartitionState::Restoring, epoch);
        }
        let mut world = self.game.world();
        let latest = match &self.snapshot_topic {
            Some(topic) => {
                Reader::new(&self.consumer, topic, RESTORE_TIMEOUT).latest(partition, min_epoch)?
            }
            None => None,
        };
        let mut snapshot = None;
        if let Some((manifest, bytes)) = latest {
            match world.restore(&bytes) {
                Ok(()) => {
                    tracing::info!(
                        partition,
                        next_offset = manifest.next_offset,
                        snapshot_epoch = manifest.epoch,
                        entities = world.entities(),
                        bytes = bytes.len(),
                        ms = started.elapsed().as_millis() as u64,
                        "partition restored from its snapshot"
                    );
                    snapshot = Some(manifest);
                }
                Err(error) => {
                    // The checksum matched, so the bytes are what was written: a world
                    // that cannot read its own snapshot is a bug to fix, not to skip.
                    tracing::error!(partition, %error, "snapshot does not restore; replaying from the earliest offset");
                    world = self.game.world();
                }
            }
        } else {
            tracing::info!(partition, "no snapshot; replaying from the earliest offset");
        }
        let (low, _) =
            self.consumer.fetch_watermarks(&self.input_topic, partition as i32, RESTORE_TIMEOUT)?;
        let wanted = snapshot.map_or(0, |m| m.next_offset);
        let next_offset = wanted.max(low);
        if next_offset > wanted {
            let missing = next_offset - wanted;
            tracing::error!(
                partition,
                from = wanted,
                to = next_offset,
                missing,
                "input records were deleted by retention before they were processed: the partition's state lacks their events"
            );
            if let Some(stats) = stats {
                stats.gap_records.fetch_add(missing as u64, Relaxed);
            }
        }
        if let Some(stats) = stats {
            match snapshot {
                Some(m) => {
                    stats.snapshot.store(m.next_offset, Relaxed);
                    stats.snapshot_unix_ms.store(m.created_ms, Relaxed);
                }
                None => stats.snapshot_unix_ms.store(clock::unix_ms(), Relaxed),
            }
            stats.processed.store(next_offset, Relaxed);
        }
        Ok(Acquisition {
            partition,
            next_offset,
            world,
            snapshot_ms: snapshot.map(|m| m.created_ms),
            epoch,
            released_ms,
            // A partition taken without a snapshot of its new epoch (its former owner
            // was gone) gets one at once, so that its restores no longer fall back to
            // an older epoch's.
            snapshot_now: self.snapshot_topic.is_some()
                && snapshot.is_none_or(|m| m.epoch < min_epoch),
        })
    }
}
