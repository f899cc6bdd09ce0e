//! Where the publisher thread hands encoded output: a Kafka producer in production,
//! counters in benchmarks and tests.

use gameshard_engine::RecordMeta;

use crate::pipeline::{Chunk, Released, SnapshotStart};

/// How far a batch took one input partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// The input partition.
    pub partition: u32,
    /// One past the last record of the batch from that partition.
    pub next_offset: i64,
}

/// The receiving end of the publisher thread.
///
/// Calls for one batch come in this order: its updates, its dead letters, the snapshots
/// it begins, the partitions it releases, then [`Sink::end_batch`]. The chunks of a
/// snapshot come through [`Sink::snapshot_chunk`] after the batch that began it, in
/// order, interleaved with later batches. Buffers passed in are reused right after the
/// call returns.
pub trait Sink: Send + 'static {
    /// An update for the output partition of the same number as `src.partition`.
    fn update(&mut self, src: &RecordMeta, key: &[u8], value: &[u8]);

    /// A malformed unit for the dead-letter topic.
    fn dead_letter(&mut self, src: &RecordMeta, reason: &'static str, payload: &[u8]);

    /// A snapshot of a partition at the batch's record boundary begins: its state after
    /// every record before `start.next_offset`. Its chunks follow.
    fn snapshot_started(&mut self, start: &SnapshotStart) {
        let _ = start;
    }

    /// The next chunk of a snapshot begun earlier.
    fn snapshot_chunk(&mut self, chunk: &Chunk) {
        let _ = chunk;
    }

    /// The state machine gave a partition up; everything of it was handed over before.
    fn released(&mut self, released: &Released) {
        let _ = released;
    }

    /// The batch is fully handed over; `progress` says how far it took each partition.
    /// `now_ns` is the publisher's monotonic clock (same epoch as arrival times).
    fn end_batch(&mut self, progress: &[Progress], now_ns: u64);

    /// Whether the sink waits for acknowledgements it must act on soon (input offsets
    /// to commit, snapshot manifests, releases): the publisher then calls
    /// [`Sink::idle`] every few milliseconds while nothing else comes.
    fn busy(&self) -> bool {
        false
    }

    /// Nothing came for a while: act on what was acknowledged since.
    fn idle(&mut self) {}

    /// The pipeline is stopping: hand over everything still buffered.
    fn finish(&mut self) {}
}
