//! The snapshot writers: a fixed set of futures on the state machine's thread, each
//! writing one partition's snapshot at a time in slices, yielding to the batches
//! between slices, and sending it on to the publisher in chunk records.
//!
//! The writers are made once and take their snapshots from a queue, rather than a task
//! spawned per snapshot, because spawning allocates: a busy shard snapshots every few
//! seconds, and its hot path allocates nothing.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::task::{Poll, Waker};

use gameshard_engine::World;

use super::batch::{Chunk, ChunkEnd, Out};
use super::state::Slots;
use super::{Queues, SnapshotSizes};

/// Snapshot writers on the state machine's thread (the state machine joins this many):
/// two let a partition being handed over start while another's periodic snapshot is
/// still being written, more would only share the same chunk buffers.
pub(super) const WRITERS: usize = 2;

/// A snapshot begun by the state machine, to be written.
pub(super) struct Job<W> {
    pub(super) id: u64,
    pub(super) partition: u32,
    /// The world of a partition given up; `None` reads the live one.
    pub(super) frozen: Option<W>,
}

/// The snapshots waiting for a writer, on the state machine's thread.
pub(super) struct Jobs<W> {
    queue: RefCell<VecDeque<Job<W>>>,
    waiting: RefCell<Vec<Waker>>,
    closed: Cell<bool>,
    /// Snapshots queued or being written.
    open: Cell<usize>,
}

impl<W> Jobs<W> {
    /// Room for a snapshot of every partition at once, and a release of each.
    pub(super) fn new(partitions: usize) -> Self {
        Self {
            queue: RefCell::new(VecDeque::with_capacity(2 * partitions)),
            waiting: RefCell::new(Vec::with_capacity(WRITERS)),
            closed: Cell::new(false),
            open: Cell::new(0),
        }
    }

    /// Queues `job`; a partition being given up goes first, since its new owner waits.
    pub(super) fn push(&self, job: Job<W>) {
        self.open.set(self.open.get() + 1);
        let mut queue = self.queue.borrow_mut();
        if job.frozen.is_some() {
            queue.push_front(job);
        } else {
            queue.push_back(job);
        }
        for waker in self.waiting.borrow_mut().drain(..) {
            waker.wake();
        }
    }

    /// Snapshots queued or being written.
    pub(super) fn open(&self) -> usize {
        self.open.get()
    }

    /// Ends the writers once the queue is empty.
    pub(super) fn close(&self) {
        self.closed.set(true);
        for waker in self.waiting.borrow_mut().drain(..) {
            waker.wake();
        }
    }

    async fn next(&self) -> Option<Job<W>> {
        poll_fn(|cx| {
            if let Some(job) = self.queue.borrow_mut().pop_front() {
                return Poll::Ready(Some(job));
            }
            if self.closed.get() {
                return Poll::Ready(None);
            }
            let mut waiting = self.waiting.borrow_mut();
            if !waiting.iter().any(|w| w.will_wake(cx.waker())) {
                waiting.push(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }
}

/// A writer: writes the queued snapshots one after the other until the queue closes.
pub(super) async fn writer<W: World, E, U>(
    jobs: &Jobs<W>,
    slots: &Slots<W>,
    queues: &Queues<E, W, U>,
    sizes: SnapshotSizes,
) {
    while let Some(Job { id, partition, frozen }) = jobs.next().await {
        write(id, partition, frozen, slots, queues, sizes).await;
        jobs.open.set(jobs.open.get() - 1);
    }
}

/// Writes snapshot `id` of `partition`, begun by the state machine: from `frozen`, the
/// world of a partition given up, or else from the live world in `slots` (abandoned if
/// that partition is given up meanwhile).
async fn write<W: World, E, U>(
    id: u64,
    partition: u32,
    mut frozen: Option<W>,
    slots: &Slots<W>,
    queues: &Queues<E, W, U>,
    sizes: SnapshotSizes,
) {
    let mut index = 0;
    let mut next = queues.free_chunks.recv().await;
    while let Some(mut bytes) = next.take() {
        let done = match frozen.as_mut() {
            Some(world) => Some(world.snapshot_continue(&mut bytes, sizes.slice_bytes)),
            None => match slots.borrow_mut().get_mut(partition as usize) {
                Some(Some(slot)) if slot.writing == Some(id) => {
                    let done = slot.world.snapshot_continue(&mut bytes, sizes.slice_bytes);
                    if done {
                        slot.writing = None;
                    }
                    Some(done)
                }
                _ => None,
            },
        };
        let end = match done {
            None => {
                bytes.clear();
                ChunkEnd::Abandoned
            }
            Some(true) => ChunkEnd::Last,
            Some(false) if bytes.len() >= sizes.chunk_bytes => ChunkEnd::More,
            Some(false) => {
                next = Some(bytes);
                smol::future::yield_now().await;
                continue;
            }
        };
        let chunk = Chunk { id, partition, index, end, bytes };
        if queues.out.send(Out::Chunk(chunk)).await.is_err() || end != ChunkEnd::More {
            break;
        }
        index += 1;
        next = queues.free_chunks.recv().await;
        smol::future::yield_now().await;
    }
}
