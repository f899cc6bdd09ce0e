//! The steady-state hot path allocates nothing: records parsed on the IO thread, applied
//! on the state-machine thread, encoded on the publisher thread, and the partitions
//! snapshotted in slices while they are (every few thousand records, as a busy shard
//! does).
//!
//! Its own test binary (`harness = false`), so that the counting allocator sees this
//! process alone and no test runner thread allocates alongside.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use gameshard_dataplane::metrics::Metrics;
use gameshard_dataplane::pipeline::{self, Config, SnapshotPolicy};
use gameshard_e2e::alloc::{self, Counting};
use gameshard_e2e::scenario::{Run, scenario};
use gameshard_e2e::workload::{self, Workload};
use gameshard_engine::World;
use gameshard_engine::spec::{SpecGame, SpecWorld};

#[global_allocator]
static GLOBAL: Counting = Counting;

fn main() {
    alloc::count(true);
    for framing in [workload::Framing::Ndjson, workload::Framing::Array] {
        steady_state_allocates_nothing(framing);
    }
}

fn steady_state_allocates_nothing(framing: workload::Framing) {
    let partitions = 4;
    let config = workload::Config {
        players: 20_000,
        partitions,
        records: 512,
        items: 2_000,
        framing,
        ..workload::Config::default()
    };
    let workload = Workload::generate(&config);
    let pass = workload.pass_events();
    let runs = vec![
        // The first pass sizes every buffer to its working size.
        Run { events: pass, rate: None, latency: false },
        // Three more passes: nothing may allocate from here on.
        Run { events: 3 * pass, rate: None, latency: false },
    ];
    let epoch = Instant::now();
    // Empty worlds: the first pass spawns every player and claims the items, as the
    // records before a snapshot would have.
    let worlds = (0..partitions).map(|p| (p, SpecWorld::new())).collect();
    let (source, sink) = scenario(workload, worlds, runs, epoch, alloc::allocations);
    let metrics = Arc::new(Metrics::new("zero-alloc", partitions, SpecWorld::REJECT_REASONS));
    // A snapshot of each partition every 64 records (4,096 events), two per partition per
    // pass, written in slices while the batches go on: the first pass sizes their
    // buffers too.
    let snapshots = SnapshotPolicy { every_records: 64, ..SnapshotPolicy::NEVER };
    let config = Config { epoch, snapshots, ..Config::default() };
    let running =
        pipeline::spawn(&SpecGame, source, sink, config, &metrics).expect("the pipeline starts");
    let (source, sink) = running.join().expect("the pipeline drains");
    let steady = &source.reports()[1];
    println!(
        "{framing:?}: {} events, {} updates, {} snapshots of {} bytes, {} allocations in steady state",
        steady.events, sink.updates, sink.snapshots, sink.snapshot_bytes, steady.allocations
    );
    assert!(alloc::allocations() > 0, "the counter saw the workload and the pipeline set up");
    assert!(steady.events >= 3 * pass, "{steady:?}");
    assert!(sink.updates > steady.events / 2, "updates flowed: {}", sink.updates);
    assert!(metrics.applied.load(Relaxed) > steady.events / 2, "events were applied");
    assert!(
        sink.snapshot_bytes > 0 && sink.snapshots >= 8,
        "snapshots were written during the steady state: {} of {} bytes",
        sink.snapshots,
        sink.snapshot_bytes
    );
    assert_eq!(steady.allocations, 0, "the steady-state hot path allocated ({framing:?})");
}
