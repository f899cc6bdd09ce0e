//! The three pipeline threads and what crosses between them.
//!
//! ```text
//!          EventBatch (EVENT_BATCHES in circulation)     UpdateBatch (UPDATE_BATCHES),
//!                                                        snapshot chunks (CHUNK_BUFFERS)
//!   ┌──────┐ ───────────────────────────────▶ ┌───────────┐ ────────────────────────▶ ┌───────────┐
//!   │  IO  │   parsed events, ownership,      │   state   │  updates, dead letters,   │ publisher │
//!   │ poll │   ticks                          │  machine  │  snapshot chunks,         │  encode   │
//!   │ parse│ ◀─────────────────────────────── │ (pinned)  │  releases                 │  produce  │
//!   └──────┘          emptied batches         └───────────┘ ◀──────────────────────── └───────────┘
//!                                                               emptied batches, buffers
//! ```
//!
//! Batches circulate: each side takes an empty one from its pool, fills it, sends it on
//! and gets it back emptied, so nothing is allocated once every batch has reached its
//! working size. An empty pool is the back-pressure: when the state machine falls behind,
//! the IO thread waits for an emptied batch instead of reading more, and nothing is
//! dropped.
//!
//! - [`config`]: how the pipeline batches, waits, pins and snapshots;
//! - [`placement`]: which CPUs the threads run on;
//! - [`batch`]: what crosses between the threads;
//! - `io`, `state`, `snapshot`, `publisher`: the IO loop, the state machine and its
//!   snapshot writer, and the publisher.

mod batch;
pub mod config;
mod io;
pub mod placement;
mod publisher;
mod snapshot;
mod state;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::thread::JoinHandle;

pub use batch::{
    Chunk, ChunkEnd, DeadLetter, Handoff, Purpose, Released, SnapshotStart, UpdateBatch,
};
pub use config::{Config, SnapshotPolicy, SnapshotSizes};
use gameshard_engine::{EventBatch, Game};
pub use placement::Placement;

use self::batch::{Out, Work};
use crate::metrics::Metrics;
use crate::queue::Queue;
use crate::sink::Sink;
use crate::source::Source;

/// Event batches in circulation. Two let the IO thread parse one batch while the state
/// machine applies the other; two more absorb a burst or a stall (a page fault, a slice
/// of a snapshot) on either side without stopping the other. More would only add
/// queueing delay: at the default batch size of 1024 events, four batches are about a
/// millisecond of state-machine work at full speed.
pub const EVENT_BATCHES: usize = 4;

/// Update batches in circulation, sized by the same reasoning between the state machine
/// and the publisher.
pub const UPDATE_BATCHES: usize = 4;

/// Snapshot chunk buffers in circulation. The publisher hands a chunk to the producer,
/// which copies it, and returns the buffer at once: two let the writer fill one while
/// the publisher sends the other, two more let it run ahead while the publisher works
/// through update batches. At the default 512 KiB a chunk, that is 2 MiB.
pub const CHUNK_BUFFERS: usize = 4;

/// Room in the IO to state-machine queue for messages that are not batches (ticks,
/// partition changes, the drain): a batch never waits behind them for long, and the IO
/// thread rarely waits to send one.
const CONTROL_SLOTS: usize = 4;

/// The queues between the threads.
struct Queues<E, W, U> {
    free_events: Queue<EventBatch<E>>,
    work: Queue<Work<E, W>>,
    free_updates: Queue<UpdateBatch<U>>,
    /// Room for every update batch and chunk in circulation, so that a send waits only
    /// when a pool is empty.
    out: Queue<Out<U>>,
    free_chunks: Queue<Vec<u8>>,
}

impl<E, W, U> Queues<E, W, U> {
    fn new(config: &Config) -> Self {
        let q = Self {
            free_events: Queue::new(EVENT_BATCHES),
            work: Queue::new(EVENT_BATCHES + CONTROL_SLOTS),
            free_updates: Queue::new(UPDATE_BATCHES),
            out: Queue::new(UPDATE_BATCHES + CHUNK_BUFFERS),
            free_chunks: Queue::new(CHUNK_BUFFERS),
        };
        let events = config.max_batch_events;
        for _ in 0..EVENT_BATCHES {
            let batch = EventBatch::with_capacity(
                events,
                events + events / 2,
                config.max_batch_bytes + 64 * 1024,
            );
            let _ = q.free_events.try_send(batch);
        }
        for _ in 0..UPDATE_BATCHES {
            // An event changes at most two entities; ids average well under 32 bytes.
            let _ = q.free_updates.try_send(UpdateBatch::with_capacity(2 * events, 64 * events));
        }
        // A chunk is sent once it holds `chunk_bytes`, after a slice that may have gone
        // past its budget by one entity.
        let sizes = config.snapshot_sizes;
        for _ in 0..CHUNK_BUFFERS {
            let _ = q
                .free_chunks
                .try_send(Vec::with_capacity(sizes.chunk_bytes + sizes.slice_bytes + 4096));
        }
        q
    }
}

/// Why the pipeline could not start or did not stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// A thread could not be spawned.
    #[error("cannot spawn the {thread} thread: {source}")]
    Spawn {
        /// Which thread.
        thread: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// A pipeline thread panicked.
    #[error("the {0} thread panicked")]
    Panicked(&'static str),
}

/// A running pipeline.
pub struct Running<S, K> {
    stop: Arc<AtomicBool>,
    io: JoinHandle<S>,
    state: JoinHandle<()>,
    publisher: JoinHandle<K>,
}

impl<S, K> Running<S, K> {
    /// Asks the IO thread to stop reading; the pipeline then drains what it holds.
    pub fn stop(&self) {
        self.stop.store(true, Relaxed);
    }

    /// A flag that stops the pipeline when set, for a signal handler thread.
    pub fn stopper(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.stop)
    }

    /// Whether every pipeline thread has ended.
    pub fn is_finished(&self) -> bool {
        self.io.is_finished() && self.state.is_finished() && self.publisher.is_finished()
    }

    /// Waits for the pipeline to drain and stop, and returns its source and sink.
    pub fn join(self) -> Result<(S, K), PipelineError> {
        let source = self.io.join().map_err(|_| PipelineError::Panicked("IO"))?;
        self.state.join().map_err(|_| PipelineError::Panicked("state-machine"))?;
        let sink = self.publisher.join().map_err(|_| PipelineError::Panicked("publisher"))?;
        Ok((source, sink))
    }
}

/// Starts the pipeline of `game`: `source` feeds the IO thread (records and the
/// partitions to own) and `sink` receives the publisher's output.
pub fn spawn<G, S, K>(
    game: &G,
    source: S,
    sink: K,
    config: Config,
    metrics: &Arc<Metrics>,
) -> Result<Running<S, K>, PipelineError>
where
    G: Game,
    S: Source<G::World>,
    K: Sink,
{
    let queues = Arc::new(Queues::new(&config));
    let stop = Arc::clone(&config.stop);

    let state = {
        let partitions = metrics.partitions.len();
        let (queues, metrics) = (Arc::clone(&queues), Arc::clone(metrics));
        let (core, spin, policy, sizes, ids) = (
            config.core,
            config.spin,
            config.snapshots,
            config.snapshot_sizes,
            config.snapshot_ids_from,
        );
        spawn_thread("gs-state", "state-machine", move || {
            if let Some(core) = core {
                placement::pin(&[core], "state-machine");
            }
            state::run::<G>(partitions, policy, sizes, ids, &queues, &metrics, spin);
        })?
    };

    let publisher = {
        let (queues, metrics) = (Arc::clone(&queues), Arc::clone(metrics));
        let encoder = game.encoder();
        let (cpus, epoch) = (config.publisher_cpus.clone(), config.epoch);
        spawn_thread("gs-publish", "publisher", move || {
            placement::pin(&cpus, "publisher");
            publisher::publish(encoder, sink, &queues, &metrics, epoch)
        })?
    };

    let io = {
        let (queues, metrics, stop) = (Arc::clone(&queues), Arc::clone(metrics), Arc::clone(&stop));
        let parser = game.parser();
        spawn_thread("gs-io", "IO", move || {
            placement::pin(&config.io_cpus, "IO");
            io::read(source, parser, &queues, &stop, &config, &metrics)
        })?
    };

    Ok(Running { stop, io, state, publisher })
}

fn spawn_thread<T: Send + 'static>(
    name: &str,
    thread: &'static str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<JoinHandle<T>, PipelineError> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(f)
        .map_err(|source| PipelineError::Spawn { thread, source })
}
