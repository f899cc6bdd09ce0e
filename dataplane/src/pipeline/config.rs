//! How the pipeline batches, waits, pins and snapshots.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

/// When the state machine snapshots a partition: once `every_records` records or `every`
/// have passed since its last snapshot (whichever comes first, and only if it has read a
/// record since), once `refresh` has passed even if it has not, and, with `on_drain`,
/// when the pipeline drains.
#[derive(Clone, Copy, Debug)]
pub struct SnapshotPolicy {
    /// Records processed between snapshots.
    pub every_records: u64,
    /// Time between snapshots of a partition that moved.
    pub every: Duration,
    /// Longest time between snapshots of any owned partition, moved or not, counted from
    /// the snapshot it was restored from: a partition idle for longer than the snapshot
    /// topic's retention still has a snapshot there.
    pub refresh: Duration,
    /// Snapshot every partition that moved when the pipeline drains.
    pub on_drain: bool,
}

impl SnapshotPolicy {
    /// Never snapshots (a partition given up is still snapshotted: that is a handoff).
    pub const NEVER: Self = Self {
        every_records: u64::MAX,
        every: Duration::MAX,
        refresh: Duration::MAX,
        on_drain: false,
    };
}

impl Default for SnapshotPolicy {
    fn default() -> Self {
        Self {
            every_records: 100_000,
            every: Duration::from_secs(30),
            refresh: Duration::from_hours(6),
            on_drain: true,
        }
    }
}

/// How a snapshot is cut into records and slices.
#[derive(Clone, Copy, Debug)]
pub struct SnapshotSizes {
    /// Largest chunk record: well under the brokers' and clients' default 1 MB message
    /// limit.
    pub chunk_bytes: usize,
    /// Bytes written between two yields to the batches: about 50 µs of serializing, so
    /// that a snapshot of any size adds no more than that to a batch's latency.
    pub slice_bytes: usize,
}

impl Default for SnapshotSizes {
    fn default() -> Self {
        Self { chunk_bytes: 512 * 1024, slice_bytes: 32 * 1024 }
    }
}

/// How the pipeline batches, waits, pins and snapshots.
#[derive(Clone, Debug)]
pub struct Config {
    /// A batch is sent once it holds this many events (or records).
    pub max_batch_events: usize,
    /// A batch is sent once its arena holds this many bytes.
    pub max_batch_bytes: usize,
    /// How long the IO thread waits for a record when it has nothing to send. Ownership
    /// changes wait at most this long too, so it is short.
    pub idle_wait: Duration,
    /// How long the state machine keeps polling for the next batch, yielding the CPU
    /// between polls, before it parks. Waking a parked thread takes tens of
    /// microseconds; polling through the gap between batches removes that from the
    /// latency of every batch that follows within it, at the price of CPU time on a core
    /// that is the state machine's anyway. It does not poll while a snapshot is being
    /// written: the snapshot's slices use those gaps.
    pub spin: Duration,
    /// The core the state-machine thread is pinned to; `None` leaves it unpinned.
    pub core: Option<usize>,
    /// The CPUs for the IO thread; empty leaves it unpinned.
    pub io_cpus: Vec<usize>,
    /// The CPUs for the publisher thread; empty leaves it unpinned.
    pub publisher_cpus: Vec<usize>,
    /// The clock arrival times count from.
    pub epoch: Instant,
    /// When partitions are snapshotted.
    pub snapshots: SnapshotPolicy,
    /// How snapshots are cut.
    pub snapshot_sizes: SnapshotSizes,
    /// The first snapshot id: ids grow from it, and must not repeat those of an earlier
    /// process (the data plane starts them at its start time in microseconds).
    pub snapshot_ids_from: u64,
    /// Set to stop reading and drain (from a signal handler, or a sink that failed).
    pub stop: Arc<AtomicBool>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_batch_events: 1024,
            max_batch_bytes: 256 * 1024,
            idle_wait: Duration::from_millis(10),
            spin: Duration::from_micros(200),
            core: None,
            io_cpus: Vec::new(),
            publisher_cpus: Vec::new(),
            epoch: Instant::now(),
            snapshots: SnapshotPolicy::default(),
            snapshot_sizes: SnapshotSizes::default(),
            snapshot_ids_from: 1,
            stop: Arc::new(AtomicBool::new(false)),
        }
    }
}
