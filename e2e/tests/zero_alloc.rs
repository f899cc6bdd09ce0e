//! The steady-state hot path allocates nothing: records parsed on the IO thread, applied
//! on the state-machine thread, encoded on the publisher thread.
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
    let worlds = (0..partitions)
        .map(|p| {
            let mut world = SpecWorld::new();
            // Room for every player and item of the partition, as a loaded world has.
            world.reserve(5_000, 2_000, 16);
            (p, world)
        })
        .collect();
    let (source, sink) = scenario(workload, worlds, runs, epoch, alloc::allocations);
    let metrics = Arc::new(Metrics::new("zero-alloc", partitions, SpecWorld::REJECT_REASONS));
    let config = Config { epoch, snapshots: SnapshotPolicy::NEVER, ..Config::default() };
    let running =
        pipeline::spawn(&SpecGame, source, sink, config, &metrics).expect("the pipeline starts");
    let (source, sink) = running.join().expect("the pipeline drains");
    let steady = &source.reports()[1];
    assert!(alloc::allocations() > 0, "the counter saw the workload and the pipeline set up");
    assert!(steady.events >= 3 * pass, "{steady:?}");
    assert!(sink.updates > steady.events / 2, "updates flowed: {}", sink.updates);
    assert!(metrics.applied.load(Relaxed) > steady.events / 2, "events were applied");
    println!(
        "{framing:?}: {} events, {} updates, {} allocations in steady state",
        steady.events, sink.updates, steady.allocations
    );
    assert_eq!(steady.allocations, 0, "the steady-state hot path allocated ({framing:?})");
}
