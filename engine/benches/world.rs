//! The world: event batches of 1,024 events applied to a partition of 12,500 players,
//! each batch flushed into its coalesced updates, as the state machine does.
//! Throughput in events.

mod common;

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use gameshard_engine::Updates;

fn world(c: &mut Criterion) {
    let mut group = c.benchmark_group("world");
    common::long_iterations(&mut group);
    let mut batches = common::batches(&common::records(false));
    let events: u64 = batches.iter().map(|b| b.events.len() as u64).sum();
    let mut world = common::spawned_world();
    let mut updates = Updates::default();
    group.throughput(Throughput::Elements(events));
    group.bench_function("apply_and_flush", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                // Every pass carries higher seqs than the last, as a live stream does.
                common::raise_seqs(&mut batches, 1_000_000);
                let start = Instant::now();
                for batch in &batches {
                    common::apply(&mut world, batch, &mut updates);
                    updates.clear();
                }
                spent += start.elapsed();
            }
            spent
        });
    });
    group.finish();
}

fn main() {
    common::pin();
    let mut c = Criterion::default().configure_from_args();
    world(&mut c);
    c.final_summary();
}
