//! Where the IO thread reads records from: Kafka in production, memory in benchmarks
//! and tests.

use std::time::Duration;

use gameshard_engine::RecordMeta;

/// One input record, borrowed from its source until the next poll.
#[derive(Clone, Copy, Debug)]
pub struct Record<'a> {
    /// Where it came from and when it arrived.
    pub meta: RecordMeta,
    /// Its value.
    pub payload: &'a [u8],
}

/// What a poll of a source produced.
#[derive(Debug)]
pub enum Polled<'a, W> {
    /// A record.
    Record(Record<'a>),
    /// The data plane takes `partition`: its records from `next_offset` on follow, to be
    /// applied to `world` (restored from the partition's latest snapshot, or empty).
    Assign {
        /// The partition.
        partition: u32,
        /// Offset of its first record to come.
        next_offset: i64,
        /// Its state at that offset.
        world: W,
        /// Unix time (ms) of the snapshot `world` was restored from, if any.
        snapshot_ms: Option<i64>,
    },
    /// The data plane gives `partition` up: no record of it follows. The state machine
    /// snapshots it one last time and drops it.
    Revoke {
        /// The partition.
        partition: u32,
    },
    /// Nothing within the wait.
    Idle,
    /// The source is exhausted; the pipeline drains and stops.
    End,
}

/// A stream of input records and ownership changes, polled by the IO thread; `W` is the
/// world type of the game the pipeline runs.
pub trait Source<W>: Send + 'static {
    /// The next record or ownership change, waiting up to `wait` for one.
    fn poll(&mut self, wait: Duration) -> Polled<'_, W>;
}
