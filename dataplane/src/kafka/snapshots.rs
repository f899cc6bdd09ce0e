//! Snapshots on the snapshot topic, and finding the latest one again.
//!
//! A partition's snapshot goes to the snapshot partition of the same number as a run of
//! chunk records (key `chunk`, at most 512 KiB each by default, headers naming
//! the snapshot and the chunk's index) followed, once it is safe to restore from, by a
//! manifest record (key `manifest`, JSON [`Manifest`]). It is safe once every chunk is
//! acknowledged and so is every update of every record before the snapshot's offset:
//! restoring from it never skips an update nobody received. Restore takes the latest
//! manifest whose chunks are all present and match its checksum, passing over those of
//! an epoch older than the partition's current owner's: a former owner that had not yet
//! learnt of the move (a fenced owner) never wins over the new one.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

/// Record key of a chunk.
pub const CHUNK_KEY: &[u8] = b"chunk";
/// Record key of a manifest.
pub const MANIFEST_KEY: &[u8] = b"manifest";
/// Header holding a chunk's snapshot id.
pub const ID_HEADER: &str = "gameshard-snapshot";
/// Header holding a chunk's index (from 0; older writers wrote `index/count`).
pub const CHUNK_HEADER: &str = "gameshard-chunk";

/// Records read back per step when looking for the latest manifest: the latest record
/// of a snapshot partition is usually the manifest to restore, so the first steps are
/// small.
const WINDOWS: [i64; 3] = [2, 16, 64];

/// Windows read back past a complete snapshot of an older epoch before that snapshot is
/// taken: the new owner has not written one of its own yet (it took the partition
/// without its former owner's release, and crashed before its first snapshot).
const WINDOWS_PAST_FALLBACK: usize = 4;

/// What a manifest says about its snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The snapshot's id, unique per partition.
    pub id: u64,
    /// The input partition.
    pub partition: u32,
    /// One past the last input record the snapshot reflects: replay starts here.
    pub next_offset: i64,
    /// Offset of its first chunk in the snapshot partition.
    pub first_offset: i64,
    /// Number of chunks.
    pub chunks: u32,
    /// Total size in bytes.
    pub bytes: u64,
    /// CRC-32 of the whole snapshot.
    pub crc32: u32,
    /// Unix time (ms) the snapshot was taken.
    pub created_ms: i64,
    /// The assignment epoch it was taken under (0 when standalone, and from writers
    /// older than handoffs).
    #[serde(default)]
    pub epoch: u64,
}

/// Why the latest snapshot could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The broker did not answer in time.
    #[error("reading snapshot partition {partition} of {topic:?} timed out")]
    Timeout {
        /// The snapshot topic.
        topic: String,
        /// The partition.
        partition: u32,
    },
    /// The client failed.
    #[error("reading snapshot partition {partition} of {topic:?}: {source}")]
    Kafka {
        /// The snapshot topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// librdkafka's error.
        source: rdkafka::error::KafkaError,
    },
}

/// Reads the snapshot topic for restores.
pub struct Reader<'a> {
    consumer: &'a BaseConsumer,
    topic: &'a str,
    timeout: Duration,
}

impl<'a> Reader<'a> {
    /// A reader of `topic` through `consumer`, giving up on a partition after `timeout`.
    pub fn new(consumer: &'a BaseConsumer, topic: &'a str, timeout: Duration) -> Self {
        Self { consumer, topic, timeout }
    }

    /// The latest complete snapshot of `partition` of epoch `min_epoch` or newer, with
    /// its bytes; else the latest complete one of any epoch; `None` if it has none.
    /// Manifests whose chunks are missing or damaged are skipped, with a warning.
    pub fn latest(
        &self,
        partition: u32,
        min_epoch: u64,
    ) -> Result<Option<(Manifest, Vec<u8>)>, RestoreError> {
        let deadline = Instant::now() + self.timeout;
        let p = partition as i32;
        let (low, high) = self
            .consumer
            .fetch_watermarks(self.topic, p, self.timeout)
            .map_err(|source| self.kafka_error(partition, source))?;
        let mut end = high;
        let mut windows = WINDOWS.iter().copied().chain(std::iter::repeat(WINDOWS[2]));
        let mut fallback = None;
        let mut passed_over = 0;
        while end > low {
            let start = (end - windows.next().unwrap_or(64)).max(low);
            let mut manifests = Vec::new();
            self.read(partition, start, end, deadline, |m| {
                if m.key() == Some(MANIFEST_KEY) {
                    match m.payload().map(serde_json::from_slice::<Manifest>) {
                        Some(Ok(manifest)) if manifest.partition == partition => {
                            manifests.push(manifest);
                        }
                        _ => tracing::warn!(
                            partition,
                            offset = m.offset(),
                            "skipping an unreadable snapshot manifest"
                        ),
                    }
                }
                true
            })?;
            for manifest in manifests.into_iter().rev() {
                if fallback.is_some() && manifest.epoch < min_epoch {
                    continue;
                }
                let Some(bytes) = self.load(&manifest, end, deadline)? else {
                    tracing::warn!(
                        partition,
                        id = manifest.id,
                        "skipping a snapshot whose chunks are missing or damaged"
                    );
                    continue;
                };
                if manifest.epoch >= min_epoch {
                    return Ok(Some((manifest, bytes)));
                }
                tracing::info!(
                    partition,
                    id = manifest.id,
                    epoch = manifest.epoch,
                    min_epoch,
                    "passing over a snapshot of a former owner's epoch"
                );
                fallback = Some((manifest, bytes));
            }
            if fallback.is_some() {
                passed_over += 1;
                if passed_over > WINDOWS_PAST_FALLBACK {
                    break;
                }
            }
            end = start;
        }
        Ok(fallback)
    }

    /// The bytes of `manifest`'s snapshot, if every chunk is there and the checksum
    /// matches. Chunks come before their manifest, so reading stops at `end`.
    fn load(
        &self,
        manifest: &Manifest,
        end: i64,
        deadline: Instant,
    ) -> Result<Option<Vec<u8>>, RestoreError> {
        let id = manifest.id.to_string();
        let mut parts: Vec<Option<Vec<u8>>> = vec![None; manifest.chunks as usize];
        let mut missing = parts.len();
        self.read(manifest.partition, manifest.first_offset, end, deadline, |m| {
            if m.key() != Some(CHUNK_KEY) || header(m, ID_HEADER) != Some(id.as_bytes()) {
                return true;
            }
            let index = header(m, CHUNK_HEADER)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| h.split('/').next())
                .and_then(|i| i.parse::<usize>().ok());
            if let Some(index) = index
                && index < parts.len()
                && parts[index].is_none()
            {
                parts[index] = Some(m.payload().unwrap_or_default().to_vec());
                missing -= 1;
            }
            missing > 0
        })?;
        if missing > 0 {
            return Ok(None);
        }
        let bytes: Vec<u8> = parts.into_iter().flatten().flatten().collect();
        let intact =
            bytes.len() as u64 == manifest.bytes && crc32fast::hash(&bytes) == manifest.crc32;
        Ok(intact.then_some(bytes))
    }

    /// Hands `f` every record of `partition` from `start` up to `end` (exclusive), until
    /// `f` returns `false`.
    fn read(
        &self,
        partition: u32,
        start: i64,
        end: i64,
        deadline: Instant,
        mut f: impl FnMut(&BorrowedMessage<'_>) -> bool,
    ) -> Result<(), RestoreError> {
        if start >= end {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(self.topic, partition as i32, Offset::Offset(start))
            .and_then(|()| self.consumer.assign(&tpl))
            .map_err(|source| self.kafka_error(partition, source))?;
        loop {
            if Instant::now() > deadline {
                return Err(RestoreError::Timeout { topic: self.topic.to_owned(), partition });
            }
            let Some(message) = self.consumer.poll(Duration::from_millis(100)) else { continue };
            let m = message.map_err(|source| self.kafka_error(partition, source))?;
            if m.offset() >= end || !f(&m) || m.offset() + 1 >= end {
                return Ok(());
            }
        }
    }

    fn kafka_error(&self, partition: u32, source: rdkafka::error::KafkaError) -> RestoreError {
        RestoreError::Kafka { topic: self.topic.to_owned(), partition, source }
    }
}

fn header<'m>(m: &'m BorrowedMessage<'_>, name: &str) -> Option<&'m [u8]> {
    m.headers()?.iter().find(|h| h.key == name).and_then(|h| h.value)
}
