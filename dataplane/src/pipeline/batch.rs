//! What crosses between the pipeline threads.

use gameshard_engine::{EventBatch, RecordMeta, Span, Updates};

use crate::sink::Progress;
use crate::source::Acquisition;

/// What the IO thread sends the state machine.
pub(super) enum Work<E, W> {
    Batch(EventBatch<E>),
    Assign(Acquisition<W>),
    Revoke {
        partition: u32,
        epoch: u64,
        fenced: bool,
    },
    /// Unix time in milliseconds.
    Tick(i64),
    /// Nothing follows: snapshot what the policy asks, hand everything over, stop.
    Drain,
}

/// A malformed unit on its way to the dead-letter topic.
#[derive(Clone, Copy, Debug)]
pub struct DeadLetter {
    /// The record it came from.
    pub src: RecordMeta,
    /// Short reason, for the `gameshard-error` header.
    pub reason: &'static str,
    /// The bytes, in [`UpdateBatch::dead_letter_bytes`].
    pub payload: Span,
}

/// Why a snapshot is taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// The snapshot policy asked for it (records, time, refresh, drain).
    Periodic,
    /// The partition is being handed to another pod.
    Release,
}

/// A snapshot begun at a batch's record boundary; its chunks follow as [`Chunk`]s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotStart {
    /// Unique among this process's snapshots, and above every earlier process's.
    pub id: u64,
    /// The partition.
    pub partition: u32,
    /// One past the last record the snapshot reflects.
    pub next_offset: i64,
    /// The epoch it is taken under: the owner's, or the move's for a release.
    pub epoch: u64,
    /// Why it is taken.
    pub purpose: Purpose,
}

/// Where a chunk stands in its snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkEnd {
    /// More chunks follow.
    More,
    /// The snapshot's last chunk.
    Last,
    /// The snapshot was abandoned (its partition was given up meanwhile); no chunk
    /// follows and `bytes` is empty.
    Abandoned,
}

/// Part of a snapshot's bytes.
#[derive(Debug)]
pub struct Chunk {
    /// The snapshot's id.
    pub id: u64,
    /// The partition.
    pub partition: u32,
    /// Its place among the snapshot's chunks, from 0.
    pub index: u32,
    /// Whether more follow.
    pub end: ChunkEnd,
    /// The bytes; the buffer returns to its pool once the sink is done with it.
    pub bytes: Vec<u8>,
}

/// A partition the state machine gave up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Released {
    /// The partition.
    pub partition: u32,
    /// The epoch of the move that took it away.
    pub epoch: u64,
    /// One past the last record applied.
    pub next_offset: i64,
    /// The snapshot taken at `next_offset` (its chunks follow), unless `fenced`.
    pub snapshot: Option<u64>,
    /// A newer owner already served it: dropped without a snapshot.
    pub fenced: bool,
}

/// A partition that came by a handoff processed its first record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handoff {
    /// The partition.
    pub partition: u32,
    /// Unix time (ms) the former owner released it.
    pub released_ms: i64,
}

/// What the state machine hands the publisher for one event batch.
pub struct UpdateBatch<U> {
    /// Coalesced updates.
    pub updates: Updates<U>,
    /// Malformed units.
    pub dead_letters: Vec<DeadLetter>,
    /// Arena of the dead letters' payloads.
    pub dead_letter_bytes: Vec<u8>,
    /// How far the batch took each partition it touched.
    pub progress: Vec<Progress>,
    /// Snapshots begun after the batch.
    pub snapshots: Vec<SnapshotStart>,
    /// Partitions given up after the batch.
    pub released: Vec<Released>,
    /// Partitions that came by a handoff and processed their first record in the batch.
    pub handoffs: Vec<Handoff>,
}

impl<U> UpdateBatch<U> {
    pub(super) fn with_capacity(updates: usize, bytes: usize) -> Self {
        Self {
            updates: Updates::with_capacity(updates, bytes),
            dead_letters: Vec::with_capacity(64),
            dead_letter_bytes: Vec::with_capacity(4096),
            progress: Vec::with_capacity(64),
            snapshots: Vec::with_capacity(8),
            released: Vec::with_capacity(8),
            handoffs: Vec::with_capacity(8),
        }
    }

    pub(super) fn clear(&mut self) {
        self.updates.clear();
        self.dead_letters.clear();
        self.dead_letter_bytes.clear();
        self.progress.clear();
        self.snapshots.clear();
        self.released.clear();
        self.handoffs.clear();
    }

    pub(super) fn is_empty(&self) -> bool {
        self.updates.is_empty()
            && self.dead_letters.is_empty()
            && self.progress.is_empty()
            && self.snapshots.is_empty()
            && self.released.is_empty()
            && self.handoffs.is_empty()
    }
}

/// What the state machine sends the publisher, in the order it happened.
pub(super) enum Out<U> {
    Batch(UpdateBatch<U>),
    Chunk(Chunk),
}
