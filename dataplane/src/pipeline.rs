//! The three pipeline threads and what crosses between them.
//!
//! ```text
//!          EventBatch (EVENT_BATCHES in circulation)     UpdateBatch (UPDATE_BATCHES)
//!   ┌──────┐ ───────────────────────────────▶ ┌───────────┐ ────────────────────────▶ ┌───────────┐
//!   │  IO  │   parsed events, ownership,      │   state   │  updates, dead letters,   │ publisher │
//!   │ poll │   ticks                          │  machine  │  snapshots                │  encode   │
//!   │ parse│ ◀─────────────────────────────── │ (pinned)  │ ◀──────────────────────── │  produce  │
//!   └──────┘          emptied batches         └───────────┘      emptied batches      └───────────┘
//! ```
//!
//! Batches circulate: each side takes an empty one from its pool, fills it, sends it on
//! and gets it back emptied, so nothing is allocated once every batch has reached its
//! working size. An empty pool is the back-pressure: when the state machine falls behind,
//! the IO thread waits for an emptied batch instead of reading more, and nothing is
//! dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gameshard_engine::{
    Encoder, EventBatch, Game, Outcome, Parser, RecordMeta, Span, Updates, World,
};
use smol::future::block_on;

use crate::affinity;
use crate::clock;
use crate::metrics::{LocalHistogram, Metrics};
use crate::queue::Queue;
use crate::sink::{Progress, Sink};
use crate::source::{Polled, Source};

/// Event batches in circulation. Two let the IO thread parse one batch while the state
/// machine applies the other; two more absorb a burst or a stall (a snapshot, a page
/// fault) on either side without stopping the other. More would only add queueing
/// delay: at the default batch size of 1024 events, four batches are about a millisecond
/// of state-machine work at full speed.
pub const EVENT_BATCHES: usize = 4;

/// Update batches in circulation, sized by the same reasoning between the state machine
/// and the publisher.
pub const UPDATE_BATCHES: usize = 4;

/// Room in the IO to state-machine queue for messages that are not batches (ticks,
/// partition changes, the drain): a batch never waits behind them for long, and the IO
/// thread rarely waits to send one.
const CONTROL_SLOTS: usize = 4;

/// How often the IO thread tells the state machine the time. Ticks also reach the
/// publisher, even when no record flows, so that its sink can act on acknowledgements
/// (commit offsets, declare snapshots) while the input is idle.
const TICK: Duration = Duration::from_millis(250);

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
    /// Never snapshots.
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

/// How the pipeline batches, waits, pins and snapshots.
#[derive(Clone, Debug)]
pub struct Config {
    /// A batch is sent once it holds this many events (or records).
    pub max_batch_events: usize,
    /// A batch is sent once its arena holds this many bytes.
    pub max_batch_bytes: usize,
    /// How long the IO thread waits for a record when it has nothing to send.
    pub idle_wait: Duration,
    /// How long the state machine keeps polling for the next batch, yielding the CPU
    /// between polls, before it parks. Waking a parked thread takes tens of
    /// microseconds; polling through the gap between batches removes that from the
    /// latency of every batch that follows within it, at the price of CPU time on a core
    /// that is the state machine's anyway.
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
    /// Set to stop reading and drain (from a signal handler, or a sink that failed).
    pub stop: Arc<AtomicBool>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_batch_events: 1024,
            max_batch_bytes: 256 * 1024,
            idle_wait: Duration::from_millis(100),
            spin: Duration::from_micros(200),
            core: None,
            io_cpus: Vec::new(),
            publisher_cpus: Vec::new(),
            epoch: Instant::now(),
            snapshots: SnapshotPolicy::default(),
            stop: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl Config {
    /// Pins the state machine to `core` and places the other threads on the allowed
    /// CPUs; see [`Placement`].
    pub fn pinned(mut self, core: usize) -> Result<Self, affinity::AffinityError> {
        let placement = Placement::new(&affinity::allowed_cpus()?, core);
        self.core = Some(core);
        self.io_cpus = placement.io;
        self.publisher_cpus = placement.publisher;
        Ok(self)
    }
}

/// Where the IO and publisher threads run, given the allowed CPUs and the state
/// machine's core.
///
/// The IO thread never shares the state machine's core when another is allowed: reading
/// and parsing is the bursty stage, and it overlaps with the state machine's work on the
/// previous batch. The publisher works on a batch right after the state machine is done
/// with it, so the two alternate rather than compete: with only two CPUs the publisher
/// joins the state machine's core and the IO thread has the other to itself; with three
/// or more the state machine has its core alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// CPUs for the IO thread.
    pub io: Vec<usize>,
    /// CPUs for the publisher thread.
    pub publisher: Vec<usize>,
}

impl Placement {
    /// The placement for `allowed` CPUs with the state machine on `core`.
    pub fn new(allowed: &[usize], core: usize) -> Self {
        let rest = affinity::others(allowed, core);
        let publisher = if allowed.len() == 2 { vec![core] } else { rest.clone() };
        Self { io: rest, publisher }
    }
}

/// What the IO thread sends the state machine.
enum Work<E, W> {
    Batch(EventBatch<E>),
    Assign {
        partition: u32,
        next_offset: i64,
        world: W,
        snapshot_ms: Option<i64>,
    },
    Revoke {
        partition: u32,
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

/// A partition's state after every record before `next_offset`.
#[derive(Debug)]
pub struct Snapshot {
    /// The partition.
    pub partition: u32,
    /// One past the last record the state reflects.
    pub next_offset: i64,
    /// The world's snapshot bytes.
    pub bytes: Vec<u8>,
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
    /// Snapshots taken after the batch.
    pub snapshots: Vec<Snapshot>,
    /// Partitions given up after the batch (after their last snapshot).
    pub released: Vec<u32>,
}

impl<U> UpdateBatch<U> {
    fn with_capacity(updates: usize, bytes: usize) -> Self {
        Self {
            updates: Updates::with_capacity(updates, bytes),
            dead_letters: Vec::with_capacity(64),
            dead_letter_bytes: Vec::with_capacity(4096),
            progress: Vec::with_capacity(64),
            snapshots: Vec::new(),
            released: Vec::new(),
        }
    }

    fn clear(&mut self) {
        self.updates.clear();
        self.dead_letters.clear();
        self.dead_letter_bytes.clear();
        self.progress.clear();
        self.snapshots.clear();
        self.released.clear();
    }

    fn is_empty(&self) -> bool {
        self.updates.is_empty()
            && self.dead_letters.is_empty()
            && self.progress.is_empty()
            && self.snapshots.is_empty()
            && self.released.is_empty()
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

/// The queues between the threads.
struct Queues<E, W, U> {
    free_events: Queue<EventBatch<E>>,
    work: Queue<Work<E, W>>,
    free_updates: Queue<UpdateBatch<U>>,
    updates: Queue<UpdateBatch<U>>,
}

impl<E, W, U> Queues<E, W, U> {
    fn new(config: &Config) -> Self {
        let q = Self {
            free_events: Queue::new(EVENT_BATCHES),
            work: Queue::new(EVENT_BATCHES + CONTROL_SLOTS),
            free_updates: Queue::new(UPDATE_BATCHES),
            updates: Queue::new(UPDATE_BATCHES),
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
        q
    }
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
        let machine = StateMachine::<G>::new(metrics.partitions.len(), config.snapshots);
        let (queues, metrics, core, spin) =
            (Arc::clone(&queues), Arc::clone(metrics), config.core, config.spin);
        spawn_thread("gs-state", "state-machine", move || {
            if let Some(core) = core {
                pin(&[core], "state-machine");
            }
            let executor = smol::LocalExecutor::new();
            smol::block_on(executor.run(machine.run(&queues, &metrics, spin)));
        })?
    };

    let publisher = {
        let (queues, metrics) = (Arc::clone(&queues), Arc::clone(metrics));
        let encoder = game.encoder();
        let (cpus, epoch) = (config.publisher_cpus.clone(), config.epoch);
        spawn_thread("gs-publish", "publisher", move || {
            pin(&cpus, "publisher");
            publish(encoder, sink, &queues, &metrics, epoch)
        })?
    };

    let io = {
        let (queues, metrics, stop) = (Arc::clone(&queues), Arc::clone(metrics), Arc::clone(&stop));
        let parser = game.parser();
        spawn_thread("gs-io", "IO", move || {
            pin(&config.io_cpus, "IO");
            read(source, parser, &queues, &stop, &config, &metrics)
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

fn pin(cpus: &[usize], thread: &'static str) {
    if cpus.is_empty() {
        return;
    }
    if let Err(error) = affinity::pin_current_thread(cpus) {
        tracing::warn!(thread, ?cpus, %error, "cannot pin thread; it runs unpinned");
    }
}

/// The IO thread: polls the source, parses records into batches, and sends a batch when
/// it is full or when no record is waiting.
fn read<P: Parser, S: Source<W>, W, U>(
    mut source: S,
    mut parser: P,
    queues: &Queues<P::Event, W, U>,
    stop: &AtomicBool,
    config: &Config,
    metrics: &Metrics,
) -> S {
    let send = |work: Work<P::Event, W>| {
        if let Work::Batch(batch) = &work {
            metrics.records.fetch_add(batch.records.len() as u64, Relaxed);
        }
        let sent = block_on(queues.work.send(work)).is_ok();
        metrics.queue_depth.store(queues.work.len() as u64, Relaxed);
        sent
    };
    let Some(mut batch) = block_on(queues.free_events.recv()) else {
        return source;
    };
    let mut last_tick = Instant::now();
    while !stop.load(Relaxed) {
        let wait = if batch.is_empty() { config.idle_wait } else { Duration::ZERO };
        let mut control = None;
        let full = match source.poll(wait) {
            Polled::Record(record) => {
                let index = batch.push_record(record.meta);
                parser.parse(record.payload, index, &mut batch);
                batch.events.len() >= config.max_batch_events
                    || batch.records.len() >= config.max_batch_events
                    || batch.bytes.len() >= config.max_batch_bytes
            }
            Polled::Assign { partition, next_offset, world, snapshot_ms } => {
                control = Some(Work::Assign { partition, next_offset, world, snapshot_ms });
                !batch.is_empty()
            }
            Polled::Revoke { partition } => {
                control = Some(Work::Revoke { partition });
                !batch.is_empty()
            }
            Polled::Idle => !batch.is_empty(),
            Polled::End => break,
        };
        if full {
            // Records read before a partition change are applied before it.
            if !send(Work::Batch(batch)) {
                return source;
            }
            let Some(next) = block_on(queues.free_events.recv()) else {
                return source;
            };
            batch = next;
        }
        if let Some(control) = control
            && !send(control)
        {
            return source;
        }
        if last_tick.elapsed() >= TICK {
            last_tick = Instant::now();
            if !send(Work::Tick(clock::unix_ms())) {
                return source;
            }
        }
    }
    if !batch.is_empty() {
        send(Work::Batch(batch));
    }
    send(Work::Drain);
    queues.work.close();
    source
}

struct Slot<W> {
    world: W,
    /// One past the last record applied.
    next_offset: i64,
    /// `next_offset` at the last snapshot (or at assignment).
    snapshot_offset: i64,
    /// Unix time (ms) of the last snapshot (or of assignment); 0 until the first tick.
    snapshot_ms: i64,
    touched: bool,
}

/// The state-machine thread's own state.
struct StateMachine<G: Game> {
    slots: Vec<Option<Slot<G::World>>>,
    policy: SnapshotPolicy,
    /// Latest time the IO thread told.
    now_ms: i64,
    /// Partitions touched by the current batch.
    touched: Vec<u32>,
    /// Rejections of the current batch, by reason.
    rejected: Vec<u64>,
    unowned_warned: bool,
}

impl<G: Game> StateMachine<G> {
    fn new(partitions: usize, policy: SnapshotPolicy) -> Self {
        Self {
            slots: (0..partitions).map(|_| None).collect(),
            policy,
            now_ms: 0,
            touched: Vec::with_capacity(partitions),
            rejected: vec![0; <G::World as World>::REJECT_REASONS.len()],
            unowned_warned: false,
        }
    }

    async fn run(
        mut self,
        queues: &Queues<G::Event, G::World, G::Update>,
        metrics: &Metrics,
        spin: Duration,
    ) {
        'work: while let Some(work) = queues.work.recv_spinning(spin).await {
            metrics.queue_depth.store(queues.work.len() as u64, Relaxed);
            let Some(mut out) = queues.free_updates.recv().await else { break };
            let drain = matches!(work, Work::Drain);
            let tick = matches!(work, Work::Tick(_));
            match work {
                Work::Batch(mut batch) => {
                    self.apply(&batch, &mut out, metrics);
                    self.snapshot_due(&mut out, |slot, policy, _| {
                        let moved = slot.next_offset - slot.snapshot_offset;
                        moved > 0 && u64::try_from(moved).is_ok_and(|m| m >= policy.every_records)
                    });
                    batch.clear();
                    // The pool has room for every batch in circulation: this never fails.
                    let _ = queues.free_events.try_send(batch);
                }
                Work::Assign { partition, next_offset, world, snapshot_ms } => {
                    self.assign(partition, next_offset, world, snapshot_ms, metrics);
                    // Every update before a restored snapshot's offset is durable: the
                    // sink may commit it even before the next record arrives.
                    if next_offset > 0 {
                        out.progress.push(Progress { partition, next_offset });
                    }
                }
                Work::Revoke { partition } => self.revoke(partition, &mut out, metrics),
                Work::Tick(now_ms) => {
                    self.now_ms = now_ms;
                    self.snapshot_due(&mut out, |slot, policy, now| {
                        let age = u128::try_from(now - slot.snapshot_ms).unwrap_or(0);
                        let moved = slot.next_offset != slot.snapshot_offset;
                        (moved && age >= policy.every.as_millis())
                            || age >= policy.refresh.as_millis()
                    });
                }
                Work::Drain => {
                    if self.policy.on_drain {
                        self.snapshot_due(&mut out, |slot, _, _| {
                            slot.next_offset != slot.snapshot_offset
                        });
                    }
                }
            }
            if out.is_empty() && !tick {
                let _ = queues.free_updates.try_send(out);
            } else if queues.updates.send(out).await.is_err() {
                break 'work;
            }
            if drain {
                break;
            }
        }
        queues.updates.close();
        queues.free_events.close();
    }

    fn assign(
        &mut self,
        partition: u32,
        next_offset: i64,
        world: G::World,
        snapshot_ms: Option<i64>,
        metrics: &Metrics,
    ) {
        let Some(slot) = self.slots.get_mut(partition as usize) else {
            tracing::error!(partition, "cannot own a partition the input topic does not have");
            return;
        };
        *slot = Some(Slot {
            world,
            next_offset,
            snapshot_offset: next_offset,
            snapshot_ms: snapshot_ms.unwrap_or(self.now_ms),
            touched: false,
        });
        let stats = &metrics.partitions[partition as usize];
        stats.processed.store(next_offset, Relaxed);
        stats.owned.store(true, Relaxed);
        tracing::info!(partition, next_offset, "partition owned");
    }

    fn revoke(&mut self, partition: u32, out: &mut UpdateBatch<G::Update>, metrics: &Metrics) {
        let Some(Some(slot)) = self.slots.get_mut(partition as usize).map(Option::take) else {
            return;
        };
        let mut bytes = Vec::new();
        slot.world.snapshot(&mut bytes);
        out.snapshots.push(Snapshot { partition, next_offset: slot.next_offset, bytes });
        out.released.push(partition);
        metrics.partitions[partition as usize].owned.store(false, Relaxed);
        tracing::info!(partition, next_offset = slot.next_offset, "partition released");
    }

    /// Snapshots every owned partition for which `due` says so.
    fn snapshot_due(
        &mut self,
        out: &mut UpdateBatch<G::Update>,
        due: impl Fn(&Slot<G::World>, &SnapshotPolicy, i64) -> bool,
    ) {
        for (partition, slot) in self.slots.iter_mut().enumerate() {
            let Some(slot) = slot else { continue };
            if slot.snapshot_ms == 0 {
                slot.snapshot_ms = self.now_ms;
            }
            if !due(slot, &self.policy, self.now_ms) {
                continue;
            }
            let mut bytes = Vec::new();
            slot.world.snapshot(&mut bytes);
            out.snapshots.push(Snapshot {
                partition: partition as u32,
                next_offset: slot.next_offset,
                bytes,
            });
            slot.snapshot_offset = slot.next_offset;
            slot.snapshot_ms = self.now_ms;
        }
    }

    /// Applies one batch, filling `out` with its coalesced updates, dead letters and
    /// progress, and adds its counts to `metrics`.
    fn apply(
        &mut self,
        batch: &EventBatch<G::Event>,
        out: &mut UpdateBatch<G::Update>,
        metrics: &Metrics,
    ) {
        for record in &batch.records {
            match self.slots.get_mut(record.partition as usize) {
                Some(Some(slot)) => {
                    slot.next_offset = record.offset + 1;
                    if !slot.touched {
                        slot.touched = true;
                        self.touched.push(record.partition);
                    }
                }
                _ => self.warn_unowned(record.partition),
            }
        }
        let mut applied = 0;
        for parsed in &batch.events {
            let src = &batch.records[parsed.record as usize];
            let Some(Some(slot)) = self.slots.get_mut(src.partition as usize) else {
                continue;
            };
            match slot.world.apply(&parsed.event, &batch.bytes, src) {
                Outcome::Applied => applied += 1,
                Outcome::Rejected(reason) => {
                    if let Some(n) = self.rejected.get_mut(usize::from(reason)) {
                        *n += 1;
                    }
                }
            }
        }
        let mut malformed = 0;
        for m in &batch.malformed {
            malformed += u64::from(m.events);
            out.dead_letters.push(DeadLetter {
                src: batch.records[m.record as usize],
                reason: m.reason,
                payload: Span::push(&mut out.dead_letter_bytes, m.payload.get(&batch.bytes)),
            });
        }
        for partition in self.touched.drain(..) {
            if let Some(Some(slot)) = self.slots.get_mut(partition as usize) {
                slot.touched = false;
                slot.world.flush(&mut out.updates);
                out.progress.push(Progress { partition, next_offset: slot.next_offset });
                metrics.partitions[partition as usize].processed.store(slot.next_offset, Relaxed);
            }
        }
        metrics.applied.fetch_add(applied, Relaxed);
        metrics.malformed.fetch_add(malformed, Relaxed);
        for (shared, local) in metrics.rejected.iter().zip(&mut self.rejected) {
            if *local != 0 {
                shared.fetch_add(*local, Relaxed);
                *local = 0;
            }
        }
    }

    #[cold]
    fn warn_unowned(&mut self, partition: u32) {
        if !self.unowned_warned {
            self.unowned_warned = true;
            tracing::warn!(
                partition,
                "dropping records of a partition this data plane does not own"
            );
        }
    }
}

/// The publisher thread: encodes updates into reused buffers and hands them to the sink.
fn publish<E: Encoder, K: Sink, Ev, W>(
    mut encoder: E,
    mut sink: K,
    queues: &Queues<Ev, W, E::Update>,
    metrics: &Metrics,
    epoch: Instant,
) -> K {
    let (mut key, mut value) = (Vec::with_capacity(256), Vec::with_capacity(1024));
    let (mut latency, mut pipeline_latency) =
        (LocalHistogram::default(), LocalHistogram::default());
    let target_ns = metrics.latency_target_ns();
    let mut within = 0;
    while let Some(mut batch) = block_on(queues.updates.recv()) {
        let bytes = &batch.updates.bytes;
        for (src, update) in &batch.updates.items {
            encoder.encode(src, update, bytes, &mut key, &mut value);
            sink.update(src, &key, &value);
        }
        for dl in &batch.dead_letters {
            sink.dead_letter(&dl.src, dl.reason, dl.payload.get(&batch.dead_letter_bytes));
        }
        for s in &batch.snapshots {
            sink.snapshot(s.partition, s.next_offset, &s.bytes);
        }
        for &partition in &batch.released {
            sink.released(partition);
        }
        let now_ns = epoch.elapsed().as_nanos() as u64;
        let now_unix_ns = clock::unix_ns();
        // Updates of one record share its times and mostly come in runs: observe each
        // run once, weighted by its length.
        for run in batch.updates.items.chunk_by(|(a, _), (b, _)| a == b) {
            let src = &run[0].0;
            let n = run.len() as u64;
            let since_ts = now_unix_ns.saturating_sub(src.timestamp_ms.max(0) as u128 * 1_000_000);
            let since_ts = u64::try_from(since_ts).unwrap_or(u64::MAX);
            latency.observe_n(since_ts, n);
            if target_ns.is_some_and(|t| since_ts <= t) {
                within += n;
            }
            pipeline_latency.observe_n(now_ns.saturating_sub(src.arrival_ns), n);
        }
        latency.flush_into(&metrics.latency);
        metrics.within_target.fetch_add(std::mem::take(&mut within), Relaxed);
        pipeline_latency.flush_into(&metrics.pipeline_latency);
        metrics.updates.fetch_add(batch.updates.len() as u64, Relaxed);
        metrics.dead_letters.fetch_add(batch.dead_letters.len() as u64, Relaxed);
        sink.end_batch(&batch.progress, now_ns);
        batch.clear();
        let _ = queues.free_updates.try_send(batch);
    }
    queues.free_updates.close();
    sink.finish();
    sink
}

#[cfg(test)]
mod tests {
    use super::Placement;

    #[test]
    fn placement_isolates_the_state_machine_when_cpus_allow() {
        assert_eq!(Placement::new(&[4], 4), Placement { io: vec![4], publisher: vec![4] });
        assert_eq!(Placement::new(&[2, 3], 3), Placement { io: vec![2], publisher: vec![3] });
        assert_eq!(
            Placement::new(&[0, 1, 2, 3], 1),
            Placement { io: vec![0, 2, 3], publisher: vec![0, 2, 3] }
        );
    }
}
