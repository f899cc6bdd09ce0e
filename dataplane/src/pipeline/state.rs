//! The state-machine thread: a single-threaded smol executor pinned to one core. It owns
//! one world per input partition; one task applies the batches in offset order, and a
//! task per snapshot in progress writes that snapshot in slices between batches.
//!
//! The executor is what lets a large partition be snapshotted (periodically, or to hand
//! it to another pod) without pausing the others: after each batch the applying task
//! yields, a snapshot task writes one slice of about 50 µs and yields back, and while
//! no batch is waiting the snapshot tasks run back to back. Worlds are shared between
//! the tasks through a `RefCell`, borrowed only between two awaits.

use std::cell::{Cell, RefCell};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use gameshard_engine::{EventBatch, Game, Outcome, Span, World};
use smol::LocalExecutor;

use super::batch::{DeadLetter, Handoff, Out, Purpose, Released, SnapshotStart, UpdateBatch, Work};
use super::{Queues, SnapshotPolicy, SnapshotSizes, snapshot};
use crate::metrics::{Metrics, PartitionState};
use crate::sink::Progress;
use crate::source::Acquisition;

/// One owned partition.
pub(super) struct Slot<W> {
    pub(super) world: W,
    /// One past the last record applied.
    next_offset: i64,
    /// `next_offset` at the last snapshot (or at assignment).
    snapshot_offset: i64,
    /// Unix time (ms) of the last snapshot (or of assignment); 0 until the first tick.
    snapshot_ms: i64,
    touched: bool,
    /// The epoch the partition is owned under; its snapshots carry it.
    epoch: u64,
    /// The snapshot being written, if any.
    pub(super) writing: Option<u64>,
    /// When it came by a handoff: the former owner's release time, until the first
    /// record.
    released_ms: Option<i64>,
}

/// The worlds, by partition number.
pub(super) type Slots<W> = RefCell<Vec<Option<Slot<W>>>>;

/// A snapshot to start writing once the batch that began it has been sent on.
struct Pending<W> {
    id: u64,
    partition: u32,
    /// The world, for a partition given up; `None` reads the live one.
    frozen: Option<W>,
}

/// Runs the state machine until the pipeline drains.
#[allow(clippy::too_many_arguments)] // the thread's whole setup, passed once
pub(super) fn run<G: Game>(
    partitions: usize,
    policy: SnapshotPolicy,
    sizes: SnapshotSizes,
    snapshot_ids_from: u64,
    queues: &Queues<G::Event, G::World, G::Update>,
    metrics: &Metrics,
    spin: Duration,
) {
    let slots: Slots<G::World> = RefCell::new((0..partitions).map(|_| None).collect());
    let writing = Cell::new(0);
    let executor = LocalExecutor::new();
    let machine = StateMachine::<G> {
        slots: &slots,
        writing: &writing,
        policy,
        sizes,
        next_snapshot_id: snapshot_ids_from,
        now_ms: 0,
        touched: Vec::with_capacity(partitions),
        rejected: vec![0; <G::World as World>::REJECT_REASONS.len()],
        pending: Vec::with_capacity(partitions),
        unowned_warned: false,
    };
    smol::block_on(executor.run(machine.run(&executor, queues, metrics, spin)));
}

struct StateMachine<'a, G: Game> {
    slots: &'a Slots<G::World>,
    /// Snapshot tasks running.
    writing: &'a Cell<usize>,
    policy: SnapshotPolicy,
    sizes: SnapshotSizes,
    next_snapshot_id: u64,
    /// Latest time the IO thread told.
    now_ms: i64,
    /// Partitions touched by the current batch.
    touched: Vec<u32>,
    /// Rejections of the current batch, by reason.
    rejected: Vec<u64>,
    /// Snapshots begun by the current batch.
    pending: Vec<Pending<G::World>>,
    unowned_warned: bool,
}

impl<'a, G: Game> StateMachine<'a, G> {
    async fn run(
        mut self,
        executor: &LocalExecutor<'a>,
        queues: &'a Queues<G::Event, G::World, G::Update>,
        metrics: &Metrics,
        spin: Duration,
    ) {
        loop {
            // While a snapshot is being written, the gaps between batches are its.
            let spin = if self.writing.get() > 0 { Duration::ZERO } else { spin };
            let Some(work) = queues.work.recv_spinning(spin).await else { break };
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
                Work::Assign(acquisition) => self.assign(acquisition, &mut out, metrics),
                Work::Revoke { partition, epoch, fenced } => {
                    self.revoke(partition, epoch, fenced, &mut out, metrics);
                }
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
            } else if queues.out.send(Out::Batch(out)).await.is_err() {
                break;
            }
            // A snapshot's chunks follow the batch that began it.
            for Pending { id, partition, frozen } in self.pending.drain(..) {
                self.writing.set(self.writing.get() + 1);
                let (slots, writing, sizes) = (self.slots, self.writing, self.sizes);
                executor
                    .spawn(snapshot::write(id, partition, frozen, slots, queues, sizes, writing))
                    .detach();
            }
            if drain {
                while self.writing.get() > 0 {
                    smol::Timer::after(Duration::from_millis(1)).await;
                }
                break;
            }
            if self.writing.get() > 0 {
                smol::future::yield_now().await;
            }
        }
        queues.out.close();
        queues.free_events.close();
    }

    fn assign(
        &mut self,
        a: Acquisition<G::World>,
        out: &mut UpdateBatch<G::Update>,
        metrics: &Metrics,
    ) {
        let partition = a.partition;
        let mut slots = self.slots.borrow_mut();
        let Some(slot) = slots.get_mut(partition as usize) else {
            tracing::error!(partition, "cannot own a partition the input topic does not have");
            return;
        };
        let snapshot_now = a.snapshot_now;
        *slot = Some(Slot {
            world: a.world,
            next_offset: a.next_offset,
            snapshot_offset: a.next_offset,
            snapshot_ms: a.snapshot_ms.unwrap_or(self.now_ms),
            touched: false,
            epoch: a.epoch,
            writing: None,
            released_ms: a.released_ms,
        });
        if snapshot_now && let Some(slot) = slot.as_mut() {
            let id = self.next_snapshot_id;
            self.next_snapshot_id += 1;
            begin_periodic(slot, id, partition, out, &mut self.pending);
        }
        let stats = &metrics.partitions[partition as usize];
        stats.processed.store(a.next_offset, Relaxed);
        stats.set_state(PartitionState::Owned, a.epoch);
        // Every update before a restored snapshot's offset is durable: the sink may
        // commit it even before the next record arrives.
        if a.next_offset > 0 {
            out.progress.push(Progress { partition, next_offset: a.next_offset });
        }
        tracing::info!(partition, next_offset = a.next_offset, epoch = a.epoch, "partition owned");
    }

    /// Gives `partition` up: snapshots it one last time (unless `fenced`) and drops it.
    fn revoke(
        &mut self,
        partition: u32,
        epoch: u64,
        fenced: bool,
        out: &mut UpdateBatch<G::Update>,
        metrics: &Metrics,
    ) {
        let Some(Some(mut slot)) =
            self.slots.borrow_mut().get_mut(partition as usize).map(Option::take)
        else {
            return;
        };
        metrics.partitions[partition as usize].set_state(PartitionState::Releasing, epoch);
        let next_offset = slot.next_offset;
        let snapshot = if fenced {
            None
        } else {
            // A periodic snapshot in progress is abandoned: the release's own snapshot
            // holds every record applied.
            let id = self.next_id();
            slot.world.snapshot_begin();
            out.snapshots.push(SnapshotStart {
                id,
                partition,
                next_offset,
                epoch,
                purpose: Purpose::Release,
            });
            self.pending.push(Pending { id, partition, frozen: Some(slot.world) });
            Some(id)
        };
        out.released.push(Released { partition, epoch, next_offset, snapshot, fenced });
        tracing::info!(partition, next_offset, epoch, fenced, "partition given up");
    }

    fn next_id(&mut self) -> u64 {
        let id = self.next_snapshot_id;
        self.next_snapshot_id += 1;
        id
    }

    /// Begins a snapshot of every owned partition for which `due` says so and none is
    /// being written.
    fn snapshot_due(
        &mut self,
        out: &mut UpdateBatch<G::Update>,
        due: impl Fn(&Slot<G::World>, &SnapshotPolicy, i64) -> bool,
    ) {
        let mut slots = self.slots.borrow_mut();
        for (partition, slot) in slots.iter_mut().enumerate() {
            let Some(slot) = slot else { continue };
            if slot.snapshot_ms == 0 {
                slot.snapshot_ms = self.now_ms;
            }
            if slot.writing.is_some() || !due(slot, &self.policy, self.now_ms) {
                continue;
            }
            let id = self.next_snapshot_id;
            self.next_snapshot_id += 1;
            begin_periodic(slot, id, partition as u32, out, &mut self.pending);
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
        let mut slots = self.slots.borrow_mut();
        for record in &batch.records {
            match slots.get_mut(record.partition as usize) {
                Some(Some(slot)) => {
                    slot.next_offset = record.offset + 1;
                    if !slot.touched {
                        slot.touched = true;
                        self.touched.push(record.partition);
                        if let Some(released_ms) = slot.released_ms.take() {
                            out.handoffs.push(Handoff { partition: record.partition, released_ms });
                        }
                    }
                }
                _ => {
                    if !self.unowned_warned {
                        self.unowned_warned = true;
                        warn_unowned(record.partition);
                    }
                }
            }
        }
        let mut applied = 0;
        for parsed in &batch.events {
            let src = &batch.records[parsed.record as usize];
            let Some(Some(slot)) = slots.get_mut(src.partition as usize) else {
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
            let src = batch.records[m.record as usize];
            if !matches!(slots.get(src.partition as usize), Some(Some(_))) {
                continue;
            }
            malformed += u64::from(m.events);
            out.dead_letters.push(DeadLetter {
                src,
                reason: m.reason,
                payload: Span::push(&mut out.dead_letter_bytes, m.payload.get(&batch.bytes)),
            });
        }
        for partition in self.touched.drain(..) {
            if let Some(Some(slot)) = slots.get_mut(partition as usize) {
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
}

/// Begins snapshot `id` of the live `slot` at its record boundary now.
fn begin_periodic<W: World, U>(
    slot: &mut Slot<W>,
    id: u64,
    partition: u32,
    out: &mut UpdateBatch<U>,
    pending: &mut Vec<Pending<W>>,
) {
    slot.world.snapshot_begin();
    slot.writing = Some(id);
    slot.snapshot_offset = slot.next_offset;
    out.snapshots.push(SnapshotStart {
        id,
        partition,
        next_offset: slot.next_offset,
        epoch: slot.epoch,
        purpose: Purpose::Periodic,
    });
    pending.push(Pending { id, partition, frozen: None });
}

#[cold]
fn warn_unowned(partition: u32) {
    tracing::warn!(
        partition,
        "records of a partition this data plane does not own (any more) are left to its owner"
    );
}
