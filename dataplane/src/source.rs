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

/// A partition the data plane takes: its world and where its records resume.
#[derive(Debug)]
pub struct Acquisition<W> {
    /// The partition.
    pub partition: u32,
    /// Offset of its first record to come.
    pub next_offset: i64,
    /// Its state at that offset (restored from a snapshot, or empty).
    pub world: W,
    /// Unix time (ms) of the snapshot `world` was restored from, if any.
    pub snapshot_ms: Option<i64>,
    /// The assignment epoch under which the data plane owns it (0 when standalone);
    /// its snapshots carry it, so that a fenced former owner's never win.
    pub epoch: u64,
    /// Unix time (ms) the former owner released it, when it came by a handoff: the
    /// handoff's duration runs until its first record is processed.
    pub released_ms: Option<i64>,
    /// Snapshot it at once, at `next_offset`: it was taken without a snapshot of its
    /// epoch.
    pub snapshot_now: bool,
}

impl<W> Acquisition<W> {
    /// A partition taken at `next_offset` with `world`, outside any handoff.
    pub fn new(partition: u32, next_offset: i64, world: W) -> Self {
        Self {
            partition,
            next_offset,
            world,
            snapshot_ms: None,
            epoch: 0,
            released_ms: None,
            snapshot_now: false,
        }
    }
}

/// What a poll of a source produced.
#[derive(Debug)]
pub enum Polled<'a, W> {
    /// A record.
    Record(Record<'a>),
    /// The data plane takes a partition: its records follow.
    Assign(Acquisition<W>),
    /// The data plane gives `partition` up: no record of it follows. Unless `fenced`,
    /// the state machine snapshots it at the record boundary and the sink releases it
    /// under `epoch` once everything of it is on the brokers; a fenced partition (a
    /// newer owner already took it) is dropped without a snapshot.
    Revoke {
        /// The partition.
        partition: u32,
        /// The epoch of the move that takes it away.
        epoch: u64,
        /// Whether a newer owner already serves it.
        fenced: bool,
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
