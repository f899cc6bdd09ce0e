//! Where the publisher thread hands encoded output: a Kafka producer in production,
//! counters in benchmarks and tests.

use gameshard_engine::RecordMeta;

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
/// Calls for one batch come in this order: its updates, its dead letters, its snapshots,
/// its released partitions, then [`Sink::end_batch`]. Buffers passed in are reused right
/// after the call returns.
pub trait Sink: Send + 'static {
    /// An update for the output partition of the same number as `src.partition`.
    fn update(&mut self, src: &RecordMeta, key: &[u8], value: &[u8]);

    /// A malformed unit for the dead-letter topic.
    fn dead_letter(&mut self, src: &RecordMeta, reason: &'static str, payload: &[u8]);

    /// The state of `partition` after every record before `next_offset`.
    fn snapshot(&mut self, partition: u32, next_offset: i64, state: &[u8]) {
        let _ = (partition, next_offset, state);
    }

    /// The state machine gave `partition` up; everything of it was handed over before.
    fn released(&mut self, partition: u32) {
        let _ = partition;
    }

    /// The batch is fully handed over; `progress` says how far it took each partition.
    /// `now_ns` is the publisher's monotonic clock (same epoch as arrival times).
    fn end_batch(&mut self, progress: &[Progress], now_ns: u64);

    /// The pipeline is stopping: hand over everything still buffered.
    fn finish(&mut self) {}
}
