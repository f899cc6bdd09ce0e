//! The snapshot writer: a task on the state machine's executor that writes one
//! partition's snapshot in slices, yielding to the batches between slices, and sends it
//! on to the publisher in chunk records.

use std::cell::Cell;

use gameshard_engine::World;

use super::batch::{Chunk, ChunkEnd, Out};
use super::state::Slots;
use super::{Queues, SnapshotSizes};

/// Writes snapshot `id` of `partition`, begun by the state machine: from `frozen`, the
/// world of a partition given up, or else from the live world in `slots` (abandoned if
/// that partition is given up meanwhile). Decrements `writing` when done.
pub(super) async fn write<W: World, E, U>(
    id: u64,
    partition: u32,
    mut frozen: Option<W>,
    slots: &Slots<W>,
    queues: &Queues<E, W, U>,
    sizes: SnapshotSizes,
    writing: &Cell<usize>,
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
    writing.set(writing.get() - 1);
}
