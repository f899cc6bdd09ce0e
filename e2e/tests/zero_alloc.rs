//! The steady-state hot path allocates nothing: records parsed on the IO thread, applied
//! on the state-machine thread, encoded on the publisher thread, and the partitions
//! snapshotted in slices while they are (every few thousand records, as a busy shard
//! does).
//!
//! Then the same with the publisher writing through the real Kafka sink to an Apache
//! Kafka broker: updates, snapshot chunks and manifests produced, acknowledgements
//! tracked, input offsets committed. There gameshard's code allocates nothing either,
//! but rdkafka's Rust wrapper does (a `CString` of the topic name for every record sent,
//! a `Vec` and an `Arc` for every delivery report event, its statistics parsed into a
//! `Statistics` every second, a `CString` and a `Vec` per offset commit): the test
//! walks the stack of every allocation to tell the two apart, asserts that none is
//! gameshard's, and prints rdkafka's. What librdkafka's C code allocates (it copies
//! each message into buffers of its own) goes to `malloc` directly: no Rust allocator
//! can count it, and this test does not.
//!
//! Its own test binary (`harness = false`), so that the counting allocator sees this
//! process alone and no test runner thread allocates alongside.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use clap::Parser as _;
use gameshard_dataplane::admin::Health;
use gameshard_dataplane::cli::{Args, OutputFraming};
use gameshard_dataplane::engine::RecordMeta;
use gameshard_dataplane::kafka::ClientHealth;
use gameshard_dataplane::kafka::setup;
use gameshard_dataplane::kafka::sink::{Clients, KafkaSink, Topics};
use gameshard_dataplane::metrics::Metrics;
use gameshard_dataplane::pipeline::{self, Chunk, Config, Released, SnapshotPolicy, SnapshotStart};
use gameshard_dataplane::sink::{Progress, Sink};
use gameshard_e2e::alloc::{self, Counting, Owner};
use gameshard_e2e::harness::broker::Broker;
use gameshard_e2e::harness::kafka;
use gameshard_e2e::harness::zone::{DEAD, EVENTS, SNAPSHOTS, UPDATES, Zone};
use gameshard_e2e::scenario::{Run, ScenarioSink, scenario};
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
    gameshard_code_allocates_nothing_in_steady_state_with_the_kafka_sink();
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

/// The real Kafka sink, and the scenario's sink beside it, which tells the source when a
/// run's records are all handed over and takes the allocation count at each batch's
/// end, after the Kafka sink's work for the batch.
struct Tee {
    kafka: KafkaSink,
    scenario: ScenarioSink,
}

impl Sink for Tee {
    fn update(&mut self, src: &RecordMeta, key: &[u8], value: &[u8]) {
        self.kafka.update(src, key, value);
        self.scenario.update(src, key, value);
    }

    fn dead_letter(&mut self, src: &RecordMeta, reason: &'static str, payload: &[u8]) {
        self.kafka.dead_letter(src, reason, payload);
        self.scenario.dead_letter(src, reason, payload);
    }

    fn snapshot_started(&mut self, start: &SnapshotStart) {
        self.kafka.snapshot_started(start);
    }

    fn snapshot_chunk(&mut self, chunk: &Chunk) {
        self.kafka.snapshot_chunk(chunk);
        self.scenario.snapshot_chunk(chunk);
    }

    fn released(&mut self, released: &Released) {
        self.kafka.released(released);
    }

    fn end_batch(&mut self, progress: &[Progress], now_ns: u64) {
        self.kafka.end_batch(progress, now_ns);
        self.scenario.end_batch(progress, now_ns);
    }

    fn busy(&self) -> bool {
        self.kafka.busy()
    }

    fn idle(&mut self) {
        self.kafka.idle();
    }

    fn finish(&mut self) {
        self.kafka.finish();
    }
}

/// The data plane's Kafka sink for `zone`, with the producers and committer the data
/// plane configures.
fn kafka_sink(zone: &Zone, metrics: &Arc<Metrics>, stop: &Arc<AtomicBool>) -> KafkaSink {
    let shard = zone.name().to_owned();
    let args = Args::try_parse_from([
        "gameshard-dataplane",
        "--brokers",
        &zone.bootstrap(),
        "--shard",
        &shard,
        "--input-topic",
        &zone.topic(EVENTS),
        "--output-topic",
        &zone.topic(UPDATES),
        "--dlq-topic",
        &zone.topic(DEAD),
        "--snapshot-topic",
        &zone.topic(SNAPSHOTS),
        "--partitions",
        "0-3",
    ])
    .expect("the data plane's arguments");
    let health = Arc::new(Health::default());
    let client = ClientHealth::new(
        Arc::clone(&health),
        Arc::clone(metrics),
        None,
        Arc::new(AtomicBool::new(true)),
    );
    let topics = Topics {
        input: args.input_topic.clone(),
        output: args.output_topic.clone(),
        dead_letters: args.dlq_topic.clone(),
        snapshots: args.snapshot_topic.clone(),
        control: None,
        shard: shard.clone(),
        framing: OutputFraming::Entity,
    };
    let clients = Clients {
        producer: &setup::producer(&args),
        snapshots: &setup::snapshot_producer(&args),
        committer: &setup::committer(&args),
    };
    KafkaSink::new(
        &clients,
        &client,
        topics,
        Arc::clone(metrics),
        health,
        Arc::clone(stop),
        Duration::from_secs(60),
    )
    .expect("the Kafka sink")
}

/// The allocation counter for the scenario, which the source reads once as each run
/// starts, on the IO thread (the sink reads it at every batch's end, on the publisher
/// thread): there the steady state's allocation sites begin a period of their own.
fn allocations() -> u64 {
    if std::thread::current().name() == Some("gs-io") {
        alloc::next_period();
    }
    alloc::allocations()
}

fn gameshard_code_allocates_nothing_in_steady_state_with_the_kafka_sink() {
    // A broker of its own: a static shared one would outlive `main`.
    let Some(broker) = Broker::start().expect("broker starts") else { return };
    let partitions = 4;
    let zone = Zone::on(&broker, "zero-alloc-kafka", partitions as i32).expect("zone");
    let metrics = Arc::new(Metrics::new(zone.name(), partitions, SpecWorld::REJECT_REASONS));
    let stop = Arc::new(AtomicBool::new(false));
    let kafka_sink = kafka_sink(&zone, &metrics, &stop);

    let config = workload::Config {
        players: 20_000,
        partitions,
        records: 512,
        items: 2_000,
        ..workload::Config::default()
    };
    let workload = Workload::generate(&config);
    let pass = workload.pass_events();
    let runs = vec![
        // The first pass sizes every buffer, and rdkafka's queues, to their working size.
        Run { events: pass, rate: None, latency: false },
        Run { events: 3 * pass, rate: None, latency: false },
    ];
    let epoch = Instant::now();
    let worlds = (0..partitions).map(|p| (p, SpecWorld::new())).collect();
    let (source, scenario_sink) = scenario(workload, worlds, runs, epoch, allocations);
    let sink = Tee { kafka: kafka_sink, scenario: scenario_sink };
    let snapshots = SnapshotPolicy { every_records: 64, ..SnapshotPolicy::NEVER };
    let config = Config { epoch, snapshots, stop, ..Config::default() };
    alloc::attribute(true);
    let rdkafka_before = alloc::rdkafka_allocations();
    let running =
        pipeline::spawn(&SpecGame, source, sink, config, &metrics).expect("the pipeline starts");
    let (source, sink) = running.join().expect("the pipeline drains");
    alloc::attribute(false);
    let rdkafka = alloc::rdkafka_allocations() - rdkafka_before;
    let steady = &source.reports()[1];
    assert!(!sink.kafka.failed(), "every record was delivered");
    let produced: i64 =
        kafka::high_watermarks(&zone.bootstrap(), &zone.topic(UPDATES), partitions as i32)
            .expect("output watermarks")
            .iter()
            .sum();
    println!(
        "Kafka sink: {} events, {} updates produced to the broker, {} snapshots, {} allocations of gameshard's code in steady state",
        steady.events, produced, sink.scenario.snapshots, steady.allocations
    );
    println!(
        "rdkafka's Rust code, over both runs: {rdkafka} allocations for {produced} updates ({:.3} per update); in steady state, by site:",
        rdkafka as f64 / produced.max(1) as f64
    );
    // Period 0 is the set-up and the warm-up records, 1 the first run, 2 the steady
    // state.
    let sites = alloc::sites(2);
    for (owner, name, n) in sites.iter().take(12) {
        println!("  {n:>9}  {owner:?}  {name}");
    }
    assert!(steady.events >= 3 * pass, "{steady:?}");
    assert_eq!(produced as u64, sink.scenario.updates, "every update reached the broker");
    assert!(sink.scenario.snapshots >= 8, "snapshots were written: {}", sink.scenario.snapshots);
    assert!(rdkafka > 0, "the stack walks saw rdkafka's allocations");
    let gameshard: Vec<_> = sites.iter().filter(|(o, _, _)| *o != Owner::Rdkafka).collect();
    assert_eq!(
        steady.allocations, 0,
        "gameshard's code allocated in steady state with the Kafka sink; allocations outside rdkafka, by site: {gameshard:#?}"
    );
}
